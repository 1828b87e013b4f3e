"""Training losses: 1-N cross entropy / BCE with label smoothing, and self-adversarial negative sampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def one_n_cross_entropy(scores: Tensor, tails: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Softmax cross entropy over all entities.

    Args:
        scores: shape ``(batch, num_entities)``.
        tails: shape ``(batch,)`` true tail ids.
    """
    return F.cross_entropy(scores, tails, label_smoothing=label_smoothing)


def one_n_bce(scores: Tensor, tails: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Sigmoid BCE against a one-hot row smoothed as in ConvE: ``(1 - ε)·y + ε / num_entities``."""
    target = torch.zeros_like(scores)
    target[torch.arange(len(tails)), tails] = 1.0
    if label_smoothing:
        target = (1.0 - label_smoothing) * target + label_smoothing / scores.shape[1]
    return F.binary_cross_entropy_with_logits(scores, target)


def self_adversarial_loss(positive: Tensor, negative: Tensor, margin: float, temperature: float) -> Tensor:
    """Negative sampling with self-adversarial weighting (Sun et al., 2019, eq. 5).

    Args:
        positive: shape ``(batch,)`` scores of true triples.
        negative: shape ``(batch, num_negatives)`` scores of corrupted triples.
        margin: γ, added to the scores (distance models score ``-d``, so ``γ - d`` as in the paper).
        temperature: α of the weighting; 0 gives uniform weights.
    """
    weights = torch.softmax(negative * temperature, dim=1).detach()
    positive_term = F.logsigmoid(margin + positive)
    negative_term = (weights * F.logsigmoid(-(margin + negative))).sum(1)
    return -(positive_term + negative_term).mean() / 2.0


def n3(factors: list[Tensor]) -> Tensor:
    """Nuclear 3-norm (Lacroix et al., 2018): ``Σ |x|³`` per batch row, averaged."""
    return sum(f.abs().pow(3).sum() for f in factors) / factors[0].shape[0]


def l2(factors: list[Tensor]) -> Tensor:
    return sum(f.pow(2).sum() for f in factors) / factors[0].shape[0]

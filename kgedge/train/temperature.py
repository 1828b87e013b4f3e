"""A learned softmax temperature per relation for the 1-N losses: a training device, not part of the model.

A dot-product model sets how peaked its softmax over the tails of ``(h, r, ?)`` is through the norm of
``r``: a one-to-one relation can afford a sharp distribution, a relation with many tails wants a flat one.
RotatE's rotations have modulus 1 and cannot do that, so every relation shares the sharpness that the
entity norms set. Multiplying a relation's scores by its own learned scale gives the freedom back. A
positive scale per query leaves the ranking of the tails unchanged, so the model, its checkpoint and its
export are what they would be without it; the scales live in the trainer (and its resume state) only.

The log-scales are kept at mean zero (only the relations' sharpness relative to each other is learned;
a free global scale sharpened the softmax and overfitted Nations) and learn at ``LR_FACTOR`` times the
model's learning rate. Measured with RotatE-256 and its defaults (benchmarks/relation_temperature.py,
1 thread): mean test MRR on UMLS 0.937 against 0.922 without (5 seeds), on Nations 0.752 against 0.747
(16 seeds; the temperature needs the lighter label smoothing there: with RotatE's earlier 0.2, 0.744),
on Kinships 0.871 either way. TransE-L1 moved within its seed spread (UMLS 0.772 vs 0.770, Kinships
0.480 vs 0.476), so only RotatE turns it on by default.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

LR_FACTOR = 0.3


class RelationTemperature(nn.Module):
    """Per-relation scales of all-tail scores, ``exp(s_r - mean(s))``, starting at 1."""

    def __init__(self, num_relations: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(num_relations))

    def scales(self) -> Tensor:
        """The scale of every relation, shape ``(num_relations,)``."""
        return (self.log_scale - self.log_scale.mean()).exp()

    def forward(self, scores: Tensor, relations: Tensor) -> Tensor:
        """``scores`` ``(batch, num_entities)`` of queries with ``relations`` ``(batch,)``, each row scaled."""
        return scores * self.scales()[relations].unsqueeze(1)

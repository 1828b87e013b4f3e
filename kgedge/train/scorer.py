"""Adapters from torch models to the numpy scorers that ``kgedge.evaluate`` ranks with."""

from __future__ import annotations

import numpy as np
import torch

from kgedge.evaluate import ScoreFn
from kgedge.models import KGModel
from kgedge.train.memory import retain_freed_memory


def model_scorer(model: KGModel) -> ScoreFn:
    """``(heads, relations) -> scores`` of every entity, on numpy arrays, in eval mode without grad."""
    retain_freed_memory()  # every chunk allocates batch x entities scores afresh
    device = next(model.parameters()).device

    def score(heads: np.ndarray, relations: np.ndarray) -> np.ndarray:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            h = torch.as_tensor(np.asarray(heads), dtype=torch.long, device=device)
            r = torch.as_tensor(np.asarray(relations), dtype=torch.long, device=device)
            out = model.score_all_tails(h, r).float().cpu().numpy()
        model.train(was_training)
        return out

    return score

"""Pruning: structured (drop embedding dimensions: the exported model shrinks for real) and
unstructured magnitude pruning (sparsity; saves no bytes or time at export, and is reported so).
"""

from __future__ import annotations

import torch
from torch.nn.utils import prune

from kgedge.models import KGModel, ModelConfig, build
from kgedge.models.base import split_complex


def dimension_importance(model: KGModel) -> torch.Tensor:
    """Importance of each (complex) dimension, shape ``(dim,)``.

    The mean squared magnitude of the entity coordinates times that of the relation coordinates:
    a dimension with small entity or relation values contributes little to any score.
    """
    with torch.no_grad():
        entity = model.entity_table()
        relation = model.relation.weight
        if model.complex_valued:
            re, im = split_complex(entity)
            e = (re**2 + im**2).mean(0)
            if model.rotation_relations:  # RotatE: every rotation has modulus 1
                r = torch.ones_like(e)
            else:
                r_re, r_im = split_complex(relation)
                r = (r_re**2 + r_im**2).mean(0)
        else:
            e, r = (entity**2).mean(0), (relation**2).mean(0)
        return e * r


def prune_dimensions(model: KGModel, keep: int) -> KGModel:
    """A new model keeping the ``keep`` most important dimensions (complex dims for complex models)."""
    dim = model.config.dim
    if not 1 <= keep <= dim:
        raise ValueError(f"prune_dims keep={keep}; allowed: 1..{dim} (the model's dim)")
    kept = dimension_importance(model).argsort(descending=True)[:keep].sort().values
    config = ModelConfig(**{**model.config.to_dict(), "dim": keep})
    pruned = build(config)

    def columns(width: int) -> torch.Tensor:
        if width == 2 * dim:  # [re | im]
            return torch.cat([kept, kept + dim])
        return kept

    with torch.no_grad():
        pruned.entity.weight.copy_(model.entity.weight[:, columns(model.entity.weight.shape[1])])
        pruned.relation.weight.copy_(model.relation.weight[:, columns(model.relation.weight.shape[1])])
    return pruned


def magnitude_prune(model: KGModel, sparsity: float | None = None, threshold: float | None = None) -> float:
    """Zero the smallest-magnitude table weights in place; returns the resulting sparsity.

    Give either ``sparsity`` (fraction of weights, via ``torch.nn.utils.prune.l1_unstructured``) or an
    absolute ``threshold``. The mask stays applied during fine-tuning (``prune`` reparametrises the
    weight); call :func:`finish_pruning` to bake it in. Zeros are stored as zeros: dense int8 tables
    are no smaller and no faster, so this is reported as sparsity, never as compression.
    """
    if (sparsity is None) == (threshold is None):
        raise ValueError("magnitude_prune needs exactly one of sparsity or threshold")
    if sparsity is not None and not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity={sparsity!r}; allowed: 0 <= sparsity < 1")
    for module in (model.entity, model.relation):
        if sparsity is not None:
            prune.l1_unstructured(module, "weight", amount=sparsity)
        else:
            mask = (module.weight.detach().abs() >= threshold).float()
            prune.custom_from_mask(module, "weight", mask)
    zeros = sum(int((m.weight == 0).sum()) for m in (model.entity, model.relation))
    total = sum(m.weight.numel() for m in (model.entity, model.relation))
    return zeros / total


def finish_pruning(model: KGModel) -> KGModel:
    for module in (model.entity, model.relation):
        if prune.is_pruned(module):
            prune.remove(module, "weight")
    return model

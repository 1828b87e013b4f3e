"""Low-rank factorisation: a truncated SVD of the entity table (``E ≈ U · V``) or of linear layers.

An entity table of ``N`` rows and width ``W`` becomes ``U`` ``(N, r)`` and ``V`` ``(r, W)``. The
exporter stores ``U`` as the per-row int8 table and ``V`` in float32, and scores a query ``q`` as
``(q Vᵀ) · Uᵀ``: ``W·r + N·r`` multiply-adds instead of ``N·W``, and ``N·(r + 4) + 4·r·W`` bytes
instead of ``N·(W + 4)`` at int8. The bytes condition is the stricter one (``V`` costs 4 bytes per
value, one multiply-add per query), so a factored table that is smaller is also faster to score.

Where the singular values go: ``U = U_r · S``, ``V = V_rᵀ`` (orthonormal rows). ``U``'s rows are then
each entity's coordinates in an orthonormal basis of the table's top-``r`` subspace, so
``|U[i] · V| = |U[i]|``: the per-row quantization error of ``U`` reaches the reconstructed row with
its size unchanged, and ``q Vᵀ`` (the query the graph quantizes) is a projection that cannot grow
``q``. With ``S`` in ``V`` instead, each column of ``U``'s rounding error would be multiplied by its
singular value on the way back, and the largest directions (those that matter most to the scores)
would carry the largest errors.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import torch
from torch import Tensor, nn

from kgedge.models import KGModel, build
from kgedge.models.factored import ENTITY_RANK, LowRankEmbedding, LowRankLinear
from kgedge.models.graph_encoder import GraphEncoderModel
from kgedge.quantization import stored_bytes

log = logging.getLogger(__name__)


def truncated_svd(table: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """``table ≈ U · V`` of rank ``r = min(rank, N, W)``, with ``U = U_r·S`` and ``V = V_rᵀ``.

    Args:
        table: shape ``(N, W)``.
        rank: the number of singular triplets kept.

    Returns:
        ``(U, V)``: shapes ``(N, r)`` and ``(r, W)``, float32; ``V`` has orthonormal rows.
    """
    if rank < 1:
        raise ValueError(f"rank={rank!r}; allowed: a positive integer")
    left, singular, right = torch.linalg.svd(table.detach().double(), full_matrices=False)
    r = min(rank, len(singular))
    return (left[:, :r] * singular[:r]).float(), right[:r].float()


def factored_bytes(rows: int, width: int, rank: int, bits: int | None) -> int:
    """Bytes of ``U`` (``bits``: codes + scales, or float32) plus ``V`` (always float32)."""
    return stored_bytes(rows, rank, bits) + stored_bytes(rank, width, None)


def is_factored(model: KGModel) -> bool:
    return isinstance(model.entity, LowRankEmbedding)


def factorize_entities(model: KGModel, rank: int) -> KGModel:
    """A new model whose entity table is the rank-``rank`` truncated SVD of ``model``'s.

    The relation table is copied; ``config.options["entity_rank"]`` records the rank, so the result
    saves to and loads from a checkpoint like any model. Fine-tuning then trains ``U`` and ``V``.
    A factored model is factored again from its reconstructed table (the rank can only go down).

    Raises:
        ValueError: ``rank`` is not in ``1..min(N, W)``, or the model is a graph encoder (whose
            entity table is computed by message passing: distil it into a KGE student first).
    """
    if isinstance(model, GraphEncoderModel):
        raise ValueError(f"lowrank factors a KGE model's entity table; {model.config.model!r} is a graph encoder: "
                         "add a distill step before lowrank")
    with torch.no_grad():
        table = model.entity_table()
    limit = min(table.shape)
    if not isinstance(rank, int) or not 1 <= rank <= limit:
        raise ValueError(f"lowrank rank={rank!r}; allowed: 1..{limit} (min of entities and row width)")
    config = replace(model.config, options={**model.config.options, ENTITY_RANK: rank})
    factored = build(config)
    u, v = truncated_svd(table, rank)
    with torch.no_grad():
        factored.entity.u.copy_(u)
        factored.entity.v.copy_(v)
        factored.relation.weight.copy_(model.relation.weight)
    factored.train(model.training)
    return factored


def factorize_linear(linear: nn.Linear, rank: int) -> LowRankLinear:
    """``linear`` as two maps through ``rank`` dimensions, from the truncated SVD of its weight.

    ``W = U_r S V_rᵀ`` is split as ``B = U_r √S``, ``A = √S V_rᵀ``: balanced factors, so that
    fine-tuning moves both at the same pace. The bias is kept.
    """
    left, singular, right = torch.linalg.svd(linear.weight.detach().double(), full_matrices=False)
    r = min(rank, len(singular))
    root = singular[:r].sqrt()
    low = LowRankLinear(linear.in_features, linear.out_features, r, bias=linear.bias is not None)
    with torch.no_grad():
        low.first.weight.copy_((root[:, None] * right[:r]).float())
        low.second.weight.copy_((left[:, :r] * root).float())
        if linear.bias is not None:
            low.second.bias.copy_(linear.bias)
    return low.to(linear.weight.device)


def factorize_linear_layers(module: nn.Module, rank: int) -> list[str]:
    """Replace, in place, every ``nn.Linear`` inside ``module`` that rank ``rank`` makes smaller.

    A layer of ``in x out`` weights is factored only when ``rank · (in + out) < in · out`` (fewer
    parameters, hence fewer multiply-adds); the others are left dense.

    Returns:
        the dotted names of the replaced layers.
    """
    if rank < 1:
        raise ValueError(f"rank={rank!r}; allowed: a positive integer")
    replaced = []
    for name, child in list(module.named_modules()):
        if not name or not isinstance(child, nn.Linear) or rank * (child.in_features + child.out_features) >= (
            child.in_features * child.out_features
        ):
            continue
        parent_name, _, attribute = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attribute, factorize_linear(child, rank))
        replaced.append(name)
    log.info("factored %d linear layers to rank %d: %s", len(replaced), rank, ", ".join(replaced) or "none")
    return replaced

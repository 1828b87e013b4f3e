"""Bytes of a model's tables as the exporter stores them (scales included)."""

from __future__ import annotations

from kgedge.compress.lowrank import factored_bytes
from kgedge.models import KGModel
from kgedge.models.factored import LowRankEmbedding
from kgedge.quantization import stored_bytes


def table_bytes(model: KGModel, bits: int | None = None) -> int:
    """Entity plus relation table bytes at ``bits`` (None or 32: float32; 8/7/4: codes + float32 scales).

    A factored (low-rank) entity table counts ``U`` at ``bits`` and ``V`` in float32, as exported.
    """
    entity = model.entity
    relation = stored_bytes(*model.relation_table().shape, bits)
    if isinstance(entity, LowRankEmbedding):
        return relation + factored_bytes(entity.num_embeddings, entity.embedding_dim, entity.rank, bits)
    return relation + stored_bytes(*entity.weight.shape, bits)

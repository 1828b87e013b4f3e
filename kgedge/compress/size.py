"""Bytes of a model's tables as the exporter stores them (scales included)."""

from __future__ import annotations

from kgedge.models import KGModel
from kgedge.quantization import stored_bytes


def table_bytes(model: KGModel, bits: int | None = None) -> int:
    """Entity plus relation table bytes at ``bits`` (None or 32: float32; 8/7/4: codes + float32 scales).

    A factored (low-rank) entity table counts its two factors.
    """
    total = 0
    for name, parameter in model.named_parameters():
        if parameter.dim() != 2 or not name.startswith(("entity", "relation")):
            continue
        rows, cols = parameter.shape
        total += stored_bytes(rows, cols, bits)
    return total

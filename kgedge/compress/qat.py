"""Quantization-aware training: fake-quantized tables with a straight-through estimator.

The forward pass sees exactly ``kgedge.quantization``'s per-row symmetric scheme (the exporter's);
the backward pass treats rounding as identity. Implemented as a torch parametrization of the entity
and relation tables (of ``U`` for a factored entity table: what the exporter stores), so every model
(and its ``score_all_tails``) trains on quantized tables unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from kgedge.models import KGModel
from kgedge.models.base import rotation_phases
from kgedge.models.factored import LowRankEmbedding
from kgedge.quantization import qmax


def fake_quantize_rows(table: Tensor, bits: int) -> Tensor:
    """Per-row symmetric fake quantization with a straight-through gradient; shape unchanged.

    Matches ``kgedge.quantization.quantize_rows`` + ``dequantize_rows`` (round half to even in both).
    """
    limit = qmax(bits)
    peak = table.detach().abs().amax(dim=1, keepdim=True)
    scale = torch.where(peak > 0, peak / limit, torch.ones_like(peak))
    quantized = torch.clamp(torch.round(table / scale), -limit, limit) * scale
    return table + (quantized - table).detach()


class FakeQuantize(nn.Module):
    def __init__(self, bits: int) -> None:
        super().__init__()
        qmax(bits)  # validates
        self.bits = bits

    def forward(self, table: Tensor) -> Tensor:
        return fake_quantize_rows(table, self.bits)


class FakeQuantizePhases(FakeQuantize):
    """Rotation rows ``[real | imaginary]`` as the exporter stores them: their phases, fake-quantized
    per row, as ``[cos | sin]`` rows again."""

    def forward(self, table: Tensor) -> Tensor:
        phases = fake_quantize_rows(rotation_phases(table), self.bits)
        return torch.cat([torch.cos(phases), torch.sin(phases)], dim=1)


def _stored_tables(model: KGModel) -> list[tuple[nn.Module, str, type[FakeQuantize]]]:
    """``(module, parameter name, fake quantizer)`` of each table the exporter quantizes: for a factored
    (low-rank) entity table that is ``U``, not the product ``U · V`` (``V`` is exported in float32); a
    rotation model's relations are stored as phases."""
    entity = (model.entity, "u") if isinstance(model.entity, LowRankEmbedding) else (model.entity, "weight")
    relation = FakeQuantizePhases if model.rotation_relations else FakeQuantize
    return [(*entity, FakeQuantize), (model.relation, "weight", relation)]


def enable_qat(model: KGModel, bits: int) -> KGModel:
    """Fake-quantize ``model``'s entity and relation tables from now on (in place)."""
    for module, name, quantizer in _stored_tables(model):
        if not parametrize.is_parametrized(module, name):
            parametrize.register_parametrization(module, name, quantizer(bits))
    return model


def finish_qat(model: KGModel) -> KGModel:
    """Bake the quantized values into plain tables (what gets saved and exported), in place."""
    for module, name, _ in _stored_tables(model):
        if parametrize.is_parametrized(module, name):
            parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return model

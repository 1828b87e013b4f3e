"""KG-embedding decoders for graph encoders: the query ``q = f(h, r)`` of each plain model, on rows.

A graph model scores like the plain model its decoder is named after, with the encoder's output in
place of the entity table. These functions repeat the plain models' ``query`` on given rows (the
plain models read their own table), and ``tests/test_graph_models.py`` checks that the two agree,
which is what lets :func:`kgedge.models.graph_encoder.materialized_checkpoint` turn a trained graph
model into the plain model that is exported and distilled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from kgedge.models.base import Interaction, split_complex
from kgedge.models.rotate import init_rotations, rotate, rotate_by


@dataclass(frozen=True)
class Decoder:
    """One decoder: how it scores and how wide its rows are.

    Attributes:
        name: the registry name of the plain model it reproduces (``materialize`` builds that model).
        interaction: ``dot`` or ``l2``, as ``KGModel.interaction``.
        complex_valued: rows hold ``[real | imaginary]`` halves (entity width ``2 * dim``).
        rotation_relations: relation rows are rotations, normalised to modulus 1 (RotatE).
        query: ``(head rows (B, W), relation rows (B, Wr)) -> (B, W)``.
        factors: ``(head rows, relation rows, tail rows) -> tensors`` for the N3 / L2 regularisers.
    """

    name: str
    interaction: Interaction
    complex_valued: bool
    rotation_relations: bool
    query: Callable[[Tensor, Tensor], Tensor]
    factors: Callable[[Tensor, Tensor, Tensor], list[Tensor]]

    def init_relations(self, weight: Tensor) -> None:
        """Initialise the relation table in place as the plain model does (rotations: tiny rows)."""
        if self.rotation_relations:
            init_rotations(weight)


def _complex_query(h: Tensor, r: Tensor) -> Tensor:
    r_re, r_im = split_complex(r)
    return rotate_by(h, r_re, r_im)


def _plain_factors(h: Tensor, r: Tensor, t: Tensor) -> list[Tensor]:
    return [h, r, t]


def _modulus_factors(h: Tensor, r: Tensor, t: Tensor) -> list[Tensor]:
    out = []
    for x in (h, r, t):
        re, im = split_complex(x)
        out.append(torch.sqrt(re * re + im * im + 1e-12))
    return out


DECODERS: dict[str, Decoder] = {
    "distmult": Decoder("distmult", "dot", False, False, lambda h, r: h * r, _plain_factors),
    "complex": Decoder("complex", "dot", True, False, _complex_query, _modulus_factors),
    "transe": Decoder("transe", "l2", False, False, lambda h, r: h + r, _plain_factors),
    "rotate": Decoder("rotate", "l2", True, True, rotate, lambda h, r, t: [h, t]),
}


def resolve_decoder(name: str) -> Decoder:
    """The decoder registered as ``name``; lists the valid names on error."""
    try:
        return DECODERS[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown decoder {name!r}; choose one of {', '.join(DECODERS)}") from None

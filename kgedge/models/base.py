"""The base of every KG model: entity and relation tables plus an interaction.

Every model reduces a query ``(h, r)`` to a vector ``q`` and scores it against a table of candidate
tails, by dot product or by a (negative) L2 or L1 distance. That reduction is what makes one
generic ``score_all_tails`` serve training, evaluation and the exported ONNX graph alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from kgedge.models.factored import LowRankEmbedding, entity_rank

Interaction = Literal["dot", "l2", "l1"]


@dataclass(frozen=True)
class ModelConfig:
    """What a model needs to be rebuilt from a checkpoint.

    Attributes:
        model: registry name.
        num_entities: rows of the entity table.
        num_relations: relation ids *including* reciprocals (twice the relations of the data).
        dim: embedding dimension; complex models hold ``dim`` complex numbers (``2 * dim`` reals).
        init_scale: std of the normal initialisation; small values suit 1-N training with N3.
        dropout: dropout on the query vector during training.
    """

    model: str
    num_entities: int
    num_relations: int
    dim: int
    init_scale: float = 1e-3
    dropout: float = 0.0
    # model-specific settings (e.g. a graph encoder's layers); plain JSON values only
    options: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("num_entities", "num_relations", "dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if not 0.0 < self.init_scale <= 10.0:
            raise ValueError(f"ModelConfig.init_scale must be in (0, 10], got {self.init_scale!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class KGModel(nn.Module):
    """Entity/relation tables and the all-tails scoring shared by every model.

    Subclasses set ``interaction`` and ``complex_valued`` and implement :meth:`query`.
    """

    interaction: ClassVar[Interaction] = "dot"
    complex_valued: ClassVar[bool] = False
    rotation_relations: ClassVar[bool] = False  # relation rows are rotations the exporter stores as phases

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        width = self.entity_width
        rank = entity_rank(config.options)
        self.entity: nn.Embedding | LowRankEmbedding
        if rank is None:
            self.entity = nn.Embedding(config.num_entities, width)
        else:  # low-rank compressed, E = U · V (kgedge.compress.lowrank); initialised by its own rule
            self.entity = LowRankEmbedding(config.num_entities, width, rank, config.init_scale)
        self.relation = nn.Embedding(config.num_relations, self.relation_width)
        if rank is None:
            nn.init.normal_(self.entity.weight, std=config.init_scale)
        nn.init.normal_(self.relation.weight, std=config.init_scale)
        self.drop = nn.Dropout(config.dropout)

    @property
    def entity_width(self) -> int:
        """Reals per entity row: ``dim``, or ``2 * dim`` for complex models."""
        return self.config.dim * (2 if self.complex_valued else 1)

    @property
    def relation_width(self) -> int:
        return self.entity_width

    def entity_table(self) -> Tensor:
        """The candidate table scored against, shape ``(num_entities, entity_width)``."""
        return self.entity.weight

    def relation_table(self) -> Tensor:
        """The relation table as the exporter stores it, shape ``(num_relations, Wr)``: the parameter
        itself, or a rotation model's phases (:attr:`rotation_relations`)."""
        return rotation_phases(self.relation.weight) if self.rotation_relations else self.relation.weight

    def entity_rows(self, ids: Tensor) -> Tensor:
        """Rows of the candidate table for ``ids`` (any shape), shape ``(*ids.shape, entity_width)``:
        a lookup, without building the whole table (a factored table multiplies only these rows)."""
        return self.entity(ids)

    def query(self, heads: Tensor, relations: Tensor) -> Tensor:
        """Query vectors for ``(h, r, ?)``, shape ``(batch, entity_width)``."""
        raise NotImplementedError

    def score_all_tails(self, heads: Tensor, relations: Tensor) -> Tensor:
        """Scores of every entity as the tail of ``(h, r, ?)``; higher is better.

        Args:
            heads, relations: shape ``(batch,)`` int64.

        Returns:
            shape ``(batch, num_entities)``.
        """
        q = self.drop(self.query(heads, relations))
        table = self.entity_table()
        if self.interaction == "dot":
            return q @ table.T
        if self.interaction == "l1":  # cdist never builds the (batch, N, width) differences
            return -torch.cdist(q.unsqueeze(0), table.unsqueeze(0), p=1.0).squeeze(0)
        squared = (q * q).sum(1, keepdim=True) - 2.0 * q @ table.T + (table * table).sum(1)
        return -squared.clamp_min(1e-9).sqrt()

    def score_hrt(self, heads: Tensor, relations: Tensor, tails: Tensor) -> Tensor:
        """Scores of given triples, shape ``(batch,)``; the same query dropout as the other scorers."""
        q = self.drop(self.query(heads, relations))
        return self._interact(q, self.entity_rows(tails))

    def score_tails(self, heads: Tensor, relations: Tensor, tails: Tensor) -> Tensor:
        """Scores of chosen candidate tails per query (e.g. sampled negatives).

        Args:
            tails: shape ``(batch, m)``.

        Returns:
            shape ``(batch, m)``.
        """
        q = self.drop(self.query(heads, relations)).unsqueeze(1)
        return self._interact(q, self.entity_rows(tails))

    def _interact(self, q: Tensor, t: Tensor) -> Tensor:
        """Scores of query vectors against candidate rows (broadcast), over the last axis."""
        if self.interaction == "dot":
            return (q * t).sum(-1)
        if self.interaction == "l1":
            return -(q - t).abs().sum(-1)
        return -(q - t).norm(dim=-1)

    def factors(self, heads: Tensor, relations: Tensor, tails: Tensor) -> list[Tensor]:
        """The embeddings a batch touches, for the N3 / L2 regularisers."""
        return [self.entity(heads), self.relation(relations), self.entity(tails)]

    @torch.no_grad()
    def numel_tables(self) -> int:
        return sum(p.numel() for p in self.parameters())


def split_complex(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(..., 2d)`` as real and imaginary halves, each ``(..., d)``."""
    half = x.shape[-1] // 2
    return x[..., :half], x[..., half:]


def rotation_phases(rows: Tensor) -> Tensor:
    """The phases ``(..., d)`` of ``[real | imaginary]`` rotation rows ``(..., 2d)``: what the device stores."""
    re, im = split_complex(rows)
    return torch.atan2(im, re)

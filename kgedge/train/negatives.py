"""Negative sampling: uniform, or type-constrained when entity types are known."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class NegativeSampler:
    """Corrupts tails (heads are corrupted through the reciprocal relations).

    Args:
        num_entities: candidates are ``0..num_entities-1``.
        entity_types: shape ``(num_entities,)`` type ids; with it, a negative has the true tail's type.
        generator: a seeded generator, so that runs repeat.
    """

    def __init__(
        self, num_entities: int, entity_types: np.ndarray | None = None, generator: torch.Generator | None = None
    ) -> None:
        self.num_entities = num_entities
        self.generator = generator
        self.by_type: list[Tensor] | None = None
        if entity_types is not None and len(np.unique(entity_types)) > 1:
            order = np.argsort(entity_types, kind="stable")
            counts = np.bincount(entity_types)
            self.types = torch.as_tensor(entity_types)
            self.sorted_ids = torch.as_tensor(order)
            self.starts = torch.as_tensor(np.concatenate([[0], np.cumsum(counts)[:-1]]))
            self.counts = torch.as_tensor(counts)
            self.by_type = []

    def sample(self, tails: Tensor, num_negatives: int) -> Tensor:
        """Negative tails, shape ``(batch, num_negatives)``."""
        shape = (len(tails), num_negatives)
        if self.by_type is None:
            return torch.randint(self.num_entities, shape, generator=self.generator)
        t = self.types[tails]
        offsets = (torch.rand(shape, generator=self.generator) * self.counts[t, None]).long()
        return self.sorted_ids[self.starts[t, None] + offsets]

"""TransE (Bordes et al., 2013): ``score = -||h + r - t||₂``."""

from __future__ import annotations

from torch import Tensor

from kgedge.models.base import KGModel


class TransE(KGModel):
    interaction = "l2"

    def query(self, heads: Tensor, relations: Tensor) -> Tensor:
        return self.entity(heads) + self.relation(relations)

"""DistMult (Yang et al., 2015): ``score = <h, r, t>``, a diagonal bilinear form."""

from __future__ import annotations

from torch import Tensor

from kgedge.models.base import KGModel


class DistMult(KGModel):
    interaction = "dot"

    def query(self, heads: Tensor, relations: Tensor) -> Tensor:
        return self.entity(heads) * self.relation(relations)

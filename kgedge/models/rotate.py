"""RotatE (Sun et al., 2019): ``score = -||h ∘ r - t||₂`` with ``|r_i| = 1``, in real arithmetic.

A relation is a vector of phases; the rotation ``h ∘ e^{iθ}`` is written out on the real and
imaginary halves of ``h``. The L2 distance (rather than the paper's sum of moduli) keeps all-tails
scoring a matrix product, which is what the device runs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kgedge.models.base import KGModel, split_complex


class RotatE(KGModel):
    interaction = "l2"
    complex_valued = True

    @property
    def relation_width(self) -> int:
        return self.config.dim  # one phase per complex dimension

    def __init__(self, config) -> None:  # noqa: ANN001 (ModelConfig; same signature as the base)
        super().__init__(config)
        # phases uniform on the circle: a small normal init would start every relation near identity
        torch.nn.init.uniform_(self.relation.weight, -torch.pi, torch.pi)

    def query(self, heads: Tensor, relations: Tensor) -> Tensor:
        h_re, h_im = split_complex(self.entity(heads))
        phase = self.relation(relations)
        r_re, r_im = torch.cos(phase), torch.sin(phase)
        return torch.cat([h_re * r_re - h_im * r_im, h_re * r_im + h_im * r_re], dim=-1)

    def factors(self, heads: Tensor, relations: Tensor, tails: Tensor) -> list[Tensor]:
        # the phases are not penalised: rotations have unit modulus by construction
        return [self.entity(heads), self.entity(tails)]

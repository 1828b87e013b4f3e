"""ComplEx (Trouillon et al., 2016): ``score = Re(<h, r, conj(t)>)``, in real arithmetic.

Rows hold ``[real | imaginary]`` halves, because ONNX has no complex type:
``Re(<h, r, conj t>) = (h_re r_re - h_im r_im)·t_re + (h_re r_im + h_im r_re)·t_im``,
i.e. a dot product of the query ``[h_re r_re - h_im r_im | h_re r_im + h_im r_re]`` with the row of t.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kgedge.models.base import KGModel, split_complex


class ComplEx(KGModel):
    interaction = "dot"
    complex_valued = True

    def query(self, heads: Tensor, relations: Tensor) -> Tensor:
        h_re, h_im = split_complex(self.entity(heads))
        r_re, r_im = split_complex(self.relation(relations))
        return torch.cat([h_re * r_re - h_im * r_im, h_re * r_im + h_im * r_re], dim=-1)

    def factors(self, heads: Tensor, relations: Tensor, tails: Tensor) -> list[Tensor]:
        # N3 on complex numbers acts on their moduli (Lacroix et al., 2018)
        out = []
        for x in super().factors(heads, relations, tails):
            re, im = split_complex(x)
            out.append(torch.sqrt(re * re + im * im + 1e-12))
        return out

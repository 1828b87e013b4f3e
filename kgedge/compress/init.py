"""Student initialisation from a teacher: an SVD (PCA without centring) projection of its tables."""

from __future__ import annotations

import torch
from torch import Tensor

from kgedge.models import KGModel
from kgedge.models.base import split_complex


def _as_complex(table: Tensor, is_complex: bool) -> Tensor:
    if not is_complex:
        return table.to(torch.complex64)
    re, im = split_complex(table)
    return torch.complex(re, im)


def project_rows(table: Tensor, rank: int, is_complex: bool) -> tuple[Tensor, Tensor]:
    """Project rows onto their top-``rank`` right singular vectors.

    Args:
        table: shape ``(rows, width)``; complex tables as ``[re | im]`` halves.
        rank: target dimension (complex dimensions for complex tables).

    Returns:
        ``(projected, basis)``: shapes ``(rows, rank)`` complex and ``(width', rank)`` complex.
    """
    z = _as_complex(table.detach().float(), is_complex)
    rank = min(rank, min(z.shape))
    _, _, vh = torch.linalg.svd(z, full_matrices=False)
    basis = vh[:rank].conj().T
    return z @ basis, basis


def init_student_from_teacher(student: KGModel, teacher: KGModel) -> None:
    """Overwrite the student's entity table with the teacher's, projected to the student's width.

    The relation table keeps its own initialisation: a diagonal or rotational relation has no exact
    image under a projection, and fine-tuning learns it in a few epochs from a good entity space.
    The projected table is rescaled to the student's initial row norm times the teacher's relative
    spread, so that optimiser step sizes stay sensible.
    """
    with torch.no_grad():
        dim = student.config.dim
        projected, _ = project_rows(teacher.entity_table(), dim if student.complex_valued else student.entity_width,
                                    teacher.complex_valued)
        if student.complex_valued:
            values = torch.cat([projected.real, projected.imag], dim=1)
        else:
            values = projected.real if not teacher.complex_valued else torch.cat([projected.real, projected.imag], 1)
            values = values[:, : student.entity_width]
        width = values.shape[1]
        target = student.entity.weight
        target.zero_()
        target[:, :width] = values.to(target.dtype)

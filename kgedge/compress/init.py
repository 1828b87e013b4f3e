"""Student initialisation: an SVD (PCA without centring) projection of the teacher's entity table, or a
lightweight embedding of the KG's entity graph (random walks or matrix factorisation, ``kgedge.embed``)."""

from __future__ import annotations

import torch
from torch import Tensor

from kgedge.data.kg import KnowledgeGraph
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
    The projection keeps the teacher's scale (an orthonormal basis: inner products between the kept
    components are unchanged).
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


def init_student_from_embedding(student: KGModel, teacher: KGModel, kg: KnowledgeGraph, method: str,
                                seed: int = 0) -> None:
    """Overwrite the student's entity table with a lightweight embedding of ``kg``'s entity graph.

    The embedding (``kgedge.embed``: DeepWalk / node2vec skip-gram, or a factorised PPMI matrix) is
    computed at the student's row width; a complex student reads its columns as ``[re | im]``. Its
    scale is arbitrary, so rows are rescaled to the teacher's mean row norm, the scale a teacher-
    initialised student starts from. The relation table keeps its own initialisation.

    Args:
        method: one of ``kgedge.compress.recipe.EMBEDDING_INITS`` (``resolve_method`` refuses others).
    """
    from kgedge.embed.entity_graph import EntityGraph  # scipy-based: imported only when used
    from kgedge.embed.pipeline import resolve_method

    table, _ = resolve_method(method)(EntityGraph.of(kg), student.entity_width, seed)
    with torch.no_grad():
        table = table.to(student.entity.weight.dtype)
        target_norm = teacher.entity_table().detach().norm(dim=1).mean()
        table = table * (target_norm / table.norm(dim=1).mean().clamp_min(1e-12))
        student.entity.weight.copy_(table)

"""Knowledge distillation: ``L = L_hard + α · L_soft`` with temperature, hints and adaptive weights.

``L_soft = T² · KL(softmax(s_teacher / T) || softmax(s_student / T))`` over all candidate tails of a
query (1-N), or over a sampled candidate set (the teacher's top-k plus random entities) when the
entity count is too large to score every tail, or (``cached``) over the teacher's top-k tails and
"every other tail", from answers the teacher gave once before training
(:mod:`kgedge.compress.teacher_cache`). Optional extras:

* a score hint: mean squared error between standardised student and teacher scores;
* adaptive per-query weights in the manner of DualDE (Zhu et al., WSDM 2022): a query whose true tail
  the teacher ranks poorly carries a less trustworthy soft label, so its soft term is down-weighted
  and its hard term up-weighted, by the teacher's probability of the true tail.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from kgedge.compress.recipe import CANDIDATES
from kgedge.compress.teacher_cache import TeacherTopK, cached_soft_loss
from kgedge.models import KGModel

# "auto" switches to sampled candidates above this many entities (1-N memory is batch x entities)
FULL_CANDIDATES_LIMIT = 100_000
# ...and to the teacher's cached top-k above this many: on wordnet-rr (41k entities, a 450 s budget) a
# ComplEx-60 student kept 84.0 % of the teacher's MRR so, against 52.7 % with the full 1-N soft loss
# (benchmarks/results/distill_cache_wordnet-rr.md); the small KGs measured so far keep the full one
CACHED_CANDIDATES_MIN = 10_000
# sampled candidates: the teacher's top-k is taken over chunks of queries of at most this many scores
TOPK_SCORE_CELLS = 32_000_000


@dataclass(frozen=True)
class DistillConfig:
    """Attributes:
        alpha: weight of the soft loss.
        temperature: T of the softened distributions.
        candidates: ``full`` (every entity), ``sampled`` (teacher top-k + random), ``cached`` (the
            teacher's top-k and the rest, computed once) or ``auto`` (:func:`resolve_candidates`).
        teacher_topk, random_candidates: the sampled candidate set per query (``teacher_topk``: also
            the tails a cache keeps).
        hint_weight: weight of the score-level hint (0 = off).
        adaptive: DualDE-style per-query weighting of soft vs hard labels.
    """

    alpha: float = 1.0
    temperature: float = 4.0  # small search on Nations (benchmarks/results/distill_search.md): T=1 87.9%, 2 91.5%, 4 94.9% of the teacher
    candidates: str = "auto"
    teacher_topk: int = 64
    random_candidates: int = 192
    hint_weight: float = 0.0
    adaptive: bool = False

    def __post_init__(self) -> None:
        if self.alpha < 0:
            raise ValueError(f"DistillConfig.alpha={self.alpha!r}; allowed: >= 0")
        if self.temperature <= 0:
            raise ValueError(f"DistillConfig.temperature={self.temperature!r}; allowed: > 0")
        if self.candidates not in CANDIDATES:
            raise ValueError(f"DistillConfig.candidates={self.candidates!r}; allowed: {', '.join(CANDIDATES)}")
        if self.teacher_topk < 1 or self.random_candidates < 0:
            raise ValueError("DistillConfig.teacher_topk must be >= 1 and random_candidates >= 0")
        if self.hint_weight < 0:
            raise ValueError(f"DistillConfig.hint_weight={self.hint_weight!r}; allowed: >= 0")
        if self.candidates == "cached" and self.hint_weight:
            raise ValueError("DistillConfig.hint_weight needs the teacher's full score rows; with candidates='cached' "
                             "the teacher only answers once, before training: use full or sampled candidates")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def resolve_candidates(config: DistillConfig, num_entities: int) -> str:
    """``full``, ``sampled`` or ``cached``: what ``auto`` means for a KG of ``num_entities`` (a score
    hint needs the teacher's rows in the step, so it never gets the cache)."""
    if config.candidates != "auto":
        return config.candidates
    if num_entities > FULL_CANDIDATES_LIMIT:
        return "sampled"
    return "cached" if num_entities > CACHED_CANDIDATES_MIN and not config.hint_weight else "full"


def adaptive_weights(p_true: Tensor) -> Tensor:
    """DualDE-style per-query soft-loss weights ``2·p / (p + mean p)`` from the teacher's probability
    ``p`` of each query's true tail, shape ``(batch,)``."""
    return 2.0 * p_true / (p_true + p_true.mean() + 1e-12)


def soft_loss(student: Tensor, teacher: Tensor, temperature: float, weights: Tensor | None = None) -> Tensor:
    """``T² · KL(p_teacher || p_student)`` per query, averaged (optionally weighted).

    Args:
        student, teacher: shape ``(batch, candidates)`` scores over the same candidates.
        weights: shape ``(batch,)`` per-query weights, or None.
    """
    log_p_student = F.log_softmax(student / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher / temperature, dim=1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(1)
    if weights is not None:
        kl = kl * weights
    return temperature**2 * kl.mean()


def score_hint(student: Tensor, teacher: Tensor) -> Tensor:
    """MSE between row-standardised scores: matches the shape of the score landscape, not its scale."""
    def standardise(x: Tensor) -> Tensor:
        return (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-6)

    return F.mse_loss(standardise(student), standardise(teacher))


class DistillationLoss:
    """The trainer's loss hook: ``α · L_soft`` (+ hint); the hard loss is the trainer's own.

    With ``adaptive``, each query's soft term is weighted by ``2·p / (p + mean p)``, where p is the
    teacher's probability of the true tail: confident, correct teachers count more, queries the
    teacher gets wrong fall back on the hard label.
    """

    def __init__(self, teacher: KGModel, config: DistillConfig, num_entities: int, generator: torch.Generator,
                 cache: TeacherTopK | None = None) -> None:
        """Args:
            cache: the teacher's answers to the training queries, required by ``candidates='cached'``.
        """
        self.teacher = teacher.eval()
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        self.config = config
        self.num_entities = num_entities
        self.generator = generator
        mode = resolve_candidates(config, num_entities)
        self.sampled = mode == "sampled"
        self.cache = cache if mode == "cached" else None
        if mode == "cached" and (cache is None or cache.temperature != config.temperature):
            raise ValueError("candidates='cached' needs a TeacherTopK of the training queries at the same temperature")

    def _candidates(self, h: Tensor, r: Tensor, t: Tensor) -> Tensor:
        """Shape ``(batch, 1 + topk + random)``: the true tail, the teacher's top-k, random entities."""
        k = min(self.config.teacher_topk, self.num_entities)
        rows = max(1, TOPK_SCORE_CELLS // self.num_entities)  # batch x N at once: 4 GiB at 1024 x 1M
        with torch.no_grad():
            top = torch.cat([self.teacher.score_all_tails(h[i : i + rows], r[i : i + rows]).topk(k, dim=1).indices
                             for i in range(0, len(h), rows)])
        random = torch.randint(self.num_entities, (len(h), self.config.random_candidates), generator=self.generator)
        return torch.cat([t[:, None], top, random.to(h.device)], dim=1)

    def __call__(self, student: KGModel, batch: Tensor, student_all: Tensor | None = None) -> Tensor:
        """The soft loss (+ hint) of a batch of ``(h, r, t)`` rows.

        Args:
            student_all: the student's ``batch x entities`` scores when the hard loss already
                computed them (1-N); reused in full-candidate mode instead of scoring again.
        """
        h, r, t = batch[:, 0], batch[:, 1], batch[:, 2]
        if self.cache is not None:
            return self._cached(student, h, r, t, student_all)
        if self.sampled:
            candidates = self._candidates(h, r, t)
            with torch.no_grad():
                teacher_scores = self.teacher.score_tails(h, r, candidates)
            student_scores = student.score_tails(h, r, candidates)
            true_index = torch.zeros_like(t)
        else:
            with torch.no_grad():
                teacher_scores = self.teacher.score_all_tails(h, r)
            student_scores = student_all if student_all is not None else student.score_all_tails(h, r)
            true_index = t
        weights = None
        if self.config.adaptive:
            with torch.no_grad():
                p_true = torch.softmax(teacher_scores, dim=1).gather(1, true_index[:, None]).squeeze(1)
                weights = adaptive_weights(p_true)
        loss = self.config.alpha * soft_loss(student_scores, teacher_scores, self.config.temperature, weights)
        if self.config.hint_weight:
            loss = loss + self.config.hint_weight * score_hint(student_scores, teacher_scores)
        return loss

    def _cached(self, student: KGModel, h: Tensor, r: Tensor, t: Tensor, student_all: Tensor | None) -> Tensor:
        """The soft loss against the cached teacher: no teacher product in the step."""
        assert self.cache is not None
        rows = self.cache.rows(h, r)
        scores = student_all if student_all is not None else student.score_all_tails(h, r)
        weights = None
        if self.config.adaptive:  # the teacher's probability of the true tail: one score, the cached partition
            with torch.no_grad():
                true_score = self.teacher.score_hrt(h, r, t)
                weights = adaptive_weights(torch.exp(true_score - self.cache.log_z[rows].to(true_score.device)))
        return self.config.alpha * cached_soft_loss(scores, self.cache, rows, weights)

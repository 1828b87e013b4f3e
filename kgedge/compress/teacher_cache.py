"""The teacher's answers to every training query, computed once, for distillation without the teacher.

Full 1-N distillation scores every entity with the teacher at every step: on a KG of 40k entities and
a 256-dim teacher, the teacher's product is most of a distillation step, and it gives the same answer
every epoch. :class:`TeacherTopK` asks it once per distinct training query ``(h, r)`` and keeps, at
temperature T, the log-probabilities of its top-k tails and the log of the probability mass of all the
other tails together. The soft loss (:func:`cached_soft_loss`) then compares the teacher and the
student on k + 1 outcomes (each of the teacher's top-k tails, and "any other tail"): the KL divergence
of those coarse distributions. It equals the full KL when the student spreads its remaining mass over
the other tails as the teacher does, and is never larger; what it leaves out, the order among tails
the teacher thinks unlikely, is what the hard loss and the top k already pin down least.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor

from kgedge.models import KGModel

log = logging.getLogger(__name__)

# teacher scores computed at once while building the cache (batch x entities floats)
SCORE_CELLS = 16_000_000


class TeacherTopK:
    """Per distinct training query: the teacher's top-k tails at temperature T and the rest's mass.

    Attributes:
        keys: shape ``(Q,)`` sorted ``h * num_relations + r`` of the cached queries.
        ids: shape ``(Q, k)`` the teacher's best tails, int64.
        log_p: shape ``(Q, k)`` their log-probabilities under ``softmax(s_teacher / T)``.
        log_rest: shape ``(Q,)`` log of the probability of every other tail together.
        log_z: shape ``(Q,)`` ``logsumexp(s_teacher)`` at temperature 1 (for adaptive weights).
    """

    def __init__(self, teacher: KGModel, queries: Tensor, num_relations: int, k: int, temperature: float) -> None:
        """Args:
            queries: shape ``(n, >=2)`` training rows ``(h, r, ...)``; distinct ``(h, r)`` are cached.
            num_relations: relation ids including reciprocals (the key's radix).
            k: tails kept per query (at most the entity count).
        """
        self.num_relations = num_relations
        self.temperature = temperature
        self.keys = torch.unique(queries[:, 0].long() * num_relations + queries[:, 1].long())  # sorted
        heads, relations = self.keys // num_relations, self.keys % num_relations
        num_entities = teacher.config.num_entities
        k = min(k, num_entities)
        rows = max(1, SCORE_CELLS // num_entities)
        ids, log_p, log_rest, log_z = [], [], [], []
        log.info("asking the teacher once for its top %d tails of %d training queries over %d entities", k,
                 len(self.keys), num_entities)  # minutes on a large KG: one teacher pass over the queries
        teacher = teacher.eval()
        with torch.no_grad():
            for start in range(0, len(self.keys), rows):
                scores = teacher.score_all_tails(heads[start : start + rows], relations[start : start + rows])
                log_z.append(torch.logsumexp(scores, dim=1))
                soft = F.log_softmax(scores / temperature, dim=1)
                top = soft.topk(k, dim=1)
                ids.append(top.indices)
                log_p.append(top.values)
                log_rest.append(torch.logsumexp(soft.scatter(1, top.indices, float("-inf")), dim=1))
        self.has_rest = k < num_entities  # with every tail in the top k there is no "rest" outcome
        self.ids, self.log_p = torch.cat(ids), torch.cat(log_p)
        self.log_rest, self.log_z = torch.cat(log_rest), torch.cat(log_z)
        log.info("cached the teacher's top %d tails of %d training queries (%.0f MiB)", k, len(self.keys),
                 (self.ids.numel() * 12 + self.keys.numel() * 16) / 2**20)

    def rows(self, heads: Tensor, relations: Tensor) -> Tensor:
        """Cache rows of the queries ``(heads[i], relations[i])``, shape ``(batch,)``.

        Raises:
            KeyError: a query that is not a training query (the cache only holds those).
        """
        keys = heads.long().cpu() * self.num_relations + relations.long().cpu()
        index = torch.searchsorted(self.keys, keys).clamp_max(len(self.keys) - 1)
        missing = self.keys[index] != keys
        if missing.any():
            i = int(missing.nonzero()[0, 0])
            raise KeyError(f"query (head {int(heads[i])}, relation {int(relations[i])}) is not a training query "
                           "of the teacher cache")
        return index


def cached_soft_loss(student: Tensor, cache: TeacherTopK, rows: Tensor, weights: Tensor | None = None) -> Tensor:
    """``T² · KL`` between the teacher's and the student's distributions over (top-k tails, the rest),
    per query, averaged (optionally weighted).

    Args:
        student: shape ``(batch, entities)`` the student's scores of every tail.
        rows: shape ``(batch,)`` the queries' cache rows (:meth:`TeacherTopK.rows`).
    """
    ids = cache.ids[rows].to(student.device)
    log_p, log_rest = cache.log_p[rows].to(student.device), cache.log_rest[rows].to(student.device)
    log_q = F.log_softmax(student / cache.temperature, dim=1)
    log_q_top = log_q.gather(1, ids)
    kl = (log_p.exp() * (log_p - log_q_top)).sum(1)
    if cache.has_rest:
        log_q_rest = torch.logsumexp(log_q.scatter(1, ids, float("-inf")), dim=1)
        kl = kl + log_rest.exp() * (log_rest - log_q_rest)
    if weights is not None:
        kl = kl * weights
    return cache.temperature**2 * kl.mean()

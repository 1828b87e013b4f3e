"""DeepWalk and node2vec: random walks over the entity graph, then skip-gram with negative sampling.

Walks (Perozzi et al., 2014; Grover & Leskovec, 2016). A walk at ``v`` that came from ``t`` moves to
a neighbour ``x`` of ``v`` with probability proportional to

    1/p  if x = t (return),    1  if x is a neighbour of t,    1/q  otherwise (move outward)

so ``p = q = 1`` is DeepWalk's uniform walk, a large ``p`` discourages going back, and ``q < 1`` drifts
outward (DFS-like, communities) while ``q > 1`` stays local (BFS-like, structural roles). All walkers
move at once (numpy), and node2vec's second-order step is rejection sampling: propose a uniform
neighbour, accept with ``weight / max weight``; no per-edge transition tables.

Skip-gram (Mikolov et al., 2013) in torch. For every pair ``(u, c)`` at most ``window`` steps apart on
a walk, with ``k`` negatives ``n`` drawn from the unigram distribution to the power 3/4:

    loss = -log σ(e_u · o_c) - Σ_n log σ(-e_u · o_n)

with ``E`` (the result) and ``O`` (context vectors, discarded) learned by sparse Adam.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgedge.embed.entity_graph import EntityGraph

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RandomWalkConfig:
    """How to walk and how to train skip-gram.

    Attributes:
        dim: embedding width.
        walks_per_node, walk_length: walks started at every node, and nodes per walk.
        p, q: node2vec's return and in-out parameters (``1, 1`` = DeepWalk).
        window: context size on each side of a node in a walk.
        num_negatives: negatives per positive pair.
        epochs: passes over the pairs.
        batch_size: pairs per step.
        lr: sparse Adam learning rate.
        seed: seeds walks, negatives and initialisation.
    """

    dim: int = 128
    walks_per_node: int = 8
    walk_length: int = 20
    p: float = 1.0
    q: float = 1.0
    window: int = 4
    num_negatives: int = 5
    epochs: int = 1
    batch_size: int = 8192
    lr: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        positive_ints = ("dim", "walks_per_node", "walk_length", "window", "num_negatives", "epochs", "batch_size")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"RandomWalkConfig.{name}={value!r}; allowed: a positive integer")
        if self.walk_length < 2:
            raise ValueError(f"RandomWalkConfig.walk_length={self.walk_length!r}; allowed: 2 or more")
        for name in ("p", "q", "lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"RandomWalkConfig.{name}={getattr(self, name)!r}; allowed: > 0")

    @property
    def is_deepwalk(self) -> bool:
        return self.p == 1.0 and self.q == 1.0


@dataclass(frozen=True)
class WalkEmbedding:
    """A random-walk embedding: the table and how it was made.

    Attributes:
        table: shape ``(num_nodes, dim)`` float32.
        num_walks, num_pairs: walks generated and skip-gram pairs per epoch.
        walk_seconds, train_seconds: wall time of the walks and of skip-gram.
        final_loss: mean skip-gram loss over the last epoch.
    """

    table: Tensor
    num_walks: int
    num_pairs: int
    walk_seconds: float
    train_seconds: float
    final_loss: float


def random_walks(graph: EntityGraph, config: RandomWalkConfig, rng: np.random.Generator) -> np.ndarray:
    """``walks_per_node`` walks from every node, shape ``(num_nodes * walks_per_node, walk_length)`` int64.

    An isolated node's walk stays where it is.
    """
    starts = np.tile(np.arange(graph.num_nodes, dtype=np.int64), config.walks_per_node)
    walks = np.empty((len(starts), config.walk_length), dtype=np.int64)
    walks[:, 0] = starts
    degrees = graph.degrees
    max_weight = max(1.0 / config.p, 1.0, 1.0 / config.q)
    for step in range(1, config.walk_length):
        current = walks[:, step - 1]
        nxt = current.copy()
        pending = np.flatnonzero(degrees[current] > 0)
        while len(pending):
            here = current[pending]
            offsets = (rng.random(len(pending)) * degrees[here]).astype(np.int64)
            proposal = graph.indices[graph.indptr[here] + offsets]
            if step == 1 or config.is_deepwalk:
                accepted = np.ones(len(pending), dtype=bool)
            else:
                previous = walks[pending, step - 2]
                weight = np.where(
                    proposal == previous, 1.0 / config.p,
                    np.where(graph.has_edge(previous, proposal), 1.0, 1.0 / config.q),
                )
                accepted = rng.random(len(pending)) * max_weight < weight
            nxt[pending[accepted]] = proposal[accepted]
            pending = pending[~accepted]
        walks[:, step] = nxt
    return walks


def skipgram_pairs(walks: np.ndarray, window: int) -> np.ndarray:
    """``(centre, context)`` pairs at most ``window`` apart, both orders, shape ``(num_pairs, 2)``."""
    parts = []
    for offset in range(1, min(window, walks.shape[1] - 1) + 1):
        left, right = walks[:, :-offset].reshape(-1), walks[:, offset:].reshape(-1)
        parts.append(np.stack([left, right], axis=1))
        parts.append(np.stack([right, left], axis=1))
    return np.concatenate(parts)


class SkipGram(nn.Module):
    """Centre vectors ``E`` and context vectors ``O``, both ``(num_nodes, dim)``, sparse gradients."""

    def __init__(self, num_nodes: int, dim: int) -> None:
        super().__init__()
        self.centre = nn.Embedding(num_nodes, dim, sparse=True)
        self.context = nn.Embedding(num_nodes, dim, sparse=True)
        nn.init.uniform_(self.centre.weight, -0.5 / dim, 0.5 / dim)
        nn.init.zeros_(self.context.weight)

    def loss(self, centre: Tensor, context: Tensor, negatives: Tensor) -> Tensor:
        """Mean negative-sampling loss; ``centre``/``context`` ``(B,)``, ``negatives`` ``(B, k)``."""
        e = self.centre(centre)
        positive = (e * self.context(context)).sum(-1)
        negative = torch.einsum("bd,bkd->bk", e, self.context(negatives))
        return -(F.logsigmoid(positive) + F.logsigmoid(-negative).sum(-1)).mean()


def random_walk_embedding(graph: EntityGraph, config: RandomWalkConfig) -> WalkEmbedding:
    """Walk ``graph`` and train skip-gram on the walks (see the module docstring)."""
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # the initialisation, as the trainer seeds it
    started = time.perf_counter()
    walks = random_walks(graph, config, rng)
    pairs = torch.as_tensor(skipgram_pairs(walks, config.window))
    walk_seconds = time.perf_counter() - started
    frequency = np.bincount(walks.reshape(-1), minlength=graph.num_nodes).astype(np.float64) ** 0.75
    noise = torch.as_tensor(frequency / frequency.sum(), dtype=torch.float32)

    model = SkipGram(graph.num_nodes, config.dim)
    optimizer = torch.optim.SparseAdam(list(model.parameters()), lr=config.lr)
    started = time.perf_counter()
    epoch_loss = 0.0
    for epoch in range(config.epochs):
        order = torch.randperm(len(pairs), generator=generator)
        total, batches = 0.0, 0
        for start in range(0, len(pairs), config.batch_size):
            batch = pairs[order[start : start + config.batch_size]]
            negatives = torch.multinomial(noise, len(batch) * config.num_negatives, replacement=True,
                                          generator=generator).view(len(batch), config.num_negatives)
            optimizer.zero_grad(set_to_none=True)
            loss = model.loss(batch[:, 0], batch[:, 1], negatives)
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        epoch_loss = total / max(batches, 1)
        log.info("skip-gram epoch %d: loss %.4f", epoch + 1, epoch_loss)
    train_seconds = time.perf_counter() - started
    log.info("%s: %d walks, %d pairs, walks %.1f s, skip-gram %.1f s",
             "deepwalk" if config.is_deepwalk else "node2vec", len(walks), len(pairs), walk_seconds, train_seconds)
    return WalkEmbedding(model.centre.weight.detach().clone(), len(walks), len(pairs), walk_seconds,
                         train_seconds, epoch_loss)

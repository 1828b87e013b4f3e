"""Data-parallel teacher training on ``torch.distributed``: ``torchrun ... -m kgedge train ...``.

How the work is split
---------------------
Every rank holds a replica of the model inside ``DistributedDataParallel`` (gloo on CPU, NCCL on
GPUs). ``TrainConfig.batch_size`` stays the *global* batch. Each epoch, every rank draws the same
permutation of the reciprocal-augmented training queries (the one :func:`train_model` draws: a
generator seeded once with ``config.seed``), and rank ``r`` of ``P`` takes rows ``r, r + P, ...`` of
each global batch: ``DistributedSampler``'s interleaving applied per global batch, so the shards of
one step are disjoint and cover the batch. Each rank's loss is weighted by its share of the batch
(``P · n_r / n``), so the gradient mean that DDP all-reduces is the gradient of the whole global
batch: ``P`` ranks make the same optimizer updates as one process with the same ``batch_size``
(equal up to float summation order for the 1-N losses; ``nssa`` draws its negatives per rank).

Randomness that should differ per rank (``nssa`` negatives, dropout) is reseeded at every epoch
from ``(seed, rank, epoch)``, so a resumed run draws what an uninterrupted one would.

Rank 0 alone validates, keeps the best model, writes the checkpoint and ``OUT.resume.pt`` (atomically,
in :func:`train_model`'s format, so a run may resume on another number of ranks or on one process),
and decides the time budget and early stopping; its decisions are broadcast. At the end every rank
holds rank 0's best model. ``--out`` must be on a filesystem every rank sees for ``--resume``.

Tables that do not fit one worker
---------------------------------
DDP replicates the tables: per rank the entity table, its gradient (``gradient_as_bucket_view``: the
DDP bucket *is* the gradient, no second copy) and the optimizer state (Adagrad one table, Adam two),
i.e. about ``3 · N · W · 4`` bytes for ``N`` entities of ``W`` reals with Adagrad, plus the 1-N score
matrix, ``batch / ranks × N`` floats (a few times over for softmax and backward). For ComplEx of
dim 64 (``W = 128``) that is ~1.5 KiB per entity: 1M entities ≈ 1.5 GiB, 10M ≈ 15 GiB per rank. Dense
replication is the right call up to ~10^7 rows on 32-64 GiB CPU nodes or 40-80 GB GPUs, because:

* with the 1-N losses (the default, and the better teachers) every row of the table gets gradient
  at every step, since the softmax runs over all tails: a sparse gradient would be dense anyway;
* every step all-reduces ``N · W`` floats (512 MiB at 1M × 128), whatever the batch. Large batches
  amortise it; on CPU nodes over Ethernet it bounds the scaling long before memory does.

Not implemented, and the routes beyond:

* ``nssa`` with sparse gradients: only the batch's rows and negatives would be all-reduced and
  updated. It needs a model path that scores through ``nn.Embedding(sparse=True)`` (the models
  index the weight directly), Adagrad or SparseAdam, and gloo (NCCL has no sparse all-reduce).
  Today every table lookup's backward builds a dense ``N × W`` gradient: at 1M × 128 an ``nssa``
  step costs ~10 s on 2 cores for a batch of 8192 or of 32768 alike (``benchmarks/scale_1m.py``),
  so this, not the all-reduce, is the first thing to fix for negative sampling at scale.
* Row-sharded tables with the 1-N loss (Megatron's vocabulary-parallel cross entropy): each rank
  holds ``N / P`` rows, computes its slice of the logits, and the softmax needs one all-reduce of the
  row max and of the sum of exponentials; head rows are all-gathered. Memory ``N / P`` per rank.
* Beyond ~10^8 rows: PyTorch-BigGraph's partitioning: entities in ``P`` partitions, edges in
  ``P × P`` buckets trained one at a time with negative sampling, partitions swapped between disk
  (or a parameter server) and workers; memory ``2 N / P`` per worker, no 1-N loss.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from kgedge.data.kg import KnowledgeGraph
from kgedge.models import KGModel, ModelConfig, build
from kgedge.models.graph_encoder import GraphEncoderModel, attach_graph
from kgedge.train.checkpoint import Vocabulary, load_resume_state, restore_training, resume_path
from kgedge.train.config import TrainConfig
from kgedge.train.early_stopping import EarlyStopping, EvalCallback
from kgedge.train.memory import retain_freed_memory
from kgedge.train.negatives import NegativeSampler
from kgedge.train.temperature import RelationTemperature
from kgedge.train.trainer import (
    LossHook,
    StepCallback,
    TrainResult,
    _make_optimizer,
    _seed_everything,
    batch_loss,
    relation_temperature,
    training_state,
)

log = logging.getLogger(__name__)

#: what torchrun sets for every worker; LOCAL_RANK defaults to 0 when absent
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistributedSetupError(ValueError):
    """The process group cannot be set up, or the ranks disagree (e.g. on the resume file)."""


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the process group.

    Attributes:
        rank: global rank, ``0..world_size-1``; rank 0 validates and writes.
        world_size: number of processes over all nodes.
        local_rank: rank on this node (selects the GPU).
        backend: ``gloo`` (CPU) or ``nccl`` (GPU).
        device: torch device of this rank, e.g. ``cpu`` or ``cuda:1``.
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether this process is a worker started by ``torchrun`` (its environment variables are set)."""
    return all(name in os.environ for name in TORCHRUN_ENV)


@contextmanager
def process_group(device: str = "auto", timeout_s: float = 3600.0) -> Iterator[DistributedContext]:
    """Join the process group that ``torchrun`` describes in the environment; leave it on exit.

    Args:
        device: ``cpu`` (gloo), ``cuda`` (NCCL, one GPU per local rank) or ``auto``.
        timeout_s: how long a rank waits in a collective, e.g. while rank 0 validates a large KG.

    Raises:
        DistributedSetupError: not started by torchrun, or a bad rank / world size.
    """
    missing = [name for name in TORCHRUN_ENV if name not in os.environ]
    if missing:
        raise DistributedSetupError(
            f"distributed training needs the environment torchrun sets ({', '.join(missing)} missing); "
            "start it as `torchrun --nproc_per_node=N -m kgedge train ...`"
        )
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not 0 <= rank < world:
        raise DistributedSetupError(f"RANK={rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        backend, device = "nccl", f"cuda:{local_rank}"
    else:
        backend = "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))
    log.info("rank %d of %d joined the %s process group (%s)", rank, world, backend, device)
    try:
        yield DistributedContext(rank, world, local_rank, backend, device)
        # leave together: a rank that tore its gloo pairs down while rank 0 was still writing the
        # checkpoint aborted once in CI ("terminate called without an active exception", SIGABRT).
        # Skipped on an exception: torchrun stops the other ranks then.
        dist.barrier()
    finally:
        dist.destroy_process_group()


class _BatchLoss(nn.Module):
    """The trainer's loss as a module, so that DDP's forward hooks see every step."""

    def __init__(self, model: KGModel, config: TrainConfig, sampler: NegativeSampler | None,
                 loss_hook: LossHook | None, temperature: RelationTemperature | None) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.sampler = sampler
        self.loss_hook = loss_hook
        self.temperature = temperature  # a submodule: DDP averages its gradient too

    def forward(self, batch: Tensor) -> Tensor:
        return batch_loss(self.model, batch, self.config, self.sampler, self.loss_hook, self.temperature)


def shard_rows(global_rows: Tensor, rank: int, world_size: int) -> tuple[Tensor, float]:
    """This rank's rows of one global batch and the weight of its loss.

    Args:
        global_rows: shape ``(n,)`` query indices of the global batch.

    Returns:
        ``(rows, weight)``: rows ``rank, rank + P, ...`` and ``P · len(rows) / n`` for ``P`` processes,
        so that the mean over ranks of ``weight · mean loss of rows`` is the mean loss of the global
        batch. A rank left without rows (last batch shorter than ``P``) gets one row with weight 0:
        it must still take part in the all-reduce.
    """
    rows = global_rows[rank::world_size]
    if len(rows) == 0:
        return global_rows[:1], 0.0
    return rows, world_size * len(rows) / len(global_rows)


def _rank_seed(seed: int, rank: int, epoch: int) -> int:
    return (seed * 1_000_003 + rank * 7_919 + epoch) % (2**63)


def _broadcast_flag(value: bool, device: str) -> bool:
    flag = torch.tensor([1 if value else 0], dtype=torch.int64, device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def _load_resume(out: Path, context: DistributedContext) -> dict[str, object] | None:
    """Every rank reads ``OUT.resume.pt``; all raise together when they do not see the same epoch."""
    state = load_resume_state(out)
    epoch = int(state["epoch"]) if state is not None else -1  # type: ignore[call-overload]
    mine = torch.tensor([epoch], dtype=torch.int64, device=context.device)
    main = mine.clone()
    dist.broadcast(main, src=0)
    disagree = torch.tensor([int(main.item() != epoch)], dtype=torch.int64, device=context.device)
    dist.all_reduce(disagree)
    if disagree.item():
        raise DistributedSetupError(
            f"rank {context.rank} sees {resume_path(out)} at epoch {epoch}, rank 0 at epoch {int(main.item())}; "
            "put --out on a filesystem that every node sees to resume"
        )
    return state


def train_distributed(
    kg: KnowledgeGraph,
    model_config: ModelConfig,
    config: TrainConfig,
    context: DistributedContext,
    out: Path | None = None,
    resume: bool = False,
    on_step: StepCallback | None = None,
    on_eval: EvalCallback | None = None,
    extra_metadata: dict[str, object] | None = None,
    model: KGModel | None = None,
    loss_hook: LossHook | None = None,
) -> TrainResult:
    """:func:`~kgedge.train.trainer.train_model` on every rank of a process group (see the module doc).

    Call it on every rank with the same arguments. ``config.batch_size`` is the global batch;
    ``on_step`` reports the global loss and global triples per second. Every rank returns the same
    result (rank 0's best model, validation figures and history).
    """
    rank, world, device = context.rank, context.world_size, context.device
    retain_freed_memory()
    generator = _seed_everything(config.seed)  # the same initial model and permutations on every rank
    model = (model if model is not None else build(model_config)).to(device)
    if isinstance(model, GraphEncoderModel):
        attach_graph(model, kg)
    temperature = relation_temperature(model, config, device)
    optimizer = _make_optimizer(model, config, temperature)
    queries = torch.as_tensor(kg.with_reciprocals(kg.train))
    types = kg.entity_types if config.type_constrained else None
    rank_generator = torch.Generator()  # negatives: reseeded per (seed, rank, epoch)
    sampler = NegativeSampler(kg.num_entities, types, rank_generator) if config.loss == "nssa" else None
    vocab = Vocabulary.of(kg)
    metadata = {"data": kg.name, "train_config": config.to_dict(), "world_size": world, **(extra_metadata or {})}

    start_epoch, stopping = 1, EarlyStopping()
    state = _load_resume(out, context) if resume and out is not None else None
    if state is not None:
        restore_training(model, optimizer, state, out, temperature)  # type: ignore[arg-type]
        generator.set_state(state["generator"])  # type: ignore[arg-type]
        start_epoch = int(state["epoch"]) + 1  # type: ignore[call-overload]
        stopping = EarlyStopping.resumed(state, with_best=rank == 0)  # only rank 0 keeps the best weights
        del state
        log.info("rank %d resumed from %s at epoch %d", rank, resume_path(out), start_epoch)  # type: ignore[arg-type]
    if rank == 0 and stopping.best_state is None:
        stopping.remember(model)

    def resume_state() -> dict[str, object]:
        return {**training_state(optimizer, generator, temperature), "world_size": world}

    ddp = DistributedDataParallel(
        _BatchLoss(model, config, sampler, loss_hook, temperature),
        device_ids=[torch.device(device).index] if device.startswith("cuda") else None,
        forward_sync_buffers=False,  # buffers (a graph model's edges) are the same data on every rank
        gradient_as_bucket_view=True,  # the gradient lives in DDP's bucket: no second table-sized copy
    )
    batch_size = config.batch_size
    steps = (len(queries) + batch_size - 1) // batch_size
    started = time.perf_counter()
    stop_reason, epoch = "epochs", start_epoch - 1
    for epoch in range(start_epoch, config.epochs + 1):
        model.train()
        order = torch.randperm(len(queries), generator=generator)
        rank_generator.manual_seed(_rank_seed(config.seed, rank, epoch))
        torch.manual_seed(_rank_seed(config.seed, rank, epoch))  # dropout differs per rank
        epoch_start = time.perf_counter()
        for step in range(steps):
            rows, weight = shard_rows(order[step * batch_size : (step + 1) * batch_size], rank, world)
            batch = queries[rows].to(device)
            optimizer.zero_grad(set_to_none=False)  # keep the gradients as views into DDP's buckets
            loss = ddp(batch) * weight
            loss.backward()
            # one small all-reduce per step: the global loss, and rank 0's verdict on the time budget
            over_budget = rank == 0 and bool(config.max_time_s) and time.perf_counter() - started > config.max_time_s
            shared = torch.tensor([loss.item() / world, float(over_budget)], dtype=torch.float64, device=device)
            dist.all_reduce(shared)
            global_loss = float(shared[0].item())
            if not math.isfinite(global_loss):
                raise FloatingPointError(
                    f"loss became {global_loss} at epoch {epoch}, step {step}; lower the learning rate (--lr)"
                )
            optimizer.step()
            if on_step is not None:
                seen = min((step + 1) * batch_size, len(queries))
                on_step(epoch, step + 1, steps, global_loss, seen / max(time.perf_counter() - epoch_start, 1e-9))
            if shared[1].item() > 0:
                stop_reason = "time budget"
                break
        last_epoch = epoch == config.epochs or stop_reason == "time budget"
        stop = False
        if rank == 0 and stopping.due(epoch, config, len(queries), last_epoch):
            stop = stopping.validate(epoch, model, kg, config, out, vocab, metadata, resume_state, on_eval)
        if _broadcast_flag(stop, device):
            stop_reason = "early stopping"
        if stop_reason != "epochs":
            break

    # every rank returns rank 0's best model and figures
    if rank == 0:
        assert stopping.best_state is not None
        model.load_state_dict(stopping.best_state)
    for tensor in model.state_dict().values():
        dist.broadcast(tensor, src=0)
    summary: list[object] = [stopping.best_valid, stopping.best_epoch, stopping.history]
    dist.broadcast_object_list(summary, src=0)
    best_valid, best_epoch, history = summary  # type: ignore[assignment]
    model.eval()
    elapsed = time.perf_counter() - started
    if rank == 0:
        log.info("trained %s on %d ranks for %d epochs in %.1f s (%s); best valid MRR %.4f at epoch %d",
                 model_config.model, world, epoch, elapsed, stop_reason, best_valid.get("mrr", -1.0), best_epoch)
    return TrainResult(model, best_valid, best_epoch, epoch, elapsed, stop_reason, history)

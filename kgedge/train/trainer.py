"""The training loop: 1-N or negative-sampling losses, early stopping on validation MRR, resumable."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kgedge.data.kg import KnowledgeGraph
from kgedge.models import KGModel, ModelConfig, build
from kgedge.models.graph_encoder import GraphEncoderModel, attach_graph
from kgedge.train import losses
from kgedge.train.checkpoint import Vocabulary, load_resume_state, restore_training, resume_path
from kgedge.train.config import TrainConfig, one_n_l1_is_slow
from kgedge.train.early_stopping import EarlyStopping, EvalCallback
from kgedge.train.memory import retain_freed_memory
from kgedge.train.negatives import NegativeSampler
from kgedge.train.temperature import LR_FACTOR, RelationTemperature

log = logging.getLogger(__name__)

# (epoch, step, steps_per_epoch, loss, triples_per_second)
StepCallback = Callable[[int, int, int, float, float], None]
# (model, batch of (h, r, t) rows, the model's all-tail scores of the batch when the loss computed
# them, else None) -> an extra loss term, e.g. distillation's soft loss
LossHook = Callable[[KGModel, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass
class TrainResult:
    """What a training run produced: the best model (by validation MRR) and how it got there."""

    model: KGModel
    best_valid: dict[str, float]
    best_epoch: int
    epochs_run: int
    train_seconds: float
    stop_reason: str
    history: list[dict[str, float]] = field(default_factory=list)


def _seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    return torch.Generator().manual_seed(seed)


def _warn_if_slow_l1(model: KGModel, config: TrainConfig) -> None:
    if config.loss != "nssa" and one_n_l1_is_slow(model.interaction, model.config.num_entities, model.entity_width):
        log.warning(
            "%s scores all %d entities by the L1 distance in every 1-N step (%d x %d reals per query, no matrix "
            "product: 10-15x the time of an L2 step); --loss nssa (sampled negatives) or --option distance=l2 "
            "trains much faster", model.config.model, model.config.num_entities, model.config.num_entities,
            model.entity_width)


def relation_temperature(model: KGModel, config: TrainConfig, device: str) -> RelationTemperature | None:
    """The per-relation softmax temperature that ``config`` asks for (1-N losses only), else None."""
    if not config.relation_temperature or config.loss == "nssa":
        return None
    return RelationTemperature(model.config.num_relations).to(device)


def _make_optimizer(model: KGModel, config: TrainConfig,
                    temperature: RelationTemperature | None = None) -> torch.optim.Optimizer:
    groups: list[dict[str, object]] = [{"params": list(model.parameters())}]
    if temperature is not None:
        groups.append({"params": list(temperature.parameters()), "lr": config.lr * LR_FACTOR})
    optimizer = torch.optim.Adagrad if config.optimizer == "adagrad" else torch.optim.Adam
    return optimizer(groups, lr=config.lr)  # type: ignore[arg-type]


def training_state(optimizer: torch.optim.Optimizer, generator: torch.Generator,
                   temperature: RelationTemperature | None) -> dict[str, object]:
    """What a resumed run needs beyond the model and early stopping: the optimizer, the generators and,
    when the run learns one, the relation temperature."""
    state = {"optimizer": optimizer.state_dict(), "generator": generator.get_state(), "torch_rng": torch.get_rng_state()}
    return state if temperature is None else {**state, "temperature": temperature.state_dict()}


def batch_loss(
    model: KGModel, batch: torch.Tensor, config: TrainConfig, sampler: NegativeSampler | None,
    loss_hook: LossHook | None = None, temperature: RelationTemperature | None = None,
) -> torch.Tensor:
    """The configured loss of one batch of ``(h, r, t)`` rows, regulariser and ``loss_hook`` included.

    A 1-N loss hands its ``batch x entities`` scores to the hook, which then need not score again; they
    are the model's own, before ``temperature`` scales them for the 1-N loss.
    """
    h, r, t = batch[:, 0], batch[:, 1], batch[:, 2]
    scores = None
    if config.loss == "nssa":
        assert sampler is not None
        negatives = sampler.sample(t.cpu(), config.num_negatives).to(batch.device)
        # γ shifts distances (the paper's γ - d); a dot product needs no shift, and with one the
        # positive term starts saturated (logsigmoid(9 + ~0)), so only negatives get pushed: collapse
        margin = config.margin if model.interaction != "dot" else 0.0
        loss = losses.self_adversarial_loss(
            model.score_hrt(h, r, t),
            model.score_tails(h, r, negatives),
            margin,
            config.adversarial_temperature,
        )
    else:
        scores = model.score_all_tails(h, r)
        fn = losses.one_n_cross_entropy if config.loss == "1n_ce" else losses.one_n_bce
        loss = fn(scores if temperature is None else temperature(scores, r), t, config.label_smoothing)
    if config.regularizer != "none" and config.reg_weight > 0:
        reg = losses.n3 if config.regularizer == "n3" else losses.l2
        loss = loss + config.reg_weight * reg(model.factors(h, r, t))
    if loss_hook is not None:
        loss = loss + loss_hook(model, batch, scores)
    return loss


def train_model(
    kg: KnowledgeGraph,
    model_config: ModelConfig,
    config: TrainConfig,
    out: Path | None = None,
    device: str = "cpu",
    resume: bool = False,
    on_step: StepCallback | None = None,
    on_eval: EvalCallback | None = None,
    extra_metadata: dict[str, object] | None = None,
    model: KGModel | None = None,
    loss_hook: LossHook | None = None,
    validate_start: bool = False,
) -> TrainResult:
    """Train a model on ``kg.train`` (with reciprocal relations), keeping the best by validation MRR.

    With ``out``, the best model is written there (atomically) at every improvement, and the latest
    training state beside it (``out.resume.pt``) at every validation, so that a killed run resumes
    with ``resume=True`` from its last validation.

    Args:
        model: start from this (already initialised) model instead of a fresh one built from
            ``model_config``; compression steps fine-tune this way.
        loss_hook: a term added to every batch's loss (distillation's soft loss, hints).
        validate_start: validate ``model`` as given (epoch 0) before the first step, so that the start
            competes for "best": fine-tuning that only makes a model worse returns it unchanged.
    """
    retain_freed_memory()
    generator = _seed_everything(config.seed)
    model = (model if model is not None else build(model_config)).to(device)
    if isinstance(model, GraphEncoderModel):  # graph teachers keep the training graph as buffers
        attach_graph(model, kg)
    _warn_if_slow_l1(model, config)
    temperature = relation_temperature(model, config, device)
    optimizer = _make_optimizer(model, config, temperature)
    queries = torch.as_tensor(kg.with_reciprocals(kg.train))
    types = kg.entity_types if config.type_constrained else None
    sampler = NegativeSampler(kg.num_entities, types, generator) if config.loss == "nssa" else None
    vocab = Vocabulary.of(kg)
    metadata = {"data": kg.name, "train_config": config.to_dict(), **(extra_metadata or {})}

    start_epoch, stopping = 1, EarlyStopping()
    if resume and out is not None:
        state = load_resume_state(out)
        if state is not None:
            restore_training(model, optimizer, state, out, temperature)
            generator.set_state(state["generator"])
            if "torch_rng" in state:  # dropout draws from the global generator
                torch.set_rng_state(state["torch_rng"])
            start_epoch = int(state["epoch"]) + 1
            stopping = EarlyStopping.resumed(state)
            log.info("resumed from %s at epoch %d", resume_path(out), start_epoch)
    if stopping.best_state is None:
        stopping.remember(model)

    def resume_state() -> dict[str, object]:
        return training_state(optimizer, generator, temperature)

    if validate_start and start_epoch == 1:
        stopping.validate(0, model, kg, config, out, vocab, metadata, resume_state, on_eval)

    steps = (len(queries) + config.batch_size - 1) // config.batch_size
    started = time.perf_counter()
    stop_reason, epoch = "epochs", start_epoch - 1
    for epoch in range(start_epoch, config.epochs + 1):
        model.train()
        order = torch.randperm(len(queries), generator=generator)
        epoch_start = time.perf_counter()
        for step in range(steps):
            batch = queries[order[step * config.batch_size : (step + 1) * config.batch_size]].to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = batch_loss(model, batch, config, sampler, loss_hook, temperature)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss.item()} at epoch {epoch}, step {step}; lower the learning rate (--lr)"
                )
            loss.backward()
            optimizer.step()
            if on_step is not None:
                seen = (step + 1) * config.batch_size
                on_step(epoch, step + 1, steps, loss.item(), seen / max(time.perf_counter() - epoch_start, 1e-9))
            if config.max_time_s and time.perf_counter() - started > config.max_time_s:
                stop_reason = "time budget"
                break
        last_epoch = epoch == config.epochs or stop_reason == "time budget"
        if stopping.due(epoch, config, len(queries), last_epoch):
            if stopping.validate(epoch, model, kg, config, out, vocab, metadata, resume_state, on_eval):
                stop_reason = "early stopping"
        if stop_reason != "epochs":
            break
    model.load_state_dict(stopping.best_state)
    model.eval()
    elapsed = time.perf_counter() - started
    log.info("trained %s for %d epochs in %.1f s (%s); best valid MRR %.4f at epoch %d",
             model_config.model, epoch, elapsed, stop_reason, stopping.best_mrr, stopping.best_epoch)
    return TrainResult(model, stopping.best_valid, stopping.best_epoch, epoch, elapsed, stop_reason, stopping.history)

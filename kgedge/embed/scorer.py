"""A relation-aware scorer on top of a relation-blind entity embedding: DistMult with a given table.

Random-walk and factorisation tables know which entities are close, not how: a diagonal relation
``r`` (DistMult, ``score = <e_h, r, e_t>``) is fitted on the KG's triples with the regular trainer
(1-N cross entropy over all tails, reciprocal relations, early stopping on validation MRR) while the
entity table stays frozen, optionally followed by a short fine-tune of everything. The result is a
plain ``distmult`` model: ``kgedge evaluate``, export and distillation take it as any other.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from kgedge.data.kg import KnowledgeGraph
from kgedge.models import ModelConfig, build
from kgedge.models.base import KGModel
from kgedge.train.config import TrainConfig, default_train_config
from kgedge.train.trainer import TrainResult, train_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScorerConfig:
    """How to fit the relations.

    Attributes:
        row_norm: the table is rescaled to this mean row norm first (0 keeps it): factorisation and
            skip-gram tables differ in scale by orders of magnitude, and the trainer's learning rate
            and N3 weight are tuned for unit-scale rows.
        fine_tune_epochs: after the frozen fit, train entities and relations together this many
            epochs (0: the table stays as embedded); kept only if validation MRR improves.
        train: the trainer's settings (``None``: DistMult's defaults with ``epochs=60``).
    """

    row_norm: float = 1.0
    fine_tune_epochs: int = 0
    train: TrainConfig | None = None

    def __post_init__(self) -> None:
        if not self.row_norm >= 0:
            raise ValueError(f"ScorerConfig.row_norm={self.row_norm!r}; allowed: >= 0")
        if not isinstance(self.fine_tune_epochs, int) or self.fine_tune_epochs < 0:
            raise ValueError(f"ScorerConfig.fine_tune_epochs={self.fine_tune_epochs!r}; allowed: an integer >= 0")

    def train_config(self) -> TrainConfig:
        return self.train if self.train is not None else default_train_config("distmult", epochs=60)


@dataclass
class ScorerFit:
    """The fitted ``distmult`` model and how it got there.

    Attributes:
        model: the best model (eval mode; entity table trainable again).
        valid: its validation metrics.
        frozen_valid: validation metrics with the table frozen (before any fine-tune).
        fine_tuned: whether the fine-tuned model was kept.
        seconds: wall time of fitting (both stages).
        train_config: the settings of the frozen stage.
    """

    model: KGModel
    valid: dict[str, float]
    frozen_valid: dict[str, float]
    fine_tuned: bool
    seconds: float
    train_config: TrainConfig


def scorer_model(table: Tensor, num_relations: int, row_norm: float = 1.0) -> KGModel:
    """A ``distmult`` model whose entity table is ``table`` ``(num_entities, dim)``, rescaled to ``row_norm``.

    Args:
        num_relations: relations of the KG *without* reciprocals (the model holds twice as many).
    """
    table = table.detach().to(torch.float32)
    if row_norm > 0:
        mean_norm = float(table.norm(dim=1).mean())
        if mean_norm > 0:
            table = table * (row_norm / mean_norm)
    config = ModelConfig(model="distmult", num_entities=table.shape[0], num_relations=2 * num_relations,
                         dim=table.shape[1])
    model = build(config)
    with torch.no_grad():
        model.entity.weight.copy_(table)
    return model


def fit_relation_scorer(kg: KnowledgeGraph, table: Tensor, config: ScorerConfig | None = None) -> ScorerFit:
    """Fit DistMult relations on ``kg`` over the frozen ``table`` ``(num_entities, dim)``, then maybe fine-tune."""
    config = config or ScorerConfig()
    if table.shape[0] != kg.num_entities:
        raise ValueError(f"the table has {table.shape[0]} rows; {kg.name} has {kg.num_entities} entities")
    train_config = config.train_config()
    started = time.perf_counter()
    model = scorer_model(table, kg.num_relations, config.row_norm)
    model.entity.weight.requires_grad_(False)
    frozen = train_model(kg, model.config, train_config, model=model)
    frozen.model.entity.weight.requires_grad_(True)
    best: TrainResult = frozen
    fine_tuned = False
    if config.fine_tune_epochs:
        frozen_state = copy.deepcopy(frozen.model.state_dict())
        tune = train_model(kg, model.config, replace(train_config, epochs=config.fine_tune_epochs,
                                                     eval_every=1), model=frozen.model)
        if tune.best_valid.get("mrr", -1.0) > frozen.best_valid.get("mrr", -1.0):
            best, fine_tuned = tune, True
        else:  # the fine-tune trained the same model object: put the frozen fit back
            frozen.model.load_state_dict(frozen_state)
    seconds = time.perf_counter() - started
    log.info("fitted distmult relations on %s: valid MRR %.4f (frozen %.4f, fine-tuned: %s) in %.1f s",
             kg.name, best.best_valid.get("mrr", 0.0), frozen.best_valid.get("mrr", 0.0), fine_tuned, seconds)
    return ScorerFit(best.model, best.best_valid, frozen.best_valid, fine_tuned, seconds, train_config)

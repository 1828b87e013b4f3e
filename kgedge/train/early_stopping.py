"""Validation during training: when to validate, the best model so far, checkpoints, when to stop.

One object serves the single-process trainer and rank 0 of a distributed run, so that both validate on
the same schedule, keep the best model by filtered validation MRR the same way, and write the same
checkpoint and resume state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from kgedge.data.kg import KnowledgeGraph
from kgedge.evaluate import evaluate_link_prediction
from kgedge.models import KGModel
from kgedge.train.checkpoint import Vocabulary, save_checkpoint, save_resume_state
from kgedge.train.config import TrainConfig
from kgedge.train.scorer import model_scorer

# (epoch, validation metrics, improved)
EvalCallback = Callable[[int, dict[str, float], bool], None]


@dataclass
class EarlyStopping:
    """Early stopping on filtered validation MRR, with the best weights kept in memory.

    Attributes:
        best_mrr, best_epoch, best_valid, best_state: the best validation so far and its weights.
        waited: validations without improvement since the best.
        last_eval: the epoch of the last validation (for the every-N-queries schedule).
        history: every validation's metrics, with their epoch.
    """

    best_mrr: float = -1.0
    best_epoch: int = 0
    waited: int = 0
    best_valid: dict[str, float] = field(default_factory=dict)
    best_state: dict[str, Tensor] | None = None
    last_eval: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def resumed(cls, state: dict[str, Any], with_best: bool = True) -> EarlyStopping:
        """The state saved by :meth:`validate` in a resume file (``with_best``: also the best weights)."""
        return cls(best_mrr=float(state["best_mrr"]), best_epoch=int(state["best_epoch"]), waited=int(state["waited"]),
                   best_valid=dict(state["best_valid"]) if with_best else {},
                   best_state=state["best_model"] if with_best else None, last_eval=int(state["epoch"]))

    def remember(self, model: KGModel) -> None:
        """Keep ``model``'s current weights as the best (a copy)."""
        self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def due(self, epoch: int, config: TrainConfig, queries_per_epoch: int, last_epoch: bool) -> bool:
        """Validate after ``epoch``: every ``eval_every`` epochs, at the last one, or once
        ``eval_every_queries`` training queries have passed since the last validation."""
        overdue = (epoch - self.last_eval) * queries_per_epoch >= config.eval_every_queries
        return epoch % config.eval_every == 0 or last_epoch or overdue

    def validate(
        self,
        epoch: int,
        model: KGModel,
        kg: KnowledgeGraph,
        config: TrainConfig,
        out: Path | None,
        vocab: Vocabulary,
        metadata: dict[str, object],
        resume_state: Callable[[], dict[str, object]],
        on_eval: EvalCallback | None = None,
    ) -> bool:
        """Validate ``model`` now; on improvement keep its weights and write the checkpoint ``out``;
        write the resume state (``resume_state()`` plus this object's) beside it.

        Returns:
            True when ``config.patience`` validations have passed without improvement.
        """
        self.last_eval = epoch
        metrics = evaluate_link_prediction(model_scorer(model), kg, "valid", max_triples=config.max_valid_triples)
        metrics["epoch"] = epoch
        self.history.append(metrics)
        improved = metrics["mrr"] > self.best_mrr
        if improved:
            self.best_mrr, self.best_epoch, self.waited, self.best_valid = metrics["mrr"], epoch, 0, metrics
            self.remember(model)
            if out is not None:
                save_checkpoint(out, model, vocab, {**metadata, "epoch": epoch, "valid": metrics})
        else:
            self.waited += 1
        if on_eval is not None:
            on_eval(epoch, metrics, improved)
        if out is not None:
            save_resume_state(out, {
                **resume_state(), "model": model.state_dict(), "epoch": epoch, "best_mrr": self.best_mrr,
                "best_epoch": self.best_epoch, "waited": self.waited, "best_model": self.best_state,
                "best_valid": self.best_valid,
            })
        return self.waited >= config.patience

"""Training settings, with per-model defaults that give a good model from the data and model name alone."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

Loss = Literal["1n_ce", "1n_bce", "nssa"]
Optimizer = Literal["adagrad", "adam"]
Regularizer = Literal["n3", "l2", "none"]

LOSSES: tuple[str, ...] = ("1n_ce", "1n_bce", "nssa")
OPTIMIZERS: tuple[str, ...] = ("adagrad", "adam")
REGULARIZERS: tuple[str, ...] = ("n3", "l2", "none")


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    The defaults follow Lacroix et al. (2018): 1-N cross entropy over all tails with reciprocal
    relations, N3 regularisation and Adagrad. That recipe keeps DistMult and ComplEx from the collapse
    that margin losses with few negatives often show, at a fraction of the time.

    Attributes:
        epochs: upper bound on passes over the (reciprocal-augmented) training triples.
        batch_size: queries per step; the 1-N score matrix is ``batch_size x num_entities`` floats.
        lr: learning rate.
        loss: ``1n_ce`` (softmax over all tails), ``1n_bce`` (sigmoid, label smoothing) or
            ``nssa`` (negative sampling with self-adversarial weighting, Sun et al., 2019).
        label_smoothing: for the 1-N losses.
        relation_temperature: the 1-N losses learn a softmax temperature per relation
            (``train/temperature.py``; the ranking, and so the model, stays the same). No effect on ``nssa``.
        regularizer, reg_weight: N3 or L2 on the embeddings a batch touches.
        num_negatives, adversarial_temperature, margin: for ``nssa``; the margin γ applies to the
            distance models (TransE, RotatE score ``γ - d``), dot-product models use none.
        type_constrained: ``nssa`` draws negative tails of the true tail's type.
        eval_every: validate every this many epochs (early stopping on filtered validation MRR)...
        eval_every_queries: ...or once this many training queries have passed since the last
            validation, so that large KGs (minutes per epoch) are validated every epoch. Counted in
            queries, not seconds, so that the schedule (and the result) does not depend on the machine.
        patience: stop after this many validations without improvement.
        max_valid_triples: validate on at most this many valid triples (speed on big KGs).
        max_time_s: wall-clock budget for training in seconds (0 = none); the best model is kept.
        seed: seeds torch and numpy, so that runs repeat.
    """

    epochs: int = 200
    batch_size: int = 512
    lr: float = 0.1
    optimizer: Optimizer = "adagrad"
    loss: Loss = "1n_ce"
    label_smoothing: float = 0.0
    relation_temperature: bool = False
    regularizer: Regularizer = "n3"
    reg_weight: float = 5e-3
    num_negatives: int = 64
    adversarial_temperature: float = 1.0
    margin: float = 9.0
    type_constrained: bool = False
    eval_every: int = 5
    eval_every_queries: int = 150_000
    patience: int = 3
    max_valid_triples: int = 5000
    max_time_s: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "label_smoothing": 0.0 <= self.label_smoothing < 1.0,
            "reg_weight": self.reg_weight >= 0,
            "num_negatives": self.num_negatives >= 1,
            "adversarial_temperature": self.adversarial_temperature >= 0,
            "eval_every": self.eval_every >= 1,
            "eval_every_queries": self.eval_every_queries >= 1,
            "patience": self.patience >= 1,
            "max_valid_triples": self.max_valid_triples >= 1,
            "max_time_s": self.max_time_s >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r} is out of range")
        for name, allowed in (("loss", LOSSES), ("optimizer", OPTIMIZERS), ("regularizer", REGULARIZERS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}; allowed: {', '.join(allowed)}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def updated(self, **changes: object) -> TrainConfig:
        """A copy with ``changes`` applied, ignoring ``None`` values (unset CLI options)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


# Per-model defaults: measured on UMLS and Nations (benchmarks/train_quality.py), chosen to hold across
# KGs rather than tuned to one of them.
MODEL_DEFAULTS: dict[str, dict[str, object]] = {
    "distmult": {},
    "complex": {},
    # distance models: no N3 (it shrinks the distances the softmax needs). RotatE's rotations cannot set
    # how sharp each relation's softmax is (a dot product does, by the relation's norm), so it learns a
    # temperature per relation, with light label smoothing (benchmarks/relation_temperature.py: UMLS test
    # MRR 0.937 vs 0.922, Nations 0.752 vs 0.747 over 16 seeds, Kinships 0.871 both; with the earlier
    # smoothing 0.2 Nations fell to 0.744, without any UMLS fell to 0.918 in a probe).
    # TransE gains neither from smoothing (0.70 vs 0.73) nor from the temperature. TransE (L1) gains
    # from half the learning rate (seeds 0-2: UMLS 0.764-0.773 vs 0.749-0.756, Nations 0.524-0.540 vs
    # 0.508-0.534); TransE-L2 is the same at either (UMLS 0.723-0.730 vs 0.727)
    "transe": {"regularizer": "none", "lr": 0.05},
    "rotate": {"regularizer": "none", "label_smoothing": 0.05, "relation_temperature": True},
    # graph encoders (benchmarks/graph_teachers.py): Adagrad at lr 0.1 breaks the dense layer weights
    # (UMLS R-GCN MRR 0.13); Adam at 3e-3 with light N3 on the encoded rows gives R-GCN 0.92 on UMLS.
    "gcn": {"optimizer": "adam", "lr": 0.003, "reg_weight": 1e-3, "label_smoothing": 0.1},
    "gat": {"optimizer": "adam", "lr": 0.003, "reg_weight": 1e-3, "label_smoothing": 0.1},
    "rgcn": {"optimizer": "adam", "lr": 0.003, "reg_weight": 1e-3, "label_smoothing": 0.1},
}

# ModelConfig defaults per model: RotatE starts from larger vectors so that the softmax over negative
# distances is not flat at the start. TransE takes the paper's L1 distance (benchmarks/transe_distance.py):
# it wins on every real KG we measured (test MRR Kinships 0.47 vs 0.22, UMLS 0.76-0.77 vs 0.72-0.73,
# Nations 0.52-0.54 vs 0.50-0.51) and loses only on the synthetic demo shop KG (0.337 vs 0.371); it
# trains 10-15x slower per 1-N batch (its scores are no matrix product) and answers 4-13x slower on the
# device (14,541 and 100k entities, benchmarks/results/transe_distance_latency.md): `--option distance=l2`
# chooses the fast one
MODEL_INIT: dict[str, dict[str, object]] = {
    "rotate": {"init_scale": 0.1},
    "transe": {"options": {"distance": "l1"}},
}


# 1-N scores by the L1 distance are no matrix product: from this many entity cells (entities x row width) on,
# a 1-N step takes seconds (benchmarks/transe_distance.py, 1 thread: 2.9-3.1 s per batch of 512 at 14,541 x 256,
# 10-15x an L2 step), so an L1 model trains with sampled negatives (nssa) unless told otherwise. On wordnet-rr
# (41k entities) in the same 8 minutes: TransE-L1 with nssa test MRR 0.215 (1 thread) / 0.223 (2 threads),
# TransE-L2 with 1-N 0.072 / 0.134 (benchmarks/results/transe_distance_wordnet-rr.md, `kgedge train`).
L1_ONE_N_MAX_CELLS = 2_000_000


def one_n_l1_is_slow(interaction: str | None, num_entities: int, width: int) -> bool:
    """Whether 1-N steps that score every entity by the L1 distance are slow at this size
    (``L1_ONE_N_MAX_CELLS``): what both the loss default and the trainer's warning ask."""
    return interaction == "l1" and num_entities * width >= L1_ONE_N_MAX_CELLS


def l1_loss_for_size(config: TrainConfig, model: str, options: dict[str, object], num_entities: int, dim: int,
                     loss_chosen: bool) -> TrainConfig:
    """``config`` with ``nssa`` in place of a default 1-N loss when ``model`` scores by the L1 distance
    and the KG is too big for 1-N L1 steps (:func:`one_n_l1_is_slow`); unchanged when the user chose the
    loss (``loss_chosen``) or nothing is L1."""
    from kgedge.models.transe import transe_distance  # torch-side; config itself stays import-light

    interaction = transe_distance(options) if model == "transe" else None
    if loss_chosen or config.loss == "nssa" or not one_n_l1_is_slow(interaction, num_entities, dim):
        return config
    return config.updated(loss="nssa")


def default_model_options(model: str, options: dict[str, object] | None = None) -> dict[str, object]:
    """Keyword arguments for ``ModelConfig`` that ``model`` prefers (e.g. its init scale), with
    ``options`` (e.g. from the command line) laid over the model's default options."""
    kwargs = {k: (dict(v) if isinstance(v, dict) else v) for k, v in MODEL_INIT.get(model, {}).items()}
    if options:
        kwargs["options"] = {**kwargs.get("options", {}), **options}  # type: ignore[dict-item]
    return kwargs


def default_train_config(model: str, **overrides: object) -> TrainConfig:
    """The defaults for ``model``, then ``overrides`` (``None`` values ignored)."""
    base = TrainConfig(**MODEL_DEFAULTS.get(model, {}))  # type: ignore[arg-type]
    return base.updated(**overrides)

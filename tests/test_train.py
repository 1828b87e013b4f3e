"""Tests for kgedge.train: the loop learns, stops early or on time, repeats, resumes; config; losses;
negative sampling."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import permutation_triples

from kgedge.data.kg import KnowledgeGraph, load_kg
from kgedge.evaluate import evaluate_link_prediction
from kgedge.models import ModelConfig, build
from kgedge.train import losses
from kgedge.train.checkpoint import CheckpointError, load_checkpoint, load_resume_state, resume_path
from kgedge.train.config import (
    L1_ONE_N_MAX_CELLS,
    LOSSES,
    MODEL_DEFAULTS,
    TrainConfig,
    default_model_options,
    default_train_config,
    l1_loss_for_size,
)
from kgedge.train.negatives import NegativeSampler
from kgedge.train.scorer import model_scorer
from kgedge.train.temperature import RelationTemperature
from kgedge.train.trainer import TrainResult, train_model

KGE_MODELS = ("transe", "distmult", "complex", "rotate")


def _write(directory: Path, splits: dict[str, list[tuple[str, str, str]]], types: dict[str, str] | None = None) -> Path:
    directory.mkdir(parents=True)
    for split, rows in splits.items():
        (directory / f"{split}.txt").write_text("".join("\t".join(t) + "\n" for t in rows), encoding="utf-8")
    if types is not None:
        (directory / "entity_types.tsv").write_text("".join(f"{e}\t{t}\n" for e, t in types.items()), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def kg(tmp_path_factory: pytest.TempPathFactory) -> KnowledgeGraph:
    """40 x -> y pairs under 3 relations that agree; held-out pairs are predictable from the others."""
    return load_kg(_write(tmp_path_factory.mktemp("perm") / "perm", permutation_triples()))


@pytest.fixture(scope="module")
def typed_kg(tmp_path_factory: pytest.TempPathFactory) -> KnowledgeGraph:
    splits = permutation_triples(n=30, seed=1)
    names = {e for rows in splits.values() for h, _, t in rows for e in (h, t)}
    types = {e: "left" if e.startswith("x") else "right" for e in names}
    return load_kg(_write(tmp_path_factory.mktemp("typed") / "typed", splits, types))


def _model_config(kg: KnowledgeGraph, name: str, dim: int = 16, **extra: object) -> ModelConfig:
    return ModelConfig(name, kg.num_entities, 2 * kg.num_relations, dim, **extra)  # type: ignore[arg-type]


def _random_mrr(kg: KnowledgeGraph, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    return evaluate_link_prediction(lambda h, r: rng.random((len(h), kg.num_entities)), kg, "test")["mrr"]


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", KGE_MODELS)
def test_each_model_learns_a_permutation_far_better_than_random(kg: KnowledgeGraph, name: str) -> None:
    config = default_train_config(name, epochs=20, eval_every=5, patience=10, seed=0)
    result = train_model(kg, _model_config(kg, name), config)
    test = evaluate_link_prediction(model_scorer(result.model), kg, "test")
    random_mrr = _random_mrr(kg)
    assert random_mrr < 0.2  # 80 candidates: a random ranker sits near the middle
    assert test["mrr"] > 0.6, test
    assert test["mrr"] > 4 * random_mrr
    assert result.best_valid["mrr"] == max(h["mrr"] for h in result.history)
    assert not result.model.training


def test_nssa_with_type_constrained_sampler_learns_and_samples_only_same_type_negatives(
    typed_kg: KnowledgeGraph, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = NegativeSampler.sample

    def spy(self: NegativeSampler, tails: torch.Tensor, num_negatives: int) -> torch.Tensor:
        out = original(self, tails, num_negatives)
        drawn.append((tails.clone(), out.clone()))
        return out

    monkeypatch.setattr(NegativeSampler, "sample", spy)
    config = default_train_config(
        "rotate", loss="nssa", type_constrained=True, num_negatives=16, margin=6.0, epochs=30, eval_every=10,
        batch_size=64, seed=0, patience=10,
    )
    result = train_model(typed_kg, _model_config(typed_kg, "rotate"), config)
    types = torch.as_tensor(typed_kg.entity_types)
    assert drawn
    for tails, negatives in drawn:
        assert negatives.shape == (len(tails), 16)
        assert torch.equal(types[negatives], types[tails][:, None].expand_as(negatives))
    # the batches hold both directions: negatives of both types were drawn
    assert set(types[torch.cat([n.flatten() for _, n in drawn])].tolist()) == {0, 1}
    assert result.best_valid["mrr"] > 3 * _random_mrr(typed_kg)


@pytest.mark.parametrize("name", ["distmult", "complex"])
def test_nssa_trains_dot_product_models_from_a_small_init(kg: KnowledgeGraph, name: str) -> None:
    """The margin γ shifts distances only: on a dot product it would start the positive term saturated
    (logsigmoid(9 + ~0)) and the model would only learn to push negatives down (MRR ~0.03 here)."""
    config = default_train_config(name, loss="nssa", num_negatives=16, epochs=40, batch_size=64, lr=0.03,
                                  eval_every=10, patience=10, seed=0)
    result = train_model(kg, _model_config(kg, name), config)
    assert evaluate_link_prediction(model_scorer(result.model), kg, "test")["mrr"] > 0.8


def test_negative_sampler_type_constrained_covers_each_type() -> None:
    types = np.array([0, 1, 1, 2, 0, 1, 2, 2, 2])
    sampler = NegativeSampler(len(types), types, torch.Generator().manual_seed(0))
    tails = torch.tensor([0, 1, 3])
    negatives = sampler.sample(tails, 2000)
    for row, tail in enumerate(tails.tolist()):
        same_type = set(np.flatnonzero(types == types[tail]).tolist())
        assert set(negatives[row].tolist()) == same_type


@pytest.mark.parametrize("types", [None, np.zeros(7, dtype=np.int64)])
def test_negative_sampler_is_uniform_without_types(types: np.ndarray | None) -> None:
    sampler = NegativeSampler(7, types, torch.Generator().manual_seed(0))
    assert set(sampler.sample(torch.tensor([0, 1]), 500).flatten().tolist()) == set(range(7))


def test_early_stopping_stops_when_validation_stops_improving(kg: KnowledgeGraph) -> None:
    config = default_train_config("distmult", epochs=300, eval_every=2, patience=3, seed=0)
    result = train_model(kg, _model_config(kg, "distmult"), config)
    assert result.stop_reason == "early stopping"
    assert result.epochs_run < config.epochs
    assert result.epochs_run == result.best_epoch + config.patience * config.eval_every
    after_best = [h["mrr"] for h in result.history if h["epoch"] > result.best_epoch]
    assert len(after_best) == config.patience
    assert max(after_best) <= result.best_valid["mrr"]
    assert [h["epoch"] for h in result.history] == list(range(2, result.epochs_run + 1, 2))


@pytest.mark.parametrize(("distance", "loss", "warned"), [("l1", "1n_ce", True), ("l2", "1n_ce", False),
                                                     ("l1", "nssa", False)])
def test_training_warns_when_every_step_scores_all_entities_by_l1(
        kg: KnowledgeGraph, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        distance: str, loss: str, warned: bool) -> None:
    """1-N L1 scoring has no matrix product: past a size, training says so and names the faster ways."""
    from kgedge.train import config as train_config

    config = ModelConfig(model="transe", num_entities=kg.num_entities, num_relations=2 * kg.num_relations, dim=8,
                         options={"distance": distance})
    monkeypatch.setattr(train_config, "L1_ONE_N_MAX_CELLS", kg.num_entities * 8)  # this KG is exactly at the threshold
    with caplog.at_level("WARNING", logger="kgedge.train.trainer"):
        train_model(kg, config, default_train_config("transe", epochs=1, loss=loss))
    lines = [r.getMessage() for r in caplog.records if "L1 distance" in r.getMessage()]
    assert len(lines) == int(warned)
    if warned:
        assert f"({kg.num_entities} x 8 reals per query" in lines[0] and "--loss nssa" in lines[0]


def test_time_budget_stops_training_and_keeps_the_best_model(kg: KnowledgeGraph) -> None:
    config = default_train_config("distmult", epochs=100_000, batch_size=8, eval_every=1_000, max_time_s=0.3, seed=0)
    result = train_model(kg, _model_config(kg, "distmult"), config)
    assert result.stop_reason == "time budget"
    assert result.epochs_run < config.epochs
    assert result.train_seconds < 0.3 + 3.0  # the step that crossed the budget, then one validation
    assert result.best_epoch == result.epochs_run and result.best_valid["epoch"] == result.epochs_run


def test_validate_start_returns_the_given_model_when_training_only_makes_it_worse(kg: KnowledgeGraph) -> None:
    """Fine-tuning a good model against an extra loss that rewards wrong answers: with ``validate_start``
    the start (epoch 0) stays the best and comes back unchanged; without it a harmed model comes back."""
    good = train_model(kg, _model_config(kg, "distmult"), default_train_config("distmult", epochs=60, seed=0)).model
    start = {k: v.clone() for k, v in good.state_dict().items()}
    config = default_train_config("distmult", epochs=4, eval_every=1, patience=10, seed=0)

    def anti_labels(model, batch, scores):  # noqa: ANN001, ANN202 (the trainer's loss hook)
        scores = scores if scores is not None else model.score_all_tails(batch[:, 0], batch[:, 1])
        return -3.0 * F.cross_entropy(scores, batch[:, 2])

    def fine_tune(validate_start: bool) -> TrainResult:
        model = build(good.config)
        model.load_state_dict(start)
        return train_model(kg, model.config, config, model=model, loss_hook=anti_labels, validate_start=validate_start)

    kept, harmed = fine_tune(True), fine_tune(False)
    assert [h["epoch"] for h in kept.history] == [0, 1, 2, 3, 4] and kept.best_epoch == 0
    assert _same_weights(kept.model.state_dict(), start)
    assert all(h["mrr"] <= kept.best_valid["mrr"] for h in kept.history[1:])
    assert kept.history[-1]["mrr"] < kept.best_valid["mrr"] - 0.2  # the fine-tuning did harm
    assert harmed.best_epoch >= 1 and not _same_weights(harmed.model.state_dict(), start)


def test_the_same_seed_gives_identical_weights(kg: KnowledgeGraph) -> None:
    def run(seed: int) -> TrainResult:
        config = default_train_config("complex", epochs=4, eval_every=2, batch_size=32, seed=seed)
        return train_model(kg, _model_config(kg, "complex", dim=8, dropout=0.2), config)

    a, b, c = run(5), run(5), run(6)
    assert _same_weights(a.model.state_dict(), b.model.state_dict())
    assert a.history == b.history
    assert not torch.equal(a.model.entity.weight, c.model.entity.weight)


@pytest.mark.parametrize(
    ("name", "loss", "dropout"),
    [("distmult", "1n_ce", 0.0), ("rotate", "nssa", 0.0), ("rotate", "1n_ce", 0.0), ("complex", "1n_bce", 0.3),
     ("transe", "nssa", 0.3)],
)
def test_resume_continues_from_the_saved_epoch_like_an_uninterrupted_run(
    kg: KnowledgeGraph, tmp_path: Path, name: str, loss: str, dropout: float
) -> None:
    model_config = _model_config(kg, name, dim=8, dropout=dropout)
    settings = {"loss": loss, "eval_every": 1, "patience": 100, "batch_size": 32, "num_negatives": 8, "seed": 3}
    full_out, split_out = tmp_path / "full.ckpt", tmp_path / "split.ckpt"
    full = train_model(kg, model_config, default_train_config(name, epochs=6, **settings), out=full_out)

    first = train_model(kg, model_config, default_train_config(name, epochs=3, **settings), out=split_out)
    assert first.epochs_run == 3 and load_resume_state(split_out)["epoch"] == 3  # type: ignore[index]
    epochs_seen: list[int] = []
    second = train_model(
        kg, model_config, default_train_config(name, epochs=6, **settings), out=split_out, resume=True,
        on_step=lambda epoch, *rest: epochs_seen.append(epoch),
    )
    assert epochs_seen[0] == 4 and set(epochs_seen) == {4, 5, 6}
    assert [h["epoch"] for h in second.history] == [4, 5, 6]
    assert second.history == full.history[3:]
    # the last training state and the best model both match the run that was never interrupted
    full_state, split_state = load_resume_state(full_out), load_resume_state(split_out)
    assert full_state is not None and split_state is not None
    assert _same_weights(full_state["model"], split_state["model"])  # type: ignore[arg-type]
    assert _same_weights(full.model.state_dict(), second.model.state_dict())
    assert second.best_epoch == full.best_epoch
    saved = load_checkpoint(split_out)
    assert saved.metadata["epoch"] == full.best_epoch
    assert _same_weights(saved.model.state_dict(), full.model.state_dict())


def test_resume_refuses_an_optimizer_state_of_other_table_shapes(kg: KnowledgeGraph, tmp_path: Path) -> None:
    """A resume state written when RotatE trained phases: its model loads (phases become rows), but the
    optimizer's per-row sums no longer fit, and the run says so instead of failing inside the optimizer."""
    config, out = default_train_config("rotate", epochs=2, eval_every=1, seed=0), tmp_path / "r.ckpt"
    model_config = _model_config(kg, "rotate", dim=8)
    train_model(kg, model_config, config, out=out)
    state = load_resume_state(out)
    assert state is not None
    rows = state["model"]["relation.weight"]  # type: ignore[index]
    state["model"]["relation.weight"] = torch.atan2(rows[:, 8:], rows[:, :8])  # type: ignore[index]
    sums = state["optimizer"]["state"][1]  # type: ignore[index]  (parameter 1: the relation table)
    sums["sum"] = sums["sum"][:, :8].clone()
    torch.save(state, resume_path(out))
    with pytest.raises(CheckpointError, match=r"r\.ckpt\.resume\.pt: its optimizer state does not fit.*--resume"):
        train_model(kg, model_config, default_train_config("rotate", epochs=4, eval_every=1, seed=0), out=out,
                    resume=True)


def test_resume_refuses_a_state_written_without_the_relation_temperature_this_run_learns(
    kg: KnowledgeGraph, tmp_path: Path
) -> None:
    out, model_config = tmp_path / "t.ckpt", _model_config(kg, "rotate", dim=8)
    settings = {"eval_every": 1, "seed": 0}
    train_model(kg, model_config, default_train_config("rotate", epochs=2, relation_temperature=False, **settings),
                out=out)
    assert "temperature" not in load_resume_state(out)  # type: ignore[operator]
    with pytest.raises(CheckpointError, match=r"t\.ckpt\.resume\.pt: its optimizer state does not fit.*--resume"):
        train_model(kg, model_config, default_train_config("rotate", epochs=4, **settings), out=out, resume=True)
    resumed = train_model(kg, model_config, default_train_config("rotate", epochs=4, relation_temperature=False,
                                                                 **settings), out=out, resume=True)
    assert [h["epoch"] for h in resumed.history] == [3, 4]


def test_relation_temperature_scales_each_row_by_its_relation_and_keeps_the_ranking() -> None:
    temperature = RelationTemperature(3)
    scores, relations = torch.randn(5, 7), torch.tensor([0, 1, 2, 1, 0])
    assert torch.equal(temperature(scores, relations), scores)  # starts at 1
    with torch.no_grad():
        temperature.log_scale.copy_(torch.tensor([0.5, -1.0, 2.0]))
    scaled = temperature(scores, relations)
    factor = torch.exp(torch.tensor([0.5, -1.0, 2.0]) - 0.5)[relations]  # log-scales at mean zero
    assert torch.allclose(scaled, scores * factor[:, None])
    assert torch.equal(scaled.argsort(dim=1), scores.argsort(dim=1))
    with torch.no_grad():
        temperature.log_scale.add_(3.0)  # a common shift changes nothing: only relative sharpness is learnt
    assert torch.allclose(temperature(scores, relations), scaled)


def test_relation_temperature_is_learnt_in_training_and_stays_out_of_the_model(
    kg: KnowledgeGraph, tmp_path: Path
) -> None:
    out, model_config = tmp_path / "t.ckpt", _model_config(kg, "rotate", dim=8)
    settings = {"epochs": 3, "eval_every": 1, "seed": 0, "batch_size": 32}
    learnt = train_model(kg, model_config, default_train_config("rotate", **settings), out=out)
    plain = train_model(kg, model_config, default_train_config("rotate", relation_temperature=False, **settings))
    scales = RelationTemperature(model_config.num_relations)
    scales.load_state_dict(load_resume_state(out)["temperature"])  # type: ignore[index]
    assert not torch.allclose(scales.scales(), torch.ones(model_config.num_relations))  # it moved
    assert learnt.model.state_dict().keys() == plain.model.state_dict().keys()  # the model holds no scales
    assert load_checkpoint(out).model.state_dict().keys() == plain.model.state_dict().keys()
    assert not torch.equal(learnt.model.entity.weight, plain.model.entity.weight)  # but trained differently
    # sampled negatives have no softmax over all tails: no temperature, and the run trains as usual
    nssa = train_model(kg, model_config, default_train_config("rotate", loss="nssa", **settings),
                       out=tmp_path / "n.ckpt")
    assert "temperature" not in load_resume_state(tmp_path / "n.ckpt")  # type: ignore[operator]
    assert nssa.epochs_run == 3


def test_resume_without_a_state_file_starts_from_epoch_one(kg: KnowledgeGraph, tmp_path: Path) -> None:
    config = default_train_config("distmult", epochs=2, eval_every=1, seed=0)
    fresh = train_model(kg, _model_config(kg, "distmult"), config)
    resumed = train_model(kg, _model_config(kg, "distmult"), config, out=tmp_path / "m.ckpt", resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert _same_weights(fresh.model.state_dict(), resumed.model.state_dict())


def test_a_loss_that_becomes_nan_raises_floating_point_error(kg: KnowledgeGraph) -> None:
    # an absurd learning rate overflows the embeddings to inf within a few steps
    config = default_train_config("distmult", lr=1e30, regularizer="none", epochs=5, batch_size=16, seed=0)
    with pytest.raises(FloatingPointError, match=r"loss became (nan|inf) at epoch \d+, step \d+.*--lr"):
        train_model(kg, _model_config(kg, "distmult", init_scale=1.0), config)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("batch_size", 0),
        ("lr", 0.0),
        ("label_smoothing", 1.0),
        ("reg_weight", -1.0),
        ("num_negatives", 0),
        ("adversarial_temperature", -0.5),
        ("eval_every", 0),
        ("patience", 0),
        ("max_valid_triples", 0),
        ("max_time_s", -1.0),
        ("loss", "margin"),
        ("optimizer", "sgd"),
        ("regularizer", "l1"),
    ],
)
def test_train_config_errors_name_the_field_and_value(field: str, value: object) -> None:
    with pytest.raises(ValueError) as info:
        TrainConfig(**{field: value})  # type: ignore[arg-type]
    assert f"TrainConfig.{field}={value!r}" in str(info.value)


def test_train_config_choice_errors_list_the_allowed_values() -> None:
    with pytest.raises(ValueError, match="allowed: " + ", ".join(LOSSES)):
        TrainConfig(loss="hinge")  # type: ignore[arg-type]


def test_default_train_config_applies_model_defaults_then_overrides() -> None:
    for name, defaults in MODEL_DEFAULTS.items():
        config = default_train_config(name)
        for key, value in defaults.items():
            assert getattr(config, key) == value
    base = TrainConfig(**MODEL_DEFAULTS["transe"])  # type: ignore[arg-type]
    config = default_train_config("transe", lr=None, epochs=7, loss="nssa")  # None: keep the default
    assert config == TrainConfig(**{**base.to_dict(), "epochs": 7, "loss": "nssa"})
    assert default_train_config("no-such-model") == TrainConfig()
    assert TrainConfig(**config.to_dict()) == config


def test_l1_models_train_with_sampled_negatives_from_a_size_on_unless_the_loss_was_chosen() -> None:
    base = default_train_config("transe")
    l1, l2 = {"distance": "l1"}, {"distance": "l2"}
    at = -(-L1_ONE_N_MAX_CELLS // 256)  # the fewest entities of width 256 at or past the threshold
    assert l1_loss_for_size(base, "transe", l1, at - 1, 256, loss_chosen=False) is base  # below: 1-N stays
    sized = l1_loss_for_size(base, "transe", l1, at, 256, loss_chosen=False)
    assert sized.loss == "nssa" and sized == base.updated(loss="nssa")  # only the loss changes
    assert l1_loss_for_size(base, "transe", l1, at, 256, loss_chosen=True) is base  # the user's 1n_ce stands
    assert l1_loss_for_size(base, "transe", l2, 10 * at, 256, loss_chosen=False) is base  # L2 is a matrix product
    assert l1_loss_for_size(base, "transe", {}, 10 * at, 256, loss_chosen=False) is base  # no option: L2
    complex_base = default_train_config("complex")
    assert l1_loss_for_size(complex_base, "complex", {}, 10 * at, 256, loss_chosen=False) is complex_base


def test_model_options_lay_the_users_over_the_models_defaults_without_changing_them() -> None:
    assert default_model_options("transe") == {"options": {"distance": "l1"}}
    assert default_model_options("transe", {"distance": "l2", "entity_rank": 8}) == {
        "options": {"distance": "l2", "entity_rank": 8}}
    assert default_model_options("transe", {"entity_rank": 8}) == {"options": {"distance": "l1", "entity_rank": 8}}
    assert default_model_options("transe") == {"options": {"distance": "l1"}}  # the defaults were not mutated
    assert default_model_options("rotate", {"entity_rank": 4}) == {"init_scale": 0.1, "options": {"entity_rank": 4}}
    assert default_model_options("complex") == {} and default_model_options("complex", {}) == {}


def test_one_n_losses_match_their_definitions() -> None:
    g = torch.Generator().manual_seed(0)
    scores, tails = torch.randn(4, 6, generator=g), torch.tensor([0, 5, 2, 2])
    log_softmax = scores - torch.logsumexp(scores, dim=1, keepdim=True)
    expected_ce = -log_softmax[torch.arange(4), tails].mean()
    torch.testing.assert_close(losses.one_n_cross_entropy(scores, tails), expected_ce)
    eps = 0.1
    target = torch.full((4, 6), eps / 6)
    target[torch.arange(4), tails] += 1 - eps
    expected_bce = -(target * F.logsigmoid(scores) + (1 - target) * F.logsigmoid(-scores)).mean()
    torch.testing.assert_close(losses.one_n_bce(scores, tails, eps), expected_bce)


def test_self_adversarial_loss_matches_the_rotate_paper() -> None:
    positive, negative, margin, alpha = torch.tensor([-1.0, 0.5]), torch.tensor([[-3.0, -0.5], [0.0, -2.0]]), 2.0, 0.7
    total = 0.0
    for i in range(2):
        weights = [math.exp(alpha * s) for s in negative[i].tolist()]
        weights = [w / sum(weights) for w in weights]
        neg = sum(w * math.log(1 / (1 + math.exp(margin + s))) for w, s in zip(weights, negative[i].tolist()))
        total += -(math.log(1 / (1 + math.exp(-(margin + positive[i].item())))) + neg) / 2
    got = losses.self_adversarial_loss(positive, negative, margin, alpha)
    assert got.item() == pytest.approx(total / 2, rel=1e-5)


def test_regularisers() -> None:
    a, b = torch.tensor([[1.0, -2.0], [0.5, 0.0]]), torch.tensor([[3.0, 0.0], [0.0, -1.0]])
    assert losses.n3([a, b]).item() == pytest.approx((1 + 8 + 0.125 + 27 + 1) / 2)
    assert losses.l2([a, b]).item() == pytest.approx((1 + 4 + 0.25 + 9 + 1) / 2)


def test_model_scorer_restores_training_mode(kg: KnowledgeGraph) -> None:
    model = train_model(kg, _model_config(kg, "distmult"), default_train_config("distmult", epochs=1)).model
    model.train()
    scores = model_scorer(model)(np.array([0, 1]), np.array([0, 3]))
    assert scores.shape == (2, kg.num_entities) and scores.dtype == np.float32
    assert model.training
    with torch.no_grad():
        model.eval()
        expected = model.score_all_tails(torch.tensor([0, 1]), torch.tensor([0, 3])).numpy()
    np.testing.assert_array_equal(scores, expected)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["nations", "umls"])
def test_complex_learns_a_real_dataset(real_dataset, dataset: str) -> None:  # noqa: ANN001 (conftest fixture)
    kg = load_kg(real_dataset(dataset))
    config = default_train_config("complex", epochs=60, eval_every=10, patience=2, seed=0)
    result = train_model(kg, _model_config(kg, "complex", dim=64), config)
    test = evaluate_link_prediction(model_scorer(result.model), kg, "test")
    random_mrr = _random_mrr(kg)
    # nations has 14 entities (random MRR ~0.4): ask for more than half of the way from random to perfect
    assert (test["mrr"] - random_mrr) / (1 - random_mrr) > 0.5, (test, random_mrr)
    assert test["hits_at_10"] > test["hits_at_1"] > 0.3

"""Tests for the KG-embedding models (kgedge.models): one scoring path agrees with the others and with
a reference written independently from the papers' formulas (complex numbers for ComplEx and RotatE)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor

from kgedge.models import MODELS, KGModel, ModelConfig, build, resolve

# The KG-embedding models; graph models registered in MODELS have their own test file.
KGE_MODELS = ("transe", "distmult", "complex", "rotate")
# what the scoring tests run: each model, and TransE with both distances ("transe" alone is L2, the
# distance of a config without the option)
VARIANTS = (*KGE_MODELS, "transe-l1")
NUM_ENTITIES, NUM_RELATIONS, DIM = 23, 6, 8


def _complex(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.complex(x[..., :half].double(), x[..., half:].double())


def _reference(name: str, model: KGModel, h: Tensor, r: Tensor, t: Tensor) -> Tensor:
    """Scores of triples from the raw tables, by each paper's formula, in float64."""
    e, rel = model.entity.weight.detach(), model.relation.weight.detach()
    if name == "transe":
        return -torch.linalg.vector_norm(e[h].double() + rel[r].double() - e[t].double(), dim=-1)
    if name == "transe-l1":
        return -(e[h].double() + rel[r].double() - e[t].double()).abs().sum(-1)
    if name == "distmult":
        return (e[h].double() * rel[r].double() * e[t].double()).sum(-1)
    if name == "complex":
        return torch.real((_complex(e[h]) * _complex(rel[r]) * torch.conj(_complex(e[t]))).sum(-1))
    if name == "rotate":
        phase = torch.angle(_complex(rel[r]))  # the row's direction; its modulus is not used
        rotation = torch.polar(torch.ones_like(phase), phase)  # e^{iθ}
        return -torch.linalg.vector_norm(_complex(e[h]) * rotation - _complex(e[t]), dim=-1)
    raise AssertionError(f"no reference for {name}")


def _model(name: str, seed: int = 0, **config: object) -> KGModel:
    torch.manual_seed(seed)
    # init_scale 0.3 gives O(1) scores, so that an absolute tolerance of 1e-5 is meaningful
    settings = {"init_scale": 0.3, **config}
    if name == "transe-l1":
        name, settings["options"] = "transe", {"distance": "l1"}
    return build(ModelConfig(name, NUM_ENTITIES, NUM_RELATIONS, DIM, **settings)).eval()  # type: ignore[arg-type]


def _batch(seed: int, size: int = 17) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(NUM_ENTITIES, (size,), generator=g), torch.randint(NUM_RELATIONS, (size,), generator=g),
            torch.randint(NUM_ENTITIES, (size,), generator=g))


@pytest.fixture(params=VARIANTS)
def name(request: pytest.FixtureRequest) -> str:
    return request.param


def test_the_four_models_are_registered() -> None:
    for model_name in KGE_MODELS:
        assert resolve(model_name) is MODELS[model_name]
        assert resolve(model_name.upper()) is MODELS[model_name]


def test_every_registered_model_has_a_test() -> None:
    """A model added to the registry must be named (as a string literal) in some test file."""
    texts = [p.read_text(encoding="utf-8") for p in Path(__file__).parent.glob("test_*.py")]
    untested = [m for m in MODELS if not any(re.search(rf"[\"']{re.escape(m)}[\"']", text) for text in texts)]
    assert not untested, f"registered models with no test under tests/: {untested}"


def test_resolve_lists_the_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        resolve("transr")
    assert "unknown model 'transr'" in str(info.value)
    for model_name in MODELS:
        assert model_name in str(info.value)


def test_score_all_tails_agrees_with_score_hrt(name: str) -> None:
    model = _model(name)
    h, r, t = _batch(1)
    with torch.no_grad():
        everything = model.score_all_tails(h, r)
        assert everything.shape == (len(h), NUM_ENTITIES)
        torch.testing.assert_close(everything[torch.arange(len(h)), t], model.score_hrt(h, r, t), atol=1e-5, rtol=0)
        # and every column, not only the sampled tails
        for tail in range(NUM_ENTITIES):
            column = model.score_hrt(h, r, torch.full_like(h, tail))
            torch.testing.assert_close(everything[:, tail], column, atol=1e-5, rtol=0)


def test_score_tails_agrees_with_score_all_tails(name: str) -> None:
    model = _model(name)
    h, r, _ = _batch(2)
    candidates = torch.randint(NUM_ENTITIES, (len(h), 5), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        chosen = model.score_tails(h, r, candidates)
        assert chosen.shape == (len(h), 5)
        torch.testing.assert_close(chosen, model.score_all_tails(h, r).gather(1, candidates), atol=1e-5, rtol=0)


def test_scores_equal_the_papers_formula(name: str) -> None:
    model = _model(name)
    h, r, t = _batch(4)
    expected = _reference(name, model, h, r, t)
    with torch.no_grad():
        torch.testing.assert_close(model.score_hrt(h, r, t).double(), expected, atol=1e-5, rtol=0)
        all_rows = model.score_all_tails(h, r)[torch.arange(len(h)), t].double()
        torch.testing.assert_close(all_rows, expected, atol=1e-5, rtol=0)


def test_table_shapes(name: str) -> None:
    model = _model(name)
    width = 2 * DIM if name in ("complex", "rotate") else DIM
    assert model.entity.weight.shape == (NUM_ENTITIES, width)
    assert model.relation.weight.shape == (NUM_RELATIONS, width)
    assert model.numel_tables() == NUM_ENTITIES * width + NUM_RELATIONS * width
    stored = DIM if name == "rotate" else width  # the exporter stores RotatE's rotations as one phase each
    assert model.relation_table().shape == (NUM_RELATIONS, stored)


def test_rotate_rotations_keep_the_modulus() -> None:
    model = _model("rotate")
    h, r, _ = _batch(5)
    with torch.no_grad():
        q = _complex(model.query(h, r))
        torch.testing.assert_close(q.abs(), _complex(model.entity.weight[h]).abs(), atol=1e-6, rtol=0)


def test_rotate_scores_by_its_stored_phases_and_a_zero_row_is_the_identity() -> None:
    model = _model("rotate")
    h, r, _ = _batch(7)
    with torch.no_grad():
        model.relation.weight[r[0], [2, 2 + DIM]] = 0.0  # a dimension whose row entries are both pruned
        phases = model.relation_table()[r]
        expected = _complex(model.entity.weight[h]) * torch.polar(torch.ones_like(phases), phases).to(torch.complex128)
        got = _complex(model.query(h, r))
    torch.testing.assert_close(got, expected.to(got.dtype), atol=1e-6, rtol=0)
    torch.testing.assert_close(got[0, 2], _complex(model.entity.weight[h[0]])[2])  # atan2(0, 0) = 0: unrotated


def test_rotate_loads_a_checkpoint_of_phases_and_scores_as_it_did() -> None:
    """Checkpoints written when RotatE's relation table held ``dim`` phases still load, unchanged in score."""
    model = _model("rotate")
    h, r, _ = _batch(9)
    phases = torch.rand(NUM_RELATIONS, DIM) * 2 * torch.pi - torch.pi
    old_state = {"entity.weight": model.entity.weight.detach().clone(), "relation.weight": phases}
    model.load_state_dict(old_state, strict=True)
    e = _complex(model.entity.weight[h])
    expected = e * torch.polar(torch.ones_like(phases[r]), phases[r]).to(e.dtype)
    with torch.no_grad():
        torch.testing.assert_close(_complex(model.query(h, r)), expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(model.relation_table(), phases, atol=1e-6, rtol=0)


@pytest.mark.parametrize("scorer", ["all", "hrt", "tails"])
def test_gradients_reach_both_tables(name: str, scorer: str) -> None:
    model = _model(name).train()
    h, r, t = _batch(6)
    scores: dict[str, Callable[[], Tensor]] = {
        "all": lambda: model.score_all_tails(h, r),
        "hrt": lambda: model.score_hrt(h, r, t),
        "tails": lambda: model.score_tails(h, r, t[:, None]),
    }
    scores[scorer]().sum().backward()
    for table, used in ((model.entity.weight, torch.unique(torch.cat([h, t]))), (model.relation.weight, torch.unique(r))):
        assert table.grad is not None and torch.isfinite(table.grad).all()
        assert (table.grad[used].abs().sum(1) > 0).all()
    unused = sorted(set(range(NUM_RELATIONS)) - set(r.tolist()))
    assert model.relation.weight.grad[unused].abs().sum() == 0


def test_dropout_is_the_same_for_every_scorer_in_training(name: str) -> None:
    """Negative sampling scores positives with score_hrt and negatives with score_tails: one query dropout."""
    model = _model(name, dropout=0.5).train()
    h, r, t = _batch(7)
    torch.manual_seed(11)
    all_tails = model.score_all_tails(h, r)[torch.arange(len(h)), t]
    torch.manual_seed(11)
    hrt = model.score_hrt(h, r, t)
    torch.manual_seed(11)
    tails = model.score_tails(h, r, t[:, None])[:, 0]
    torch.testing.assert_close(hrt, all_tails, atol=1e-5, rtol=0)
    torch.testing.assert_close(tails, all_tails, atol=1e-5, rtol=0)
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model.score_hrt(h, r, t), _reference(name, model, h, r, t).float(), atol=1e-5, rtol=0)


def test_factors_cover_what_the_batch_touches(name: str) -> None:
    model = _model(name)
    h, r, t = _batch(8)
    factors = model.factors(h, r, t)
    assert all(f.shape[0] == len(h) for f in factors)
    assert len(factors) == (2 if name == "rotate" else 3)  # RotatE's rotations are not regularised


def test_same_seed_same_tables(name: str) -> None:
    a, b, c = _model(name, seed=3), _model(name, seed=3), _model(name, seed=4)
    assert torch.equal(a.entity.weight, b.entity.weight) and torch.equal(a.relation.weight, b.relation.weight)
    assert not torch.equal(a.entity.weight, c.entity.weight)


def test_transe_takes_its_distance_from_the_options() -> None:
    assert _model("transe").interaction == "l2"  # a config without the option: checkpoints from before it
    assert _model("transe-l1").interaction == "l1"
    with pytest.raises(ValueError, match=r"distance='l3'; allowed: l1, l2"):
        _model("transe", options={"distance": "l3"})


def test_the_l1_distance_of_every_tail_matches_a_dense_reference_at_a_larger_size() -> None:
    """cdist's L1 kernel, at a size where it no longer works on a single block."""
    torch.manual_seed(5)
    model = build(ModelConfig("transe", 700, 4, 96, init_scale=0.5, options={"distance": "l1"})).eval()
    h, r = torch.randint(700, (300,)), torch.randint(4, (300,))
    with torch.no_grad():
        q = (model.entity.weight[h] + model.relation.weight[r]).double()
        expected = -(q[:, None, :] - model.entity.weight.double()[None]).abs().sum(-1)
        torch.testing.assert_close(model.score_all_tails(h, r).double(), expected, atol=1e-4, rtol=1e-6)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_entities", 0),
        ("num_entities", 2.5),
        ("num_relations", -1),
        ("dim", 0),
        ("dim", "8"),
        ("init_scale", 0.0),
        ("init_scale", 11.0),
        ("dropout", -0.1),
        ("dropout", 1.0),
    ],
)
def test_model_config_errors_name_the_field_and_value(field: str, value: object) -> None:
    settings: dict[str, object] = {"model": "distmult", "num_entities": 5, "num_relations": 2, "dim": 4, field: value}
    with pytest.raises(ValueError) as info:
        ModelConfig(**settings)  # type: ignore[arg-type]
    assert f"ModelConfig.{field}" in str(info.value)
    assert repr(value) in str(info.value)


def test_model_config_round_trips_through_a_dict() -> None:
    config = ModelConfig("complex", 5, 4, 3, init_scale=0.1, dropout=0.2, options={"k": 1})
    assert ModelConfig(**config.to_dict()) == config

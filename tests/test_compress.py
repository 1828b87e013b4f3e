"""Tests for kgedge.compress: the distillation loss, student initialisation, pruning, QAT, recipes.

Low-rank factorisation has its own file (test_lowrank.py); recipe parsing is fuzzed in test_fuzz.py.
"""

from __future__ import annotations

from dataclasses import replace as replace_config

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kgedge.compress.distill import DistillConfig, DistillationLoss, score_hint, soft_loss
from kgedge.compress.init import init_student_from_embedding, init_student_from_teacher
from kgedge.compress.pipeline import run_recipe
from kgedge.compress.prune import dimension_importance, finish_pruning, magnitude_prune, prune_dimensions
from kgedge.compress.qat import enable_qat, fake_quantize_rows, finish_qat
from kgedge.compress.recipe import EMBEDDING_INITS, Recipe, RecipeError, Step, load_recipe
from kgedge.compress.size import table_bytes
from kgedge.data.kg import KnowledgeGraph
from kgedge.evaluate import evaluate_link_prediction
from kgedge.models import KGModel, ModelConfig, build
from kgedge.quantization import dequantize_rows, quantize_rows
from kgedge.train.config import default_model_options, default_train_config
from kgedge.train.negatives import NegativeSampler
from kgedge.train.scorer import model_scorer
from kgedge.train.trainer import batch_loss, train_model

KGE_MODELS = ("transe", "distmult", "complex", "rotate")


@pytest.fixture(scope="module")
def kg(permutation_kg: KnowledgeGraph) -> KnowledgeGraph:
    """40 x -> y pairs under 3 relations (80 entities), from conftest's permutation KG."""
    return permutation_kg


def _model(kg: KnowledgeGraph, name: str, dim: int, seed: int = 0, init_scale: float = 0.5) -> KGModel:
    torch.manual_seed(seed)
    return build(ModelConfig(name, kg.num_entities, 2 * kg.num_relations, dim, init_scale=init_scale)).eval()


@pytest.fixture(scope="module")
def teacher(kg: KnowledgeGraph) -> KGModel:
    """A ComplEx-32 trained on the permutation KG (it learns the shared permutation: test MRR ~1)."""
    config = ModelConfig("complex", kg.num_entities, 2 * kg.num_relations, 32, **default_model_options("complex"))
    return train_model(kg, config, default_train_config("complex", epochs=60, seed=0, eval_every=10)).model.eval()


def _mrr(model: KGModel, kg: KnowledgeGraph) -> float:
    return evaluate_link_prediction(model_scorer(model), kg, "test")["mrr"]


# --- the soft loss and the hint ---------------------------------------------------------------------------

def test_soft_loss_is_t_squared_kl_of_the_softened_distributions() -> None:
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, 9, generator=gen), torch.randn(5, 9, generator=gen) * 3
    for t in (1.0, 2.0, 4.0):
        p = torch.softmax(teacher / t, 1).double()
        q = torch.softmax(student / t, 1).double()
        by_hand = (p * (p / q).log()).sum(1).mean() * t**2
        assert soft_loss(student, teacher, t).item() == pytest.approx(by_hand.item(), rel=1e-5)
        # torch's own KL (input: log q, target: p) agrees
        torch_kl = F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), log_target=True,
                            reduction="batchmean") * t**2
        assert soft_loss(student, teacher, t).item() == pytest.approx(torch_kl.item(), rel=1e-5)


def test_soft_loss_is_zero_only_when_the_distributions_agree() -> None:
    scores = torch.randn(4, 7, generator=torch.Generator().manual_seed(1))
    assert soft_loss(scores, scores, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_loss(scores + 5.0, scores, 2.0).item() == pytest.approx(0.0, abs=1e-6)  # shift-invariant
    assert soft_loss(scores.flip(1), scores, 2.0).item() > 0.01


def test_soft_loss_weights_scale_each_query() -> None:
    gen = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(3, 6, generator=gen), torch.randn(3, 6, generator=gen)
    per_query = torch.stack([soft_loss(student[i : i + 1], teacher[i : i + 1], 2.0) for i in range(3)])
    weights = torch.tensor([0.0, 1.0, 3.0])
    assert soft_loss(student, teacher, 2.0, weights).item() == pytest.approx((per_query * weights).mean().item(), rel=1e-5)


def test_soft_loss_gradient_pulls_the_student_towards_the_teacher() -> None:
    teacher = torch.tensor([[3.0, 0.0, -1.0, 0.5]])
    student = torch.zeros(1, 4, requires_grad=True)
    optimizer = torch.optim.SGD([student], lr=1.0)
    losses = []
    for _ in range(200):
        optimizer.zero_grad()
        loss = soft_loss(student, teacher, 2.0)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 1e-3 * losses[0]
    assert student.detach().argsort(descending=True).tolist() == teacher.argsort(descending=True).tolist()


def test_score_hint_matches_shape_not_scale() -> None:
    teacher = torch.randn(4, 10, generator=torch.Generator().manual_seed(3))
    assert score_hint(3.0 * teacher - 7.0, teacher).item() == pytest.approx(0.0, abs=1e-6)
    assert score_hint(-teacher, teacher).item() > 1.0


# --- DistillationLoss: full and sampled candidates, adaptive weights ----------------------------------------

def _batch(kg: KnowledgeGraph, rows: int = 16) -> torch.Tensor:
    return torch.as_tensor(kg.with_reciprocals(kg.train)[:rows])


def test_full_candidates_score_every_entity(kg: KnowledgeGraph, teacher: KGModel) -> None:
    student = _model(kg, "distmult", 8)
    batch = _batch(kg)
    hook = DistillationLoss(teacher, DistillConfig(candidates="full", alpha=2.0), kg.num_entities, torch.Generator())
    h, r = batch[:, 0], batch[:, 1]
    with torch.no_grad():
        want = 2.0 * soft_loss(student.score_all_tails(h, r), teacher.score_all_tails(h, r), 4.0)
    assert hook(student, batch).item() == pytest.approx(want.item(), rel=1e-5)


def test_the_hook_reuses_the_hard_losss_scores_with_the_same_loss_and_gradients(kg: KnowledgeGraph,
                                                                               teacher: KGModel) -> None:
    """A 1-N step scores the student once: the hook gets the hard loss's scores and gives what it would alone."""
    batch, config = _batch(kg), default_train_config("distmult")
    hook = DistillationLoss(teacher, DistillConfig(candidates="full"), kg.num_entities, torch.Generator())
    handed: list[torch.Tensor | None] = []

    def spy(model: KGModel, rows: torch.Tensor, scores: torch.Tensor | None) -> torch.Tensor:
        handed.append(scores)
        return hook(model, rows, scores)

    def loss_and_grads(use_spy: bool) -> tuple[float, list[torch.Tensor]]:
        student = _model(kg, "distmult", 8).train()
        loss = batch_loss(student, batch, config, None, spy) if use_spy else (
            batch_loss(student, batch, config, None) + hook(student, batch))
        loss.backward()
        return loss.item(), [p.grad.clone() for p in student.parameters()]

    shared, alone = loss_and_grads(True), loss_and_grads(False)
    assert len(handed) == 1 and handed[0] is not None and handed[0].shape == (len(batch), kg.num_entities)
    assert shared[0] == pytest.approx(alone[0], rel=1e-6)
    for a, b in zip(shared[1], alone[1], strict=True):
        torch.testing.assert_close(a, b)
    sampled_config = default_train_config("distmult", loss="nssa", num_negatives=4)
    sampler = NegativeSampler(kg.num_entities, None, torch.Generator().manual_seed(0))
    batch_loss(_model(kg, "distmult", 8), batch, sampled_config, sampler, spy)
    assert handed[-1] is None  # negative sampling computes no all-tail scores to hand on


def test_sampled_candidates_hold_the_true_tail_and_the_teachers_top_k(kg: KnowledgeGraph, teacher: KGModel) -> None:
    config = DistillConfig(candidates="sampled", teacher_topk=5, random_candidates=7)
    hook = DistillationLoss(teacher, config, kg.num_entities, torch.Generator().manual_seed(0))
    assert hook.sampled
    batch = _batch(kg)
    h, r, t = batch[:, 0], batch[:, 1], batch[:, 2]
    candidates = hook._candidates(h, r, t)
    assert candidates.shape == (len(batch), 1 + 5 + 7)
    assert torch.equal(candidates[:, 0], t)
    with torch.no_grad():
        top = teacher.score_all_tails(h, r).topk(5, dim=1).indices
    assert torch.equal(candidates[:, 1:6], top)
    assert int(candidates.min()) >= 0 and int(candidates.max()) < kg.num_entities
    loss = hook(_model(kg, "complex", 4), batch)
    assert torch.isfinite(loss) and loss.item() > 0


def test_auto_candidates_switch_to_sampling_only_for_large_kgs(kg: KnowledgeGraph, teacher: KGModel) -> None:
    assert not DistillationLoss(teacher, DistillConfig(), kg.num_entities, torch.Generator()).sampled
    assert DistillationLoss(teacher, DistillConfig(), 2_000_000, torch.Generator()).sampled


def test_auto_candidates_use_the_cache_between_small_and_huge_kgs() -> None:
    from kgedge.compress.distill import CACHED_CANDIDATES_MIN, FULL_CANDIDATES_LIMIT, resolve_candidates

    auto = DistillConfig()
    assert resolve_candidates(auto, CACHED_CANDIDATES_MIN) == "full"
    assert resolve_candidates(auto, CACHED_CANDIDATES_MIN + 1) == "cached"
    assert resolve_candidates(auto, FULL_CANDIDATES_LIMIT) == "cached"
    assert resolve_candidates(auto, FULL_CANDIDATES_LIMIT + 1) == "sampled"
    assert resolve_candidates(DistillConfig(hint_weight=0.5), 40_000) == "full"  # a hint needs the teacher's rows
    assert resolve_candidates(DistillConfig(candidates="full"), 40_000) == "full"


def test_a_kg_past_the_cache_threshold_distils_from_the_cache(kg: KnowledgeGraph, teacher: KGModel,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """With auto candidates, a recipe on a KG above the threshold never runs the teacher's all-tail
    product in a step: the hook sees the cache."""
    from kgedge.compress import distill, pipeline

    monkeypatch.setattr(distill, "CACHED_CANDIDATES_MIN", kg.num_entities - 1)
    hooks: list[DistillationLoss] = []
    original = pipeline.DistillationLoss

    def recording(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        hooks.append(original(*args, **kwargs))
        return hooks[-1]

    monkeypatch.setattr(pipeline, "DistillationLoss", recording)
    run_recipe(teacher, kg, Recipe.from_dict({"steps": [{"kind": "distill", "dim": 4, "epochs": 2}]}), seed=0)
    assert len(hooks) == 1 and hooks[0].cache is not None and not hooks[0].sampled


def test_adaptive_weights_trust_queries_the_teacher_gets_right(kg: KnowledgeGraph, teacher: KGModel) -> None:
    """DualDE-style: a query whose true tail the teacher ranks high counts more in the soft loss."""
    student = _model(kg, "distmult", 8)
    batch = _batch(kg, 8)
    wrong = batch.clone()
    wrong[:, 2] = (wrong[:, 2] + 1) % kg.num_entities  # tails the teacher does not believe in
    hook = DistillationLoss(teacher, DistillConfig(candidates="full", adaptive=True), kg.num_entities, torch.Generator())
    plain = DistillationLoss(teacher, DistillConfig(candidates="full"), kg.num_entities, torch.Generator())
    mixed = torch.cat([batch, wrong])
    h, r = mixed[:, 0], mixed[:, 1]
    with torch.no_grad():
        t_scores, s_scores = teacher.score_all_tails(h, r), student.score_all_tails(h, r)
        p_true = torch.softmax(t_scores, 1).gather(1, mixed[:, 2:3]).squeeze(1)
    weights = 2.0 * p_true / (p_true + p_true.mean())
    assert weights[:8].min() > weights[8:].max()  # right tails weigh more than wrong ones
    want = soft_loss(s_scores, t_scores, 4.0, weights)
    assert hook(student, mixed).item() == pytest.approx(want.item(), rel=1e-5)
    assert hook(student, mixed).item() != pytest.approx(plain(student, mixed).item(), rel=1e-3)


def test_distill_config_refuses_bad_settings() -> None:
    for bad, message in (({"alpha": -1.0}, "alpha"), ({"temperature": 0.0}, "temperature"),
                         ({"candidates": "some"}, "candidates"), ({"teacher_topk": 0}, "teacher_topk"),
                         ({"hint_weight": -0.5}, "hint_weight")):
        with pytest.raises(ValueError, match=message):
            DistillConfig(**bad)  # type: ignore[arg-type]


# --- student initialisation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["distmult", "complex"])
def test_teacher_init_keeps_inner_products_when_the_student_is_as_wide(kg: KnowledgeGraph, name: str) -> None:
    teacher = _model(kg, name, 8, seed=1)
    student = _model(kg, name, 8, seed=2)
    init_student_from_teacher(student, teacher)
    e_t, e_s = teacher.entity_table().detach(), student.entity_table().detach()
    if name == "complex":  # Hermitian inner products of the complex rows
        half = e_t.shape[1] // 2
        z_t, z_s = torch.complex(e_t[:, :half], e_t[:, half:]), torch.complex(e_s[:, :half], e_s[:, half:])
        torch.testing.assert_close(z_s @ z_s.conj().T, z_t @ z_t.conj().T, atol=1e-4, rtol=1e-4)
    else:
        torch.testing.assert_close(e_s @ e_s.T, e_t @ e_t.T, atol=1e-4, rtol=1e-4)


def test_teacher_init_keeps_the_leading_components(kg: KnowledgeGraph) -> None:
    """A teacher whose table has rank 3 is reproduced exactly (in inner products) by a 3-dim student."""
    teacher = _model(kg, "distmult", 16)
    gen = torch.Generator().manual_seed(4)
    low = torch.randn(kg.num_entities, 3, generator=gen) @ torch.randn(3, 16, generator=gen)
    with torch.no_grad():
        teacher.entity.weight.copy_(low)
    student = _model(kg, "distmult", 3)
    init_student_from_teacher(student, teacher)
    e_s = student.entity_table().detach()
    torch.testing.assert_close(e_s @ e_s.T, low @ low.T, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("method", EMBEDDING_INITS)
def test_embedding_init_gives_linked_entities_similar_rows(kg: KnowledgeGraph, teacher: KGModel, method: str) -> None:
    student = _model(kg, "complex", 8)
    init_student_from_embedding(student, teacher, kg, method, seed=0)
    table = student.entity_table().detach()
    assert table.shape == (kg.num_entities, 16)
    target = teacher.entity_table().detach().norm(dim=1).mean()
    assert table.norm(dim=1).mean().item() == pytest.approx(target.item(), rel=1e-4)
    rows = F.normalize(table, dim=1)
    pairs = torch.as_tensor(kg.train[:, [0, 2]])
    linked = (rows[pairs[:, 0]] * rows[pairs[:, 1]]).sum(1).mean()
    gen = torch.Generator().manual_seed(0)
    random_pairs = torch.randint(kg.num_entities, (2000, 2), generator=gen)
    unrelated = (rows[random_pairs[:, 0]] * rows[random_pairs[:, 1]]).sum(1).mean()
    assert linked > unrelated + 0.2  # x_i and y_perm(i) are neighbours in the entity graph


def test_a_recipe_refuses_an_unknown_init_when_read() -> None:
    with pytest.raises(RecipeError, match=r"step 1 \(distill\) init='pca'; allowed: teacher, random, mf"):
        Recipe.from_dict({"steps": [{"kind": "distill", "init": "pca"}]})


# --- pruning ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", KGE_MODELS)
def test_pruning_dimensions_that_carry_nothing_keeps_every_score(kg: KnowledgeGraph, name: str) -> None:
    model = _model(kg, name, 8)
    dead = [1, 4, 6]
    with torch.no_grad():
        for table in (model.entity.weight,) + ((model.relation.weight,) if name != "rotate" else ()):
            width = table.shape[1]
            columns = dead + [d + 8 for d in dead] if width == 16 else dead
            table[:, columns] = 0.0
    # RotatE's relations are phases (modulus 1 in every dimension): its dead dimensions are the entities'
    assert set(dimension_importance(model).argsort()[:3].tolist()) == set(dead)
    pruned = prune_dimensions(model, 5)
    assert pruned.config.dim == 5 and pruned.entity.weight.shape[1] == model.entity.weight.shape[1] * 5 // 8
    rows = torch.as_tensor(kg.with_reciprocals(kg.test))
    with torch.no_grad():
        torch.testing.assert_close(pruned.score_all_tails(rows[:, 0], rows[:, 1]),
                                   model.score_all_tails(rows[:, 0], rows[:, 1]), atol=1e-5, rtol=1e-5)
    assert table_bytes(pruned, 8) < table_bytes(model, 8)  # structured pruning shrinks what is exported


def test_prune_dimensions_refuses_a_bad_keep(kg: KnowledgeGraph) -> None:
    with pytest.raises(ValueError, match=r"keep=9; allowed: 1\.\.8"):
        prune_dimensions(_model(kg, "distmult", 8), 9)


def test_magnitude_pruning_reaches_the_sparsity_and_bakes_it_in(kg: KnowledgeGraph) -> None:
    model = _model(kg, "distmult", 16)
    before = model.entity.weight.detach().clone()
    sparsity = magnitude_prune(model, sparsity=0.5)
    assert sparsity == pytest.approx(0.5, abs=0.01)
    kept = model.entity.weight.detach() != 0
    smallest_kept = before.abs()[kept].min()
    assert before.abs()[~kept].max() <= smallest_kept  # the smallest magnitudes went
    finish_pruning(model)
    names = {n for n, _ in model.named_parameters()}
    assert "entity.weight" in names and not any(n.endswith("_orig") for n in names)
    assert float((model.entity.weight == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
    assert table_bytes(model, 8) == table_bytes(_model(kg, "distmult", 16), 8)  # sparsity saves no bytes


def test_magnitude_pruning_by_threshold(kg: KnowledgeGraph) -> None:
    model = _model(kg, "distmult", 16)
    threshold = 0.3
    small = (model.entity.weight.detach().abs() < threshold).float().mean().item()
    magnitude_prune(model, threshold=threshold)
    finish_pruning(model)
    assert float((model.entity.weight == 0).float().mean()) == pytest.approx(small)
    with pytest.raises(ValueError, match="exactly one of sparsity or threshold"):
        magnitude_prune(model)


# --- quantization-aware training ---------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [8, 7, 4])
def test_fake_quantization_is_exactly_the_exporters_scheme(bits: int) -> None:
    table = torch.randn(50, 24, generator=torch.Generator().manual_seed(5)) * torch.linspace(0.01, 3, 50)[:, None]
    table[3] = 0.0  # an all-zero row (scale 1 by convention on both sides)
    codes, scales = quantize_rows(table.numpy(), bits)
    np.testing.assert_array_equal(fake_quantize_rows(table, bits).numpy(), dequantize_rows(codes, scales))


def test_fake_quantization_passes_gradients_straight_through() -> None:
    table = torch.randn(6, 5, generator=torch.Generator().manual_seed(6), requires_grad=True)
    weights = torch.randn(6, 5, generator=torch.Generator().manual_seed(7))
    (fake_quantize_rows(table, 8) * weights).sum().backward()
    torch.testing.assert_close(table.grad, weights)


@pytest.mark.parametrize("name", KGE_MODELS)
def test_qat_trains_on_quantized_tables_and_finish_bakes_them(kg: KnowledgeGraph, name: str) -> None:
    model = _model(kg, name, 8)
    enable_qat(model, 8)
    seen = model.entity.weight.detach().clone()
    codes, scales = quantize_rows(seen.numpy(), 8)
    np.testing.assert_array_equal(seen.numpy(), dequantize_rows(codes, scales))  # the forward sees codes
    config = default_train_config(name, epochs=2, seed=0, eval_every=2)
    model = finish_qat(train_model(kg, model.config, config, model=model).model)
    assert not any("parametrizations" in n for n, _ in model.named_parameters())
    codes, scales = quantize_rows(model.entity.weight.detach().numpy(), 8)
    np.testing.assert_array_equal(model.entity.weight.detach().numpy(), dequantize_rows(codes, scales))  # lossless
    relations = model.relation_table().detach().numpy()  # RotatE: phases recovered from [cos | sin] rows
    codes, scales = quantize_rows(relations, 8)
    tolerance = 1e-6 if name == "rotate" else 0.0  # atan2 of a cos and a sin rounds; a grid step is 0.025
    np.testing.assert_allclose(relations, dequantize_rows(codes, scales), atol=tolerance, rtol=0)


# --- recipes end to end -----------------------------------------------------------------------------------

def test_a_recipe_reports_exported_bytes_and_the_share_of_the_teacher(kg: KnowledgeGraph, teacher: KGModel) -> None:
    recipe = Recipe.from_dict({"name": "t", "export_bits": 8, "steps": [
        {"kind": "distill", "dim": 8, "epochs": 40},
        {"kind": "prune_dims", "keep": 6, "epochs": 10},
        {"kind": "qat", "bits": 8, "epochs": 10},
    ]})
    reported: list[str] = []
    result = run_recipe(teacher, kg, recipe, seed=0, on_step=lambda step: reported.append(step.step))
    assert reported == ["1:distill", "2:prune_dims", "3:qat"]
    teacher_bytes = table_bytes(teacher, None)
    for step in result.steps:
        assert step.compression == pytest.approx(teacher_bytes / step.bytes)
        assert step.teacher_share == pytest.approx(step.mrr / result.teacher["mrr"])
    last = result.steps[-1]
    assert (last.model, last.dim) == ("complex", 6)
    assert last.bytes == table_bytes(result.model, 8)
    assert last.mrr == pytest.approx(_mrr(result.model, kg))
    assert result.teacher["mrr"] > 0.9 and last.teacher_share > 0.9  # the permutation survives 32 -> 6 dims


@pytest.mark.parametrize("teacher_name", ["transe", "distmult", "rotate"])
def test_an_auto_student_is_complex_whatever_the_teacher(kg: KnowledgeGraph, teacher_name: str) -> None:
    """``student = "auto"`` distils into ComplEx (benchmarks/student_family.py), initialised from the teacher's table."""
    torch.manual_seed(0)
    teacher = _model(kg, teacher_name, 16).eval()
    recipe = Recipe.from_dict({"name": "t", "steps": [{"kind": "distill", "dim": 4, "epochs": 1}]})
    result = run_recipe(teacher, kg, recipe, seed=0)
    assert (result.model.config.model, result.model.config.dim) == ("complex", 4)
    assert result.steps[0].model == "complex" and result.steps[0].mrr == pytest.approx(_mrr(result.model, kg))


@pytest.mark.parametrize("distance", ["l1", "l2"])
def test_a_transe_student_keeps_its_teachers_distance(kg: KnowledgeGraph, distance: str) -> None:
    """Whatever the default, a TransE student learns the distance its TransE teacher computes."""
    torch.manual_seed(0)
    teacher = build(ModelConfig("transe", kg.num_entities, 2 * kg.num_relations, 16,
                                options={"distance": distance})).eval()
    recipe = Recipe.from_dict({"name": "t", "steps": [{"kind": "distill", "student": "transe", "dim": 8, "epochs": 1}]})
    result = run_recipe(teacher, kg, recipe, seed=0)
    assert result.model.config.model == "transe" and result.model.interaction == distance
    assert result.model.config.options["distance"] == distance


def _row_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows of the Pearson correlation between two score matrices."""
    a = (a - a.mean(1, keepdim=True)) / a.std(1, keepdim=True)
    b = (b - b.mean(1, keepdim=True)) / b.std(1, keepdim=True)
    return float((a * b).mean(1).mean())


def test_the_soft_loss_makes_the_student_score_like_the_teacher(kg: KnowledgeGraph) -> None:
    """A teacher with random tables knows nothing the hard labels say: whatever the student shares with
    its scores comes from the soft loss. With alpha 0 the student's score rows are uncorrelated with
    the teacher's; with a large alpha they follow them (and the hard task suffers, as it should with
    a teacher that knows nothing)."""
    teacher = _model(kg, "complex", 16, seed=7)
    rows = torch.as_tensor(kg.with_reciprocals(kg.train))

    def correlation(alpha: float) -> float:
        recipe = Recipe.from_dict({"steps": [{"kind": "distill", "dim": 8, "epochs": 30, "init": "random",
                                              "alpha": alpha, "temperature": 1.0}]})
        student = run_recipe(teacher, kg, recipe, seed=0).model
        with torch.no_grad():
            return _row_correlation(student.score_all_tails(rows[:, 0], rows[:, 1]),
                                    teacher.score_all_tails(rows[:, 0], rows[:, 1]))

    without, with_soft = correlation(0.0), correlation(16.0)
    assert abs(without) < 0.1 and with_soft > 0.4


def test_an_unknown_init_is_refused_before_training(kg: KnowledgeGraph, teacher: KGModel) -> None:
    step = Recipe.from_dict({"steps": [{"kind": "distill"}]}).steps[0]
    bad = Recipe(name="bad", steps=(Step("distill", {**step.settings, "init": "pca"}),))  # past the recipe check
    with pytest.raises(ValueError, match="init='pca'; allowed: teacher, random, mf, deepwalk, node2vec"):
        run_recipe(teacher, kg, bad)


def _student_mrr(kg: KnowledgeGraph, teacher: KGModel, init: str) -> float:
    recipe = Recipe.from_dict({"steps": [{"kind": "distill", "dim": 4, "epochs": 3, "init": init}]})
    return run_recipe(teacher, kg, recipe, seed=0).steps[-1].mrr


def test_initialisation_from_the_teacher_starts_ahead_of_random(kg: KnowledgeGraph, teacher: KGModel) -> None:
    """After only 3 epochs, a student started from the teacher's projected table ranks better than one
    started at random: the initialisation carries the teacher's entity space."""
    assert _student_mrr(kg, teacher, "teacher") > _student_mrr(kg, teacher, "random") + 0.05


@pytest.mark.parametrize("name", ["tiny-int8", "tiny-int4", "tiny-int4-hard"])
def test_tiny_recipes_store_64_times_fewer_bytes_than_a_256_dim_teacher(name: str) -> None:
    recipe = load_recipe(name)
    dim = int(recipe.steps[0].settings["dim"])
    teacher = build(ModelConfig("complex", 5000, 40, dim=256))
    student = build(ModelConfig("complex", 5000, 40, dim=dim))
    assert table_bytes(teacher, None) / table_bytes(student, recipe.export_bits) == pytest.approx(64.0)


@pytest.mark.parametrize("name", ["wide-int4", "wide-int4-hard"])
def test_the_wide_recipes_store_32_times_fewer_bytes_than_a_256_dim_teacher(name: str) -> None:
    recipe = load_recipe(name)
    dim = int(recipe.steps[0].settings["dim"])
    assert recipe.export_bits == 4 and dim == 60
    teacher = build(ModelConfig("complex", 5000, 40, dim=256))
    student = build(ModelConfig("complex", 5000, 40, dim=dim))
    assert table_bytes(teacher, None) / table_bytes(student, recipe.export_bits) == pytest.approx(32.0)


def test_the_hard_wide_recipe_is_the_wide_one_without_the_soft_loss() -> None:
    wide, hard = load_recipe("wide-int4"), load_recipe("wide-int4-hard")
    assert [s.kind for s in hard.steps] == [s.kind for s in wide.steps] == ["distill", "qat"]
    assert hard.steps[0].settings == {**wide.steps[0].settings, "alpha": 0.0} and wide.steps[0].settings["alpha"] > 0
    assert hard.steps[0].settings["init"] == "teacher" and hard.steps[1].settings == wide.steps[1].settings


def test_the_hard_tiny_recipe_is_tiny_int4_without_the_soft_loss_started_from_the_teacher() -> None:
    tiny, hard = load_recipe("tiny-int4"), load_recipe("tiny-int4-hard")
    assert [s.kind for s in hard.steps] == [s.kind for s in tiny.steps] == ["distill", "qat"]
    assert hard.export_bits == tiny.export_bits == 4 and hard.steps[1].settings["bits"] == 4
    assert hard.steps[0].settings["dim"] == tiny.steps[0].settings["dim"]
    assert hard.steps[0].settings["alpha"] == 0.0 and hard.steps[0].settings["init"] == "teacher"


def test_a_choice_keeps_the_candidate_with_the_best_validation_mrr(kg: KnowledgeGraph, teacher: KGModel,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The weaker candidate runs first (a choice that kept the first, or the last, would fail); the
    kept student is the better one's, with its steps, bits and export bits, and both are reported."""
    weak = Recipe.from_dict({"name": "weak", "export_bits": 8, "steps": [
        {"kind": "distill", "dim": 2, "epochs": 2, "init": "random", "alpha": 0.0}]})
    strong = Recipe.from_dict({"name": "strong", "export_bits": 4, "steps": [
        {"kind": "distill", "dim": 8, "epochs": 40}, {"kind": "qat", "bits": 4, "epochs": 5}]})
    monkeypatch.setattr("kgedge.compress.pipeline.candidate_recipes", lambda recipe: [weak, strong])
    seen: list[str] = []
    choice = Recipe(name="choice", steps=(), choose_from=("weak", "strong"))
    result = run_recipe(teacher, kg, choice, seed=0, on_step=lambda s: seen.append(f"{s.recipe} {s.step}"))
    assert seen == ["weak 1:distill", "strong 1:distill", "strong 2:qat"]
    assert [c.recipe for c in result.candidates] == ["weak", "strong"]
    assert [c.chosen for c in result.candidates] == [False, True]
    weak_c, strong_c = result.candidates
    assert strong_c.valid_mrr > weak_c.valid_mrr + 0.2
    assert strong_c.valid_mrr == pytest.approx(evaluate_link_prediction(model_scorer(result.model), kg, "valid")["mrr"])
    assert (result.recipe, result.bits, result.export_bits) == ("strong", 4, 4)
    assert [s.step for s in result.steps] == ["1:distill", "2:qat"] and result.model.config.dim == 8
    assert strong_c.bytes == table_bytes(result.model, 4) and weak_c.bits is None


def test_the_auto_recipe_chooses_between_the_default_and_the_wide_one() -> None:
    from kgedge.compress.recipe import candidate_recipes

    auto = load_recipe("auto")
    assert auto.steps == () and auto.choose_from == ("default", "wide-int4", "wide-int4-hard")
    assert [r.name for r in candidate_recipes(auto)] == ["default", "wide-int4", "wide-int4-hard"]


def test_a_choice_must_name_shipped_recipes_of_steps(tmp_path) -> None:  # noqa: ANN001
    from kgedge.compress.recipe import candidate_recipes

    with pytest.raises(RecipeError, match="candidate 'nope' is not a shipped recipe"):
        Recipe.from_dict({"choose_from": ["default", "nope"]}, source="x.toml")
    with pytest.raises(RecipeError, match="at least two recipe names"):
        Recipe.from_dict({"choose_from": ["default"]}, source="x.toml")
    with pytest.raises(RecipeError, match="either choose_from or"):
        Recipe.from_dict({"choose_from": ["default", "wide-int4"], "steps": [{"kind": "qat"}]}, source="x.toml")
    nested = tmp_path / "nested.toml"
    nested.write_text('choose_from = ["default", "auto"]\n', encoding="utf-8")
    with pytest.raises(RecipeError, match="candidate 'auto' lists choose_from itself"):
        candidate_recipes(load_recipe(nested))


# --- the teacher cache: distillation without the teacher in the step ------------------------------------

def _cache(kg: KnowledgeGraph, teacher: KGModel, k: int, temperature: float = 4.0):  # noqa: ANN202
    from kgedge.compress.teacher_cache import TeacherTopK

    return TeacherTopK(teacher, torch.as_tensor(kg.with_reciprocals(kg.train)), 2 * kg.num_relations, k, temperature)


@pytest.mark.parametrize("adaptive", [False, True])
def test_a_cache_of_every_tail_gives_the_full_soft_loss_and_its_gradients(kg: KnowledgeGraph, teacher: KGModel,
                                                                           adaptive: bool) -> None:
    batch = _batch(kg, 24)
    config = DistillConfig(alpha=1.5, adaptive=adaptive)
    full = DistillationLoss(teacher, replace_config(config, candidates="full"), kg.num_entities, torch.Generator())
    cached = DistillationLoss(teacher, replace_config(config, candidates="cached"), kg.num_entities, torch.Generator(),
                              _cache(kg, teacher, k=kg.num_entities))

    def loss_and_grads(hook: DistillationLoss) -> tuple[float, list[torch.Tensor]]:
        student = _model(kg, "distmult", 8)
        loss = hook(student, batch)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in student.parameters()]

    (a, grads_a), (b, grads_b) = loss_and_grads(full), loss_and_grads(cached)
    assert a > 0 and b == pytest.approx(a, rel=1e-4)
    for x, y in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-6)


def test_a_top_k_cache_compares_the_top_k_and_the_rest(kg: KnowledgeGraph, teacher: KGModel) -> None:
    """The coarse KL (top k tails + "the rest") never exceeds the full one, is zero for a student that
    matches the teacher, and pushes a random student: the loss and a gradient are there."""
    from kgedge.compress.teacher_cache import cached_soft_loss

    cache = _cache(kg, teacher, k=5)
    batch = _batch(kg, 24)
    h, r = batch[:, 0], batch[:, 1]
    rows = cache.rows(h, r)
    assert cache.ids.shape == (len(cache.keys), 5) and bool((cache.log_rest < 0).all())
    with torch.no_grad():
        teacher_scores = teacher.score_all_tails(h, r)
    torch.testing.assert_close(cache.ids[rows], teacher_scores.topk(5, dim=1).indices)
    assert cached_soft_loss(teacher_scores, cache, rows).item() == pytest.approx(0.0, abs=1e-5)
    student = _model(kg, "complex", 4)
    scores = student.score_all_tails(h, r)
    coarse = cached_soft_loss(scores, cache, rows)
    assert 0 < coarse.item() <= soft_loss(scores, teacher_scores, 4.0).item() + 1e-6
    coarse.backward()
    assert student.entity.weight.grad.abs().sum() > 0


def test_the_cache_refuses_a_query_it_does_not_hold(kg: KnowledgeGraph, teacher: KGModel) -> None:
    cache = _cache(kg, teacher, k=3)
    known = kg.with_reciprocals(kg.train)
    pairs = {(int(h), int(r)) for h, r, _ in known}
    h, r = next((h, r) for h in range(kg.num_entities) for r in range(2 * kg.num_relations) if (h, r) not in pairs)
    with pytest.raises(KeyError, match=f"query \\(head {h}, relation {r}\\) is not a training query"):
        cache.rows(torch.tensor([int(known[0, 0]), h]), torch.tensor([int(known[0, 1]), r]))


def test_a_cached_recipe_asks_the_teacher_once_for_all_its_steps(kg: KnowledgeGraph, teacher: KGModel,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from kgedge.compress import pipeline

    built: list[int] = []
    original = pipeline.TeacherTopK

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        built.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(pipeline, "TeacherTopK", counting)
    recipe = Recipe.from_dict({"steps": [{"kind": "distill", "dim": 8, "epochs": 30, "candidates": "cached"},
                                         {"kind": "qat", "bits": 8, "epochs": 5}]})
    result = run_recipe(teacher, kg, recipe, seed=0)
    assert len(built) == 1
    assert result.steps[-1].teacher_share > 0.9  # the permutation is learned from the cached answers too
    monkeypatch.setattr("kgedge.compress.pipeline.candidate_recipes", lambda choice: [recipe, recipe])
    run_recipe(teacher, kg, Recipe(name="choice", steps=(), choose_from=("a", "b")), seed=0)
    assert len(built) == 2  # one more cache for the whole choice, not one per candidate
    with pytest.raises(ValueError, match="hint_weight needs the teacher's full score rows"):
        DistillConfig(candidates="cached", hint_weight=0.5)

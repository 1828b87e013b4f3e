"""Tests for low-rank factorisation (kgedge.compress.lowrank, kgedge.models.factored): the SVD, the
factored models and their checkpoints, the recipe step, QAT of ``U``, the factored export, linear layers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from kgedge.compress.lowrank import factorize_entities, factorize_linear, factorize_linear_layers, truncated_svd
from kgedge.compress.pipeline import run_recipe
from kgedge.compress.qat import enable_qat, finish_qat
from kgedge.compress.recipe import Recipe, RecipeError
from kgedge.compress.size import table_bytes
from kgedge.data.kg import KnowledgeGraph
from kgedge.export import export_bundle
from kgedge.export.bundle import graph_spec
from kgedge.export.profile import resolve_profile
from kgedge.models import KGModel, ModelConfig, build
from kgedge.models.factored import LowRankEmbedding, LowRankLinear
from kgedge.models.graph_encoder import attach_graph, graph_model_config
from kgedge.quantization import dequantize_rows, quantize_rows, stored_bytes
from kgedge.runtime import EdgeModel
from kgedge.train.checkpoint import Checkpoint, Vocabulary, load_checkpoint, save_checkpoint
from kgedge.train.config import default_model_options, default_train_config
from kgedge.train.trainer import train_model

KGE_MODELS = ("transe", "distmult", "complex", "rotate")
DIM = 16


@pytest.fixture(scope="module")
def kg(permutation_kg: KnowledgeGraph) -> KnowledgeGraph:
    """40 x -> y pairs under 3 relations (80 entities), from conftest's permutation KG."""
    return permutation_kg


def _config(kg: KnowledgeGraph, name: str, dim: int = DIM) -> ModelConfig:
    options = default_model_options(name)
    return ModelConfig(name, kg.num_entities, 2 * kg.num_relations, dim, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained(kg: KnowledgeGraph) -> Callable[[str], KGModel]:
    """``trained(name)``: a briefly trained model, once per module: real structure for the SVD to keep."""
    models: dict[str, KGModel] = {}

    def get(name: str) -> KGModel:
        if name not in models:
            config = default_train_config(name, epochs=30, seed=0, eval_every=30)
            models[name] = train_model(kg, _config(kg, name), config).model.eval()
        return models[name]

    return get


def _random(kg: KnowledgeGraph, name: str, seed: int = 0) -> KGModel:
    torch.manual_seed(seed)
    return build(ModelConfig(name, kg.num_entities, 2 * kg.num_relations, DIM, init_scale=0.5)).eval()


def _queries(kg: KnowledgeGraph) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows = torch.as_tensor(kg.with_reciprocals(kg.test))
    return rows[:, 0], rows[:, 1], rows[:, 2]


# --- the SVD ---------------------------------------------------------------------------------------------

def test_truncated_svd_is_exact_at_full_rank_and_the_error_falls_with_rank() -> None:
    table = torch.randn(50, 12, generator=torch.Generator().manual_seed(0))
    u, v = truncated_svd(table, 12)
    assert u.shape == (50, 12) and v.shape == (12, 12)
    torch.testing.assert_close(u @ v, table, atol=1e-5, rtol=0)
    errors = []
    for rank in range(1, 13):
        u, v = truncated_svd(table, rank)
        errors.append(float((table - u @ v).norm()))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    # the singular values sit in U: V has orthonormal rows, and U's rows keep the projected rows' norms
    u, v = truncated_svd(table, 5)
    torch.testing.assert_close(v @ v.T, torch.eye(5), atol=1e-5, rtol=0)
    torch.testing.assert_close((u @ v).norm(dim=1), u.norm(dim=1), atol=1e-5, rtol=0)


def test_truncated_svd_caps_the_rank_at_the_smaller_side() -> None:
    u, v = truncated_svd(torch.randn(6, 10), 64)
    assert u.shape == (6, 6) and v.shape == (6, 10)
    with pytest.raises(ValueError, match="rank=0"):
        truncated_svd(torch.randn(6, 10), 0)


# --- factored models -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", KGE_MODELS)
def test_a_full_rank_factored_model_scores_like_the_dense_one(kg: KnowledgeGraph, name: str) -> None:
    dense = _random(kg, name)
    width = dense.entity_width
    factored = factorize_entities(dense, width)
    assert isinstance(factored.entity, LowRankEmbedding) and factored.config.options == {"entity_rank": width}
    h, r, t = _queries(kg)
    with torch.no_grad():
        torch.testing.assert_close(factored.entity_table(), dense.entity_table(), atol=1e-5, rtol=0)
        torch.testing.assert_close(factored.score_all_tails(h, r), dense.score_all_tails(h, r), atol=1e-4, rtol=0)
        torch.testing.assert_close(factored.score_hrt(h, r, t), dense.score_hrt(h, r, t), atol=1e-4, rtol=0)
        for a, b in zip(factored.factors(h, r, t), dense.factors(h, r, t)):  # N3 sees the same rows
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", KGE_MODELS)
def test_a_factored_model_round_trips_a_checkpoint(kg: KnowledgeGraph, name: str, tmp_path: Path) -> None:
    factored = factorize_entities(_random(kg, name), 5)
    save_checkpoint(tmp_path / "m.ckpt", factored, Vocabulary.of(kg), {"data": "perm"})
    loaded = load_checkpoint(tmp_path / "m.ckpt")
    assert loaded.config.options["entity_rank"] == 5
    assert isinstance(loaded.model.entity, LowRankEmbedding) and loaded.model.entity.u.shape == (kg.num_entities, 5)
    h, r, _ = _queries(kg)
    with torch.no_grad():
        assert torch.equal(loaded.model.score_all_tails(h, r), factored.eval().score_all_tails(h, r))


def test_a_fresh_factored_table_has_the_dense_row_norm(kg: KnowledgeGraph) -> None:
    torch.manual_seed(0)
    config = ModelConfig("distmult", 2000, 6, 64, init_scale=0.1, options={"entity_rank": 8})
    rows = build(config).entity_table().detach()
    assert abs(float(rows.norm(dim=1).mean()) / (0.1 * 64**0.5) - 1.0) < 0.1


@pytest.mark.parametrize("rank", [0, -1, 2.5, "8", True])
def test_a_bad_entity_rank_names_the_option(rank: object) -> None:
    with pytest.raises(ValueError, match="entity_rank"):
        build(ModelConfig("distmult", 10, 2, 4, options={"entity_rank": rank}))


def test_factorize_entities_refuses_bad_ranks_and_graph_encoders(kg: KnowledgeGraph) -> None:
    with pytest.raises(ValueError, match=r"rank=17; allowed: 1\.\.16"):
        factorize_entities(_random(kg, "distmult"), 17)
    graph = attach_graph(build(graph_model_config(kg, "gcn", 8)), kg)
    with pytest.raises(ValueError, match="distill step before lowrank"):
        factorize_entities(graph, 4)


# --- the recipe step and QAT ------------------------------------------------------------------------------

def test_a_lowrank_step_reports_fewer_bytes_and_qat_then_quantizes_u(
    kg: KnowledgeGraph, trained: Callable[[str], KGModel]
) -> None:
    teacher = trained("complex")
    recipe = Recipe.from_dict({"steps": [{"kind": "lowrank", "rank": 8, "epochs": 10},
                                         {"kind": "qat", "bits": 8, "epochs": 2}]})
    result = run_recipe(teacher, kg, recipe)
    lowrank, qat = result.steps
    n, width, relation = kg.num_entities, 2 * DIM, stored_bytes(2 * kg.num_relations, 2 * DIM, 8)
    assert lowrank.bytes == stored_bytes(n, 8, 8) + 8 * width * 4 + relation  # U int8 + scales, V float32
    assert lowrank.bytes < table_bytes(teacher, 8) and qat.bytes == lowrank.bytes
    assert "U (80, 8)" in lowrank.note
    model = result.model
    assert isinstance(model.entity, LowRankEmbedding) and result.bits == 8
    u = model.entity.u.detach().numpy()
    np.testing.assert_allclose(dequantize_rows(*quantize_rows(u, 8)), u, rtol=0, atol=1e-6)  # U on the int8 grid
    v = model.entity.v.detach().numpy()
    assert not np.allclose(dequantize_rows(*quantize_rows(v, 8)), v, atol=1e-6)  # V is not quantized
    assert lowrank.mrr >= 0.9 * result.teacher["mrr"]  # rank 8 alone reaches ~0.6 of it; fine-tuning recovers


def test_a_rank_that_saves_nothing_keeps_the_table(kg: KnowledgeGraph) -> None:
    teacher = _random(kg, "distmult")
    result = run_recipe(teacher, kg, Recipe.from_dict({"export_bits": 32, "steps": [{"kind": "lowrank", "rank": 16}]}))
    assert not isinstance(result.model.entity, LowRankEmbedding)
    assert "kept" in result.steps[0].note and result.steps[0].bytes == table_bytes(teacher, None)


def test_recipes_refuse_pruning_a_factored_table() -> None:
    with pytest.raises(RecipeError, match=r"step 2 \(prune_dims\) follows a lowrank step"):
        Recipe.from_dict({"steps": [{"kind": "lowrank"}, {"kind": "prune_dims"}]})
    Recipe.from_dict({"steps": [{"kind": "lowrank"}, {"kind": "distill"}, {"kind": "prune_magnitude"}]})
    Recipe.from_dict({"steps": [{"kind": "prune_dims"}, {"kind": "lowrank"}, {"kind": "qat"}]})


def test_qat_of_a_factored_model_quantizes_u_not_the_product(kg: KnowledgeGraph) -> None:
    model = factorize_entities(_random(kg, "distmult"), 6)
    enable_qat(model, 8)
    u = model.entity.u.detach().numpy()
    np.testing.assert_allclose(dequantize_rows(*quantize_rows(u, 8)), u, rtol=0, atol=1e-6)
    finish_qat(model)
    assert sorted(model.state_dict()) == ["entity.u", "entity.v", "relation.weight"]


# --- export ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", KGE_MODELS)
@pytest.mark.parametrize("profile", ["portable", "x86-avx2"])
def test_a_factored_model_exports_and_the_bundle_answers_like_torch(
    kg: KnowledgeGraph, trained: Callable[[str], KGModel], name: str, profile: str, tmp_path: Path
) -> None:
    model = factorize_entities(trained(name), 6)
    if profile != "portable":  # the tables as stored (QAT with no steps): only the query's int8 codes differ
        model = finish_qat(enable_qat(model, 8))
    model.eval()
    checkpoint = Checkpoint(model=model, vocab=Vocabulary.of(kg))
    # validates against torch; the MRR gate of 1% is less than one rank on this KG's 14 test queries, so it
    # is widened here (the top-5 overlap below is the check of what int8 changes)
    target = resolve_profile(profile)
    target = replace(target, validation=replace(target.validation, max_mrr_drop=0.05))
    result = export_bundle(checkpoint, target, tmp_path / "bundle", kg=kg)
    graph = onnx.load(str(tmp_path / "bundle" / "model.onnx"))
    onnx.checker.check_model(graph, full_check=True)
    basis = next(i for i in graph.graph.initializer if i.name == "entity_basis")
    assert tuple(basis.dims) == (6, model.entity_width) and basis.data_type == onnx.TensorProto.FLOAT
    ops = Counter(node.op_type for node in graph.graph.node)
    if model.interaction == "l1":  # no product to project: U · V is multiplied out when the session loads
        # (and an integer profile puts it on its uint8 grid, summing the Min of bytes in integers)
        assert ops["Gemm"] == 0 and ops["MatMulInteger"] == (0 if profile == "portable" else 1)
        assert ops["Abs"] == (1 if profile == "portable" else 0)
    else:
        assert ops["MatMulInteger"] == (0 if profile == "portable" else 1) and ops["Gemm"] == 1
    bits = None if profile == "portable" else 8
    assert graph_spec(checkpoint).table_bytes(bits) == table_bytes(model, bits)
    assert result.validation.max_abs_score_diff <= 1e-3

    edge = EdgeModel.load(tmp_path / "bundle")
    h, r, _ = _queries(kg)
    k = 5
    with torch.no_grad():
        expected = model.score_all_tails(h, r).topk(k, dim=1).indices.numpy()
    ids, _ = edge.topk(h.numpy(), r.numpy(), k)
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(ids.tolist(), expected.tolist())])
    assert overlap >= (0.99 if profile == "portable" else 0.9), overlap


# --- linear layers ---------------------------------------------------------------------------------------

def test_factorize_linear_is_exact_at_full_rank_and_keeps_the_bias() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(12, 7)
    low = factorize_linear(linear, 7)
    x = torch.randn(5, 12)
    torch.testing.assert_close(low(x), linear(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(low.weight, linear.weight, atol=1e-5, rtol=0)
    assert low.bias is low.second.bias and torch.equal(low.bias, linear.bias)
    errors = [float((factorize_linear(linear, r).weight - linear.weight).detach().norm()) for r in range(1, 8)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors


@pytest.mark.parametrize("name", ["gcn", "rgcn", "gat"])
def test_factorize_linear_layers_keeps_graph_encoder_outputs_close(kg: KnowledgeGraph, name: str) -> None:
    torch.manual_seed(0)
    model = attach_graph(build(graph_model_config(kg, name, 16, init_scale=0.3)), kg).eval()
    width, rank = model.entity_width, 4
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # layers whose weights are (nearly) rank 4, as trained layers often are
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                low = torch.randn(width, rank, generator=generator) @ torch.randn(rank, width, generator=generator)
                module.weight.copy_(low / width + 1e-4 * torch.randn(width, width, generator=generator))
        before = model.entity_table().clone()
    linears = sorted(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear))
    assert factorize_linear_layers(model, width) == []  # rank W is no smaller: every layer left dense
    assert factorize_linear_layers(model, rank) == linears
    assert all(isinstance(model.get_submodule(n), LowRankLinear) for n in linears)
    with torch.no_grad():
        after = model.entity_table()
    assert float((after - before).abs().max()) <= 1e-3 * float(before.abs().max())

"""Tests for the lightweight embeddings (kgedge.embed): walks, skip-gram, factorisation, the fitted
DistMult scorer and ``kgedge embed``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kgedge.data.kg import KnowledgeGraph, load_kg
from kgedge.embed import (
    METHODS,
    EntityGraph,
    MFConfig,
    RandomWalkConfig,
    ScorerConfig,
    embed_kg,
    fit_relation_scorer,
    mf_embedding,
    random_walk_embedding,
    random_walks,
    resolve_method,
)
from kgedge.embed.matrix_factorization import factorize, normalized_adjacency, ppmi_matrix
from kgedge.evaluate import evaluate_link_prediction
from kgedge.train.checkpoint import load_checkpoint
from kgedge.train.config import default_train_config
from kgedge.train.scorer import model_scorer


@pytest.fixture(scope="module")
def kg_dir(permutation_dir: Path) -> Path:
    return permutation_dir


@pytest.fixture(scope="module")
def kg(kg_dir: Path) -> KnowledgeGraph:
    return load_kg(kg_dir)


def ring_lattice(n: int = 60, reach: int = 2) -> EntityGraph:
    """Every node linked to the ``reach`` nearest on each side: degree ``2 * reach``, many triangles."""
    heads = np.repeat(np.arange(n), reach)
    tails = (heads + np.tile(np.arange(1, reach + 1), n)) % n
    return EntityGraph.from_edges(heads, tails, n)


def two_cliques(size: int = 8) -> EntityGraph:
    pairs = [(i, j) for i in range(size) for j in range(i + 1, size)]
    pairs += [(i + size, j + size) for i, j in pairs]
    heads, tails = np.array(pairs).T
    return EntityGraph.from_edges(heads, tails, 2 * size)


# --- entity graph and walks ------------------------------------------------------------------------------

def test_entity_graph_is_undirected_simple_and_counts_parallel_triples(kg: KnowledgeGraph) -> None:
    graph = EntityGraph.of(kg)
    a = graph.adjacency(weighted=True)
    assert (a != a.T).nnz == 0 and a.diagonal().sum() == 0
    # in the permutation KG, each (x, y) pair is linked by up to 3 relations
    assert graph.weights.max() == 3
    h, t = kg.train[0, 0], kg.train[0, 2]
    assert graph.has_edge(np.array([h, t, h]), np.array([t, h, h])).tolist() == [True, True, False]


@pytest.mark.parametrize(("p", "q"), [(1.0, 1.0), (0.5, 2.0)])
def test_walks_only_follow_edges(p: float, q: float) -> None:
    graph = ring_lattice()
    walks = random_walks(graph, RandomWalkConfig(walks_per_node=2, walk_length=12, p=p, q=q), np.random.default_rng(0))
    assert walks.shape == (2 * graph.num_nodes, 12)
    assert (walks[:, 0] == np.tile(np.arange(graph.num_nodes), 2)).all()
    assert graph.has_edge(walks[:, :-1].reshape(-1), walks[:, 1:].reshape(-1)).all()


def _return_and_outward_rates(p: float, q: float) -> tuple[float, float]:
    graph = ring_lattice()
    walks = random_walks(graph, RandomWalkConfig(walks_per_node=20, walk_length=20, p=p, q=q), np.random.default_rng(1))
    before, after = walks[:, :-2].reshape(-1), walks[:, 2:].reshape(-1)
    returned = before == after
    outward = ~returned & ~graph.has_edge(before, after)
    return float(returned.mean()), float(outward.mean())


def test_return_parameter_p_matches_the_node2vec_probability() -> None:
    # with q = 1 every non-return neighbour weighs 1: P(return) = (1/p) / (1/p + degree - 1), degree 4
    for p in (0.5, 1.0, 4.0):
        rate, _ = _return_and_outward_rates(p, 1.0)
        assert rate == pytest.approx((1 / p) / (1 / p + 3), abs=0.02), f"p={p}"


def test_in_out_parameter_q_moves_walks_outward_or_keeps_them_local() -> None:
    _, outward_dfs = _return_and_outward_rates(1.0, 0.25)
    _, outward_uniform = _return_and_outward_rates(1.0, 1.0)
    _, outward_bfs = _return_and_outward_rates(1.0, 4.0)
    assert outward_dfs > outward_uniform + 0.1 > outward_bfs + 0.2


def test_walk_config_is_validated() -> None:
    with pytest.raises(ValueError, match=r"RandomWalkConfig.q=0"):
        RandomWalkConfig(q=0)
    with pytest.raises(ValueError, match="walk_length"):
        RandomWalkConfig(walk_length=1)


def test_skipgram_separates_two_cliques() -> None:
    graph = two_cliques()
    result = random_walk_embedding(graph, RandomWalkConfig(dim=8, walks_per_node=10, walk_length=10, window=2,
                                                           epochs=3, batch_size=512, lr=0.05, seed=0))
    e = torch.nn.functional.normalize(result.table, dim=1)
    cosine = e @ e.T
    same = torch.block_diag(torch.ones(8, 8), torch.ones(8, 8)).bool() & ~torch.eye(16, dtype=torch.bool)
    different = ~torch.block_diag(torch.ones(8, 8), torch.ones(8, 8)).bool()
    assert result.table.shape == (16, 8) and result.num_walks == 160
    assert cosine[same].mean() > cosine[different].mean() + 0.2


# --- matrix factorisation --------------------------------------------------------------------------------

def test_ppmi_and_normalized_adjacency_are_symmetric_and_nonnegative() -> None:
    graph = ring_lattice(30)
    for matrix in (ppmi_matrix(graph, window=2), normalized_adjacency(graph)):
        dense = matrix.toarray()
        np.testing.assert_allclose(dense, dense.T, atol=1e-12)
        assert (dense >= 0).all()
    # one step: PMI is positive exactly on the edges of a regular graph (log(vol / (d * d)) > 0)
    one_step = ppmi_matrix(graph, window=1).toarray() > 0
    np.testing.assert_array_equal(one_step, graph.adjacency().toarray() > 0)


def test_factors_match_a_dense_svd_and_pad_to_the_requested_width() -> None:
    rng = np.random.default_rng(0)  # a random graph: distinct singular values (a lattice has ties)
    graph = EntityGraph.from_edges(rng.integers(0, 40, 120), rng.integers(0, 40, 120), 40)
    matrix = ppmi_matrix(graph, window=2)
    sparse_table, sparse_values = factorize(matrix, 6, dense_limit=0, seed=0)  # ARPACK
    dense_table, dense_values = factorize(matrix, 6, dense_limit=10_000, seed=0)  # exact
    np.testing.assert_allclose(sparse_values, dense_values, rtol=1e-6)
    np.testing.assert_allclose(np.abs(sparse_table @ sparse_table.T), np.abs(dense_table @ dense_table.T), atol=1e-6)
    assert (np.diff(dense_values) <= 1e-9).all()
    small = mf_embedding(two_cliques(3), MFConfig(num_factors=10, matrix="adjacency"))
    assert small.table.shape == (6, 10) and torch.all(small.table[:, 6:] == 0)


def test_mf_config_is_validated() -> None:
    with pytest.raises(ValueError, match="MFConfig.matrix='laplacian'"):
        MFConfig(matrix="laplacian")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_factors"):
        MFConfig(num_factors=0)


# --- fitted scorer, checkpoints, CLI --------------------------------------------------------------------

def test_methods_registry_lists_valid_names() -> None:
    assert set(METHODS) == {"deepwalk", "node2vec", "mf"}
    with pytest.raises(ValueError, match="choose one of deepwalk, node2vec, mf"):
        resolve_method("line")


def test_frozen_fit_keeps_the_table_and_learns_relations(kg: KnowledgeGraph) -> None:
    table = mf_embedding(EntityGraph.of(kg), MFConfig(num_factors=16)).table
    config = ScorerConfig(train=default_train_config("distmult", epochs=20, batch_size=64, eval_every=5))
    fit = fit_relation_scorer(kg, table, config)
    scale = 1.0 / float(table.norm(dim=1).mean())
    torch.testing.assert_close(fit.model.entity.weight.detach(), table * scale)
    assert fit.model.config.model == "distmult" and not fit.fine_tuned
    assert fit.model.entity.weight.requires_grad  # trainable again for a student or a later fine-tune
    with pytest.raises(ValueError, match="rows"):
        fit_relation_scorer(kg, table[:-1], config)


def test_embed_kg_writes_a_distmult_checkpoint_that_evaluates(kg: KnowledgeGraph, tmp_path: Path) -> None:
    scorer = ScorerConfig(fine_tune_epochs=5,
                          train=default_train_config("distmult", epochs=20, batch_size=64, eval_every=5))
    result = embed_kg(kg, "mf", dim=16, scorer=scorer, out=tmp_path / "mf.ckpt")
    checkpoint = load_checkpoint(tmp_path / "mf.ckpt")
    assert checkpoint.config.model == "distmult" and checkpoint.config.dim == 16
    assert checkpoint.metadata["embedding"]["method"] == "mf"
    metrics = evaluate_link_prediction(model_scorer(checkpoint.model), kg, "test")
    assert metrics["mrr"] == pytest.approx(evaluate_link_prediction(model_scorer(result.model), kg, "test")["mrr"])
    # the permutation KG is learnable from who-links-to-whom alone: far above random (~0.06)
    assert metrics["mrr"] > 0.3


def test_cli_embed_then_evaluate(kg_dir: Path, tmp_path: Path) -> None:
    from kgedge.cli import app

    runner = CliRunner()
    out = tmp_path / "dw.ckpt"
    args = ["embed", "--data", str(kg_dir), "--method", "deepwalk", "--dim", "8", "--out", str(out), "--json"]
    embedded = runner.invoke(app, args)
    assert embedded.exit_code == 0, embedded.output
    summary = json.loads(embedded.stdout)
    assert summary["model"] == "distmult" and summary["method"] == "deepwalk" and out.is_file()
    evaluated = runner.invoke(app, ["evaluate", str(out), "--data", str(kg_dir), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert 0.0 < json.loads(evaluated.stdout)["mrr"] <= 1.0
    wrong = runner.invoke(app, ["embed", "--data", str(kg_dir), "--method", "line", "--out", str(out)])
    assert wrong.exit_code == 2 and "choose one of" in wrong.output


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mf", "deepwalk", "node2vec"])
def test_on_the_demo_kg_beats_popularity_on_recall_at_10(method: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from kgedge.data.sources import load_data
    from kgedge.evaluate import popularity_scorer, recommendation_metrics

    monkeypatch.setenv("KGEDGE_CACHE", str(tmp_path / "cache"))
    demo = load_data("demo")
    result = embed_kg(demo, method, dim=64)
    ours = recommendation_metrics(model_scorer(result.model), demo, "bought")["recall_at_10"]
    baseline = recommendation_metrics(popularity_scorer(demo, demo.relation_ids["bought"]), demo, "bought")
    assert ours > baseline["recall_at_10"] + 0.1

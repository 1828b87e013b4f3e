"""Tests for the graph-neural teachers (kgedge.models.gcn / gat / rgcn) and their shared machinery:
sparse propagation, the stored graph, checkpoints, materialisation into a plain decoder model, training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kgedge.data.kg import KnowledgeGraph, load_kg
from kgedge.evaluate import evaluate_link_prediction
from kgedge.models import MODELS, ModelConfig, build, resolve
from kgedge.models.decoders import DECODERS, resolve_decoder
from kgedge.models.graph_encoder import (
    GraphEncoderModel,
    attach_graph,
    graph_model_config,
    graph_model_names,
    materialize,
    materialized_checkpoint,
    materialized_model,
)
from kgedge.models.message_passing import SparseStructure, propagate, segment_softmax
from kgedge.train.checkpoint import Checkpoint, Vocabulary, load_checkpoint, save_checkpoint
from kgedge.train.config import default_train_config
from kgedge.train.materialize import save_materialized
from kgedge.train.scorer import model_scorer
from kgedge.train.trainer import train_model

GRAPH_MODELS = ("gcn", "gat", "rgcn")
DIM = 8


@pytest.fixture(scope="module")
def kg(permutation_kg: KnowledgeGraph) -> KnowledgeGraph:
    """80 entities, 3 relations that agree on a permutation (see ``conftest.permutation_triples``)."""
    return permutation_kg


@pytest.fixture(params=GRAPH_MODELS)
def name(request: pytest.FixtureRequest) -> str:
    return request.param


def _model(kg: KnowledgeGraph, name: str, seed: int = 0, **options: object) -> GraphEncoderModel:
    torch.manual_seed(seed)
    # init_scale 0.3: O(1) scores, so that absolute tolerances mean something
    model = build(graph_model_config(kg, name, DIM, init_scale=0.3, **options))
    assert isinstance(model, GraphEncoderModel)
    return attach_graph(model, kg).eval()


def _queries(kg: KnowledgeGraph, size: int = 13, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(kg.num_entities, (size,), generator=g),
            torch.randint(2 * kg.num_relations, (size,), generator=g),
            torch.randint(kg.num_entities, (size,), generator=g))


def test_graph_models_are_registered() -> None:
    assert set(GRAPH_MODELS) <= set(graph_model_names())
    for model_name in GRAPH_MODELS:
        assert resolve(model_name) is MODELS[model_name]
        assert issubclass(MODELS[model_name], GraphEncoderModel)


# --- sparse propagation --------------------------------------------------------------------------------

def test_propagate_matches_index_add_and_passes_gradcheck_with_parallel_edges() -> None:
    g = torch.Generator().manual_seed(0)
    rows = torch.tensor([0, 0, 0, 2, 2, 4, 1, 1])  # (0, 3) three times: parallel edges share a CSR entry
    cols = torch.tensor([3, 3, 3, 1, 0, 4, 2, 3])
    structure = SparseStructure.build(rows, cols, (5, 6))
    assert len(structure.col) == 6
    values = torch.rand(len(rows), generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    expected = torch.zeros(5, 3, dtype=torch.float64).index_add(0, rows, values[:, None] * x[cols])
    torch.testing.assert_close(propagate(structure, values, x), expected)
    assert torch.autograd.gradcheck(lambda v, y: propagate(structure, v, y), (values, x))


def test_propagate_rejects_mismatched_shapes() -> None:
    structure = SparseStructure.build(torch.tensor([0, 1]), torch.tensor([1, 0]), (2, 2))
    with pytest.raises(ValueError, match="values of shape"):
        propagate(structure, torch.ones(3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="x has 3 rows"):
        propagate(structure, torch.ones(2), torch.ones(3, 4))


def test_segment_softmax_normalises_each_group() -> None:
    logits = torch.tensor([[1.0, 50.0], [2.0, -3.0], [0.5, 0.0], [7.0, 1.0]])
    index = torch.tensor([0, 0, 2, 2])
    out = segment_softmax(logits, index, 3)
    sums = torch.zeros(3, 2).index_add(0, index, out)
    torch.testing.assert_close(sums[[0, 2]], torch.ones(2, 2))
    torch.testing.assert_close(out[:2, 0], torch.softmax(logits[:2, 0], 0))


# --- the models -------------------------------------------------------------------------------------------

def test_shapes_and_scoring_paths_agree(kg: KnowledgeGraph, name: str) -> None:
    model = _model(kg, name)
    h, r, t = _queries(kg)
    with torch.no_grad():
        assert model.entity_table().shape == (kg.num_entities, DIM)
        everything = model.score_all_tails(h, r)
        assert everything.shape == (len(h), kg.num_entities)
        torch.testing.assert_close(everything[torch.arange(len(h)), t], model.score_hrt(h, r, t), atol=1e-5, rtol=0)
        candidates = torch.randint(kg.num_entities, (len(h), 4), generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(model.score_tails(h, r, candidates), everything.gather(1, candidates),
                                   atol=1e-5, rtol=0)


def test_the_encoder_changes_the_table_and_every_parameter_gets_a_gradient(kg: KnowledgeGraph, name: str) -> None:
    model = _model(kg, name).train()
    assert not torch.allclose(model.entity_table(), model.entity.weight)  # message passing did something
    h, r, t = _queries(kg, size=64)
    loss = torch.nn.functional.cross_entropy(model.score_all_tails(h, r), t)
    loss.backward()
    layer_params = [n for n, _ in model.named_parameters() if n.startswith("layers.")]
    assert layer_params
    for param_name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"{name}: no gradient reaches {param_name}"


def test_one_encoding_per_step_and_a_fresh_one_after_the_update(kg: KnowledgeGraph, name: str) -> None:
    model = _model(kg, name).train()
    calls = []
    original = model.encode
    model.encode = lambda: calls.append(1) or original()  # type: ignore[method-assign]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    h, r, t = _queries(kg, size=32)
    for step in (1, 2):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model.score_all_tails(h, r), t)
        loss = loss + 1e-3 * sum(f.abs().pow(3).sum() for f in model.factors(h, r, t))
        loss.backward()
        optimizer.step()
        assert len(calls) == step  # score_all_tails (query + table) and factors share one encoding
    with torch.no_grad():
        model.eval()
        first = model.score_all_tails(h, r)
        second = model.score_all_tails(h, r)
    assert len(calls) == 3  # evaluation batches share one encoding too
    torch.testing.assert_close(first, second)


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_materialized_model_scores_equal_the_graph_model(kg: KnowledgeGraph, name: str, decoder: str) -> None:
    model = _model(kg, name, decoder=decoder)
    config, state = materialized_checkpoint(model)
    assert config.model == decoder and config.options == {}
    assert set(state) == {"entity.weight", "relation.weight"}
    plain = materialized_model(model)
    assert type(plain) is MODELS[decoder]
    torch.testing.assert_close(materialize(model), model.entity_table().detach())
    h, r, _ = _queries(kg)
    with torch.no_grad():
        torch.testing.assert_close(plain.score_all_tails(h, r), model.score_all_tails(h, r), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["gcn", "rgcn"])
def test_a_rotate_decoder_loads_a_checkpoint_of_phases(kg: KnowledgeGraph, name: str) -> None:
    """Graph models with a rotate decoder written when its relations were phases load and score the same."""
    model = _model(kg, name, decoder="rotate")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rows = state["relation.weight"]
    state["relation.weight"] = torch.atan2(rows[:, DIM:], rows[:, :DIM])  # the phases an older kgedge trained
    fresh = _model(kg, name, seed=1, decoder="rotate")
    fresh.load_state_dict(state, strict=True)
    h, r, _ = _queries(kg)
    with torch.no_grad():
        torch.testing.assert_close(fresh.score_all_tails(h, r), model.score_all_tails(h, r), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fresh.relation_table(), state["relation.weight"], atol=1e-6, rtol=0)


def test_decoders_reproduce_the_plain_models_query(kg: KnowledgeGraph) -> None:
    h, r, _ = _queries(kg)
    torch.manual_seed(0)
    for decoder_name, decoder in DECODERS.items():
        reference = build(ModelConfig(decoder_name, kg.num_entities, 2 * kg.num_relations, DIM, init_scale=0.5))
        with torch.no_grad():
            expected = reference.query(h, r)
            got = decoder.query(reference.entity.weight[h], reference.relation.weight[r])
        torch.testing.assert_close(got, expected)
        assert decoder.interaction == reference.interaction


def test_checkpoint_round_trip_rebuilds_the_graph(kg: KnowledgeGraph, name: str, tmp_path: Path) -> None:
    model = _model(kg, name, decoder="complex")
    assert model.config.options["num_edges"] == 2 * len(kg.train)
    path = tmp_path / f"{name}.ckpt"
    save_checkpoint(path, model, Vocabulary.of(kg), {"data": kg.name})
    loaded = load_checkpoint(path).model
    assert type(loaded) is type(model) and loaded.config == model.config
    torch.testing.assert_close(loaded.edge_index, model.edge_index)
    torch.testing.assert_close(loaded.edge_type, model.edge_type)
    h, r, _ = _queries(kg)
    with torch.no_grad():
        torch.testing.assert_close(loaded.score_all_tails(h, r), model.score_all_tails(h, r))


def test_save_materialized_writes_a_plain_checkpoint(kg: KnowledgeGraph, tmp_path: Path) -> None:
    model = _model(kg, "rgcn")
    save_checkpoint(tmp_path / "g.ckpt", model, Vocabulary.of(kg), {"data": kg.name})
    save_materialized(tmp_path / "g.ckpt", tmp_path / "plain.ckpt")
    plain = load_checkpoint(tmp_path / "plain.ckpt")
    assert plain.config.model == "distmult"
    assert plain.metadata["materialized_from"]["model"] == "rgcn"
    h, r, _ = _queries(kg)
    with torch.no_grad():
        torch.testing.assert_close(plain.model.score_all_tails(h, r), model.score_all_tails(h, r), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("profile", ["portable", "x86-avx2"])
def test_a_graph_checkpoint_exports_directly_as_its_materialised_decoder(kg: KnowledgeGraph, tmp_path: Path,
                                                                         profile: str) -> None:
    from kgedge.export import export_bundle
    from kgedge.runtime import EdgeModel

    model = _model(kg, "gat")
    checkpoint = Checkpoint(model=model, vocab=Vocabulary.of(kg), metadata={"data": kg.name})
    result = export_bundle(checkpoint, profile, tmp_path / "bundle", kg=kg)
    assert result.manifest["model"]["name"] == "distmult"
    assert result.manifest["model"]["checkpoint"]["materialized_from"]["model"] == "gat"
    h, r, _ = _queries(kg)
    with torch.no_grad():
        expected = model.score_all_tails(h, r).numpy()
    got = EdgeModel.load(tmp_path / "bundle").score_all(h.numpy(), r.numpy())
    tolerance = 1e-4 if profile == "portable" else 0.05 * float(np.abs(expected).max())
    np.testing.assert_allclose(got, expected, atol=tolerance)


def test_attach_graph_sizes_the_buffers_and_rejects_another_kg(kg: KnowledgeGraph) -> None:
    bare = build(ModelConfig("gcn", kg.num_entities, 2 * kg.num_relations, DIM))
    assert bare.edge_index.shape == (2, 0)
    attach_graph(bare, kg)
    assert bare.edge_index.shape == (2, 2 * len(kg.train)) and bare.config.options["num_edges"] == 2 * len(kg.train)
    other = build(ModelConfig("gcn", kg.num_entities + 1, 2 * kg.num_relations, DIM))
    with pytest.raises(ValueError, match="configured for"):
        attach_graph(other, kg)


def test_options_are_validated_with_helpful_messages(kg: KnowledgeGraph) -> None:
    with pytest.raises(ValueError, match="unknown option.*known:.*num_layers"):
        graph_model_config(kg, "gcn", DIM, num_layer=2)
    with pytest.raises(ValueError, match="options.decoder='conve'"):
        graph_model_config(kg, "rgcn", DIM, decoder="conve")
    with pytest.raises(ValueError, match="num_bases"):
        graph_model_config(kg, "rgcn", DIM, num_bases=0)
    with pytest.raises(ValueError, match="not a multiple of options.num_heads=3"):
        build(graph_model_config(kg, "gat", DIM, num_heads=3))
    with pytest.raises(ValueError, match="not a graph model"):
        graph_model_config(kg, "distmult", DIM)
    with pytest.raises(ValueError, match="choose one of"):
        resolve_decoder("conve")


def test_a_short_training_beats_random_by_far(kg: KnowledgeGraph, name: str, tmp_path: Path) -> None:
    """The trainer attaches the graph itself: a bare ModelConfig is enough, as for ``kgedge train``."""
    config = ModelConfig(name, kg.num_entities, 2 * kg.num_relations, 16)
    untrained = attach_graph(build(config), kg)
    random_mrr = evaluate_link_prediction(model_scorer(untrained), kg, "test")["mrr"]
    # a few hundred steps on a tiny KG: a larger step than the defaults (tuned for UMLS-sized data)
    train = default_train_config(name, epochs=40, batch_size=64, lr=0.03, eval_every=10, patience=10, seed=0)
    result = train_model(kg, config, train, out=tmp_path / "m.ckpt")
    mrr = evaluate_link_prediction(model_scorer(result.model), kg, "test")["mrr"]
    assert mrr > max(3 * random_mrr, 0.3), f"{name}: test MRR {mrr:.3f} vs random {random_mrr:.3f}"
    reloaded = load_checkpoint(tmp_path / "m.ckpt").model
    assert reloaded.config.options["num_edges"] == 2 * len(kg.train)
    assert np.isclose(evaluate_link_prediction(model_scorer(reloaded), kg, "test")["mrr"], mrr)


def test_a_model_that_has_scored_can_be_deep_copied(kg: KnowledgeGraph) -> None:
    import copy

    model = _model(kg, "gat").train()
    h, r, _ = _queries(kg)
    model.score_all_tails(h, r)  # caches a table that carries an autograd graph
    twin = copy.deepcopy(model).eval()
    with torch.no_grad():
        torch.testing.assert_close(twin.score_all_tails(h, r), model.eval().score_all_tails(h, r))


@pytest.mark.slow
def test_rgcn_with_defaults_reaches_the_quality_bar_on_umls(real_dataset) -> None:  # noqa: ANN001
    """``kgedge train --model rgcn --dim 256`` on UMLS: test MRR >= 0.86 (0.9 of ComplEx-256's ~0.95)."""
    umls = load_kg(real_dataset("umls"), name="umls")
    config = ModelConfig("rgcn", umls.num_entities, 2 * umls.num_relations, 256)
    result = train_model(umls, config, default_train_config("rgcn"))
    assert evaluate_link_prediction(model_scorer(result.model), umls, "test")["mrr"] >= 0.86

"""The runtime on bundles written by the real exporter (fp32 and int8); skipped without it or torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bundle_factory import in_threads
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
export = pytest.importorskip("kgedge.export")
if not hasattr(export, "export_bundle"):
    pytest.skip("kgedge.export has no export_bundle yet", allow_module_level=True)

from kgedge.data.generate import ShopConfig, generate_shop_kg, write_shop_kg  # noqa: E402
from kgedge.data.kg import KnowledgeGraph, load_kg  # noqa: E402
from kgedge.models import ModelConfig, build  # noqa: E402
from kgedge.runtime import EdgeModel  # noqa: E402
from kgedge.runtime import graph as runtime_graph  # noqa: E402
from kgedge.train.checkpoint import Checkpoint, Vocabulary  # noqa: E402
from kgedge.train.scorer import model_scorer  # noqa: E402


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[KnowledgeGraph, Checkpoint, Path]:
    root = tmp_path_factory.mktemp("exported")
    write_shop_kg(generate_shop_kg(ShopConfig(num_entities=300, seed=1)), root / "data")
    kg = load_kg(root / "data")
    torch.manual_seed(0)
    config = ModelConfig(model="distmult", num_entities=kg.num_entities, num_relations=2 * kg.num_relations,
                         dim=16, init_scale=0.5)
    return kg, Checkpoint(model=build(config).eval(), vocab=Vocabulary.of(kg), metadata={"data": "shop"}), root


@pytest.fixture(scope="module")
def fp32(shop: tuple[KnowledgeGraph, Checkpoint, Path]) -> Path:
    kg, checkpoint, root = shop
    return export.export_bundle(checkpoint, "portable", root / "fp32", kg=kg, archive=True).path


def test_exported_fp32_bundle_scores_like_torch(shop, fp32: Path) -> None:  # noqa: ANN001
    kg, checkpoint, _ = shop
    model = EdgeModel.load(fp32)
    assert model.entities == kg.entities and model.relations == kg.relations and model.types == kg.type_names
    heads = np.arange(0, kg.num_entities, 7)
    relations = np.arange(len(heads)) % (2 * kg.num_relations)
    expected = np.asarray(model_scorer(checkpoint.model)(heads, relations))
    np.testing.assert_allclose(model.score_all(heads, relations), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("profile", ["portable", "x86-avx2"])
def test_recommend_on_exported_bundle_is_exact_and_excludes_train(shop, profile: str) -> None:  # noqa: ANN001
    kg, checkpoint, root = shop
    path = export.export_bundle(checkpoint, profile, root / f"rec-{profile}", kg=kg).path
    model = EdgeModel.load(path)
    bought = kg.relation_ids["bought"]
    products = np.isin(kg.entity_types, [kg.type_names.index("product")])
    users = np.unique(kg.train[kg.train[:, 1] == bought, 0])[:20]
    scores = model.score_all(users, np.full(len(users), bought))
    for row, user in enumerate(users):
        owned = set(kg.train[(kg.train[:, 0] == user) & (kg.train[:, 1] == bought), 2].tolist())
        got = [model.entity_id(n) for n, _ in model.recommend(kg.entities[user], k=10)]
        assert len(got) == 10 and not owned & set(got) and all(products[i] for i in got)
        masked = np.where(products & ~np.isin(np.arange(kg.num_entities), list(owned)), scores[row], -np.inf)
        # same graph, same scores: the top-k equals the best of the full row (up to exact ties)
        np.testing.assert_allclose(np.sort(masked)[::-1][:10], scores[row, got], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("profile", ["portable", "x86-avx2"])
def test_unrestricted_queries_take_the_plain_branch_and_answer_like_the_masked_one(shop, profile: str) -> None:  # noqa: ANN001
    """A query that restricts nothing is fed only the ids and k (the graph's plain branch); with an exclusion
    of padding only (-1) the same query takes the masked branch: both rank alike, and equal the full row."""
    kg, checkpoint, root = shop
    model = EdgeModel.load(export.export_bundle(checkpoint, profile, root / f"plain-{profile}", kg=kg).path)
    fed: list[set[str]] = []
    session = model._graph.session
    model._graph.session = type("Recording", (), {  # type: ignore[assignment]
        "run": lambda self, outputs, feeds, options=None: fed.append(set(feeds)) or session.run(outputs, feeds, options)})()
    heads = np.arange(0, kg.num_entities, 5)
    relations = np.arange(len(heads)) % (2 * kg.num_relations)
    plain = model.topk(heads, relations, 10)
    masked = model.topk(heads, relations, 10, exclude=np.full((len(heads), 1), -1))
    assert fed == [{"head", "relation", "k"}, {"head", "relation", "k", "allowed_types", "exclude", "masked"}]
    np.testing.assert_array_equal(plain[0], masked[0])
    np.testing.assert_array_equal(plain[1], masked[1])
    full = model.score_all(heads, relations)
    np.testing.assert_allclose(np.sort(full, axis=1)[:, ::-1][:, :10], plain[1], rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def int8_model(shop) -> EdgeModel:  # noqa: ANN001
    kg, checkpoint, root = shop
    return EdgeModel.load(export.export_bundle(checkpoint, "x86-avx2", root / "masks-int8", kg=kg).path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_exporters_masks_give_the_exact_topk_of_the_full_row(int8_model: EdgeModel, data: st.DataObject) -> None:
    """On the exporter's own graph (the masked If, the inputs with defaults): any mix of types, excluded ids
    and seen items ranks exactly as the full score row restricted by hand."""
    model, n = int8_model, int8_model.num_entities
    batch = data.draw(st.integers(1, 3))
    heads = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=batch, max_size=batch)))
    relations = np.array(data.draw(st.lists(st.integers(0, 2 * model.num_relations - 1), min_size=batch, max_size=batch)))
    types = data.draw(st.none() | st.lists(st.sampled_from(model.types), min_size=1, max_size=3, unique=True))
    excludes = [data.draw(st.lists(st.integers(0, n - 1), max_size=8)) for _ in range(batch)]
    seen = data.draw(st.booleans())
    allowed = np.ones(n, bool) if types is None else np.isin(model._graph.entity_types, [model.types.index(t) for t in types])
    k = data.draw(st.integers(1, min(20, int(allowed.sum()))))
    ids, scores = model.topk(heads, relations, k, types=types, exclude=excludes, exclude_seen=seen)
    full = model.score_all(heads, relations)
    for row in range(batch):
        keep = allowed.copy()
        keep[excludes[row]] = False
        if seen:
            keep[model._seen.lookup(heads[row : row + 1], relations[row : row + 1])[0]] = False
        want = np.sort(full[row][keep])[::-1][:k]
        got = scores[row][ids[row] >= 0]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        assert all(keep[i] for i in ids[row] if i >= 0) and (ids[row] >= 0).sum() == min(k, int(keep.sum()))


def test_a_masked_input_without_defaults_is_refused(shop, tmp_path: Path) -> None:  # noqa: ANN001
    """`masked` lets plain runs leave out `allowed_types` and `exclude`: a graph that takes it but has no
    defaults for them would fail on the first query, so loading says so."""
    import onnx

    from bundle_factory import edit_manifest

    from kgedge.runtime import BundleError

    kg, checkpoint, root = shop
    path = export.export_bundle(checkpoint, "portable", tmp_path / "bundle", kg=kg).path
    graph = onnx.load(path / "model.onnx")
    kept = [init for init in graph.graph.initializer if init.name != "exclude"]
    del graph.graph.initializer[:]
    graph.graph.initializer.extend(kept)
    onnx.save(graph, path / "model.onnx")
    edit_manifest(path, lambda m: m.pop("manifest_sha256", None), rehash=True)
    with pytest.raises(BundleError, match="graph input 'masked' needs defaults for"):
        EdgeModel.load(path)

def test_evaluate_gives_the_checkpoints_metrics_from_the_bundle(shop, fp32: Path) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from kgedge.cli import app
    from kgedge.train.checkpoint import save_checkpoint

    kg, checkpoint, root = shop
    save_checkpoint(root / "model.ckpt", checkpoint.model, checkpoint.vocab, checkpoint.metadata)
    runs = {}
    for artifact in (fp32, root / "model.ckpt"):
        result = CliRunner().invoke(app, ["evaluate", str(artifact), "--data", str(root / "data"), "--json"])
        assert result.exit_code == 0, result.output
        runs[artifact.suffix] = json.loads(result.output)
    assert runs[""]["kind"] == "bundle" and runs[".ckpt"]["kind"] == "checkpoint"
    assert runs[""]["mrr"] == pytest.approx(runs[".ckpt"]["mrr"], abs=1e-4)


@pytest.mark.parametrize("profile", ["portable", "x86-avx2"])
def test_an_l1_bundle_runs_in_batches_sized_by_its_differences(shop, profile: str, monkeypatch) -> None:  # noqa: ANN001
    """An L1 graph holds rows x N x W differences: the runtime divides its batches by W, and the answers
    of many small runs equal those of one run."""
    from kgedge.runtime import graph as runtime_graph
    from kgedge.train.config import default_train_config
    from kgedge.train.trainer import train_model

    kg, _, root = shop
    config = ModelConfig(model="transe", num_entities=kg.num_entities, num_relations=2 * kg.num_relations,
                         dim=16, options={"distance": "l1"})  # trained briefly: the int8 export checks its MRR
    trained = train_model(kg, config, default_train_config("transe", epochs=10, seed=0, eval_every=10)).model
    checkpoint = Checkpoint(model=trained.eval(), vocab=Vocabulary.of(kg), metadata={"data": "shop"})
    path = export.export_bundle(checkpoint, profile, root / f"l1-{profile}", kg=kg).path
    model = EdgeModel.load(path)
    assert model.manifest["model"]["interaction"] == "l1" and model.manifest["model"]["width"] == 16
    heads = np.arange(0, kg.num_entities, 3)
    relations = np.arange(len(heads)) % (2 * kg.num_relations)
    one_run = model.topk(heads, relations, 10)
    runs: list[int] = []
    session_run = model._graph.session.run
    monkeypatch.setattr(model._graph, "session", type("Counting", (), {
        "run": lambda self, outputs, feeds, options=None: runs.append(len(feeds["head"])) or session_run(outputs, feeds)})())
    monkeypatch.setattr(runtime_graph, "MAX_CELLS_PER_RUN", 4 * 16 * kg.num_entities)  # 4 rows of differences
    chunked = model.topk(heads, relations, 10)
    assert max(runs) == 4 and sum(runs) == len(heads)
    np.testing.assert_array_equal(chunked[0], one_run[0])
    np.testing.assert_allclose(chunked[1], one_run[1], rtol=1e-6)
    expected = model_scorer(checkpoint.model)(heads, relations)
    if profile == "portable":  # and they are TransE-L1's answers
        np.testing.assert_allclose(model.score_all(heads, relations), expected, rtol=1e-4, atol=1e-4)


def test_exported_archive_loads_without_torch(shop, fp32: Path) -> None:  # noqa: ANN001
    archive = Path(str(fp32) + ".tar.gz")
    assert archive.is_file()
    user = next(e for e in shop[0].entities if e.startswith("user"))
    code = (
        "import sys, json\n"
        "class B:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] in ('torch', 'onnx'): raise ImportError(name)\n"
        "sys.meta_path.insert(0, B())\n"
        "from kgedge.runtime import EdgeModel\n"
        "m = EdgeModel.load(sys.argv[1])\n"
        "print(json.dumps(m.recommend(sys.argv[2], k=5)))\n"
        "assert 'torch' not in sys.modules and 'onnx' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(archive), user], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [tuple(x) for x in json.loads(result.stdout)] == EdgeModel.load(fp32).recommend(user, k=5)


def test_full_range_int8_bundle_warns_on_x86_without_vnni(tmp_path, caplog) -> None:
    """The arm64 profile's s8 table is exact on its target; on x86 without VNNI loading it warns."""
    from kgedge.runtime.compat import _x86_without_vnni, saturation_risk

    risky = {"name": "arm64", "format": "qoperator", "weight_type": "int8", "table_bits": 8}
    safe = {"name": "x86-avx2", "format": "qoperator", "weight_type": "uint8", "table_bits": 8}
    assert saturation_risk(safe) is None
    assert (saturation_risk(risky) is not None) == _x86_without_vnni()


class _PublicOnly:
    """A session seen through onnxruntime's public API only (no binding object underneath)."""

    def __init__(self, session) -> None:  # noqa: ANN001
        self._session = session

    def io_binding(self):  # noqa: ANN201
        return self._session.io_binding()

    def run_with_iobinding(self, binding, run_options=None) -> None:  # noqa: ANN001
        self._session.run_with_iobinding(binding, run_options)


@pytest.mark.parametrize("profile", ["portable", "x86-avx2"])
def test_single_plain_queries_run_on_bindings_that_answer_like_session_run(shop, profile: str) -> None:  # noqa: ANN001
    kg, checkpoint, root = shop
    graph = EdgeModel.load(export.export_bundle(checkpoint, profile, root / f"bound-{profile}", kg=kg).path)._graph
    assert graph.plain_runs
    nothing = np.zeros((1, 0), np.int64)
    graph._run(np.array([0]), np.array([0]), 10, graph.every_type, nothing, masked=False)
    assert graph._bound.by_k == {}  # a thread's first single query makes no binding
    heads, relations = np.arange(0, kg.num_entities, 11), np.arange(2 * kg.num_relations)
    ks = (1, 10, kg.num_entities, 3, 5)  # more than BOUND_KS_PER_THREAD: the oldest binding is dropped and remade
    for k in ks:
        for head in heads:
            for relation in relations:
                want = graph.session.run(["ids", "scores"], {"head": np.array([head]), "relation": np.array([relation]),
                                                             "k": np.array([k])})
                got = graph._run(np.array([head]), np.array([relation]), k, graph.every_type, nothing, masked=False)
                for a, b in zip(got, want):
                    np.testing.assert_array_equal(a, b)
                got[0][0, 0] = -5  # the caller owns its result: the next query neither sees nor overwrites it
        assert k in graph._bound.by_k
    assert len(graph._bound.by_k) == runtime_graph.BOUND_KS_PER_THREAD
    public = runtime_graph._BoundQuery(_PublicOnly(graph.session), 4, graph._run_options)
    for head in heads:
        want = graph.session.run(["ids", "scores"], {"head": np.array([head]), "relation": np.array([1]), "k": np.array([4])})
        for a, b in zip(public.run(int(head), 1), want):
            np.testing.assert_array_equal(a, b)


def test_threads_querying_one_at_a_time_get_the_sequential_answers(shop) -> None:  # noqa: ANN001
    kg, checkpoint, root = shop
    model = EdgeModel.load(export.export_bundle(checkpoint, "x86-avx2", root / "threads", kg=kg).path)
    queries = [(h, r, k) for h in range(0, kg.num_entities, 5) for r in (0, 1) for k in (3, 8)]

    def work() -> list[tuple[list[int], list[float]]]:
        out = []
        for h, r, k in queries:
            ids, scores = model.topk(np.array([h]), np.array([r]), k)
            out.append((ids.tolist(), scores.tolist()))
        return out

    sequential = work()
    assert all(r == sequential for r in in_threads(lambda i: [work() for _ in range(3)][-1], 6))

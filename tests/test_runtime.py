"""EdgeModel against a numpy reference of the factory's tables: answers, masking, batches, seen items,
errors and threads. Torch-free: the bundle is built with onnx.helper."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from bundle_factory import RELATIONS, TinyBundle, fresh, in_threads, tiny  # noqa: F401 (fixtures)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgedge.runtime import BundleError, EdgeModel, QueryError, UnknownNameError
from kgedge.runtime import graph as runtime_graph
from kgedge.runtime.graph import TopKGraph

R = len(RELATIONS)


@pytest.fixture(scope="module")
def model(tiny: TinyBundle) -> EdgeModel:
    return EdgeModel.load(tiny.path)


def expected(tiny: TinyBundle, head: int, relation: int, k: int, allowed: np.ndarray | None = None,
             excluded: set[int] = frozenset()) -> list[int]:
    """The reference top-k ids: sort every entity by float64 score, drop masked ones, keep k."""
    scores = tiny.reference_scores(np.array([head]), np.array([relation]))[0]
    order = np.argsort(-scores, kind="stable")
    keep = [int(i) for i in order if (allowed is None or allowed[i]) and int(i) not in excluded]
    return keep[:k]


def train_tails(tiny: TinyBundle, head: int, relation: int) -> set[int]:
    t = tiny.train
    if relation < R:
        return set(t[(t[:, 0] == head) & (t[:, 1] == relation), 2].tolist())
    return set(t[(t[:, 2] == head) & (t[:, 1] == relation - R), 0].tolist())


def test_topk_equals_numpy_reference_for_every_query(tiny: TinyBundle, model: EdgeModel) -> None:
    heads, relations = np.meshgrid(np.arange(len(tiny.entities)), np.arange(2 * R), indexing="ij")
    heads, relations = heads.ravel(), relations.ravel()
    ids, scores = model.topk(heads, relations, 7)
    assert ids.shape == scores.shape == (len(heads), 7)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    reference = tiny.reference_scores(heads, relations)
    for row, (h, r) in enumerate(zip(heads, relations)):
        assert ids[row].tolist() == expected(tiny, h, r, 7)
    np.testing.assert_allclose(scores, np.take_along_axis(reference, ids, axis=1), rtol=1e-5, atol=1e-5)


def test_score_all_equals_reference(tiny: TinyBundle, model: EdgeModel) -> None:
    heads = np.repeat(np.arange(len(tiny.entities)), 2 * R)
    relations = np.tile(np.arange(2 * R), len(tiny.entities))
    scores = model.score_all(heads, relations)
    assert scores.shape == (len(heads), len(tiny.entities)) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, tiny.reference_scores(heads, relations), rtol=1e-5, atol=1e-5)


def test_answer_by_name_and_inverse_relation(tiny: TinyBundle, model: EdgeModel) -> None:
    head = tiny.entities.index("intent_1")
    got = model.answer("intent_1", "answers", k=5)
    assert [name for name, _ in got] == [tiny.entities[i] for i in expected(tiny, head, 2, 5)]
    assert all(isinstance(s, float) for _, s in got) and [s for _, s in got] == sorted((s for _, s in got), reverse=True)
    assert model.relation_id("bought^-1") == R and model.relation_name(R) == "bought^-1"
    product = tiny.entities.index("product_2")
    who = model.answer("product_2", "bought^-1", k=4)
    assert [n for n, _ in who] == [tiny.entities[i] for i in expected(tiny, product, R, 4)]
    assert model.relations == list(RELATIONS) and model.entities == tiny.entities


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_types_and_exclusion_give_exact_topk(tiny: TinyBundle, model: EdgeModel, data: st.DataObject) -> None:
    n = len(tiny.entities)
    batch = data.draw(st.integers(1, 4))
    heads = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=batch, max_size=batch)))
    relations = np.array(data.draw(st.lists(st.integers(0, 2 * R - 1), min_size=batch, max_size=batch)))
    types = data.draw(st.lists(st.sampled_from(tiny.types), min_size=1, max_size=4, unique=True))
    allowed = np.isin(tiny.entity_types, [tiny.types.index(t) for t in types])
    k = data.draw(st.integers(1, int(allowed.sum())))
    excludes = [data.draw(st.lists(st.integers(0, n - 1), max_size=12)) for _ in range(batch)]
    ids, scores = model.topk(heads, relations, k, types=types, exclude=excludes)
    reference = tiny.reference_scores(heads, relations)
    for row in range(batch):
        want = expected(tiny, heads[row], relations[row], k, allowed, set(excludes[row]))
        got = [i for i in ids[row].tolist() if i >= 0]
        assert len(got) == len(want) == min(k, int((allowed & ~np.isin(np.arange(n), excludes[row])).sum()))
        assert all(allowed[i] and i not in excludes[row] for i in got)
        # same ranking up to float32 near-ties: the score sequence matches the reference's
        np.testing.assert_allclose(reference[row, got], reference[row, want], atol=1e-4)
        assert ids[row, len(got):].tolist() == [-1] * (k - len(got))
        assert np.all(scores[row, len(got):] == -np.inf) and np.all(np.isfinite(scores[row, : len(got)]))


def test_short_rows_are_padded_not_filled_with_masked_entities(tiny: TinyBundle, model: EdgeModel) -> None:
    intents = tiny.ids_of_type("intent").tolist()  # 3 intents
    ids, scores = model.topk(np.array([0, 0]), np.array([0, 0]), 3, types="intent", exclude=[[intents[0]], []])
    assert sorted(ids[1].tolist()) == intents
    assert set(ids[0, :2].tolist()) == set(intents[1:]) and ids[0, 2] == -1 and scores[0, 2] == -np.inf


def test_recommend_never_returns_owned_items_or_other_types(tiny: TinyBundle, model: EdgeModel) -> None:
    products = set(tiny.ids_of_type("product").tolist())
    for user in tiny.ids_of_type("user"):
        name = tiny.entities[user]
        owned = train_tails(tiny, user, 0)
        got = [model.entity_id(n) for n, _ in model.recommend(name, k=12)]
        assert len(got) == len(products - owned) and set(got) == products - owned
        top3 = [model.entity_id(n) for n, _ in model.recommend(name, k=3)]
        allowed = np.isin(np.arange(len(tiny.entities)), list(products))
        assert top3 == expected(tiny, user, 0, 3, allowed, owned)
        with_seen = {model.entity_id(n) for n, _ in model.recommend(name, k=12, exclude_seen=False)}
        assert with_seen == products
        both = model.recommend(name, k=17, types=("product", "accessory"))
        assert len(both) == 17 - len(owned)
    assert sorted(model.seen("user_0")) == sorted(tiny.entities[i] for i in train_tails(tiny, 0, 0))


def test_batch_equals_single(tiny: TinyBundle, model: EdgeModel) -> None:
    queries = [("user_1", "bought"), ("accessory_2", "compatible_with"), ("product_3", "bought^-1"), ("intent_0", "answers")]
    assert model.answer_batch(queries, k=6) == [model.answer(h, r, k=6) for h, r in queries]
    users = ["user_0", "user_3", "user_5"]
    assert model.recommend_batch(users, k=5) == [model.recommend(u, k=5) for u in users]
    heads = np.array([model.entity_id(h) for h, _ in queries])
    relations = np.array([model.relation_id(r) for _, r in queries])
    ids, scores = model.topk(heads, relations, 6, exclude_seen=True)
    for row in range(len(queries)):
        one_ids, one_scores = model.topk(heads[row : row + 1], relations[row : row + 1], 6, exclude_seen=True)
        assert ids[row].tolist() == one_ids[0].tolist()
        np.testing.assert_array_equal(scores[row], one_scores[0])


def test_add_seen_persists_and_is_honoured_after_reload(fresh: TinyBundle) -> None:
    model = EdgeModel.load(fresh.path)
    before = [n for n, _ in model.recommend("user_2", k=3)]
    assert model.add_seen("user_2", before[:2]) == 2
    assert model.add_seen("user_2", before[:2]) == 0  # already recorded
    owned = [fresh.entities[i] for i in train_tails(fresh, 2, 0)]
    assert model.add_seen("user_2", owned) == 0  # already in train: not duplicated in the overlay
    after = [n for n, _ in model.recommend("user_2", k=3)]
    assert not set(before[:2]) & set(after) and after[0] == before[2]
    assert model.seen_path == fresh.path / "seen_overlay.tsv"
    lines = [line for line in model.seen_path.read_text().splitlines() if not line.startswith("#")]
    assert lines == sorted(f"user_2\tbought\t{item}" for item in before[:2])
    reloaded = EdgeModel.load(fresh.path)
    assert [n for n, _ in reloaded.recommend("user_2", k=3)] == after
    # the inverse direction is excluded too: who bought before[0] no longer lists user_2 once seen is used
    buyers = [n for n, _ in reloaded.answer(before[0], "bought^-1", k=26, exclude_seen=True)]
    assert "user_2" not in buyers
    # an inverse relation is stored as the forward fact
    new_item = next(fresh.entities[i] for i in fresh.ids_of_type("product") if i not in train_tails(fresh, 4, 0))
    assert new_item not in reloaded.seen("user_4")
    assert reloaded.add_seen(new_item, "user_4", relation="bought^-1") == 1
    assert new_item in reloaded.seen("user_4") and f"user_4\tbought\t{new_item}" in reloaded.seen_path.read_text()


def test_seen_lookup_of_one_query_equals_the_batch_path(fresh: TinyBundle) -> None:
    # one query takes a scalar search; a batch the vectorised one: same tails, overlay included
    model = EdgeModel.load(fresh.path)
    model.add_seen("user_1", [n for n, _ in model.recommend("user_1", k=2)])
    heads = np.arange(len(fresh.entities), dtype=np.int64).repeat(2 * len(RELATIONS))
    relations = np.tile(np.arange(2 * len(RELATIONS), dtype=np.int64), len(fresh.entities))
    batch = model._seen.lookup(heads, relations)
    assert sum(len(b) for b in batch) > 0
    for h, r, tails in zip(heads, relations, batch):
        np.testing.assert_array_equal(model._seen.lookup(h[None], r[None])[0], tails)


# the guard on lists (small results) and on arrays (large ones): the same drops, the same warnings
GUARD_PATHS = pytest.mark.parametrize("python_max", [1024, 0], ids=["lists", "arrays"])


@GUARD_PATHS
def test_graph_guard_drops_nan_scores(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                      python_max: int) -> None:
    monkeypatch.setattr(runtime_graph, "PYTHON_CHECK_MAX", python_max)
    class NaNSession:  # a graph whose inputs have no defaults: every run is fed every input
        def get_overridable_initializers(self):  # noqa: ANN202
            return []

        def run(self, outputs, feeds, run_options=None):  # noqa: ANN001, ANN202
            assert {"allowed_types", "exclude"} <= set(feeds)
            return np.array([[2, 0, 1]]), np.array([[np.nan, 5.0, 4.0]], dtype=np.float32)

    graph = TopKGraph(NaNSession(), np.zeros(3, dtype=np.int64), 1)  # type: ignore[arg-type]
    ids, scores = graph.topk(np.array([0]), np.array([0]), 3, np.array([True]), np.zeros((1, 0), np.int64))
    assert ids.tolist() == [[0, 1, -1]] and scores[0, :2].tolist() == [5.0, 4.0]
    assert "1 NaN scores" in caplog.text


def test_add_seen_unknown_name_changes_nothing(fresh: TinyBundle) -> None:
    model = EdgeModel.load(fresh.path)
    with pytest.raises(UnknownNameError, match="product_1"):
        model.add_seen("user_1", ["product_1", "prodcut_1"])
    assert not model.seen_path.exists()


@pytest.mark.parametrize(("line", "message"), [
    ("user_0\tbought", "expected head<TAB>relation<TAB>tail"),
    ("user_0\tbougth\tproduct_1", "unknown relation 'bougth'; did you mean 'bought'"),
    ("user_0\tbought\tproduct_99", "unknown entity 'product_99'"),
    ("user_0\tbought^-1\tproduct_1", "unknown relation 'bought^-1'"),
])
def test_bad_overlay_line_is_refused_naming_file_and_line(fresh: TinyBundle, line: str, message: str) -> None:
    (fresh.path / "seen_overlay.tsv").write_text(f"# comment\nuser_1\tbought\tproduct_2\n{line}\n")
    with pytest.raises(BundleError, match=r"seen_overlay\.tsv:3: ") as err:
        EdgeModel.load(fresh.path)
    assert message in str(err.value)


def test_unknown_names_suggest_close_matches(model: EdgeModel) -> None:
    with pytest.raises(UnknownNameError, match=r"unknown entity 'usr_1'; did you mean 'user_1'") as err:
        model.answer("usr_1", "bought")
    assert err.value.suggestions[0] == "user_1" and isinstance(err.value, ValueError)
    with pytest.raises(UnknownNameError, match="did you mean 'compatible_with'"):
        model.answer("user_1", "compatible")
    with pytest.raises(UnknownNameError, match="unknown type 'products'; did you mean 'product'"):
        model.recommend("user_1", types=["products"])


@pytest.mark.parametrize(("call", "message"), [
    (lambda m: m.answer("user_1", "bought", k=0), "k=0 must be at least 1"),
    (lambda m: m.answer("user_1", "bought", k=27), "k=27 is more than the 26 entities"),
    (lambda m: m.recommend("user_1", k=13), r"k=13 is more than the 12 entities of types \['product'\]"),
    (lambda m: m.answer("user_1", "bought", k=2.0), "k must be an int"),
    (lambda m: m.topk(np.array([26]), np.array([0]), 3), "heads contains id 26, out of range; valid ids are 0..25"),
    (lambda m: m.topk(np.array([-1]), np.array([0]), 3), "heads contains id -1"),
    (lambda m: m.topk(np.array([0]), np.array([6]), 3), "relations contains id 6, out of range; valid ids are 0..5"),
    (lambda m: m.topk(np.array([0.0]), np.array([0]), 3), "heads must be integer ids"),
    (lambda m: m.topk(np.array([True]), np.array([0]), 3), "heads must be integer ids"),
    (lambda m: m.topk(np.array([], dtype=np.int64), np.array([], dtype=np.int64), 3), "heads is empty"),
    (lambda m: m.topk(np.array([[0]]), np.array([[0]]), 3), "must be 1-D"),
    (lambda m: m.topk(np.array([0, 1]), np.array([0]), 3), "same length"),
    (lambda m: m.topk(np.array([0]), np.array([0]), 3, exclude=[[26]]), "exclude holds ids outside"),
    (lambda m: m.topk(np.array([0]), np.array([0]), 3, exclude=np.zeros((2, 1), np.int64)), "exclude must have shape"),
    (lambda m: m.score_all(np.array([0]), np.array([0.5])), "relations must be integer ids"),
    (lambda m: m.answer_batch([], k=3), "queries is empty"),
    (lambda m: m.entity_name(26), "entity id 26 out of range"),
])
def test_bad_queries_raise_query_error(model: EdgeModel, call, message: str) -> None:  # noqa: ANN001
    with pytest.raises(QueryError, match=message):
        call(model)


@GUARD_PATHS
def test_graph_guard_drops_what_a_faulty_graph_leaks(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                                     python_max: int) -> None:
    monkeypatch.setattr(runtime_graph, "PYTHON_CHECK_MAX", python_max)
    class LeakySession:  # returns an excluded id (3) and a disallowed one (1) with finite scores
        def get_overridable_initializers(self):  # noqa: ANN202 (a graph whose inputs have defaults)
            return [SimpleNamespace(name=name) for name in ("allowed_types", "exclude", "masked")]

        def run(self, outputs, feeds, run_options=None):  # noqa: ANN001, ANN202
            assert feeds["masked"]  # the masks were asked for
            return np.array([[3, 1, 0, 2]]), np.array([[9.0, 8.0, 7.0, 6.0]], dtype=np.float32)

    graph = TopKGraph(LeakySession(), np.array([0, 1, 0, 0]), 2)  # type: ignore[arg-type]
    ids, scores = graph.topk(np.array([0]), np.array([0]), 4, np.array([True, False]), np.array([[3, -1]]))
    assert ids.tolist() == [[0, 2, -1, -1]] and scores[0, :2].tolist() == [7.0, 6.0]
    assert "masking is wrong" in caplog.text


def test_session_overrides(tiny: TinyBundle) -> None:
    model = EdgeModel.load(tiny.path, intra_op_threads=2, graph_optimization_level="disable")
    assert (model.settings.intra_op_threads, model.settings.inter_op_threads) == (2, 1)
    assert model.settings.graph_optimization_level == "disable"
    assert model.answer("user_1", "bought", k=4) == EdgeModel.load(tiny.path).answer("user_1", "bought", k=4)
    with pytest.raises(ValueError, match="graph_optimization_level='fast' is invalid; allowed: disable"):
        EdgeModel.load(tiny.path, graph_optimization_level="fast")  # type: ignore[arg-type]


def test_threads_get_the_same_answers_as_sequential_calls(fresh: TinyBundle) -> None:
    model = EdgeModel.load(fresh.path)
    users = [e for e in fresh.entities if e.startswith("user_")]
    heads = np.arange(len(fresh.entities))

    def work() -> list[object]:
        out: list[object] = []
        for _ in range(5):
            out += [model.answer(e, r, k=5) for e in fresh.entities[::3] for r in ("bought", "answers^-1")]
            out += [model.recommend(u, k=4, exclude_seen=False) for u in users]
            out.append(model.topk(heads, np.zeros_like(heads), 8)[0].tolist())
        return out

    sequential = work()

    def run(i: int) -> list[object]:
        answers = work()
        model.add_seen(users[i % len(users)], [f"product_{i}"])  # concurrent overlay writes
        return answers

    assert all(r == sequential for r in in_threads(run, 8))
    reloaded = EdgeModel.load(fresh.path)
    for i in range(8):
        assert f"product_{i}" in reloaded.seen(users[i % len(users)])


def test_loading_a_missing_path_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such bundle"):
        EdgeModel.load(tmp_path / "nope")


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_the_guard_on_lists_equals_the_guard_on_arrays(data: st.DataObject) -> None:
    """Whatever a graph returns (masked -inf, NaN, +inf, disallowed or excluded ids), both versions of the
    guard keep the same results in the same order."""
    n, b, k = 12, data.draw(st.integers(1, 4)), data.draw(st.integers(1, 6))
    types = np.array(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    allowed = np.array(data.draw(st.lists(st.booleans(), min_size=3, max_size=3)))
    ids = np.array(data.draw(st.lists(st.lists(st.integers(0, n - 1), min_size=k, max_size=k), min_size=b, max_size=b)))
    values = st.sampled_from([1.0, 0.5, -2.0, np.inf, -np.inf, np.nan])
    scores = np.array(data.draw(st.lists(st.lists(values, min_size=k, max_size=k), min_size=b, max_size=b)), np.float32)
    exclude = np.array(data.draw(st.lists(st.lists(st.integers(-1, n - 1), min_size=2, max_size=2), min_size=b, max_size=b)))

    class Fixed:
        def get_overridable_initializers(self):  # noqa: ANN202
            return []

        def run(self, outputs, feeds, run_options=None):  # noqa: ANN001, ANN202
            return ids.copy(), scores.copy()

    graph = TopKGraph(Fixed(), types, 3)  # type: ignore[arg-type]
    restricted = allowed if not allowed.all() else graph.every_type
    heads = np.zeros(b, np.int64)
    on_lists = graph.topk(heads, heads, k, restricted, exclude)
    saved = runtime_graph.PYTHON_CHECK_MAX
    runtime_graph.PYTHON_CHECK_MAX = 0
    try:
        on_arrays = graph.topk(heads, heads, k, restricted, exclude)
    finally:
        runtime_graph.PYTHON_CHECK_MAX = saved
    np.testing.assert_array_equal(on_lists[0], on_arrays[0])
    np.testing.assert_array_equal(on_lists[1], on_arrays[1])
    assert on_lists[0].dtype == np.int64 and on_lists[1].dtype == np.float32


def test_type_masks_are_cached_per_set_of_names_and_answers_stay_the_same(fresh: TinyBundle) -> None:
    model = EdgeModel.load(fresh.path)
    heads, relations = np.array([0, 1]), np.array([0, 0])
    first = model.topk(heads, relations, 3, types=["product", "intent"])
    again = model.topk(heads, relations, 3, types=("product", "intent"))  # the cached mask
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert model.topk(heads, relations, 2, types="intent")[0].max() in fresh.ids_of_type("intent")
    mask = model.allowed_types(["product"])  # the public mask is the caller's own: writable, not the cache
    mask[:] = True
    np.testing.assert_array_equal(model.topk(heads, relations, 3, types=["product"])[0] >= 0, True)
    assert set(model.topk(heads, relations, 3, types=["product"])[0].ravel().tolist()) <= set(fresh.ids_of_type("product").tolist())
    with pytest.raises(QueryError, match="unknown type"):
        model.topk(heads, relations, 3, types=["product", "prodcut"])
    with pytest.raises(QueryError):
        model.topk(heads, relations, 3, types=[["product"]])  # a name that is not a str (unhashable)

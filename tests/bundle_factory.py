"""A tiny hand-built fp32 DistMult-like bundle that follows the bundle contract exactly.

Runtime tests use it so that they need neither torch nor the exporter: the graph is written with
``onnx.helper`` and the numpy tables it holds are returned, so that tests can compute reference
scores independently of onnxruntime.

Graph (shapes with ``B`` queries, ``D`` dims, ``N`` entities, ``T`` types, ``X`` exclusions)::

    h = Transpose(Gather(E[D, N], head, axis=1))          # (B, D)
    r = Gather(Rel[2R, D], relation)                        # (B, D)
    s = MatMul(h * r, E)                                    # (B, N)
    s = Where(Gather(allowed_types, entity_types), s, -inf)
    s = ScatterElements(s, Where(exclude>=0, exclude, 0),
                        Where(exclude>=0, -inf, +inf), axis=1, reduction="min")
    scores, ids = TopK(s, k)
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kgedge.data.index import KnownTails

TYPES = ("user", "product", "accessory", "intent")
RELATIONS = ("bought", "compatible_with", "answers")
COUNTS = {"user": 6, "product": 12, "accessory": 5, "intent": 3}
INPUTS = ["head", "relation", "k", "allowed_types", "exclude"]
OUTPUTS = ["ids", "scores"]
OPSET = 18


@dataclass(frozen=True, eq=False)
class TinyBundle:
    """What the factory wrote, with the tables needed for a numpy reference.

    Attributes:
        path: the bundle directory.
        entity_table: shape ``(N, D)`` float32.
        relation_table: shape ``(2R, D)`` float32; row ``r + R`` is the inverse of ``r``.
        train: shape ``(n, 3)`` int64 data triples (no reciprocals).
    """

    path: Path
    entities: list[str]
    relations: list[str]
    types: list[str]
    entity_types: np.ndarray
    entity_table: np.ndarray
    relation_table: np.ndarray
    train: np.ndarray

    def reference_scores(self, heads: np.ndarray, relations: np.ndarray) -> np.ndarray:
        """DistMult scores in float64, shape ``(B, N)``."""
        query = self.entity_table[heads].astype(np.float64) * self.relation_table[relations]
        return query @ self.entity_table.T.astype(np.float64)

    def ids_of_type(self, *names: str) -> np.ndarray:
        wanted = [self.types.index(n) for n in names]
        return np.flatnonzero(np.isin(self.entity_types, wanted))


def _graph(entity_table: np.ndarray, relation_table: np.ndarray, entity_types: np.ndarray) -> onnx.ModelProto:
    num_types = int(entity_types.max()) + 1
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(entity_table.T), "E"),
        numpy_helper.from_array(relation_table, "R"),
        numpy_helper.from_array(entity_types.astype(np.int64), "entity_types"),
        numpy_helper.from_array(np.array(-np.inf, dtype=np.float32), "neg_inf"),
        numpy_helper.from_array(np.array(np.inf, dtype=np.float32), "pos_inf"),
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
    ]
    nodes = [
        helper.make_node("Gather", ["E", "head"], ["h_cols"], axis=1),
        helper.make_node("Transpose", ["h_cols"], ["h"], perm=[1, 0]),
        helper.make_node("Gather", ["R", "relation"], ["r"], axis=0),
        helper.make_node("Mul", ["h", "r"], ["q"]),
        helper.make_node("MatMul", ["q", "E"], ["raw"]),
        helper.make_node("Gather", ["allowed_types", "entity_types"], ["allowed"], axis=0),
        helper.make_node("Where", ["allowed", "raw", "neg_inf"], ["typed"]),
        helper.make_node("GreaterOrEqual", ["exclude", "zero"], ["valid"]),
        helper.make_node("Where", ["valid", "exclude", "zero"], ["ex_idx"]),
        helper.make_node("Where", ["valid", "neg_inf", "pos_inf"], ["ex_val"]),
        helper.make_node("ScatterElements", ["typed", "ex_idx", "ex_val"], ["masked"], axis=1, reduction="min"),
        helper.make_node("TopK", ["masked", "k"], ["scores", "ids"], axis=1, largest=1, sorted=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_distmult",
        [
            helper.make_tensor_value_info("head", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("relation", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("k", TensorProto.INT64, [1]),
            helper.make_tensor_value_info("allowed_types", TensorProto.BOOL, [num_types]),
            helper.make_tensor_value_info("exclude", TensorProto.INT64, ["batch", "num_exclude"]),
        ],
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "k_out"]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "k_out"]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _train_triples(rng: np.random.Generator, types: np.ndarray) -> np.ndarray:
    def of(name: str) -> np.ndarray:
        return np.flatnonzero(types == TYPES.index(name))

    rows = []
    for user in of("user"):  # every user bought 2-4 products/accessories
        items = rng.choice(np.concatenate([of("product"), of("accessory")]), size=rng.integers(2, 5), replace=False)
        rows += [(user, 0, item) for item in items]
    for accessory in of("accessory"):
        rows += [(accessory, 1, p) for p in rng.choice(of("product"), size=2, replace=False)]
    for intent in of("intent"):
        rows += [(intent, 2, p) for p in rng.choice(of("product"), size=3, replace=False)]
    return np.array(rows, dtype=np.int64)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_bundle(out: Path, *, dim: int = 8, seed: int = 0) -> TinyBundle:
    """Write a complete bundle directory to ``out`` (created) and return its tables."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entities, type_ids = [], []
    for type_id, name in enumerate(TYPES):
        entities += [f"{name}_{i}" for i in range(COUNTS[name])]
        type_ids += [type_id] * COUNTS[name]
    entity_types = np.array(type_ids, dtype=np.int32)
    n, r = len(entities), len(RELATIONS)
    entity_table = rng.normal(size=(n, dim)).astype(np.float32)
    relation_table = rng.normal(size=(2 * r, dim)).astype(np.float32)
    train = _train_triples(rng, entity_types)

    onnx.save(_graph(entity_table, relation_table, entity_types), out / "model.onnx")
    (out / "entities.txt").write_text("".join(f"{e}\n" for e in entities), encoding="utf-8")
    (out / "relations.txt").write_text("".join(f"{x}\n" for x in RELATIONS), encoding="utf-8")
    np.save(out / "entity_types.npy", entity_types, allow_pickle=False)
    both = np.concatenate([train, np.stack([train[:, 2], train[:, 1] + r, train[:, 0]], axis=1)])
    known = KnownTails(both, 2 * r)
    np.save(out / "known_keys.npy", known.keys.astype(np.int64), allow_pickle=False)
    np.save(out / "known_offsets.npy", known.offsets.astype(np.int64), allow_pickle=False)
    np.save(out / "known_tails.npy", known.tails.astype(np.int64), allow_pickle=False)
    manifest = {
        "format": "kgedge-bundle",
        "format_version": 1,
        "kgedge_version": "0.0.0+test",
        "created_utc": "2026-01-01T00:00:00Z",
        "model": {"name": "distmult", "dim": dim, "interaction": "dot", "config": {"model": "distmult", "dim": dim}},
        "num_entities": n,
        "num_relations": r,
        "types": list(TYPES),
        "profile": {"name": "fp32-test", "quantize": False},
        "session": {"intra_op_num_threads": 1, "inter_op_num_threads": 1, "graph_optimization_level": "all"},
        "graph": {"opset": OPSET, "inputs": INPUTS, "outputs": OUTPUTS},
        "files": {},
        "sizes": {"table_bytes": int(entity_table.nbytes), "bundle_bytes": 0},
        "validation": {},
    }
    write_manifest(out, manifest)
    return TinyBundle(out, entities, list(RELATIONS), list(TYPES), entity_types, entity_table, relation_table, train)


def write_manifest(bundle: Path, manifest: dict, *, rehash: bool = True) -> None:
    """Write ``manifest.json``; with ``rehash`` the files entry covers every other regular file."""
    if rehash:
        names = sorted(p.name for p in bundle.iterdir() if p.is_file() and p.name != "manifest.json"
                       and not p.name.startswith("seen_overlay"))
        manifest["files"] = {name: {"sha256": sha256(bundle / name), "bytes": (bundle / name).stat().st_size}
                             for name in names}
        manifest["sizes"]["bundle_bytes"] = sum(f["bytes"] for f in manifest["files"].values())
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def edit_manifest(bundle: Path, change: Callable[[dict], None], *, rehash: bool = False) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    change(manifest)
    write_manifest(bundle, manifest, rehash=rehash)


def make_archive(bundle: Path, out: Path, *, top_dir: bool = True) -> Path:
    """Pack ``bundle`` as ``.tar``/``.tar.gz`` (chosen by ``out``'s suffix); with or without a top folder."""
    mode = "w:gz" if out.name.endswith((".tar.gz", ".tgz")) else "w"
    with tarfile.open(out, mode) as tar:
        for path in sorted(bundle.iterdir()):
            tar.add(path, arcname=f"{bundle.name}/{path.name}" if top_dir else path.name)
    return out


# -- pytest fixtures, imported by the runtime test modules (no conftest.py, so as not to collide) --


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyBundle:
    """A bundle shared by tests that do not modify its files."""
    return build_bundle(tmp_path_factory.mktemp("bundles") / "tiny")


@pytest.fixture()
def fresh(tmp_path: Path) -> TinyBundle:
    """A bundle of the test's own, to modify."""
    return build_bundle(tmp_path / "bundle")


def in_threads(work: Callable[[int], object], count: int) -> list[object]:
    """``work(i)`` for ``i`` in ``0..count-1``, each in a thread of its own, all released at once by a
    barrier; the results in order (an exception in a thread is raised here)."""
    barrier = threading.Barrier(count)

    def run(i: int) -> object:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))

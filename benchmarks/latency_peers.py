"""Single-query latency of kgedge bundles beside their peers, against the machine's physical limit.

One run, one thread everywhere (an edge query; torch, BLAS and onnxruntime pinned to 1 thread), the
same queries for every variant, variants interleaved round by round so that the noise of a shared
machine falls on all of them alike; medians, and ratios taken within the run.

Configurations:
* trained (accuracy beside speed): a ComplEx teacher (dim 128, 256 reals per row) trained briefly on
  UMLS and on the demo shop KG, and its student made by the ``default`` compression recipe (distil
  to dim 24 + int8 QAT). MRR / Hits@10 (and Recall@10 of ``bought`` on the demo KG) per variant.
* random tables (pure speed, no accuracy): DistMult tables drawn at random, N from 14,541 to 1M at
  64 reals per row, and 32-256 reals at N = 100k; six entity types laid out in id runs like the demo
  KG's. Their int8 bundles are exported with the top-k overlap threshold switched off (random scores
  are near-ties); the measured overlap is reported all the same.

Variants: torch eager (teacher, student), the bundle through ``EdgeModel.topk`` (what a device
calls) and through a bare ``session.run`` (the graph alone), fp32 (``portable``) and int8 (every
profile this CPU runs), numpy (``E @ q`` + argpartition), PyKEEN's ``score_t`` + topk and
``predict_target`` when ``pykeen`` is importable, and prototypes of the int8 graph. At N = 14,541 the
same model class on both sides too: for ComplEx, RotatE and TransE (L1), kgedge's int8 bundle of a random
64-real student of the class beside PyKEEN serving the class at dim 256 (the teacher it was compressed from).

The limit: bytes of the entity table (int8 codes + scales, or fp32) / streaming read bandwidth of
one core (numpy over 256 MiB, timed in the same rounds) + onnxruntime TopK over N scores + one
``session.run`` call. Plus ``kgedge bench`` in a subprocess per bundle for memory and load time.

    python benchmarks/latency_peers.py            # ~15 min on 2 cores the first time, ~8 min once .cache/ holds models
    .cache/pykeen-venv/bin/python benchmarks/latency_peers.py   # with the PyKEEN rows (see README)
    python benchmarks/latency_peers.py --quick    # a smoke run (~4 min): fewer sizes, shorter training
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy and torch load their thread pools

import argparse
import dataclasses
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import latency_limits as limits
import latency_report
from kgedge.bench import read_bandwidth
from kgedge.bench.machine import machine_info
from kgedge.data.sources import load_data
from kgedge.evaluate import evaluate_link_prediction, recommendation_metrics
from kgedge.export import export_bundle, resolve_profile
from kgedge.export import graph as export_graph
from kgedge.export.bundle import graph_spec
from kgedge.export.graph import build_graph, scored_bytes
from kgedge.export.profile import available_profiles, cpu_supports, load_profile
from kgedge.models import ModelConfig, build, resolve
from kgedge.quantization import stored_bytes
from kgedge.runtime import EdgeModel
from kgedge.train.checkpoint import Checkpoint, Vocabulary, load_checkpoint, save_checkpoint
from kgedge.train.config import default_model_options, default_train_config
from kgedge.train.scorer import model_scorer
from kgedge.train.trainer import train_model

torch.set_num_threads(1)
log = logging.getLogger("latency_peers")
REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "latency_peers"
RESULTS = REPO / "benchmarks" / "results"
K = 10
QUERIES = 512
NUM_RELATIONS = 8
# the width of the teachers the compression issue measures against (dim 256, fp32): what PyKEEN would serve
TEACHER_WIDTH = 256
# the same model class on both sides (N = 14,541): kgedge serves an int8 student of the configuration's width
# (reals per row), PyKEEN the class at dim TEACHER_WIDTH (PyKEEN's dim counts complex numbers, as kgedge's does)
SAME_CLASS = {"complex": "ComplEx", "rotate": "RotatE", "transe": "TransE"}
# the demo KG's type shares; ids sorted by name put each type in one run
TYPE_SHARES = {"accessory": 0.10, "brand": 0.02, "category": 0.01, "intent": 0.07, "product": 0.35, "user": 0.45}
DRAM_BUFFER = 256 << 20


@dataclass
class Variant:
    """One way of answering a query: ``run(i)`` answers query ``i`` (top-10)."""

    name: str
    family: str  # torch | onnx | numpy | pykeen | prototype | limit
    run: Callable[[int], object]
    model: str = ""  # teacher | student | random
    precision: str = ""  # fp32 | int8
    table_bytes: int | None = None
    scorer: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    note: str = ""


@dataclass
class ConfigResult:
    name: str
    kind: str
    num_entities: int
    width: int
    rows: list[dict[str, object]] = field(default_factory=list)
    limit: dict[str, float] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)
    checks: dict[str, object] = field(default_factory=dict)
    bundles: dict[str, str] = field(default_factory=dict)
    op_profiles: dict[str, dict[str, float]] = field(default_factory=dict)


# -- models and bundles -------------------------------------------------------------------------------


def random_checkpoint(n: int, width: int, seed: int = 0, model_name: str = "distmult") -> Checkpoint:
    """A ``model_name`` model with random tables of ``width`` reals per entity row (complex models: ``width / 2``
    complex dimensions), with the model's default options (TransE: the L1 distance)."""
    rng = np.random.default_rng(seed)
    counts = {t: int(share * n) for t, share in TYPE_SHARES.items()}
    counts["user"] += n - sum(counts.values())
    names, types = [], []
    for type_id, (name, count) in enumerate(counts.items()):
        names += [f"{name}_{i:07d}" for i in range(count)]
        types += [type_id] * count
    dim = width // 2 if resolve(model_name).complex_valued else width
    options = default_model_options(model_name).get("options", {})
    model = build(ModelConfig(model_name, n, 2 * NUM_RELATIONS, dim=dim, options=options))
    with torch.no_grad():
        for table in (model.entity.weight, model.relation.weight):
            table.copy_(torch.from_numpy(rng.normal(size=tuple(table.shape)).astype(np.float32)))
    vocab = Vocabulary(names, [f"r{i}" for i in range(NUM_RELATIONS)], np.array(types, np.int64), list(counts))
    return Checkpoint(model.eval(), vocab, {"data": f"random-{n}", "model": model_name})


def trained_checkpoints(dataset: str, budget_s: float) -> tuple[Checkpoint, Checkpoint]:
    """A ComplEx teacher (dim 128) and its ``default``-recipe student, trained once and cached."""
    from kgedge.compress.pipeline import run_recipe
    from kgedge.compress.recipe import load_recipe

    kg = load_data(dataset)
    teacher_path = CACHE / f"{dataset}-{budget_s:.0f}s-teacher.ckpt"
    student_path = CACHE / f"{dataset}-{budget_s:.0f}s-student.ckpt"
    if not teacher_path.is_file():
        config = default_train_config("complex", max_time_s=budget_s, seed=0, eval_every=2)
        train_model(kg, ModelConfig("complex", kg.num_entities, 2 * kg.num_relations, dim=128), config, out=teacher_path)
    teacher = load_checkpoint(teacher_path)
    if not student_path.is_file():
        result = run_recipe(teacher.model, kg, load_recipe("default"), seed=0, max_time_s=budget_s / 2)
        save_checkpoint(student_path, result.model, Vocabulary.of(kg), {"data": kg.name, "recipe": "default"})
    return teacher, load_checkpoint(student_path)


def bundle_for(checkpoint: Checkpoint, profile_name: str, path: Path, kg, random_tables: bool) -> tuple[Path, dict]:  # noqa: ANN001
    """Export (once; cached) and return the bundle directory and its manifest."""
    if not (path / "manifest.json").is_file():
        profile = resolve_profile(profile_name)
        if random_tables and profile.quantized:  # random scores are near-ties: measure, do not gate
            profile = dataclasses.replace(profile, validation=dataclasses.replace(profile.validation, min_topk_overlap=0.0))
        export_bundle(checkpoint, profile, path, kg=kg, overwrite=True)
    return path, json.loads((path / "manifest.json").read_text())


def int8_profiles() -> list[str]:
    return [name for name, p in available_profiles().items()
            if (prof := load_profile(p)).quantized and prof.table_bits == 8 and cpu_supports(prof)]


# -- variants -----------------------------------------------------------------------------------------


def torch_variant(name: str, model, heads: np.ndarray, relations: np.ndarray, role: str) -> Variant:  # noqa: ANN001
    h = [torch.tensor([x]) for x in heads]
    r = [torch.tensor([x]) for x in relations]

    def run(i: int) -> object:
        with torch.inference_mode():
            return torch.topk(model.score_all_tails(h[i], r[i]), K, dim=1).indices

    rows, width = model.entity_table().shape
    return Variant(name, "torch", run, role, "fp32", rows * width * 4, model_scorer(model))


def numpy_tables(checkpoint: Checkpoint) -> tuple[np.ndarray, np.ndarray, str]:
    spec = graph_spec(checkpoint)
    return np.ascontiguousarray(spec.entity_table), spec.relation_table, spec.model


def numpy_query(entity: np.ndarray, relation: np.ndarray, model: str, heads: np.ndarray, relations: np.ndarray) -> np.ndarray:
    h, r = entity[heads], relation[relations]
    if model == "distmult":
        return h * r
    if model == "complex":
        half = h.shape[1] // 2
        h_re, h_im, r_re, r_im = h[:, :half], h[:, half:], r[:, :half], r[:, half:]
        return np.concatenate([h_re * r_re - h_im * r_im, h_re * r_im + h_im * r_re], axis=1)
    raise ValueError(f"numpy variant: no query for {model!r}")


def numpy_variant(checkpoint: Checkpoint, heads: np.ndarray, relations: np.ndarray, role: str) -> Variant:
    entity, relation, model = numpy_tables(checkpoint)

    def run(i: int) -> np.ndarray:
        q = numpy_query(entity, relation, model, heads[i:i + 1], relations[i:i + 1])[0]
        scores = entity @ q
        top = np.argpartition(-scores, K - 1)[:K]
        return top[np.argsort(-scores[top])]

    def scorer(h: np.ndarray, r: np.ndarray) -> np.ndarray:
        return numpy_query(entity, relation, model, h, r) @ entity.T

    return Variant(f"numpy {role} fp32", "numpy", run, role, "fp32", entity.nbytes, scorer)


def edge_variants(label: str, path: Path, manifest: dict, heads: np.ndarray, relations: np.ndarray, role: str,
                  precision: str) -> list[Variant]:
    """The bundle through EdgeModel.topk and through a bare session.run of the same graph."""
    model = EdgeModel.load(path, intra_op_threads=1)
    raw = limits.session((path / "model.onnx").read_bytes())
    feeds = [limits.bundle_feeds(int(h), int(r), K) for h, r in zip(heads, relations)]
    one_h = [heads[i:i + 1] for i in range(len(heads))]
    one_r = [relations[i:i + 1] for i in range(len(heads))]
    # what one query reads: the manifest says (block-scaled tables carry no per-row scales); older bundles do not
    table = manifest["sizes"].get("scored_bytes_per_query") or stored_bytes(
        manifest["num_entities"], _width(manifest), 8 if precision == "int8" else None)
    return [
        Variant(f"onnx {role} {label} (EdgeModel)", "onnx", lambda i: model.topk(one_h[i], one_r[i], K), role, precision,
                table, model.score_all),
        Variant(f"onnx {role} {label} (session.run)", "onnx-raw", lambda i: raw.run(["ids"], feeds[i]), role, precision, table),
    ]


def _width(manifest: dict) -> int:
    dim = manifest["model"]["dim"]
    return 2 * dim if manifest["model"]["name"] in ("complex", "rotate") else dim


def pykeen_variants(n: int, width: int, heads: np.ndarray, relations: np.ndarray,
                    suffix: str = "", model_class: str = "DistMult", predict: bool = True) -> tuple[list[Variant], str]:
    """PyKEEN's ``model_class`` at ``embedding_dim=width``: raw ``score_t`` + topk, and ``predict_target``.

    ``suffix`` tells the variants apart when the same configuration times PyKEEN at two widths."""
    try:
        import pykeen
        import pykeen.models
        from pykeen.predict import predict_target
        from pykeen.triples import CoreTriplesFactory
    except ImportError as err:
        return [], f"pykeen not importable ({err}); run with .cache/pykeen-venv/bin/python (benchmarks/README.md)"
    rng = np.random.default_rng(0)
    triples = torch.as_tensor(np.stack([rng.integers(0, n, 1000), rng.integers(0, NUM_RELATIONS, 1000),
                                        rng.integers(0, n, 1000)], axis=1))
    factory = CoreTriplesFactory.create(mapped_triples=triples, num_entities=n, num_relations=NUM_RELATIONS)
    model = getattr(pykeen.models, model_class)(triples_factory=factory, embedding_dim=width, random_seed=0).eval()
    hr = [torch.tensor([[int(h) % n, int(r) % NUM_RELATIONS]]) for h, r in zip(heads, relations)]

    def raw(i: int) -> object:
        with torch.inference_mode():
            return torch.topk(model.score_t(hr[i]), K, dim=1).indices

    def predict_one(i: int) -> object:
        return predict_target(model=model, head=int(hr[i][0, 0]), relation=int(hr[i][0, 1]),
                              triples_factory=factory).df.head(K)

    version = getattr(pykeen, "__version__", None) or pykeen.get_version()
    note = f"pykeen {version} {model_class} dim {width}, random init"
    table = sum(p.numel() * p.element_size() for p in model.entity_representations.parameters())
    variants = [Variant(f"pykeen score_t + topk{suffix}", "pykeen", raw, "random", "fp32", table, note=note)]
    if predict:
        variants.append(Variant(f"pykeen predict_target{suffix}", "pykeen", predict_one, "random", "fp32", table, note=note))
    return variants, note


def same_class_variants(n: int, width: int, heads: np.ndarray, relations: np.ndarray, tag: str,
                        result: ConfigResult) -> list[Variant]:
    """For each class of ``SAME_CLASS``: kgedge's int8 bundle of a random ``width``-real student of that class
    (EdgeModel) and PyKEEN serving the class at dim ``TEACHER_WIDTH`` (score_t + topk), on the same queries.

    The speedup over PyKEEN's raw scoring "for the same model" depends on the class: PyKEEN scores DistMult with
    one product, but ComplEx, RotatE and TransE through broadcast interactions."""
    variants: list[Variant] = []
    profile = int8_profiles()[0]
    one = [(heads[i:i + 1], relations[i:i + 1]) for i in range(len(heads))]
    for name, pykeen_class in SAME_CLASS.items():
        pk, note = pykeen_variants(n, TEACHER_WIDTH, heads, relations, suffix=f" {pykeen_class} (d={TEACHER_WIDTH})",
                                   model_class=pykeen_class, predict=False)
        if not pk:
            return []
        checkpoint = random_checkpoint(n, width, model_name=name)
        path, manifest = bundle_for(checkpoint, profile, CACHE / "bundles" / f"{tag}-{name}-{profile}", None, True)
        model = EdgeModel.load(path, intra_op_threads=1)
        variants.append(Variant(f"kgedge {pykeen_class} int8 {profile}, {width} reals (EdgeModel)", "same-class",
                                lambda i, m=model: m.topk(*one[i], K), "random", "int8",
                                manifest["sizes"].get("scored_bytes_per_query")))
        variants += pk
        result.checks[f"same class {pykeen_class}"] = f"kgedge {name}, {width} reals per row, int8 {profile}; {note}"
    return variants


def prototype_variants(checkpoint: Checkpoint, models: dict, heads: np.ndarray, relations: np.ndarray,
                       bundles: dict, result: ConfigResult) -> list[Variant]:
    """Diagnostics of the shipped int8 graph: the same graph at onnxruntime level basic, and the graph
    as shipped before block scales (one scale per row: a Cast and a Mul over all N products per query),
    with the share of top-10 ids each has in common with the bundle's."""
    spec = graph_spec(checkpoint)
    out = []
    for profile_name in int8_profiles():
        profile = resolve_profile(profile_name)
        reference = models[f"random/{profile_name}"].topk(heads[:64], relations[:64], K)[0]
        graphs = (  # (label, graph, onnxruntime level, bytes a query of that graph reads)
            ("graph: exported, onnxruntime level basic", build_graph(spec, profile), "basic", scored_bytes(spec, profile)),
            ("graph: per-row scales (as before block scales)", per_row_graph(spec, profile), "all",
             stored_bytes(*spec.entity_table.shape, 8)),
        )
        feeds = [limits.bundle_feeds(int(h), int(r), K) for h, r in zip(heads, relations)]
        for label, model, level, read in graphs:
            s = limits.session(model.SerializeToString(), level=level)
            got = np.concatenate([s.run(["ids"], feeds[i])[0] for i in range(64)])
            result.checks[f"{label} ({profile_name}): top-{K} ids shared with the bundle's"] = float(np.mean(
                [len(set(a) & set(b)) / K for a, b in zip(got, reference)]))
            out.append(Variant(f"{label} ({profile_name}, session.run)", "prototype",
                               lambda i, s=s: s.run(["ids"], feeds[i]), "random", "int8", read))
    return out


def per_row_graph(spec, profile):  # noqa: ANN001, ANN201
    """The shipped graph with block scales switched off (one scale per row, products scaled in float)."""
    saved = export_graph.block_scaled
    export_graph.block_scaled = lambda spec, profile: False
    try:
        return build_graph(spec, profile)
    finally:
        export_graph.block_scaled = saved


def profile_operators(checkpoint: Checkpoint, heads: np.ndarray, relations: np.ndarray, result: ConfigResult) -> None:
    """Per-operator time (onnxruntime's profiler) of the shipped int8 graph at levels all and basic."""
    spec = graph_spec(checkpoint)
    feeds = [limits.bundle_feeds(int(h), int(r), K) for h, r in zip(heads[:32], relations[:32])]
    for profile_name in int8_profiles():
        profile = resolve_profile(profile_name)
        shipped = build_graph(spec, profile).SerializeToString()
        per_row = per_row_graph(spec, profile).SerializeToString()
        for label, model, level in (("shipped, level all", shipped, "all"), ("shipped, level basic", shipped, "basic"),
                                    ("per-row scales, level all", per_row, "all")):
            result.op_profiles[f"{profile_name}: {label}"] = limits.op_profile(model, feeds, level=level)


def limit_variants(n: int, width: int, num_types: int, buffer: np.ndarray) -> list[Variant]:
    """The limit's parts, timed in the same rounds as the variants: DRAM streaming read (three numpy
    kernels, the fastest counts), TopK over N and over k (its call floor), a bare ``session.run`` call,
    and a read of a buffer the size of the int8 table (in cache when it fits)."""
    rng = np.random.default_rng(1)
    rows = [rng.normal(size=(1, n)).astype(np.float32) for _ in range(4)]
    table_sized = np.ones(max(1, stored_bytes(n, width, 8) // 8), dtype=np.uint64)  # in cache when it fits
    topk, call = limits.topk_session(), limits.call_session(num_types)
    k_input = np.array([min(K, n)], np.int64)
    feeds = limits.bundle_feeds(0, 0, K)
    tiny = {"scores": np.zeros((1, K), np.float32), "k": k_input}
    reads = {"max_f32": lambda: buffer.view(np.float32).max(), "or_u64": lambda: np.bitwise_or.reduce(buffer.view(np.uint64)),
             "count_nonzero_u8": lambda: np.count_nonzero(buffer.view(np.bool_))}
    return [
        *(Variant(f"limit: DRAM read of 256 MiB ({name})", "limit", lambda i, f=f: f()) for name, f in reads.items()),
        Variant("limit: TopK over N", "limit", lambda i: topk.run(None, {"scores": rows[i % 4], "k": k_input})),
        Variant("limit: TopK over k (call floor)", "limit", lambda i: topk.run(None, tiny)),
        Variant("limit: session.run call", "limit", lambda i: call.run(None, feeds)),
        Variant("limit: read of an int8-table-sized buffer", "limit", lambda i: np.bitwise_or.reduce(table_sized)),
    ]


# -- timing -------------------------------------------------------------------------------------------


def round_robin(variants: list[Variant], rounds: int, budget_s: float, max_per_round: int) -> dict[str, dict]:
    """Interleave: each round times every variant (in a rotated order) for ``budget_s`` or
    ``max_per_round`` queries. Returns per variant all samples (ns) and the per-round medians."""
    samples: dict[str, list[float]] = {v.name: [] for v in variants}
    medians: dict[str, list[float]] = {v.name: [] for v in variants}
    cursor = 0
    for v in variants:  # warm-up
        for i in range(3):
            v.run(i)
    for round_ in range(rounds):
        order = variants[round_ % len(variants):] + variants[:round_ % len(variants)]
        for v in order:
            got = []
            deadline = time.perf_counter() + budget_s
            while len(got) < max_per_round and (len(got) < 3 or time.perf_counter() < deadline):
                i = cursor % QUERIES
                cursor += 1
                start = time.perf_counter_ns()
                v.run(i)
                got.append(time.perf_counter_ns() - start)
            samples[v.name] += got
            medians[v.name].append(float(np.median(got)))
    return {name: {"samples_ns": np.array(samples[name]), "round_medians_ns": medians[name]} for name in samples}


def summarize(timing: dict) -> dict[str, float]:
    s, m = timing["samples_ns"], np.array(timing["round_medians_ns"])
    return {"p50_us": float(np.median(s)) / 1e3, "p95_us": float(np.percentile(s, 95)) / 1e3,
            "round_p50_min_us": float(m.min()) / 1e3, "round_p50_max_us": float(m.max()) / 1e3, "samples": int(len(s))}


# -- accuracy -----------------------------------------------------------------------------------------


def accuracy(scorer, kg, with_recall: bool) -> dict[str, float]:  # noqa: ANN001
    metrics = evaluate_link_prediction(scorer, kg, "test")
    out = {"mrr": metrics["mrr"], "hits_at_10": metrics["hits_at_10"]}
    if with_recall:
        out["recall_at_10_bought"] = recommendation_metrics(scorer, kg, "bought", k=10)["recall_at_10"]
    return out


def topk_agreement(a: EdgeModel, b: EdgeModel, heads: np.ndarray, relations: np.ndarray) -> float:
    ids_a, _ = a.topk(heads, relations, K)
    ids_b, _ = b.topk(heads, relations, K)
    return float(np.mean([len(set(x) & set(y)) / K for x, y in zip(ids_a.tolist(), ids_b.tolist())]))


# -- one configuration --------------------------------------------------------------------------------


def measure_config(name: str, tag: str, kind: str, checkpoints: dict[str, Checkpoint], kg, args, dram: dict) -> ConfigResult:  # noqa: ANN001, E501
    """Every variant of one configuration, timed in the same rounds; ``tag`` names its cached bundles."""
    student = checkpoints["student" if "student" in checkpoints else "random"]  # whose table the limit reads
    n = student.config.num_entities
    width = student.model.entity_width
    result = ConfigResult(name, kind, n, width)
    rng = np.random.default_rng(0)
    if kg is not None:
        test = kg.with_reciprocals(kg.test)
        pick = rng.choice(len(test), size=QUERIES, replace=len(test) < QUERIES)
        heads, relations = test[pick, 0].astype(np.int64), test[pick, 1].astype(np.int64)
    else:
        heads = rng.integers(0, n, QUERIES).astype(np.int64)
        relations = rng.integers(0, 2 * NUM_RELATIONS, QUERIES).astype(np.int64)
    variants: list[Variant] = []
    models: dict[str, EdgeModel] = {}
    bundles: dict[str, tuple[Path, dict]] = {}
    for role, checkpoint in checkpoints.items():
        variants.append(torch_variant(f"torch {role} fp32 (eager)", checkpoint.model, heads, relations, role))
        for profile in ["portable", *int8_profiles()]:
            path, manifest = bundle_for(checkpoint, profile, CACHE / "bundles" / f"{tag}-{role}-{profile}", kg,
                                        random_tables=kind == "random")
            bundles[f"{role}/{profile}"] = (path, manifest)
            result.bundles[f"{role}/{profile}"] = str(path)
            precision = "int8" if profile != "portable" else "fp32"
            label = f"{precision} {profile}"
            variants += edge_variants(label, path, manifest, heads, relations, role, precision)
            models[f"{role}/{profile}"] = EdgeModel.load(path, intra_op_threads=1)
    variants.append(numpy_variant(student, heads, relations, "student" if kind == "trained" else "random"))
    if args.pykeen_at and n in args.pykeen_at:
        extra, note = pykeen_variants(n, width, heads, relations)
        variants += extra
        result.checks["pykeen"] = note
        if width != TEACHER_WIDTH:  # PyKEEN serving the teacher as trained, beside kgedge serving its student
            extra, note = pykeen_variants(n, TEACHER_WIDTH, heads, relations, suffix=f" (d={TEACHER_WIDTH})")
            variants += extra
            result.checks[f"pykeen d={TEACHER_WIDTH}"] = note
            if n == min(args.pykeen_at):
                variants += same_class_variants(n, width, heads, relations, tag, result)
    if kind == "random" and width == 64 and n >= 100_000:
        variants += prototype_variants(student, models, heads, relations, bundles, result)
    variants += limit_variants(n, width, len(student.vocab.type_names), dram["buffer"])
    log.info("%s: timing %d variants", name, len(variants))
    timing = round_robin(variants, args.rounds, args.budget, args.max_per_round)
    stats = {v.name: summarize(timing[v.name]) for v in variants}
    # the limit per round (each round's own bandwidth, TopK and call), so that a ratio pairs a variant
    # with the limit measured minutes, not seconds, apart: other jobs' memory traffic moves both
    rounds_us = {name: np.array(t["round_medians_ns"]) / 1e3 for name, t in timing.items()}
    reads = [rounds_us[v.name] for v in variants if v.name.startswith("limit: DRAM read")]
    bandwidth_r = dram["buffer"].nbytes / (np.min(reads, axis=0) / 1e6)  # the fastest kernel of each round
    topk_r = np.maximum(0.0, rounds_us["limit: TopK over N"] - rounds_us["limit: TopK over k (call floor)"])
    call_r = rounds_us["limit: session.run call"]
    cache_r = max(8, stored_bytes(n, width, 8) // 8 * 8) / (rounds_us["limit: read of an int8-table-sized buffer"] / 1e6)

    def limit_r(table_bytes: int, bandwidth: np.ndarray = bandwidth_r) -> np.ndarray:
        return table_bytes / bandwidth * 1e6 + topk_r + call_r

    result.limit = {"bandwidth_bytes_per_s": float(np.median(bandwidth_r)), "topk_us": float(np.median(topk_r)),
                    "call_us": float(np.median(call_r)), "table_sized_bandwidth_bytes_per_s": float(np.median(cache_r)),
                    "int8_limit_table_sized_us": float(np.median(limit_r(stored_bytes(n, width, 8), cache_r))),
                    "bandwidth_per_round_bytes_per_s": bandwidth_r.tolist()}
    for precision, bits in (("int8", 8), ("fp32", None)):
        read = [v.table_bytes for v in variants if v.family == "onnx" and v.precision == precision and v.table_bytes]
        table = read[0] if read else stored_bytes(n, width, bits)  # the bytes a query of the bundle reads
        result.limit[f"{precision}_table_bytes"] = table
        result.limit[f"{precision}_read_us"] = float(np.median(table / bandwidth_r * 1e6))
        result.limit[f"{precision}_limit_us"] = float(np.median(limit_r(table)))
    base = next((v.name for v in variants if v.family == "onnx" and v.precision == "int8"), None)
    for v in variants:
        row: dict[str, object] = {"variant": v.name, "family": v.family, "model": v.model, "precision": v.precision,
                                  "table_bytes": v.table_bytes, **stats[v.name],
                                  "round_p50s_us": rounds_us[v.name].tolist()}
        if v.table_bytes:  # the same floor for every way of reading this table; median of per-round ratios
            ratios = rounds_us[v.name] / limit_r(v.table_bytes)
            row["limit_us"] = float(np.median(limit_r(v.table_bytes)))
            row["ratio_to_limit"] = float(np.median(ratios))
            row["ratio_to_limit_range"] = [float(ratios.min()), float(ratios.max())]
        if base is not None:
            row["ratio_to_int8_edge"] = float(np.median(rounds_us[v.name] / rounds_us[base]))
        if v.note:
            row["note"] = v.note
        result.rows.append(row)
    if kind == "random" and width == 64 and n >= 100_000:
        profile_operators(student, heads, relations, result)
    # agreement of int8 with fp32 (top-10 ids) on the same queries
    eval_heads, eval_relations = heads, relations
    if kg is not None:
        test = kg.with_reciprocals(kg.test)
        eval_heads, eval_relations = test[:, 0].astype(np.int64), test[:, 1].astype(np.int64)
    for role in checkpoints:
        for profile in int8_profiles():
            result.agreement[f"{role}/{profile}"] = topk_agreement(models[f"{role}/portable"], models[f"{role}/{profile}"],
                                                                   eval_heads, eval_relations)
            result.checks[f"{role}/{profile} export validation"] = bundles[f"{role}/{profile}"][1]["validation"]
    if kg is not None:
        with_recall = "bought" in kg.relations
        for v in variants:
            if v.scorer is not None:
                row = next(r for r in result.rows if r["variant"] == v.name)
                row.update(accuracy(v.scorer, kg, with_recall))
    result.checks["bundle_bytes"] = {key: m["sizes"]["bundle_bytes"] for key, (_, m) in bundles.items()}
    return result


# -- memory and load time: kgedge bench in a fresh process per bundle ------------------------------------


def bench_subprocess(path: Path) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-m", "kgedge", "bench", str(path), "--json", "--threads", "1",
                          "--queries", "300", "--seconds", "1.0"], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    report = json.loads(out.stdout)
    keep = ("profile", "num_entities", "dim", "p50_us", "p95_us", "p99_us", "qps_batch_1", "qps_batch_8", "qps_batch_64",
            "qps_batch_256", "bundle_bytes", "table_bytes", "load_s", "rss_before_load_bytes", "rss_after_load_bytes",
            "peak_rss_bytes")
    return {key: report[key] for key in keep}


MEMORY_PROBE = """
import json, sys
from kgedge.bench.machine import rss_bytes
from kgedge.runtime import SessionSettings, read_bundle
from kgedge.runtime.session import create_session
from kgedge.runtime.vocab import Vocabulary
path = sys.argv[1]
r0 = rss_bytes(); bundle = read_bundle(path); r1 = rss_bytes()
names = Vocabulary("entity", bundle.entities); r2 = rss_bytes()
session = create_session(bundle.model, SessionSettings(1, 1), path, len(bundle.types)); r3 = rss_bytes()
print(json.dumps({"read_bundle": r1 - r0, "model_onnx_bytes": len(bundle.model), "entity_vocabulary": r2 - r1,
                  "onnxruntime_session": r3 - r2, "table_bytes": bundle.manifest["sizes"]["table_bytes"]}))
"""


def memory_breakdown(path: Path) -> dict[str, int]:
    """Where a loaded bundle's memory goes (a fresh process): the verified files (the model bytes are
    freed once the session exists), the entity name -> id dict, the onnxruntime session."""
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path)], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: two sizes, short training, 3 rounds")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--budget", type=float, default=0.12, help="seconds per variant per round")
    parser.add_argument("--max-per-round", type=int, default=20)
    parser.add_argument("--train-seconds", type=float, default=90.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report-only", action="store_true", help="rewrite the Markdown and plots from OUT/latency_peers.json")
    args = parser.parse_args()
    if args.report_only:
        latency_report.write(json.loads((args.out / "latency_peers.json").read_text()), args.out)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("kgedge", "pykeen", "torch_max_mem", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:  # pykeen sets its own loggers' levels on import
        import pykeen  # noqa: F401

        for name in list(logging.root.manager.loggerDict):
            if name.startswith("pykeen"):
                logging.getLogger(name).setLevel(logging.WARNING)
    except ImportError:
        pass
    if args.quick:
        args.rounds, args.train_seconds = 3, 20.0
    random_sizes = [(14_541, 64), (100_000, 64), (1_000_000, 64)] if args.quick else [
        (14_541, 64), (100_000, 32), (100_000, 64), (100_000, 128), (100_000, 256), (300_000, 64), (1_000_000, 64)]
    args.pykeen_at = {14_541, 100_000}
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.time()
    info = machine_info()
    info["torch"] = torch.__version__
    bandwidth = read_bandwidth(DRAM_BUFFER)
    dram = {"buffer": np.ones(DRAM_BUFFER // 8, dtype=np.float64).view(np.uint8)}
    micro = {"mac_per_s": limits.mac_rates(), "bandwidth_probe": dataclasses.asdict(bandwidth)}
    configs: list[ConfigResult] = []
    for dataset in ("umls", "demo"):
        teacher, student = trained_checkpoints(dataset, args.train_seconds)
        kg = load_data(dataset)
        configs.append(measure_config(f"{dataset} (trained)", f"{dataset}-{args.train_seconds:.0f}s", "trained",
                                      {"teacher": teacher, "student": student}, kg, args, dram))
        log.info("done %s", configs[-1].name)
    for n, width in random_sizes:
        checkpoint = random_checkpoint(n, width)
        configs.append(measure_config(f"random N={n:,} d={width}", f"random-{n}-{width}", "random", {"random": checkpoint},
                                      None, args, dram))
        log.info("done %s", configs[-1].name)
        del checkpoint
    growth = []
    for config in configs:
        for key, path in config.bundles.items():
            if key.startswith(("random/", "student/")):
                log.info("kgedge bench %s", path)
                growth.append({"config": config.name, "bundle": Path(path).name, "width": config.width,
                               **bench_subprocess(Path(path))})
    memory = {}
    for config in configs:
        if config.kind == "random" and config.width == 64 and config.num_entities >= 100_000:
            for key, path in config.bundles.items():
                memory[f"{config.name} {key.split('/')[1]}"] = memory_breakdown(Path(path))
    data = {
        "script": "benchmarks/latency_peers.py", "memory": memory, "args": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": info, "threads": 1, "k": K, "queries": QUERIES, "seconds": time.time() - started,
        "finished_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "micro": micro, "configs": [dataclasses.asdict(c) for c in configs], "growth": growth,
    }
    data["args"]["pykeen_at"] = sorted(args.pykeen_at)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latency_peers.json").write_text(json.dumps(data, indent=2, default=float) + "\n")
    latency_report.write(data, args.out)
    log.info("wrote %s in %.0f s", args.out / "latency_peers.md", time.time() - started)


if __name__ == "__main__":
    main()

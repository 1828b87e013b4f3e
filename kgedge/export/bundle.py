"""``export_bundle``: checkpoint -> validated, self-contained bundle directory (and archive).

Bundle files: ``model.onnx``, ``entities.txt``, ``relations.txt``, ``entity_types.npy``, the seen-items
index ``known_{keys,offsets,tails}.npy`` and ``manifest.json`` (format version, kgedge version,
profile, model config, sizes, sha256 of every file, validation figures, and the sha256 of its own
content). No pickles anywhere.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from kgedge import __version__
from kgedge.atomic import atomic_directory, atomic_path
from kgedge.data.index import STORED_ID_DTYPES, KnownTails
from kgedge.data.kg import KnowledgeGraph
from kgedge.export.graph import INPUTS, OUTPUTS, GraphSpec, build_graph, scored_bytes
from kgedge.export.profile import ExportProfile, cpu_supports, resolve_profile
from kgedge.export.validate import ValidationReport, onnx_scorer, probe_queries, session_for, validate_export
from kgedge.models.factored import LowRankEmbedding
from kgedge.train.checkpoint import Checkpoint
from kgedge.train.materialize import materialize_checkpoint
from kgedge.train.scorer import model_scorer

log = logging.getLogger(__name__)

FORMAT = "kgedge-bundle"
FORMAT_VERSION = 1
PROBE_QUERIES = 256
# the MRR check scores full rows through a top-k graph with k = N (a sort of N per query): keep
# triples x N under this: 5000 triples up to 50k entities, 250 at 1M (5000 would take ~1.5 h there on
# 2 cores: 26 ms per query and scorer measured at 100k)
EVAL_CELLS = 250_000_000
MANIFEST_DIGEST = "manifest_sha256"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    manifest: dict[str, object]
    validation: ValidationReport
    archive: Path | None = None


def graph_spec(checkpoint: Checkpoint) -> GraphSpec:
    """The numpy tables of a model, as the graph builder wants them (``U`` and ``V`` when factored)."""
    model = checkpoint.model
    factored = isinstance(model.entity, LowRankEmbedding)
    with torch.no_grad():
        entity = (model.entity.u if factored else model.entity_table()).detach().cpu().float().numpy()
        basis = model.entity.v.detach().cpu().float().numpy() if factored else None
        relation = model.relation_table().detach().cpu().float().numpy()
    return GraphSpec(
        model=checkpoint.config.model,
        interaction=model.interaction,
        entity_table=entity,
        relation_table=relation,
        entity_types=np.asarray(checkpoint.vocab.entity_types, dtype=np.int64),
        num_types=len(checkpoint.vocab.type_names),
        entity_basis=basis,
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_digest(manifest: dict[str, object]) -> str:
    """sha256 of the manifest's canonical JSON (sorted keys, no spaces) without its own digest.

    The runtime checks it (``kgedge.runtime.bundle.manifest_digest``, the same function: export may
    not import the runtime), so that a flipped byte in ``manifest.json`` is caught like one in any file.
    """
    body = {key: value for key, value in manifest.items() if key != MANIFEST_DIGEST}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _write_vocab(directory: Path, checkpoint: Checkpoint, kg: KnowledgeGraph | None) -> None:
    vocab = checkpoint.vocab
    (directory / "entities.txt").write_text("\n".join(vocab.entities) + "\n", encoding="utf-8")
    (directory / "relations.txt").write_text("\n".join(vocab.relations) + "\n", encoding="utf-8")
    np.save(directory / "entity_types.npy", _narrowest(np.asarray(vocab.entity_types), len(vocab.type_names)),
            allow_pickle=False)
    if kg is not None:
        known = kg.known_train
    else:  # no data: an empty seen-items index (recommendations then exclude nothing but on-device updates)
        known = KnownTails(np.zeros((0, 3), dtype=np.int64), 2 * len(vocab.relations))
    # the runtime memory-maps these arrays and searches them in their own dtype: narrow ones shrink the
    # bundle and the pages it touches (tails of a KG under 65,536 entities take 2 bytes, not 8)
    n = len(vocab.entities)
    bounds = {"keys": n * 2 * len(vocab.relations), "offsets": len(known.tails) + 1, "tails": n}
    for name, array in (("keys", known.keys), ("offsets", known.offsets), ("tails", known.tails)):
        np.save(directory / f"known_{name}.npy", _narrowest(array, bounds[name]), allow_pickle=False)


def _narrowest(array: np.ndarray, bound: int) -> np.ndarray:
    """``array`` (values in ``0..bound-1``) in the first of ``STORED_ID_DTYPES`` that holds ``bound - 1``."""
    top = max(bound - 1, int(array.max()) if len(array) else 0)
    dtype = next(d for d in STORED_ID_DTYPES if top <= np.iinfo(d).max)
    return array.astype(dtype)


def export_bundle(
    checkpoint: Checkpoint,
    profile: ExportProfile | str,
    out: Path,
    kg: KnowledgeGraph | None = None,
    overwrite: bool = False,
    archive: bool = False,
) -> ExportResult:
    """Export, validate and write a bundle; nothing is written when validation fails.

    A graph-encoder checkpoint (GCN, GAT, R-GCN) is materialised first: the bundle holds its
    decoder with the encoder's output as entity table, and the same scores.

    Args:
        kg: the data the model was trained on; gives the seen-items index, probe queries from the
            test split and the MRR check. Without it, random probes check the scores only.
        archive: also write ``<out>.tar.gz`` (a single file for copying to a device).

    Raises:
        ExportValidationError: the graph misses the profile's thresholds (message has the figures).
        ValueError: the data does not match the checkpoint's vocabulary.
    """
    profile = resolve_profile(profile) if isinstance(profile, str) else profile
    # a graph teacher is exported as its materialised plain decoder: the device never runs message passing
    checkpoint = materialize_checkpoint(checkpoint)
    if kg is not None and (kg.entities != checkpoint.vocab.entities or kg.relations != checkpoint.vocab.relations):
        raise ValueError("--data does not match the checkpoint: its entities or relations differ")
    spec = graph_spec(checkpoint)
    fp32_profile = resolve_profile("portable") if profile.quantized else profile
    fp32_model = build_graph(spec, fp32_profile)
    model = build_graph(spec, profile) if profile.quantized else fp32_model
    n, types = checkpoint.config.num_entities, spec.num_types
    fp32 = onnx_scorer(session_for(fp32_model), n, types)
    # a profile for another CPU is validated on what that CPU computes: exact integer products
    native = cpu_supports(profile)
    checked = model if native or not profile.quantized else build_graph(spec, profile, emulate=True)
    exported = onnx_scorer(session_for(checked), n, types) if profile.quantized else fp32
    probes = max(8, min(PROBE_QUERIES, 64_000_000 // max(n, 1)))
    heads, relations = probe_queries(kg, n, checkpoint.config.num_relations, probes)
    report = validate_export(model_scorer(checkpoint.model), fp32, exported, profile.validation,
                             heads, relations, kg, profile.quantized,
                             max_eval_triples=max(100, min(5000, EVAL_CELLS // max(n, 1))))
    bits = profile.table_bits if profile.quantized else None
    table_bytes = spec.table_bytes(bits)  # a factored table's basis V included

    with atomic_directory(Path(out), overwrite=overwrite) as tmp:
        (tmp / "model.onnx").write_bytes(model.SerializeToString())
        _write_vocab(tmp, checkpoint, kg)
        files = {p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in sorted(tmp.iterdir())}
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kgedge_version": __version__,
            "onnxruntime_version": ort.__version__,
            "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "model": {
                "name": checkpoint.config.model,
                "dim": checkpoint.config.dim,
                "interaction": spec.interaction,
                "width": spec.width,
                "config": checkpoint.config.to_dict(),
                "checkpoint": {k: v for k, v in checkpoint.metadata.items() if k in ("data", "epoch", "valid", "materialized_from")},
            },
            "num_entities": n,
            "num_relations": len(checkpoint.vocab.relations),
            "types": list(checkpoint.vocab.type_names),
            "profile": profile.to_dict(),
            "session": profile.to_dict()["session"],
            "graph": {"opset": profile.opset, "inputs": list(INPUTS), "outputs": list(OUTPUTS)},
            "files": files,
            "sizes": {"table_bytes": table_bytes, "bundle_bytes": sum(f["bytes"] for f in files.values()),
                      "scored_bytes_per_query": scored_bytes(spec, profile)},
            "seen_index": "train" if kg is not None else "empty",
            "validation": {**report.to_dict(), "validated_on": "this CPU" if native else "integer emulation"},
        }
        manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    archive_path = None
    if archive:
        archive_path = Path(str(out).rstrip("/") + ".tar.gz")
        with atomic_path(archive_path) as tmp_archive:
            with tarfile.open(tmp_archive, "w:gz") as tar:
                tar.add(out, arcname=Path(out).name)
    log.info("exported %s (%s) to %s: %d bytes", checkpoint.config.model, profile.name, out,
             manifest["sizes"]["bundle_bytes"])  # type: ignore[index]
    return ExportResult(Path(out), manifest, report, archive_path)

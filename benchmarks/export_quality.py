"""Export fidelity (issue: export): bundle bytes fp32 vs int8, test MRR of torch vs ONNX fp32 vs ONNX
int8, top-10 overlap of int8 with fp32, for every KG-embedding model.

    python benchmarks/export_quality.py                          # UMLS, dim 256, defaults
    python benchmarks/export_quality.py --data wordnet-rr --budget 300 --profiles x86-avx2 arm64
    python benchmarks/export_quality.py --data wordnet-rr --models rotate --budget 600 --merge   # one more row

Trained models are kept in .cache/bench (the ComplEx-256 teachers of compression.py are reused);
`--fresh` trains anew. Every export is measured with the profile's thresholds relaxed, so that a model the exporter would
refuse still gets its figures; `passes_profile` says whether `kgedge export` accepts it.

The figures are the validation that every `kgedge export` runs (stored in the bundle manifest), read
back from the bundles. Writes benchmarks/results/export_quality_<data>.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

from common import RESULTS, machine, markdown_table, write_results

from kgedge.data.sources import load_data
from kgedge.export import export_bundle
from kgedge.export.profile import available_profiles, cpu_supports, load_profile, resolve_profile
from kgedge.models import ModelConfig
from kgedge.train.checkpoint import Checkpoint, Vocabulary, load_checkpoint
from kgedge.train.config import default_model_options, default_train_config
from kgedge.train.trainer import train_model

MODELS = ("transe", "distmult", "complex", "rotate")
CACHE = Path(__file__).resolve().parents[1] / ".cache" / "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="umls")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--budget", type=float, default=0.0, help="training seconds per model (0 = early stopping)")
    parser.add_argument("--profiles", nargs="+", default=None, help="int8 profiles (default: every one but portable, int4)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--merge", action="store_true", help="keep the saved rows of the other models")
    parser.add_argument("--fresh", action="store_true",
                        help="train every model anew instead of reusing .cache/bench/teacher-<data>-<model><dim>.ckpt")
    args = parser.parse_args()
    kg = load_data(args.data)
    profiles = args.profiles or [name for name in available_profiles() if name not in ("portable", "int4")]
    saved = RESULTS / f"export_quality_{args.data}.json"
    rows = [r for r in json.loads(saved.read_text())["rows"] if r["model"] not in args.models] if (
        args.merge and saved.is_file()) else []
    for model in args.models:
        config = ModelConfig(model=model, num_entities=kg.num_entities, num_relations=2 * kg.num_relations,
                             dim=args.dim, **default_model_options(model))
        cached = CACHE / f"teacher-{args.data}-{model}{args.dim}.ckpt"  # compression.py's teachers too
        if cached.is_file() and not args.fresh:
            checkpoint, train_s = load_checkpoint(cached), None
        else:
            overrides = {"batch_size": 1000} if kg.num_entities > 10_000 else {}
            trained = train_model(kg, config, default_train_config(model, max_time_s=args.budget, **overrides),
                                  out=cached)
            checkpoint, train_s = Checkpoint(model=trained.model, vocab=Vocabulary.of(kg)), trained.train_seconds
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = export_bundle(checkpoint, "portable", Path(tmp) / "fp32", kg=kg)
            for profile in profiles:
                strict = resolve_profile(profile)
                relaxed = dataclasses.replace(strict, validation=dataclasses.replace(
                    strict.validation, min_topk_overlap=0.0, max_mrr_drop=1.0))
                int8 = export_bundle(checkpoint, relaxed, Path(tmp) / profile, kg=kg)
                v = int8.manifest["validation"]
                row = {
                    "model": model, "profile": profile, "train_s": None if train_s is None else round(train_s, 1),
                    "native": cpu_supports(load_profile(available_profiles()[profile])),
                    "bytes_fp32": fp32.manifest["sizes"]["bundle_bytes"], "bytes_int8": int8.manifest["sizes"]["bundle_bytes"],
                    "ratio": int8.manifest["sizes"]["bundle_bytes"] / fp32.manifest["sizes"]["bundle_bytes"],
                    "model_ratio": int8.manifest["files"]["model.onnx"]["bytes"] / fp32.manifest["files"]["model.onnx"]["bytes"],
                    "table_ratio": int8.manifest["sizes"]["table_bytes"] / fp32.manifest["sizes"]["table_bytes"],
                    "mrr_torch": v["mrr_torch"], "mrr_onnx_fp32": v["mrr_fp32"], "mrr_onnx_int8": v["mrr_export"],
                    "mrr_drop_pct": 100 * v["mrr_drop"], "top10_overlap": v["topk_overlap"],
                    "passes_profile": v["topk_overlap"] >= strict.validation.min_topk_overlap
                    and v["mrr_drop"] <= strict.validation.max_mrr_drop,
                }
                print(row, flush=True)
                rows.append(row)
    md = (f"# Export fidelity on {args.data} (dim {args.dim})\n\n" + markdown_table(rows)
          + "\n\n`ratio`: whole bundle int8 / fp32 (names, types and the seen-items index are the same bytes in "
          "both); `model_ratio`: model.onnx alone; `table_ratio`: the entity + relation tables as stored (codes + "
          "scales vs float32).\n\n`native`: this CPU runs the profile's kernel; otherwise the int8 figures come from the exact "
          "integer emulation that export validation uses for foreign targets.\n\nMachine: " + str(machine()))
    write_results(f"export_quality_{args.data}", {"machine": machine(), "dim": args.dim, "rows": rows}, md)


if __name__ == "__main__":
    main()

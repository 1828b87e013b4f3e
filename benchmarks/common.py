"""Shared by the benchmark scripts: machine description and writing JSON + Markdown results."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def real_datasets() -> list[str]:
    """The small real KGs a benchmark runs: UMLS and Nations, and Kinships (outside ../shared) when the
    `pykeen` wheel that ships it is installed."""
    from kgedge.data.sources import pykeen_dataset_dir

    return ["umls", "nations"] + (["kinships"] if pykeen_dataset_dir("kinships") is not None else [])


def machine() -> dict[str, object]:
    """CPU model, cores, flags of interest and library versions, recorded with every result."""
    info: dict[str, object] = {"python": sys.version.split()[0], "platform": platform.platform(),
                               "cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
        flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
        info["cpu"] = model
        info["cpu_flags"] = sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "fma", "f16c"})
    except OSError:
        pass
    for module in ("numpy", "torch", "onnx", "onnxruntime"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            pass
    try:
        info["kgedge_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                               text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        pass
    return info


def markdown_table(rows: list[dict[str, object]]) -> str:
    if not rows:
        return ""
    columns = list(dict.fromkeys(key for row in rows for key in row))  # every key, first-seen order
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 100 else f"{v:,.1f}"
        return str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(name: str, payload: dict[str, object], markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown + "\n")
    print(markdown)

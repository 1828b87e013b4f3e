"""What the device install costs (issue: runtime): import time of `kgedge.runtime` vs torch,
load-to-first-answer time of a bundle, and installed size of the runtime-only install vs `[train]`.

    python benchmarks/runtime_footprint.py BUNDLE [--sizes]

Timings are medians of fresh interpreter processes. `--sizes` builds two fresh venvs under
.cache/footprint (`pip install .` and `pip install .[train]`) and measures their site-packages.
Writes benchmarks/results/runtime_footprint.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from common import machine, markdown_table, write_results

ROOT = Path(__file__).resolve().parents[1]


def seconds_of(code: str, python: str = sys.executable, repeats: int = 5) -> float:
    """Median wall time of ``code`` in fresh interpreters, measured inside the process (excludes start-up)."""
    wrapped = f"import time; _t = time.perf_counter()\n{code}\nprint(time.perf_counter() - _t)"
    runs = [float(subprocess.run([python, "-c", wrapped], capture_output=True, text=True, check=True).stdout.split()[-1])
            for _ in range(repeats)]
    return statistics.median(runs)


def site_packages_bytes(venv: Path) -> int:
    site = next((venv / "lib").glob("python3*/site-packages"))
    return sum(p.stat().st_size for p in site.rglob("*") if p.is_file())


def venv_with(extra: str) -> Path:
    venv = ROOT / ".cache" / "footprint" / (extra or "runtime")
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        spec = f"{ROOT}[{extra}]" if extra else str(ROOT)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", spec], check=True)
    return venv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--sizes", action="store_true", help="measure fresh venv installs (slow, ~1 GB disk)")
    args = parser.parse_args()
    bundle = args.bundle.resolve()
    rows = [
        {"what": "import kgedge.runtime", "seconds": seconds_of("import kgedge.runtime")},
        {"what": "import torch", "seconds": seconds_of("import torch")},
        {"what": "import onnxruntime", "seconds": seconds_of("import onnxruntime")},
        {"what": "load bundle + first answer (incl. import)", "seconds": seconds_of(
            "from kgedge.runtime import EdgeModel\n"
            f"m = EdgeModel.load({str(bundle)!r})\n"
            "m.topk(__import__('numpy').array([0]), __import__('numpy').array([0]), 10)")},
    ]
    sizes = {}
    if args.sizes:
        for extra in ("", "train"):
            venv = venv_with(extra)
            sizes[extra or "runtime"] = site_packages_bytes(venv)
            leak = subprocess.run([str(venv / "bin" / "python"), "-c",
                                   "import sys, kgedge.runtime; print(int('torch' in sys.modules or 'onnx' in sys.modules))"],
                                  capture_output=True, text=True).stdout.strip()
            rows.append({"what": f"site-packages of `pip install .{'[' + extra + ']' if extra else ''}`",
                         "seconds": float("nan"), "bytes": sizes[extra or "runtime"], "torch_or_onnx_imported": leak})
    md = "# Runtime footprint\n\n" + markdown_table(rows) + f"\n\nBundle: `{bundle}`\n\nMachine: {machine()}"
    write_results("runtime_footprint", {"machine": machine(), "rows": rows, "sizes": sizes}, md)


if __name__ == "__main__":
    main()

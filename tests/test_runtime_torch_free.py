"""The runtime and its commands work with torch and onnx unimportable, as on an edge install."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from bundle_factory import TinyBundle, tiny  # noqa: F401 (fixture)

from kgedge.runtime import EdgeModel

# Inserted first on sys.meta_path: any import of torch or onnx (and their submodules) fails, as if
# they were not installed; onnxruntime is a different top-level name and still imports.
BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {"torch", "onnx"}
    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: this is an edge install")
            return None
    sys.meta_path.insert(0, Blocker())
    for name in BLOCKED:
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"the blocker failed: {name} imported")
    def check_clean():
        loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
        assert not loaded, f"imported despite the block: {loaded}"
""")


def run_blocked(code: str, *args: str) -> str:
    result = subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code), *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_library_loads_and_answers_without_torch_or_onnx(tiny: TinyBundle) -> None:
    out = run_blocked("""
        import json, numpy as np
        from kgedge.runtime import EdgeModel
        from kgedge.runtime.server import EdgeServer
        model = EdgeModel.load(sys.argv[1])
        answers = {
            "answer": model.answer("intent_1", "answers", k=5),
            "recommend": model.recommend("user_2", k=4),
            "scores": model.score_all(np.array([0, 3]), np.array([0, 4])).tolist(),
        }
        check_clean()
        print(json.dumps(answers))
    """, str(tiny.path))
    got = json.loads(out)
    model = EdgeModel.load(tiny.path)
    assert [tuple(x) for x in got["answer"]] == model.answer("intent_1", "answers", k=5)
    assert [tuple(x) for x in got["recommend"]] == model.recommend("user_2", k=4)
    assert len(got["scores"]) == 2 and len(got["scores"][0]) == len(tiny.entities)


@pytest.mark.parametrize("argv", [
    ["query", "--head", "intent_1", "--relation", "answers", "-k", "3", "--json"],
    ["recommend", "--user", "user_2", "-k", "4", "--types", "product,accessory", "--json"],
])
def test_commands_run_without_torch_or_onnx(tiny: TinyBundle, argv: list[str]) -> None:
    out = run_blocked("""
        import sys
        from kgedge.cli import app
        try:
            app(sys.argv[2:3] + [sys.argv[1]] + sys.argv[3:], standalone_mode=False)
        finally:
            check_clean()
    """, str(tiny.path), *argv)
    got = [(x["name"], x["score"]) for x in json.loads(out)]
    model = EdgeModel.load(tiny.path)
    if argv[0] == "query":
        assert got == model.answer("intent_1", "answers", k=3)
    else:
        assert got == model.recommend("user_2", k=4, types=["product", "accessory"])

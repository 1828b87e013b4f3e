"""``kgedge query``, ``recommend`` and ``serve`` as a user runs them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

import pytest
from bundle_factory import TinyBundle, fresh, tiny  # noqa: F401 (fixtures)
from typer.testing import CliRunner

from kgedge.cli import app
from kgedge.runtime import EdgeModel

runner = CliRunner()


def test_query_prints_a_table_or_json(tiny: TinyBundle) -> None:
    model = EdgeModel.load(tiny.path)
    result = runner.invoke(app, ["query", str(tiny.path), "--head", "intent_0", "--relation", "answers", "-k", "3"])
    assert result.exit_code == 0, result.output
    for name, _ in model.answer("intent_0", "answers", k=3):
        assert name in result.output
    assert "rank" in result.output and "score" in result.output
    result = runner.invoke(app, ["query", str(tiny.path), "--head", "intent_0", "--relation", "answers", "-k", "3", "--json"])
    assert json.loads(result.output) == [{"name": n, "score": s} for n, s in model.answer("intent_0", "answers", k=3)]


def test_recommend_excludes_seen_unless_asked(fresh: TinyBundle) -> None:
    model = EdgeModel.load(fresh.path)
    model.add_seen("user_3", model.recommend("user_3", k=1)[0][0])
    args = ["recommend", str(fresh.path), "--user", "user_3", "-k", "12", "--json"]
    shown = {x["name"] for x in json.loads(runner.invoke(app, args).output)}
    assert shown == {n for n, _ in model.recommend("user_3", k=12)} and not shown & set(model.seen("user_3"))
    everything = {x["name"] for x in json.loads(runner.invoke(app, [*args, "--include-seen"]).output)}
    assert everything == {e for e in fresh.entities if e.startswith("product_")}


def test_errors_are_one_line_with_exit_code_2(tiny: TinyBundle) -> None:
    result = runner.invoke(app, ["query", str(tiny.path), "--head", "usr_2", "--relation", "bought"])
    assert result.exit_code == 2 and "unknown entity 'usr_2'; did you mean 'user_2'" in result.output
    result = runner.invoke(app, ["recommend", str(tiny.path), "--user", "user_2", "-k", "0"])
    assert result.exit_code == 2 and "k=0 must be at least 1" in result.output
    result = runner.invoke(app, ["query", str(tiny.path / "missing"), "--head", "x", "--relation", "bought"])
    assert result.exit_code == 2 and "no such bundle" in result.output


def _default_sigint() -> None:
    """In the child before exec: SIGINT as at a terminal, whether or not the test run was started with it
    ignored (a background job of a script), so that Python turns it into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_serve_answers_until_interrupted(tiny: TinyBundle, stop: signal.Signals) -> None:
    process = subprocess.Popen([sys.executable, "-m", "kgedge", "serve", str(tiny.path), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert "serving" in line and "http://127.0.0.1:" in line, process.stderr.read()  # type: ignore[union-attr]
        url = line.split()[-3]
        with urllib.request.urlopen(f"{url}/health", timeout=10) as reply:
            assert json.loads(reply.read())["status"] == "ok"
        request = urllib.request.Request(f"{url}/recommend", data=json.dumps({"user": "user_1", "k": 2}).encode())
        with urllib.request.urlopen(request, timeout=10) as reply:
            got = json.loads(reply.read())["results"]
        assert got == [{"name": n, "score": s} for n, s in EdgeModel.load(tiny.path).recommend("user_1", k=2)]
    finally:
        process.send_signal(stop)
        out, _ = process.communicate(timeout=10)
    assert process.returncode == 0 and "stopped" in out

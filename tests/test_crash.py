"""Crashes and load: SIGKILL at every write that matters, then resume; one model hammered concurrently.

Real subprocesses are killed with SIGKILL, either from outside at a moment the test observes (the
first checkpoint exists, a few validations have passed) or from inside at an exact point, by a hook
that ``python -c`` installs before running ``python -m kgedge`` (in the middle of writing a file, just
before its rename, between a checkpoint and its resume state). After every kill the previous output
must be intact and loadable where it is expected, and ``--resume`` must finish training exactly as an
uninterrupted run does. ``benchmarks/reliability.py`` runs the same crash points and loads.
"""

from __future__ import annotations

import inspect
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bundle_factory import TinyBundle, tiny  # noqa: F401 (fixture)

from kgedge.runtime import EdgeModel

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

# -- the hook: ``python -c HOOK POINT ARGS...`` runs ``python -m kgedge ARGS...`` with POINT armed --------
HOOK = textwrap.dedent("""
    import os, runpy, signal, sys
    point, sys.argv = sys.argv[1], ["kgedge", *sys.argv[2:]]
    where, _, nth = point.partition(":")
    nth, seen = int(nth or 1), {"n": 0}

    def due():
        seen["n"] += 1
        return seen["n"] == nth

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def half_written(path):  # what a crash in the middle of writing leaves: the first half
        with open(path, "r+b") as handle:
            handle.truncate(os.path.getsize(path) // 2)
        die()

    if where in ("ckpt-write", "student-write"):  # the checkpoint's temporary file, half written
        import kgedge.train.checkpoint as ckpt
        real_save = ckpt.save_file
        def save_file(tensors, filename, metadata=None):
            real_save(tensors, filename, metadata=metadata)
            if due():
                half_written(filename)
        ckpt.save_file = save_file
    elif where == "resume-write":  # the resume state's temporary file, half written
        import torch
        real_torch_save = torch.save
        def torch_save(obj, f, *args, **kwargs):
            real_torch_save(obj, f, *args, **kwargs)
            if str(f).endswith(".tmp") and due():
                half_written(f)
        torch.save = torch_save
    elif where in ("ckpt-rename", "after-ckpt"):  # just before / just after a checkpoint's rename
        real_replace = os.replace
        def replace(src, dst, *args, **kwargs):
            hit = str(dst).endswith(".ckpt") and due()
            if hit and where == "ckpt-rename":
                die()
            real_replace(src, dst, *args, **kwargs)
            if hit:
                die()
        os.replace = replace
    elif where == "bundle-write":  # the n-th array written into the temporary bundle directory
        import numpy
        real_np_save = numpy.save
        def np_save(*args, **kwargs):
            if due():
                die()
            real_np_save(*args, **kwargs)
        numpy.save = np_save
    elif where in ("bundle-swap", "after-swap"):  # just before / just after the bundle directory swap
        import kgedge.atomic as atomic
        real_exchange = atomic._exchange
        def exchange(a, b):
            if where == "bundle-swap":
                die()
            done = real_exchange(a, b)
            die()
        atomic._exchange = exchange
    elif where != "none":
        raise SystemExit(f"unknown crash point {point}")
    runpy.run_module("kgedge", run_name="__main__")
""")


def kgedge(point: str, *args: str | Path, cwd: Path) -> subprocess.Popen[str]:
    """Start ``python -m kgedge ARGS`` with crash point ``point`` (``none``: no hook fires)."""
    return subprocess.Popen([sys.executable, "-c", HOOK, point, *map(str, args)], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(process: subprocess.Popen[str], ready: Callable[[], bool], timeout: float = 300) -> bool:
    """Poll ``ready`` every 2 ms; SIGKILL the process once it holds. False if the process ended first."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if ready():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.002)
    return False


def leftovers(directory: Path) -> list[str]:
    """Hidden temporary names an interrupted atomic write left behind."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# -- kgedge.atomic itself: a stdlib-only child killed at random moments and at exact points --------
WRITER = textwrap.dedent("""
    import hashlib, json, os, random, signal, sys
    from pathlib import Path
    import kgedge.atomic as atomic
    target, kind, point = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

    def payload(version):
        pad = "x" * random.randint(10_000, 200_000)
        return json.dumps({"version": version, "pad": pad, "sha": hashlib.sha256(pad.encode()).hexdigest()})

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "before-rename":
        real_replace = os.replace
        os.replace = lambda *a, **k: die()
    if point == "before-swap":
        atomic._exchange = lambda a, b: die()
    if point == "after-swap":
        real_exchange = atomic._exchange
        atomic._exchange = lambda a, b: (real_exchange(a, b), die())
    print("ready", flush=True)
    for version in range(1, 10**9):
        if kind == "file":
            with atomic.atomic_path(target) as tmp:
                data = payload(version).encode()
                with open(tmp, "wb") as handle:
                    handle.write(data[: len(data) // 2])
                    if point == "during-write":
                        handle.flush()
                        die()
                    handle.write(data[len(data) // 2 :])
        else:
            with atomic.atomic_directory(target, overwrite=True) as tmp:
                for name in ("a.json", "b.json", "c.json"):
                    (tmp / name).write_text(payload(version))
                    if point == "during-write" and name == "b.json":
                        die()
""")


def _version_of(path: Path) -> int:
    """The version a complete payload holds; raises if the file is partial or corrupted."""
    record = json.loads(path.read_text())
    assert __import__("hashlib").sha256(record["pad"].encode()).hexdigest() == record["sha"]
    return record["version"]


def check_atomic_target(target: Path, kind: str) -> int:
    """The target is complete: one file, or a directory whose three files hold one version."""
    if kind == "file":
        return _version_of(target)
    versions = {_version_of(target / name) for name in ("a.json", "b.json", "c.json")}
    assert len(versions) == 1 and sorted(p.name for p in target.iterdir()) == ["a.json", "b.json", "c.json"]
    return versions.pop()


@dataclass
class AtomicKills:
    tried: int = 0
    survived: int = 0
    leftovers: list[str] = field(default_factory=list)


def _seed(target: Path, kind: str) -> None:
    """Version 0 of the target, written whole: the good output that a crash must not destroy."""
    import hashlib

    from kgedge.atomic import atomic_directory

    record = json.dumps({"version": 0, "pad": "x", "sha": hashlib.sha256(b"x").hexdigest()})
    if kind == "file":
        target.write_text(record)
        return
    with atomic_directory(target) as tmp:
        for name in ("a.json", "b.json", "c.json"):
            (tmp / name).write_text(record)


def kill_atomic_writers(root: Path, kind: str, points: list[str], random_kills: int, seed: int = 0) -> AtomicKills:
    """Kill a child rewriting ``root/target`` (a file or a directory) at each exact point, then at random moments."""
    rng, report = random.Random(seed), AtomicKills()
    target = root / f"target-{kind}"
    _seed(target, kind)
    for point in points + ["loop"] * random_kills:
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(target), kind, point], env=ENV,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        if point == "loop":
            time.sleep(rng.uniform(0.01, 0.25))
            child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        report.tried += 1
        assert child.returncode == -signal.SIGKILL, point
        version = check_atomic_target(target, kind)  # complete, old or new, never partial
        assert version == 0 if point in ("during-write", "before-rename", "before-swap") else version >= 0
        report.survived += 1
        report.leftovers += leftovers(root)
        for name in leftovers(root):  # never shadows: the target's own name is never hidden
            assert name.startswith(f".{target.name}.") and name.endswith(".tmp"), name
    return report


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_atomic_writes_survive_sigkill_at_any_moment(tmp_path: Path, kind: str) -> None:
    points = ["during-write", "before-rename"] if kind == "file" else ["during-write", "before-swap", "after-swap"]
    report = kill_atomic_writers(tmp_path, kind, points, random_kills=3)
    assert report.tried == report.survived == len(points) + 3


# -- real training, compression and export runs killed --------------------------------------------
TRAIN = ("--model", "distmult", "--dim", "16", "--lr", "0.03", "--epochs", "60", "--seed", "0", "--device", "cpu", "--json")
#: (name, hook point or None for an outside kill, when an outside kill fires)
TRAIN_POINTS = [
    ("first checkpoint exists (outside kill)", None, "first-checkpoint"),
    ("3rd resume state seen (outside kill)", None, "resume-3"),
    ("mid-write of the 2nd checkpoint", "ckpt-write:2", None),
    ("before the rename of the 3rd checkpoint", "ckpt-rename:3", None),
    ("between the 2nd checkpoint and its resume state", "after-ckpt:2", None),
    ("mid-write of the 4th resume state", "resume-write:4", None),
]


def write_shop_kg(directory: Path) -> Path:
    """A 300-entity shop KG on which validation MRR improves for ~60 epochs (many checkpoints)."""
    from kgedge.data.generate import ShopConfig, generate_shop_kg
    from kgedge.data.generate import write_shop_kg as write

    write(generate_shop_kg(ShopConfig(num_entities=300, seed=0)), directory)
    return directory


def same_checkpoint(a: Path, b: Path) -> bool:
    from kgedge.train.checkpoint import load_checkpoint

    one, two = load_checkpoint(a), load_checkpoint(b)
    state_one, state_two = one.model.state_dict(), two.model.state_dict()
    return (one.metadata.get("epoch") == two.metadata.get("epoch") and state_one.keys() == state_two.keys()
            and all(bool((state_one[k] == state_two[k]).all()) for k in state_one))


def _resume_seen(resume: Path, count: int) -> Callable[[], bool]:
    stamps: set[tuple[int, int]] = set()

    def ready() -> bool:
        try:
            info = resume.stat()
        except FileNotFoundError:
            return False
        stamps.add((info.st_ino, info.st_mtime_ns))
        return len(stamps) >= count

    return ready


def crash_training(work: Path, data: Path, reference: Path, name: str, point: str | None, when: str | None) -> dict[str, Any]:
    """Kill one training run at ``point`` / ``when``, check what is on disk, resume, compare with ``reference``."""
    from kgedge.train.checkpoint import load_checkpoint, load_resume_state, resume_path

    work.mkdir(parents=True)
    out = work / "m.ckpt"
    run = kgedge(point or "none", "train", "--data", data, "--out", out, *TRAIN, cwd=work)
    if point is None:
        ready = (lambda: out.exists()) if when == "first-checkpoint" else _resume_seen(resume_path(out), 3)
        killed = wait_for(run, ready)
    else:
        run.communicate(timeout=600)
        killed = run.returncode == -signal.SIGKILL
    record: dict[str, Any] = {"point": name, "killed": killed, "leftovers": leftovers(work)}
    if out.exists():
        record["checkpoint_epoch"] = load_checkpoint(out).metadata["epoch"]  # never partial: it loads
    state = load_resume_state(out)
    record["resume_epoch"] = None if state is None else int(state["epoch"])  # type: ignore[arg-type]
    resumed = kgedge("none", "train", "--data", data, "--out", out, *TRAIN, "--resume", cwd=work)
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    record["resumed_epochs"] = json.loads(stdout)["epochs"]
    record["same_as_uninterrupted"] = same_checkpoint(out, reference)
    record["survived"] = killed and record["same_as_uninterrupted"]
    return record


@pytest.fixture(scope="module")
def training(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The shop KG and the checkpoint of an uninterrupted run (same settings, same seed)."""
    root = tmp_path_factory.mktemp("train")
    data = write_shop_kg(root / "shop")
    reference = root / "reference.ckpt"
    run = kgedge("none", "train", "--data", data, "--out", reference, *TRAIN, cwd=root)
    _, stderr = run.communicate(timeout=600)
    assert run.returncode == 0, stderr
    return data, reference


@pytest.mark.slow
@pytest.mark.parametrize(("name", "point", "when"), TRAIN_POINTS, ids=[p[0] for p in TRAIN_POINTS])
def test_training_killed_keeps_its_checkpoint_and_resumes_exactly(
    training: tuple[Path, Path], tmp_path: Path, name: str, point: str | None, when: str | None
) -> None:
    data, reference = training
    record = crash_training(tmp_path / "run", data, reference, name, point, when)
    assert record["killed"], "the run finished before the crash point"
    assert "checkpoint_epoch" in record  # every point comes after the first checkpoint
    assert all(n.endswith(".tmp") and n.startswith(".m.ckpt.") for n in record["leftovers"])
    assert record["same_as_uninterrupted"], record


def crash_compression(work: Path, data: Path, teacher: Path, point: str) -> dict[str, Any]:
    """Kill ``kgedge compress`` over an existing student; the old student must stay as it was."""
    from kgedge.train.checkpoint import load_checkpoint

    work.mkdir(parents=True)
    recipe = work / "tiny.toml"
    recipe.write_text('name = "tiny"\nexport_bits = 8\n[[steps]]\nkind = "distill"\ndim = 8\nepochs = 30\n'
                      '[[steps]]\nkind = "qat"\nbits = 8\nepochs = 10\n')
    student = work / "student.ckpt"
    student.write_bytes(teacher.read_bytes())  # the previous good output
    before = student.read_bytes()
    run = kgedge("none" if point == "during-qat" else point, "compress", "--teacher", teacher, "--data", data,
                 "--out", student, "--recipe", recipe, cwd=work)
    if point == "during-qat":  # outside kill once the distillation step has been reported
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(run.stderr.readline, "")), daemon=True)  # type: ignore[union-attr]
        reader.start()
        killed = wait_for(run, lambda: any("1:distill" in line for line in list(lines)))
    else:
        run.communicate(timeout=600)
        killed = run.returncode == -signal.SIGKILL
    load_checkpoint(student)
    intact = student.read_bytes() == before
    return {"point": f"compress: {point}", "killed": killed, "intact": intact, "leftovers": leftovers(work),
            "survived": killed and intact}


def crash_export(work: Path, data: Path, checkpoint: Path, point: str) -> dict[str, Any]:
    """Kill ``kgedge export --overwrite`` over a good bundle; a complete bundle must be at ``--out``."""
    work.mkdir(parents=True)
    bundle = work / "bundle"
    first = kgedge("none", "export", checkpoint, "--profile", "portable", "--out", bundle, cwd=work)
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    run = kgedge(point, "export", checkpoint, "--profile", "portable", "--out", bundle, "--data", data,
                 "--overwrite", cwd=work)
    run.communicate(timeout=600)
    killed = run.returncode == -signal.SIGKILL
    model = EdgeModel.load(bundle)  # old (no --data: empty seen index) or new (train index), never partial
    which = {"empty": "old", "train": "new"}[model.manifest["seen_index"]]
    expected = "new" if point == "after-swap" else "old"
    return {"point": f"export: {point}", "killed": killed, "bundle": which, "leftovers": leftovers(work),
            "survived": killed and which == expected}


@pytest.mark.slow
@pytest.mark.parametrize("point", ["student-write:1", "during-qat"])
def test_compression_killed_leaves_the_previous_student(training: tuple[Path, Path], tmp_path: Path, point: str) -> None:
    data, teacher = training
    record = crash_compression(tmp_path / "run", data, teacher, point)
    assert record["survived"], record


@pytest.mark.slow
@pytest.mark.parametrize("point", ["bundle-write:2", "bundle-swap", "after-swap"])
def test_export_killed_leaves_a_complete_bundle(training: tuple[Path, Path], tmp_path: Path, point: str) -> None:
    data, checkpoint = training
    record = crash_export(tmp_path / "run", data, checkpoint, point)
    assert record["survived"], record
    assert all(n.startswith(".bundle.") for n in record["leftovers"])


# -- load: one model, many threads and processes; kgedge serve under a local client ---------------
def rss_kib() -> int:
    """Resident memory of this process (KiB)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def workload(model: EdgeModel) -> list[tuple[str, tuple[Any, ...]]]:
    """A fixed mix of calls: every entity against two relations, every user's recommendations, a batch."""
    users = [e for e in model.entities if e.startswith("user_")]
    calls: list[tuple[str, tuple[Any, ...]]] = [("answer", (e, r, 5)) for e in model.entities for r in model.relations[:2]]
    calls += [("recommend", (u, 4)) for u in users]
    calls.append(("topk", (list(range(model.num_entities)), [0] * model.num_entities, 6)))
    return calls


def call(model: EdgeModel, name: str, args: tuple[Any, ...]) -> Any:
    if name == "topk":
        ids, scores = model.topk(np.array(args[0]), np.array(args[1]), args[2])
        return [ids.tolist(), scores.tolist()]
    return [list(pair) for pair in getattr(model, name)(*args)]


def hammer_threads(model: EdgeModel, threads: int = 8, seconds: float = 2.0) -> dict[str, Any]:
    """``threads`` threads replay :func:`workload` against one model for ``seconds``; answers must match."""
    calls = workload(model)
    expected = [call(model, *c) for c in calls]  # also the warm-up before measuring memory
    for _ in range(3):
        [call(model, *c) for c in calls]
    before = rss_kib()
    counts = {"queries": 0, "errors": 0, "mismatches": 0}
    lock, start = threading.Lock(), threading.Barrier(threads)

    def work(offset: int) -> None:
        done = errors = wrong = 0
        start.wait()
        deadline = time.monotonic() + seconds
        i = offset
        while time.monotonic() < deadline:
            index = i % len(calls)
            try:
                wrong += call(model, *calls[index]) != expected[index]
            except Exception:  # noqa: BLE001 (counted: there must be none)
                errors += 1
            done, i = done + 1, i + 7
        with lock:
            counts["queries"] += done
            counts["errors"] += errors
            counts["mismatches"] += wrong

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    return {"threads": threads, "seconds": seconds, **counts, "rss_before_kib": before, "rss_after_kib": rss_kib()}


PROCESS_WORKER = "\n".join([
    "import json, os, sys, time", "from pathlib import Path", "from typing import Any", "import numpy as np",
    "from kgedge.runtime import EdgeModel",
    *(inspect.getsource(f) for f in (rss_kib, workload, call)), textwrap.dedent("""
    model = EdgeModel.load(sys.argv[2])
    expected, seconds = json.loads(Path(sys.argv[3]).read_text()), float(sys.argv[4])
    calls = workload(model)
    for c in calls:
        call(model, *c)
    before, done, errors, wrong, i = rss_kib(), 0, 0, 0, int(sys.argv[5])
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            wrong += call(model, *calls[i % len(calls)]) != expected[i % len(calls)]
        except Exception:
            errors += 1
        done, i = done + 1, i + 7
    print(json.dumps({"queries": done, "errors": errors, "mismatches": wrong, "rss_before_kib": before,
                      "rss_after_kib": rss_kib()}))
""")])


def hammer_processes(bundle: Path, work: Path, processes: int = 3, seconds: float = 2.0) -> dict[str, Any]:
    """``processes`` processes each load ``bundle`` and replay the workload; answers must match this one's."""
    model = EdgeModel.load(bundle)
    expected = work / "expected.json"
    expected.write_text(json.dumps([call(model, *c) for c in workload(model)]))
    children = [subprocess.Popen([sys.executable, "-c", PROCESS_WORKER, str(Path(__file__).parent), str(bundle),
                                  str(expected), str(seconds), str(i)], env=ENV, stdout=subprocess.PIPE, text=True)
                for i in range(processes)]
    results = []
    for child in children:
        out, _ = child.communicate(timeout=300)
        assert child.returncode == 0
        results.append(json.loads(out))
    total = {key: sum(r[key] for r in results) for key in ("queries", "errors", "mismatches")}
    return {"processes": processes, "seconds": seconds, **total, "per_process": results}


def serve_load(bundle: Path, clients: int = 4, seconds: float = 2.0) -> dict[str, Any]:
    """Start ``kgedge serve`` on 127.0.0.1, send requests from ``clients`` threads for ``seconds``."""
    import http.client

    model = EdgeModel.load(bundle)
    users = [e for e in model.entities if e.startswith("user_")]
    expected = {u: [{"name": n, "score": s} for n, s in model.recommend(u, k=5)] for u in users}
    server = subprocess.Popen([sys.executable, "-m", "kgedge", "serve", str(bundle), "--port", "0"], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        host, port = line.split("http://")[1].split()[0].rsplit(":", 1)
        assert host == "127.0.0.1", line  # loopback only
        counts = _Tally()

        def client(offset: int) -> None:
            deadline, i = time.monotonic() + seconds, offset
            while time.monotonic() < deadline:
                user = users[i % len(users)]
                try:
                    conn = http.client.HTTPConnection(host, int(port), timeout=10)
                    conn.request("POST", "/recommend", body=json.dumps({"user": user, "k": 5}))
                    response = conn.getresponse()
                    body = json.loads(response.read())
                    conn.close()
                    ok = response.status == 200 and body["results"] == expected[user]
                except Exception:  # noqa: BLE001 (counted)
                    ok = False
                counts.add(ok)
                i += 1

        started = time.monotonic()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(client, range(clients)))
        elapsed = time.monotonic() - started
        health = http.client.HTTPConnection(host, int(port), timeout=10)
        health.request("GET", "/health")
        alive = health.getresponse().status == 200
    finally:
        server.send_signal(signal.SIGTERM)  # SIGINT may be ignored: a test run started as a background job
        server.communicate(timeout=30)
    return {"clients": clients, "seconds": round(elapsed, 2), "requests": counts.total, "errors": counts.bad,
            "requests_per_second": round(counts.total / elapsed, 1), "alive_after": alive}


class _Tally:
    """Thread-safe count of requests and failures."""

    def __init__(self) -> None:
        self.total = self.bad = 0
        self._lock = threading.Lock()

    def add(self, ok: bool) -> None:
        with self._lock:
            self.total += 1
            self.bad += not ok


RSS_MARGIN_KIB = 8 * 1024  # thread stacks and allocator arenas; a leak per query would be far more


def test_one_model_from_8_threads_answers_as_sequentially_with_flat_memory(tiny: TinyBundle) -> None:  # noqa: F811
    report = hammer_threads(EdgeModel.load(tiny.path), threads=8, seconds=1.0)
    assert report["queries"] > 100 and report["errors"] == report["mismatches"] == 0, report
    assert report["rss_after_kib"] - report["rss_before_kib"] < RSS_MARGIN_KIB, report


def test_several_processes_answer_as_this_one(tiny: TinyBundle, tmp_path: Path) -> None:  # noqa: F811
    report = hammer_processes(tiny.path, tmp_path, processes=3, seconds=1.0)
    assert report["queries"] > 100 and report["errors"] == report["mismatches"] == 0, report
    for child in report["per_process"]:
        assert child["rss_after_kib"] - child["rss_before_kib"] < RSS_MARGIN_KIB, child


def test_serve_under_load_answers_every_request(tiny: TinyBundle) -> None:  # noqa: F811
    report = serve_load(tiny.path, clients=4, seconds=1.0)
    assert report["requests"] > 20 and report["errors"] == 0 and report["alive_after"], report


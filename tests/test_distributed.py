"""Tests for kgedge.train.distributed: sharding, set-up errors, and 2 CPU processes (gloo, loopback)
making the same updates as one process with the same global batch, through a resume too."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import REPO_ROOT, permutation_triples

from kgedge.data.kg import KnowledgeGraph, load_kg
from kgedge.evaluate import evaluate_link_prediction
from kgedge.models import ModelConfig
from kgedge.train.config import default_train_config
from kgedge.train.distributed import DistributedSetupError, process_group, shard_rows, train_distributed
from kgedge.train.scorer import model_scorer
from kgedge.train.trainer import train_model

WORLD = 2
# 27 does not divide the 2 x 100 reciprocal queries nor by 2 ranks: uneven shards and a short last batch
# with a relation temperature: DDP averages its gradient too, else the ranks' models would drift apart
SETTINGS = {"epochs": 20, "batch_size": 27, "eval_every": 5, "patience": 10, "seed": 3,
            "relation_temperature": True}


def _write(directory: Path) -> Path:
    directory.mkdir(parents=True)
    for split, rows in permutation_triples().items():
        (directory / f"{split}.txt").write_text("".join("\t".join(t) + "\n" for t in rows), encoding="utf-8")
    return directory


def _model_config(kg: KnowledgeGraph) -> ModelConfig:
    return ModelConfig("complex", kg.num_entities, 2 * kg.num_relations, 8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("n", [1, 2, 3, 7, 27, 64])
def test_shards_cover_the_global_batch_once_and_weights_average_to_one(n: int) -> None:
    rows = torch.randperm(1000)[:n]
    shards = [shard_rows(rows, rank, WORLD) for rank in range(WORLD)]
    used = torch.cat([r for r, w in shards if w > 0])
    assert sorted(used.tolist()) == sorted(rows.tolist())
    # DDP averages over ranks: sum_r w_r * mean_r / W must be the global mean
    values = torch.rand(1000, dtype=torch.float64)
    mixed = sum(w * values[r].mean() for r, w in shards) / WORLD
    assert torch.isclose(mixed, values[rows].mean())


def test_process_group_outside_torchrun_says_how_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(DistributedSetupError, match="torchrun --nproc_per_node"):
        with process_group("cpu"):
            pass


def _worker(rank: int, port: int, kg_dir: str, out_dir: str) -> None:
    """One rank: a plain 20-epoch run, then 10 epochs with a checkpoint and a resumed run to 20."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    kg = load_kg(Path(kg_dir))
    ckpt = Path(out_dir) / "dist.ckpt"
    steps = {"plain": 0, "resumed": 0}

    def counter(key: str):  # noqa: ANN202
        def on_step(*_: object) -> None:
            steps[key] += 1
        return on_step

    with process_group("cpu") as context:
        config = default_train_config("complex", **SETTINGS)
        plain = train_distributed(kg, _model_config(kg), config, context, on_step=counter("plain"))
        train_distributed(kg, _model_config(kg), config.updated(epochs=10), context, out=ckpt,
                          on_step=counter("resumed"))
        resumed = train_distributed(kg, _model_config(kg), config, context, out=ckpt, resume=True,
                                    on_step=counter("resumed"))
    torch.save({
        "plain": plain.model.state_dict(), "resumed": resumed.model.state_dict(), "steps": steps,
        "history": [h["mrr"] for h in plain.history], "best_epoch": plain.best_epoch,
    }, Path(out_dir) / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_processes_make_the_updates_of_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    kg_dir = _write(tmp_path / "perm")
    mp.spawn(_worker, args=(_free_port(), str(kg_dir), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    kg = load_kg(kg_dir)
    config = default_train_config("complex", **SETTINGS)
    single_steps = []
    single = train_model(kg, _model_config(kg), config, on_step=lambda *a: single_steps.append(a))
    expected = single.model.state_dict()
    for result in ranks:
        assert result["steps"]["plain"] == len(single_steps) == result["steps"]["resumed"]
        assert result["best_epoch"] == single.best_epoch
        for run in ("plain", "resumed"):
            for name, tensor in expected.items():  # equal up to float summation order, 140 Adagrad steps on
                error = (result[run][name] - tensor).norm() / tensor.norm()
                assert error < 1e-4, (run, name, float(error))
    assert ranks[0]["history"] == pytest.approx([h["mrr"] for h in single.history], abs=1e-3)
    test_mrr = evaluate_link_prediction(model_scorer(single.model), kg, "test")["mrr"]
    assert test_mrr > 0.5  # it learnt: the comparison is not between two untrained models
    # rank 0 alone wrote: the checkpoint, the resume state, nothing half-written
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("dist", ".dist"))) == [
        "dist.ckpt", "dist.ckpt.resume.pt"]


def test_cli_distributed_outside_torchrun_is_a_user_error(permutation_kg_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    done = subprocess.run(
        [sys.executable, "-m", "kgedge", "train", "--data", str(permutation_kg_dir), "--model", "complex",
         "--dim", "8", "--epochs", "1", "--out", str(tmp_path / "m.ckpt"), "--distributed"],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "torchrun --nproc_per_node" in done.stderr


@pytest.mark.slow
def test_torchrun_two_processes_train_from_the_cli(permutation_kg_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.ckpt"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={_free_port()}", "-m", "kgedge", "train", "--data", str(permutation_kg_dir),
         "--model", "complex", "--dim", "8", "--epochs", "10", "--batch-size", "32", "--device", "cpu",
         "--out", str(out), "--json"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)  # rank 0 alone prints
    assert summary["processes"] == 2 and summary["epochs"] == 10
    assert out.is_file()

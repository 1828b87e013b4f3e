"""Tests for kgedge.train.checkpoint: round trips, corrupted and foreign files, atomic writes, resume state."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from kgedge.atomic import atomic_directory
from kgedge.models import ModelConfig, build
from kgedge.train import checkpoint as ckpt
from kgedge.train.checkpoint import (
    Checkpoint,
    CheckpointError,
    Vocabulary,
    load_checkpoint,
    load_resume_state,
    resume_path,
    save_checkpoint,
    save_resume_state,
)

KGE_MODELS = ("transe", "distmult", "complex", "rotate")
VOCAB = Vocabulary(
    entities=["alice", "bob", "café ☕", "dave", "eve"],
    relations=["knows", "likes"],
    entity_types=np.array([1, 1, 0, 2, 1]),
    type_names=["entity", "person", "robot"],
)
METADATA = {"data": "tiny", "epoch": 7, "valid": {"mrr": 0.5}, "train_config": {"lr": 0.1}}


def _model(name: str = "complex", seed: int = 0, dim: int = 3):  # noqa: ANN202
    torch.manual_seed(seed)
    return build(ModelConfig(name, len(VOCAB.entities), 2 * len(VOCAB.relations), dim, init_scale=0.5)).eval()


def _all_scores(model: torch.nn.Module) -> torch.Tensor:
    heads = torch.arange(len(VOCAB.entities)).repeat_interleave(2 * len(VOCAB.relations))
    relations = torch.arange(2 * len(VOCAB.relations)).repeat(len(VOCAB.entities))
    with torch.no_grad():
        return model.score_all_tails(heads, relations)


def _same(a: Checkpoint, model: torch.nn.Module) -> None:
    assert torch.equal(_all_scores(a.model), _all_scores(model))
    assert a.config == model.config
    assert a.vocab.entities == VOCAB.entities and a.vocab.relations == VOCAB.relations
    assert a.vocab.type_names == VOCAB.type_names
    np.testing.assert_array_equal(a.vocab.entity_types, VOCAB.entity_types)
    assert a.metadata == METADATA


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    model = _model()
    path = tmp_path / "model.ckpt"
    save_checkpoint(path, model, VOCAB, METADATA)
    return path, model


@pytest.mark.parametrize("name", KGE_MODELS)
def test_round_trip_preserves_scores_vocab_and_metadata(tmp_path: Path, name: str) -> None:
    model = _model(name)
    save_checkpoint(tmp_path / "m.ckpt", model, VOCAB, METADATA)
    loaded = load_checkpoint(tmp_path / "m.ckpt")
    _same(loaded, model)
    assert not loaded.model.training
    assert type(loaded.model) is type(model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt"]  # no temporary file left behind


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "absent.ckpt")


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.01, 0.1, 0.5, 0.9, 0.999])
def test_truncated_file_raises_checkpoint_error(saved: tuple[Path, torch.nn.Module], fraction: float) -> None:
    path, _ = saved
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * fraction)])
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


# every byte is slow (a few seconds); a stride of 7 still hits the length, the header and every table
_STRIDES = [7, pytest.param(1, marks=pytest.mark.slow)]


@pytest.mark.parametrize("stride", _STRIDES)
def test_flipped_bytes_raise_checkpoint_error(tmp_path: Path, stride: int) -> None:
    model = _model("distmult", dim=2)
    good = tmp_path / "good.ckpt"
    save_checkpoint(good, model, VOCAB, METADATA)
    raw = good.read_bytes()
    bad = tmp_path / "bad.ckpt"
    for position in [*range(8), *range(8, len(raw), stride)]:
        flipped = bytearray(raw)
        flipped[position] ^= 0xFF
        bad.write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError):
            load_checkpoint(bad)


def test_single_bit_flips_in_the_weights_are_caught_by_the_checksum(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    raw = path.read_bytes()
    header_end = 8 + int.from_bytes(raw[:8], "little")
    for position in range(header_end, len(raw), 7):
        flipped = bytearray(raw)
        flipped[position] ^= 0x01  # still a valid float: only a checksum can tell
        path.write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError, match="checksum mismatch"):
            load_checkpoint(path)


@pytest.mark.parametrize("stride", _STRIDES)
def test_single_bit_flips_in_the_header_never_load_a_different_model(
    saved: tuple[Path, torch.nn.Module], stride: int
) -> None:
    path, model = saved
    raw = path.read_bytes()
    header_end = 8 + int.from_bytes(raw[:8], "little")
    loaded_anyway = 0
    for position in range(0, header_end, stride):
        flipped = bytearray(raw)
        flipped[position] ^= 0x01
        path.write_bytes(bytes(flipped))
        try:
            loaded = load_checkpoint(path)
        except CheckpointError:
            continue
        _same(loaded, model)  # e.g. a flip in the JSON key "sha256" itself: nothing else changed
        loaded_anyway += 1
    assert loaded_anyway < 10


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        (None, "not a kgedge checkpoint"),
        ({"format": "pytorch"}, r"not a kgedge checkpoint \(format='pytorch'\)"),
        ({"format": "kgedge-checkpoint", "format_version": "9"}, "format version '9'; this kgedge reads 1"),
        ({"format": "kgedge-checkpoint", "format_version": "1"}, "inconsistent checkpoint"),
    ],
)
def test_foreign_safetensors_file_is_refused(tmp_path: Path, metadata: dict[str, str] | None, match: str) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2, 3)}, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_not_a_safetensors_file(tmp_path: Path) -> None:
    path = tmp_path / "model.ckpt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint"):
        load_checkpoint(path)


def test_tables_that_do_not_fit_the_config_are_refused(tmp_path: Path) -> None:
    model = _model("distmult")
    path = tmp_path / "m.ckpt"
    save_checkpoint(path, model, VOCAB, METADATA)
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        header = dict(handle.metadata())
    config = json.loads(header["model_config"])
    config["dim"] = 4
    header["model_config"] = json.dumps(config)
    del header["sha256"]  # as if written by a kgedge without checksums: the config check still holds
    save_file(load_file(str(path)), str(path), metadata=header)
    with pytest.raises(CheckpointError, match="inconsistent checkpoint"):
        load_checkpoint(path)


def test_failed_write_leaves_the_old_checkpoint_intact(
    saved: tuple[Path, torch.nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, model = saved
    before = path.read_bytes()

    def half_written(tensors: dict[str, torch.Tensor], filename: str, metadata: dict[str, str]) -> None:
        with open(filename, "wb") as handle:
            handle.write(b"\x00" * 100)  # a partial file, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", half_written)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, _model(seed=1), VOCAB, {"epoch": 99})
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    _same(load_checkpoint(path), model)


def test_atomic_outputs_get_the_permissions_of_a_plain_write(tmp_path: Path) -> None:
    """A checkpoint (or bundle directory) must be as readable as any file the user writes, not 0o600."""
    plain_file, plain_dir = tmp_path / "plain.txt", tmp_path / "plain-dir"
    plain_file.write_text("x")
    plain_dir.mkdir()
    save_checkpoint(tmp_path / "m.ckpt", _model(), VOCAB, METADATA)
    save_resume_state(tmp_path / "m.ckpt", {"epoch": 1})
    with atomic_directory(tmp_path / "bundle") as directory:
        (directory / "file").write_text("y")

    def mode(p: Path) -> int:
        return p.stat().st_mode & 0o777

    assert mode(tmp_path / "m.ckpt") == mode(resume_path(tmp_path / "m.ckpt")) == mode(plain_file)
    assert mode(tmp_path / "bundle") == mode(plain_dir)


def test_stale_temporaries_of_a_killed_write_are_swept_by_the_next_write(tmp_path: Path) -> None:
    from kgedge.atomic import STALE_AFTER_S, atomic_path

    target = tmp_path / "m.ckpt"
    old = time.time() - STALE_AFTER_S - 60
    stale_file, stale_dir = tmp_path / ".m.ckpt.0123456789abcdef.tmp", tmp_path / ".bundle.fedcba9876543210.tmp"
    stale_file.write_bytes(b"half a checkpoint")
    stale_dir.mkdir()
    (stale_dir / "model.onnx").write_bytes(b"half a model")
    recent = tmp_path / ".m.ckpt.aaaaaaaaaaaaaaaa.tmp"  # another process may be writing it now
    recent.write_bytes(b"in progress")
    unrelated = tmp_path / ".m.ckpt.notours.tmp"
    unrelated.write_bytes(b"x")
    for path in (stale_file, stale_dir, unrelated):
        os.utime(path, (old, old))
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert not stale_file.exists() and recent.exists() and unrelated.exists() and target.read_bytes() == b"new"
    assert stale_dir.exists()  # another target's leftovers wait for that target's next write
    with atomic_directory(tmp_path / "bundle") as directory:
        (directory / "model.onnx").write_bytes(b"model")
    assert not stale_dir.exists() and (tmp_path / "bundle" / "model.onnx").read_bytes() == b"model"


def test_resume_state_round_trip_with_weights_only(tmp_path: Path) -> None:
    model = _model()
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.1)
    model.score_all_tails(torch.tensor([0, 1]), torch.tensor([2, 3])).sum().backward()
    optimizer.step()
    state = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "generator": torch.Generator().manual_seed(3).get_state(), "epoch": 4, "best_mrr": 0.25,
        "best_valid": {"mrr": 0.25, "epoch": 4},
    }
    out = tmp_path / "run.ckpt"
    assert load_resume_state(out) is None
    save_resume_state(out, state)
    assert resume_path(out) == tmp_path / "run.ckpt.resume.pt"
    loaded = load_resume_state(out)
    assert loaded is not None
    assert loaded["epoch"] == 4 and loaded["best_valid"] == {"mrr": 0.25, "epoch": 4}
    for key, value in model.state_dict().items():
        assert torch.equal(loaded["model"][key], value)  # type: ignore[index]
    restored = torch.optim.Adagrad(_model(seed=9).parameters(), lr=0.1)
    restored.load_state_dict(loaded["optimizer"])  # type: ignore[arg-type]
    assert torch.equal(torch.Generator().set_state(loaded["generator"]).get_state(), state["generator"])  # type: ignore[arg-type]


class _Payload:
    """Unpickling this would run code: a weights-only load must refuse it."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch PWNED",))


def test_resume_state_refuses_pickled_objects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run.ckpt"
    torch.save({"epoch": 1, "payload": _Payload()}, resume_path(out))
    with pytest.raises(CheckpointError, match="unreadable resume state"):
        load_resume_state(out)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("content", [b"", b"hello", "truncated"])
def test_corrupted_resume_state_raises_checkpoint_error(tmp_path: Path, content: bytes | str) -> None:
    out = tmp_path / "run.ckpt"
    if content == "truncated":
        save_resume_state(out, {"model": _model().state_dict(), "epoch": 1})
        raw = resume_path(out).read_bytes()
        content = raw[: len(raw) // 2]
    resume_path(out).write_bytes(content)  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match=f"{resume_path(out)}: .*delete it to train from the start"):
        load_resume_state(out)

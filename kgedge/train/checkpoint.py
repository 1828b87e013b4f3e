"""Checkpoints: safetensors (tensors + JSON metadata), never pickled objects.

A checkpoint holds the model's tables, its ``ModelConfig``, the vocabularies (so that export needs no
data set) and the metrics it reached. Training state for resuming is a separate ``.resume.pt`` file
read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from kgedge import __version__
from kgedge.atomic import atomic_path
from kgedge.data.kg import KnowledgeGraph
from kgedge.models import KGModel, ModelConfig, build

FORMAT = "kgedge-checkpoint"
FORMAT_VERSION = "1"
_VOCAB_KEYS = ("__entities__", "__relations__", "__type_names__")


class CheckpointError(ValueError):
    """A checkpoint cannot be read; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Vocabulary:
    """Names by id and entity types, as stored in checkpoints and bundles."""

    entities: list[str]
    relations: list[str]
    entity_types: np.ndarray  # (num_entities,) int64 into type_names
    type_names: list[str]

    @classmethod
    def of(cls, kg: KnowledgeGraph) -> Vocabulary:
        return cls(kg.entities, kg.relations, kg.entity_types, kg.type_names)


@dataclass
class Checkpoint:
    model: KGModel
    vocab: Vocabulary
    metadata: dict[str, object] = field(default_factory=dict)

    @property
    def config(self) -> ModelConfig:
        return self.model.config


def _encode_names(names: list[str]) -> torch.Tensor:
    return torch.frombuffer(bytearray("\n".join(names).encode("utf-8")), dtype=torch.uint8).clone()


def _decode_names(tensor: torch.Tensor) -> list[str]:
    text = bytes(tensor.numpy().tobytes()).decode("utf-8")
    return text.split("\n") if text else []


def _digest(tensors: dict[str, torch.Tensor], header: dict[str, str]) -> str:
    """SHA-256 of the header fields and of every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256(json.dumps({k: v for k, v in header.items() if k != "sha256"}, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"\n{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def save_checkpoint(path: Path, model: KGModel, vocab: Vocabulary, metadata: dict[str, object]) -> None:
    """Write ``path`` atomically (temporary file, then rename)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors["__entities__"] = _encode_names(vocab.entities)
    tensors["__relations__"] = _encode_names(vocab.relations)
    tensors["__type_names__"] = _encode_names(vocab.type_names)
    tensors["__entity_types__"] = torch.as_tensor(np.asarray(vocab.entity_types, dtype=np.int64))
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kgedge_version": __version__,
        "model_config": json.dumps(model.config.to_dict()),
        "metadata": json.dumps(metadata),
    }
    header["sha256"] = _digest(tensors, header)  # safetensors has no checksum: catch bit rot and truncation
    with atomic_path(Path(path)) as tmp:
        mode = tmp.stat().st_mode & 0o777  # a plain file's mode (umask applied)
        save_file(tensors, str(tmp), metadata=header)
        os.chmod(tmp, mode)  # safetensors recreates the file as 0o600


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: missing file, not a kgedge checkpoint, or tables that do not fit the config.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({err})") from None
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a kgedge checkpoint (format={header.get('format')!r})")
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {header.get('format_version')!r}; this kgedge reads {FORMAT_VERSION}"
        )
    if "sha256" in header and header["sha256"] != _digest(tensors, header):
        raise CheckpointError(f"{path}: checksum mismatch, the file is corrupted; copy it again or re-train")
    try:
        config = ModelConfig(**json.loads(header["model_config"]))
        metadata = json.loads(header.get("metadata", "{}"))
        vocab = Vocabulary(
            entities=_decode_names(tensors.pop("__entities__")),
            relations=_decode_names(tensors.pop("__relations__")),
            type_names=_decode_names(tensors.pop("__type_names__")),
            entity_types=tensors.pop("__entity_types__").numpy(),
        )
        model = build(config)
        model.load_state_dict(tensors, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: inconsistent checkpoint ({err})") from None
    if len(vocab.entities) != config.num_entities:
        raise CheckpointError(
            f"{path}: {len(vocab.entities)} entity names for a model of {config.num_entities} entities"
        )
    model.eval()
    return Checkpoint(model=model, vocab=vocab, metadata=metadata)


def resume_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".resume.pt")


def save_resume_state(path: Path, state: dict[str, object]) -> None:
    """Training state (model, optimizer, epoch, RNG) for resuming; plain tensors and numbers only."""
    with atomic_path(resume_path(path)) as tmp:
        torch.save(state, tmp)


def load_resume_state(path: Path) -> dict[str, object] | None:
    """The state saved beside ``path``, or None when there is none.

    Raises:
        CheckpointError: the file is not a readable resume state (corrupted, or holds pickled objects).
    """
    target = resume_path(path)
    if not target.is_file():
        return None
    try:
        state = torch.load(target, weights_only=True)
    except Exception as err:  # torch raises anything from KeyError to UnpicklingError on a bad file
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{target}: unreadable resume state ({reason}); delete it to train from the start") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{target}: not a resume state ({type(state).__name__}); delete it to train from the start")
    return state


def restore_training(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, object],
                     path: Path, temperature: torch.nn.Module | None = None) -> None:
    """Load a resume state's model, optimizer and (when the run learns one) relation temperature
    (``state`` from :func:`load_resume_state` of ``path``).

    Raises:
        CheckpointError: the optimizer state does not fit: other parameter groups (the state was written
            with or without a relation temperature that this run lacks or has), or a per-parameter state
            (Adagrad's sums, Adam's moments) without its parameter's shape, e.g. one written when RotatE
            trained phases: the next step would fail inside the optimizer.
    """
    mismatch = CheckpointError(f"{resume_path(path)}: its optimizer state does not fit this model's tables "
                               "(written by another kgedge version, for another model or other training "
                               "settings); delete it, or train without --resume")
    if (temperature is not None) != ("temperature" in state):
        raise mismatch
    model.load_state_dict(state["model"])  # type: ignore[arg-type]
    if temperature is not None:
        temperature.load_state_dict(state["temperature"])  # type: ignore[arg-type]
    try:
        optimizer.load_state_dict(state["optimizer"])  # type: ignore[arg-type]
    except ValueError as error:  # torch: "loaded state dict has a different number of parameter groups"
        raise mismatch from error
    for group in optimizer.param_groups:
        for param in group["params"]:
            for value in optimizer.state.get(param, {}).values():
                if torch.is_tensor(value) and value.dim() > 0 and value.shape != param.shape:
                    raise mismatch

"""Graph-model checkpoints as plain decoder checkpoints: what export and distillation read.

The exporter rebuilds a model's query in ONNX by model name from its entity and relation tables; a
graph model's name (``gcn``, ``gat``, ``rgcn``) has no such query, and the device must never run
message passing. :func:`save_materialized` writes the equivalent plain model (``distmult``,
``complex``, ...: the encoder's output as entity table, the decoder's relation table), whose scores
equal the graph model's.
"""

from __future__ import annotations

import logging
from pathlib import Path

from kgedge.models import build
from kgedge.models.graph_encoder import GraphEncoderModel, materialized_checkpoint
from kgedge.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


def materialize_checkpoint(checkpoint: Checkpoint) -> Checkpoint:
    """The plain-decoder twin of a graph-model checkpoint (a plain checkpoint is returned as is).

    The metadata keeps the original's and adds ``materialized_from`` (model name and options).
    """
    model = checkpoint.model
    if not isinstance(model, GraphEncoderModel):
        return checkpoint
    config, state = materialized_checkpoint(model)
    plain = build(config)
    plain.load_state_dict(state, strict=True)
    metadata = {**checkpoint.metadata,
                "materialized_from": {"model": model.config.model, "options": dict(model.config.options)}}
    return Checkpoint(model=plain.eval(), vocab=checkpoint.vocab, metadata=metadata)


def save_materialized(source: Path, out: Path) -> Checkpoint:
    """Read the checkpoint ``source``, write its plain-decoder twin to ``out`` (atomically), return it.

    Raises:
        CheckpointError: ``source`` is missing or unreadable.
    """
    result = materialize_checkpoint(load_checkpoint(Path(source)))
    save_checkpoint(Path(out), result.model, result.vocab, result.metadata)
    log.info("materialized %s as %s into %s", source, result.config.model, out)
    return result

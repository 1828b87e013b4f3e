"""onnxruntime session settings (from the manifest, overridable) and the session's I/O contract check."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from typing import Any, Final, Literal

import onnxruntime as ort

from kgedge.runtime.errors import BundleError

log = logging.getLogger(__name__)

OptimizationLevel = Literal["disable", "basic", "extended", "all"]
OPTIMIZATION_LEVELS: Final[dict[str, ort.GraphOptimizationLevel]] = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
#: graph input name -> onnxruntime type; the contract with ``kgedge.export``.
GRAPH_INPUTS: Final[dict[str, str]] = {
    "head": "tensor(int64)",
    "relation": "tensor(int64)",
    "k": "tensor(int64)",
    "allowed_types": "tensor(bool)",
    "exclude": "tensor(int64)",
}
GRAPH_OUTPUTS: Final[dict[str, str]] = {"ids": "tensor(int64)", "scores": "tensor(float)"}
#: The exporter's graphs also take ``masked`` (bool scalar): False, its default, runs TopK on the scores
#: without the type mask and the exclusions, and lets a run leave out the inputs that have a default
#: (``allowed_types``, ``exclude``). Bundles exported before it lack it and get every input on every run.
MASKED_INPUT: Final = "masked"
DEFAULTED_INPUTS: Final = frozenset({"allowed_types", "exclude", MASKED_INPUT})


@dataclass(frozen=True)
class SessionSettings:
    """How onnxruntime runs the graph.

    Attributes:
        intra_op_threads: threads inside one operator (the MatMul over all entities); 0 lets
            onnxruntime choose (one per physical core). Small devices often do best with 1-4.
        inter_op_threads: threads across independent operators; the graph is a chain, so 1 is usual.
        graph_optimization_level: ``disable``, ``basic``, ``extended`` or ``all``.
    """

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    graph_optimization_level: OptimizationLevel = "all"

    def __post_init__(self) -> None:
        for name in ("intra_op_threads", "inter_op_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1024:
                raise ValueError(f"SessionSettings.{name}={value!r} is invalid; allowed: an int 0..1024 (0 = onnxruntime default)")
        if not isinstance(self.graph_optimization_level, str) or self.graph_optimization_level not in OPTIMIZATION_LEVELS:
            raise ValueError(
                f"SessionSettings.graph_optimization_level={self.graph_optimization_level!r} is invalid; "
                f"allowed: {', '.join(OPTIMIZATION_LEVELS)}"
            )

    @classmethod
    def from_manifest(cls, session: Any, where: str) -> SessionSettings:
        """Read the manifest's ``session`` object.

        Raises:
            BundleError: a missing key or a bad value (the message names ``where``).
        """
        if not isinstance(session, dict):
            raise BundleError(f"{where}: 'session' must be an object; re-export the bundle")
        try:
            return cls(
                intra_op_threads=session["intra_op_num_threads"],
                inter_op_threads=session["inter_op_num_threads"],
                graph_optimization_level=session["graph_optimization_level"],
            )
        except KeyError as err:
            raise BundleError(f"{where}: 'session' lacks {err.args[0]!r}; re-export the bundle") from None
        except ValueError as err:
            raise BundleError(f"{where}: bad 'session' settings: {err}") from None

    def options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.graph_optimization_level = OPTIMIZATION_LEVELS[self.graph_optimization_level]
        options.log_severity_level = 3  # errors only: warnings about unused initializers are noise here
        return options


def create_session(model: bytes, settings: SessionSettings, where: str, num_types: int) -> ort.InferenceSession:
    """An onnxruntime CPU session of ``model`` whose inputs and outputs follow the bundle contract.

    Args:
        model: the bytes of ``model.onnx`` (already checksummed, so what was verified is what runs).
        num_types: ``len(manifest["types"])``, the length the graph's ``allowed_types`` must accept.

    Raises:
        BundleError: onnxruntime cannot load the graph, or its inputs/outputs differ from the contract.
    """
    options = settings.options()
    try:
        # A bundle's graph holds its weights. onnxruntime would read "external data" of a graph loaded from
        # bytes from the working directory, outside the checksummed bundle: resolve it in an empty folder.
        with tempfile.TemporaryDirectory(prefix="kgedge-no-external-data-") as nowhere:
            options.add_session_config_entry("session.model_external_initializers_file_folder_path", nowhere)
            session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own untyped exceptions (Fail, InvalidGraph, ...)
        raise BundleError(f"{where}: onnxruntime cannot load the graph ({err}); re-export the bundle") from None
    _forget_model_bytes(session)
    # inputs that have a default are "overridable initializers" to onnxruntime, not inputs
    inputs = {i.name: i for i in [*session.get_inputs(), *session.get_overridable_initializers()]}
    outputs = {o.name: o for o in session.get_outputs()}
    wanted_inputs = {**GRAPH_INPUTS, MASKED_INPUT: "tensor(bool)"} if MASKED_INPUT in inputs else GRAPH_INPUTS
    for kind, found, wanted in (("inputs", inputs, wanted_inputs), ("outputs", outputs, GRAPH_OUTPUTS)):
        types = {name: arg.type for name, arg in found.items()}
        if set(types) != set(wanted) or any(types[n] != t for n, t in wanted.items()):
            raise BundleError(f"{where}: graph {kind} are {types}, the bundle contract needs {dict(wanted)}; re-export the bundle")
    if MASKED_INPUT in inputs and not runs_plain(session):
        raise BundleError(f"{where}: graph input {MASKED_INPUT!r} needs defaults for {sorted(DEFAULTED_INPUTS)}; re-export the bundle")
    width = inputs["allowed_types"].shape[0] if inputs["allowed_types"].shape else None
    if isinstance(width, int) and width != num_types:
        raise BundleError(f"{where}: graph input allowed_types has {width} entries but the manifest lists {num_types} types")
    log.info("onnxruntime session ready (%s)", settings)
    return session


def runs_plain(session: ort.InferenceSession) -> bool:
    """Whether the graph takes ``masked`` and has defaults for every input a plain run leaves out."""
    return DEFAULTED_INPUTS <= {i.name for i in session.get_overridable_initializers()}


def _forget_model_bytes(session: ort.InferenceSession) -> None:
    """Drop the Python session's reference to the model bytes it was built from (the size of the table).

    onnxruntime keeps them only to build the session again when its providers change, by
    ``set_providers`` or by the fallback after an execution-provider failure. A CPU-only session has
    nothing to fall back to and the runtime never changes providers: turn the fallback off, then let
    the bytes go. The initialised C++ session holds its own copy of the weights.
    """
    session.disable_fallback()
    if getattr(session, "_model_bytes", None) is not None:  # a private attribute of onnxruntime's Python API
        session._model_bytes = None

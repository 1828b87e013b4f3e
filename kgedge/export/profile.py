"""Export profiles: per-target quantization and session settings, as TOML data.

Profiles live in ``export_profiles/*.toml`` (repo) or ``<prefix>/share/kgedge/export_profiles``
(installed); a user may pass the path of their own file. onnxruntime's string-keyed options are hidden
behind this typed record.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
import sys

from kgedge.quantization import SUPPORTED_BITS

FORMATS = ("float", "qoperator", "dequantize")
ARCHES = ("any", "x86_64", "aarch64")
TYPES = ("int8", "uint8")
OPT_LEVELS = ("disable", "basic", "extended", "all")


class ProfileError(ValueError):
    """A profile is unknown or malformed; the message names the field, the value and what is allowed."""


@dataclass(frozen=True)
class SessionSettings:
    intra_op_num_threads: int = 1
    inter_op_num_threads: int = 1
    graph_optimization_level: str = "all"

    def __post_init__(self) -> None:
        for name in ("intra_op_num_threads", "inter_op_num_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ProfileError(f"session.{name}={value!r}; allowed: an integer >= 0 (0 = onnxruntime decides)")
        if self.graph_optimization_level not in OPT_LEVELS:
            raise ProfileError(
                f"session.graph_optimization_level={self.graph_optimization_level!r}; allowed: {', '.join(OPT_LEVELS)}"
            )


@dataclass(frozen=True)
class ValidationThresholds:
    """What an export must reach to be written.

    Attributes:
        max_abs_score_diff: fp32 ONNX against torch, largest absolute score difference.
        topk, min_topk_overlap: mean |top-k(export) ∩ top-k(fp32)| / k over the probe queries.
        max_mrr_drop: relative MRR drop of the export against fp32 on the test split (when data is given).
    """

    max_abs_score_diff: float = 1e-3
    topk: int = 10
    min_topk_overlap: float = 0.95
    max_mrr_drop: float = 0.01

    def __post_init__(self) -> None:
        if not self.max_abs_score_diff > 0:
            raise ProfileError(f"validation.max_abs_score_diff={self.max_abs_score_diff!r}; allowed: > 0")
        if not (isinstance(self.topk, int) and self.topk >= 1):
            raise ProfileError(f"validation.topk={self.topk!r}; allowed: an integer >= 1")
        if not 0.0 <= self.min_topk_overlap <= 1.0:
            raise ProfileError(f"validation.min_topk_overlap={self.min_topk_overlap!r}; allowed: 0..1")
        if not 0.0 <= self.max_mrr_drop <= 1.0:
            raise ProfileError(f"validation.max_mrr_drop={self.max_mrr_drop!r}; allowed: 0..1")


@dataclass(frozen=True)
class ExportProfile:
    """One export target.

    Attributes:
        table_bits: 32 (fp32 tables) or 8 / 7 / 4 (per-row symmetric integer codes, see
            ``kgedge.quantization``).
        format: ``float``; ``qoperator`` (integer MatMulInteger on the table, per-row scales folded
            into the output); or ``dequantize`` (int8 storage, float MatMul after dequantizing: for
            measuring, it dequantizes the whole table on every query).
        weight_type: ``int8`` stores the symmetric codes as they are; ``uint8`` stores them shifted by
            128 (zero point 128), which makes onnxruntime use its u8·u8 kernel: no 16-bit saturation
            on x86 without VNNI, so the full 8 bits can be kept there.
        activation_type: integer type of the dynamically quantized query.
        cpu_flags: /proc/cpuinfo flags the target needs (used to tell whether this CPU can run it).
    """

    name: str
    description: str = ""
    arch: str = "any"
    opset: int = 18
    table_bits: int = 32
    format: str = "float"
    weight_type: str = "int8"
    activation_type: str = "uint8"
    per_row: bool = True
    cpu_flags: tuple[str, ...] = ()
    session: SessionSettings = field(default_factory=SessionSettings)
    validation: ValidationThresholds = field(default_factory=ValidationThresholds)

    def __post_init__(self) -> None:
        if self.arch not in ARCHES:
            raise ProfileError(f"arch={self.arch!r}; allowed: {', '.join(ARCHES)}")
        if not (isinstance(self.opset, int) and 18 <= self.opset <= 21):
            raise ProfileError(f"opset={self.opset!r}; allowed: 18..21 (exclusion needs ScatterElements min, opset 18)")
        if self.format not in FORMATS:
            raise ProfileError(f"format={self.format!r}; allowed: {', '.join(FORMATS)}")
        if self.format == "float" and self.table_bits != 32:
            raise ProfileError(f"table_bits={self.table_bits!r} with format='float'; allowed: 32")
        if self.format != "float" and self.table_bits not in SUPPORTED_BITS:
            raise ProfileError(f"table_bits={self.table_bits!r}; allowed: {', '.join(map(str, SUPPORTED_BITS))}")
        if self.weight_type not in TYPES:
            raise ProfileError(f"weight_type={self.weight_type!r}; allowed: {', '.join(TYPES)}")
        if self.weight_type == "uint8" and self.table_bits == 4:
            raise ProfileError("weight_type='uint8' with table_bits=4; 4-bit tables are stored as int8 codes")
        if self.activation_type not in TYPES:
            raise ProfileError(f"activation_type={self.activation_type!r}; allowed: {', '.join(TYPES)}")
        if not self.per_row:
            raise ProfileError("per_row=false is not supported: tables are quantized per row")

    @property
    def quantized(self) -> bool:
        return self.format != "float"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, object], source: str = "<dict>") -> ExportProfile:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ProfileError(f"{source}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        raw = dict(raw)
        try:
            raw["session"] = SessionSettings(**raw.get("session", {}))  # type: ignore[arg-type]
            raw["validation"] = ValidationThresholds(**raw.get("validation", {}))  # type: ignore[arg-type]
            flags = raw.get("cpu_flags", [])
            if not isinstance(flags, (list, tuple)) or not all(isinstance(f, str) and f.strip() for f in flags):
                raise ProfileError(f"cpu_flags={flags!r}; allowed: a list of /proc/cpuinfo flag names, "
                                   'e.g. ["avx2", "fma"]')
            raw["cpu_flags"] = tuple(flags)
            return cls(**raw)  # type: ignore[arg-type]
        except ProfileError as err:
            raise ProfileError(f"{source}: {err}") from None
        except TypeError as err:
            raise ProfileError(f"{source}: {err}") from None


def profile_dirs() -> list[Path]:
    """Where named profiles are looked up: the source tree, then the installed share directory."""
    return [Path(__file__).resolve().parents[2] / "export_profiles",
            Path(sys.prefix) / "share" / "kgedge" / "export_profiles"]


def available_profiles() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for directory in profile_dirs():
        for path in sorted(directory.glob("*.toml")) if directory.is_dir() else []:
            found.setdefault(path.stem, path)
    return found


def load_profile(path: Path) -> ExportProfile:
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # ValueError: bad UTF-8/TOML, an int of > 4300 digits
        raise ProfileError(f"{path}: cannot read profile ({err})") from None
    return ExportProfile.from_dict(raw, source=str(path))


def resolve_profile(spec: str | Path) -> ExportProfile:
    """A profile by name (``kgedge profiles`` lists them) or by the path of a TOML file."""
    path = Path(spec)
    if path.suffix == ".toml" and path.is_file():
        return load_profile(path)
    profiles = available_profiles()
    if str(spec) in profiles:
        return load_profile(profiles[str(spec)])
    raise ProfileError(f"unknown profile {str(spec)!r}; choose one of {', '.join(profiles) or '(none found)'} or pass a .toml file")


DEFAULT_PROFILE = "x86-avx2"


def profile_for_checkpoint(metadata: dict[str, object], fallback: str = DEFAULT_PROFILE) -> str:
    """The profile a checkpoint is exported with when none is named: ``int4`` for a student fine-tuned
    or meant for 4-bit tables (``kgedge compress``'s metadata), ``fallback`` otherwise."""
    bits = metadata.get("export_bits", metadata.get("qat_bits"))
    return "int4" if bits == 4 else fallback


def cpu_supports(profile: ExportProfile) -> bool:
    """Whether this machine can run ``profile`` at full speed (arch and CPU flags)."""
    import platform

    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    if profile.arch not in ("any", machine):
        return False
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return not profile.cpu_flags
    return all(flag in flags for flag in profile.cpu_flags)

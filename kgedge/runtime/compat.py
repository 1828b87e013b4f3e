"""Does this CPU compute a bundle's integer product exactly? Standard library only.

onnxruntime's u8·s8 kernel on x86 without VNNI adds pairs of products in 16 bits: a full-range int8
table (``weight_type = "int8"``, 8 bits, e.g. the ``arm64`` and ``x86-avx512-vnni`` profiles) can
saturate there and rank differently from the target it was validated for. 7-bit, 4-bit and uint8
tables (the ``x86-avx2`` profile) are exact everywhere.
"""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

VNNI_FLAGS = ("avx512_vnni", "avx_vnni")


@lru_cache(maxsize=1)
def _x86_without_vnni() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return not any(flag in flags for flag in VNNI_FLAGS)


def saturation_risk(profile: dict[str, object]) -> str | None:
    """A warning when ``profile``'s integer product may saturate on this CPU, else None."""
    quantized = profile.get("format") in ("qoperator",)
    full_range_s8 = profile.get("weight_type") == "int8" and profile.get("table_bits") == 8
    if quantized and full_range_s8 and _x86_without_vnni():
        return (f"bundle profile {profile.get('name')!r} stores full-range int8 tables; this x86 CPU has no VNNI, "
                "so onnxruntime's u8·s8 kernel can saturate and rank differently from the target. "
                "Export with --profile x86-avx2 to serve on this CPU.")
    return None

"""The one table-quantization scheme of kgedge: per-row symmetric integers, numpy only.

Quantization-aware training (``kgedge.compress``) fakes exactly this scheme in torch, and the exporter
stores exactly this, so a model fine-tuned with QAT loses nothing more at export.

For a row ``x`` and ``bits`` b: ``qmax = 2^(b-1) - 1``, ``scale = max|x| / qmax`` (1 for an all-zero
row), ``q = clip(round_half_even(x / scale), -qmax, qmax)``, ``x̂ = q · scale``.
Large tables of dot-product models are exported with one scale per block of rows that the exporter
first orders by scale (:func:`quantize_row_blocks`): each row's scale is then the largest of its
block, within a hair of its own, and QAT's per-row scheme carries over.
``bits = 7`` exists for x86 CPUs without VNNI: onnxruntime's u8·s8 kernel sums pairs of products in
16 bits, ``2 · 255 · 127`` overflows it, ``2 · 255 · 63`` does not.
"""

from __future__ import annotations

import numpy as np

SUPPORTED_BITS = (4, 7, 8)


def qmax(bits: int) -> int:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"table bits must be one of {SUPPORTED_BITS}, got {bits!r}")
    return 2 ** (bits - 1) - 1


def _scales(peaks: np.ndarray, bits: int) -> np.ndarray:
    """``peak / qmax`` per peak (1 for a zero peak), float32: the one scale rule."""
    return np.where(peaks > 0, peaks / np.float32(qmax(bits)), np.float32(1.0)).astype(np.float32)


def _codes(table: np.ndarray, row_scale: np.ndarray, bits: int) -> np.ndarray:
    """``table`` (float32) in int8 codes at one scale per row: the one rounding rule."""
    limit = qmax(bits)
    return np.clip(np.round(table / row_scale[:, None]), -limit, limit).astype(np.int8)


def row_scales(table: np.ndarray, bits: int) -> np.ndarray:
    """Per-row scales, shape ``(rows,)`` float32."""
    return _scales(np.abs(np.asarray(table, dtype=np.float32)).max(axis=1), bits)


def quantize_rows(table: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantize ``table`` (shape ``(rows, dim)``) to int8 codes and float32 scales.

    Returns:
        ``(codes, scales)``: shapes ``(rows, dim)`` int8 and ``(rows,)`` float32.
    """
    table = np.asarray(table, dtype=np.float32)
    scales = row_scales(table, bits)
    return _codes(table, scales, bits), scales


def quantize_row_blocks(table: np.ndarray, bits: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`quantize_rows`, with one scale per block of ``block`` consecutive rows: the largest
    row scale of the block (so no code clips). ``len(table)`` must be a multiple of ``block``.

    The exporter uses it for large tables whose rows it has first ordered by scale (see
    ``kgedge.export.graph``): each row's scale is then within a hair of its own per-row scale.

    Returns:
        ``(codes, block_scales)``: shapes ``(rows, dim)`` int8 and ``(rows // block,)`` float32.
    """
    table = np.asarray(table, dtype=np.float32)
    if len(table) % block:
        raise ValueError(f"{len(table)} rows do not split into blocks of {block}")
    peaks = np.abs(table).max(axis=1).reshape(-1, block).max(axis=1)  # all-zero rows do not widen a block
    scales = _scales(peaks, bits)
    return _codes(table, np.repeat(scales, block), bits), scales


def dequantize_rows(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """``codes · scales`` row-wise, shape ``(rows, dim)`` float32."""
    return codes.astype(np.float32) * scales[:, None]


def stored_bytes(rows: int, dim: int, bits: int | None) -> int:
    """Bytes of a table as exported: float32, or codes (4-bit packed two per byte) plus float32 scales."""
    if bits is None or bits >= 32:
        return rows * dim * 4
    per_row = (dim + 1) // 2 if bits == 4 else dim
    return rows * (per_row + 4)

"""The exported ONNX graph: ``(head, relation, k[, allowed_types, exclude, masked]) -> (ids, scores)``.

Top-k happens inside the graph, so the device never handles a full score row. Layout:

1. Gather the head's row from the entity table. The file stores the table once, transposed ``[W, N]``
   for the all-entity product; the rows ``[N, W]`` that the Gather reads are its transpose, made by a
   node with constant inputs that onnxruntime folds when the session is created. Gather the relation row.
2. The model's query ``q = f(h, r)`` (``kgedge.export.queries``), in float. With an integer table and a
   query linear in the head (DistMult, ComplEx), ``h`` is the head's codes and its scale joins the
   query's scale after the product.
3. Scores against every entity:
   * ``float``: ``q · E`` with E in float32;
   * ``qoperator``: q is quantized per row, symmetric, to uint8 with the fixed zero point 128
     (one scalar zero point, which ``MatMulInteger`` needs; per-row scales keep batches exact),
     by one ``QuantizeLinear`` of ``q · 127 / max|q|``,
     ``MatMulInteger(q_u8, E_s8)`` runs in integers, and the query and per-row table scales are
     folded into the int32 result afterwards (no dequantized copy of the table);
   * ``dequantize``: int8 storage, the table dequantized on every query (kept for measuring only).
   From ``BLOCK_SCALES_MIN_ENTITIES`` on, a dot-product model's integer table is *block-scaled*
   (:func:`block_scaled`): rows are stored ordered by scale within each type run, with one scale
   per block of the two-step top-k; the graph then ranks the int32 products and scales only the
   block maxima and the candidates. Ids map to stored positions and back through one stored
   permutation (its inverse is folded when the session is created).
   Distance models (TransE, RotatE) rank by ``2 q·t - |t|²`` (the squared distance up to ``|q|²``),
   with ``|t|²`` precomputed from the stored table, and report ``-sqrt(|q|² - that)`` for the top k.
   The L1 distance (TransE's default) is no product: ``-Σ|q - t|`` is computed over a float table
   (:func:`_l1_scores`). A quantized L1 table is stored in integers and dequantized by nodes whose
   inputs are all constants, which onnxruntime folds into one float table when the session is
   created: the file keeps the small size, the session holds float32, each query reads ``N·W`` floats.
   A factored (low-rank) entity table ``E = U · V`` stores ``U`` as the table above (``[r, N]``) and
   ``V`` ``[r, W]`` in float32: the head row is ``U[h] · V``, and the query is projected to
   ``q · Vᵀ`` (width r) before the all-entity product, so scoring costs ``W·r + N·r`` instead of ``N·W``.
   Why hand-written rather than onnxruntime's ``quantize_dynamic``: it turns a Gather table into one
   per-tensor asymmetric uint8 table whatever ``per_channel`` says, which loses the per-row scales
   that QAT trains for, and it cannot share one table between the row Gather and the all-entity
   product. The exported graph has no other float layers (graph encoders are materialised into the
   entity table first), so there is nothing left for those tools to quantize.
4. Candidates whose type is not allowed, and the ``exclude`` ids (padded with -1), get ``-inf``;
   TopK(k). Exact top-k: never fewer than k when enough candidates exist, never an excluded one.
   The masks run only when the ``masked`` input is True (an If): a query that restricts nothing, the
   usual single query, goes straight to TopK. ``allowed_types`` (all True), ``exclude`` (none) and
   ``masked`` (False) have defaults, so such a query feeds only ``head``, ``relation`` and ``k``. At
   14,541 x 64 (int8, one thread) a bare ``session.run`` of such a query went from 85.9 to 79.3 us
   (one interleaved probe); the If itself costs ~4.6 us against a graph with no masks at all.
   From ``BLOCKED_TOPK_MIN_ENTITIES`` on, the top k is found in two steps (see :func:`_top_k`): the
   maximum of each block of entities, the k best blocks, then TopK over only their entities: the
   same result, without a selection pass over all N in TopK (onnxruntime's TopK costs ~1 ns per
   entity, a ReduceMax about a tenth of that).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import onnx

from kgedge.export.builder import BOOL, FLOAT, INT32, INT64, GraphBuilder, tensor_input
from kgedge.export.profile import ExportProfile
from kgedge.export.queries import LINEAR_IN_HEAD, resolve_query
from kgedge.quantization import dequantize_rows, quantize_row_blocks, quantize_rows, stored_bytes

INPUTS = ("head", "relation", "k", "allowed_types", "exclude", "masked")
OUTPUTS = ("ids", "scores")
QUERY_ZERO_POINT = 128  # uint8 queries: symmetric codes -127..127 shifted by 128
TABLE_ZERO_POINT = 128  # weight_type uint8: the same symmetric codes stored shifted by 128
QUERY_MAX_CODE = 127  # query codes are -127..127
# Block-scaled graphs rank int32 products: a masked entity gets this added (or set), far below any
# product (|q_code · e_code| sums stay under 2^25 for rows of up to 2,048 values) and far from overflow.
MASKED = -(2**30)
MASKED_BELOW = -(2**29)  # a product under this was masked


@dataclass(frozen=True)
class GraphSpec:
    """What the graph is built from (numpy only).

    Attributes:
        model: registry name of the model (selects the query function).
        interaction: ``dot``, ``l2`` or ``l1``.
        entity_table: the stored (quantized) entity table: shape ``(N, W)`` float32, or ``U``
            ``(N, r)`` when the table is factored.
        relation_table: shape ``(2R, Wr)`` float32 (reciprocals included).
        entity_types: shape ``(N,)`` type ids.
        num_types: length of the ``allowed_types`` input.
        entity_basis: ``V``, shape ``(r, W)`` float32, of a factored table ``E = U · V``; None when dense.
    """

    model: str
    interaction: str
    entity_table: np.ndarray
    relation_table: np.ndarray
    entity_types: np.ndarray
    num_types: int
    entity_basis: np.ndarray | None = None

    @property
    def width(self) -> int:
        """``W``: reals per entity row (and per query), factored or not."""
        return int((self.entity_basis if self.entity_basis is not None else self.entity_table).shape[1])

    def table_bytes(self, bits: int | None) -> int:
        """Bytes of the stored tables at ``bits`` (None: float32); ``V`` is always float32."""
        total = stored_bytes(*self.entity_table.shape, bits) + stored_bytes(*self.relation_table.shape, bits)
        return total + (stored_bytes(*self.entity_basis.shape, None) if self.entity_basis is not None else 0)


def stored_tables(spec: GraphSpec, profile: ExportProfile) -> tuple[np.ndarray, np.ndarray]:
    """The tables as the device will see them (dequantized when the profile quantizes); ``U`` when factored."""
    if not profile.quantized:
        return spec.entity_table.astype(np.float32), spec.relation_table.astype(np.float32)
    relations = dequantize_rows(*quantize_rows(spec.relation_table, profile.table_bits))
    if not block_scaled(spec, profile):
        return dequantize_rows(*quantize_rows(spec.entity_table, profile.table_bits)), relations
    num_entities = len(spec.entity_types)
    block = topk_block(num_entities)
    padded = _padded(spec, block, in_scale_order=True)
    order = scale_order(padded, num_entities)
    codes, scales = quantize_row_blocks(padded.entity_table[order], profile.table_bits, block)
    rows = np.empty_like(padded.entity_table, dtype=np.float32)
    rows[order] = dequantize_rows(codes, np.repeat(scales, block))
    return rows[:num_entities], relations


def scored_bytes(spec: GraphSpec, profile: ExportProfile) -> int:
    """Bytes of the entity table that one query's all-entity product reads in the session: float32
    values, or one byte per code (4-bit tables are unpacked when the session is created) plus the
    per-row scales, or the block scales of a block-scaled table (padding rows included)."""
    rows, width = spec.entity_table.shape
    if spec.interaction == "l1":  # the table the constant folding leaves (U · V when factored): float, or
        # one byte per value on an integer profile's grid
        return rows * spec.width * (1 if profile.format == "qoperator" else 4)
    if not profile.quantized or profile.format != "qoperator":
        return rows * width * 4
    if not block_scaled(spec, profile):
        return rows * (width + 4)
    block = topk_block(rows)
    padded = rows + (-rows % block)
    return padded * width + 4 * (padded // block)


def block_scaled(spec: GraphSpec, profile: ExportProfile) -> bool:
    """Whether the graph stores one scale per block of rows instead of one per row.

    That is the case for dot-product models (DistMult, ComplEx) with a dense table, an integer
    profile and at least ``BLOCK_SCALES_MIN_ENTITIES`` entities (the two-step top-k runs there too).
    Their rows are stored in :func:`scale_order`, so a block's rows have nearly equal scales, and
    the graph ranks the int32 products themselves:
    only the block maxima and the few candidates' products are ever scaled to float. Per-row scales
    would cost a Cast and a Mul over all N products on every query (about 1.3 ms of 7 at 1M × 64).
    Below the threshold, per-row scales keep the export bit-identical to what QAT fakes, and block
    scales gained nothing measurable: at 100k × 64 they were 13 % slower in the run of
    ``benchmarks/results/latency_peers_block_scales_at_100k.md`` (5-6 % faster at 300k and 1M), a
    difference within that benchmark's noise on a shared 2-core machine.
    Distance models need float products for their norms; factored tables keep per-row scales.
    """
    n = len(spec.entity_types)
    return (profile.format == "qoperator" and spec.interaction == "dot" and spec.entity_basis is None
            and n >= BLOCK_SCALES_MIN_ENTITIES and topk_block(n) is not None)


def scale_order(spec: GraphSpec, num_entities: int) -> np.ndarray:
    """Stored position -> entity id of a block-scaled table, shape ``(rows,)`` int64.

    Within each run of one type, rows by descending largest ``|value|`` (ties by id), so that runs
    (and the type mask built from them) stay where they are; padding rows (ids from
    ``num_entities`` on) stay last, in place.
    """
    table = spec.entity_table[:num_entities]
    types = np.asarray(spec.entity_types[:num_entities], np.int64)
    runs = np.cumsum(np.diff(types, prepend=types[0] - 1) != 0)
    order = np.lexsort((np.arange(num_entities), -np.abs(table).max(axis=1), runs))
    return np.concatenate([order, np.arange(num_entities, len(spec.entity_types))]).astype(np.int64)


def candidate_rows(spec: GraphSpec, profile: ExportProfile) -> np.ndarray:
    """The entity rows the device scores against, shape ``(N, W)`` float64: the stored table, or the
    stored ``U`` (dequantized) times ``V`` when factored."""
    entity_rows = stored_tables(spec, profile)[0].astype(np.float64)
    return entity_rows if spec.entity_basis is None else entity_rows @ spec.entity_basis.astype(np.float64)


def pack_int4(codes_t: np.ndarray) -> np.ndarray:
    """Pack 4-bit codes (-7..7) of a ``[W, N]`` table two per byte: ``[ceil(W/2), N]`` uint8.

    Byte ``i`` holds row ``i`` (high nibble) and row ``i + ceil(W/2)`` (low nibble), each offset by 8.
    """
    width = codes_t.shape[0]
    half = (width + 1) // 2
    padded = np.zeros((2 * half, codes_t.shape[1]), dtype=np.int16)
    padded[:width] = codes_t
    return ((padded[:half] + 8) * 16 + (padded[half:] + 8)).astype(np.uint8)


def _unpacked_int4(g: GraphBuilder, codes_t: np.ndarray) -> str:
    """The int8 ``[W, N]`` table from its packed initializer.

    Every input of these nodes is an initializer, so onnxruntime folds them into a constant when the
    session is created: the file carries half a byte per value, the session holds one int8 copy, and
    no query pays for unpacking.
    """
    width = codes_t.shape[0]
    packed = g.op("Cast", g.const(pack_int4(codes_t), "entity_codes_int4_t"), to=onnx.TensorProto.INT32)
    sixteen, eight = g.const(np.int32(16)), g.const(np.int32(8))
    high = g.op("Sub", g.op("Div", packed, sixteen), eight)
    low = g.op("Sub", g.op("Mod", packed, sixteen), eight)
    both = g.op("Concat", high, low, axis=0)
    if codes_t.shape[0] % 2:
        both = g.op("Slice", both, g.const(np.array([0], np.int64)), g.const(np.array([width], np.int64)),
                    g.const(np.array([0], np.int64)))
    return g.op("Cast", both, to=onnx.TensorProto.INT8)


def _gather_rows(  # noqa: ANN202
    g: GraphBuilder, spec: GraphSpec, profile: ExportProfile, head: str,
    order: StoredOrder | None = None, block: int | None = None, defer_scale: bool = False,
):
    """Returns (head rows [B, W] float, the float relation table [R, Wr] (constants only), table node info,
    head scale).

    ``order``: a block-scaled table's row order; the table is then stored in that order with one
    scale per ``block`` rows.
    ``defer_scale`` (an integer table and a query linear in the head): the head rows are their codes
    (zero point removed) without their scale, and ``head scale`` is that scale over ``QUERY_MAX_CODE``,
    ``[B, 1]``, for :func:`_products` to fold into the query's scale; otherwise ``head scale`` is None.
    The query's codes do not depend on a positive factor of the query, so this saves the nodes that
    scale the head rows before quantizing the query (an Unsqueeze and a Mul, one per query).
    """
    if not profile.quantized:
        table_t = g.const(np.ascontiguousarray(spec.entity_table.T.astype(np.float32)), "entity_table_t")
        relations = g.const(spec.relation_table.astype(np.float32), "relation_table")
        return _head_rows(g, table_t, head), relations, (table_t, None), None
    if order is None:
        codes, scales = quantize_rows(spec.entity_table, profile.table_bits)
    else:
        codes, scales = quantize_row_blocks(spec.entity_table[order.ids], profile.table_bits, block)
        head = g.op("Gather", order.inverse, head, axis=0)  # ids -> stored positions
    r_codes, r_scales = quantize_rows(spec.relation_table, profile.table_bits)
    if profile.table_bits == 4:
        table_t = _unpacked_int4(g, codes.T)
    elif profile.weight_type == "uint8":
        stored = (codes.T.astype(np.int16) + TABLE_ZERO_POINT).astype(np.uint8)
        table_t = g.const(np.ascontiguousarray(stored), "entity_codes_t")
    else:
        table_t = g.const(np.ascontiguousarray(codes.T), "entity_codes_t")
    e_scale = g.const(scales, "entity_scales" if order is None else "entity_block_scales")
    # the head's codes as floats, their zero point removed: one DequantizeLinear where Cast and Sub took two
    zero = np.uint8(TABLE_ZERO_POINT) if profile.weight_type == "uint8" and profile.table_bits != 4 else np.int8(0)
    h_codes = g.op("DequantizeLinear", _head_rows(g, table_t, head), g.const(np.float32(1.0)), g.const(zero))
    scale_index = head if order is None else g.op("Div", head, g.const(np.int32(block)))
    head_scale = None
    if defer_scale:  # [N, 1] scales over the code range: constants only, folded when the session is created
        column = g.unsqueeze(g.op("Div", e_scale, g.const(np.float32(QUERY_MAX_CODE))), 1)
        h, head_scale = h_codes, g.op("Gather", column, scale_index, axis=0)
    else:
        h = g.op("Mul", h_codes, g.unsqueeze(g.op("Gather", e_scale, scale_index, axis=0), 1))
    # the relation table is dequantized by nodes whose inputs are all constants: onnxruntime folds them
    # into one float table when the session is created (2R rows: small); the query function gathers
    # rows of it (or of tables it derives from it, folded alike)
    r_codes_c = g.const(r_codes, "relation_codes")
    r_scale = g.const(r_scales, "relation_scales")
    r_table = g.op("Mul", g.op("Cast", r_codes_c, to=FLOAT), g.unsqueeze(r_scale, 1))
    return h, r_table, (table_t, e_scale), head_scale


def _head_rows(g: GraphBuilder, table_t: str, head: str) -> str:
    """Rows ``[B, W]`` of the ``[W, N]`` table ``table_t``, gathered from its transpose ``[N, W]``: the
    Transpose has constant inputs only, so onnxruntime folds it when the session is created, and a query
    gathers whole rows with no Transpose of its own (the ``[W, N]`` layout stays for the all-entity
    product, whose kernel keeps its own prepacked copy; the session's memory was no larger in a probe)."""
    return g.op("Gather", g.op("Transpose", table_t, perm=[1, 0]), head, axis=0)


def _products(
    g: GraphBuilder, profile: ExportProfile, q: str, table_t: str, e_scale: str | None, emulate: bool,
    integer: bool = False, head_scale: str | None = None,
) -> tuple[str, str | None]:
    """``q · E`` for every entity, shape ``[B, N]`` float, up to a per-query factor.

    Returns ``(scores, query_scale)``: the true products are ``scores · query_scale`` (shape
    ``[B, 1]``); ``query_scale`` is None when ``scores`` are exact already (float formats).
    ``integer`` (block-scaled graphs): the int32 products of the codes, the table scales not applied.
    ``head_scale`` (``[B, 1]``): the factor left out of ``q`` by :func:`_gather_rows` (``defer_scale``),
    already divided by ``QUERY_MAX_CODE``; it is folded into ``query_scale``.

    ``emulate`` replaces MatMulInteger by a float MatMul of the same integer codes: exact (every
    partial sum stays below 2^24 for rows of up to 512 values), it shows what a target CPU computes
    when this CPU's kernel differs (e.g. saturating u8·s8 on x86 without VNNI).
    """
    if profile.format == "float":
        return g.op("MatMul", q, table_t), None
    if profile.format == "dequantize":
        return g.op("MatMul", q, _dequantized_table(g, profile, table_t, e_scale)), None
    # per-row symmetric query codes round(q · 127 / max|q|), shifted to uint8 around a scalar zero point by
    # one QuantizeLinear (scale 1: it rounds half to even, adds the zero point and saturates, where Round,
    # Add and Cast took three nodes); the codes lie in -127..127 by the choice of the factor
    peak = g.op("Max", g.op("ReduceMax", g.op("Abs", q), g.const(np.array([1], np.int64)), keepdims=1),
                g.const(np.float32(1e-12)))
    factor = g.op("Div", g.const(np.float32(QUERY_MAX_CODE)), peak)
    q_u8 = g.op("QuantizeLinear", g.op("Mul", q, factor), g.const(np.float32(1.0)),
                g.const(np.uint8(QUERY_ZERO_POINT), "query_zero_point"))
    if head_scale is None:
        q_scale = g.op("Div", peak, g.const(np.float32(QUERY_MAX_CODE)))
    else:
        q_scale = g.op("Mul", peak, head_scale)
    unsigned_table = profile.weight_type == "uint8"
    if emulate:
        centred = g.op("Sub", g.op("Cast", q_u8, to=FLOAT), g.const(np.float32(QUERY_ZERO_POINT)))
        table = g.op("Cast", table_t, to=FLOAT)
        if unsigned_table:
            table = g.op("Sub", table, g.const(np.float32(TABLE_ZERO_POINT)))
        product = g.op("MatMul", centred, table)
        if integer:
            return g.op("Cast", product, to=INT32), q_scale
    else:
        table_zero = [g.const(np.uint8(TABLE_ZERO_POINT), "table_zero_point")] if unsigned_table else []
        product = g.op("MatMulInteger", q_u8, table_t, "query_zero_point", *table_zero)
        if integer:
            return product, q_scale
    # The per-row table scales are applied here; the query's own scale (one positive number per row,
    # so it cannot change the order) is left to the caller: a dot-product model applies it to the k
    # values after TopK. Folding both scales in here makes onnxruntime fuse the product into
    # MatMulIntegerToFloat, measured 1.6x slower than MatMulInteger + Mul (benchmarks/latency_peers.py).
    return g.op("Mul", g.op("Cast", product, to=FLOAT), e_scale), q_scale


def _dequantized_table(g: GraphBuilder, profile: ExportProfile, table_t: str, e_scale: str) -> str:
    """The float ``[W, N]`` table of the integer codes ``table_t`` times their per-entity scales (one
    per column)."""
    table = g.op("Cast", table_t, to=FLOAT)
    if profile.weight_type == "uint8":
        table = g.op("Sub", table, g.const(np.float32(TABLE_ZERO_POINT)))
    return g.op("Mul", table, e_scale)


def _l1_scores(g: GraphBuilder, spec: GraphSpec, profile: ExportProfile, q: str, table_t: str,
               e_scale: str | None, basis: str | None) -> tuple[str, str | None, str | None]:
    """``-Σ_w |q[b, w] - E[n, w]|`` for every entity, shape ``[B, N]`` float, up to an offset and a scale.

    Returns ``(scores, offset, scale)``: the true scores are ``(scores - offset) · scale`` (``offset``
    ``[B, 1]``, ``scale`` a scalar), both None when ``scores`` are true already. A positive scale and an
    offset per query leave the order as it is, so they are applied to the k values after TopK.

    The table ``[W, N]`` (``[r, N]`` when factored) is made float by nodes whose inputs are all
    initializers (dequantized, and multiplied out to ``U · V``), so onnxruntime folds them into one
    float constant when the session is created. A float profile's query reads that table: the differences
    are a ``[B, W, N]`` float tensor (the runtime sizes its batches by it, ``kgedge.runtime.graph``).

    An integer profile (``qoperator``) scores in bytes instead (:func:`_l1_integer`).
    """
    table = _dequantized_table(g, profile, table_t, e_scale) if profile.quantized else table_t
    if basis is not None:  # (U · V)ᵀ = Vᵀ · Uᵀ, [W, N] (folded like the rest)
        table = g.op("MatMul", g.op("Transpose", basis, perm=[1, 0]), table)
    if profile.format == "qoperator":
        return _l1_integer(g, spec, profile, q, table)
    difference = g.op("Sub", g.unsqueeze(q, 2), table)  # [B, W, 1] - [W, N]
    # the sum over W as a product with a row of ones, [1, W] x [B, W, N] -> [B, 1, N]: 1.46x faster than
    # ReduceSum over the rows of an [N, W] table (402 vs 586 us at 14,541 x 64, one thread, B = 1; 1.2x at
    # B = 8 and at 100k entities: one probe each)
    ones = g.const(np.ones((1, spec.width), np.float32))
    distance = g.op("MatMul", ones, g.op("Abs", difference))
    return g.op("Neg", g.op("Squeeze", distance, g.const(np.array([1], np.int64)))), None, None


def l1_grid(spec: GraphSpec, profile: ExportProfile) -> tuple[float, float]:
    """``(low, step)`` of the one uint8 grid ``low + step · code`` (codes 0..255) on which an integer
    profile scores the L1 distance: from the smallest to the largest value of the table the session
    folds (``U · V`` when factored)."""
    rows = candidate_rows(spec, profile)
    low, high = float(rows.min()), float(rows.max())
    return low, max(high - low, 1e-12) / 255.0


def _l1_integer(g: GraphBuilder, spec: GraphSpec, profile: ExportProfile, q: str,
                table: str) -> tuple[str, str, str]:
    """The L1 scores of an integer profile, in bytes and int32 sums.

    The folded float table is put on one uint8 grid for the whole table (:func:`l1_grid`; per-row scales
    would weigh each row's differences differently), folded too, and so is each row's sum of codes. A
    query is put on the same grid, saturating: a value beyond the table's range on some coordinate is
    moved to its edge, which changes every entity's distance by the same amount, so the order stays.
    With codes ``a`` (query) and ``b`` (entity), ``Σ|a - b| = Σa + Σb - 2 Σ min(a, b)``: one ``Min`` of
    bytes ``[B, W, N]`` and one ``MatMulInteger`` of a row of ones with it give ``Σ min``, where the float
    path runs a Sub, an Abs and a MatMul over ``N · W`` floats (2.8x faster at 14,541 x 64 in a probe).
    The integer sums are exact on every CPU (``1 · b`` cannot saturate any kernel); ``2 Σ min - Σb``,
    at most ``2 · 255 · W``, is exact in float too. Returns the scores ``2 Σ min - Σb`` (float), the
    offset ``Σa`` and the grid step, by which the true scores are ``(scores - Σa) · step``.
    """
    low, step = l1_grid(spec, profile)
    low_c, step_c = g.const(np.float32(low)), g.const(np.float32(step))
    zero = g.const(np.uint8(0))
    grid = g.op("QuantizeLinear", g.op("Sub", table, low_c), step_c, zero)  # [W, N] uint8, folded
    row_sums = g.op("Cast", g.op("ReduceSum", g.op("Cast", grid, to=INT32), g.const(np.array([0], np.int64)),
                                 keepdims=0), to=FLOAT)  # [N], folded
    codes = g.op("QuantizeLinear", g.op("Sub", q, low_c), step_c, zero)  # [B, W] uint8
    smaller = g.op("Min", g.unsqueeze(codes, 2), grid)  # [B, W, N] uint8
    ones = g.const(np.ones((1, spec.width), np.uint8))
    sums = g.op("Squeeze", g.op("MatMulInteger", ones, smaller, zero, zero), g.const(np.array([1], np.int64)))
    scores = g.op("Sub", g.op("Mul", g.op("Cast", sums, to=FLOAT), g.const(np.float32(2.0))), row_sums)
    offset = g.op("ReduceSum", g.op("Cast", codes, to=FLOAT), g.const(np.array([1], np.int64)), keepdims=1)
    return scores, offset, step_c


MAX_TYPE_RUNS = 256
# block scales (see :func:`block_scaled`) from this many entities on
BLOCK_SCALES_MIN_ENTITIES = 200_000
# below this many entities one TopK over the row costs less than the blocked search's extra nodes
BLOCKED_TOPK_MIN_ENTITIES = 32_768


def topk_block(num_entities: int) -> int | None:
    """Entities per block of the two-step top-k (a power of two near ``sqrt(N)``), or None for one TopK."""
    if num_entities < BLOCKED_TOPK_MIN_ENTITIES:
        return None
    return 1 << round(np.log2(np.sqrt(num_entities)))


def _padded(spec: GraphSpec, block: int, in_scale_order: bool) -> GraphSpec:
    """``spec`` with entity rows appended up to a multiple of ``block``, so that the score row reshapes
    into whole blocks without a copy. They are copies of the row stored last (in :func:`scale_order` when
    ``in_scale_order``), which lies in the same last block: no block's maximum or scale changes, and
    the plain top-k masks the copies among its few candidates only (:func:`_top_k`), not by a pass over N."""
    n = len(spec.entity_types)
    extra = -n % block
    if not extra:
        return spec
    last = int(scale_order(spec, n)[n - 1]) if in_scale_order else n - 1
    table = np.concatenate([spec.entity_table, np.repeat(spec.entity_table[last : last + 1], extra, axis=0)])
    types = np.concatenate([spec.entity_types, np.full(extra, spec.entity_types[-1], spec.entity_types.dtype)])
    return replace(spec, entity_table=table, entity_types=types)


class StoredOrder(NamedTuple):
    """The row order of a block-scaled table.

    Attributes:
        ids: stored position -> entity id (:func:`scale_order`).
        stored: graph value of ``ids`` (int32 initializer): maps the top-k positions back to ids.
        inverse: graph value, entity id -> stored position.
    """

    ids: np.ndarray
    stored: str
    inverse: str


def _stored_order(g: GraphBuilder, spec: GraphSpec, num_entities: int) -> StoredOrder:
    """The order's initializer and its inverse, built by nodes whose inputs are all constants, which
    onnxruntime folds into one constant when the session is created: the file carries one int32 per
    row, the bytes the per-row scale used to take, and no query pays for the inversion."""
    ids = scale_order(spec, num_entities)
    stored = g.const(ids.astype(np.int32), "entity_order")
    positions = g.op("Range", g.const(np.int32(0)), g.const(np.int32(len(ids))), g.const(np.int32(1)))
    inverse = g.op("ScatterElements", g.op("Mul", stored, g.const(np.int32(0))), stored, positions, axis=0)
    return StoredOrder(ids, stored, inverse)


def _top_k(
    g: GraphBuilder, scores: str, k: str, block: int | None, num_rows: int, block_scales: str | None = None,
    num_valid: int | None = None,
) -> tuple[str, str]:
    """``(values, ids)`` of the k best of ``scores`` ``[B, num_rows]``, best first.

    With a ``block``: the row is viewed as ``[B, num_rows / block, block]``; every entity of the
    top k lies in one of the k blocks with the largest maxima (a block holding one of them has
    a maximum at least the k-th best score, and at most k blocks do), so TopK over those blocks'
    entities gives the exact top k.

    ``block_scales`` (``[num_rows / block]``, positive): ``scores`` are int32 products whose true
    values are ``product · scale of its block``; a block's true maximum is its largest product
    times its scale, so only the maxima and the candidates are scaled, and masked products
    (below ``MASKED_BELOW``) become -inf.

    ``num_valid``: rows from this one on are padding (copies of a row of the last block, see
    :func:`_padded`), masked among the candidates.
    """
    if block is None:
        values, ids = g.op_multi("TopK", scores, k, outputs=2, axis=1, largest=1, sorted=1)
        return values, ids
    blocks = num_rows // block
    maxima = g.op("ReduceMax", g.op("Reshape", scores, g.const(np.array([0, blocks, block], np.int64))),
                  g.const(np.array([2], np.int64)), keepdims=0)
    if block_scales is not None:
        maxima = _scaled(g, maxima, block_scales)
    best_blocks = g.op_multi("TopK", maxima, g.op("Min", k, g.const(np.array([blocks], np.int64))), outputs=2,
                             axis=1, largest=1, sorted=0)[1]
    starts = g.unsqueeze(g.op("Mul", best_blocks, g.const(np.int64(block))), 2)
    columns = g.op("Reshape", g.op("Add", starts, g.const(np.arange(block, dtype=np.int64).reshape(1, 1, block))),
                   g.const(np.array([0, -1], np.int64)))
    candidates = g.op("GatherElements", scores, columns, axis=1)
    if num_valid is not None and num_valid < num_rows:
        masked = np.int32(MASKED) if block_scales is not None else np.float32(-np.inf)
        candidates = g.op("Where", g.op("Less", columns, g.const(np.int64(num_valid))), candidates, g.const(masked))
    if block_scales is not None:
        block_of = g.op("Div", columns, g.const(np.int64(block)))
        candidates = _scaled(g, candidates, g.op("Gather", block_scales, block_of))
    values, position = g.op_multi("TopK", candidates, k, outputs=2, axis=1, largest=1, sorted=1)
    return values, g.op("GatherElements", columns, position, axis=1)


def _scaled(g: GraphBuilder, products: str, scales: str) -> str:
    """int32 ``products`` times ``scales`` in float, -inf where a product was masked."""
    masked = g.op("Less", products, g.const(np.int32(MASKED_BELOW)))
    return g.op("Where", masked, g.const(np.float32(-np.inf)), g.op("Mul", g.op("Cast", products, to=FLOAT), scales))


def _type_bias(g: GraphBuilder, spec: GraphSpec, zero: str, masked: str) -> str:
    """``[N]``: ``zero`` where the entity's type is allowed, ``masked`` elsewhere (float 0 and -inf,
    or int32 0 and ``MASKED`` for the int32 products of a block-scaled graph).

    Entity ids usually come in long runs of one type (ids follow sorted names, and names carry their
    type), so the row is assembled from one Expand per run: memcpy speed, where a Gather of N type ids
    costs ~9 ns per entity in onnxruntime (1 ms at 100k entities). Too many runs fall back to Gather.
    """
    per_type = g.op("Where", "allowed_types", zero, masked)
    types = spec.entity_types.astype(np.int64)
    starts = np.flatnonzero(np.diff(types, prepend=-1))
    if len(starts) > MAX_TYPE_RUNS:
        return g.op("Gather", per_type, g.const(types, "entity_types"), axis=0)
    lengths = np.diff(np.append(starts, len(types)))
    pieces = [
        g.op("Expand", g.op("Slice", per_type, g.const(np.array([t], np.int64)), g.const(np.array([t + 1], np.int64))),
             g.const(np.array([n], np.int64)))
        for t, n in zip(types[starts], lengths)
    ]
    return pieces[0] if len(pieces) == 1 else g.op("Concat", *pieces, axis=0)


@dataclass(frozen=True)
class _Tail:
    """The end of the graph, the masks and the top k, built in each branch of its Ifs.

    The branches read the scores of the outer graph and return the top k: a branch that returned an outer
    value would copy it (an Identity over N).

    Attributes:
        order: a block-scaled table's row order (ids map to stored positions), or None.
        block: entities per block of the two-step top-k, or None for one TopK.
        num_entities: N without the padding rows that make whole blocks (masked like excluded ids).
        integer: the scores are int32 products (block-scaled), masked with ``MASKED`` instead of -inf.
        block_scales: a block-scaled table's scales, for the top k of its products.
    """

    spec: GraphSpec
    order: StoredOrder | None
    block: int | None
    num_entities: int
    integer: bool
    block_scales: str | None

    def _masked_value(self, b: GraphBuilder) -> str:
        return b.const(np.int32(MASKED) if self.integer else np.float32(-np.inf))

    def top_k(self, b: GraphBuilder, scores: str, types: bool, exclude: bool) -> tuple[str, str]:
        """``(values, positions)`` of the k best (values in float) in ``b``: with ``types``, entities of a
        disallowed type are masked; with ``exclude``, the ``exclude`` ids; the padding rows (if any) always."""
        if types:
            zero = b.const(np.int32(0) if self.integer else np.float32(0.0))
            scores = b.op("Add", scores, _type_bias(b, self.spec, zero, self._masked_value(b)))
        index, update = [], []
        if exclude:
            valid = b.op("GreaterOrEqual", "exclude", b.const(np.int64(0)))
            ids = b.op("Where", valid, "exclude", b.const(np.int64(0)))
            if self.order is not None:
                ids = b.op("Cast", b.op("Gather", self.order.inverse, ids, axis=0), to=INT64)
            no_change = b.const(np.int32(np.iinfo(np.int32).max) if self.integer else np.float32(np.inf))
            index.append(ids)
            update.append(b.op("Where", valid, b.op("Expand", self._masked_value(b), b.op("Shape", "exclude")), no_change))
        # padding rows copy a row of the last block (see _padded): a plain top-k masks them among its
        # candidates; here they must go before the block maxima, or an excluded or disallowed entity's copy
        # would stand in for it there
        padding = len(self.spec.entity_types) - self.num_entities
        if padding and (types or exclude):
            shape = b.op("Concat", b.op("Shape", "head"), b.const(np.array([padding], np.int64)), axis=0)
            pad_ids = np.arange(self.num_entities, self.num_entities + padding, dtype=np.int64).reshape(1, padding)
            index.append(b.op("Expand", b.const(pad_ids), shape))
            update.append(b.op("Expand", self._masked_value(b), shape))
        if index:
            index_all = index[0] if len(index) == 1 else b.op("Concat", *index, axis=1)
            update_all = update[0] if len(update) == 1 else b.op("Concat", *update, axis=1)
            scores = b.op("ScatterElements", scores, index_all, update_all, axis=1, reduction="min")
        return _top_k(b, scores, "k", self.block, len(self.spec.entity_types), self.block_scales, self.num_entities)

    def masked_top_k(self, b: GraphBuilder, scores: str) -> tuple[str, str]:
        """The top k with the type mask and the exclusions. The ``[N]`` type-bias row and its addition are
        two passes over N (~1 ms of ~10 at 1M entities): only a query that disallows some type pays for
        them (an If on ``allowed_types``)."""
        every_type, some_types = b.branch(), b.branch()
        outputs = [every_type.subgraph(_top_k_outputs(self.top_k(every_type, scores, False, True)), "every_type"),
                   some_types.subgraph(_top_k_outputs(self.top_k(some_types, scores, True, True)), "type_mask")]
        all_allowed = b.op("Cast", b.op("ReduceMin", b.op("Cast", "allowed_types", to=INT32), keepdims=0), to=BOOL)
        values, positions = b.op_multi("If", all_allowed, outputs=2, then_branch=outputs[0], else_branch=outputs[1])
        return values, positions


def _top_k_outputs(top: tuple[str, str]) -> list[tuple[str, int]]:
    return [(top[0], FLOAT), (top[1], INT64)]


def build_graph(spec: GraphSpec, profile: ExportProfile, emulate: bool = False) -> onnx.ModelProto:
    """The top-k graph of ``spec`` for ``profile``; passes ``onnx.checker`` with shape inference.

    Args:
        emulate: integer products computed exactly in float (validation on a CPU unlike the target).
    """
    query_fn = resolve_query(spec.model)
    num_entities = len(spec.entity_types)
    block = topk_block(num_entities)
    integer = block_scaled(spec, profile)
    if block is not None:
        spec = _padded(spec, block, in_scale_order=integer)
    g = GraphBuilder()
    # block-scaled rows are stored in scale order: ids map to positions through the inverse permutation
    order = _stored_order(g, spec, num_entities) if integer else None
    # a dot-product query linear in the head leaves the head's scale to the query's scale
    defer_scale = profile.format == "qoperator" and spec.interaction == "dot" and spec.model in LINEAR_IN_HEAD
    h, r_table, (table_t, e_scale), head_scale = _gather_rows(g, spec, profile, "head", order, block, defer_scale)
    basis = None
    if spec.entity_basis is not None:  # factored: rows of U are coordinates in the basis V
        basis = g.const(np.ascontiguousarray(spec.entity_basis.astype(np.float32)), "entity_basis")
        h = g.op("MatMul", h, basis)
    q = query_fn(g, h, r_table, "relation", spec.width)
    offset = None
    if spec.interaction == "l1":
        scores, offset, q_scale = _l1_scores(g, spec, profile, q, table_t, e_scale, basis)
    else:
        # q · (U[t] · V) = (q · Vᵀ) · U[t]: one [B, W] x [W, r] product, then the table's
        q_stored = q if basis is None else g.op("Gemm", q, basis, transB=1)
        scores, q_scale = _products(g, profile, q_stored, table_t, e_scale, emulate, integer, head_scale)
    if q_scale is not None and spec.interaction == "l2":  # the norms need true products
        scores, q_scale = g.op("Mul", scores, q_scale), None
    if spec.interaction == "l2":
        norms = g.const((candidate_rows(spec, profile) ** 2).sum(1).astype(np.float32), "entity_sq_norms")
        scores = g.op("Sub", g.op("Mul", scores, g.const(np.float32(2.0))), norms)
    # A query that restricts nothing (every type allowed, nothing excluded: the common single query) runs
    # the `plain` branch, TopK straight on the scores; the runtime says so through the `masked` input, whose
    # default (False) also lets it leave out `allowed_types` and `exclude`
    tail = _Tail(spec, order, block, num_entities, integer, e_scale if integer else None)
    plain, masked = g.branch(), g.branch()
    values, ids = g.op_multi(
        "If", "masked", outputs=2,
        then_branch=masked.subgraph(_top_k_outputs(tail.masked_top_k(masked, scores)), "masked"),
        else_branch=plain.subgraph(_top_k_outputs(tail.top_k(plain, scores, False, False)), "plain"),
    )
    if order is not None:  # stored positions -> entity ids (padding positions are their own ids)
        ids = g.op("Cast", g.op("Gather", order.stored, ids, axis=0), to=INT64)
    if len(spec.entity_types) > num_entities:  # a padding row only comes back with -inf (k beyond the
        # candidates): keep ids in range
        ids = g.op("Min", ids, g.const(np.int64(num_entities - 1)))
    if offset is not None:
        values = g.op("Sub", values, offset)
    if q_scale is not None:
        values = g.op("Mul", values, q_scale)
    if spec.interaction == "l2":
        q_sq = g.op("ReduceSum", g.op("Mul", q, q), g.const(np.array([1], np.int64)), keepdims=1)
        distance = g.op("Sqrt", g.op("Max", g.op("Sub", q_sq, values), g.const(np.float32(0.0))))
        values = g.op("Neg", distance)
    # the last nodes write the outputs themselves: an Identity per output costs a node per query
    g.rename(ids, "ids")
    g.rename(values, "scores")
    # inputs with a default (an initializer of the same name): a plain query feeds only head, relation and k
    g.const(np.ones(spec.num_types, dtype=bool), "allowed_types")
    g.const(np.zeros((1, 0), dtype=np.int64), "exclude")
    g.const(np.bool_(False), "masked")
    inputs = [
        tensor_input("head", INT64, ["batch"]),
        tensor_input("relation", INT64, ["batch"]),
        tensor_input("k", INT64, [1]),
        tensor_input("allowed_types", BOOL, [spec.num_types]),
        tensor_input("exclude", INT64, ["batch", "num_excluded"]),
        tensor_input("masked", BOOL, []),
    ]
    outputs = [tensor_input("ids", INT64, ["batch", "k"]), tensor_input("scores", FLOAT, ["batch", "k"])]
    model = g.build(inputs, outputs, profile.opset, f"kgedge_{spec.model}_topk")
    onnx.checker.check_model(model, full_check=True)
    return model

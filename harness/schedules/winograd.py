"""Exact integer Winograd F(m x m, 3x3), m = 2 or 4, for the 8-bit 3x3 stride-1 convs of x86 CPUs
without VNNI.

A direct 8-bit conv on AVX2 multiplies at the rate of ``vpmaddubsw`` + ``vpmaddwd`` (or of
``vpmaddwd`` on widened operands): 8 multiply-adds per cycle and core where both issue once per 2
cycles (Zen 1). Winograd's F(m x m, 3x3) computes an m x m tile of outputs from an (m+2) x (m+2)
tile of data with (m+2)^2 products per (output, input) channel pair instead of 9 m^2: 16 instead
of 36 for F(2x2), 36 instead of 144 for F(4x4). Its products are int16 x int16, one ``vpmaddwd``
per 2 input channels and 8 output channels: 2.25x (4x) fewer multiplies at the same rate.
Everything stays in integers, so the result is the direct conv's, bit for bit
(:data:`TRANSFORMS`; the textbook G's rows multiplied by integers so that none is a fraction, A^T's
columns by what puts the factor back: ``A^T [(G g G^T) . (B^T d B)] A = scale x the conv``):

                 F(2x2, 3x3)                         F(4x4, 3x3)
    data     V = B^T d B, int16: |V| <= 1020        |V| <= 17340 (uint8 data)
    weights  U = G g G^T, int16: |U| <= 9 x 128     |U| <= 49 x 128 (packed once at build)
    products M = sum over c of U . V                int32 per position, vpmaddwd pairs
    output   Y = A^T M A = 4 x conv                 576 x conv, in int64: conv = (Y >> 6) / 9

The products are summed in int32 over chunks of input channels (:func:`channel_chunks`, from the
weights' values: the fewest chunks in which no sum of any position can leave int32 whatever the
data; F(2x2) needs one up to :func:`max_channels` whatever the weights, F(4x4) one for resnet's
real 7-bit weights at 512 channels, several for extreme ones). The output transform adds the
chunks' transforms in int64, where nothing can overflow; TVM's LLVM code marks 32-bit adds of both
signed and unsigned types as not wrapping (``nsw`` / ``nuw``), so an overflow there would be
undefined, not a wrap-around.

The kernel (:func:`winograd_conv2d_te`, blocks ``winograd_data_rows`` / ``winograd_data`` /
``winograd_gemm`` / ``winograd_out_rows`` / ``winograd_out``: each transform in two halves of one
matrix each) reads and writes the channel-blocked ``NCHW{B}c`` tensors of
:mod:`harness.build.passes.packed_int8`, which rewrites the convs (:func:`applies`) when it
legalizes them. Its schedule (:func:`schedule_int8_winograd`):

    parallel for (n, tile row ty):
        V[a, a, tiles of the row, c]      (the data transform of one row of tiles, int16; a = m + 2)
        for k-block (kb x lanes output channels):
            for (e, u) in a x a, chunk, tile groups of xi:
                for c / 2:  unroll xi tiles x kb blocks: M[lanes] += vpmaddwd(V pair, U[lanes x 2])
            A^T on M's columns, the chunks summed (int64)
            A^T on the rows, / scale, and the fused epilogue for the k-block's m rows
"""
from __future__ import annotations

import dataclasses
import functools
from typing import List

import numpy as np
from tvm import s_tir, tirx

from .analysis import (Block, NotApplicable, const_int, inline_all, largest_divisor_at_most, param_buffers,
                       root_blocks)
from .int8_conv import var_index

@dataclasses.dataclass(frozen=True)
class Transform:
    """F(m x m, 3x3) in integers: ``A^T [(G g G^T) . (B^T d B)] A = scale x the conv`` for the
    integer matrices below (the textbook G's rows multiplied by integers so that no fraction is
    left, A^T's columns by what puts the factor back), with ``scale = 2^shift x divisor``."""
    tile: int            # m: outputs per tile side
    data: np.ndarray     # B^T, (m + 2) x (m + 2)
    weight: np.ndarray   # G (integer), (m + 2) x 3
    out: np.ndarray      # A^T (integer), m x (m + 2)
    shift: int
    divisor: int = 1     # the odd part of the scale

    @property
    def alpha(self) -> int:
        """Data tile side, and positions per side of the transformed tile."""
        return self.tile + 2

    @property
    def scale(self) -> int:
        return (1 << self.shift) * self.divisor


# F(2, 3): data transform B^T, integer weight transform 2G, output transform A^T
B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.int64)
G2 = np.array([[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]], dtype=np.int64)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.int64)
SCALE_SHIFT = 2  # (2G) g (2G)^T is 4 x G g G^T: the output is 4 x the conv
F2 = Transform(2, B_T, G2, A_T, SCALE_SHIFT)
# F(4, 3) at the points 0, +-1, +-2, infinity: the textbook G's rows have the denominators 4, 6, 6,
# 24, 24, 1; multiplied by them G is integer (row sums of magnitudes 1, 3, 3, 7, 7, 1: |U| <= 49 x
# 128), and A^T's columns multiplied by 24 / them make the output 24 x 24 = 576 x the conv
F4 = Transform(4,
               np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                         [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=np.int64),
               np.array([[1, 0, 0], [-1, -1, -1], [-1, 1, -1], [1, 2, 4], [1, -2, 4], [0, 0, 1]], dtype=np.int64),
               np.array([[6, 4, 4, 1, 1, 0], [0, 4, -4, 2, -2, 0], [0, 4, 4, 4, 4, 0], [0, 4, -4, 8, -8, 24]],
                        dtype=np.int64),
               shift=6, divisor=9)
TRANSFORMS = {2: F2, 4: F4}

DATA_BLOCK, GEMM_BLOCK, OUT_BLOCK = "winograd_data", "winograd_gemm", "winograd_out"
# the first halves of the two transforms (B^T applied to a window's rows; A^T to M's columns)
DATA_ROWS_BLOCK, OUT_ROWS_BLOCK = "winograd_data_rows", "winograd_out_rows"
# the kernel's name (the fused kernels that hold it are named fused_conv2d_winograd_...)
KERNEL_NAME = "conv2d_winograd"
INT32_MAX = 2 ** 31 - 1


def _data_range(data_dtype: str):
    return (0, 255) if data_dtype == "uint8" else (-128, 127)


def max_channels(data_dtype: str) -> int:
    """The most input channels F(2x2, 3x3) sums in one chunk whatever the int8 weights: where its
    largest product sum, 1152 x 1020 per channel (4 x the conv's bound), fits int32."""
    data_max = 255 if data_dtype == "uint8" else 128
    return INT32_MAX // (4 * 9 * data_max * 128)


def transformed(weight: np.ndarray, tile: int) -> np.ndarray:
    """``G g G^T`` of int8 OIHW 3x3 weights ``[K, C, 3, 3]``: int64 ``[alpha, alpha, K, C]``."""
    g = TRANSFORMS[tile].weight.astype(np.int64)
    k_out, chans = weight.shape[:2]
    # as batched 3x3 products (3x faster than the einsum at 512 x 512 channels; integers: exact)
    u = g @ weight.astype(np.int64).reshape(k_out * chans, 3, 3) @ g.T
    return np.ascontiguousarray(u.transpose(1, 2, 0)).reshape(len(g), len(g), k_out, chans)


def data_bounds(data_dtype: str, tile: int) -> np.ndarray:
    """``[alpha, alpha]``: the largest magnitude of each position of ``B^T d B`` over the data's
    codes."""
    lo, hi = _data_range(data_dtype)
    b = TRANSFORMS[tile].data
    coef = np.einsum("ei,uj->euij", b, b)
    return np.maximum(np.maximum(coef * lo, coef * hi).sum((2, 3)), -np.minimum(coef * lo, coef * hi).sum((2, 3)))


def channel_chunks(weight: np.ndarray, u: np.ndarray, data_dtype: str) -> int:
    """How many equal chunks of input channels the kernel sums its products over before each
    chunk's output transform, for the int8 weights `weight` and their :func:`transformed` `u`
    (whose size says the tile): the fewest (an even count of channels each) in which no product
    sum of any output channel can leave int32, whatever the data's codes (per position, the sum
    over the chunk's channels of ``|G g G^T| x`` :func:`data_bounds`); 0 where no chunking keeps
    the result exact (9 x the conv itself past int32, for F(4x4))."""
    tile = int(u.shape[0]) - 2
    lo, hi = _data_range(data_dtype)
    w = weight.astype(np.int64)
    conv = np.maximum(np.maximum(w * lo, w * hi).sum((1, 2, 3)), -np.minimum(w * lo, w * hi).sum((1, 2, 3)))
    if TRANSFORMS[tile].divisor * conv.max(initial=0) > INT32_MAX:
        return 0
    per_channel = np.abs(u) * data_bounds(data_dtype, tile)[:, :, None, None]
    chans = weight.shape[1]
    # no count below the whole sum's share of int32 can do (a lower bound: the loop starts there)
    fewest = max(1, -(-int(per_channel.sum(-1).max(initial=0)) // INT32_MAX))
    for chunks in range(fewest, chans // 2 + 1):
        if chans % chunks or (chans // chunks) % 2:
            continue
        sums = per_channel.reshape(*per_channel.shape[:3], chunks, chans // chunks).sum(-1)
        if sums.max(initial=0) <= INT32_MAX:
            return chunks
    return 0


def pack_weights(u: np.ndarray, lanes: int) -> np.ndarray:
    """:func:`transformed` weights ``G g G^T`` ``[alpha, alpha, K, C]`` as int16, packed for the
    kernel's ``vpmaddwd``: ``[alpha, alpha, K / lanes, C / 2, lanes, 2]`` (per position, a
    k-block's ``lanes`` x 2 input channels side by side, the operand one instruction reads)."""
    alpha, _, k_out, chans = (int(v) for v in u.shape)
    assert np.abs(u).max(initial=0) < 2 ** 15
    u = u.reshape(alpha, alpha, k_out // lanes, lanes, chans // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    return np.ascontiguousarray(u).astype(np.int16)


def lanes_for(target) -> int:
    """The int32 lanes of the ``vpmaddwd`` the kernel multiplies with on `target` (16 with
    AVX-512BW, 8 with AVX2), or 0 where the rewrite does not pay: on CPUs with VNNI (``vpdpbusd``
    does 4 x the products of ``vpmaddwd`` per instruction, so 2.25x fewer of the latter gain
    little) and on other targets."""
    from ..targets import normalize_target, target_has_feature  # pylint: disable=import-outside-toplevel
    from .intrinsics import has_vnni  # pylint: disable=import-outside-toplevel

    tgt = normalize_target(target)
    if tgt.kind.name != "llvm" or has_vnni(tgt, 16) or has_vnni(tgt, 8):
        return 0
    if target_has_feature(tgt, "avx512bw"):
        return 16
    return 8 if target_has_feature(tgt, "avx2") else 0


def applies(data_dtype: str, weight_shape, strides, dilation, groups: int, block: int, lanes: int) -> bool:
    """Whether an NCHW{block}c conv is one the Winograd kernel computes: 8-bit data, an ungrouped
    3x3 kernel at stride and dilation 1, output channels in whole vectors of `lanes`, input
    channels even (the weights' values then decide: :func:`channel_chunks`)."""
    k_out, chans, kh, kw = (int(v) for v in weight_shape)
    return (data_dtype in ("uint8", "int8") and groups == 1 and (kh, kw) == (3, 3)
            and all(int(v) == 1 for v in [*strides, *dilation])
            and k_out % lanes == 0 and k_out % block == 0 and chans % 2 == 0)


def _rows(matrix: np.ndarray, index, f, dtype: str):
    """Row `index` (an expression, a constant once its loop is unrolled) of `matrix` applied to
    ``f(0 .. columns - 1)``, expressions of `dtype`."""
    def row(r):
        expr = None
        for j, coef in enumerate(int(v) for v in matrix[r]):
            if coef == 0:
                continue
            term = f(j)
            if abs(coef) != 1:
                term = term * tirx.const(abs(coef), dtype)
            expr = (term if coef > 0 else -term) if expr is None else (expr + term if coef > 0 else expr - term)
        return expr

    expr = row(matrix.shape[0] - 1)
    for r in range(matrix.shape[0] - 2, -1, -1):
        expr = tirx.Select(index == r, row(r), expr)
    return expr


def winograd_conv2d_te(data, packed, *, padding, block: int, lanes: int, tile: int, chunks: int):
    """TE of the conv of `data` (``NCHW{block}c``, 8-bit) with the :func:`pack_weights`
    weights `packed`, its input channels summed in `chunks` (:func:`channel_chunks`); int32
    output ``NCHW{block}c``, equal to the direct conv's."""
    from tvm import te, topi  # pylint: disable=import-outside-toplevel

    tf = TRANSFORMS[tile]
    n, cb, height, width, _ = (int(v) for v in data.shape)
    chans = cb * block
    per_chunk = chans // chunks
    k_out = int(packed.shape[2]) * lanes
    top, left, bottom, right = (int(v) for v in padding)
    out_h, out_w = height + top + bottom - 2, width + left + right - 2
    th, tw = -(-out_h // tile), -(-out_w // tile)
    # zeros below and right of the data so that every tile's window exists (partial last tiles)
    bottom, right = tile * th + 2 - height - top, tile * tw + 2 - width - left
    padded = data
    if top or left or bottom or right:
        padded = topi.nn.pad(data, [0, 0, top, left, 0], [0, 0, bottom, right, 0], name="pad_temp")

    def pixel(i, ty, tx, c, r, s):
        return padded[i, c // block, tile * ty + r, tile * tx + s, c % block].astype("int16")

    # each transform in two stages of one matrix each: one Select per stage, whose rows fold to
    # constants once the positions are unrolled (nested in one expression, F(4x4)'s took a minute
    # to compile)
    rows = te.compute((tf.alpha, tf.alpha, n, th, tw, chans),
                      lambda e, s, i, ty, tx, c: _rows(tf.data, e, lambda r: pixel(i, ty, tx, c, r, s), "int16"),
                      name=DATA_ROWS_BLOCK)
    v = te.compute((tf.alpha, tf.alpha, n, th, tw, chans),
                   lambda e, u, i, ty, tx, c: _rows(tf.data, u, lambda s: rows[e, s, i, ty, tx, c], "int16"),
                   name=DATA_BLOCK)
    rc = te.reduce_axis((0, per_chunk), name="rc")
    m = te.compute((tf.alpha, tf.alpha, chunks, k_out // lanes, n, th, tw, lanes),
                   lambda e, u, q, kb, i, ty, tx, ki: te.sum(
                       v[e, u, i, ty, tx, q * per_chunk + rc].astype("int32")
                       * packed[e, u, kb, q * (per_chunk // 2) + rc // 2, ki, rc % 2].astype("int32"),
                       axis=rc),
                   name=GEMM_BLOCK)

    # the output transform in int64: its sums of a chunk's products (each within int32) and of
    # the chunks cannot overflow there, and the total is scale x the conv
    def half(e, p, kb, i, ty, tx, ki):
        parts = [_rows(tf.out, p, lambda u, q=q: m[e, u, q, kb, i, ty, tx, ki].astype("int64"), "int64")
                 for q in range(chunks)]
        return functools.reduce(lambda a, b: a + b, parts)

    half_done = te.compute((tf.alpha, tile, k_out // lanes, n, th, tw, lanes), half, name=OUT_ROWS_BLOCK)

    def out(i, kb, y, x, ki):
        k = kb * block + ki
        total = _rows(tf.out, y % tile,
                      lambda e: half_done[e, x % tile, k // lanes, i, y // tile, x // tile, k % lanes], "int64")
        conv = tirx.shift_right(total, tirx.const(tf.shift, "int64")).astype("int32")
        return conv if tf.divisor == 1 else tirx.truncdiv(conv, tirx.const(tf.divisor, "int32"))

    return te.compute((n, k_out // block, out_h, out_w, block), out, name=OUT_BLOCK)


def _named(sch: s_tir.Schedule, blocks: List[Block], name: str) -> int:
    found = [i for i, b in enumerate(blocks) if sch.get(b.rv).name_hint == name]
    if len(found) != 1:
        raise NotApplicable(f"{len(found)} {name} blocks")
    return found[0]


def axis_loops(sch: s_tir.Schedule, block_rv):
    """(the loop of each axis of the buffer `block_rv` writes -- None where it has none: an axis
    of extent 1, which :func:`root_blocks` normalizes away --, the loops of its reduction iters),
    from the block's innermost loops (one per iter)."""
    block = sch.get(block_rv)
    iters = list(block.iter_vars)
    loops = sch.get_loops(block_rv)[-len(iters):]
    index = [var_index(rng.min, iters) for rng in block.writes[0].region]
    reduce = [lp for lp, iv in zip(loops, iters) if iv.iter_type == tirx.IterVar.CommReduce]
    return [None if i is None else loops[i] for i in index], reduce


def block_of(block) -> int:
    """Channels per block of the ``NCHW{B}c`` tensor `block` writes."""
    return const_int(block.writes[0].source.shape[-1])


def schedule_int8_winograd(sch: s_tir.Schedule, target) -> str:
    """The schedule of a fused :func:`winograd_conv2d_te` kernel (see the module's docstring)."""
    from ..targets import vector_bits  # pylint: disable=import-outside-toplevel
    from .cpu import dense_register_tile, tensorize_register_tile  # pylint: disable=import-outside-toplevel
    from .intrinsics import pmaddwd_intrinsic  # pylint: disable=import-outside-toplevel

    blocks = root_blocks(sch)
    order = [_named(sch, blocks, name) for name in (DATA_ROWS_BLOCK, DATA_BLOCK, GEMM_BLOCK, OUT_ROWS_BLOCK, OUT_BLOCK)]
    if order != sorted(order) or order[1:4] != list(range(order[0] + 1, order[0] + 4)):
        raise NotApplicable("unexpected block order")
    i_rows, i_data, i_gemm, i_half, i_out = order
    params = param_buffers(sch)
    data_rows, data, gemm, half = (blocks[i] for i in (i_rows, i_data, i_gemm, i_half))
    block = sch.get(gemm.rv)
    alpha, _, _, k_blocks, _, _, row_tiles, lanes = (const_int(v) for v in block.writes[0].source.shape)
    tile = alpha - 2
    intrin = pmaddwd_intrinsic(lanes, "int16")
    inline_all(sch, blocks[:i_rows], params)  # the padding, read through by the data transform
    rest = inline_all(sch, blocks[i_out:], params)  # the output transform's second half into the epilogue
    if len(rest) != 1:
        raise NotApplicable(f"{len(rest)} blocks after the products")
    last = rest[0]

    bits = vector_bits(target)
    xi, kb = dense_register_tile(row_tiles, k_blocks, bits)
    # the epilogue (the output transform inlined into it) drives: its loops [n, k-block, y, x,
    # lane] -> n, tile row | k-blocks of kb x lanes | the rest; the products of a row's tiles for
    # kb x lanes channels computed under them, the row's data transform under the row
    (on, ok, oy, ox, oki), _ = axis_loops(sch, last.rv)
    if oy is None or ox is None or oki is None:
        raise NotApplicable("unexpected epilogue loops")
    ty, yi = sch.split(oy, [None, tile])
    k_outer = None
    if ok is not None:
        k_outer, ok = sch.split(ok, [None, kb * lanes // block_of(sch.get(last.rv))])
    rows = [lp for lp in (on, ty) if lp is not None]
    sch.reorder(*[lp for lp in (*rows, k_outer, ok, yi, ox, oki) if lp is not None])
    row = sch.fuse(*rows) if len(rows) > 1 else rows[0]
    sch.parallel(row)
    sch.compute_at(half.rv, k_outer if k_outer is not None else row, preserve_unit_loops=True)
    sch.compute_at(gemm.rv, k_outer if k_outer is not None else row, preserve_unit_loops=True)
    sch.compute_at(data.rv, row, preserve_unit_loops=True)

    # the products: [e, u, chunk] | tile groups of xi | c / 2 | unrolled xi tiles x kb blocks | lanes x 2
    (e, u, q, k, n, ty, tx, ki), (rc,) = axis_loops(sch, gemm.rv)
    tx_out, txi = sch.split(tx, [None, xi]) if tx is not None else (None, None)
    c2, ci = sch.split(rc, [None, 2])
    order = [e, u, q, n, ty, tx_out, c2, txi, k, ki, ci]
    sch.reorder(*[lp for lp in order if lp is not None])
    tensorize_register_tile(sch, gemm.rv, c2, ki, intrin, (txi, k))

    # the data transform: its alpha x alpha positions unrolled (their B^T rows then constants), the
    # channels of a pixel vectorized
    (d_e, d_u, _, _, d_tx, d_c), _ = axis_loops(sch, data.rv)
    vec = largest_divisor_at_most(const_int(sch.get(d_c).extent), bits // 16)
    d_co, d_ci = sch.split(d_c, [None, vec])
    sch.reorder(*[lp for lp in (d_tx, d_co, d_e, d_u, d_ci) if lp is not None])
    sch.unroll(d_e)
    sch.unroll(d_u)
    sch.vectorize(d_ci)
    # its first half (B^T on the window's rows) for the same channels, just before
    sch.compute_at(data_rows.rv, d_co if d_co is not None else d_tx, preserve_unit_loops=True)
    (r_e, r_s, _, _, _, r_c), _ = axis_loops(sch, data_rows.rv)
    for lp in (r_e, r_s):
        sch.unroll(lp)
    sch.vectorize(r_c)

    # the output transform's first half (A^T on M's columns, summing the chunks): per tile and
    # k-block, its alpha x tile positions unrolled, the lanes vectorized
    (h_e, h_p, h_k, _, _, h_tx, h_ki), _ = axis_loops(sch, half.rv)
    sch.reorder(*[lp for lp in (h_tx, h_k, h_e, h_p, h_ki) if lp is not None])
    for lp in (h_e, h_p):
        if lp is not None:
            sch.unroll(lp)
    sch.vectorize(h_ki)

    # the output transform and the epilogue: the tile x tile positions of a tile unrolled (A^T's
    # rows then constants), the block of channels vectorized
    (_, _, _, ox, oki), _ = axis_loops(sch, last.rv)
    _, xi2 = sch.split(ox, [None, tile])
    sch.unroll(yi)
    sch.unroll(xi2)
    sch.vectorize(oki)
    return "int8 winograd conv"

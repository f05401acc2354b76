"""Exact integer Winograd F(2x2, 3x3) for the 8-bit 3x3 stride-1 convs of x86 CPUs without VNNI.

A direct 8-bit conv on AVX2 multiplies at the rate of ``vpmaddubsw`` + ``vpmaddwd`` (or of
``vpmaddwd`` on widened operands): 8 multiply-adds per cycle and core where both issue once per 2
cycles (Zen 1). Winograd's F(2x2, 3x3) computes a 2x2 tile of outputs from a 4x4 tile of data with
16 products per (output, input) channel pair instead of 2 x 2 x 9 = 36, and its products are int16
x int16, one ``vpmaddwd`` per 2 input channels and 8 output channels: 2.25x fewer multiplies at
the same rate. Everything stays in integers, so the result is the direct conv's, bit for bit:

    data     d (4x4 of a tile, 8-bit)  -> V = B^T d B          int16, |V| <= 4 x 255 = 1020
    weights  g (3x3, int8)             -> U = (2G) g (2G)^T    int16, |U| <= 9 x 128 = 1152
                                          (2G instead of the textbook G, whose halves are not integer;
                                          packed once at build: a constant)
    products M = sum over c of U . V   int32 per position (16 of them), vpmaddwd pairs: no saturation
    output   Y = A^T M A = 4 x conv    -> conv = Y >> 2        (exact: Y is a multiple of 4)

Per input channel, each product is at most 1152 x 1020 = 4 x 9 x 255 x 128 in magnitude, the bound
of 4 x the conv itself, and so is each row sum of the output transform (the bound is reached, not
passed: tests/tune/test_winograd_int8.py searches 200000 tiles of extreme codes). So with at most
:func:`max_channels` input channels (1827 for uint8 data: 4 x 1827 x 9 x 255 x 128 < 2^31) no sum
leaves int32, and the rewrite stops there. The output transform adds in uint32 all the same, whose
wrap-around is defined (int32's is not, in LLVM): were a sum to leave int32, Y would still be exact
as long as 4 x the conv fits.

The kernel (:func:`winograd_conv2d_te`, blocks ``winograd_data`` / ``winograd_gemm`` /
``winograd_out``) reads and writes the channel-blocked ``NCHW{B}c`` tensors of
:mod:`harness.build.passes.packed_int8`, which rewrites the convs (:func:`applies`) when it
legalizes them. Its schedule (:func:`schedule_int8_winograd`):

    parallel for (n, tile row ty):
        V[4, 4, tiles of the row, c]      (the data transform of one row of tiles, int16)
        for k-block (kb x lanes output channels):
            for (e, u) in 4 x 4, tile groups of xi:
                for c / 2:  unroll xi tiles x kb blocks: M[lanes] += vpmaddwd(V pair, U[lanes x 2])
            output transform + the fused epilogue for the k-block's 2 rows
"""
from __future__ import annotations

from typing import List

import numpy as np
from tvm import s_tir, tirx

from .analysis import (Block, NotApplicable, const_int, inline_all, largest_divisor_at_most, param_buffers,
                       root_blocks)
from .int8_conv import var_index

# F(2, 3): data transform B^T, integer weight transform 2G, output transform A^T
B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.int64)
G2 = np.array([[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]], dtype=np.int64)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.int64)
SCALE_SHIFT = 2  # (2G) g (2G)^T is 4 x G g G^T: the output is 4 x the conv

DATA_BLOCK, GEMM_BLOCK, OUT_BLOCK = "winograd_data", "winograd_gemm", "winograd_out"
# the kernel's name (the fused kernels that hold it are named fused_conv2d_winograd_...)
KERNEL_NAME = "conv2d_winograd"


def max_channels(data_dtype: str) -> int:
    """The most input channels for which 4 x the conv's largest possible sum fits int32 (the
    weights int8, at most 128 in magnitude)."""
    data_max = 255 if data_dtype == "uint8" else 128
    return (2 ** 31 - 1) // (4 * 9 * data_max * 128)


def transform_weights(weight: np.ndarray, lanes: int) -> np.ndarray:
    """int8 OIHW 3x3 weights ``[K, C, 3, 3]`` -> ``(2G) g (2G)^T`` as int16, packed for the kernel's
    ``vpmaddwd``: ``[4, 4, K / lanes, C / 2, lanes, 2]`` (per position, a k-block's ``lanes`` x 2
    input channels side by side, the operand one instruction reads)."""
    k_out, chans = weight.shape[:2]
    u = np.einsum("ei,kcij,uj->eukc", G2, weight.astype(np.int64), G2)
    assert np.abs(u).max(initial=0) < 2 ** 15
    u = u.reshape(4, 4, k_out // lanes, lanes, chans // 2, 2).transpose(0, 1, 2, 4, 3, 5)
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
    channels even and at most :func:`max_channels`."""
    k_out, chans, kh, kw = (int(v) for v in weight_shape)
    return (data_dtype in ("uint8", "int8") and groups == 1 and (kh, kw) == (3, 3)
            and all(int(v) == 1 for v in [*strides, *dilation])
            and k_out % lanes == 0 and k_out % block == 0 and chans % 2 == 0
            and chans <= max_channels(data_dtype))


def winograd_conv2d_te(data, packed, *, padding, block: int, lanes: int):
    """TE of the conv of `data` (``NCHW{block}c``, 8-bit) with the :func:`transform_weights`
    weights `packed`; int32 output ``NCHW{block}c``, equal to the direct conv's."""
    from tvm import te, topi  # pylint: disable=import-outside-toplevel

    n, cb, height, width, _ = (int(v) for v in data.shape)
    chans = cb * block
    k_out = int(packed.shape[2]) * lanes
    top, left, bottom, right = (int(v) for v in padding)
    out_h, out_w = height + top + bottom - 2, width + left + right - 2
    th, tw = (out_h + 1) // 2, (out_w + 1) // 2
    # zeros below and right of the data so that every tile's 4x4 window exists (odd outputs)
    bottom, right = 2 * th + 2 - height - top, 2 * tw + 2 - width - left
    padded = data
    if top or left or bottom or right:
        padded = topi.nn.pad(data, [0, 0, top, left, 0], [0, 0, bottom, right, 0], name="pad_temp")

    def b_t(e, f):  # row e of B^T applied to f(0..3)
        return tirx.Select(e == 0, f(0) - f(2), tirx.Select(e == 1, f(1) + f(2),
                                                            tirx.Select(e == 2, f(2) - f(1), f(1) - f(3))))

    def pixel(i, ty, tx, c, r, s):
        return padded[i, c // block, 2 * ty + r, 2 * tx + s, c % block].astype("int16")

    v = te.compute((4, 4, n, th, tw, chans),
                   lambda e, u, i, ty, tx, c: b_t(e, lambda r: b_t(u, lambda s: pixel(i, ty, tx, c, r, s))),
                   name=DATA_BLOCK)
    rc = te.reduce_axis((0, chans), name="rc")
    m = te.compute((4, 4, k_out // lanes, n, th, tw, lanes),
                   lambda e, u, kb, i, ty, tx, ki: te.sum(
                       v[e, u, i, ty, tx, rc].astype("int32") * packed[e, u, kb, rc // 2, ki, rc % 2].astype("int32"),
                       axis=rc),
                   name=GEMM_BLOCK)

    def a_t(o, f):  # row o of A^T applied to f(0..3)
        return tirx.Select(o == 0, f(0) + f(1) + f(2), f(1) - f(2) - f(3))

    def out(i, kb, y, x, ki):
        k = kb * block + ki
        wide = a_t(y % 2, lambda e: a_t(x % 2, lambda u: m[e, u, k // lanes, i, y // 2, x // 2, k % lanes]
                                                      .astype("uint32")))
        return tirx.shift_right(wide.astype("int32"), tirx.const(SCALE_SHIFT, "int32"))

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
    from .cpu import accumulator_budget, dense_register_tile  # pylint: disable=import-outside-toplevel
    from .intrinsics import pmaddwd_intrinsic  # pylint: disable=import-outside-toplevel

    blocks = root_blocks(sch)
    i_data, i_gemm, i_out = (_named(sch, blocks, name) for name in (DATA_BLOCK, GEMM_BLOCK, OUT_BLOCK))
    if not i_data < i_gemm < i_out:
        raise NotApplicable("unexpected block order")
    params = param_buffers(sch)
    data, gemm = blocks[i_data], blocks[i_gemm]
    block = sch.get(gemm.rv)
    _, _, k_blocks, _, _, row_tiles, lanes = (const_int(v) for v in block.writes[0].source.shape)
    intrin = pmaddwd_intrinsic(lanes, "int16")
    inline_all(sch, blocks[:i_data], params)  # the padding, read through by the data transform
    rest = inline_all(sch, blocks[i_gemm + 1:], params)  # the output transform into the epilogue
    if len(rest) != 1:
        raise NotApplicable(f"{len(rest)} blocks after the products")
    last = rest[0]

    bits = vector_bits(target)
    xi, kb = dense_register_tile(row_tiles, k_blocks, accumulator_budget(bits))
    # the epilogue (the output transform inlined into it) drives: its loops [n, k-block, y, x,
    # lane] -> n, tile row | k-blocks of kb x lanes | the rest; the products of a row's tiles for
    # kb x lanes channels computed under them, the row's data transform under the row
    (on, ok, oy, ox, oki), _ = axis_loops(sch, last.rv)
    if oy is None or ox is None or oki is None:
        raise NotApplicable("unexpected epilogue loops")
    ty, yi = sch.split(oy, [None, 2])
    k_outer = None
    if ok is not None:
        k_outer, ok = sch.split(ok, [None, kb * lanes // block_of(sch.get(last.rv))])
    rows = [lp for lp in (on, ty) if lp is not None]
    sch.reorder(*[lp for lp in (*rows, k_outer, ok, yi, ox, oki) if lp is not None])
    row = sch.fuse(*rows) if len(rows) > 1 else rows[0]
    sch.parallel(row)
    sch.compute_at(gemm.rv, k_outer if k_outer is not None else row, preserve_unit_loops=True)
    sch.compute_at(data.rv, row, preserve_unit_loops=True)

    # the products: [e, u] | tile groups of xi | c / 2 | unrolled xi tiles x kb blocks | lanes x 2
    (e, u, k, n, ty, tx, ki), (rc,) = axis_loops(sch, gemm.rv)
    tx_out, txi = sch.split(tx, [None, xi]) if tx is not None else (None, None)
    c2, ci = sch.split(rc, [None, 2])
    order = [e, u, n, ty, tx_out, c2, txi, k, ki, ci]
    sch.reorder(*[lp for lp in order if lp is not None])
    init = sch.decompose_reduction(gemm.rv, c2)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(ki, intrin)
    for lp in (txi, k):
        if lp is not None:
            sch.unroll(lp)

    # the data transform: its 4 x 4 positions unrolled (their B^T rows then constants), the
    # channels of a pixel vectorized
    (d_e, d_u, _, _, d_tx, d_c), _ = axis_loops(sch, data.rv)
    vec = largest_divisor_at_most(const_int(sch.get(d_c).extent), bits // 16)
    d_co, d_ci = sch.split(d_c, [None, vec])
    sch.reorder(*[lp for lp in (d_tx, d_co, d_e, d_u, d_ci) if lp is not None])
    sch.unroll(d_e)
    sch.unroll(d_u)
    sch.vectorize(d_ci)

    # the output transform and the epilogue: the 2 x 2 positions of a tile unrolled (A^T's rows
    # then constants), the block of channels vectorized
    (_, _, _, ox, oki), _ = axis_loops(sch, last.rv)
    _, xi2 = sch.split(ox, [None, 2])
    sch.unroll(yi)
    sch.unroll(xi2)
    sch.vectorize(oki)
    return "int8 winograd conv"

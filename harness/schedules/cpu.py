"""Default CPU schedules for the kernels nobody tuned (what TOPI's x86 templates used to give).

TVM 0.27's Relax CPU pipeline leaves every legalized kernel as naive, single-threaded scalar
loops; only kernels found in a MetaSchedule database get real schedules. This module gives
every other PrimFunc of a fused Relax module a plain, deterministic schedule:

* one reduction block (conv2d, grouped / depthwise / dilated conv2d, matmul / dense, pooling,
  sums), fp32 or 8-bit x 8-bit -> int32, with its fused epilogue (bias add, ReLU, the int8
  dequantize multiply / cast / round / clip / requantize of :mod:`harness.quantize.realize`):
  the elementwise epilogue is inlined into one output block, the padding stage stays a stage of
  its own (parallel, vectorized), and the reduction is tiled as a register block

      parallel for (outer spatial tiles):          # n, oc / reg, oh, ow / vec, fused
          acc[reg, vec] = 0                         # local accumulator (decomposed init)
          for (reduction loops: ic, kh, kw):
              unroll for r in reg:                  # e.g. output channels
                  vectorize for v in vec:           # output width / columns (contiguous)
                      acc[r, v] += data * weight
          epilogue(acc) -> output                   # reverse_compute_at, vectorized

  Per output element the reduction order is the unscheduled one, so integer kernels are
  bit-exact and float ones differ only by FMA contraction.
* 8-bit convs (and grouped ones between channel-blocked tensors): on the CPU's 8-bit dot product
  (:func:`schedule_int8_dot_conv`); depthwise ones
  vectorized across channels (:func:`schedule_int8_depthwise_conv`), where the plain schedule
  above would vectorize along a (strided) output row and broadcast every weight.
* no reduction block (elementwise / injective, quantize, reshape, padding): producers inlined;
  the innermost loops (joined until two vectors long) split by a divisor of at most the vector
  width, that part vectorized, the outer loops fused and made parallel.
* anything else: only the outer data-parallel loops of each block are made parallel.

Output widths with no divisor near the vector length (inception_v3's 17, 71, 73, 149) would
leave that schedule scalar: before legalization such NCHW conv2d and pools are computed a few
columns wider (more right padding) and sliced back (:func:`harness.build.passes.pad_conv_width_pass`;
8-bit convs on the dot product excepted, which vectorize output channels instead). Measured on a
2-core Zen 2: inception_v3 fp32 706 -> 309 ms (convs), -> 286 ms
(pools too), its 80->192 3x3 conv at 71 columns 104 -> 26 ms.

A function the rule cannot handle is left as it was (never an error: it is logged at debug
level); functions already scheduled (``tirx.is_scheduled``, e.g. from a tuning database) are
not touched. :class:`CPUSchedules` is this family as the build pipeline
(:mod:`harness.build.pipeline`) and the search (:mod:`harness.tune.spaces`) use it; the config's
``build.schedules.cpu_default: false`` switches all of it off (then llvm builds are what
``tvm.compile``'s default pipeline gives), ``build.schedules.cpu_int8_dot: false`` only the
dot-product schedule of the 8-bit convs.
"""
from __future__ import annotations

import logging
import math
from fractions import Fraction
from typing import List, Optional

import tvm
from tvm import s_tir, tirx

from ..targets import vector_bits, vector_registers
from .analysis import (SCHEDULED_ATTR, Block, NotApplicable, block_bits, const_int, dtype_bits, inline_all, is_padding,
                       divisors, is_reduction_iter, is_scheduled, largest_divisor_at_most, param_buffers,
                       pick_vector_factor, root_blocks, schedule_pass, uses, writes_param, region_vars, vars_of)
from .int8_conv import data_block, int8_conv_iters, pack_int8_conv, pack_weights, split_around, var_index
from .intrinsics import WeightBits

logger = logging.getLogger(__name__)

# below this many output elements an elementwise kernel stays on one thread
_PARALLEL_MIN_ELEMENTS = 4096


def schedule_injective(sch: s_tir.Schedule, block_rv, bits: int) -> None:
    """Parallel outer loops, a vectorized (or plain, for LLVM to vectorize) inner row."""
    loops = sch.get_loops(block_rv)
    if not loops:
        return
    extents = [const_int(sch.get(lp).extent) for lp in loops]
    lanes = max(1, bits // block_bits(sch, block_rv))
    total = math.prod(extents)
    # the inner row: the innermost loop, joined with the next ones while it is short
    n_inner, inner_ext = 1, extents[-1]
    while n_inner < len(loops) and inner_ext < 2 * lanes:
        n_inner += 1
        inner_ext *= extents[-n_inner]
    inner = sch.fuse(*loops[-n_inner:]) if n_inner > 1 else loops[-1]
    outer = loops[:-n_inner]
    vec = pick_vector_factor(inner_ext, lanes)
    if vec >= max(2, lanes // 2):
        _, vi = sch.split(inner, factors=[None, vec])
        sch.vectorize(vi)
    if outer and total >= _PARALLEL_MIN_ELEMENTS:
        fo = sch.fuse(*outer) if len(outer) > 1 else outer[0]
        if const_int(sch.get(fo).extent) > 1:
            sch.parallel(fo)


def accumulator_budget(bits: int) -> int:
    """Vector registers a register tile's accumulators may take (the other 4 hold operands)."""
    return vector_registers(bits) - 4


# The most accumulators of a dense dot-product tile: more (AVX-512's budget is 28) ran slower on
# every resnet50_v1 conv on Zen 5 (2026-12-05: 7 x 2 pixels x 16-lane blocks beat 4 x 4 by
# 1.1-1.6x and 7 x 4 by 1.1-3x). Measured, not derived: the 16-accumulator loops showed no spills
# in their assembly, and why they run slower was not found. AVX2's 12 is below it
DENSE_ACCUMULATORS = 14


def _loads_per_product(xi: int, kb: int) -> Fraction:
    """Operands a register tile of `xi` pixels x `kb` weight vectors loads per product."""
    return Fraction(xi + kb, xi * kb)


def dense_register_tile(pixels: int, channel_blocks: int, bits: int):
    """``(xi, kb)``: the register tile of a dot-product kernel on `bits`-wide vectors -- ``xi``
    pixels (or Winograd tiles) that divide `pixels`, times ``kb`` blocks of output channels that
    divide `channel_blocks`, at most :data:`DENSE_ACCUMULATORS` (and the registers') accumulators
    -- that loads the fewest operands per product: each step loads ``xi`` data and ``kb`` weight
    vectors for ``xi x kb`` products, so the tile minimizes ``1 / kb + 1 / xi`` (on a tie, the
    wider row of pixels).

    A row of 7 pixels (resnet50_v1's last stage) once got 1 x 16 (a tile of at most 4 pixels
    that divide the row): each weight vector loaded for one product, and the stage's convs ran
    4-5x slower than on 7 x 2 on Zen 5."""
    budget = min(accumulator_budget(bits), DENSE_ACCUMULATORS)
    best = None
    for xi in divisors(pixels):
        if xi > budget:
            continue
        kb = largest_divisor_at_most(channel_blocks, budget // xi)
        key = (_loads_per_product(xi, kb), -xi)
        if best is None or key < best[0]:
            best = (key, xi, kb)
    return best[1], best[2]


def tensorize_register_tile(sch: s_tir.Schedule, block_rv, reduce_loop, lane_loop, intrin: str, tile_loops) -> None:
    """The accumulators' initialization split out at `reduce_loop` and vectorized, `lane_loop`
    (with the loops inside it) tensorized as `intrin`, and the register tile's `tile_loops` (None:
    absent) unrolled."""
    init = sch.decompose_reduction(block_rv, reduce_loop)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(lane_loop, intrin)
    for loop in tile_loops:
        if loop is not None:
            sch.unroll(loop)


def row_widening_bits(target) -> int:
    """The vector bits :func:`dense_row_width` widens the blocked 8-bit convs' rows for on
    `target`, 0 where it does not: on AVX-512 only. AVX2 code gained nothing from it (7 -> 9
    pixels 0.86-0.90x, 17 -> 18 level, 71 -> 72 1.07x per kernel: `mcpu=znver3` code timed on
    Zen 5, 2026-12-05), where its twelve accumulators and the issue rate of its products, not the
    weights' loads, bound the one-pixel tiles."""
    bits = vector_bits(target)
    return bits if bits >= 512 else 0


#: pixels of a row in the depthwise 8-bit schedule's register tile, at most (one accumulator each)
DEPTHWISE_PIXELS = 8


def _little_wider(wide: int, width: int) -> bool:
    """Whether a row computed `wide` columns for `width` costs at most an eighth more (the bound of
    the widenings below that trade columns for whole tiles or vectors)."""
    return 8 * wide <= 9 * width


def depthwise_row_width(width: int) -> int:
    """The width a blocked depthwise 8-bit conv computes a `width`-pixel row at: `width` where it
    has a divisor of at least half :data:`DEPTHWISE_PIXELS` to tile by, else the next width that
    has one, if that is at most an eighth wider (17 -> 18, 73 -> 75; a 17-pixel row tiled one pixel
    at a time loads each weight vector per product: inception_v3's average pools as depthwise convs
    under ``requantize: folded``, 0.066 -> 0.022 ms each on Zen 5)."""
    def tiles(w):
        return largest_divisor_at_most(w, DEPTHWISE_PIXELS) * 2 >= DEPTHWISE_PIXELS

    return next((w for w in range(width, width + DEPTHWISE_PIXELS) if tiles(w) and _little_wider(w, width)), width)


def channel_block(target) -> int:
    """Channels per block of the channel-blocked 8-bit tensors on `target`
    (:mod:`harness.build.passes.packed_int8`): the int32 lanes of its vector, 8 or 16."""
    return 16 if vector_bits(target) >= 512 else 8


def dense_row_width(width: int, channel_blocks: int, bits: int) -> int:
    """The output width a channel-blocked 8-bit conv on a dot product is computed at (its kernel
    writes only the first `width` columns): the width up to :data:`DENSE_ACCUMULATORS` columns
    wider whose :func:`dense_register_tile` loads the fewest operands per row, ``width' x (1 / kb
    + 1 / xi)`` (on a tie, the narrower), where that saves a quarter of the loads at least (rows
    whose tile is good keep their kernels, and their tuning records). A prime row wider than the
    tile (inception_v3's 17, 71 and 73) otherwise runs one pixel per tile: 17 -> 18 took its 1x1
    768 -> 192 conv from 0.157 to 0.046 ms, 71 -> 72 its 3x3 80 -> 192 conv from 1.97 to 0.69 ms
    (Zen 5, 6 x 2 tiles)."""
    def loads(cand):
        return cand * _loads_per_product(*dense_register_tile(cand, channel_blocks, bits))

    best = min(range(width, width + DENSE_ACCUMULATORS), key=lambda cand: (loads(cand), cand))
    return best if 4 * loads(best) <= 3 * loads(width) else width


def _choose_axes(sch: s_tir.Schedule, anchor: Block):
    """(vector axis, register axis or None) as indices into the anchor's iters."""
    block = sch.get(anchor.rv)
    spatial = [i for i, iv in enumerate(anchor.iters) if not is_reduction_iter(iv) and const_int(iv.dom.extent) > 1]
    if not spatial:
        raise NotApplicable("no spatial iteration to vectorize")

    def index_of(var) -> Optional[int]:
        return next((i for i, iv in enumerate(anchor.iters) if iv.var.same_as(var)), None)

    vec = None
    out_region = block.writes[0].region
    for rng in reversed(out_region):  # the output's innermost dimension that varies
        used = [index_of(v) for v in vars_of(rng.min)]
        used = [i for i in used if i in spatial]
        if used:
            vec = max(used)
            break
    if vec is None:
        vec = spatial[-1]
    vec_var = anchor.iters[vec].var
    reg, reg_ext = None, 0
    for i in spatial:
        if i == vec:
            continue
        var = anchor.iters[i].var
        # an axis some operand does not depend on while it streams along the vector axis:
        # that operand's vector is loaded once for all `reg` accumulators
        if any(uses(region_vars(r), vec_var) and not uses(region_vars(r), var) for r in block.reads):
            ext = const_int(anchor.iters[i].dom.extent)
            if ext > reg_ext:
                reg, reg_ext = i, ext
    return vec, reg


def schedule_reduction(sch: s_tir.Schedule, blocks: List[Block], anchor: Block, target) -> None:
    """Register-tiled, parallel, vectorized schedule of the one reduction block and its epilogue."""
    params = param_buffers(sch)
    bits = vector_bits(target)
    idx = next(i for i, b in enumerate(blocks) if b is anchor)
    before, after = blocks[:idx], blocks[idx + 1:]
    # prologue: keep padding as a stage of its own; inline the rest where legal
    prologue = inline_all(sch, before, params, keep=is_padding)
    # epilogue: inline the elementwise chain into the block that writes the output
    rest = inline_all(sch, after, params)
    acc_dtype = sch.get(anchor.rv).writes[0].source.dtype
    # the accumulator tile: "global" scope, allocated inside the parallel loop and compacted to one
    # tile; on the CPU that is a stack array (registers, after LLVM's SROA) where it is under 1 KB.
    # A "local" one is a TVMBackendAllocWorkspace call per tile in TVM 0.27 (LowerTVMBuiltin keeps
    # only small "global" allocations on the stack), whose memory LLVM cannot keep in registers.
    if writes_param(sch, anchor.rv, params):
        if sch.get_consumers(anchor.rv):
            raise NotApplicable("reduction output is both a result and read again")
        epilogue = sch.cache_write(anchor.rv, 0, "global")
    else:
        consumers = sch.get_consumers(anchor.rv)
        if len(consumers) != 1:
            raise NotApplicable(f"{len(consumers)} consumers of the reduction")
        epilogue = consumers[0]
    rest = [b for b in rest if not sch.get(b.rv).same_as(sch.get(epilogue))]

    lanes = max(1, bits // dtype_bits(acc_dtype))
    vec, reg = _choose_axes(sch, anchor)
    extents = [const_int(iv.dom.extent) for iv in anchor.iters]
    vec_factor = pick_vector_factor(extents[vec], lanes)
    n_vec = math.ceil(vec_factor / lanes)
    acc_budget = min(16, max(1, accumulator_budget(bits) // n_vec))
    reg_factor = largest_divisor_at_most(extents[reg], acc_budget) if reg is not None else 1

    outer, reduce_loops, reg_inner, vec_inner = [], [], None, None
    for i, (loop, iv) in enumerate(zip(anchor.loops, anchor.iters)):
        if is_reduction_iter(iv):
            reduce_loops.append(loop)
        elif i == vec:
            lo, li = sch.split(loop, factors=[None, vec_factor])
            outer.append(lo)
            vec_inner = li
        elif i == reg and reg_factor > 1:
            lo, li = sch.split(loop, factors=[None, reg_factor])
            outer.append(lo)
            reg_inner = li
        else:
            outer.append(loop)
    inner = [lp for lp in (reg_inner, vec_inner) if lp is not None]
    sch.reorder(*outer, *reduce_loops, *inner)
    sch.reverse_compute_at(epilogue, outer[-1], preserve_unit_loops=False)
    fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    if const_int(sch.get(fused).extent) > 1:
        sch.parallel(fused)
    if vec_factor > 1:
        sch.vectorize(vec_inner)
    if reg_inner is not None:
        sch.unroll(reg_inner)
    if reduce_loops:  # (unit reduction loops are gone after normalization: 1x1 windows)
        sch.decompose_reduction(anchor.rv, reduce_loops[0])  # the init loops keep these loop kinds
    epi_loops = sch.get_loops(epilogue)
    if len(epi_loops) > 1 and const_int(sch.get(epi_loops[-1]).extent) > 1:
        sch.vectorize(epi_loops[-1])
    for blk in prologue + rest:
        schedule_injective(sch, blk.rv, bits)
    if vec_factor > 1 and len(sch.get(anchor.rv).reads) > 2:  # convs (data, weights, acc): not pools
        deinterleave_strided_reads(sch, prologue, anchor, vec)
    if vec_factor > 1:
        pack_matmul_weights(sch, anchor, vec, vec_factor, params)


def pack_matmul_weights(sch: s_tir.Schedule, anchor: Block, vec: int, vec_factor: int, params) -> None:
    """A dense layer (``X[m, k] @ W[k, n]``, n the vector axis, W a parameter) reads one short
    vector per row of W, each from another cache line and, for wide layers, another page: the
    weights are packed once at build as ``[n / v, k, v]`` (a layout-rewrite block, folded into the
    constant), so that each tile of outputs streams its weights contiguously. At every batch: a
    matrix-vector product at batch 1, and at batch 16 vgg19's 25088 -> 4096 fp32 dense 1236 ->
    104 ms (2-core Zen 1, 2026-12-05; 1.3 -> 15.8 GMAC/s, 8 rows x 8 columns per register tile)."""
    block = sch.get(anchor.rv)
    var = anchor.iters[vec].var
    for i, region in enumerate(block.reads):
        buf = region.source
        if len(buf.shape) != 2 or not any(buf.same_as(p) for p in params):
            continue
        rows, cols = region.region
        if not (isinstance(cols.min, tirx.Var) and cols.min.same_as(var) and isinstance(rows.min, tirx.Var)):
            continue
        if not any(iv.var.same_as(rows.min) and is_reduction_iter(iv) for iv in anchor.iters):
            continue
        if not isinstance(buf.shape[1], tirx.IntImm) or int(buf.shape[1].value) % vec_factor:
            return
        pack = sch.cache_read(anchor.rv, i, "global")
        sch.transform_layout(pack, ("write", 0), lambda k, n: (n // vec_factor, k, n % vec_factor))
        sch.annotate(pack, "meta_schedule.layout_rewrite_preproc", 1)
        return


def deinterleave_strided_reads(sch: s_tir.Schedule, stages: List[Block], anchor: Block, vec: int) -> None:
    """A stage (the padding) that the reduction reads ``s`` elements apart along its vector axis
    (stride-2 convs and pools: ``x * 2 + kw``) is stored de-interleaved, ``[..., x % s, x // s]``,
    so that those reads are contiguous vectors (LLVM otherwise loads a strided vector element by
    element). Only where ``s`` divides the stage's innermost extent; used for convs (measured on a
    2-core Emerald Rapids: resnet50's 7x7 stride-2 fp32 stem ~15% faster), not pools (a 3x3 stride-2
    max pool got slower: its padding stage, written de-interleaved, costs more than it saves)."""
    from tvm.sym.pattern import detect_linear_equation  # pylint: disable=import-outside-toplevel

    block = sch.get(anchor.rv)
    var = anchor.iters[vec].var
    for blk in stages:
        buf = sch.get(blk.rv).writes[0].source
        region = next((r for r in block.reads if r.source.same_as(buf)), None)
        if region is None or len(buf.shape) < 2:
            continue
        coef = detect_linear_equation(region.region[-1].min, [var])
        stride, width = (coef[0] if len(coef) == 2 else None), buf.shape[-1]
        if not (isinstance(stride, tirx.IntImm) and isinstance(width, tirx.IntImm)):
            continue  # (a symbolic stride or width: left as it is, not the whole schedule refused)
        stride, width = int(stride.value), int(width.value)
        if stride < 2 or width % stride:
            continue
        sch.transform_layout(blk.rv, ("write", 0), _deinterleave_map(len(buf.shape), stride))


def _deinterleave_map(ndim: int, stride: int):
    return tirx.IndexMap.from_func(lambda *idx: [*idx[:-1], idx[-1] % stride, idx[-1] // stride], ndim=ndim)


def schedule_int8_dot_conv(sch: s_tir.Schedule, blocks: List[Block], anchor: Block, target, *,
                           sample: bool = False, weight_bits: WeightBits = WeightBits()) -> None:
    """The 8-bit NCHW conv2d (``conv2d_nchw``: 8-bit data, int8 weights, int32 accumulation) on
    the CPU's exact 8-bit dot product (:func:`harness.schedules.intrinsics.cpu_int8_dots`: the best one
    whose vector of output channels and group of input channels divide the conv's).

    Inside the kernel, channels are packed so that one instruction multiplies ``red`` adjacent
    input channels of one pixel by ``lanes`` output channels' weights:

        data   [n, c, y, x]   -> [n, c / red, y, x, red]          (the padding stage writes it)
        weight [k, c, r, s]   -> [k / lanes, c / red, r, s, lanes, red]   (a layout-rewrite block:
                                 split out of the kernel and folded into the constant at build)
        acc    [n, k, y, x]   -> [n, k / lanes, y, x, lanes]      (a register tile, int32)

        parallel for (n, k-blocks / kb, y, x / xi):
            for (c / red, r, s):
                unroll xi pixels x kb k-blocks:  acc[lanes] += dot(data[red], weight[lanes, red])
            epilogue (dequantize, bias, ReLU, requantize) -> output NCHW

    Integer sums in another order: bit-identical to the plain schedule.  Grouped convs over
    channel-blocked data (:data:`harness.schedules.int8_conv.GROUPED_CONV`, from
    :mod:`harness.build.passes.packed_int8`) the same way, the group a parallel loop of its own,
    ``k`` and ``c`` a group's channels, and a wider row of pixels per tile (a group has few output
    channels); the bits of their weights are ``weight_bits.grouped`` (``reduce_range`` shortens
    the ungrouped convs' only), so they go on ``vpmaddubsw`` only where those are 7 or fewer.
    Not applicable (the plain register-tiled schedule is used) to NCHW grouped convs, to channel
    counts no dot product divides (per group, for grouped ones).

    ``sample=True`` makes it a search space (:func:`harness.tune.spaces.cpu_int8_dot_space`): the
    register tile -- ``xi`` pixels x ``kb`` channel blocks, and ``yi`` rows -- is drawn with
    ``sample_perfect_tile`` instead of fixed, so that MetaSchedule's search tunes it.
    """
    from .intrinsics import fitting_int8_dots  # pylint: disable=import-outside-toplevel

    conv = int8_conv_iters(sch, anchor, grouped=True)
    k_i, c_i, y_i, x_i = conv.k_i, conv.c_i, conv.y_i, conv.x_i
    k_ext, c_ext, x_ext = conv.k_ext, conv.c_ext, conv.x_ext
    fitting = fitting_int8_dots(target, conv.data_dtype, k_ext, c_ext, weight_bits.of(conv.g_i is not None))
    if not fitting:
        raise NotApplicable(f"no 8-bit dot product for {conv.data_dtype} data, {k_ext} output and "
                            f"{c_ext} input channels{' per group' if conv.g_i is not None else ''} on this target")
    intrin, lanes, red = fitting[0]
    iters = anchor.iters
    block = data_block(sch, anchor, red, c_ext)
    if block is not None:
        # channel-blocked data, read in place: the channel loop split into blocks, groups of
        # `red` in a block, and `red`; each (k block, c block, r, s) of the weights contiguous
        c_factors = [None, block // red, red]
        weight_map = lambda k, c, r, s: (k // lanes, c // block, r, s, (c % block) // red, k % lanes, c % red)  # noqa: E731
    else:
        c_factors = [None, red]
        weight_map = lambda k, c, r, s: (k // lanes, c // red, r, s, k % lanes, c % red)  # noqa: E731
    acc_map = lambda k, y, x: (k // lanes, y, x, k % lanes)  # noqa: E731
    if conv.g_i is None:
        parts = pack_int8_conv(sch, blocks, anchor, red, weight_map, c_ext)
        sch.transform_layout(anchor.rv, ("write", 0), lambda n, k, y, x: (n, *acc_map(k, y, x)))
    else:  # grouped: weights [g, k, c, r, s], accumulator [n, g, k, y, x]; the group leads
        parts = pack_int8_conv(sch, blocks, anchor, red, lambda g, *kcrs: (g, *weight_map(*kcrs)), c_ext)
        sch.transform_layout(anchor.rv, ("write", 0), lambda n, g, k, y, x: (n, g, *acc_map(k, y, x)))
    if parts.epilogue is None:
        raise NotApplicable("the accumulator is not read by exactly one epilogue")
    epilogue, prologue, rest, weights = parts.epilogue, parts.prologue, parts.rest, parts.weights

    bits = vector_bits(target)
    budget = accumulator_budget(bits)
    if conv.g_i is None:
        xi, kb = dense_register_tile(x_ext, k_ext // lanes, bits)
    else:  # a group's few output channels: a wider row of pixels per weight vector
        kb = largest_divisor_at_most(k_ext // lanes, 2)
        xi = largest_divisor_at_most(x_ext, max(1, budget // kb))
    loops = sch.get_loops(anchor.rv)
    spatial, reduce, rows, groups = [], [], [], []

    def tile(loop, inner: int, most: int):
        factors = sch.sample_perfect_tile(loop, n=2, max_innermost_factor=most) if sample else [None, inner]
        return sch.split(loop, factors)

    k_in = x_in = c_in = None
    for i, loop in enumerate(loops):
        if i == k_i:
            k_out, k_in = sch.split(loop, [None, lanes])
            k_out, kb_in = tile(k_out, kb, max(1, budget // 2))
            spatial.append(k_out)
        elif i == x_i:
            x_out, x_in = tile(loop, xi, 8)
            spatial.append(x_out)
        elif sample and i == y_i:
            y_out, y_in = tile(loop, 1, 2)
            spatial.append(y_out)
            rows.append(y_in)
        elif i == c_i:
            *c_outer, c_in = sch.split(loop, c_factors)
            reduce.append(c_outer[0])
            groups = c_outer[1:]  # (blocked data) the groups of a block: inside the kernel window
        elif is_reduction_iter(iters[i]):
            reduce.append(loop)
        else:
            spatial.append(loop)
    sch.reorder(*spatial, *reduce, *groups, *rows, x_in, kb_in, k_in, c_in)
    # a sampled tile may be 1 wide: unit loops are kept so that every sample has the same loops
    # (a trace replayed with other decisions must see as many as it was written with)
    sch.reverse_compute_at(epilogue, spatial[-1], preserve_unit_loops=sample)
    outer = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
    if const_int(sch.get(outer).extent) > 1:
        sch.parallel(outer)
    tensorize_register_tile(sch, anchor.rv, reduce[0], k_in, intrin, (*rows, x_in, kb_in))
    epi_loops = sch.get_loops(epilogue)
    if len(epi_loops) > 1 and const_int(sch.get(epi_loops[-1]).extent) > 1:
        sch.vectorize(epi_loops[-1])
    if len(epi_loops) > 2:
        # the output channels of the tile unrolled: the accumulator is then indexed by constants
        # (registers, read with shuffles) instead of a strided gather per channel from the stack;
        # 1.2x on resnet50_v1's 1x1 64 -> 256 conv at 56x56 (Zen 3), level on the 3x3 ones
        sch.unroll(epi_loops[-2])
    for blk in prologue + rest:
        schedule_injective(sch, blk.rv, bits)
    schedule_injective(sch, weights, bits)


def schedule_int8_dot_dense(sch: s_tir.Schedule, blocks: List[Block], anchor: Block, target) -> None:
    """The 8-bit dense layer (Relax's ``matmul`` of 8-bit data ``[m, k]`` and a constant int8
    ``[k, n]``, int32 sums) on the CPU's exact 8-bit dot product, as :func:`schedule_int8_dot_conv`
    does a 1x1 conv:

        weight [k, n] -> [n / lanes, k / red, lanes, red]   (a layout-rewrite block, folded at build)

        parallel for (m / xi, n / (kb x lanes)):
            for k / red:
                unroll xi rows x kb blocks:  acc[lanes] += dot(data[red], weight[lanes, red])
            epilogue (dequantize, bias, ReLU, requantize)

    At batch 1 a dense layer is a matrix-vector product that reads each weight once: int8 weights
    are a quarter of the fp32 bytes (vgg19's first dense layer: 103 MB of fp32). Weights of 8 bits
    (the quantizer reduces only conv weights), so never ``vpmaddubsw``. Integer sums in another
    order: bit-identical to the plain schedule."""
    from .intrinsics import fitting_int8_dots  # pylint: disable=import-outside-toplevel

    block = sch.get(anchor.rv)
    if block.name_hint != "matmul" or len(block.reads) != 2 or len(block.writes) != 1 \
            or len(block.writes[0].region) != 2:
        raise NotApplicable("not a 2-D matmul")
    data_region, weight_region = block.reads
    data_dtype = str(data_region.source.dtype)
    if data_dtype not in ("int8", "uint8") or str(weight_region.source.dtype) != "int8" \
            or str(block.writes[0].source.dtype) != "int32":
        raise NotApplicable("not an 8-bit x int8 -> int32 matmul")
    params = param_buffers(sch)
    if not any(weight_region.source.same_as(p) for p in params):
        raise NotApplicable("weights are computed in the kernel")
    iters = anchor.iters  # (a batch of 1 has no iter: its index is the constant 0)
    m_i, n_i = (var_index(rng.min, iters) for rng in block.writes[0].region)
    k_i = var_index(weight_region.region[0].min, iters)
    if n_i is None or k_i is None or var_index(weight_region.region[1].min, iters) != n_i:
        raise NotApplicable("unexpected matmul indexing")
    exts = [const_int(iv.dom.extent) for iv in iters]
    m_ext, n_ext, k_ext = 1 if m_i is None else exts[m_i], exts[n_i], exts[k_i]
    fitting = fitting_int8_dots(target, data_dtype, n_ext, k_ext, 8)
    if not fitting:
        raise NotApplicable(f"no 8-bit dot product for {n_ext} outputs of {k_ext} inputs on this target")
    intrin, lanes, red = fitting[0]
    prologue, rest, epilogue = split_around(sch, blocks, anchor)
    if epilogue is None:
        raise NotApplicable("the sums are not read by exactly one epilogue")
    weights = pack_weights(sch, anchor, lambda k, n: (n // lanes, k // red, n % lanes, k % red))

    bits = vector_bits(target)
    xi, kb = dense_register_tile(m_ext, n_ext // lanes, bits)
    m_out = m_in = None
    if m_i is not None:
        m_out, m_in = sch.split(anchor.loops[m_i], [None, xi])
    n_out, kb_in, n_in = sch.split(anchor.loops[n_i], [None, kb, lanes])
    k_out, k_in = sch.split(anchor.loops[k_i], [None, red])
    sch.reorder(*[lp for lp in (m_out, n_out, k_out, m_in, kb_in, n_in, k_in) if lp is not None])
    sch.reverse_compute_at(epilogue, n_out)
    outer = n_out if m_out is None else sch.fuse(m_out, n_out)
    if const_int(sch.get(outer).extent) > 1:
        sch.parallel(outer)
    tensorize_register_tile(sch, anchor.rv, k_out, n_in, intrin, (m_in, kb_in))
    epi_loops = sch.get_loops(epilogue)
    if const_int(sch.get(epi_loops[-1]).extent) > 1:
        sch.vectorize(epi_loops[-1])
    for blk in prologue + rest:
        schedule_injective(sch, blk.rv, bits)
    schedule_injective(sch, weights, bits)


def schedule_int8_depthwise_conv(sch: s_tir.Schedule, blocks: List[Block], anchor: Block, target) -> None:
    """The 8-bit depthwise NCHW conv2d (``group_conv2d_nchw`` / ``depthwise_conv2d_nchw`` with one
    input channel per group and one output channel per input channel: 8-bit data, int8 weights,
    int32 accumulation) vectorized across channels.

    The plain schedule vectorizes along the output row, where a stride-2 window gathers every
    other byte and every weight is broadcast per vector; here channels are the vector, like the
    dot-product schedule's output channels, and each weight vector serves a tile of pixels:

        data   [n, c, y, x]   -> [n, c / lanes, y, x, lanes]   (the padding stage writes it)
        weight [c, 1, r, s]   -> [c / lanes, 1, r, s, lanes]   (layout-rewrite block, folded at build)
        acc    [n, c, y, x]   -> [n, c / lanes, y, x, lanes]   (a register tile, int32)

        parallel for (n, c / lanes, y, x / xi):
            for (r, s):
                unroll xi pixels:  acc[xi, lanes] += int32(data[lanes]) * int32(weight[lanes])
            epilogue (dequantize, bias, ReLU6, requantize) -> output NCHW

    ``lanes`` is one vector of int32 (16 on AVX-512, 8 on AVX2); the 8 x 8-bit products LLVM
    emits as ``vpmaddwd`` (both operands fit in 16 bits). The same integer sums per output as the
    plain schedule, in another order: bit-identical. Not applicable (the plain schedule is used)
    to grouped convs with several channels per group and to channel counts no vector divides;
    ``build.schedules.cpu_int8_depthwise: false`` switches it off.
    """
    block = sch.get(anchor.rv)
    if block.name_hint not in ("group_conv2d_nchw", "depthwise_conv2d_nchw") \
            or len(block.reads) != 2 or len(block.writes) != 1:
        raise NotApplicable("not a grouped / depthwise NCHW conv")
    data_region, weight_region = block.reads
    out_region = block.writes[0]
    data, weight, out = data_region.source, weight_region.source, out_region.source
    if str(data.dtype) not in ("int8", "uint8") or str(weight.dtype) != "int8" or str(out.dtype) != "int32":
        raise NotApplicable("not an 8-bit x int8 -> int32 conv")
    if not any(weight.same_as(p) for p in param_buffers(sch)):
        raise NotApplicable("weights are computed in the kernel")
    channels = const_int(out.shape[1])
    # NCHW data, or channel-blocked [n, c / b, y, x, b] (harness.build.passes.packed_int8)
    data_channels = const_int(data.shape[1]) * (const_int(data.shape[4]) if len(data.shape) == 5 else 1)
    if const_int(weight.shape[1]) != 1 or const_int(weight.shape[0]) != channels or data_channels != channels:
        raise NotApplicable("not depthwise (one input and one output channel per group)")
    iters = anchor.iters
    o_idx = [var_index(rng.min, iters) if const_int(rng.extent) == 1 else None for rng in out_region.region]
    k_i, x_i = o_idx[1], o_idx[3]
    if k_i is None or x_i is None or var_index(weight_region.region[0].min, iters) != k_i:
        raise NotApplicable("unexpected group_conv2d_nchw indexing")
    bits = vector_bits(target)
    lanes = next((n for n in (bits // 32, bits // 64) if n > 1 and channels % n == 0), None)
    if lanes is None:
        raise NotApplicable(f"{channels} channels: no int32 vector divides them")
    parts = pack_int8_conv(sch, blocks, anchor, lanes, lambda k, c, r, s: (k // lanes, c, r, s, k % lanes))
    if parts.epilogue is None:
        raise NotApplicable("the accumulator is not read by exactly one epilogue")
    sch.transform_layout(anchor.rv, ("write", 0), lambda n, k, y, x: (n, k // lanes, y, x, k % lanes))
    # accumulators: xi vectors; the rest hold the weight and data vectors
    xi = largest_divisor_at_most(const_int(iters[x_i].dom.extent), min(DEPTHWISE_PIXELS, vector_registers(bits) // 2))
    spatial, reduce = [], []
    k_in = x_in = None
    for i, loop in enumerate(sch.get_loops(anchor.rv)):
        if i == k_i:
            k_out, k_in = sch.split(loop, [None, lanes])
            spatial.append(k_out)
        elif i == x_i:
            x_out, x_in = sch.split(loop, [None, xi])
            spatial.append(x_out)
        elif is_reduction_iter(iters[i]):
            reduce.append(loop)
        else:
            spatial.append(loop)
    sch.reorder(*spatial, *reduce, x_in, k_in)
    sch.reverse_compute_at(parts.epilogue, spatial[-1], preserve_unit_loops=False)
    outer = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
    if const_int(sch.get(outer).extent) > 1:
        sch.parallel(outer)
    sch.vectorize(k_in)
    sch.unroll(x_in)
    if reduce:
        init = sch.decompose_reduction(anchor.rv, reduce[0])
        sch.vectorize(sch.get_loops(init)[-1])
    epi_loops = sch.get_loops(parts.epilogue)
    if len(epi_loops) > 1 and const_int(sch.get(epi_loops[-1]).extent) > 1:
        sch.vectorize(epi_loops[-1])
    for blk in parts.prologue + parts.rest:
        schedule_injective(sch, blk.rv, bits)
    schedule_injective(sch, parts.weights, bits)


def schedule_parallel_only(sch: s_tir.Schedule, target) -> None:  # pylint: disable=unused-argument
    """Fallback: the leading data-parallel loops of every root block made parallel."""
    changed = False
    for blk in root_blocks(sch):
        lead = []
        for loop, iv in zip(blk.loops, blk.iters):
            if is_reduction_iter(iv):
                break
            lead.append(loop)
        if not lead:
            continue
        if math.prod(const_int(sch.get(lp).extent) for lp in lead) < 2:
            continue
        fused = sch.fuse(*lead) if len(lead) > 1 else lead[0]
        sch.parallel(fused)
        changed = True
    if not changed:
        raise NotApplicable("no data-parallel loop")


def _schedule_int8_dot(sch: s_tir.Schedule, target, sample: bool = False,
                       weight_bits: WeightBits = WeightBits()) -> str:
    blocks = root_blocks(sch)
    reductions = [b for b in blocks if b.is_reduction]
    if len(reductions) != 1:
        raise NotApplicable(f"{len(reductions)} reduction blocks")
    if sch.get(reductions[0].rv).name_hint == "matmul" and not sample:
        schedule_int8_dot_dense(sch, blocks, reductions[0], target)
        return "int8 dot-product dense"
    schedule_int8_dot_conv(sch, blocks, reductions[0], target, sample=sample, weight_bits=weight_bits)
    return "int8 dot-product conv"


def _schedule_int8_depthwise(sch: s_tir.Schedule, target) -> str:
    blocks = root_blocks(sch)
    reductions = [b for b in blocks if b.is_reduction]
    if len(reductions) != 1:
        raise NotApplicable(f"{len(reductions)} reduction blocks")
    schedule_int8_depthwise_conv(sch, blocks, reductions[0], target)
    return "int8 depthwise conv"


def sample_int8_dot(sch: s_tir.Schedule, target, weight_bits: WeightBits = WeightBits(), *, amx: bool = False):
    """The int8 dot-product schedule of a fused conv kernel with its register tile sampled
    (a MetaSchedule ``ScheduleFn``: `sch` scheduled in place, None returned); raises where the
    default schedule would not use it. ``amx`` (a target with amx-int8): a stride-1 conv the AMX
    tiles take gets their space instead, a list of design spaces, one per tile plan
    (:func:`harness.schedules.amx.amx_channel_spaces`; `sch` itself is left as it is)."""
    from . import amx as amx_tiles  # pylint: disable=import-outside-toplevel

    if amx and amx_tiles.applies_to(target):
        try:
            return amx_tiles.amx_channel_spaces(sch, target)
        except NotApplicable:  # (raised before the schedule changes)
            pass
    _schedule_int8_dot(sch, target, sample=True, weight_bits=weight_bits)
    return None


def _schedule_main(sch: s_tir.Schedule, target) -> str:
    blocks = root_blocks(sch)
    if not blocks:
        raise NotApplicable("no blocks")
    reductions = [b for b in blocks if b.is_reduction]
    if len(reductions) == 1:
        schedule_reduction(sch, blocks, reductions[0], target)
        return "reduction"
    if not reductions:
        params = param_buffers(sch)
        bits = vector_bits(target)
        for blk in inline_all(sch, blocks, params):
            schedule_injective(sch, blk.rv, bits)
        return "injective"
    raise NotApplicable(f"{len(reductions)} reduction blocks")


def default_schedule_kind(func, target, name: str = "func", *, int8_dot: bool = True,
                          int8_depthwise: bool = True, int8_amx: bool = True, weight_bits: WeightBits = WeightBits()):
    """``(schedule, kind)``: the default schedule of `func` (a PrimFunc, or an IRModule whose main
    is one) as a Schedule (its trace replays it, e.g. as a tuning record) and which rule made it
    (``"cpu_int8_dot"`` for 8-bit convs on the dot product, ``"cpu_int8_depthwise"`` for 8-bit
    depthwise convs vectorized across channels, ``"cpu"`` otherwise), or ``(None, None)`` where no
    rule applies. ``int8_dot`` / ``int8_depthwise`` False: those convs get the plain schedule;
    ``int8_amx`` (targets with amx-int8): 8-bit convs on AMX tiles first (``"cpu_int8_amx"``);
    ``weight_bits``: the most bits of the int8 weights per kind of conv (the quantizer's; 7 allows
    ``vpmaddubsw`` on CPUs without VNNI)."""
    from . import amx, winograd  # pylint: disable=import-outside-toplevel

    render = "detail" if logger.isEnabledFor(logging.DEBUG) else "none"
    rules = [(rule, "cpu_int8_amx") for rule in amx.RULES] if int8_amx and amx.applies_to(target) else []
    rules += [(winograd.schedule_int8_winograd, "cpu_int8_winograd")]
    rules += [(_int8_dot_rule(weight_bits), "cpu_int8_dot")] if int8_dot else []
    rules += [(_schedule_int8_depthwise, "cpu_int8_depthwise")] if int8_depthwise else []
    rules += [(_schedule_main, "cpu"), (schedule_parallel_only, "cpu")]
    for rule, kind in rules:
        try:
            sch = s_tir.Schedule(func, debug_mask="none", error_render_level=render)
            detail = rule(sch, target) or rule.__name__
        except Exception as err:  # pylint: disable=broad-except
            logger.debug("cpu default schedule: %s: %s not applied: %s: %s", name, rule.__name__,
                         type(err).__name__, str(err).strip()[-2000:])
            continue
        logger.debug("cpu default schedule: %s: %s", name, detail)
        return sch, kind
    return None, None


def _int8_dot_rule(weight_bits: WeightBits):
    def _schedule_int8_dot_conv(sch, target):
        return _schedule_int8_dot(sch, target, weight_bits=weight_bits)
    return _schedule_int8_dot_conv


def default_schedule(func, target, name: str = "func", *, int8_dot: bool = True,
                     int8_depthwise: bool = True, int8_amx: bool = True,
                     weight_bits: WeightBits = WeightBits()) -> Optional[s_tir.Schedule]:
    """The default schedule of `func` (:func:`default_schedule_kind`), or None."""
    return default_schedule_kind(func, target, name, int8_dot=int8_dot, int8_depthwise=int8_depthwise,
                                 int8_amx=int8_amx, weight_bits=weight_bits)[0]


def schedule_func(func: tirx.PrimFunc, target, name: str = "func", *, int8_dot: bool = True,
                  int8_depthwise: bool = True, int8_amx: bool = True, weight_bits: WeightBits = WeightBits(),
                  scheduled_by: Optional[dict] = None) -> Optional[tirx.PrimFunc]:
    """The default-scheduled `func` (with `tirx.is_scheduled`), or None where no rule applies;
    ``scheduled_by[name]`` is set to ``"default:<kind>"`` when it is scheduled."""
    if not isinstance(func, tirx.PrimFunc) or is_scheduled(func):
        return None
    sch, kind = default_schedule_kind(func, target, name, int8_dot=int8_dot, int8_depthwise=int8_depthwise,
                                      int8_amx=int8_amx, weight_bits=weight_bits)
    if sch is None:
        return None
    if scheduled_by is not None:
        scheduled_by[name] = f"default:{kind}"
    return sch.mod["main"].with_attr(SCHEDULED_ATTR, True)


def _row_vector_ops(width: int, lanes: int) -> int:
    """Vector instructions per output row and accumulator when the row is vectorized by the
    factor :func:`pick_vector_factor` chooses (a factor of 1 is a scalar instruction per column)."""
    vec = pick_vector_factor(width, lanes)
    return (width // vec) * math.ceil(vec / lanes)


def padded_width(width: int, lanes: int) -> int:
    """The output width a convolution is computed at (the extra columns are sliced off).

    An output width with no divisor near the vector length (17, 71, 73, 149: inception_v3's) leaves
    the register-tiled schedule scalar; computing a few more columns makes it vectorizable. The
    width is only padded when that at least halves the vector instructions per row, and to the
    smallest width that reaches the fewest, in whole vectors where one at most an eighth wider does
    (149 on AVX-512: 160, not 150, whose 15-lane vectors LLVM splits: inception_v3's stem conv
    0.40 -> 0.32 ms on Zen 5; 17 on AVX2 stays 18, not 24),
    so shapes that vectorize well (56, 28, 14, 7, 35 on AVX2) keep their kernels, and their tuning
    records, as they are."""
    def cost(w):  # (vector instructions, 0 where the vector is whole vectors at most 1/8 wider)
        whole = pick_vector_factor(w, lanes) % lanes == 0 and _little_wider(w, width)
        return _row_vector_ops(w, lanes), int(not whole)

    best = min(range(width, width + lanes + 1), key=lambda w: (cost(w), w))
    return best if 2 * cost(best)[0] <= cost(width)[0] else width


def dlight_rule():
    """The same schedules as a `tvm.s_tir.dlight` ScheduleRule (for ApplyDefaultSchedule)."""
    from tvm.s_tir.dlight.base import ScheduleRule

    class CPUDefault(ScheduleRule):  # pylint: disable=too-few-public-methods
        def apply(self, func, target, tunable):  # pylint: disable=unused-argument
            scheduled = schedule_func(func, target)
            if scheduled is None:
                return None
            return s_tir.Schedule(scheduled.without_attr(SCHEDULED_ATTR))

        def is_target_available(self, target) -> bool:
            return target.kind.name == "llvm"

    return CPUDefault()


def default_schedule_pass(target=None, *, int8_dot: bool = True, int8_depthwise: bool = True,
                          int8_amx: bool = True, weight_bits: WeightBits = WeightBits(),
                          scheduled_by: Optional[dict] = None) -> tvm.transform.Pass:
    """Module pass: default CPU schedules for the unscheduled PrimFuncs of a (fused) module
    (``scheduled_by``: kernel name -> ``"default:<kind>"`` for those it scheduled)."""
    return schedule_pass(lambda func, tgt, name: schedule_func(func, tgt, name, int8_dot=int8_dot,
                                                               int8_depthwise=int8_depthwise,
                                                               int8_amx=int8_amx, weight_bits=weight_bits,
                                                               scheduled_by=scheduled_by),
                         target, "HarnessCPUDefaultSchedule")


class CPUSchedules:
    """The default schedules of llvm targets as a schedule family (see
    :func:`harness.schedules.schedule_family`)."""

    name = "cpu"

    def __init__(self, *, int8_dot: bool = True, int8_depthwise: bool = True, int8_amx: bool = True,
                 weight_bits: WeightBits = WeightBits(), int8_blocked: bool = True, int8_winograd: bool = True,
                 int8_winograd_tile: int = 4):
        self.int8_dot = int8_dot
        self.int8_depthwise = int8_depthwise
        self.int8_amx = int8_amx
        self.weight_bits = weight_bits
        self.int8_blocked = int8_blocked
        self.int8_winograd = int8_winograd
        self.int8_winograd_tile = int8_winograd_tile

    @staticmethod
    def applies_to(target) -> bool:
        return target is not None and target.kind.name == "llvm"

    def default_schedule(self, func, target, name: str = "func"):
        """``(schedule, kind)`` of `func`, or ``(None, None)``."""
        return default_schedule_kind(func, target, name, int8_dot=self.int8_dot, int8_depthwise=self.int8_depthwise,
                                     int8_amx=self.int8_amx, weight_bits=self.weight_bits)

    def sample_schedule(self, sch: s_tir.Schedule, target):
        """The family's search space for an 8-bit conv kernel (raises where there is none): the
        dot-product schedule with its register tile sampled (`sch`, in place), or on AMX targets a
        stride-1 conv's AMX design spaces, one per tile plan (a list of copies of `sch`)."""
        if not self.int8_dot:
            from . import amx  # pylint: disable=import-outside-toplevel

            if not (self.int8_amx and amx.applies_to(target)):
                raise NotApplicable("build.schedules.cpu_int8_dot is off")
            return amx.amx_channel_spaces(sch, target)
        return sample_int8_dot(sch, target, self.weight_bits, amx=self.int8_amx)

    def schedule_passes(self, target, scheduled_by: Optional[dict] = None) -> list:
        return [default_schedule_pass(target, int8_dot=self.int8_dot, int8_depthwise=self.int8_depthwise,
                                      int8_amx=self.int8_amx, weight_bits=self.weight_bits,
                                      scheduled_by=scheduled_by)]

    def graph_passes(self, target) -> list:
        """First, odd output widths computed a few columns wider, so that these schedules vectorize
        them (:mod:`harness.build.passes.pad_conv_width`; not the 8-bit convs the dot product
        takes). Then on AMX targets: strided 1x1 int8 convs as a strided slice and a stride-1 conv
        (which runs on AMX's channel-row tiles, whose rows want the wider widths). Elsewhere, with
        the dot product on: the int8 part of the graph channel-blocked
        (:mod:`harness.build.passes.packed_int8`), its 3x3 stride-1 convs on integer Winograd where
        the target has no VNNI and ``int8_winograd`` is on (:mod:`harness.schedules.winograd`)."""
        from ..build.passes.packed_int8 import BLOCK, blocked_int8_pass  # pylint: disable=import-outside-toplevel
        from ..build.passes.pad_conv_width import pad_conv_width_pass  # pylint: disable=import-outside-toplevel
        from . import amx, winograd  # pylint: disable=import-outside-toplevel
        from .intrinsics import cpu_int8_dots  # pylint: disable=import-outside-toplevel

        if self.int8_amx and amx.applies_to(target):
            return [pad_conv_width_pass(target), amx.strided_pointwise_pass(target)]
        # (a CPU without a dot product would run the blocked convs on the plain schedule: no gain)
        dot = self.int8_dot and bool(cpu_int8_dots(target, "int8"))
        if not (dot and self.int8_blocked):
            return [pad_conv_width_pass(target, int8_dot=self.int8_dot)]
        lanes = winograd.lanes_for(target) if self.int8_winograd else 0
        return [pad_conv_width_pass(target, int8_dot=self.int8_dot, block=BLOCK),
                blocked_int8_pass(block=channel_block(target), winograd_lanes=lanes,
                                  winograd_tile=self.int8_winograd_tile, row_bits=row_widening_bits(target))]

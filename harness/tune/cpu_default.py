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
* no reduction block (elementwise / injective, quantize, reshape, padding): producers inlined;
  the innermost loops (joined until two vectors long) split by a divisor of at most the vector
  width, that part vectorized, the outer loops fused and made parallel.
* anything else: only the outer data-parallel loops of each block are made parallel.

Output widths with no divisor near the vector length (inception_v3's 17, 71, 73, 149) would
leave that schedule scalar: before legalization such NCHW conv2d and pools are computed a few
columns wider (more right padding) and sliced back (:func:`pad_conv_width_pass`; the slice fuses
into the kernel). Measured on a 2-core Zen 2: inception_v3 fp32 706 -> 309 ms (convs), -> 286 ms
(pools too), its 80->192 3x3 conv at 71 columns 104 -> 26 ms.

A function the rule cannot handle is left as it was (never an error: it is logged at debug
level); functions already scheduled (``tirx.is_scheduled``, e.g. from a tuning database) are
not touched. :func:`relax_pipeline` is the Relax pipeline the harness compiles llvm targets
with: the same dispatch / legalize / fuse steps as :func:`harness.tune.model.fused` (and
MetaSchedule's ``compile_relax``), the database when there is one, then these schedules.

``HARNESS_CPU_DEFAULT_SCHEDULES=0`` in the environment switches all of it off (then builds are
exactly what they were before: ``tvm.compile``'s default pipeline, or ``compile_relax``).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
from typing import Dict, List, Optional, Sequence

import tvm
from tvm import s_tir, tirx

logger = logging.getLogger(__name__)

ENV_SWITCH = "HARNESS_CPU_DEFAULT_SCHEDULES"
INT8_DOT_SWITCH = "HARNESS_CPU_INT8_DOT"  # 0: 8-bit convs get the plain schedule (no dot-product instructions)
SCHEDULED_ATTR = "tirx.is_scheduled"  # the key TVM 0.27 uses ("tir.is_scheduled" in older TVMs)
_SCHEDULED_KEYS = (SCHEDULED_ATTR, "tir.is_scheduled")

# below this many output elements an elementwise kernel stays on one thread
_PARALLEL_MIN_ELEMENTS = 4096
_TRACE = bool(os.environ.get("HARNESS_CPU_DEFAULT_TRACE"))  # debug log with tracebacks


class NotApplicable(Exception):
    """The rule does not handle this function (it is left unscheduled)."""


def _switched_on(variable: str) -> bool:
    """An on/off environment switch, on unless set to 0 / false / off / no."""
    return os.environ.get(variable, "1").strip().lower() not in ("0", "false", "off", "no")


class Switch:
    """A schedule family's on/off switch: an environment variable (:func:`_switched_on`), which
    :meth:`disabled` overrides for the builds inside a block."""

    def __init__(self, variable: str):
        self.variable = variable
        self._override: Optional[bool] = None

    def enabled(self) -> bool:
        return self._override if self._override is not None else _switched_on(self.variable)

    @contextlib.contextmanager
    def disabled(self):
        old, self._override = self._override, False
        try:
            yield
        finally:
            self._override = old


_SWITCH = Switch(ENV_SWITCH)
enabled = _SWITCH.enabled  # False when HARNESS_CPU_DEFAULT_SCHEDULES is 0 / false / off / no, or inside disabled()
disabled = _SWITCH.disabled  # builds inside `with disabled():` get no default CPU schedules


def applies_to(target) -> bool:
    """Whether builds for `target` get default CPU schedules (llvm targets, switch on)."""
    return target is not None and target.kind.name == "llvm" and enabled()


# ----------------------------------------------------------------------------- target facts


def vector_bits(target) -> int:
    """SIMD register width in bits of an llvm target, from its CPU features.

    (`llvm_get_vector_width` of the 0.27 wheel answers 512 for every x86 CPU, so it is only
    the last resort.)
    """
    from tvm.target import codegen

    try:
        with target:
            feats = {str(k) for k in codegen.llvm_get_cpu_features(target)}
    except Exception:  # pylint: disable=broad-except
        feats = set()
    if "avx512f" in feats:
        return 512
    if "avx" in feats:
        return 256
    if feats & {"sse2", "sse4.1", "sse4.2", "neon", "simd128", "altivec", "v"}:
        return 128
    try:
        width = int(codegen.llvm_get_vector_width(target))
    except Exception:  # pylint: disable=broad-except
        width = -1
    return width if width >= 128 else 128


def _vector_registers(bits: int) -> int:
    return 32 if bits >= 512 else 16


# ----------------------------------------------------------------------------- small helpers


def _is_scheduled(func) -> bool:
    attrs = func.attrs
    if attrs is None:
        return False
    return any(key in attrs and bool(attrs[key]) for key in _SCHEDULED_KEYS)


def _int(expr) -> int:
    if isinstance(expr, int):
        return expr
    if isinstance(expr, tirx.IntImm):
        return int(expr.value)
    raise NotApplicable(f"non-constant extent {expr}")


def _dtype_bits(dtype) -> int:
    return tvm.runtime.DataType(str(dtype)).bits


def _divisors(n: int) -> List[int]:
    small = [d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def pick_vector_factor(extent: int, lanes: int) -> int:
    """A divisor of `extent` (at most one vector long) that fills vector lanes best.

    (One vector per accumulator row and more rows beat two-vector rows: measured on AVX2,
    7-wide rows x 8 beat 14 x 4 by 2x.)"""
    best, best_key = 1, (0.0, 0)
    for d in _divisors(extent):
        if d > lanes:
            break
        fill = d / (math.ceil(d / lanes) * lanes)
        key = (fill, d)
        if key > best_key:
            best, best_key = d, key
    return best


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in _divisors(n) if d <= max(1, cap))


def _vars_of(expr) -> list:
    return list(tirx.analysis.undefined_vars(expr))


def _region_vars(region) -> list:
    return [v for rng in region.region for v in _vars_of(rng.min) + _vars_of(rng.extent)]


def _uses(variables: Sequence, var) -> bool:
    return any(v.same_as(var) for v in variables)


class _Block:
    """A block of the root scope with its loops (one loop per block iter, in order)."""

    def __init__(self, rv, loops, iters, is_reduction):
        self.rv = rv
        self.loops = list(loops)
        self.iters = list(iters)
        self.is_reduction = bool(is_reduction)


def _root_blocks(sch: s_tir.Schedule) -> List[_Block]:
    norm = tvm.get_global_func("s_tir.schedule.NormalizePrimFunc")
    result = norm(sch)
    if result is None:
        raise NotApplicable("not in normal form (a block iter is not one loop)")
    return [_Block(b, loops, iters, red) for b, loops, iters, red in zip(*result)]


def _is_reduction_iter(iv) -> bool:
    return iv.iter_type == tirx.IterVar.CommReduce


def _param_buffers(sch: s_tir.Schedule) -> list:
    # TVM 0.27: a PrimFunc's parameters are its buffers; block regions name them as `source`
    return list(sch.mod["main"].params)


def _writes_param(sch: s_tir.Schedule, block_rv, params) -> bool:
    return any(w.source.same_as(p) for w in sch.get(block_rv).writes for p in params)


def _block_bits(sch: s_tir.Schedule, block_rv) -> int:
    block = sch.get(block_rv)
    bits = [_dtype_bits(r.source.dtype) for r in list(block.reads) + list(block.writes)]
    bits = [b for b in bits if b >= 8]
    return max(bits) if bits else 32


def _inline_all(sch: s_tir.Schedule, blocks: Sequence, params, keep=lambda sch, block_rv: False) -> list:
    """compute_inline every spatial block that writes no parameter (and that `keep` does not
    hold back); the ones that stay."""
    kept = []
    for blk in blocks:
        if keep(sch, blk.rv) or _writes_param(sch, blk.rv, params):
            kept.append(blk)
            continue
        try:
            sch.compute_inline(blk.rv)
        except Exception:  # pylint: disable=broad-except
            kept.append(blk)
    return kept


def _is_padding(sch: s_tir.Schedule, block_rv) -> bool:
    block = sch.get(block_rv)
    return block.name_hint.startswith("pad") or "if_then_else" in str(block.body)


# ----------------------------------------------------------------------------- schedules


def schedule_injective(sch: s_tir.Schedule, block_rv, bits: int) -> None:
    """Parallel outer loops, a vectorized (or plain, for LLVM to vectorize) inner row."""
    loops = sch.get_loops(block_rv)
    if not loops:
        return
    extents = [_int(sch.get(lp).extent) for lp in loops]
    lanes = max(1, bits // _block_bits(sch, block_rv))
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
        if _int(sch.get(fo).extent) > 1:
            sch.parallel(fo)


def _choose_axes(sch: s_tir.Schedule, anchor: _Block):
    """(vector axis, register axis or None) as indices into the anchor's iters."""
    block = sch.get(anchor.rv)
    spatial = [i for i, iv in enumerate(anchor.iters) if not _is_reduction_iter(iv) and _int(iv.dom.extent) > 1]
    if not spatial:
        raise NotApplicable("no spatial iteration to vectorize")

    def index_of(var) -> Optional[int]:
        return next((i for i, iv in enumerate(anchor.iters) if iv.var.same_as(var)), None)

    vec = None
    out_region = block.writes[0].region
    for rng in reversed(out_region):  # the output's innermost dimension that varies
        used = [index_of(v) for v in _vars_of(rng.min)]
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
        if any(_uses(_region_vars(r), vec_var) and not _uses(_region_vars(r), var) for r in block.reads):
            ext = _int(anchor.iters[i].dom.extent)
            if ext > reg_ext:
                reg, reg_ext = i, ext
    return vec, reg


def schedule_reduction(sch: s_tir.Schedule, blocks: List[_Block], anchor: _Block, target) -> None:
    """Register-tiled, parallel, vectorized schedule of the one reduction block and its epilogue."""
    params = _param_buffers(sch)
    bits = vector_bits(target)
    idx = next(i for i, b in enumerate(blocks) if b is anchor)
    before, after = blocks[:idx], blocks[idx + 1:]
    # prologue: keep padding as a stage of its own; inline the rest where legal
    prologue = _inline_all(sch, before, params, keep=_is_padding)
    # epilogue: inline the elementwise chain into the block that writes the output
    rest = _inline_all(sch, after, params)
    acc_dtype = sch.get(anchor.rv).writes[0].source.dtype
    if _writes_param(sch, anchor.rv, params):
        if sch.get_consumers(anchor.rv):
            raise NotApplicable("reduction output is both a result and read again")
        epilogue = sch.cache_write(anchor.rv, 0, "local")
    else:
        consumers = sch.get_consumers(anchor.rv)
        if len(consumers) != 1:
            raise NotApplicable(f"{len(consumers)} consumers of the reduction")
        epilogue = consumers[0]
        sch.set_scope(anchor.rv, 0, "local")
    rest = [b for b in rest if not sch.get(b.rv).same_as(sch.get(epilogue))]

    lanes = max(1, bits // _dtype_bits(acc_dtype))
    vec, reg = _choose_axes(sch, anchor)
    extents = [_int(iv.dom.extent) for iv in anchor.iters]
    vec_factor = pick_vector_factor(extents[vec], lanes)
    n_vec = math.ceil(vec_factor / lanes)
    acc_budget = min(16, max(1, (_vector_registers(bits) - 4) // n_vec))
    reg_factor = _largest_divisor_at_most(extents[reg], acc_budget) if reg is not None else 1

    outer, reduce_loops, reg_inner, vec_inner = [], [], None, None
    for i, (loop, iv) in enumerate(zip(anchor.loops, anchor.iters)):
        if _is_reduction_iter(iv):
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
    if _int(sch.get(fused).extent) > 1:
        sch.parallel(fused)
    if vec_factor > 1:
        sch.vectorize(vec_inner)
    if reg_inner is not None:
        sch.unroll(reg_inner)
    if reduce_loops:  # (unit reduction loops are gone after normalization: 1x1 windows)
        sch.decompose_reduction(anchor.rv, reduce_loops[0])  # the init loops keep these loop kinds
    epi_loops = sch.get_loops(epilogue)
    if len(epi_loops) > 1 and _int(sch.get(epi_loops[-1]).extent) > 1:
        sch.vectorize(epi_loops[-1])
    for blk in prologue + rest:
        schedule_injective(sch, blk.rv, bits)


def _var_index(expr, iters) -> Optional[int]:
    """Index into `iters` of the block iter `expr` is (None for a constant, error otherwise)."""
    if isinstance(expr, tirx.IntImm):
        return None
    for i, iv in enumerate(iters):
        if iv.var.same_as(expr):
            return i
    raise NotApplicable(f"index {expr} is not a plain block iter")


class Int8Conv:  # pylint: disable=too-few-public-methods,too-many-instance-attributes
    """Where the loops of a plain 8-bit ``conv2d_nchw`` block are: the block-iter indices of the
    output channel (k), input channel (c), output row (y) and column (x), their extents, and the
    data's element type."""

    def __init__(self, data_dtype: str, k_i: int, c_i: int, y_i: Optional[int], x_i: int, extents: list):
        self.data_dtype = data_dtype
        self.k_i, self.c_i, self.y_i, self.x_i = k_i, c_i, y_i, x_i
        self.k_ext, self.c_ext, self.x_ext = extents[k_i], extents[c_i], extents[x_i]
        self.y_ext = 1 if y_i is None else extents[y_i]


def int8_conv_iters(sch: s_tir.Schedule, anchor: _Block) -> Int8Conv:
    """The :class:`Int8Conv` of `anchor`, which must be TOPI's ``conv2d_nchw`` with 8-bit data,
    int8 weights that are a parameter of the kernel, and an int32 result (NotApplicable else)."""
    block = sch.get(anchor.rv)
    if block.name_hint != "conv2d_nchw" or len(block.reads) != 2 or len(block.writes) != 1:
        raise NotApplicable("not a plain conv2d_nchw")
    data_region, weight_region = block.reads
    out_region = block.writes[0]
    data_dtype = str(data_region.source.dtype)
    if data_dtype not in ("int8", "uint8") or str(weight_region.source.dtype) != "int8" \
            or str(out_region.source.dtype) != "int32":
        raise NotApplicable("not an 8-bit x int8 -> int32 conv")
    if not any(weight_region.source.same_as(p) for p in _param_buffers(sch)):
        raise NotApplicable("weights are computed in the kernel")
    iters = anchor.iters
    w_idx = [_var_index(rng.min, iters) if _int(rng.extent) == 1 else None for rng in weight_region.region]
    o_idx = [_var_index(rng.min, iters) if _int(rng.extent) == 1 else None for rng in out_region.region]
    k_i, c_i, x_i = w_idx[0], w_idx[1], o_idx[3]
    if k_i is None or c_i is None or x_i is None or k_i != o_idx[1]:
        raise NotApplicable("unexpected conv2d_nchw indexing")
    return Int8Conv(data_dtype, k_i, c_i, o_idx[2], x_i, [_int(iv.dom.extent) for iv in iters])


class PackedConv:  # pylint: disable=too-few-public-methods
    """What :func:`pack_int8_conv` left around the conv block."""

    def __init__(self, prologue: list, rest: list, epilogue, weights):
        self.prologue = prologue  # blocks before the conv that stay (the data packing stage among them)
        self.rest = rest  # blocks after the epilogue that stay
        self.epilogue = epilogue  # the one block reading the accumulator, or None (it is an output)
        self.weights = weights  # the weight layout-rewrite block


def pack_int8_conv(sch: s_tir.Schedule, blocks: List[_Block], anchor: _Block, red: int, weight_map) -> PackedConv:
    """Inline what can be inlined around an 8-bit conv and pack its operands for a dot product of
    `red` input channels: the data becomes ``[n, c / red, y, x, red]`` (written by the padding
    stage, or by a packing stage of its own), the weights ``weight_map(k, c, r, s)`` in a
    layout-rewrite block (split out of the kernel and folded into the constant at build)."""
    params = _param_buffers(sch)
    data = sch.get(anchor.rv).reads[0].source
    idx = next(i for i, b in enumerate(blocks) if b is anchor)
    prologue = _inline_all(sch, blocks[:idx], params, keep=_is_padding)
    rest = _inline_all(sch, blocks[idx + 1:], params)
    consumers = sch.get_consumers(anchor.rv)
    epilogue = None
    if not _writes_param(sch, anchor.rv, params):
        if len(consumers) != 1:
            raise NotApplicable("the accumulator is read by several blocks")
        epilogue = consumers[0]
        rest = [b for b in rest if not sch.get(b.rv).same_as(sch.get(epilogue))]
    producers = [p for p in sch.get_producers(anchor.rv)
                 if any(w.source.same_as(data) for w in sch.get(p).writes)]
    if producers:
        pack = producers[0]
    else:
        pack = sch.cache_read(anchor.rv, 0, "global")
        prologue.append(_Block(pack, [], [], False))
    sch.transform_layout(pack, ("write", 0), lambda n, c, y, x: (n, c // red, y, x, c % red))
    weights = sch.cache_read(anchor.rv, 1, "global")
    sch.transform_layout(weights, ("write", 0), weight_map)
    sch.annotate(weights, "meta_schedule.layout_rewrite_preproc", True)
    return PackedConv(prologue, rest, epilogue, weights)


def schedule_int8_dot_conv(sch: s_tir.Schedule, blocks: List[_Block], anchor: _Block, target, *,
                           sample: bool = False) -> None:
    """The 8-bit NCHW conv2d (``conv2d_nchw``: 8-bit data, int8 weights, int32 accumulation) on
    the CPU's exact 8-bit dot product (:func:`harness.tune.rules.cpu_int8_dots`: the best one
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

    Integer sums in another order: bit-identical to the plain schedule.  Not applicable (the
    plain register-tiled schedule is used) to grouped convs, to channel counts no dot product
    divides, or with ``HARNESS_CPU_INT8_DOT=0``.

    ``sample=True`` makes it a search space (:func:`harness.tune.rules.cpu_int8_dot_space`): the
    register tile -- ``xi`` pixels x ``kb`` channel blocks, and ``yi`` rows -- is drawn with
    ``sample_perfect_tile`` instead of fixed, so that MetaSchedule's search tunes it.
    """
    from .rules import cpu_int8_dots  # pylint: disable=import-outside-toplevel

    if not _switched_on(INT8_DOT_SWITCH):
        raise NotApplicable(f"{INT8_DOT_SWITCH}=0")
    conv = int8_conv_iters(sch, anchor)
    k_i, c_i, y_i, x_i = conv.k_i, conv.c_i, conv.y_i, conv.x_i
    k_ext, c_ext, x_ext = conv.k_ext, conv.c_ext, conv.x_ext
    fitting = [d for d in cpu_int8_dots(target, conv.data_dtype) if k_ext % d[1] == 0 and c_ext % d[2] == 0]
    if not fitting:
        raise NotApplicable(f"no 8-bit dot product for {conv.data_dtype} data, {k_ext} output and "
                            f"{c_ext} input channels on this target")
    intrin, lanes, red = fitting[0]
    iters = anchor.iters
    parts = pack_int8_conv(sch, blocks, anchor, red,
                           lambda k, c, r, s: (k // lanes, c // red, r, s, k % lanes, c % red))
    if parts.epilogue is None:
        raise NotApplicable("the accumulator is not read by exactly one epilogue")
    epilogue, prologue, rest, weights = parts.epilogue, parts.prologue, parts.rest, parts.weights
    sch.transform_layout(anchor.rv, ("write", 0), lambda n, k, y, x: (n, k // lanes, y, x, k % lanes))

    bits = vector_bits(target)
    budget = _vector_registers(bits) - 4  # accumulators; the rest: operands
    xi = _largest_divisor_at_most(x_ext, 4)
    kb = _largest_divisor_at_most(k_ext // lanes, max(1, budget // xi))
    loops = sch.get_loops(anchor.rv)
    spatial, reduce, rows = [], [], []

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
            c_out, c_in = sch.split(loop, [None, red])
            reduce.append(c_out)
        elif _is_reduction_iter(iters[i]):
            reduce.append(loop)
        else:
            spatial.append(loop)
    sch.reorder(*spatial, *reduce, *rows, x_in, kb_in, k_in, c_in)
    # a sampled tile may be 1 wide: unit loops are kept so that every sample has the same loops
    # (a trace replayed with other decisions must see as many as it was written with)
    sch.reverse_compute_at(epilogue, spatial[-1], preserve_unit_loops=sample)
    outer = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
    if _int(sch.get(outer).extent) > 1:
        sch.parallel(outer)
    init = sch.decompose_reduction(anchor.rv, reduce[0])
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(k_in, intrin)
    for loop in (*rows, x_in, kb_in):
        sch.unroll(loop)
    epi_loops = sch.get_loops(epilogue)
    if len(epi_loops) > 1 and _int(sch.get(epi_loops[-1]).extent) > 1:
        sch.vectorize(epi_loops[-1])
    for blk in prologue + rest:
        schedule_injective(sch, blk.rv, bits)
    schedule_injective(sch, weights, bits)


def schedule_parallel_only(sch: s_tir.Schedule, target) -> None:  # pylint: disable=unused-argument
    """Fallback: the leading data-parallel loops of every root block made parallel."""
    changed = False
    for blk in _root_blocks(sch):
        lead = []
        for loop, iv in zip(blk.loops, blk.iters):
            if _is_reduction_iter(iv):
                break
            lead.append(loop)
        if not lead:
            continue
        if math.prod(_int(sch.get(lp).extent) for lp in lead) < 2:
            continue
        fused = sch.fuse(*lead) if len(lead) > 1 else lead[0]
        sch.parallel(fused)
        changed = True
    if not changed:
        raise NotApplicable("no data-parallel loop")


def _schedule_int8_dot(sch: s_tir.Schedule, target, sample: bool = False) -> str:
    blocks = _root_blocks(sch)
    reductions = [b for b in blocks if b.is_reduction]
    if len(reductions) != 1:
        raise NotApplicable(f"{len(reductions)} reduction blocks")
    schedule_int8_dot_conv(sch, blocks, reductions[0], target, sample=sample)
    return "int8 dot-product conv"


def sample_int8_dot(sch: s_tir.Schedule, target) -> None:
    """The int8 dot-product schedule of a fused conv kernel with its register tile sampled
    (a MetaSchedule ``ScheduleFn``); raises where the default schedule would not use it."""
    _schedule_int8_dot(sch, target, sample=True)


def _schedule_main(sch: s_tir.Schedule, target) -> str:
    blocks = _root_blocks(sch)
    if not blocks:
        raise NotApplicable("no blocks")
    reductions = [b for b in blocks if b.is_reduction]
    if len(reductions) == 1:
        schedule_reduction(sch, blocks, reductions[0], target)
        return "reduction"
    if not reductions:
        params = _param_buffers(sch)
        bits = vector_bits(target)
        for blk in _inline_all(sch, blocks, params):
            schedule_injective(sch, blk.rv, bits)
        return "injective"
    raise NotApplicable(f"{len(reductions)} reduction blocks")


def default_schedule(func, target, name: str = "func") -> Optional[s_tir.Schedule]:
    """The default schedule of `func` (a PrimFunc, or an IRModule whose main is one) as a
    Schedule (its trace replays it, e.g. as a tuning record), or None where no rule applies."""
    from .amx import RULES as AMX_RULES, note_scheduled  # AMX tiles (issue 14): first, where the target has amx-int8

    render = "detail" if logger.isEnabledFor(logging.DEBUG) else "none"
    for rule in (*AMX_RULES, _schedule_int8_dot, _schedule_main, schedule_parallel_only):
        try:
            sch = s_tir.Schedule(func, debug_mask="none", error_render_level=render)
            kind = rule(sch, target) or rule.__name__
        except Exception as err:  # pylint: disable=broad-except
            logger.debug("cpu default schedule: %s: %s not applied: %s: %s", name, rule.__name__,
                         type(err).__name__, str(err).strip()[-2000:], exc_info=_TRACE)
            continue
        logger.debug("cpu default schedule: %s: %s", name, kind)
        note_scheduled(name, kind)  # (issue 14: the record lists the AMX kernels)
        return sch
    return None


def schedule_func(func: tirx.PrimFunc, target, name: str = "func") -> Optional[tirx.PrimFunc]:
    """The default-scheduled `func` (with `tirx.is_scheduled`), or None where no rule applies."""
    if not isinstance(func, tirx.PrimFunc) or _is_scheduled(func):
        return None
    sch = default_schedule(func, target, name)
    return None if sch is None else sch.mod["main"].with_attr(SCHEDULED_ATTR, True)


# ----------------------------------------------------------------------------- odd output widths


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
    smallest width that reaches the fewest, so shapes that vectorize well (56, 28, 14, 7, 35 on
    AVX2) keep their kernels, and their tuning records, as they are."""
    best, best_ops = width, _row_vector_ops(width, lanes)
    for cand in range(width + 1, width + lanes + 1):
        ops = _row_vector_ops(cand, lanes)
        if ops < best_ops:
            best, best_ops = cand, ops
    return best if 2 * best_ops <= _row_vector_ops(width, lanes) else width


def pad_conv_width_pass(target) -> tvm.transform.Pass:
    """Relax pass (before legalization): NCHW conv2d, avg_pool2d and max_pool2d whose output width
    :func:`padded_width` pads are computed wider (more right padding of their input) and then
    sliced back to their width. (Pools in ceil mode are left alone: a wider input could change
    the window count of their last column.)"""
    from tvm import relax

    conv_op = tvm.ir.Op.get("relax.nn.conv2d")
    pool_ops = {name: tvm.ir.Op.get(f"relax.nn.{name}") for name in ("avg_pool2d", "max_pool2d")}
    bits = vector_bits(target)

    def widened_conv(call, padding):
        a = call.attrs
        if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout or a.data_layout)) != ("NCHW", "OIHW", "NCHW"):
            return None
        return relax.op.nn.conv2d(call.args[0], call.args[1], strides=a.strides, padding=padding,
                                  dilation=a.dilation, groups=a.groups, data_layout="NCHW", kernel_layout="OIHW",
                                  out_dtype=str(call.ty.dtype))

    def widened_pool(make):
        def rebuild(call, padding):
            a = call.attrs
            if str(a.layout) != "NCHW" or str(a.out_layout or a.layout) != "NCHW" or bool(a.ceil_mode):
                return None
            return make(call.args[0], pool_size=a.pool_size, strides=a.strides, padding=padding,
                        dilation=a.dilation, ceil_mode=False, count_include_pad=bool(a.count_include_pad),
                        layout="NCHW")
        return rebuild

    rebuilders = [(conv_op, widened_conv),
                  (pool_ops["avg_pool2d"], widened_pool(relax.op.nn.avg_pool2d)),
                  (pool_ops["max_pool2d"], widened_pool(relax.op.nn.max_pool2d))]

    @relax.expr_functor.mutator
    class _Widen(relax.PyExprMutator):  # pylint: disable=abstract-method
        def visit_call_(self, call):  # pylint: disable=arguments-renamed
            call = self.builder_.normalize(super().visit_call_(call))
            rebuild = next((fn for op, fn in rebuilders if call.op.same_as(op)), None)
            if rebuild is None:
                return call
            try:
                width = int(call.ty.shape.values[3])
            except (AttributeError, TypeError):
                return call  # symbolic shape
            wide = padded_width(width, max(1, bits // _dtype_bits(str(call.ty.dtype))))
            if wide == width:
                return call
            top, left, bottom, right = (int(v) for v in call.attrs.padding)
            right += (wide - width) * int(call.attrs.strides[1])
            widened = rebuild(call, (top, left, bottom, right))
            if widened is None:
                return call
            logger.debug("cpu default schedule: %s output width %d computed as %d", call.op.name, width, wide)
            return relax.op.strided_slice(self.builder_.normalize(widened), axes=[3], begin=[0], end=[width])

    @tvm.transform.module_pass(opt_level=0, name="HarnessPadConvWidth")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        widen = _Widen(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                widen.builder_.update_func(gvar, widen.visit_expr(func))
        return widen.builder_.get()

    return _pass


# ----------------------------------------------------------------------------- dlight / passes


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


def schedule_pass(schedule, target=None, name: str = "HarnessCPUDefaultSchedule") -> tvm.transform.Pass:
    """Module pass: ``schedule(func, target, name)`` (a scheduled PrimFunc, or None to leave it)
    for the unscheduled PrimFuncs of a (fused) module; a function's own ``target`` attribute, where
    it has one, wins over `target` (default: the current target)."""

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        tgt = target or tvm.target.Target.current(allow_none=False)
        updates: Dict[tvm.ir.GlobalVar, tirx.PrimFunc] = {}
        skipped = 0
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or _is_scheduled(func):
                continue
            scheduled = schedule(func, func.attrs.get("target", tgt) if func.attrs else tgt, gvar.name_hint)
            if scheduled is None:
                skipped += 1
            else:
                updates[gvar] = scheduled
        if updates:
            mod = mod.clone()  # the pass must not change the module it was given
            for gvar, func in updates.items():
                mod[gvar] = func
        logger.debug("%s: %d function(s) scheduled, %d left as they were", name, len(updates), skipped)
        return mod

    return _pass


def default_schedule_pass(target=None) -> tvm.transform.Pass:
    """Module pass: default CPU schedules for the unscheduled PrimFuncs of a (fused) module."""
    return schedule_pass(schedule_func, target, "HarnessCPUDefaultSchedule")


def _lower_passes(target) -> list:
    """What `compile_relax` (and `tvm.compile`'s default pipeline, on CPU) run after legalizing:
    TVM's own CPU lists, so that the two pipelines cannot drift apart."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    return cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target)


def fuse_and_schedule(mod: tvm.IRModule, target, database=None, schedules=None) -> tvm.IRModule:
    """`mod` legalized and fused like :func:`harness.tune.model.fused`, with the tuned kernels of
    `database` (a MetaSchedule Database) applied and the `schedules` passes (default: the default
    CPU schedules) for all the others."""
    from tvm import relax

    from .model import fuse_passes

    with target:
        mod = tvm.transform.Sequential(fuse_passes(target))(mod)
        if database is not None:
            with database:
                mod = relax.transform.MetaScheduleApplyDatabase()(mod)
        mod = tvm.transform.Sequential(schedules or [default_schedule_pass(target)])(mod)
        # weight layouts the schedules asked for (8-bit dot-product convs): the packing is split
        # out of the kernels and applied to the constant weights once, here
        return tvm.transform.Sequential([relax.transform.SplitLayoutRewritePreproc(),
                                         relax.transform.FoldConstant(),
                                         relax.transform.DeadCodeElimination()])(mod)


def scheduled_pipeline(target, database, schedules, lower_passes, name: str) -> tvm.transform.Pass:
    """A Relax pipeline (`tvm.compile(..., relax_pipeline=)`): :func:`fuse_and_schedule` with
    `schedules`, then `lower_passes`."""

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        mod = fuse_and_schedule(mod, target, database, schedules)
        with target:
            return tvm.transform.Sequential(lower_passes)(mod)

    return _pipeline


def relax_pipeline(target, database=None) -> tvm.transform.Pass:
    """Relax pipeline for llvm: :func:`fuse_and_schedule`, then the lowering passes `compile_relax`
    runs."""
    return scheduled_pipeline(target, database, [default_schedule_pass(target)], _lower_passes(target),
                              "HarnessCPUPipeline")

"""Default CUDA schedule of the model's 8-bit convolutions: ``__dp4a`` (what 2019's dp4a templates
gave every int8 conv2d; TVM 0.27's GPU default schedules have no int8 rule at all).

The int8 convs of a quantized model (:mod:`harness.quantize.realize`) are plain NCHW / OIHW
``conv2d_nchw`` kernels with 8-bit data, int8 weights and an int32 accumulator, fused with their
epilogue (dequantize, bias, ReLU, requantize). TVM's GPU default rules (dlight) schedule them as
implicit GEMMs tiled through shared memory, but multiply byte by byte in int32 (no ``__dp4a``, seen
in resnet18's CUDA source); MetaSchedule's dp4a rule cannot map such kernels (checked: no
tensorized design space for any of resnet18's int8 kernels on sm_90). This schedule packs the
channels inside the kernel, like the CPU's dot-product schedule
(:func:`harness.schedules.cpu.schedule_int8_dot_conv`):

    data   [n, c, y, x] -> [n, c / 4, y, x, 4]     (the padding stage writes it: a kernel of its own)
    weight [k, c, r, s] -> [k, c / 4, r, s, 4]     (a layout-rewrite block, folded into the constant)

    blockIdx.y: output channels / (ty * kt)           blockIdx.x: (n, row tiles, column tiles)
    threadIdx.y: ty channel groups                    threadIdx.x: yt * xt pixels of the tile
        for (c / 4) / cb:
            data window and weights of cb * 4 input channels -> shared memory (4-byte loads)
            for cb, r, s:  unroll kt channels x xv pixels:  acc += __dp4a(data[4], weight[4])
        epilogue (dequantize, bias, ReLU, requantize) from registers -> output NCHW

Integer sums in another order: bit-identical to any other int8 schedule. Not applicable (TVM's
GPU schedules are used) to grouped or depthwise convs and to input channel counts that are not a
multiple of 4. ``sample=True`` makes it a search space (:func:`harness.tune.spaces.cuda_int8_dp4a_space`):
every tile size is drawn with ``sample_perfect_tile``, so that MetaSchedule's search tunes them.

:class:`CUDASchedules` is this family as the CUDA build pipeline (:mod:`harness.build.pipeline`:
the database applied, these schedules, then TVM's GPU default rules) and the search use it;
``build.schedules.cuda_int8_dp4a: false`` in the config switches it off.
"""
from __future__ import annotations

import logging
from typing import Optional

import tvm
from tvm import s_tir, tirx

from .analysis import (SCHEDULED_ATTR, NotApplicable, const_int, is_reduction_iter, largest_divisor_at_most,
                       root_blocks, schedule_pass)
from .int8_conv import int8_conv_iters, pack_int8_conv
from .intrinsics import dp4a_intrinsic

logger = logging.getLogger(__name__)


_STAGE_THREADS = 256  # threads per block of the packing kernels


def _bind_flat(sch: s_tir.Schedule, block_rv, threads: int = _STAGE_THREADS) -> None:
    """All loops of an injective block fused and spread over blocks x `threads` threads."""
    loops = sch.get_loops(block_rv)
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    extent = const_int(sch.get(fused).extent)
    bx, tx = sch.split(fused, [None, min(threads, extent)])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")


def schedule_int8_dp4a_conv(sch: s_tir.Schedule, target, sample: bool = False) -> str:  # pylint: disable=too-many-locals,too-many-statements
    """Schedule the fused 8-bit conv kernel of `sch` on ``__dp4a`` (see the module docstring);
    NotApplicable where it does not fit."""
    from .intrinsics import load_tensor_intrinsics  # pylint: disable=import-outside-toplevel

    blocks = root_blocks(sch)
    reductions = [b for b in blocks if b.is_reduction]
    if len(reductions) != 1:
        raise NotApplicable(f"{len(reductions)} reduction blocks")
    anchor = reductions[0]
    conv = int8_conv_iters(sch, anchor)
    if conv.c_ext % 4:
        raise NotApplicable(f"{conv.c_ext} input channels: not a multiple of 4")
    load_tensor_intrinsics()
    intrin = dp4a_intrinsic(conv.data_dtype)
    parts = pack_int8_conv(sch, blocks, anchor, 4, lambda k, c, r, s: (k, c // 4, r, s, c % 4))

    # tile sizes: kt channels x xv pixels per thread, ty x (yt * xt) threads, cb * 4 input channels
    # per shared-memory stage
    kt = largest_divisor_at_most(conv.k_ext, 4)
    ty = largest_divisor_at_most(conv.k_ext // kt, 8)
    xv = 2 if conv.x_ext % 2 == 0 else 1  # a 4 x 2 register tile: each weight word used twice
    xt = largest_divisor_at_most(conv.x_ext // xv, 32)
    yt = largest_divisor_at_most(conv.y_ext, max(1, 64 // xt))
    cb = largest_divisor_at_most(conv.c_ext // 4, 4)

    def tile(loop, n: int, inner: list, most: int):
        if sample:
            factors = sch.sample_perfect_tile(loop, n=n, max_innermost_factor=most)
        else:
            factors = [None, *inner]
        return sch.split(loop, factors)

    loops = sch.get_loops(anchor.rv)
    outer, reduce = [], []
    k_b = k_y = k_t = x_t = x_v = c_b = None
    y_t = None
    for i, loop in enumerate(loops):
        if i == conv.k_i:
            k_b, k_y, k_t = tile(loop, 3, [ty, kt], 8)
        elif i == conv.x_i:
            x_b, x_t, x_v = tile(loop, 3, [xt, xv], 4)
            outer.append(x_b)
        elif i == conv.y_i:
            y_b, y_t = tile(loop, 2, [yt], 64)
            outer.append(y_b)
        elif i == conv.c_i:
            c_o, c_i = sch.split(loop, [None, 4])
            c_o, c_b = tile(c_o, 2, [cb], 8)
        elif is_reduction_iter(anchor.iters[i]):
            reduce.append(loop)
        else:
            outer.append(loop)
    threads = [y_t, x_t] if y_t is not None else [x_t]
    sch.reorder(k_b, *outer, k_y, *threads, c_o, c_b, *reduce, k_t, x_v, c_i)
    block_x = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    thread_x = sch.fuse(*threads) if len(threads) > 1 else threads[0]
    sch.bind(k_b, "blockIdx.y")
    sch.bind(block_x, "blockIdx.x")
    sch.bind(k_y, "threadIdx.y")
    sch.bind(thread_x, "threadIdx.x")

    # the accumulator lives in registers; the epilogue reads it there
    if parts.epilogue is not None:
        sch.reverse_compute_at(parts.epilogue, thread_x, preserve_unit_loops=True)
        sch.set_scope(anchor.rv, 0, "local")
    else:
        acc = sch.cache_write(anchor.rv, 0, "local")
        sch.reverse_compute_at(acc, thread_x, preserve_unit_loops=True)

    for index in (0, 1):  # packed data window and weights of one stage, copied by all threads
        stage = sch.cache_read(anchor.rv, index, "shared")
        sch.compute_at(stage, c_o, preserve_unit_loops=True)
        copy = sch.get_loops(stage)
        depth = 1 + next(i for i, lp in enumerate(copy) if sch.get(lp).same_as(sch.get(c_o)))
        if sample:
            # the thread extents differ between samples: MetaSchedule's RewriteCooperativeFetch
            # splits the copy over them (and makes 4-byte loads) after sampling
            sch.fuse(*copy[depth:])
            sch.annotate(stage, "meta_schedule.cooperative_fetch", tirx.IntImm("int32", 4))
            continue
        inner = sch.fuse(*copy[depth:-1]) if len(copy) - depth > 2 else copy[depth]
        _, f_ty, f_tx = sch.split(inner, [None, ty, const_int(sch.get(thread_x).extent)])
        sch.bind(f_ty, "threadIdx.y")
        sch.bind(f_tx, "threadIdx.x")
        sch.vectorize(copy[-1])  # the 4 bytes of one dp4a operand: one 32-bit load
    sch.decompose_reduction(anchor.rv, c_o)
    sch.tensorize(c_i, intrin)
    for loop in (*reduce, k_t, x_v):
        sch.unroll(loop)
    for blk in parts.prologue + parts.rest:
        _bind_flat(sch, blk.rv)
    return intrin


def default_schedule(func, target, name: str = "func") -> Optional[s_tir.Schedule]:
    """The dp4a schedule of `func` (a PrimFunc, or an IRModule whose main is one) as a Schedule,
    or None where it does not apply (TVM's GPU rules schedule those kernels)."""
    try:
        sch = s_tir.Schedule(func, debug_mask="none", error_render_level="none")
        intrin = schedule_int8_dp4a_conv(sch, target)
    except Exception as err:  # pylint: disable=broad-except
        logger.debug("cuda default schedule: %s: not applied: %s: %s", name, type(err).__name__,
                     str(err).strip()[-2000:])
        return None
    logger.debug("cuda default schedule: %s: %s", name, intrin)
    return sch


def sample_int8_dp4a(sch: s_tir.Schedule, target) -> None:
    """The dp4a schedule with its tile sizes sampled (a MetaSchedule ``ScheduleFn``)."""
    schedule_int8_dp4a_conv(sch, target, sample=True)


def schedule_func(func: tirx.PrimFunc, target, name: str = "func", *,
                  scheduled_by: Optional[dict] = None) -> Optional[tirx.PrimFunc]:
    """The dp4a-scheduled `func` (with `tirx.is_scheduled`), or None where it does not apply;
    ``scheduled_by[name]`` is set to ``"default:cuda_dp4a"`` when it is scheduled."""
    sch = default_schedule(func, target, name)
    if sch is None:
        return None
    if scheduled_by is not None:
        scheduled_by[name] = "default:cuda_dp4a"
    return sch.mod["main"].with_attr(SCHEDULED_ATTR, True)


def default_schedule_pass(target=None, *, scheduled_by: Optional[dict] = None) -> tvm.transform.Pass:
    """Module pass: the dp4a schedule for the unscheduled 8-bit conv PrimFuncs of a fused module
    (the others are left for TVM's GPU rules)."""
    return schedule_pass(lambda func, tgt, name: schedule_func(func, tgt, name, scheduled_by=scheduled_by),
                         target, "HarnessCUDAInt8Schedule")


class CUDASchedules:
    """The dp4a schedules of the int8 convs on CUDA as a schedule family (see
    :func:`harness.schedules.schedule_family`)."""

    name = "cuda"

    @staticmethod
    def applies_to(target) -> bool:
        return target is not None and target.kind.name == "cuda"

    @staticmethod
    def default_schedule(func, target, name: str = "func"):
        """``(schedule, "cuda_dp4a")`` of an 8-bit conv kernel, or ``(None, None)``."""
        sch = default_schedule(func, target, name)
        return (sch, "cuda_dp4a") if sch is not None else (None, None)

    @staticmethod
    def graph_passes(target) -> list:  # pylint: disable=unused-argument
        return []

    @staticmethod
    def sample_schedule(sch: s_tir.Schedule, target) -> None:
        sample_int8_dp4a(sch, target)

    @staticmethod
    def schedule_passes(target, scheduled_by: Optional[dict] = None) -> list:
        return [default_schedule_pass(target, scheduled_by=scheduled_by)]

"""Public helpers the harness's default schedules share: the blocks of a kernel in normal
form, extents and divisors, inlining, which functions are already scheduled, and the module pass
that applies a schedule function to every unscheduled PrimFunc of a fused module."""
from __future__ import annotations

import logging
import math
from typing import Dict, List, Sequence

import tvm
from tvm import s_tir, tirx

logger = logging.getLogger(__name__)


SCHEDULED_ATTR = "tirx.is_scheduled"  # the key TVM 0.27 uses ("tir.is_scheduled" in older TVMs)


_SCHEDULED_KEYS = (SCHEDULED_ATTR, "tir.is_scheduled")


class NotApplicable(Exception):
    """The rule does not handle this function (it is left unscheduled)."""


def is_scheduled(func) -> bool:
    attrs = func.attrs
    if attrs is None:
        return False
    return any(key in attrs and bool(attrs[key]) for key in _SCHEDULED_KEYS)


def const_int(expr) -> int:
    if isinstance(expr, int):
        return expr
    if isinstance(expr, tirx.IntImm):
        return int(expr.value)
    raise NotApplicable(f"non-constant extent {expr}")


def dtype_bits(dtype) -> int:
    return tvm.runtime.DataType(str(dtype)).bits


def divisors(n: int) -> List[int]:
    small = [d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def pick_vector_factor(extent: int, lanes: int) -> int:
    """A divisor of `extent` (at most one vector long) that fills vector lanes best.

    (One vector per accumulator row and more rows beat two-vector rows: measured on AVX2,
    7-wide rows x 8 beat 14 x 4 by 2x.)"""
    best, best_key = 1, (0.0, 0)
    for d in divisors(extent):
        if d > lanes:
            break
        fill = d / (math.ceil(d / lanes) * lanes)
        key = (fill, d)
        if key > best_key:
            best, best_key = d, key
    return best


def largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in divisors(n) if d <= max(1, cap))


def vars_of(expr) -> list:
    return list(tirx.analysis.undefined_vars(expr))


def region_vars(region) -> list:
    return [v for rng in region.region for v in vars_of(rng.min) + vars_of(rng.extent)]


def uses(variables: Sequence, var) -> bool:
    return any(v.same_as(var) for v in variables)


class Block:
    """A block of the root scope with its loops (one loop per block iter, in order)."""

    def __init__(self, rv, loops, iters, is_reduction):
        self.rv = rv
        self.loops = list(loops)
        self.iters = list(iters)
        self.is_reduction = bool(is_reduction)


def root_blocks(sch: s_tir.Schedule) -> List[Block]:
    norm = tvm.get_global_func("s_tir.schedule.NormalizePrimFunc")
    result = norm(sch)
    if result is None:
        raise NotApplicable("not in normal form (a block iter is not one loop)")
    return [Block(b, loops, iters, red) for b, loops, iters, red in zip(*result)]


def is_reduction_iter(iv) -> bool:
    return iv.iter_type == tirx.IterVar.CommReduce


def param_buffers(sch: s_tir.Schedule) -> list:
    # TVM 0.27: a PrimFunc's parameters are its buffers; block regions name them as `source`
    return list(sch.mod["main"].params)


def writes_param(sch: s_tir.Schedule, block_rv, params) -> bool:
    return any(w.source.same_as(p) for w in sch.get(block_rv).writes for p in params)


def block_bits(sch: s_tir.Schedule, block_rv) -> int:
    block = sch.get(block_rv)
    bits = [dtype_bits(r.source.dtype) for r in list(block.reads) + list(block.writes)]
    bits = [b for b in bits if b >= 8]
    return max(bits) if bits else 32


def inline_all(sch: s_tir.Schedule, blocks: Sequence, params, keep=lambda sch, block_rv: False) -> list:
    """compute_inline every spatial block that writes no parameter (and that `keep` does not
    hold back); the ones that stay."""
    kept = []
    for blk in blocks:
        if keep(sch, blk.rv) or writes_param(sch, blk.rv, params):
            kept.append(blk)
            continue
        try:
            sch.compute_inline(blk.rv)
        except Exception:  # pylint: disable=broad-except
            kept.append(blk)
    return kept


def is_padding(sch: s_tir.Schedule, block_rv) -> bool:
    block = sch.get(block_rv)
    return block.name_hint.startswith("pad") or "if_then_else" in str(block.body)


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
            if not isinstance(func, tirx.PrimFunc) or is_scheduled(func):
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

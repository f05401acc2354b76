"""Module pass: the schedules of tuning records applied to the kernels of a fused module, matched by
the conv (or dense) itself, not by the epilogue fused into it.

Records are matched the way MetaSchedule's ``module_equality="anchor-block"`` matches workloads:
by the *anchor block* of a kernel (the one block with an init statement and the most reads: the
conv2d / matmul), compared structurally with free buffers mapped. So a record `harness tune-conv`
tuned on a one-conv model (conv + bias + ReLU) applies to the same conv in a model, fused there
with bias, requantize or a residual add (DESIGN: "a log that later builds pick up automatically").

Applying a record to a kernel it was not tuned on: MetaSchedule's own anchor-trace replay
(``ApplyAnchorTrace``) fails on the harness's schedules (it stops at the data-packing and
layout-rewrite steps: "Check failed: inst->outputs.size() <= outputs.size()", seen on TVM 0.27
with a dot-product record), so the harness replays what a record *decided* instead:

1. the record's workload is this kernel (same function): its trace is replayed as it is;
2. the record is a sample of the family's search space (the dot-product / dp4a schedule with its
   tile sizes sampled): the kernel's own space is generated and the record's tile decisions are
   put into it, in order;
3. the record is the family's default schedule of its workload: the kernel's default schedule;
4. the record is one of the family's design spaces without sampled decisions (an AMX tile plan:
   the plan is in its tensor intrinsics' names): the kernel's design space with the same
   intrinsics;
5. otherwise MetaSchedule's anchor-trace replay is tried (generic MetaSchedule records).

Where none of these works the kernel keeps its default schedule and a warning says why. Among the
records of a kernel the fastest wins, whatever database it comes from.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Dict, List, Optional

import tvm
from tvm import s_tir, tirx

from ...schedules.analysis import SCHEDULED_ATTR, is_scheduled
from ...schedules.int8_conv import GROUPED_CONV
from ...schedules.intrinsics import WeightBits, dot_weight_bits_mismatch, trace_uses_intrinsic

logger = logging.getLogger("harness")


_FAILED_SECS = 1e9  # MetaSchedule's run time of a candidate that failed


@dataclass
class Record:
    """One tuning record as a build uses it."""

    source: str  # the database it came from (its folder under tuning_logs/<target key>/)
    trace: object  # tvm.s_tir.Trace
    workload: tvm.IRModule  # the kernel it was tuned on
    seconds: float  # mean measured run time


def _anchor(mod: tvm.IRModule):
    from tvm.s_tir.analysis import find_anchor_sblock  # pylint: disable=import-outside-toplevel

    return find_anchor_sblock(mod)


def _mean(run_secs) -> Optional[float]:
    secs = [float(x) for x in (run_secs or [])]
    if not secs:
        return None
    mean = sum(secs) / len(secs)
    return mean if math.isfinite(mean) and 0 < mean < _FAILED_SECS else None


class TuningRecords:
    """The records of one or more tuning databases, indexed by anchor block."""

    def __init__(self) -> None:
        self._index: Dict[int, List[tuple]] = {}
        self.sources: List[str] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, source: str, records) -> int:
        """Add MetaSchedule ``TuningRecord`` objects from database `source`; failed ones are left
        out. Returns how many were added."""
        import tvm_ffi  # pylint: disable=import-outside-toplevel

        if source not in self.sources:
            self.sources.append(source)
        added = 0
        for rec in records:
            secs = _mean(rec.run_secs)
            if secs is None:
                continue
            mod = rec.workload.mod
            anchor = _anchor(mod)
            if anchor is None:
                continue
            key = tvm_ffi.structural_hash(anchor, map_free_vars=True)
            self._index.setdefault(key, []).append((anchor, Record(source, rec.trace, mod, secs)))
            added += 1
        self._count += added
        return added

    def candidates(self, func: tirx.PrimFunc) -> List[Record]:
        """Records whose anchor block is `func`'s, fastest first."""
        import tvm_ffi  # pylint: disable=import-outside-toplevel

        anchor = _anchor(tvm.IRModule({"main": func}))
        if anchor is None:
            return []
        key = tvm_ffi.structural_hash(anchor, map_free_vars=True)
        found = [rec for block, rec in self._index.get(key, [])
                 if tvm_ffi.structural_equal(block, anchor, map_free_vars=True)]
        return sorted(found, key=lambda r: r.seconds)


def _canonical(func) -> tvm.IRModule:
    """`func` without the attributes that only name it, normalized as MetaSchedule tunes it."""
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod  # pylint: disable=import-outside-toplevel

    if isinstance(func, tvm.IRModule):
        func = next(f for _, f in func.functions_items() if isinstance(f, tirx.PrimFunc))
    for key in ("global_symbol", "op_pattern", "tir.is_scheduled", SCHEDULED_ATTR):
        if func.attrs is not None and key in func.attrs:
            func = func.without_attr(key)
    return _normalize_mod(func)


def _tile_decisions(trace) -> list:
    return [(inst, [int(v) for v in trace.decisions[inst]]) for inst in trace.insts
            if inst.kind.name == "SamplePerfectTile" and inst in trace.decisions]


def _steps(trace) -> list:
    return list(trace.as_python())


def _same_design_space(record: Record, kernel, target, family):
    """The kernel's design space that tensorizes with the record's dot intrinsic (None if none does)."""
    wanted = trace_uses_intrinsic(record.trace)
    if wanted is None:
        return None
    spaces = family.sample_schedule(s_tir.Schedule(kernel, debug_mask="none", error_render_level="none"), target)
    for space in spaces if isinstance(spaces, list) else []:
        if trace_uses_intrinsic(space.trace) == wanted:
            return space
    return None


def replay(record: Record, func: tirx.PrimFunc, target, family) -> tuple:
    """``(Schedule, how)`` of `func` with `record`'s schedule, or ``(None, reason)``."""
    import tvm_ffi  # pylint: disable=import-outside-toplevel

    kernel = _canonical(func)
    if tvm_ffi.structural_equal(_canonical(record.workload), kernel):
        sch = s_tir.Schedule(kernel)
        record.trace.apply_to_schedule(sch, remove_postproc=False)
        return sch, "replayed"
    reasons = []
    if family is not None:
        theirs = _tile_decisions(record.trace)
        if theirs:
            try:
                sample = s_tir.Schedule(kernel, debug_mask="none", error_render_level="none")
                family.sample_schedule(sample, target)
                mine = _tile_decisions(sample.trace)
                if len(mine) != len(theirs):
                    raise ValueError(f"{len(theirs)} tile decisions, the kernel's space has {len(mine)}")
                trace = sample.trace
                for (inst, ours), (_, decision) in zip(mine, theirs):
                    if math.prod(ours) != math.prod(decision):
                        raise ValueError(f"tile {decision} does not fit a loop of {math.prod(ours)}")
                    trace = trace.with_decision(inst, decision, remove_postproc=True)
                sch = s_tir.Schedule(kernel)
                trace.apply_to_schedule(sch, remove_postproc=True)
                return sch, "tile decisions"
            except Exception as err:  # pylint: disable=broad-except
                reasons.append(f"its tile decisions do not fit this kernel's space ({_last_line(err)})")
        else:
            default, _ = family.default_schedule(record.workload, target)
            if default is not None and _steps(default.trace) == _steps(record.trace):
                sch, _ = family.default_schedule(kernel, target)
                if sch is not None:
                    return sch, "default of the same conv"
                reasons.append("the family has no default schedule for this kernel")
            else:
                try:
                    sch = _same_design_space(record, kernel, target, family)
                except Exception as err:  # pylint: disable=broad-except
                    sch = None
                    reasons.append(f"no design space of this kernel like the record's ({_last_line(err)})")
                if sch is not None:
                    return sch, "same tile plan"
    try:
        from tvm.s_tir.meta_schedule.trace_apply import schedule_using_anchor_trace  # pylint: disable=import-outside-toplevel

        sch = s_tir.Schedule(kernel)
        schedule_using_anchor_trace(sch, record.trace, target)
        return sch, "anchor trace"
    except Exception as err:  # pylint: disable=broad-except
        reasons.append(f"anchor-trace replay failed ({_last_line(err)})")
    return None, "; ".join(reasons)


def _weight_bits(func: tirx.PrimFunc, family) -> int:
    """The most bits of the int8 weights of `func`'s conv in this build (the family's, per kind of
    conv: a grouped one's may have 8 where the ungrouped ones have 7)."""
    anchor = _anchor(tvm.IRModule({"main": func}))
    grouped = anchor is not None and anchor.name_hint == GROUPED_CONV
    return getattr(family, "weight_bits", WeightBits()).of(grouped)


def _last_line(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(err).__name__)[:200]


def inventory_pass(scheduled_by: dict) -> tvm.transform.Pass:
    """Module pass that notes every unscheduled kernel of a fused module as ``"tvm"`` in
    `scheduled_by` (the passes after it overwrite the ones they schedule)."""

    @tvm.transform.module_pass(opt_level=0, name="HarnessKernelInventory")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        for gvar, func in mod.functions_items():
            if isinstance(func, tirx.PrimFunc) and not is_scheduled(func):
                scheduled_by.setdefault(gvar.name_hint, "tvm")
        return mod

    return _pass


def apply_database_pass(records: TuningRecords, target, family=None, scheduled_by: Optional[dict] = None,
                        amx_records: Optional[list] = None) -> tvm.transform.Pass:
    """Module pass: every unscheduled kernel that `records` cover gets the fastest record's schedule
    (see the module docstring); ``scheduled_by[name] = "database:<source>"``, and the kernels whose
    record runs on AMX tiles are added to `amx_records`."""

    @tvm.transform.module_pass(opt_level=0, name="HarnessApplyDatabase")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        updates, mismatched = {}, []
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or is_scheduled(func):
                continue
            tgt = func.attrs.get("target", target) if func.attrs else target
            bits = _weight_bits(func, family)
            for record in records.candidates(func):
                other_bits = dot_weight_bits_mismatch(record.trace, tgt, bits)
                if other_bits:
                    mismatched.append((gvar.name_hint, record.source, other_bits))
                    continue
                sch, how = replay(record, func, tgt, family)
                if sch is None:
                    logger.warning("tuning record of %s from %s not applied: %s", gvar.name_hint,
                                   record.source, how)
                    continue
                new = sch.mod["main"]
                for key in ("global_symbol", "op_pattern"):
                    if func.attrs is not None and key in func.attrs:
                        new = new.with_attr(key, func.attrs[key])
                updates[gvar] = new.with_attr(SCHEDULED_ATTR, True)
                if scheduled_by is not None:
                    scheduled_by[gvar.name_hint] = f"database:{record.source}"
                if amx_records is not None and "harness_amx_" in str(record.trace):
                    amx_records.append(gvar.name_hint)
                logger.debug("%s: record from %s (%s)", gvar.name_hint, record.source, how)
                break
        if mismatched:  # one line for all: a database tuned with other weight bits misses every conv
            logger.warning("%d tuning records of %d kernels not applied (first: %s from %s): %s; re-tune "
                           "(harness tune CONFIG --only int8) for kernels of this build", len(mismatched),
                           len({m[0] for m in mismatched}), *mismatched[0])
        if updates:
            mod = mod.clone()
            for gvar, func in updates.items():
                mod[gvar] = func
        return mod

    return _pass

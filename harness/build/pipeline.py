"""The Relax pipelines the harness builds with, per target.

    dispatch -> the family's graph passes (CPU: odd widths computed wider, int8 blocked) -> legalize -> fuse
    -> tuning records applied (passes/apply_database.py)
    -> the family's default schedules (harness.schedules) for the kernels no record covers
    -> [CUDA: TVM's GPU default rules for the rest]
    -> weight packing split out and folded into the constants
    -> TVM's own lowering passes for the target

Tuning extracts its tasks with :func:`fused` (the same fuse steps), so the kernels it tunes are
the kernels a build looks up. With no family and no records TVM's own default pipeline is used.
"""
from __future__ import annotations

from typing import Optional

import tvm

from ..schedules import ScheduleFamily


def fuse_passes(target, family: Optional[ScheduleFamily] = None) -> list:
    """Dispatch, legalize and fuse (what MetaSchedule's ``compile_relax`` runs before it applies a
    database), with the family's graph passes before legalization."""
    from tvm import relax  # pylint: disable=import-outside-toplevel

    from .passes.fold_constant import fold_constant_pass  # pylint: disable=import-outside-toplevel

    graph = family.graph_passes(target) if family is not None else []
    return [
        *relax.pipeline.library_dispatch_passes(target),
        *graph,
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        fold_constant_pass(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]


def fused(mod: tvm.IRModule, target, family: Optional[ScheduleFamily] = None) -> tvm.IRModule:
    """`mod` legalized and fused the way a build does before it schedules, so that the kernels
    extracted for tuning are exactly the ones looked up at build time."""
    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(fuse_passes(target, family))(mod)


def _tvm_rules(target) -> list:
    """TVM's own default schedules for what the harness leaves (CUDA: dlight's GPU rules, which
    TVM's CUDA pipeline applies too; llvm: none, TVM leaves those kernels as loops)."""
    if target.kind.name != "cuda":
        return []
    from tvm.s_tir import dlight as dl  # pylint: disable=import-outside-toplevel

    return [dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                    dl.gpu.GeneralReduction(), dl.gpu.Fallback())]


def lower_passes(target) -> list:
    """What TVM's own pipeline runs after scheduling, from TVM's own lists (so that the two cannot
    drift apart)."""
    if target.kind.name == "cuda":
        from tvm.relax.backend.cuda import pipeline as cuda  # pylint: disable=import-outside-toplevel

        return cuda.dataflow_lower_passes(target) + cuda.finalize_passes(target)
    from tvm.relax.backend.cpu_generic import pipeline as cpu  # pylint: disable=import-outside-toplevel

    return cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target)


def schedule_passes(target, family: Optional[ScheduleFamily], records=None,
                    scheduled_by: Optional[dict] = None, amx_records: Optional[list] = None) -> list:
    """The passes that schedule a fused module: the records (:class:`~harness.build.passes.
    apply_database.TuningRecords`) where they cover a kernel, the family's default schedules, TVM's
    rules. ``scheduled_by`` (kernel name -> where its schedule came from) is filled as they run."""
    from .passes.apply_database import apply_database_pass, inventory_pass  # pylint: disable=import-outside-toplevel

    passes = [inventory_pass(scheduled_by)] if scheduled_by is not None else []
    if records is not None and len(records):
        passes.append(apply_database_pass(records, target, family, scheduled_by, amx_records))
    if family is not None:
        passes += family.schedule_passes(target, scheduled_by)
    return passes + _tvm_rules(target)


def fuse_and_schedule(mod: tvm.IRModule, target, family: Optional[ScheduleFamily] = None, records=None,
                      scheduled_by: Optional[dict] = None, amx_records: Optional[list] = None) -> tvm.IRModule:
    """`mod` fused (:func:`fuse_passes`) and scheduled (:func:`schedule_passes`), with the weight
    layouts the schedules asked for (8-bit dot-product convs) split out of the kernels and folded
    into the constant weights, once, here."""
    from tvm import relax  # pylint: disable=import-outside-toplevel

    from .passes.fold_constant import fold_constant_pass  # pylint: disable=import-outside-toplevel

    with target:
        mod = tvm.transform.Sequential(fuse_passes(target, family))(mod)
        mod = tvm.transform.Sequential(schedule_passes(target, family, records, scheduled_by, amx_records))(mod)
        return tvm.transform.Sequential([relax.transform.SplitLayoutRewritePreproc(),
                                         fold_constant_pass(),
                                         relax.transform.DeadCodeElimination()])(mod)


def relax_pipeline(target, family: Optional[ScheduleFamily] = None, records=None,
                   scheduled_by: Optional[dict] = None, amx_records: Optional[list] = None):
    """The Relax pipeline (``tvm.compile(..., relax_pipeline=)``) for `target`: fuse, schedule, lower;
    ``"default"`` (TVM's own) where there is no family and no record to apply."""
    if family is None and (records is None or not len(records)):
        return "default"

    @tvm.transform.module_pass(opt_level=0, name=f"Harness{target.kind.name.upper()}Pipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        mod = fuse_and_schedule(mod, target, family, records, scheduled_by, amx_records)
        with target:
            return tvm.transform.Sequential(lower_passes(target))(mod)

    return _pipeline

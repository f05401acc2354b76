"""Model-level tuning: the conv2d / dense kernels of a whole (fp32 or int8) Relax module.

AutoTVM's `extract_from_program` + tuner + `apply_history_best` in today's TVM:
MetaSchedule extracts the fused kernels of the module, the harness tunes the ones
anchored on conv2d / matmul into one JSON database per run key

    tuning_logs/<target key>/<run key>/   (run key like resnet50_v1-B1-int8)

and `harness run` applies a matching database when it builds (on llvm the kernels
not in it get the default CPU schedules of :mod:`harness.tune.cpu_default`). Records
are appended after every batch, and a re-run resumes: ``trials`` is the number of
search trials wanted in the database (those already there count), and schedules
already in the database are not measured again.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

import tvm

logger = logging.getLogger("harness")

TUNED_OPS = ("conv2d", "matmul", "dense")


@dataclass
class ModelTuneReport:
    work_dir: str
    tasks: List[str] = field(default_factory=list)
    trials: int = 0  # new search trials measured by this call
    earlier_trials: int = 0  # search trials the database held before (a resumed run)
    defaults_measured: int = 0  # default CPU schedules measured and kept as records (seed_default_schedules)


@dataclass
class BuildDatabaseReport:
    work_dir: Optional[str]
    from_database: List[str] = field(default_factory=list)
    fallback: List[str] = field(default_factory=list)

    def __str__(self) -> str:
        where = self.work_dir or "no database"
        return (f"{len(self.from_database)} kernel(s) from the tuning database ({where}), "
                f"{len(self.fallback)} with default schedules")


def tuning_dir(root: str, target, run_key: str) -> str:
    from ..build import target_key

    return os.path.join(root, target_key(target), run_key)


def fuse_passes(target) -> list:
    """Dispatch, legalize and fuse: what `compile_relax` runs before it applies a database
    (and what the llvm build pipeline of :mod:`harness.tune.cpu_default` runs)."""
    from tvm import relax

    from . import cpu_default

    widen = [cpu_default.pad_conv_width_pass(target)] if cpu_default.applies_to(target) else []
    from . import amx  # issue 14: strided 1x1 int8 convs as a slice + a stride-1 conv, on AMX targets

    if cpu_default.applies_to(target) and amx.applies_to(target):
        widen.append(amx.strided_pointwise_pass(target))
    return [
        *relax.pipeline.library_dispatch_passes(target),
        *widen,
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]


def fused(mod: tvm.IRModule, target) -> tvm.IRModule:
    """Legalize and fuse `mod` the way `compile_relax` does before it applies a database,
    so that the extracted kernels are exactly the ones looked up at build time."""
    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(fuse_passes(target))(mod)


def extracted_tasks(mod: tvm.IRModule, target) -> list:
    from tvm.s_tir import meta_schedule as ms

    return ms.relax_integration.extract_tasks(fused(mod, target), target)


def tunable_tasks(mod: tvm.IRModule, target) -> list:
    """MetaSchedule's extracted tasks of `mod` whose kernels are conv2d / dense."""
    return [t for t in extracted_tasks(mod, target) if any(op in t.task_name for op in TUNED_OPS)]


def _task_is_int8(task) -> bool:
    text = task.dispatched[0].script()
    return '"int8")' in text or '"uint8")' in text


def tune_model(mod: tvm.IRModule, target, work_dir: str, *, trials: int, runner: Any = "local",
               progress: Optional[Callable] = None, seed: Optional[int] = None,
               trials_per_iter: int = 16, timeout_sec: float = 60.0) -> ModelTuneReport:
    """Tune the conv2d/dense tasks of `mod` (weights bound) for `target`, `trials` in all.

    Resuming: `trials` is the total number of search trials wanted in `work_dir`; those the
    database already holds count (the default schedules measured by
    :func:`seed_default_schedules` do not), so re-running an interrupted run finishes its
    budget and re-running a finished one measures nothing new. Schedules the database already
    holds are never measured again. `trials_per_iter`: the most trials of one task per batch
    (fewer, down to 4, where the budget gives each task fewer).
    """
    from tvm.s_tir import meta_schedule as ms

    from .conv import _dedup_search_class, _make_runner, _progress_callback, build_candidate, open_database
    from .rules import cpu_int8_dot_space, cuda_int8_dp4a_space, normalize_target, space_for, trace_uses_intrinsic

    if target.kind.name == "cuda":  # the thread / shared-memory limits MetaSchedule's GPU rules need
        target = normalize_target(target)
    tasks = tunable_tasks(mod, target)
    report = ModelTuneReport(work_dir, [t.task_name for t in tasks])
    if not tasks or trials <= 0:
        return report
    database = open_database(work_dir, target, create=True)
    defaults = default_schedules([(t.dispatched[0], t.task_name) for t in tasks], target)
    contexts, weights = [], []
    for task, default in zip(tasks, defaults):
        dtype = "int8" if _task_is_int8(task) else "float32"
        if dtype == "int8" and default is not None and trace_uses_intrinsic(default.trace):
            # the default dot-product (dp4a) schedule, its tiles tuned
            space = cuda_int8_dp4a_space(target) if target.kind.name == "cuda" else cpu_int8_dot_space(target)
        elif dtype == "int8":
            space = space_for(dtype, target, "uint8" if target.kind.name == "llvm" else None)
        else:
            space = space_for("float32", target)
        contexts.append(ms.TuneContext(
            mod=task.dispatched[0], target=target, space_generator=space.space_generator(),
            search_strategy=_dedup_search_class()(ms.search_strategy.EvolutionarySearch(**space.search_opts)),
            task_name=task.task_name, rand_state=-1 if seed is None else int(seed), num_threads=1))
        weights.append(float(task.weight))
    builder = ms.builder.LocalBuilder(max_workers=1, timeout_sec=timeout_sec, f_build=build_candidate)
    run = _make_runner(runner, target, timeout_sec=timeout_sec, number=3, repeat=1, min_repeat_ms=50)
    kernels = [(ctx.mod, ctx.task_name) for ctx in contexts]
    report.defaults_measured = seed_default_schedules(kernels, target, database, builder, run, defaults)
    report.earlier_trials = _search_records(database, kernels, defaults)
    todo = trials - report.earlier_trials
    if todo <= 0:
        return report
    callbacks = list(ms.MeasureCallback.create("default"))
    if progress is not None:
        done_before = report.earlier_trials
        callbacks.append(_progress_callback(lambda done, _total, best: progress(done_before + done, trials, best),
                                            todo))
    # a batch is one task's: with few trials per task, smaller batches let every task be searched
    per_iter = max(1, min(trials_per_iter, todo, max(4, todo // len(contexts))))
    ms.tune_tasks(
        tasks=contexts, task_weights=weights, work_dir=work_dir, max_trials_global=todo,
        num_trials_per_iter=per_iter, builder=builder, runner=run,
        database=database, cost_model=ms.cost_model.XGBModel(num_tuning_cores=1),
        measure_callbacks=callbacks, task_scheduler="gradient",
    )
    report.trials = _search_records(database, kernels, defaults) - report.earlier_trials
    return report


def _search_records(database, kernels, defaults) -> int:
    """Records of the kernels' workloads in `database` other than their default schedules."""
    from .conv import workload_records

    count = 0
    for (mod, _), sch in zip(kernels, defaults):
        steps = None if sch is None else list(sch.trace.as_python())
        count += sum(1 for rec in workload_records(database, mod) if list(rec.trace.as_python()) != steps)
    return count


def default_schedules(kernels, target) -> list:
    """Per ``(kernel module, task name)``, its harness default schedule (:mod:`harness.tune.cpu_default`
    on llvm, the dp4a int8 convs of :mod:`harness.tune.cuda_default` on CUDA; None where it has
    none, and for every kernel of a target the default schedules do not serve)."""
    family = schedule_family(target)
    if family is None:
        return [None] * len(kernels)
    return [family.default_schedule(mod, target, name) for mod, name in kernels]


def seed_default_schedules(kernels, target, database, builder, runner, schedules=None) -> int:
    """Measure each task's default schedule (:func:`default_schedules`) like a trial and
    keep it in the database, so that the best record of a task is never slower than what an
    untuned build would run (a short tuning run often finds nothing better). A default schedule
    the database already holds is not measured again. `kernels`: ``(kernel module, task name)``
    pairs, as tuned (the tune contexts' modules); `schedules`: their :func:`default_schedules`,
    when already made. Returns how many were measured."""
    from tvm.s_tir import meta_schedule as ms

    from .conv import workload_records

    if schedules is None:
        schedules = default_schedules(kernels, target)
    todo = []
    for (mod, name), sch in zip(kernels, schedules):
        if sch is None:
            continue
        steps = list(sch.trace.as_python())
        if any(list(rec.trace.as_python()) == steps for rec in workload_records(database, mod)):
            continue
        todo.append((mod, name, sch))
    if not todo:
        return 0
    built = builder.build([ms.builder.BuilderInput(sch.mod, target) for _, _, sch in todo])
    ready = []
    for (mod, name, sch), result in zip(todo, built):
        if result.error_msg:
            logger.warning("default schedule of %s did not build: %s", name, result.error_msg[-500:])
        else:
            ready.append((mod, name, sch, result.artifact_path, ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)))
    device = "cuda" if target.kind.name == "cuda" else "cpu"
    futures = runner.run([ms.runner.RunnerInput(path, device, args) for _, _, _, path, args in ready])
    measured = 0
    for (mod, name, sch, _, args), future in zip(ready, futures):
        outcome = future.result()
        if outcome.error_msg:
            logger.warning("default schedule of %s did not run: %s", name, outcome.error_msg[-500:])
            continue
        database.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, database.commit_workload(mod), [float(x) for x in outcome.run_secs], target, args))
        measured += 1
    return measured


def compile_with_database(mod: tvm.IRModule, target, work_dir: Optional[str], *, opt_level: int = 3):
    """Compile `mod` with the tuning database in `work_dir` applied (if there is one).

    Returns (executable, BuildDatabaseReport). A database made for another target is refused.
    """
    from tvm.s_tir import meta_schedule as ms

    if not work_dir or not os.path.exists(os.path.join(work_dir, "database_workload.json")):
        return None, BuildDatabaseReport(None)
    from .conv import open_database

    database = open_database(work_dir, target)
    report = BuildDatabaseReport(work_dir)
    from . import amx

    for task in extracted_tasks(mod, target):
        record = database.query_tuning_record(task.dispatched[0], target, task.task_name)
        hit = record is not None
        (report.from_database if hit else report.fallback).append(task.task_name)
        if hit and "harness_amx_" in str(record.trace):  # (issue 14) a tuned kernel on AMX tiles
            amx.note_scheduled(task.task_name, amx.AMX_KIND)
    pipeline = harness_pipeline(target, database)
    if pipeline is not None:
        # compile_relax's steps (fuse, apply the database), then default schedules for the rest
        with target, database, tvm.transform.PassContext(opt_level=opt_level):
            ex = tvm.compile(mod, target=target, relax_pipeline=pipeline)
        return ex, report
    with target, tvm.transform.PassContext(opt_level=opt_level):
        ex = ms.relax_integration.compile_relax(database, mod, target, params=None)
    return ex, report


def schedule_family(target):
    """The module of the harness's default schedules that serves `target` (switch on):
    :mod:`harness.tune.cpu_default` on llvm, :mod:`harness.tune.cuda_default` (dp4a int8 convs) on
    CUDA; None for other targets."""
    from . import cpu_default, cuda_default

    return next((family for family in (cpu_default, cuda_default) if family.applies_to(target)), None)


def harness_pipeline(target, database=None):
    """The Relax pipeline the harness builds `target` with (fuse, apply `database`, the default
    schedules of :func:`schedule_family`), or None where TVM's own pipeline is used."""
    family = schedule_family(target)
    return None if family is None else family.relax_pipeline(target, database)

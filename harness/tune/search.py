"""The search: MetaSchedule's evolutionary search over a model's conv2d / dense kernels
(``harness tune``, and ``harness tune-conv`` on a one-conv model), resumable, never measuring a
schedule twice, with each kernel's default schedule measured first as a trial.

Model-level tuning: the conv2d / dense kernels of a whole (fp32 or int8) Relax module.

AutoTVM's `extract_from_program` + tuner + `apply_history_best` in today's TVM:
MetaSchedule extracts the fused kernels of the module, the harness tunes the ones
anchored on conv2d / matmul into one JSON database per run key

    tuning_logs/<target key>/<run key>/   (run key like resnet50_v1-B1-int8)

and `harness run` applies a matching database when it builds (on llvm the kernels
not in it get the default CPU schedules of :mod:`harness.schedules.cpu`). Records
are appended as each trial is measured (:class:`TrialSaver`: a kill loses only the trial being
measured), and a re-run resumes: ``trials`` is the number of
search trials wanted in the database (those already there count), and schedules
already in the database are not measured again.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

import tvm

from ..build.pipeline import fused
from ..schedules import ScheduleOptions, schedule_family
from ..schedules.intrinsics import trace_uses_intrinsic
from ..targets import normalize_target, target_key
from .database import FAILED_SECS, mean_secs, open_database, workload_records

logger = logging.getLogger("harness")


# ------------------------------------------------------------------------- search strategy
_DEDUP_CLASS = None


def dedup_search_class():
    """A search strategy that never measures a schedule the database already holds.

    It delegates to MetaSchedule's evolutionary search and drops candidates whose scheduled
    module is structurally equal to a stored record or to an earlier candidate.  Before tuning
    it also feeds the stored records to the cost model, so a resumed run starts where the
    interrupted one stopped.
    """
    global _DEDUP_CLASS  # pylint: disable=global-statement
    if _DEDUP_CLASS is not None:
        return _DEDUP_CLASS
    import tvm_ffi  # pylint: disable=import-outside-toplevel
    from tvm.ir.utils import derived_object  # pylint: disable=import-outside-toplevel
    from tvm.s_tir.meta_schedule.runner import RunnerResult  # pylint: disable=import-outside-toplevel
    from tvm.s_tir.meta_schedule.search_strategy import PySearchStrategy  # pylint: disable=import-outside-toplevel

    @derived_object
    class _DedupSearch(PySearchStrategy):
        def __init__(self, inner, max_empty_rounds: int = 4, warm_start: bool = True, saver=None) -> None:
            super().__init__()
            self.inner = inner
            self.max_empty_rounds = max_empty_rounds
            self.warm_start = warm_start
            self.saver = saver  # a TrialSaver: trials budget shared by all tasks, records saved one by one
            self.context = None
            self.seen: dict[int, list] = {}
            self.skipped = 0
            self.prior = 0

        def _remember(self, mod) -> bool:
            """Add ``mod`` to the known schedules; False if it was known already."""
            key = tvm_ffi.structural_hash(mod)
            bucket = self.seen.setdefault(key, [])
            for known in bucket:
                if tvm_ffi.structural_equal(known, mod):
                    return False
            bucket.append(mod)
            return True

        def _initialize_with_tune_context(self, context) -> None:
            self.context = context
            self.inner._initialize_with_tune_context(context)  # pylint: disable=protected-access

        def pre_tuning(self, max_trials, num_trials_per_iter, design_spaces, database=None, cost_model=None):
            self.inner.pre_tuning(max_trials, num_trials_per_iter, design_spaces, database, cost_model)
            if database is None:
                return
            cands, results = [], []
            for rec in workload_records(database, self.context.mod):
                try:
                    cand = rec.as_measure_candidate()
                except Exception:  # pylint: disable=broad-except
                    continue
                self._remember(cand.sch.mod)
                self.prior += 1
                secs = mean_secs(rec)
                if secs is not None:
                    cands.append(cand)
                    results.append(RunnerResult([float(x) for x in rec.run_secs], None))
            if self.warm_start and cands and cost_model is not None:
                try:
                    cost_model.update(self.context, cands, results)
                except Exception as err:  # pylint: disable=broad-except
                    logger.warning("could not warm-start the cost model: %s", err)

        def post_tuning(self) -> None:
            self.inner.post_tuning()

        def generate_measure_candidates(self):
            for _ in range(self.max_empty_rounds):
                cands = self.inner.generate_measure_candidates()
                if cands is None:
                    return None
                fresh = [c for c in cands if self._remember(c.sch.mod)]
                self.skipped += len(cands) - len(fresh)
                if fresh and self.saver is not None:
                    fresh = self.saver.hand_out(self.context, fresh)  # None: the budget is spent
                if fresh:
                    return fresh
                if fresh is None:
                    return None
            logger.info("search space exhausted around the stored records; stopping")
            return None

        def notify_runner_results(self, measure_candidates, results) -> None:
            self.inner.notify_runner_results(measure_candidates, results)

        def clone(self):
            return _DedupSearch(self.inner.clone(), self.max_empty_rounds, self.warm_start, self.saver)

    _DEDUP_CLASS = _DedupSearch
    return _DedupSearch


# ------------------------------------------------------------------- saving trial by trial
# ------------------------------------------------------------------- saving trial by trial
class TrialSaver:
    """Commits each measured trial to the database the moment its result arrives, and stops the
    search at exactly ``budget`` trials over all tasks.

    MetaSchedule's ``AddToDatabase`` callback writes a whole batch once every result of it is in
    (with several tasks, once the scheduler joins the task, maybe many batches later), so a crash
    lost every trial measured since. Here the search strategy (:func:`dedup_search_class`) hands
    each batch out through :meth:`hand_out`, the wrapped builder maps each artifact to its
    candidate, the wrapped runner waits for each result in turn and commits it at once, and the
    measure callback commits what never reached the runner (candidates that failed to build) and
    anything else not yet committed, as ``AddToDatabase`` would. A kill -9 then loses only the
    trial being measured.
    """

    def __init__(self, database, budget: int) -> None:
        self.database = database
        self.remaining = int(budget)
        self.batch: list = []  # (tune context, candidate) of the batch last handed out
        self.by_artifact: dict = {}  # artifact path -> (tune context, candidate)
        self.saved: set = set()  # artifact paths already committed

    def hand_out(self, context, candidates):
        """The part of ``candidates`` the budget allows (None when it is spent), remembered."""
        if self.remaining <= 0:
            return None
        candidates = list(candidates)[: self.remaining]
        self.remaining -= len(candidates)
        self.batch = [(context, c) for c in candidates]
        return candidates

    def built(self, inputs, results) -> None:
        batch, self.batch = self.batch, []
        if len(batch) != len(inputs):  # not the batch handed out: the callback commits at the join
            return
        for entry, result in zip(batch, results):
            if result.artifact_path is not None:
                self.by_artifact[str(result.artifact_path)] = entry

    def commit(self, context, candidate, run_secs) -> None:
        """What ``AddToDatabase`` commits for one trial (a failed one with MetaSchedule's 1e10 s)."""
        from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

        secs = [float(x) for x in run_secs] if run_secs else [1e10]
        self.database.commit_tuning_record(ms.database.TuningRecord(
            candidate.sch.trace, self.database.commit_workload(context.mod), secs, context.target,
            candidate.args_info))

    def measured(self, runner_input, result) -> None:
        path = str(runner_input.artifact_path)
        entry = self.by_artifact.get(path)
        if entry is not None and path not in self.saved:
            self.commit(entry[0], entry[1], result.run_secs)
            self.saved.add(path)

    def joined(self, context, candidates, builder_results, runner_results) -> None:
        for cand, bres, rres in zip(candidates, builder_results, runner_results):
            path = None if bres.artifact_path is None else str(bres.artifact_path)
            if path is None or path not in self.saved:
                self.commit(context, cand, rres.run_secs)
            self.saved.discard(path)
            self.by_artifact.pop(path, None)

_SAVER_CLASSES = None

def saving_tuners(saver: TrialSaver, builder, runner) -> tuple:
    """(builder, runner, measure callbacks) that save each trial through ``saver``: the default
    callbacks with ``AddToDatabase`` replaced by the saver's."""
    global _SAVER_CLASSES  # pylint: disable=global-statement
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

    if _SAVER_CLASSES is None:
        from tvm.ir.utils import derived_object  # pylint: disable=import-outside-toplevel
        from tvm.s_tir.meta_schedule.builder import PyBuilder  # pylint: disable=import-outside-toplevel
        from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback  # pylint: disable=import-outside-toplevel
        from tvm.s_tir.meta_schedule.runner import PyRunner, RunnerFuture  # pylint: disable=import-outside-toplevel

        @derived_object
        class _SavingBuilder(PyBuilder):
            def __init__(self, inner, trial_saver) -> None:
                super().__init__()
                self.inner, self.trial_saver = inner, trial_saver

            def build(self, build_inputs):
                results = self.inner.build(build_inputs)
                self.trial_saver.built(build_inputs, results)
                return results

        @derived_object
        class _SavingRunner(PyRunner):
            def __init__(self, inner, trial_saver) -> None:
                super().__init__()
                self.inner, self.trial_saver = inner, trial_saver

            def run(self, runner_inputs):
                # LocalRunner (and CannedRunner) measure a whole call before returning: one input per
                # call; an RPCRunner's futures come in as its servers finish: all at once, waited for
                # in order. Either way each result is committed as soon as it is in.
                if isinstance(self.inner, ms.runner.RPCRunner):
                    futures = list(self.inner.run(runner_inputs))
                else:
                    futures = (self.inner.run([runner_input])[0] for runner_input in runner_inputs)
                done = []
                for runner_input, future in zip(runner_inputs, futures):
                    result = future.result()
                    self.trial_saver.measured(runner_input, result)
                    done.append(RunnerFuture(lambda: True, lambda r=result: r))
                return done

        @derived_object
        class _SaveUnsaved(PyMeasureCallback):
            def __init__(self, trial_saver) -> None:
                super().__init__()
                self.trial_saver = trial_saver

            def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
                context = task_scheduler.tasks_[task_id].ctx
                self.trial_saver.joined(context, measure_candidates, builder_results, runner_results)

        _SAVER_CLASSES = (_SavingBuilder, _SavingRunner, _SaveUnsaved)
    saving_builder, saving_runner, save_unsaved = _SAVER_CLASSES
    callbacks = [save_unsaved(saver)] + [cb for cb in ms.MeasureCallback.create("default")
                                         if not isinstance(cb, ms.measure_callback.AddToDatabase)]
    return saving_builder(builder, saver), saving_runner(runner, saver), callbacks


_PROGRESS_CLASS = None


def progress_callback(report: Callable[[int, int, float | None], None], total: int):
    """A measure callback calling ``report(done, total, best_ms)`` after every batch."""
    global _PROGRESS_CLASS  # pylint: disable=global-statement
    if _PROGRESS_CLASS is None:
        from tvm.ir.utils import derived_object  # pylint: disable=import-outside-toplevel
        from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback  # pylint: disable=import-outside-toplevel

        @derived_object
        class _Progress(PyMeasureCallback):
            def __init__(self, fn, n_total: int) -> None:
                super().__init__()
                self.fn = fn
                self.total = n_total
                self.done = 0
                self.best: float | None = None

            def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
                del task_scheduler, task_id, measure_candidates
                for bres, rres in zip(builder_results, runner_results):
                    self.done += 1
                    if bres.error_msg or rres.error_msg or not rres.run_secs:
                        continue
                    secs = [float(x) for x in rres.run_secs]
                    mean_ms = sum(secs) / len(secs) * 1e3
                    if mean_ms < FAILED_SECS and (self.best is None or mean_ms < self.best):
                        self.best = mean_ms
                self.fn(self.done, self.total, self.best)

        _PROGRESS_CLASS = _Progress
    return _PROGRESS_CLASS(report, total)


def tqdm_reporter(total: int, desc: str):
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    bar = tqdm(total=total, desc=desc, unit="trial")

    def _report(done: int, n_total: int, best_ms: float | None) -> None:
        del n_total
        if best_ms is not None:
            bar.set_postfix(best_ms=f"{best_ms:.4f}", refresh=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return _report, bar


TUNED_OPS = ("conv2d", "matmul", "dense")


@dataclass
class ModelTuneReport:
    work_dir: str
    tasks: List[str] = field(default_factory=list)
    trials: int = 0  # new search trials measured by this call
    earlier_trials: int = 0  # search trials the database held before (a resumed run)
    defaults_measured: int = 0  # default CPU schedules measured and kept as records (seed_default_schedules)


def tuning_dir(root: str, target, run_key: str) -> str:
    """``<root>/<target key>/<run key>``: where the database of a run key lives."""
    return os.path.join(root, target_key(target), run_key)


def extracted_tasks(mod: tvm.IRModule, target, options: Optional[ScheduleOptions] = None) -> list:
    """MetaSchedule's tasks of `mod`, fused as a build with `options` fuses it."""
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

    return ms.relax_integration.extract_tasks(fused(mod, target, schedule_family(target, options)), target)


def tunable_tasks(mod: tvm.IRModule, target, options: Optional[ScheduleOptions] = None) -> list:
    """MetaSchedule's extracted tasks of `mod` whose kernels are conv2d / dense; not the integer
    Winograd convs (:mod:`harness.schedules.winograd`), which have no search space: builds run
    them on their default schedule."""
    from ..schedules.winograd import KERNEL_NAME  # pylint: disable=import-outside-toplevel

    return [t for t in extracted_tasks(mod, target, options)
            if any(op in t.task_name for op in TUNED_OPS) and KERNEL_NAME not in t.task_name]


def _task_is_int8(task) -> bool:
    text = task.dispatched[0].script()
    return '"int8")' in text or '"uint8")' in text


def tune_model(mod: tvm.IRModule, target, work_dir: str, *, trials: int, runner: Any = "local",
               progress: Optional[Callable] = None, seed: Optional[int] = None,
               trials_per_iter: int = 16, timeout_sec: float = 60.0,
               options: Optional[ScheduleOptions] = None,
               only: Optional[Callable[[Any], bool]] = None) -> ModelTuneReport:
    """Tune the conv2d/dense tasks of `mod` (weights bound) for `target`, `trials` in all.

    Resuming: `trials` is the total number of search trials wanted in `work_dir`; those the
    database already holds count (the default schedules measured by
    :func:`seed_default_schedules` do not), so re-running an interrupted run finishes its
    budget and re-running a finished one measures nothing new. Schedules the database already
    holds are never measured again. `trials_per_iter`: the most trials of one task per batch
    (fewer, down to 4, where the budget gives each task fewer). `options`: the schedule families
    of the builds the records are for (default: all on); `only(task)`: tune just the tasks it
    accepts (``harness tune-conv``: the conv of a one-conv model).
    """
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

    from .runners import build_candidate, make_runner  # pylint: disable=import-outside-toplevel
    from .spaces import cpu_int8_dot_space, cuda_int8_dp4a_space, space_for  # pylint: disable=import-outside-toplevel

    if target.kind.name == "cuda":  # the thread / shared-memory limits MetaSchedule's GPU rules need
        target = normalize_target(target)
    tasks = [t for t in tunable_tasks(mod, target, options) if only is None or only(t)]
    report = ModelTuneReport(work_dir, [t.task_name for t in tasks])
    if not tasks or trials <= 0:
        return report
    database = open_database(work_dir, target, create=True)
    saver = TrialSaver(database, 0)  # each trial saved as it is measured; the budget is set below
    defaults = default_schedules([(t.dispatched[0], t.task_name) for t in tasks], target, options)
    contexts, weights = [], []
    for task, default in zip(tasks, defaults):
        dtype = "int8" if _task_is_int8(task) else "float32"
        if (dtype == "int8" and default is not None and trace_uses_intrinsic(default.trace)
                and _samples_tiles(task.dispatched[0], target, options)):
            # the default dot-product (dp4a) schedule, its tiles tuned
            opts = options or ScheduleOptions()
            space = (cuda_int8_dp4a_space(target) if target.kind.name == "cuda" else
                     cpu_int8_dot_space(target, opts.weight_bits(), amx=opts.cpu_int8_amx))
        elif dtype == "int8":
            space = space_for(dtype, target, "uint8" if target.kind.name == "llvm" else None)
        else:
            space = space_for("float32", target)
        contexts.append(ms.TuneContext(
            mod=task.dispatched[0], target=target, space_generator=space.space_generator(),
            search_strategy=dedup_search_class()(ms.search_strategy.EvolutionarySearch(**space.search_opts),
                                                 saver=saver),
            task_name=task.task_name, rand_state=-1 if seed is None else int(seed), num_threads=1))
        weights.append(float(task.weight))
    builder = ms.builder.LocalBuilder(max_workers=1, timeout_sec=timeout_sec, f_build=build_candidate)
    run = make_runner(runner, target, timeout_sec=timeout_sec, number=3, repeat=1, min_repeat_ms=50)
    kernels = [(ctx.mod, ctx.task_name) for ctx in contexts]
    report.defaults_measured = seed_default_schedules(kernels, target, database, builder, run, defaults, options)
    report.earlier_trials = _search_records(database, kernels, defaults)
    todo = trials - report.earlier_trials
    if todo <= 0:
        return report
    saver.remaining = todo  # over all tasks: `trials` is met exactly, not overshot by a last batch
    builder, run, callbacks = saving_tuners(saver, builder, run)
    if progress is not None:
        done_before = report.earlier_trials
        callbacks.append(progress_callback(lambda done, _total, best: progress(done_before + done, trials, best),
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


def _samples_tiles(kernel, target, options: Optional[ScheduleOptions]) -> bool:
    """The family's tile-sampled schedule (the dot-product / dp4a search space, on AMX targets the
    AMX tile plans of stride-1 convs) applies to `kernel`. A default schedule on the dot product or
    on AMX tiles does not imply it: a strided conv on AMX's pixel-row tiles has no AMX space (its
    space is the dot product's), and a conv whose int32 accumulator is the kernel's output (no
    epilogue) has no dot-product schedule."""
    from tvm import s_tir  # pylint: disable=import-outside-toplevel

    family = schedule_family(target, options)
    try:
        family.sample_schedule(s_tir.Schedule(kernel, debug_mask="none", error_render_level="none"), target)
    except Exception:  # pylint: disable=broad-except
        return False
    return True


def _search_records(database, kernels, defaults) -> int:
    """Records of the kernels' workloads in `database` other than their default schedules."""
    count = 0
    for (mod, _), sch in zip(kernels, defaults):
        steps = None if sch is None else list(sch.trace.as_python())
        count += sum(1 for rec in workload_records(database, mod) if list(rec.trace.as_python()) != steps)
    return count


def default_schedules(kernels, target, options: Optional[ScheduleOptions] = None) -> list:
    """Per ``(kernel module, task name)``, its harness default schedule (:mod:`harness.schedules.cpu`
    on llvm, the dp4a int8 convs of :mod:`harness.schedules.cuda` on CUDA; None where it has
    none, and for every kernel of a target the default schedules do not serve)."""
    family = schedule_family(target, options)
    if family is None:
        return [None] * len(kernels)
    return [family.default_schedule(mod, target, name)[0] for mod, name in kernels]


def seed_default_schedules(kernels, target, database, builder, runner, schedules=None,
                           options: Optional[ScheduleOptions] = None) -> int:
    """Measure each task's default schedule (:func:`default_schedules`) like a trial and
    keep it in the database, so that the best record of a task is never slower than what an
    untuned build would run (a short tuning run often finds nothing better). A default schedule
    the database already holds is not measured again. `kernels`: ``(kernel module, task name)``
    pairs, as tuned (the tune contexts' modules); `schedules`: their :func:`default_schedules`,
    when already made. Returns how many were measured."""
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

    if schedules is None:
        schedules = default_schedules(kernels, target, options)
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
    measured = 0
    for mod, name, sch, path, args in ready:  # one at a time: each is saved before the next is measured
        outcome = runner.run([ms.runner.RunnerInput(path, device, args)])[0].result()
        if outcome.error_msg:
            logger.warning("default schedule of %s did not run: %s", name, outcome.error_msg[-500:])
            continue
        database.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, database.commit_workload(mod), [float(x) for x in outcome.run_secs], target, args))
        measured += 1
    return measured

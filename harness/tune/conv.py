"""Tune one conv2d shape with MetaSchedule ("tune-conv"), and use what was tuned.

* :func:`tune_conv` -- search int8 (or float32) schedules for one conv with MetaSchedule's
  evolutionary search and XGBoost cost model; results go to a ``JSONDatabase`` in ``work_dir``
  (``database_workload.json`` + ``database_tuning_record.json``), one batch of trials at a time.
* :func:`emit_source` -- the kernel source of the best tuned schedule (CUDA C for CUDA, assembly
  for llvm), or of a fixed default int8 schedule when nothing was tuned yet (CUDA: dp4a,
  x86: VNNI), compiled for real (CUDA with ``nvcc``, no GPU needed).
* :func:`apply_database` -- compile a module with the database applied, reporting which kernels
  came from the database and which fell back to default schedules.

Databases
---------
A database is tied to the target it was tuned on: ``harness_target.json`` beside the database
files records it (kind plus ``arch`` / ``mcpu``), and every function here refuses a database
made for another target with :class:`DatabaseTargetError`.

MetaSchedule's ``JSONDatabase`` aborts on the first unreadable line (``RuntimeError:
parallel_for_dynamic error with Cannot tokenize ...``), losing the whole database.  Before
opening one we therefore check every line ourselves (:func:`sanitize_database`); bad lines are
moved to ``<file>.corrupt`` with a :class:`DatabaseWarning` and the rest is kept.

Resuming
--------
MetaSchedule appends to an existing database and seeds its search with the best records, but
(as its own source says: "TODO: add records from the database to avoid re-measuring") it may
measure again a schedule the database already holds, and its cost model starts untrained.
:func:`tune_conv` wraps the search strategy so that schedules already in the database are never
sent for measurement again, and trains the cost model on the stored records first.  With
``resume=True`` (default) ``trials`` is the total wanted for this conv in ``work_dir``: a run
that was interrupted is finished by running the same command again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from ..errors import HarnessError
from .rules import (
    int8_intrinsics_for,
    load_tensor_intrinsics,
    normalize_target,
    register_cpu_int8_intrinsics,
    space_for,
    target_summary,
    trace_uses_intrinsic,
)
from .workloads import ConvShape, ConvWorkload, conv_workload

__all__ = [
    "TuneResult",
    "ApplyReport",
    "DatabaseTargetError",
    "DatabaseWarning",
    "tune_conv",
    "tuning_result",
    "emit_source",
    "apply_database",
    "open_database",
    "sanitize_database",
    "check_database_target",
    "target_key",
    "default_schedule",
    "workload_records",
    "canonical_module",
    "module_uses_intrinsic",
    "CannedRunner",
    "WORKLOAD_FILE",
    "RECORD_FILE",
    "TARGET_FILE",
]

logger = logging.getLogger(__name__)

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
TARGET_FILE = "harness_target.json"

# MetaSchedule stores 1e10 s as the latency of a candidate that failed to build or run.
_FAILED_SECS = 1e9

# Markers of the int8 intrinsics' implementations in a scheduled TIR module.
_INTRIN_MARKERS = {
    "vpdpbusd": "vnni",
    "pmaddubs": "avx512",
    "x86.avx2.pmadd.wd": "pmaddwd",
    "x86.avx512.pmaddw.d": "pmaddwd",
    "__dp4a": "dp4a",
    "tvm_mma_sync": "wmma",
    "ptx_mma": "mma",
}


class DatabaseTargetError(HarnessError, ValueError):
    """A tuning database made for one target was used for another."""


class DatabaseWarning(UserWarning):
    """Something in a tuning database was skipped (the rest was kept)."""


# ------------------------------------------------------------------------------------ results
@dataclass
class TuneResult:
    """Outcome of :func:`tune_conv` (all numbers cover every record of this conv in work_dir)."""

    shape: ConvShape
    dtype: str
    target: dict
    work_dir: str
    task_name: str
    layout: str
    trials: int  # records of this conv in the database (measured now or before)
    new_trials: int  # measured by this call
    valid_trials: int  # records with a latency (built and ran)
    best_latency_ms: float | None
    gops: float | None
    uses_intrinsic: bool
    intrinsic: str | None
    skipped_duplicates: int = 0  # candidates not measured again because the database had them

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["shape"] = str(self.shape)
        return out

    def summary(self) -> str:
        lat = f"{self.best_latency_ms:.4f} ms" if self.best_latency_ms else "no valid trial"
        gops = f"{self.gops:.1f} GOPS" if self.gops else "-"
        intr = self.intrinsic if self.uses_intrinsic else "no int8 intrinsic"
        return (
            f"conv {self.shape} {self.dtype} on {target_key(self.target)}: best {lat}, {gops}, "
            f"{self.trials} trials ({self.new_trials} new), {intr}"
        )


@dataclass
class ApplyReport:
    """Which kernels of a module came from the database (see :func:`apply_database`)."""

    from_database: list[str] = field(default_factory=list)
    fallback: list[str] = field(default_factory=list)

    @property
    def num_from_database(self) -> int:
        return len(self.from_database)

    @property
    def num_fallback(self) -> int:
        return len(self.fallback)

    def __str__(self) -> str:
        return (
            f"{self.num_from_database} kernel(s) from the tuning database, "
            f"{self.num_fallback} with default schedules"
        )


# ----------------------------------------------------------------------------- target handling
def target_key(target: Any) -> str:
    """Directory-friendly name of a target, e.g. ``llvm-znver5`` or ``cuda-sm_90``.

    Accepts anything :func:`target_summary` does, or such a summary itself.
    """
    identity = ("kind", "arch", "mcpu", "mtriple")
    if isinstance(target, dict) and target.get("kind") and all(k in identity for k in target):
        summary = target
    else:
        summary = target_summary(target)
    return "-".join([str(summary["kind"])] + [str(summary[k]) for k in ("arch", "mcpu") if summary.get(k)])


def _summary_for_compare(summary: dict) -> dict:
    """Target identity used to accept / refuse a database (``sm_90a`` counts as ``sm_90``)."""
    out = {k: str(v) for k, v in summary.items() if k in ("kind", "arch", "mcpu", "mtriple")}
    if out.get("arch", "").endswith("a"):
        out["arch"] = out["arch"][:-1]
    return out


def _describe(summary: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in summary.items())


def _first_record_target(work_dir: str) -> dict | None:
    """Target of the first readable record of the database (databases without our metadata)."""
    path = os.path.join(work_dir, RECORD_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
                tgt = entry[1][2]
            except (ValueError, IndexError, TypeError, KeyError):
                continue
            if isinstance(tgt, dict) and tgt.get("kind"):
                try:
                    return target_summary(tgt)
                except Exception:  # pylint: disable=broad-except
                    continue
    return None


def check_database_target(work_dir: str, target: Any, *, write: bool = False) -> dict:
    """Refuse a database in ``work_dir`` made for a target other than ``target``.

    The database's target comes from ``harness_target.json`` or, for databases written by
    plain MetaSchedule, from its first record.  With ``write=True`` the metadata file is created
    when missing.  Returns the target summary.
    """
    summary = target_summary(target)
    meta_path = os.path.join(work_dir, TARGET_FILE)
    stored: dict | None = None
    origin = meta_path
    if os.path.exists(meta_path):
        try:
            with open(meta_path, encoding="utf-8") as fh:
                stored = dict(json.load(fh)["target"])
        except (ValueError, KeyError, TypeError) as err:
            warnings.warn(
                f"{meta_path} is unreadable ({err}); using the database records' target instead",
                DatabaseWarning,
                stacklevel=2,
            )
            stored = None
    if stored is None:
        stored = _first_record_target(work_dir)
        origin = os.path.join(work_dir, RECORD_FILE)
    if stored is not None and _summary_for_compare(stored) != _summary_for_compare(summary):
        raise DatabaseTargetError(
            f"tuning database {work_dir} was made for target [{_describe(stored)}] "
            f"(see {os.path.basename(origin)}), not for [{_describe(summary)}]: "
            f"use a separate work_dir per target, e.g. tuning_logs/{target_key(summary)}/..."
        )
    if write and not os.path.exists(meta_path):
        import tvm  # pylint: disable=import-outside-toplevel

        os.makedirs(work_dir, exist_ok=True)
        meta = {
            "target": stored or summary,
            "target_config": json.loads(str(normalize_target(target))),
            "tvm_version": getattr(tvm, "__version__", "unknown"),
            "written_by": "harness.tune",
        }
        _atomic_write(meta_path, json.dumps(meta, indent=2, default=str) + "\n")
    return summary


# ------------------------------------------------------------------------ database hygiene
def _atomic_write(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_raw_lines(path: str) -> tuple[list[str], bool]:
    """Lines of a file (without newlines) and whether the file is missing its final newline."""
    if not os.path.exists(path):
        return [], False
    with open(path, "rb") as fh:
        data = fh.read()
    text = data.decode("utf-8", errors="replace")
    return text.splitlines(), bool(text) and not text.endswith("\n")


def sanitize_database(work_dir: str) -> list[str]:
    """Check every line of the MetaSchedule database in ``work_dir``; move bad ones aside.

    A line is bad when it is not JSON, does not have the shape MetaSchedule writes, refers to a
    missing workload, or cannot be turned back into a workload / tuning record.  Bad lines are
    appended to ``<file>.corrupt`` (so nothing is lost), the database files are rewritten
    without them (records are renumbered when a workload line was dropped), and a
    :class:`DatabaseWarning` names each one.  Returns the warning messages.
    """
    from tvm.s_tir.meta_schedule.database import TuningRecord, Workload  # pylint: disable=import-outside-toplevel

    wl_path = os.path.join(work_dir, WORKLOAD_FILE)
    rec_path = os.path.join(work_dir, RECORD_FILE)
    wl_lines, wl_no_eol = _read_raw_lines(wl_path)
    rec_lines, rec_no_eol = _read_raw_lines(rec_path)
    if not wl_lines and not rec_lines:
        return []
    load_tensor_intrinsics()
    register_cpu_int8_intrinsics()  # records of x86 int8 kernels name our intrinsics: they must be registered
    from .amx import register_named  # pylint: disable=import-outside-toplevel

    register_named("".join(rec_lines))  # (issue 14) and the AMX tile plans the records use
    messages: list[str] = []
    bad: dict[str, list[dict]] = {wl_path: [], rec_path: []}

    def _reject(path: str, lineno: int, text: str, reason: str) -> None:
        reason = " ".join(str(reason).split())[:200]
        bad[path].append({"line": lineno, "reason": reason, "text": text})
        messages.append(
            f"tuning database {path}: line {lineno} is corrupt ({reason}); skipped it, "
            f"saved to {os.path.basename(path)}.corrupt"
        )

    kept_wl: list[str] = []
    workloads: list[Any] = []
    new_index: dict[int, int] = {}
    for i, line in enumerate(wl_lines):
        if not line.strip():
            continue
        try:
            workload = Workload.from_json(json.loads(line))
        except Exception as err:  # pylint: disable=broad-except
            _reject(wl_path, i + 1, line, err)
            continue
        new_index[i] = len(kept_wl)
        kept_wl.append(line)
        workloads.append(workload)

    kept_rec: list[str] = []
    renumbered = False
    for i, line in enumerate(rec_lines):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], int)):
                raise ValueError("expected [workload_index, record]")
            if entry[0] not in new_index:
                raise ValueError(f"refers to workload {entry[0]}, which is missing or corrupt")
            index = new_index[entry[0]]
            TuningRecord.from_json(entry[1], workloads[index])
        except Exception as err:  # pylint: disable=broad-except
            _reject(rec_path, i + 1, line, err)
            continue
        if index != entry[0]:
            line = json.dumps([index, entry[1]], separators=(",", ":"))
            renumbered = True
        kept_rec.append(line)

    changed = bool(bad[wl_path] or bad[rec_path] or renumbered or wl_no_eol or rec_no_eol)
    changed = changed or len(kept_wl) != len(wl_lines) or len(kept_rec) != len(rec_lines)
    if changed:
        for path, entries in bad.items():
            if entries:
                with open(path + ".corrupt", "a", encoding="utf-8") as fh:
                    for entry in entries:
                        fh.write(json.dumps(entry) + "\n")
        if os.path.exists(wl_path) or kept_wl:
            _atomic_write(wl_path, "".join(x + "\n" for x in kept_wl))
        if os.path.exists(rec_path) or kept_rec:
            _atomic_write(rec_path, "".join(x + "\n" for x in kept_rec))
    for msg in messages:
        warnings.warn(msg, DatabaseWarning, stacklevel=3)
        logger.warning(msg)
    if messages:
        logger.warning("tuning database %s: kept %d record(s)", work_dir, len(kept_rec))
    return messages


def open_database(work_dir: str, target: Any, *, create: bool = False):
    """Open the ``JSONDatabase`` in ``work_dir`` for ``target`` (checked, sanitized).

    ``create=True`` creates the directory, the target metadata and empty database files.
    Raises :class:`DatabaseTargetError` for a database of another target and
    :class:`FileNotFoundError` when there is no database and ``create`` is False.
    """
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

    load_tensor_intrinsics()
    register_cpu_int8_intrinsics()
    has_db = os.path.exists(os.path.join(work_dir, WORKLOAD_FILE))
    if not has_db and not create:
        raise FileNotFoundError(f"no tuning database in {work_dir} (expected {WORKLOAD_FILE})")
    if create:
        os.makedirs(work_dir, exist_ok=True)
    check_database_target(work_dir, target, write=create)
    sanitize_database(work_dir)
    return ms.database.JSONDatabase(work_dir=work_dir, allow_missing=create, module_equality="structural")


# ---------------------------------------------------------------------- workload identity
_VOLATILE_ATTRS = ("global_symbol", "op_pattern", "tir.is_scheduled")


def canonical_module(func):
    """The IRModule under which a conv ``PrimFunc`` is stored in / looked up from a database.

    Attributes that only name or classify the function (its symbol, Relax's ``op_pattern``)
    are dropped, so a tuned conv is found again whatever the function is called in the module
    being built.  The function is then normalized the way MetaSchedule does for tuning.
    """
    import tvm  # pylint: disable=import-outside-toplevel
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod  # pylint: disable=import-outside-toplevel

    if isinstance(func, tvm.IRModule):
        funcs = [f for _, f in func.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
        if len(funcs) != 1:
            raise ValueError("canonical_module expects a module with exactly one PrimFunc")
        func = funcs[0]
    for key in _VOLATILE_ATTRS:
        if func.attrs is not None and key in func.attrs:
            func = func.without_attr(key)
    return _normalize_mod(func)


def workload_records(database, mod) -> list:
    """All tuning records of workload ``mod`` (failed ones included), without adding it."""
    import tvm_ffi  # pylint: disable=import-outside-toplevel

    if not database.has_workload(mod):
        return []
    token = database.commit_workload(mod)  # existing: returns the stored workload
    out = []
    for rec in database.get_all_tuning_records():
        same = rec.workload.same_as(token) or tvm_ffi.structural_equal(rec.workload.mod, mod)
        if same:
            out.append(rec)
    return out


def _mean_secs(rec) -> float | None:
    secs = [float(x) for x in (rec.run_secs or [])]
    if not secs:
        return None
    mean = sum(secs) / len(secs)
    if not math.isfinite(mean) or mean >= _FAILED_SECS or mean <= 0:
        return None
    return mean


def module_uses_intrinsic(mod) -> str | None:
    """Which int8 intrinsic implementation a scheduled module contains (None: none)."""
    text = mod.script() if hasattr(mod, "script") else str(mod)
    for marker, name in _INTRIN_MARKERS.items():
        if marker in text:
            return name
    return None


def _record_intrinsic(rec) -> str | None:
    """Intrinsic actually used by the schedule of a record (checked on the scheduled module)."""
    try:
        sch = _schedule_from_record(rec)
    except Exception:  # pylint: disable=broad-except
        return None
    used = module_uses_intrinsic(sch.mod)
    if used is None:
        return None
    return trace_uses_intrinsic(rec.trace) or used


def _schedule_from_record(rec):
    from tvm import s_tir  # pylint: disable=import-outside-toplevel

    sch = s_tir.Schedule(rec.workload.mod)
    rec.trace.apply_to_schedule(sch, remove_postproc=False)
    return sch


# ------------------------------------------------------------------------- search strategy
_DEDUP_CLASS = None


def _dedup_search_class():
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
        def __init__(self, inner, max_empty_rounds: int = 4, warm_start: bool = True) -> None:
            super().__init__()
            self.inner = inner
            self.max_empty_rounds = max_empty_rounds
            self.warm_start = warm_start
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
                secs = _mean_secs(rec)
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
                if fresh:
                    return fresh
            logger.info("search space exhausted around the stored records; stopping")
            return None

        def notify_runner_results(self, measure_candidates, results) -> None:
            self.inner.notify_runner_results(measure_candidates, results)

        def clone(self):
            return _DedupSearch(self.inner.clone(), self.max_empty_rounds, self.warm_start)

    _DEDUP_CLASS = _DedupSearch
    return _DedupSearch


_PROGRESS_CLASS = None


def _progress_callback(report: Callable[[int, int, float | None], None], total: int):
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
                    if mean_ms < _FAILED_SECS and (self.best is None or mean_ms < self.best):
                        self.best = mean_ms
                self.fn(self.done, self.total, self.best)

        _PROGRESS_CLASS = _Progress
    return _PROGRESS_CLASS(report, total)


def _tqdm_reporter(total: int, desc: str):
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


# -------------------------------------------------------------------------------- runners
_CANNED_CLASS = None


def CannedRunner(latency_fn: Callable[[Any], float] | None = None):  # pylint: disable=invalid-name
    """A MetaSchedule runner that measures nothing and returns made-up latencies.

    ``latency_fn(runner_input) -> seconds`` defaults to a deterministic value derived from the
    built artifact's path.  Useful for exercising the whole tuning loop (including CUDA on a
    machine without a GPU) in tests.  The returned object has ``calls`` (inputs seen).
    """
    global _CANNED_CLASS  # pylint: disable=global-statement
    if _CANNED_CLASS is None:
        import zlib  # pylint: disable=import-outside-toplevel

        from tvm.ir.utils import derived_object  # pylint: disable=import-outside-toplevel
        from tvm.s_tir.meta_schedule.runner import PyRunner, RunnerFuture, RunnerResult  # pylint: disable=import-outside-toplevel

        def _default_latency(runner_input) -> float:
            digest = zlib.crc32(str(runner_input.artifact_path).encode())
            return 1e-4 * (1.0 + (digest % 1000) / 1000.0)

        @derived_object
        class _Canned(PyRunner):
            def __init__(self, fn=None) -> None:
                super().__init__()
                self.fn = fn or _default_latency
                self.calls = 0

            def run(self, runner_inputs):
                futures = []
                for runner_input in runner_inputs:
                    self.calls += 1
                    result = RunnerResult([float(self.fn(runner_input))], None)
                    futures.append(RunnerFuture(lambda: True, lambda r=result: r))
                return futures

        _CANNED_CLASS = _Canned
    return _CANNED_CLASS(latency_fn)


def _has_cuda_device() -> bool:
    import tvm  # pylint: disable=import-outside-toplevel

    try:
        return bool(tvm.cuda(0).exist)
    except Exception:  # pylint: disable=broad-except
        return False


def _make_runner(runner: Any, target, *, timeout_sec: float, number: int, repeat: int, min_repeat_ms: int):
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

    if runner is None or runner == "local":
        if target.kind.name == "cuda" and not _has_cuda_device():
            raise HarnessError(
                "tuning for CUDA needs a GPU to time the kernels, and none is visible here: run on "
                "a GPU machine, pass an RPC runner, or use emit_source() to only compile"
            )
        config = ms.runner.EvaluatorConfig(
            number=number, repeat=repeat, min_repeat_ms=min_repeat_ms, enable_cpu_cache_flush=False
        )
        from . import amx  # pylint: disable=import-outside-toplevel

        # (issue 14) AMX kernels measured in the runner's processes need their own tile state
        init = amx.worker_permission if amx.applies_to(target) and amx.host_has_amx() else None
        return ms.runner.LocalRunner(timeout_sec=timeout_sec, evaluator_config=config, initializer=init)
    if isinstance(runner, str):
        raise ValueError(f"unknown runner {runner!r}; valid: 'local' or a MetaSchedule Runner object")
    return runner


# --------------------------------------------------------------------------------- tuning
def tune_conv(
    shape: ConvShape | str,
    *,
    dtype: str = "int8",
    target: Any = None,
    trials: int = 64,
    work_dir: str,
    runner: Any = "local",
    builder: Any = "local",
    progress: Callable[[int, int, float | None], None] | bool | None = None,
    resume: bool = True,
    trials_per_iter: int = 16,
    seed: int | None = None,
    num_threads: int = 1,
    builder_workers: int = 1,
    timeout_sec: float = 60.0,
    number: int = 3,
    repeat: int = 1,
    min_repeat_ms: int = 50,
    population_size: int | None = None,
    tensor_cores: bool | None = None,
    data_dtype: str | None = None,
    cost_model_warmup: int | None = None,
) -> TuneResult:
    """Tune one conv2d with MetaSchedule and return the best kernel found so far.

    Parameters
    ----------
    shape : :class:`ConvShape` or ``"N,C,H,W,K,R,S,stride,pad[,dilation,groups]"``.
    dtype : ``"int8"`` (intrinsic rules, packed layout) or ``"float32"`` (default rules, NCHW).
    target : target dict / Target; default: this machine's CPU (``llvm``, host ``mcpu``).
    trials : with ``resume=True`` the number of measured schedules wanted for this conv in
        ``work_dir`` (records already there count; 0 new trials when they suffice); with
        ``resume=False`` the number of new trials to measure.  On llvm the conv's default
        schedule (:func:`cpu_default_schedule`) is measured first, once, and counts as one.
    work_dir : database directory (created).  Records are appended after every batch of
        ``trials_per_iter`` trials, so an interruption loses at most one batch.
    runner : ``"local"`` (time on this machine) or any MetaSchedule ``Runner`` (e.g. an RPC
        runner, or :func:`CannedRunner` for tests).
    builder : ``"local"`` or a MetaSchedule ``Builder``.
    progress : a callable ``(done, total, best_ms)``, True for a tqdm bar, or None.
    seed : random seed of the search (None: random).
    num_threads : threads of the search / cost model; builder_workers: parallel builds.
    population_size : evolutionary-search population (default: MetaSchedule's 512).
    tensor_cores : CUDA only, see :func:`harness.tune.rules.int8_space`.
    data_dtype : int8 activations type override (``"int8"`` / ``"uint8"``).
    cost_model_warmup : measured samples before the XGBoost model ranks candidates (until then
        it predicts randomly); default MetaSchedule's 100, which is a whole short run.
    """
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

    if isinstance(shape, str):
        shape = ConvShape.parse(shape)
    if not isinstance(trials, int) or trials < 0:
        raise ValueError(f"trials must be a non-negative integer, got {trials!r}")
    if target is None:
        target = _host_target()
    tgt = normalize_target(target)
    workload = conv_workload(shape, dtype=dtype, target=tgt, data_dtype=data_dtype)
    mod = canonical_module(workload.func)
    database = open_database(work_dir, tgt, create=True)
    before = len(workload_records(database, mod))
    todo = max(0, trials - before) if resume else trials

    skipped = seeded = 0
    if trials > 0:  # also on a full database made before the default schedule was measured in it
        if builder == "local":
            builder = ms.builder.LocalBuilder(
                max_workers=int(builder_workers), timeout_sec=timeout_sec, f_build=build_candidate
            )
        run = _make_runner(
            runner, tgt, timeout_sec=timeout_sec, number=number, repeat=repeat, min_repeat_ms=min_repeat_ms
        )
        seeded = _seed_default_schedule(workload, tgt, mod, database, builder, run)
        todo = max(0, todo - seeded)
    if todo > 0:
        space_opts = {"tensor_cores": tensor_cores} if dtype == "int8" else {}
        space = space_for(dtype, tgt, workload.data_dtype, **space_opts)
        strategy_opts = {}
        if population_size is not None:
            strategy_opts["population_size"] = int(population_size)
            strategy_opts["init_min_unmeasured"] = max(1, min(50, int(population_size) // 2))
        inner = ms.search_strategy.EvolutionarySearch(**strategy_opts)
        strategy = _dedup_search_class()(inner)
        context = ms.TuneContext(
            mod=mod,
            target=tgt,
            space_generator=space.space_generator(),
            search_strategy=strategy,
            task_name=workload.name,
            rand_state=-1 if seed is None else int(seed),
            num_threads=int(num_threads),
        )
        xgb_opts = {} if cost_model_warmup is None else {"num_warmup_samples": int(cost_model_warmup)}
        callbacks = list(ms.MeasureCallback.create("default"))
        bar = None
        if progress is True:
            progress, bar = _tqdm_reporter(todo + seeded, f"tune {workload.name}")
        if callable(progress):  # the seeded default schedule counts as the first trial
            callbacks.append(_progress_callback(
                lambda done, _total, best, fn=progress: fn(done + seeded, todo + seeded, best), todo))
        try:
            ms.tune_tasks(
                tasks=[context],
                task_weights=[1.0],
                work_dir=work_dir,
                max_trials_global=todo,
                max_trials_per_task=todo,
                num_trials_per_iter=max(1, min(int(trials_per_iter), todo)),
                builder=builder,
                runner=run,
                database=database,
                cost_model=ms.cost_model.XGBModel(num_tuning_cores=int(num_threads), **xgb_opts),
                measure_callbacks=callbacks,
                task_scheduler="round-robin",
            )
        finally:
            if bar is not None:
                bar.close()
        skipped = int(getattr(strategy, "skipped", 0))

    records = workload_records(database, mod)
    return _summarize(workload, tgt, work_dir, records, len(records) - before, skipped)


def _summarize(workload: ConvWorkload, tgt, work_dir: str, records: list, new: int, skipped: int) -> TuneResult:
    valid = [(s, r) for r in records if (s := _mean_secs(r)) is not None]
    best_ms = gops = None
    intrinsic = None
    if valid:
        secs, best = min(valid, key=lambda x: x[0])
        best_ms = secs * 1e3
        gops = workload.shape.gops(best_ms)
        intrinsic = _record_intrinsic(best)
    return TuneResult(
        shape=workload.shape,
        dtype=workload.dtype,
        target=target_summary(tgt),
        work_dir=os.path.abspath(work_dir),
        task_name=workload.name,
        layout=workload.layout,
        trials=len(records),
        new_trials=max(0, new),
        valid_trials=len(valid),
        best_latency_ms=best_ms,
        gops=gops,
        uses_intrinsic=intrinsic is not None,
        intrinsic=intrinsic,
        skipped_duplicates=skipped,
    )


def tuning_result(shape: ConvShape | str, *, dtype: str = "int8", target: Any, work_dir: str) -> TuneResult:
    """The :class:`TuneResult` of what ``work_dir`` already holds for this conv (no tuning)."""
    if isinstance(shape, str):
        shape = ConvShape.parse(shape)
    tgt = normalize_target(target)
    workload = conv_workload(shape, dtype=dtype, target=tgt)
    database = open_database(work_dir, tgt)
    records = workload_records(database, canonical_module(workload.func))
    return _summarize(workload, tgt, work_dir, records, 0, 0)


def _host_target() -> dict:
    from ..targets import llvm_target  # pylint: disable=import-outside-toplevel

    return llvm_target()


# ----------------------------------------------------------------------- default schedules
def _largest_divisor(n: int, limit: int) -> int:
    for d in range(min(n, limit), 0, -1):
        if n % d == 0:
            return d
    return 1


def _cuda_dp4a_schedule(workload: ConvWorkload, target):
    """Fixed dp4a schedule of the packed int8 conv (the role of 2019's default dp4a config).

    A thread block computes a tile of output rows x columns for a group of output-channel
    blocks: ``threadIdx.x`` runs over the pixels of the tile, ``threadIdx.y`` over channel
    blocks, and each thread accumulates its 4 output channels in registers.  For every step of
    the input-channel loop the block copies its (padded) input window and the weights into
    shared memory; the innermost 4 input channels are one ``__dp4a``.
    """
    from tvm import s_tir  # pylint: disable=import-outside-toplevel

    del target
    s = workload.shape
    intrin = "dp4a_u8s8s32" if workload.data_dtype == "uint8" else "dp4a_s8s8s32"
    sch = s_tir.Schedule(workload.func)
    conv = sch.get_sblock("conv2d_NCHWc_int8")
    n, kb, y, x, ko, icb, kh, kw, ici = sch.get_loops(conv)
    k_blocks = workload.k_pad // workload.out_block
    c_blocks = workload.c_pad // s.groups // 4
    ty_ext = _largest_divisor(k_blocks, 8)
    x_in = _largest_divisor(s.out_w, 32)
    y_in = _largest_divisor(s.out_h, max(1, 64 // x_in))
    icb_in = _largest_divisor(c_blocks, 4)

    kb_o, kb_i = sch.split(kb, [None, ty_ext])
    y_o, y_i = sch.split(y, [None, y_in])
    x_o, x_i = sch.split(x, [None, x_in])
    icb_o, icb_i = sch.split(icb, [None, icb_in])
    sch.reorder(kb_o, n, y_o, x_o, kb_i, y_i, x_i, icb_o, icb_i, kh, kw, ko, ici)
    block_x = sch.fuse(n, y_o, x_o)
    thread_x = sch.fuse(y_i, x_i)
    sch.bind(kb_o, "blockIdx.y")
    sch.bind(block_x, "blockIdx.x")
    sch.bind(kb_i, "threadIdx.y")
    sch.bind(thread_x, "threadIdx.x")
    threads_x = y_in * x_in

    acc = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(acc, thread_x)
    for idx in (0, 1):  # stage data (padding inlined into the copy) and weights in shared memory
        stage = sch.cache_read(conv, idx, "shared")
        sch.compute_at(stage, icb_o)
        fused = sch.fuse(*sch.get_loops(stage)[5:])
        _, f_ty, f_tx = sch.split(fused, [None, ty_ext, threads_x])
        sch.bind(f_ty, "threadIdx.y")
        sch.bind(f_tx, "threadIdx.x")
    if s.pad:
        sch.compute_inline(sch.get_sblock("data_pad"))
    sch.decompose_reduction(conv, icb_o)
    sch.tensorize(ici, intrin)
    sch.unroll(ko)
    return sch


def _seed_default_schedule(workload: ConvWorkload, tgt, mod, database, builder, runner) -> int:
    """On llvm, measure the conv's default schedule (the fixed dot-product one for packed int8,
    :mod:`harness.tune.cpu_default`'s otherwise) like a trial and keep it in the database, as
    ``harness tune`` does for whole models: the best record is never slower than the default.
    Returns 1 when it was measured now, else 0 (no default, or already in the database)."""
    from . import cpu_default  # pylint: disable=import-outside-toplevel
    from .model import seed_default_schedules  # pylint: disable=import-outside-toplevel

    if not cpu_default.applies_to(tgt):
        return 0
    return seed_default_schedules([(mod, workload.name)], tgt, database, builder, runner,
                                  [cpu_default_schedule(workload, tgt, mod)])


def cpu_default_schedule(workload: ConvWorkload, tgt, mod=None):
    """The default llvm schedule of ``workload`` as a Schedule of ``mod`` (default: its
    :func:`canonical_module`), or None: the fixed dot-product one for packed int8 where the
    CPU has an exact 8-bit dot product, :mod:`harness.tune.cpu_default`'s otherwise."""
    from . import cpu_default  # pylint: disable=import-outside-toplevel

    mod = canonical_module(workload.func) if mod is None else mod
    if workload.dtype == "int8" and workload.packed:
        names = int8_intrinsics_for(tgt, workload.data_dtype)
        return _x86_dot_schedule(workload, tgt, names[0], func=mod["main"]) if names else None
    return cpu_default.default_schedule(mod, tgt, workload.name)


def _x86_dot_schedule(workload: ConvWorkload, target, intrin: str, func=None):
    """Fixed x86 schedule of the packed int8 conv: one dot-product instruction (``vpdpbusd`` or
    ``vpmaddwd``) per ``ob`` output channels x ``ib`` input channels, ``x_in`` pixels unrolled."""
    from tvm import s_tir  # pylint: disable=import-outside-toplevel

    sch = s_tir.Schedule(workload.func if func is None else func)
    conv = sch.get_sblock("conv2d_NCHWc_int8")
    n, kb, y, x, ko, icb, kh, kw, ici = sch.get_loops(conv)
    x_in = _largest_divisor(workload.shape.out_w, 8)
    x_o, x_i = sch.split(x, [None, x_in])
    sch.reorder(n, kb, y, x_o, icb, kh, kw, x_i, ko, ici)
    outer = sch.fuse(n, kb, y)
    sch.parallel(outer)
    init = sch.decompose_reduction(conv, icb)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(ko, intrin)
    sch.unroll(x_i)
    if workload.shape.pad:
        pad = sch.get_sblock("data_pad")
        sch.parallel(sch.fuse(*sch.get_loops(pad)[:3]))
    return sch


def default_schedule(workload: ConvWorkload, target: Any):
    """The schedule used when nothing was tuned: a scheduled ``IRModule`` ``{name: func}``.

    int8 packed on CUDA: the fixed dp4a schedule; anything else on CUDA: TVM's dlight fallback
    GPU schedule; on llvm :func:`cpu_default_schedule` (the fixed dot-product schedule for packed
    int8, the harness's default CPU schedule otherwise; what ``tune-conv`` measures as its first
    trial), unscheduled where it has none.
    """
    import tvm  # pylint: disable=import-outside-toplevel

    tgt = normalize_target(target)
    kind = tgt.kind.name
    mod = tvm.IRModule({workload.name: workload.func})
    if workload.dtype == "int8" and workload.packed:
        load_tensor_intrinsics()
        if kind == "cuda":
            return tvm.IRModule({workload.name: _cuda_dp4a_schedule(workload, tgt).mod["main"]})
    if kind == "cuda":
        return _dlight_fallback(mod, tgt)
    if kind == "llvm":
        sch = cpu_default_schedule(workload, tgt, tvm.IRModule({"main": workload.func}))
        if sch is not None:
            return tvm.IRModule({workload.name: sch.mod["main"]})
    return mod


def _dlight_fallback(mod, tgt):
    from tvm.s_tir import dlight as dl  # pylint: disable=import-outside-toplevel

    with tgt:
        return dl.ApplyDefaultSchedule(dl.gpu.Fallback())(mod)


@contextlib.contextmanager
def _nvcc_mode():
    """Make TVM compile CUDA with ``nvcc`` (its default is NVRTC) inside the block."""
    old = os.environ.get("TVM_CUDA_COMPILE_MODE")
    os.environ["TVM_CUDA_COMPILE_MODE"] = "nvcc"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TVM_CUDA_COMPILE_MODE", None)
        else:
            os.environ["TVM_CUDA_COMPILE_MODE"] = old


def _pass_config_for(mod) -> dict:
    """Extra PassContext options a scheduled module needs to compile on TVM 0.27.

    int8 wmma kernels stage the int8 operands and the int32 results in shared memory; TVM
    0.27's storage rewrite then lets the int32 buffer reuse an int8 one and the build dies with
    "tvm_access_ptr element type must match the source buffer".  Turning storage rewrite off
    for those kernels (only) avoids it.
    """
    text = mod.script() if hasattr(mod, "script") else ""
    if "wmma." in text:
        return {"tirx.disable_storage_rewrite": True}
    return {}


def build_candidate(mod, target, _params=None):
    """MetaSchedule build function used by :func:`tune_conv` (runs in builder workers).

    Same as MetaSchedule's default build, plus the workaround of :func:`_pass_config_for`.
    """
    import tvm  # pylint: disable=import-outside-toplevel
    from tvm.driver import build as tvm_build  # pylint: disable=import-outside-toplevel
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock  # pylint: disable=import-outside-toplevel

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    config = _pass_config_for(mod)
    if config:
        with tvm.transform.PassContext(opt_level=3, config=config):
            return tvm_build(mod, target=target)
    return tvm_build(mod, target=target)


def _compile(mod, tgt):
    import tvm  # pylint: disable=import-outside-toplevel

    config = _pass_config_for(mod)
    with tvm.transform.PassContext(opt_level=3, config=config):
        if tgt.kind.name == "cuda":
            with _nvcc_mode():
                return tvm.compile(mod, target=tgt)
        return tvm.compile(mod, target=tgt)


def _best_schedule_module(workload: ConvWorkload, tgt, work_dir: str | None):
    """Scheduled module of the best database record for ``workload``, or None."""
    if not work_dir or not os.path.exists(os.path.join(work_dir, WORKLOAD_FILE)):
        return None
    database = open_database(work_dir, tgt)
    mod = canonical_module(workload.func)
    sch = database.query_schedule(mod, tgt, workload_name="main")
    return None if sch is None else sch.mod


def emit_source(
    shape: ConvShape | str,
    *,
    dtype: str = "int8",
    target: Any,
    work_dir: str | None = None,
    fmt: str | None = None,
) -> str:
    """Source of the compiled conv kernel: best tuned schedule, else the default schedule.

    The kernel is really compiled: CUDA with ``nvcc`` (works without a GPU), llvm to machine
    code.  ``fmt``: for CUDA ``"cu"`` (default, CUDA C) or ``"ptx"``; for llvm ``"asm"``
    (default) or ``"ll"`` (LLVM IR).
    """
    if isinstance(shape, str):
        shape = ConvShape.parse(shape)
    tgt = normalize_target(target)
    workload = conv_workload(shape, dtype=dtype, target=tgt)
    mod = _best_schedule_module(workload, tgt, work_dir)
    if mod is None:
        mod = default_schedule(workload, tgt)
    executable = _compile(mod, tgt)
    rt_mod = executable.mod
    if tgt.kind.name == "cuda":
        cuda_mods = [m for m in rt_mod.imports if m.kind == "cuda"]
        if not cuda_mods:
            raise RuntimeError("compiled module has no CUDA kernel")
        source = cuda_mods[0].inspect_source()
        if fmt in (None, "cu", "cuda"):
            return source
        if fmt == "ptx":
            from tvm.support import nvcc  # pylint: disable=import-outside-toplevel

            with tgt:
                ptx = nvcc.compile_cuda(
                    source, target_format="ptx", arch=str(tgt.attrs["arch"]), compiler="nvcc"
                )
            return bytes(ptx).decode("utf-8", errors="replace")
        raise ValueError(f"fmt {fmt!r} is not valid for CUDA; valid: cu, ptx")
    if fmt in (None, "asm", "s"):
        return rt_mod.inspect_source("asm")
    if fmt in ("ll", "llvm"):
        return rt_mod.inspect_source("ll")
    raise ValueError(f"fmt {fmt!r} is not valid for llvm; valid: asm, ll")


# ------------------------------------------------------------------------ applying a database
def apply_database(mod, target: Any, work_dir: str, *, compile: bool = True):  # pylint: disable=redefined-builtin
    """Compile ``mod`` (Relax or TIR IRModule, or a PrimFunc) with the tuning database applied.

    Every ``PrimFunc`` is looked up in the database of ``work_dir`` (under its
    :func:`canonical_module` form); found ones are replaced by their best schedule and marked
    scheduled, the others keep default schedules (on CUDA: TVM's dlight GPU rules).  Returns
    ``(executable, ApplyReport)``; with ``compile=False`` the scheduled IRModule instead of the
    executable.  Raises :class:`DatabaseTargetError` for a database of another target.
    """
    import tvm  # pylint: disable=import-outside-toplevel

    tgt = normalize_target(target)
    if isinstance(mod, tvm.tirx.PrimFunc):
        name = str(mod.attrs["global_symbol"]) if mod.attrs and "global_symbol" in mod.attrs else "main"
        mod = tvm.IRModule({name: mod})
    database = open_database(work_dir, tgt)
    report = ApplyReport()
    updates = {}
    for gvar, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        if func.attrs is not None and "tir.is_scheduled" in func.attrs:
            continue
        sch = database.query_schedule(canonical_module(func), tgt, workload_name="main")
        if sch is None:
            report.fallback.append(gvar.name_hint)
            continue
        new_func = sch.mod["main"]
        # keep the caller's name and attributes, take the tuned body
        for key in ("global_symbol", "op_pattern"):
            if func.attrs is not None and key in func.attrs:
                new_func = new_func.with_attr(key, func.attrs[key])
        updates[gvar] = new_func.with_attr("tir.is_scheduled", True)
        report.from_database.append(gvar.name_hint)
    for gvar, func in updates.items():
        mod[gvar] = func
    is_relax = any(not isinstance(f, tvm.tirx.PrimFunc) for _, f in mod.functions_items())
    if tgt.kind.name == "cuda" and not is_relax and report.fallback:
        mod = _dlight_fallback(mod, tgt)  # Relax builds apply dlight to unscheduled kernels
    logger.info("apply_database(%s): %s", work_dir, report)
    if not compile:
        return mod, report
    return _compile(mod, tgt), report

"""Tuning databases: MetaSchedule ``JSONDatabase`` folders, checked and kept healthy.

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

:func:`load_records` reads the databases a build uses (the model's run key and every
``conv/`` database of the target) into :class:`harness.build.passes.apply_database.TuningRecords`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import warnings
from typing import Any, Iterable

from ..errors import HarnessError, HarnessWarning
from ..schedules.intrinsics import intrinsics_loaded, load_tensor_intrinsics, register_cpu_int8_intrinsics
from ..targets import normalize_target, target_key, target_summary

logger = logging.getLogger("harness")


WORKLOAD_FILE = "database_workload.json"


RECORD_FILE = "database_tuning_record.json"


TARGET_FILE = "harness_target.json"

# MetaSchedule stores 1e10 s as the latency of a candidate that failed to build or run.
FAILED_SECS = 1e9


class DatabaseTargetError(HarnessError, ValueError):
    """A tuning database made for one target was used for another."""


class DatabaseWarning(HarnessWarning):
    """Something in a tuning database was skipped (the rest was kept)."""


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
    """Replace ``path`` by ``text`` whole or not at all, keeping its file mode (a new file gets the
    mode ``open`` would give it)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
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
    register_cpu_int8_intrinsics()  # records of x86 int8 kernels name our intrinsics: they must be registered
    from ..schedules.amx import register_named  # pylint: disable=import-outside-toplevel

    register_named("".join(rec_lines))  # and the AMX tile plans the records use
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
            _record_from_json(TuningRecord, entry[1], workloads[index])
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
    for msg in messages:  # once each: a warning (the CLI prints it as one line)
        warnings.warn(msg, DatabaseWarning, stacklevel=3)
    if messages:
        logger.warning("tuning database %s: kept %d record(s)", work_dir, len(kept_rec))
    return messages


def _record_from_json(record_class, entry, workload):
    """A tuning record from its JSON. Reading one replays its trace, and a trace that tensorizes
    with one of TVM's own intrinsics needs them registered: importing them all
    (``tvm.s_tir.tensor_intrin``) takes 40 s or more, so it is done only when a record needs it,
    not for every database a build reads."""
    try:
        return record_class.from_json(entry, workload)
    except Exception:  # pylint: disable=broad-except
        if intrinsics_loaded():
            raise
        load_tensor_intrinsics()
        return record_class.from_json(entry, workload)


def open_database(work_dir: str, target: Any, *, create: bool = False):
    """Open the ``JSONDatabase`` in ``work_dir`` for ``target`` (checked, sanitized).

    ``create=True`` creates the directory, the target metadata and empty database files.
    Raises :class:`DatabaseTargetError` for a database of another target and
    :class:`FileNotFoundError` when there is no database and ``create`` is False.
    """
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

    register_cpu_int8_intrinsics()
    if normalize_target(target).kind.name == "cuda":  # dp4a / wmma records name TVM's own intrinsics
        load_tensor_intrinsics()
    has_db = os.path.exists(os.path.join(work_dir, WORKLOAD_FILE))
    if not has_db and not create:
        raise FileNotFoundError(f"no tuning database in {work_dir} (expected {WORKLOAD_FILE})")
    if create:
        os.makedirs(work_dir, exist_ok=True)
    check_database_target(work_dir, target, write=create)
    sanitize_database(work_dir)
    return ms.database.JSONDatabase(work_dir=work_dir, allow_missing=create, module_equality="structural")


# ---------------------------------------------------------------------- workload identity
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


def mean_secs(rec) -> float | None:
    secs = [float(x) for x in (rec.run_secs or [])]
    if not secs:
        return None
    mean = sum(secs) / len(secs)
    if not math.isfinite(mean) or mean >= FAILED_SECS or mean <= 0:
        return None
    return mean


def load_records(work_dirs: Iterable[tuple], target: Any):
    """The records of the databases ``[(name, folder), ...]`` that exist, for a build
    (:class:`~harness.build.passes.apply_database.TuningRecords`; a database of another target is
    refused)."""
    from ..build.passes.apply_database import TuningRecords  # pylint: disable=import-outside-toplevel

    records = TuningRecords()
    for name, work_dir in work_dirs:
        if not work_dir or not os.path.exists(os.path.join(work_dir, WORKLOAD_FILE)):
            continue
        database = open_database(work_dir, target)
        records.add(name, database.get_all_tuning_records())
    return records


def conv_databases(logs_root: str, target: Any) -> list:
    """``[(name, folder)]`` of the ``tune-conv`` databases of `target` under `logs_root`
    (``<logs_root>/<target key>/conv/<shape>-<dtype>/``), sorted."""
    root = os.path.join(logs_root, target_key(target), "conv")
    if not os.path.isdir(root):
        return []
    return [(f"conv/{name}", os.path.join(root, name)) for name in sorted(os.listdir(root))
            if os.path.isfile(os.path.join(root, name, WORKLOAD_FILE))]

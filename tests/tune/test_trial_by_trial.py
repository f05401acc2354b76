"""Tuning saves trial by trial: each measured trial is in the database before the next one is
measured (not once per search batch), `trials` is met exactly, a SIGKILL loses only the trial in
flight and the re-run measures nothing twice; a repaired database says each bad line once and
keeps its file mode.

The tuning loops use a canned runner (no timing) on a small conv and the digits CNN.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import types
import warnings

import pytest

from tests.conftest import ROOT

# a 1x1 conv: it has a search space on every CPU (a 3x3 one runs on integer Winograd, which has
# none, on CPUs without VNNI)
SMALL = "1,16,10,10,32,1,1,1,0"


@pytest.fixture(scope="module")
def host():
    from harness.targets import llvm_target

    return llvm_target()


def _lines(path: str) -> list:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return fh.read().splitlines()


def _distinct_modules(work_dir, target, mods) -> tuple:
    """(records, distinct scheduled modules among them) of the workloads `mods` in `work_dir`."""
    import tvm_ffi

    from harness.tune.database import open_database, workload_records

    database = open_database(work_dir, target)
    scheduled = [rec.as_measure_candidate().sch.mod for mod in mods for rec in workload_records(database, mod)]
    distinct = []
    for m in scheduled:
        if not any(tvm_ffi.structural_equal(m, d) for d in distinct):
            distinct.append(m)
    return len(scheduled), len(distinct)


def test_each_trial_is_in_the_database_before_the_next_is_measured(host, tmp_path):
    """One search batch of 5 trials: when each trial is measured, every earlier one is already a
    line of the database (MetaSchedule alone writes the batch once all 5 are in)."""
    from harness.tune import tune_conv
    from harness.tune.database import RECORD_FILE
    from harness.tune.testing import CannedRunner

    work_dir = str(tmp_path / "db")
    rec_path = os.path.join(work_dir, RECORD_FILE)
    seen = []

    def latency(_runner_input):
        seen.append(len(_lines(rec_path)))
        return 1e-4 * (1 + len(seen))

    result = tune_conv(SMALL, target=host, trials=5, work_dir=work_dir, runner=CannedRunner(latency), seed=1)
    # the default schedule, then the 5 search trials of one batch, each saved before the next
    assert seen == [0, 1, 2, 3, 4, 5]
    assert result.trials == result.new_trials == 6
    lines = _lines(rec_path)
    assert len(lines) == 6 and all(json.loads(line) for line in lines)


def test_model_tuning_stops_at_trials_and_saves_each(tmp_path):
    """`harness tune`'s loop over several tasks: exactly `trials` search trials (batches of 4 over
    3 tasks would have overshot 5), each saved as it is measured, nothing measured twice."""
    import tvm

    from harness.build import bind_params
    from harness.config import ModelConfig
    from harness.frontends import load_model
    from harness.targets import llvm_target
    from harness.tune.database import RECORD_FILE
    from harness.tune.search import tunable_tasks, tune_model
    from harness.tune.testing import CannedRunner

    target = tvm.target.Target(llvm_target())
    model = load_model(ModelConfig(name="digits_cnn"))
    mod = bind_params(model.mod, model.params)
    tasks = tunable_tasks(mod, target)
    assert len(tasks) >= 2
    work_dir = str(tmp_path / "db")
    rec_path = os.path.join(work_dir, RECORD_FILE)
    seen = []

    def latency(_runner_input):
        seen.append(len(_lines(rec_path)))
        return 1e-4

    runner = CannedRunner(latency)
    report = tune_model(mod, target, work_dir, trials=5, runner=runner, seed=0, trials_per_iter=4)
    assert report.trials == 5 and report.earlier_trials == 0
    assert runner.calls == report.defaults_measured + 5
    assert seen == list(range(len(seen)))  # the n-th measurement finds n records saved
    assert len(_lines(rec_path)) == report.defaults_measured + 5
    mods = [t.dispatched[0] for t in tasks]
    assert _distinct_modules(work_dir, target, mods) == (report.defaults_measured + 5,) * 2
    # asking for 7 measures 2 more, and none of the 5 again
    again = tune_model(mod, target, work_dir, trials=7, runner=runner, seed=1, trials_per_iter=4)
    assert again.earlier_trials == 5 and again.trials == 2 and again.defaults_measured == 0
    assert _distinct_modules(work_dir, target, mods) == (report.defaults_measured + 7,) * 2


def test_a_stored_schedule_is_known_to_the_search_as_it_is_in_memory(host, tmp_path):
    """The search's duplicate check sees a schedule in memory and its record read back from the
    database file as one schedule (the default int8 schedule's weight-packing annotation is
    ``True`` in memory and ``1`` once the trace has been through JSON: compared as modules they
    differed, and a resumed run measured a stored schedule again)."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from harness.tune import ConvShape, conv_model
    from harness.tune.conv import _conv_task
    from harness.tune.database import open_database, workload_records
    from harness.tune.search import dedup_search_class, default_schedules

    target = tvm.target.Target(host)
    task = _conv_task(conv_model(ConvShape.parse(SMALL)), target, None)
    kernel = task.dispatched[0]
    (default,) = default_schedules([(kernel, task.task_name)], target)
    assert default is not None
    work_dir = str(tmp_path / "db")
    database = open_database(work_dir, target, create=True)
    database.commit_tuning_record(ms.database.TuningRecord(
        default.trace, database.commit_workload(kernel), [1e-4], target,
        ms.arg_info.ArgInfo.from_entry_func(default.mod, remove_preproc=True)))
    (stored,) = workload_records(open_database(work_dir, target), kernel)  # read back from the file

    search = dedup_search_class()(ms.search_strategy.EvolutionarySearch())
    search.context = types.SimpleNamespace(mod=kernel)
    assert search._remember(stored.as_measure_candidate().sch.mod)  # pylint: disable=protected-access
    assert not search._remember(default.mod)  # pylint: disable=protected-access


_KILLED_TUNING = """
import os, sys, time
from harness.targets import llvm_target
from harness.tune import tune_conv
from harness.tune.testing import CannedRunner

log = sys.argv[2]

def latency(_runner_input):  # each measurement: announced, then 2 s long
    with open(log, "a") as fh:
        fh.write("measuring\\n")
    time.sleep(float(sys.argv[4]))
    return 1e-4

tune_conv("{shape}", target=llvm_target(), trials=int(sys.argv[3]), work_dir=sys.argv[1],
          runner=CannedRunner(latency), seed=1)
print("done")
"""


@pytest.mark.slow
def test_tuning_killed_keeps_every_measured_trial(host, tmp_path):
    import tvm

    """kill -9 while the 3rd trial is measured: the default schedule and the 1st search trial are
    in the database (valid JSON, nothing to repair); the re-run measures only the missing two."""
    from harness.tune import ConvShape, conv_model
    from harness.tune.conv import _conv_task
    from harness.tune.database import RECORD_FILE, sanitize_database

    script = tmp_path / "tune.py"
    script.write_text(_KILLED_TUNING.format(shape=SMALL))
    work_dir, log = str(tmp_path / "db"), str(tmp_path / "measured.log")
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, str(script), work_dir, log, "3", "2"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 900
        while len(_lines(log)) < 3 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert len(_lines(log)) == 3, proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "timeout"
        os.killpg(proc.pid, signal.SIGKILL)  # the tuner and its builder / runner workers
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    lines = _lines(os.path.join(work_dir, RECORD_FILE))
    assert len(lines) == 2  # measured before the kill: default schedule + 1st search trial
    assert all(json.loads(line) for line in lines)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sanitize_database(work_dir) == []  # nothing corrupt, nothing moved aside

    os.remove(log)
    done = subprocess.run([sys.executable, str(script), work_dir, log, "3", "0"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(_lines(log)) == 2  # only the two trials the killed run did not finish
    after = _lines(os.path.join(work_dir, RECORD_FILE))
    assert len(after) == 4 and after[:2] == lines
    mod = _conv_task(conv_model(ConvShape.parse(SMALL)), tvm.target.Target(host), None).dispatched[0]
    assert _distinct_modules(work_dir, host, [mod]) == (4, 4)


def test_repaired_database_warns_once_per_line_and_keeps_its_mode(host, tmp_path, caplog):
    from harness.tune import DatabaseWarning, open_database, tune_conv
    from harness.tune.database import RECORD_FILE
    from harness.tune.testing import CannedRunner

    work_dir = str(tmp_path / "db")
    tune_conv(SMALL, target=host, trials=1, work_dir=work_dir, runner=CannedRunner(), seed=2)  # + its default: 2
    path = os.path.join(work_dir, RECORD_FILE)
    lines = _lines(path)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join([lines[0], '[0, [["cut', lines[1]]) + "\n")
    os.chmod(path, 0o640)
    with caplog.at_level(logging.WARNING), pytest.warns(DatabaseWarning) as caught:
        open_database(work_dir, host)
    messages = [str(w.message) for w in caught if issubclass(w.category, DatabaseWarning)]
    assert len(messages) == 1 and "line 2 is corrupt" in messages[0]
    assert not [r for r in caplog.records if "line 2 is corrupt" in r.getMessage()]  # said once
    assert _lines(path) == lines
    assert os.stat(path).st_mode & 0o777 == 0o640


@pytest.mark.slow
def test_cli_prints_a_corrupt_line_once(host, tmp_path):
    """`harness tune-conv` on a database with a cut line: one `warning:` line, no Python source line."""
    from harness.config import TargetConfig
    from harness.targets import resolve_target
    from harness.tune import ConvShape, conv_work_dir, tune_conv
    from harness.tune.database import RECORD_FILE
    from harness.tune.testing import CannedRunner

    logs = tmp_path / "logs"
    target = resolve_target(TargetConfig(kind="llvm"))  # as the command resolves it
    work_dir = conv_work_dir(str(logs), target, ConvShape.parse(SMALL), "int8")
    tune_conv(SMALL, target=target, trials=1, work_dir=work_dir, runner=CannedRunner())
    with open(os.path.join(work_dir, RECORD_FILE), encoding="utf-8") as fh:
        cut = len(fh.readlines()) + 1  # after the default schedule's record and the trial's (if it built)
    with open(os.path.join(work_dir, RECORD_FILE), "a", encoding="utf-8") as fh:
        fh.write('[0, [["cut\n')
    src = tmp_path / "k.s"
    r = subprocess.run([sys.executable, "-m", "harness", "tune-conv", "--shape", SMALL, "--trials", "0",
                        "--logs", str(logs), "--emit-source", str(src)], cwd=ROOT, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    said = [line for line in r.stderr.splitlines() if f"line {cut} is corrupt" in line]
    assert len(said) == 1 and said[0].startswith("warning: tuning database ")
    assert "warnings.warn" not in r.stderr

"""Model-level tuning: `harness tune` writes per-run-key databases that `harness run` applies;
the RPC runner measures through TVM's own tracker and server."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import run_cli

CONFIG = """model: {{name: digits_cnn}}
target: llvm
quantize:
  calibrate_mode: max
  skip_conv_layers: []
  calib: {{source: digits, num_samples: 64}}
tuning: {{logs: {logs}, trials: 6{extra}}}
bench: {{number: 5, repeat: 2, min_repeat_ms: 0, results_dir: {res}}}
"""


def _config(tmp_path, extra=""):
    cfg = tmp_path / "t.yaml"
    cfg.write_text(CONFIG.format(logs=tmp_path / "logs", res=tmp_path / "res", extra=extra))
    return cfg


@pytest.mark.slow
def test_tune_then_run_applies_database(tmp_path):
    cfg = _config(tmp_path)
    r = run_cli("tune", str(cfg), "--quiet")
    assert r.returncode == 0, r.stderr
    dirs = sorted(os.listdir(tmp_path / "logs"))
    assert len(dirs) == 1 and dirs[0].startswith("llvm-")
    runs = sorted(os.listdir(tmp_path / "logs" / dirs[0]))
    assert runs == ["digits_cnn-B1-float32", "digits_cnn-B1-int8"]
    for run in runs:
        records = (tmp_path / "logs" / dirs[0] / run / "database_tuning_record.json").read_text().splitlines()
        assert len(records) >= 1
    r = run_cli("run", str(cfg), "--quiet")
    assert r.returncode == 0, r.stderr
    rec = json.load(open(r.stdout.strip().splitlines()[-1].split("record: ")[1]))
    for v in rec["variants"]:
        assert v["tuning"]["database"].endswith(v["variant"].replace("tvm-", "digits_cnn-B1-").replace("fp32", "float32"))
        assert v["tuning"]["from_database"] >= 1
        assert v["tuning"]["from_database"] + v["tuning"]["default_schedules"] >= 4


def test_rpc_runner_needs_tracker_and_key(tmp_path):
    cfg = _config(tmp_path, extra=", runner: rpc")
    r = run_cli("tune", str(cfg), "--quiet", timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: tuning.runner rpc needs `tracker: host:port` and `key:`"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_tuning_through_rpc_tracker_and_server(tmp_path):
    port = _free_port()
    tracker = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
                                "--port", str(port), "--port-end", str(port + 1)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = None
    try:
        time.sleep(2)
        assert tracker.poll() is None, "the RPC tracker did not start (is tornado installed?)"
        server = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1",
                                   "--tracker", f"127.0.0.1:{port}", "--key", "harness-test"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)
        cfg = _config(tmp_path, extra=f", runner: rpc, tracker: '127.0.0.1:{port}', key: harness-test")
        # TVM's own rpc_server does not ask Linux for AMX tile state: on an AMX host its AMX kernels
        # would die of SIGILL, so this test of the RPC plumbing builds without them
        cfg.write_text(cfg.read_text() + "build: {schedules: {cpu_int8_amx: false}}\n")
        r = run_cli("tune", str(cfg), "--quiet", "--only", "int8", "--trials", "4", timeout=600)
        assert r.returncode == 0, r.stderr
        logs = tmp_path / "logs"
        (target_dir,) = os.listdir(logs)
        lines = (logs / target_dir / "digits_cnn-B1-int8" / "database_tuning_record.json").read_text().splitlines()
        measured = [json.loads(line) for line in lines]
        assert len(measured) >= 1
        # each record carries the latency measured through the RPC server (not the 1e10 "failed" mark)
        assert any(min(rec[1][1]) < 1.0 for rec in measured)
    finally:
        for p in (server, tracker):
            if p is not None:
                p.terminate()
                p.wait(timeout=30)


def test_default_schedules_are_kept_as_candidates(tmp_path):
    """Each task's default CPU schedule is measured once and kept in the database, so tuning can
    only improve on an untuned build; a second run does not measure it again."""
    import tvm

    from harness.build import bind_params
    from harness.config import ModelConfig
    from harness.frontends import load_model
    from harness.targets import llvm_target
    from harness.schedules import cpu as cpu_default
    from harness.tune.database import open_database, workload_records
    from harness.tune.search import tunable_tasks, tune_model

    target = tvm.target.Target(llvm_target())
    model = load_model(ModelConfig(name="digits_cnn"))
    mod = bind_params(model.mod, model.params)
    work_dir = str(tmp_path / "db")
    first = tune_model(mod, target, work_dir, trials=2, seed=0)  # measured here (local runner)
    tasks = tunable_tasks(mod, target)
    assert first.defaults_measured == len(tasks) >= 2
    database = open_database(work_dir, target)
    for task in tasks:
        wanted = cpu_default.default_schedule(task.dispatched[0], target).mod.script()
        replayed = []
        for rec in workload_records(database, task.dispatched[0]):
            sch = tvm.s_tir.Schedule(rec.workload.mod)
            rec.trace.apply_to_schedule(sch, remove_postproc=False)
            replayed.append(sch.mod.script())  # as the schedule in memory, annotations included
        assert wanted in replayed, task.task_name
    assert all(rec.run_secs and 0 < float(rec.run_secs[0]) < 1 for rec in database.get_all_tuning_records())
    records = len(database.get_all_tuning_records())
    assert first.trials >= 2 and first.earlier_trials == 0
    assert records == first.trials + first.defaults_measured
    # `trials` is the total wanted in the database: a finished run, re-run, measures nothing
    again = tune_model(mod, target, work_dir, trials=2, seed=0)
    assert again.defaults_measured == 0 and again.trials == 0
    assert again.earlier_trials == first.trials
    assert len(open_database(work_dir, target).get_all_tuning_records()) == records


def test_cuda_model_tuning_without_gpu_says_so(tmp_path):
    """`harness tune --target cuda` on a machine without a GPU: the runner's clear error (the CUDA
    target is completed with the thread limits MetaSchedule needs first, or it fails on those)."""
    from harness.build import bind_params, resolve_target
    from harness.config import ModelConfig, TargetConfig
    from harness.errors import HarnessError
    from harness.frontends import load_model
    from harness.targets import gpu_visible
    from harness.tune.search import tune_model

    if gpu_visible():
        pytest.skip("a GPU is visible here")
    model = load_model(ModelConfig(name="digits_cnn"))
    target = resolve_target(TargetConfig(kind="cuda", arch="sm_90"))
    with pytest.raises(HarnessError, match="needs a GPU"):
        tune_model(bind_params(model.mod, model.params), target, str(tmp_path / "db"), trials=2)

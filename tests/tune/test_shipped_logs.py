"""The committed tuning logs are products: every record in them loads, none was set aside."""
import glob
import os
import shutil
import warnings

import pytest

from harness.tune.database import DatabaseWarning, sanitize_database

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LLVM_DATABASES = sorted(os.path.dirname(p) for p in glob.glob(
    os.path.join(ROOT, "tuning_logs", "llvm-*", "**", "database_workload.json"), recursive=True))


def test_no_record_was_set_aside():
    """A `.corrupt` file beside a committed database holds records a load rejected: in 2026-12 the
    best (AMX) record of each int8 conv log had been rejected by a load that had not registered the
    AMX intrinsics, and `harness run` applied slower records instead (resnet50 int8 50 ms, not 38)."""
    assert LLVM_DATABASES
    assert glob.glob(os.path.join(ROOT, "tuning_logs", "**", "*.corrupt"), recursive=True) == []


@pytest.mark.parametrize("folder", LLVM_DATABASES, ids=lambda p: os.path.relpath(p, os.path.join(ROOT, "tuning_logs")))
def test_every_committed_record_loads(folder, tmp_path):
    """Each record of the llvm logs replays (checked on a copy: a load rewrites what it rejects)."""
    copy = tmp_path / "db"
    shutil.copytree(folder, copy)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatabaseWarning)
        assert sanitize_database(str(copy)) == []
    with open(os.path.join(folder, "database_tuning_record.json")) as original, open(
            copy / "database_tuning_record.json") as kept:
        assert original.read() == kept.read()


# what code built for an Ice Lake / Rocket Lake class CPU needs of this one (LLVM's rocketlake)
ROCKETLAKE_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_vbmi2", "avx512_bitalg",
                    "avx512_vpopcntdq", "avx512ifma", "gfni", "vaes", "vpclmulqdq")


def _host_runs_rocketlake_code() -> bool:
    with open("/proc/cpuinfo") as f:
        flags = set(next((line for line in f if line.startswith("flags")), "").split())
    return all(flag in flags for flag in ROCKETLAKE_FLAGS)


@pytest.mark.slow
@pytest.mark.skipif(not _host_runs_rocketlake_code(),
                    reason="the committed AMX records are for rocketlake: their code needs AVX-512 VBMI2/VNNI/GFNI")
def test_the_committed_amx_records_compute_what_the_vnni_build_does():
    """resnet50_v1 int8 built for `rocketlake` + AMX with the committed `llvm-rocketlake` records (the
    AMX tile plans searched on an Emerald Rapids), tile instructions in the emulator: every AMX
    kernel comes from a record, and the output equals the dot-product build's (the same integer
    sums, today's requantization)."""
    import numpy as np
    import tvm

    from harness.bench import make_vm, run_once
    from harness.build import compile_module
    from harness.config import load_config
    from harness.frontends import load_model
    from harness.models import input_data
    from harness.pipeline import calibration_table, int8_module, run_key, tuning_records
    from harness.schedules import ScheduleOptions, amx_emulate

    cfg = load_config(os.path.join(ROOT, "configs", "resnet50_v1_int8.yaml"))
    model = load_model(cfg.model)
    qmod = int8_module(cfg, model, calibration_table(cfg, model, status=lambda m: None))
    target = tvm.target.Target(amx_emulate.emulation_target("rocketlake", 2))
    records = tuning_records(cfg, target, run_key("resnet50_v1", model.input_shape[0], "int8"))
    assert records is not None and len(records)
    with amx_emulate.emulated() as emulator:
        tuned = compile_module(qmod, target, records=records, fallback=False)
    dot = compile_module(qmod, target, schedules=ScheduleOptions(cpu_int8_amx=False), fallback=False)
    assert len(tuned.amx_kernels) >= 20 and set(tuned.amx_kernels) <= set(tuned.report.from_database)
    x = input_data(model.input_shape, 0)
    got = run_once(make_vm(tuned.executable, tvm.cpu()), tvm.cpu(), [x])
    ref = run_once(make_vm(dot.executable, tvm.cpu()), tvm.cpu(), [x])
    np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))
    emulator.check()
    assert emulator.products() > 100_000

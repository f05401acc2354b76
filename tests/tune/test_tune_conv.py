"""`harness tune-conv` (harness.tune.conv): conv shapes, the one-conv model whose kernel is the one a
model build compiles, tuning it (canned runner, and a few real trials), the database reaching a model
build through its conv (anchor block), kernel sources, databases of other targets, corrupt lines.

No GPU is needed: CUDA kernels are only compiled, and the CUDA tuning loop uses a canned runner.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings

import pytest

from harness.tune import (ConvShape, DatabaseTargetError, DatabaseWarning, conv_model, emit_source, load_records,
                          open_database, tune_conv)
from harness.schedules import ScheduleOptions
from harness.tune.database import RECORD_FILE, TARGET_FILE, WORKLOAD_FILE
from harness.tune.testing import CannedRunner
from tests.conftest import run_cli

CUDA = {"kind": "cuda", "arch": "sm_90"}
# the dot-product path on every CPU (an AMX host's 8-bit convs would get AMX tiles first: their own
# tests are in test_amx.py; with them, the search runs MetaSchedule's generic int8 rules; a CPU
# without VNNI runs 3x3 convs on integer Winograd, which has no search space: test_winograd_int8.py)
NO_AMX = ScheduleOptions(cpu_int8_amx=False, cpu_int8_winograd=False)
DIGITS_CONV = "1,16,8,8,32,3,3,1,1"  # the digits CNN's second conv (uint8 data after its ReLU)
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")


@pytest.fixture(scope="module")
def host():
    from harness.targets import llvm_target

    return llvm_target()


def _slow_default_runner():
    """Canned latencies: the first measured (the conv's default schedule) slowest, then each
    search trial a little faster than the one before, so the best record is a searched one."""
    calls = []

    def latency(_inp):
        calls.append(1)
        return 1e-3 if len(calls) == 1 else 2e-4 - 1e-6 * len(calls)

    return CannedRunner(latency)


# ----------------------------------------------------------------------------- kernel sources
def test_kernel_source_keeps_the_parallel_loop_bodies():
    """--emit-source cuts the conv's functions out of the module's assembly: its parallel-loop
    bodies (LLVM names them `.L__tvm_parallel_lambda.N`) hold the inner loops and come with it;
    another kernel's functions do not."""
    from harness.tune.conv import _function_text

    listing = "".join(f"{label}:\n\t{body}\n.Lfunc_end{i}:\n" for i, (label, body) in enumerate([
        ("__tvm_ffi_fused_conv2d_relu", "callq fused_conv2d_relu_compute_"),
        ("fused_conv2d_relu_compute_", "callq TVMBackendParallelLaunch"),
        (".L__tvm_parallel_lambda.79", "tdpbsud %tmm2, %tmm1, %tmm0"),
        ("fused_add_compute_", "vpaddd %zmm0, %zmm1, %zmm2"),
        (".L__tvm_parallel_lambda.80", "vpaddd %zmm3, %zmm4, %zmm5"),
    ]))
    text = _function_text(listing, "fused_conv2d_relu")
    assert "tdpbsud" in text and "fused_conv2d_relu_compute_:" in text
    assert "vpaddd" not in text and "fused_add_compute_" not in text


# ----------------------------------------------------------------------------- shapes
def test_parse_and_flops():
    shape = ConvShape.parse("1,64,56,56,64,3,3,1,1")
    assert (shape.n, shape.c, shape.k, shape.r, shape.stride, shape.pad) == (1, 64, 64, 3, 1, 1)
    assert (shape.dilation, shape.groups) == (1, 1)
    assert (shape.out_h, shape.out_w) == (56, 56)
    assert shape.flops == 2 * 1 * 64 * 56 * 56 * 64 * 3 * 3
    assert ConvShape.parse(str(shape)) == shape
    assert shape.gops(1.0) == pytest.approx(shape.flops / 1e-3 / 1e9)
    grouped = ConvShape.parse(" 2, 128, 28, 28, 128, 3, 3, 2, 2, 2, 32 ")
    assert (grouped.dilation, grouped.groups, grouped.out_h) == (2, 32, 14)
    assert grouped.flops == 2 * 2 * 128 * 14 * 14 * (128 // 32) * 9


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "expected 9 to 11"),
        ("1,64,56,56", "expected 9 to 11"),
        ("1,64,56,56,64,3,3,1,1,1,1,1", "expected 9 to 11"),
        ("1,64,56,56,64,3,3,1,x", "pad must be a non-negative integer"),
        ("1,64,56,56,-64,3,3,1,1", "k must be a non-negative integer"),
        ("1,64,56,56,64,3,3,1.5,1", "stride must be"),
        ("1,64,56,56,64,3,3,0,1", "stride must be >= 1"),
        ("0,64,56,56,64,3,3,1,1", "n must be >= 1"),
    ],
)
def test_parse_rejects_malformed(text, words):
    from harness.errors import HarnessError

    with pytest.raises(ValueError) as err:
        ConvShape.parse(text)
    assert isinstance(err.value, HarnessError)  # the CLI prints these as one line
    assert words in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "text, words",
    [
        ("1,3,4,4,8,7,7,1,1", "larger than the padded input"),  # 7x7 kernel on a 6x6 padded input
        ("1,8,8,8,8,3,3,1,0,4,1", "dilated extent 9"),  # dilation 4 makes the 3x3 kernel 9 wide
        ("1,6,8,8,8,3,3,1,1,1,4", "divisible by groups=4"),
        ("1,8,8,8,6,3,3,1,1,1,4", "divisible by groups=4"),
    ],
)
def test_parse_rejects_impossible_convs(text, words):
    with pytest.raises(ValueError) as err:
        ConvShape.parse(text)
    assert words in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError):
        ConvShape(*[int(x) for x in text.split(",")])


# ------------------------------------------------------------------- the kernel a build compiles
def test_one_conv_model_is_the_models_kernel(host):
    """The one-conv model's conv kernel is a fused 8-bit conv with the int8 config's types (uint8
    data after a ReLU, int8 without; int8 weights; int32 sums), and its anchor block is the one
    the digits CNN's int8 build has for the same conv."""
    import tvm

    from harness.build.passes.apply_database import TuningRecords
    from harness.config import load_config
    from harness.frontends import load_model
    from harness.pipeline import variant_modules
    from harness.tune.conv import _conv_task, tuning_result

    target = tvm.target.Target(host)
    shape = ConvShape.parse(DIGITS_CONV)
    task = _conv_task(conv_model(shape, "int8"), target, NO_AMX)
    text = task.dispatched[0].script()
    # the data as the model's kernel reads it: channel-blocked (8 channels a block, 16 on AVX-512: the
    # 16 -> 32 conv allows either) where the build blocks the 8-bit tensors between convs (CPUs
    # without AMX), else NCHW
    from harness.schedules import ScheduleOptions, schedule_family
    from harness.schedules.cpu import channel_block

    blocked = "HarnessBlockedInt8" in [p.info.name for p in schedule_family(target, NO_AMX).graph_passes(target)]
    block = channel_block(target)
    data = (rf"T.int64\({16 // block}\), T.int64\(8\), T.int64\(8\), T.int64\({block}\)" if blocked
            else r"T.int64\(16\), T.int64\(8\), T.int64\(8\)")
    assert re.search(r'T.Buffer\(\(T.int64\(1\), ' + data + r'\), "uint8"\)', text)
    assert re.search(r'T.Buffer\(\(T.int64\(32\), T.int64\(16\), T.int64\(3\), T.int64\(3\)\), "int8"\)', text)
    assert '"int32")' in text
    signed = _conv_task(conv_model(shape, "int8", data_dtype="int8"), target, NO_AMX).dispatched[0].script()
    assert '"uint8"' not in signed
    # the digits CNN's int8 build has this conv: its kernel matches the one-conv model's by anchor block
    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "digits_cnn_int8.yaml"))
    cfg.quantize.calib.num_samples = 64
    model = load_model(cfg.model)
    [(_, _, qmod, _)] = [v for v in variant_modules(cfg, model, status=lambda m: None) if v[1] == "int8"]
    from harness.tune.search import tunable_tasks

    kernels = {t.task_name: t.dispatched[0]["main"] for t in tunable_tasks(qmod, target, NO_AMX)}
    index = TuningRecords()
    from tvm.s_tir import meta_schedule as ms

    sch = tvm.s_tir.Schedule(task.dispatched[0])
    index.add("probe", [ms.database.TuningRecord(sch.trace, ms.database.Workload(task.dispatched[0]), [1e-3])])
    matched = [name for name, func in kernels.items() if index.candidates(func)]
    assert len(matched) == 1 and "conv2d" in matched[0] and len(kernels) >= 3  # 2 convs, the dense
    assert tuning_result(shape, target=target, work_dir="/nonexistent", options=NO_AMX).trials == 0


@pytest.mark.slow
def test_tuned_conv_reaches_the_model_build(host, tmp_path):
    """tune-conv the digits CNN's second conv (canned runner, default measured slowest), then build
    the CNN as `harness run` does: that conv's kernel comes from the conv database, and it is not
    the untuned kernel; the record says so per kernel."""
    import tvm
    import tvm_ffi

    from harness.build.pipeline import fuse_and_schedule
    from harness.config import load_config
    from harness.pipeline import run, tuning_records
    from harness.schedules import schedule_family
    from harness.targets import target_key
    from harness.tune import conv_work_dir

    target = tvm.target.Target(host)
    logs = tmp_path / "logs"
    work_dir = conv_work_dir(str(logs), target, ConvShape.parse(DIGITS_CONV), "int8")
    # tune_conv's own default is 8-bit weights: the config says so too (reduce_range: auto would
    # give an AVX2-only host 7-bit ones, whose kernels a record for 8-bit weights does not serve)
    result = tune_conv(DIGITS_CONV, target=target, trials=4, work_dir=work_dir, runner=_slow_default_runner(),
                       seed=0, options=NO_AMX)
    assert result.trials == 5 and result.new_trials == 5  # the default schedule and 4 search trials
    assert not result.best_is_default and result.best_latency_ms < 1.0
    cfg_path = tmp_path / "digits.yaml"
    cfg_path.write_text(f"""model: {{name: digits_cnn}}
target: llvm
quantize: {{calibrate_mode: kl_divergence, weight_scale: channel_max, skip_conv_layers: [],
           reduce_range: false,
           calib: {{source: digits, num_samples: 64, batch_size: 32}}}}
tuning: {{logs: {logs}}}
build: {{schedules: {{cpu_int8_amx: false, cpu_int8_winograd: false}}}}
bench: {{results_dir: {tmp_path / "results"}}}
""")
    cfg = load_config(str(cfg_path))
    record = run(cfg, compile_only=True)
    [int8] = [v for v in record["variants"] if v["variant"] == "tvm-int8"]
    source = "database:conv/" + os.path.basename(work_dir)
    assert int8["tuning"]["databases"] == ["conv/" + os.path.basename(work_dir)]  # no run-key database here
    assert int8["tuning"]["by_source"][source] == 1 and int8["tuning"]["from_database"] == 1
    [kernel] = [k for k, v in int8["tuning"]["kernels"].items() if v == source]
    assert "conv2d" in kernel
    assert int8["build"] == {"schedules": {"cpu_default": True, "cpu_int8_dot": True, "cpu_int8_depthwise": True,
                                           "cpu_int8_amx": False, "cpu_int8_blocked": True,
                                           "cpu_int8_winograd": False, "cpu_int8_winograd_tile": 4,
                                           "cuda_int8_dp4a": True,
                                           "int8_weight_bits": 8, "int8_grouped_weight_bits": 8},
                             "fallback": None}
    [fp32] = [v for v in record["variants"] if v["variant"] == "tvm-fp32"]
    assert fp32["tuning"]["from_database"] == 0  # an int8 conv's record does not match fp32 convs
    # the built kernel is the record's, not the default one
    from harness.frontends import load_model
    from harness.pipeline import variant_modules

    model = load_model(cfg.model)
    [(_, _, qmod, _)] = [v for v in variant_modules(cfg, model, status=lambda m: None) if v[1] == "int8"]
    family = schedule_family(target, NO_AMX)
    tuned = fuse_and_schedule(qmod, target, family, tuning_records(cfg, target, "digits_cnn-B1-int8"))
    untuned = fuse_and_schedule(qmod, target, family)
    def conv(mod):  # with its weights packed at build, the kernel called is ..._prepacked
        names = {gv.name_hint for gv in mod.functions.keys()}
        return mod[kernel + "_prepacked" if kernel + "_prepacked" in names else kernel]

    assert not tvm_ffi.structural_equal(conv(tuned), conv(untuned))
    assert target_key(target) in work_dir


@pytest.mark.slow
def test_tune_conv_cli_real_trials(tmp_path):
    """`harness tune-conv` with a few real trials on this CPU: the database, the summary line, the
    kernel's assembly on the CPU's dot product; --trials 0 says what it did; --trials -3 is an error."""
    import tvm

    from harness.schedules.intrinsics import cpu_int8_dots
    from harness.targets import llvm_target

    from harness.schedules.winograd import lanes_for

    logs = tmp_path / "logs"
    host = tvm.target.Target(llvm_target())
    if lanes_for(host):  # a CPU without VNNI: the conv runs on integer Winograd, which has no search space
        r = run_cli("tune-conv", "--shape", DIGITS_CONV, "--trials", "2", "--logs", str(logs), "--quiet")
        assert r.returncode == 2 and "runs on the integer Winograd kernel" in r.stderr
        assert "no search space" in r.stderr and "cpu_int8_winograd" in r.stderr
    config = tmp_path / "dot.yaml"  # the dot-product kernel, on every CPU
    config.write_text("quantize: {}\nbuild: {schedules: {cpu_int8_winograd: false}}\n")
    r = run_cli("tune-conv", "--shape", DIGITS_CONV, "--trials", "2", "--logs", str(logs), "--quiet",
                "--emit-source", str(tmp_path / "k.s"), "--config", str(config))
    assert r.returncode == 0, r.stderr
    summary = r.stdout.splitlines()[0]
    shape = ConvShape.parse(DIGITS_CONV)  # the summary and the folder name give all 11 numbers
    assert summary.startswith(f"conv {shape} int8 (uint8 data) on llvm-") and "GOPS" in summary
    assert "3 records (3 new)" in summary  # the default schedule and 2 search trials
    [key] = os.listdir(logs)
    work_dir = logs / key / "conv" / "1_16_8_8_32_3_3_1_1_1_1-int8"
    for name in (WORKLOAD_FILE, RECORD_FILE, TARGET_FILE):
        assert (work_dir / name).exists()
    asm = (tmp_path / "k.s").read_text()
    from harness.schedules.amx import applies_to

    dots = cpu_int8_dots(host, "uint8")
    if applies_to(host):  # an AMX host: the conv's default kernel is on AMX tiles (tdpbsud / tdpbusd)
        assert re.search(r"tdpbs?u?d", asm) and "ldtilecfg" in asm
    elif dots:
        want = "vpdpbusd" if dots[0][2] == 4 else "vpmaddwd"
        assert want in asm
    r = run_cli("tune-conv", "--shape", DIGITS_CONV, "--trials", "0", "--logs", str(logs))
    assert r.returncode == 0 and r.stdout.startswith("--trials 0: nothing tuned and nothing emitted")
    r = run_cli("tune-conv", "--shape", DIGITS_CONV, "--trials", "-3", "--logs", str(logs))
    assert r.returncode == 2 and r.stderr.strip() == "error: --trials: must be >= 0 (0: no tuning), got -3"


# ------------------------------------------------------------------------------ sources
@needs_nvcc
def test_emit_cuda_source_uses_dp4a_and_compiles_with_nvcc():
    source = emit_source("1,64,14,14,64,3,3,1,1", dtype="int8", target=CUDA)
    assert "__dp4a" in source
    ptx = emit_source("1,64,14,14,64,3,3,1,1", dtype="int8", target=CUDA, fmt="ptx")
    assert "dp4a.u32.s32" in ptx  # uint8 data x int8 weights


@pytest.mark.parametrize("mcpu, instruction", [("cascadelake", r"vpdpbusd\s"), ("znver2", r"vpmaddwd\s+%ymm"),
                                               ("skylake-avx512", r"vpmaddwd\s+%zmm")])
def test_emit_llvm_source_per_cpu(mcpu, instruction):
    """The conv's kernel for CPUs this machine may not be (compiled, not run): VNNI where there is
    VNNI, vpmaddwd on AVX-512BW / AVX2; the listing is the conv function."""
    from harness.targets import llvm_target

    asm = emit_source(DIGITS_CONV, dtype="int8", target=llvm_target(mcpu, 2))
    assert re.search(instruction, asm)
    assert "fused_conv2d" in asm.splitlines()[0] and asm.splitlines()[0].endswith(":")
    with pytest.raises(Exception, match="not valid for llvm"):
        emit_source(DIGITS_CONV, target=llvm_target(mcpu, 2), fmt="ptx")


# ----------------------------------------------------------------------------- databases
@pytest.fixture(scope="module")
def canned_dir(host, tmp_path_factory):
    work_dir = str(tmp_path_factory.mktemp("tuned") / "db")
    result = tune_conv(DIGITS_CONV, target=host, trials=3, work_dir=work_dir, runner=_slow_default_runner(),
                       seed=1, options=NO_AMX)
    return work_dir, result


def test_resume_measures_nothing_twice(host, canned_dir, tmp_path):
    work_dir, first = canned_dir
    copy = str(tmp_path / "copy")
    shutil.copytree(work_dir, copy)
    runner = _slow_default_runner()
    again = tune_conv(DIGITS_CONV, target=host, trials=3, work_dir=copy, runner=runner, options=NO_AMX)
    assert again.trials == first.trials == 4 and again.new_trials == 0
    more = tune_conv(DIGITS_CONV, target=host, trials=5, work_dir=copy, runner=runner, seed=2, options=NO_AMX)
    assert more.trials == 6 and more.new_trials == 2
    with open(os.path.join(copy, RECORD_FILE), encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    with open(os.path.join(work_dir, RECORD_FILE), encoding="utf-8") as fh:
        assert lines[:4] == fh.read().splitlines()  # nothing lost or rewritten


def test_cuda_tuning_without_gpu_says_so(tmp_path):
    from harness.errors import HarnessError
    from harness.targets import gpu_visible

    if gpu_visible():
        pytest.skip("a GPU is visible here")
    with pytest.raises(HarnessError, match="needs a GPU"):
        tune_conv(DIGITS_CONV, target=CUDA, trials=2, work_dir=str(tmp_path / "g"))


@pytest.mark.slow
@needs_nvcc
def test_cuda_tune_conv_reaches_the_model_build(tmp_path):
    """On CUDA with a canned runner (no GPU): tune-conv's dp4a search space, then a model with that
    conv built for sm_90 takes the conv database's record (a kernel other than the default dp4a one)."""
    from harness.build import compile_module, cuda_source
    from harness.targets import normalize_target
    from harness.tune.runners import nvcc_mode

    target = normalize_target(CUDA)
    shape = "1,16,14,14,32,3,3,1,1"
    work_dir = str(tmp_path / "cuda")
    result = tune_conv(shape, target=target, trials=4, work_dir=work_dir, runner=_slow_default_runner(), seed=0)
    assert result.trials == 5 and not result.best_is_default and result.intrinsic == "dp4a_u8s8s32"
    # a model with that conv and another epilogue (a second conv reads its requantized output)
    from tests.tune.test_cpu_default import int8_conv

    mod = int8_conv(ci=16, co=32, hw=14)
    records = load_records([("conv/x", work_dir)], target)
    with nvcc_mode():
        tuned = compile_module(mod, target, records=records)
        untuned = compile_module(mod, target)
    assert list(tuned.report.counts()) and tuned.report.counts().get("database:conv/x") == 1
    assert untuned.report.counts().get("default:cuda_dp4a") == 1
    assert cuda_source(tuned.executable) != cuda_source(untuned.executable)
    assert "__dp4a" in cuda_source(tuned.executable)


def test_database_of_other_target_is_refused(host, canned_dir, tmp_path):
    work_dir, _ = canned_dir
    with pytest.raises(DatabaseTargetError) as err:
        load_records([("x", work_dir)], CUDA)
    message = str(err.value)
    assert "made for target [kind=llvm" in message and "kind=cuda, arch=sm_90" in message
    assert "\n" not in message
    with pytest.raises(DatabaseTargetError):
        emit_source(DIGITS_CONV, dtype="int8", target=CUDA, work_dir=work_dir)
    with pytest.raises(DatabaseTargetError):
        tune_conv(DIGITS_CONV, target=CUDA, trials=1, work_dir=work_dir, runner=CannedRunner())
    with pytest.raises(DatabaseTargetError):  # another CPU is another target too
        load_records([("x", work_dir)], dict(host, mcpu="skylake-avx512"))
    # without our metadata file the target is read from the records themselves
    copy = str(tmp_path / "nometa")
    shutil.copytree(work_dir, copy)
    os.remove(os.path.join(copy, TARGET_FILE))
    with pytest.raises(DatabaseTargetError):
        load_records([("x", copy)], CUDA)


def test_corrupt_lines_are_skipped_with_a_warning(host, canned_dir, tmp_path):
    work_dir, result = canned_dir
    copy = str(tmp_path / "corrupt")
    shutil.copytree(work_dir, copy)
    path = os.path.join(copy, RECORD_FILE)
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    lines.insert(1, '[0, [[["GetSBlock", [], ["oops"')  # a line cut in the middle
    lines.insert(3, '{"not": "a record"}')
    lines.append('[7, [[], [0.001], null, null]]')  # refers to a workload that does not exist
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    with pytest.warns(DatabaseWarning) as caught:
        database = open_database(copy, host)
    messages = [str(w.message) for w in caught if issubclass(w.category, DatabaseWarning)]
    assert [m.split(": ")[1].split(" is")[0] for m in messages] == ["line 2", "line 4", "line 7"]
    assert all("\n" not in m and "skipped it" in m for m in messages)
    assert len(database) == result.trials  # every good record kept
    with open(path + ".corrupt", encoding="utf-8") as fh:
        assert len(fh.read().splitlines()) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatabaseWarning)  # cleaned: no warning the second time
        records = load_records([("x", copy)], host)
    assert len(records) == result.trials
    json.dumps(result.as_dict())  # the result is plain data (reports, scripts)

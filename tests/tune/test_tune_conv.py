"""Tests of single-conv tuning (harness.tune): shapes, int8 code generation, tuning, databases.

The tuning tests are kept tiny (4-8 trials of a small conv, small search population) so the
file runs in a few minutes on 2 cores; the CUDA tuning loop (nvcc builds) is marked slow.
No GPU is needed: CUDA kernels are only compiled, and the CUDA tuning loop uses a canned runner.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pytest

from harness.tune import (
    CannedRunner,
    ConvShape,
    DatabaseTargetError,
    DatabaseWarning,
    apply_database,
    conv_relax_module,
    conv_workload,
    emit_source,
    open_database,
    tune_conv,
)
from harness.tune.conv import (
    RECORD_FILE,
    TARGET_FILE,
    WORKLOAD_FILE,
    canonical_module,
    cpu_default_schedule,
    default_schedule,
    workload_records,
)

CUDA = {"kind": "cuda", "arch": "sm_90"}
SMALL = "1,16,10,10,32,3,3,1,1"  # the conv tuned by these tests (int8: 4 input / 2 output blocks)


@pytest.fixture(scope="module")
def host():
    from harness.targets import llvm_target

    return llvm_target()


@pytest.fixture(scope="module")
def has_vnni(host):
    from harness.tune.rules import target_has_vnni

    return target_has_vnni(host)


@pytest.fixture(scope="module")
def host_dot(host):
    """This CPU's best exact 8-bit dot product for uint8 data: (intrinsic, lanes, reduction) or None."""
    from harness.tune.rules import cpu_int8_dots

    dots = cpu_int8_dots(host, "uint8")
    return dots[0] if dots else None


def _run_packed(executable, name, workload, data, weight):
    """Run a compiled conv kernel on numpy NCHW data / OIHW weights; returns NCHW output."""
    import tvm

    dev = tvm.cpu()
    args = [
        tvm.runtime.tensor(workload.pack_data(data), dev),
        tvm.runtime.tensor(workload.pack_kernel(weight), dev),
        tvm.runtime.tensor(np.zeros(workload.out_shape, workload.out_dtype), dev),
    ]
    executable[name](*args)
    return workload.unpack_output(args[2].numpy())


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


# ------------------------------------------------------------------------------ workloads
@pytest.mark.parametrize(
    "text, dtype, packed",
    [
        ("1,3,9,9,20,3,3,2,1", "int8", True),  # odd channels: padded
        ("2,16,6,6,32,3,3,1,1,1,2", "int8", True),  # grouped, packable
        ("1,8,7,7,8,3,3,1,1,1,8", "int8", False),  # depthwise: plain layout
        ("1,5,8,8,6,3,3,1,2,2,1", "float32", False),
    ],
)
def test_workload_layouts_match_reference(host, host_dot, text, dtype, packed):
    import tvm
    from tvm import relax

    workload = conv_workload(text, dtype=dtype, target=host)
    if packed:  # blocks of this CPU's dot product (16 x 4 where there is none)
        ob, ib = host_dot[1:] if host_dot else (16, 4)
        assert workload.layout == f"NCHW{ib}c-OIHW{ob}o{ib}i-NCHW{ob}c"
        assert workload.data_dtype == "uint8"  # x86: u8 activations (VNNI multiplies u8 by s8)
        assert workload.c_pad % ib == 0 and workload.k_pad % ob == 0
    else:
        assert workload.layout == "NCHW-OIHW-NCHW"
    data, weight = workload.random_inputs(seed=3)
    expected = workload.reference(data, weight)
    executable = tvm.compile(tvm.IRModule({workload.name: workload.func}), target=tvm.target.Target(host))
    got = _run_packed(executable, workload.name, workload, data, weight)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
    # the Relax wrapper packs / unpacks itself and gives the same answer
    dev = tvm.cpu()
    vm = relax.VirtualMachine(tvm.compile(conv_relax_module(workload), target=tvm.target.Target(host)), dev)
    out = vm["main"](tvm.runtime.tensor(data, dev), tvm.runtime.tensor(weight, dev)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize(
    "mcpu, layout, c_pad, k_pad",
    [
        ("cascadelake", "NCHW4c-OIHW16o4i-NCHW16c", 4, 32),  # vpdpbusd: 16 lanes x 4 products
        ("skylake-avx512", "NCHW2c-OIHW16o2i-NCHW16c", 4, 32),  # vpmaddwd zmm: 16 x 2
        ("znver2", "NCHW2c-OIHW8o2i-NCHW8c", 4, 24),  # vpmaddwd ymm: 8 x 2
        ("haswell", "NCHW2c-OIHW8o2i-NCHW8c", 4, 24),
    ],
)
def test_x86_workload_layout_follows_the_dot_product(mcpu, layout, c_pad, k_pad):
    workload = conv_workload("1,3,17,17,20,3,3,2,1", dtype="int8", target={"kind": "llvm", "mcpu": mcpu})
    assert workload.layout == layout
    assert (workload.c_pad, workload.k_pad) == (c_pad, k_pad)
    assert workload.data_shape[1:] == (c_pad // workload.in_block, 17, 17, workload.in_block)


def test_cuda_workload_uses_dp4a_layout():
    workload = conv_workload("1,3,17,17,10,3,3,2,1", dtype="int8", target=CUDA)
    assert workload.layout == "NCHW4c-OIHW4o4i-NCHW4c"  # the 2019 dp4a layout
    assert workload.data_dtype == "int8" and (workload.c_pad, workload.k_pad) == (4, 12)


# ----------------------------------------------------------------------- code generation
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("text", ["1,64,14,14,64,3,3,1,1", "1,3,17,17,10,3,3,2,1"])
def test_emit_cuda_source_uses_dp4a_and_compiles_with_nvcc(text):
    import tvm
    from tvm.support import nvcc

    source = emit_source(text, dtype="int8", target=CUDA)
    assert "__dp4a" in source
    with tvm.target.Target(CUDA):
        ptx = bytes(nvcc.compile_cuda(source, target_format="ptx", arch="sm_90", compiler="nvcc"))
    assert b"dp4a.s32.s32" in ptx


def test_emit_llvm_default_uses_vnni():
    """The default int8 x86 kernel for a VNNI CPU carries vpdpbusd (compiled only: any host will do)."""
    asm = emit_source(SMALL, dtype="int8", target={"kind": "llvm", "mcpu": "cascadelake", "num-cores": 2})
    assert "vpdpbusd" in asm


@pytest.mark.parametrize("mcpu, register", [("znver2", "ymm"), ("skylake-avx512", "zmm")])
def test_emit_llvm_without_vnni_uses_vpmaddwd(mcpu, register):
    """Without VNNI the default int8 kernel is built on the exact vpmaddwd (operands widened to
    int16), never on the saturating vpmaddubsw (compiled only: any host will do)."""
    asm = emit_source(SMALL, dtype="int8", target={"kind": "llvm", "mcpu": mcpu, "num-cores": 2})
    lines = [line for line in asm.splitlines() if "vpmaddwd" in line]
    assert lines and all(register in line for line in lines)
    assert "vpdpbusd" not in asm and "vpmaddubsw" not in asm


@pytest.mark.parametrize("data_dtype", ["uint8", "int8"])
@pytest.mark.parametrize("text", [SMALL, "1,6,9,9,20,3,3,2,1"])  # the second: padded channels
def test_default_dot_schedule_is_correct(host, host_dot, text, data_dtype):
    """The default packed int8 kernel of this CPU runs its dot product and is exact."""
    import tvm

    from harness.tune.conv import module_uses_intrinsic

    if host_dot is None:
        pytest.skip("this CPU has no exact 8-bit dot product the harness uses")
    workload = conv_workload(text, dtype="int8", target=host, data_dtype=data_dtype)
    scheduled = default_schedule(workload, host)
    assert module_uses_intrinsic(scheduled) in ("vnni", "pmaddwd")
    executable = tvm.compile(scheduled, target=tvm.target.Target(host))
    data, weight = workload.random_inputs(seed=5)
    got = _run_packed(executable, workload.name, workload, data, weight)
    np.testing.assert_array_equal(got, workload.reference(data, weight))


# ------------------------------------------------------------------------------- tuning
def _record_modules(work_dir, target, text, dtype="int8"):
    """Structural hashes of the scheduled modules of every record of the conv."""
    import tvm_ffi

    workload = conv_workload(text, dtype=dtype, target=target)
    database = open_database(work_dir, target)
    records = workload_records(database, canonical_module(workload.func))
    return [tvm_ffi.structural_hash(rec.as_measure_candidate().sch.mod) for rec in records]


def test_tuning_loop_with_canned_runner_and_resume(host, tmp_path):
    """Whole loop (search, build, canned 'run', database) without timing anything; then resume."""
    work_dir = str(tmp_path / "db")
    latencies = iter(np.linspace(3e-4, 1e-4, 64))
    runner = CannedRunner(lambda _inp: float(next(latencies)))
    seen = []
    first = tune_conv(
        SMALL, dtype="int8", target=host, trials=4, work_dir=work_dir, runner=runner,
        trials_per_iter=4, population_size=32, seed=1, progress=lambda *a: seen.append(a),
    )  # fmt: skip
    assert first.trials == first.new_trials == 4
    assert runner.calls == first.valid_trials == 4
    assert first.best_latency_ms == pytest.approx(min(np.linspace(3e-4, 1e-4, 64)[:4]) * 1e3)
    assert first.gops == pytest.approx(ConvShape.parse(SMALL).gops(first.best_latency_ms))
    assert seen and seen[-1][0] == 4 and seen[-1][1] == 4
    # the conv's default schedule was measured as one of the 4 (what an untuned build runs)
    default = cpu_default_schedule(conv_workload(SMALL, dtype="int8", target=host), host)
    database = open_database(work_dir, host)
    traces = [list(rec.trace.as_python()) for rec in database.get_all_tuning_records()]
    assert list(default.trace.as_python()) in traces
    for name in (WORKLOAD_FILE, RECORD_FILE, TARGET_FILE):
        assert os.path.exists(os.path.join(work_dir, name))
    with open(os.path.join(work_dir, RECORD_FILE), encoding="utf-8") as fh:
        lines_before = fh.read().splitlines()
    assert len(lines_before) == 4

    # resume: `trials` is the total wanted in the directory; the 4 records stay as they are
    second = tune_conv(
        SMALL, dtype="int8", target=host, trials=8, work_dir=work_dir, runner=runner,
        trials_per_iter=4, population_size=32, seed=1,
    )  # fmt: skip
    assert second.trials == 8 and second.new_trials == 4
    with open(os.path.join(work_dir, RECORD_FILE), encoding="utf-8") as fh:
        lines_after = fh.read().splitlines()
    assert lines_after[:4] == lines_before  # nothing lost or rewritten
    hashes = _record_modules(work_dir, host, SMALL)
    assert len(hashes) == 8 and len(set(hashes)) == 8  # no schedule measured twice
    # asking for what is already there measures nothing
    calls = runner.calls
    third = tune_conv(SMALL, dtype="int8", target=host, trials=8, work_dir=work_dir, runner=runner)
    assert third.trials == 8 and third.new_trials == 0 and runner.calls == calls


def test_cuda_tuning_without_gpu_says_so(tmp_path):
    from harness.errors import HarnessError
    from harness.tune.conv import _has_cuda_device

    if _has_cuda_device():
        pytest.skip("a GPU is visible here")
    with pytest.raises(HarnessError, match="needs a GPU"):
        tune_conv(SMALL, target=CUDA, trials=2, work_dir=str(tmp_path / "g"))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_cuda_tuning_loop_with_canned_runner(tmp_path):
    """CUDA candidates (dp4a, int8 wmma) are generated and really built; nothing runs."""
    work_dir = str(tmp_path / "cuda")
    result = tune_conv(
        "1,64,14,14,64,3,3,1,1", dtype="int8", target=CUDA, trials=8, work_dir=work_dir,
        runner=CannedRunner(), trials_per_iter=8, population_size=32, seed=0,
    )  # fmt: skip
    assert result.trials == 8
    assert result.valid_trials >= 6  # candidates that failed to build would have no latency
    assert result.uses_intrinsic and result.intrinsic.startswith(("dp4a", "wmma"))
    source = emit_source("1,64,14,14,64,3,3,1,1", dtype="int8", target=CUDA, work_dir=work_dir)
    assert "__dp4a" in source or "wmma" in source


@pytest.fixture(scope="module")
def tuned_dir(host, tmp_path_factory):
    """A real (timed) 4-trial tuning run of the small int8 conv on this CPU."""
    work_dir = str(tmp_path_factory.mktemp("tuned") / "db")
    result = tune_conv(
        SMALL, dtype="int8", target=host, trials=4, work_dir=work_dir, trials_per_iter=4,
        population_size=32, seed=0, number=2, min_repeat_ms=10,
    )  # fmt: skip
    return work_dir, result


def test_real_tuning_writes_database(tuned_dir, host_dot):
    work_dir, result = tuned_dir
    assert result.trials == 4 and result.valid_trials >= 1
    assert result.best_latency_ms > 0 and result.gops > 0
    if host_dot is not None:  # the search's candidates are built on this CPU's dot product
        assert result.uses_intrinsic and result.intrinsic == host_dot[0]
    with open(os.path.join(work_dir, TARGET_FILE), encoding="utf-8") as fh:
        assert json.load(fh)["target"]["kind"] == "llvm"


def test_apply_database_uses_tuned_schedule(host, tuned_dir):
    import tvm
    import tvm_ffi

    work_dir, _ = tuned_dir
    workload = conv_workload(SMALL, dtype="int8", target=host)
    mod, report = apply_database(workload.func, host, work_dir, compile=False)
    assert report.from_database == [workload.name] and report.fallback == []
    tuned = mod[workload.name]
    assert not tvm_ffi.structural_equal(tuned, workload.func)  # differs from the untuned conv
    # it is the best record's schedule: the search's best, or the default schedule (measured as
    # the run's first trial) where none of the few searched ones beat it
    database = open_database(work_dir, host)
    records = [r for r in workload_records(database, canonical_module(workload.func)) if r.run_secs]
    best = min(records, key=lambda r: sum(float(x) for x in r.run_secs) / len(r.run_secs))
    assert tvm_ffi.structural_equal(canonical_module(tuned), canonical_module(best.as_measure_candidate().sch.mod))
    default = canonical_module(default_schedule(workload, host)[workload.name])
    is_default = list(best.trace.as_python()) == list(cpu_default_schedule(workload, host).trace.as_python())
    assert tvm_ffi.structural_equal(canonical_module(tuned), default) == is_default
    executable = tvm.compile(mod, target=tvm.target.Target(host))
    data, weight = workload.random_inputs(seed=7)
    got = _run_packed(executable, workload.name, workload, data, weight)
    np.testing.assert_array_equal(got, workload.reference(data, weight))


def test_apply_database_to_relax_module(host, tuned_dir):
    import tvm
    from tvm import relax

    work_dir, _ = tuned_dir
    workload = conv_workload(SMALL, dtype="int8", target=host)
    executable, report = apply_database(conv_relax_module(workload), host, work_dir)
    assert report.num_from_database == 1 and report.num_fallback == 3  # conv tuned, packing not
    dev = tvm.cpu()
    data, weight = workload.random_inputs(seed=9)
    out = relax.VirtualMachine(executable, dev)["main"](
        tvm.runtime.tensor(data, dev), tvm.runtime.tensor(weight, dev)
    )
    np.testing.assert_array_equal(out.numpy(), workload.reference(data, weight))


def test_database_of_other_target_is_refused(host, tuned_dir, tmp_path):
    work_dir, _ = tuned_dir
    workload = conv_workload(SMALL, dtype="int8", target=CUDA)
    with pytest.raises(DatabaseTargetError) as err:
        apply_database(workload.func, CUDA, work_dir)
    message = str(err.value)
    assert "made for target [kind=llvm" in message and "kind=cuda, arch=sm_90" in message
    assert "\n" not in message
    with pytest.raises(DatabaseTargetError):
        emit_source(SMALL, dtype="int8", target=CUDA, work_dir=work_dir)
    with pytest.raises(DatabaseTargetError):
        tune_conv(SMALL, target=CUDA, trials=1, work_dir=work_dir, runner=CannedRunner())
    with pytest.raises(DatabaseTargetError):  # another CPU is another target too
        apply_database(workload.func, dict(host, mcpu="skylake-avx512"), work_dir)
    # without our metadata file the target is read from the records themselves
    copy = str(tmp_path / "nometa")
    shutil.copytree(work_dir, copy)
    os.remove(os.path.join(copy, TARGET_FILE))
    with pytest.raises(DatabaseTargetError):
        apply_database(workload.func, CUDA, copy)


def test_corrupt_lines_are_skipped_with_a_warning(host, tuned_dir, tmp_path):
    work_dir, result = tuned_dir
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
        workload = conv_workload(SMALL, dtype="int8", target=host)
        _, report = apply_database(workload.func, host, copy, compile=False)
    assert report.num_from_database == 1

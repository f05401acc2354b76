"""The dp4a schedule of the model's int8 convs on CUDA (harness.schedules.cuda): applied where
it fits, compiled by nvcc into `__dp4a` / PTX `dp4a`, weights repacked once at build, tuned in its
own search space (with a canned runner: no GPU here) and applied from the database.

Nothing here runs a kernel: no GPU. The numbers of these kernels are checked by
scripts/bench_cuda_int8.py on a GPU machine."""
from __future__ import annotations

import itertools
import random
import re
import shutil

import numpy as np
import pytest
import tvm
from tvm import relax

from harness.build import bind_params, compile_module, cuda_source
from harness.build.pipeline import fused
from harness.schedules import ScheduleOptions, schedule_family
from harness.schedules import cuda as cuda_default
from harness.schedules.intrinsics import trace_uses_intrinsic
from harness.targets import normalize_target
from harness.tune.database import load_records
from harness.tune.runners import nvcc_mode as _nvcc_mode
from harness.tune.search import tunable_tasks
from tests.tune.test_cpu_default import _const, _module, conv_bias_relu, int8_conv

CUDA = {"kind": "cuda", "arch": "sm_90"}
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")


@pytest.fixture(scope="module")
def target():
    return normalize_target(CUDA)


def _kernel(mod, target):
    [func] = [f for f in fused(mod, target, schedule_family(target)).functions.values()
              if isinstance(f, tvm.tirx.PrimFunc)]
    return func


def _kernels(source: str) -> dict:
    """{kernel name: body} of a CUDA source."""
    parts = re.split(r'(?=extern "C" __global__ void)', source)[1:]
    return {re.search(r"\) (\w+)\(", p).group(1): p for p in parts}


def two_convs():
    """An int8 conv the dp4a schedule takes (16 input channels) feeding, requantized to uint8, one
    it cannot (6 input channels)."""
    rng = np.random.RandomState(1)
    w1 = rng.randint(-127, 128, size=(6, 16, 3, 3)).astype("int8")
    w2 = rng.randint(-127, 128, size=(8, 6, 1, 1)).astype("int8")

    def body(bb, x):
        acc = bb.emit(relax.op.nn.conv2d(x, _const(w1), padding=1, out_dtype="int32"))
        y = bb.emit(relax.op.multiply(bb.emit(relax.op.astype(acc, "float32")), relax.const(0.01, "float32")))
        codes = bb.emit(relax.op.astype(bb.emit(relax.op.clip(y, 0, 255)), "uint8"))
        return relax.op.nn.conv2d(codes, _const(w2), out_dtype="int32")

    return _module((1, 16, 10, 10), "uint8", body)


def _tilings(extent: int, n: int, most: int) -> list:
    """Every split of `extent` into `n` factors whose innermost is at most `most`."""
    divisors = [d for d in range(1, extent + 1) if extent % d == 0]
    out = []
    for inner in itertools.product(divisors, repeat=n - 1):
        rest = int(np.prod(inner))
        if inner[-1] <= most and extent % rest == 0:
            out.append([extent // rest, *inner])
    return out


@pytest.mark.parametrize("data, intrin", [("uint8", "dp4a_u8s8s32"), ("int8", "dp4a_s8s8s32")])
def test_int8_conv_is_scheduled_on_dp4a(data, intrin, target):
    sch = cuda_default.default_schedule(_kernel(int8_conv(ci=16, co=32, hw=14, data=data), target), target)
    assert sch is not None
    assert trace_uses_intrinsic(sch.trace) == intrin
    text = sch.mod.script()
    # operands staged in shared memory, accumulators in registers, threads over channels and pixels
    assert text.count('scope="shared"') >= 2 and 'scope="local"' in text
    for axis in ("blockIdx.x", "blockIdx.y", "threadIdx.x", "threadIdx.y"):
        assert axis in text
    # data and weights packed by 4 input channels: [n, c/4, y, x, 4] and [k, c/4, r, s, 4]
    assert re.search(r"pad_temp = T.sblock_alloc_buffer\(\(T.int64\(1\), T.int64\(4\), T.int64\(16\), "
                     r"T.int64\(16\), T.int64\(4\)\), \"u?int8\"\)", text)
    assert "meta_schedule.layout_rewrite_preproc" in text


def test_dp4a_only_where_it_fits(target):
    """Input channels not a multiple of 4, grouped convs and fp32 convs keep TVM's GPU schedules;
    the config's build.schedules.cuda_int8_dp4a: false switches the schedule off."""
    assert cuda_default.default_schedule(_kernel(int8_conv(ci=6, co=8, hw=10), target), target) is None
    assert cuda_default.default_schedule(_kernel(conv_bias_relu(), target), target) is None
    assert cuda_default.default_schedule(_kernel(conv_bias_relu(ci=8, co=16, groups=4), target), target) is None
    kernel = _kernel(int8_conv(ci=16, co=8, hw=10), target)
    assert cuda_default.default_schedule(kernel, target) is not None
    assert schedule_family(target).default_schedule(kernel, target)[1] == "cuda_dp4a"
    assert schedule_family(target, ScheduleOptions(cuda_int8_dp4a=False)) is None


@needs_nvcc
def test_cuda_build_runs_dp4a_and_nvcc_compiles_it(target):
    """`harness run --target cuda`'s build: the int8 conv that fits runs `__dp4a` (PTX `dp4a.u32.s32`:
    uint8 data x int8 weights), the one that does not gets TVM's schedule; the weights were
    repacked at build (no kernel reads the OIHW weights of the dp4a conv)."""
    from tvm.support import nvcc

    with _nvcc_mode():
        built = compile_module(two_convs(), target)
    source = cuda_source(built.executable)
    kernels = _kernels(source)
    dp4a = [name for name, body in kernels.items() if "__dp4a(" in body]
    assert len(dp4a) == 1 and dp4a[0].startswith("fused_conv2d_") and "prepacked" in dp4a[0]
    packed = [name for name in kernels if "prepacked" in name]
    assert len(packed) == 2  # the data packing (and padding) kernel, and the conv
    assert "param_0_global_ptr" in kernels[dp4a[0]]  # packed [k, c/4, r, s, 4] weights, a constant
    assert not any("param_0_global_ptr[" in body and "param_0_ptr[" in body for body in kernels.values())
    with tvm.target.Target(CUDA):
        ptx = bytes(nvcc.compile_cuda(source, target_format="ptx", arch="sm_90", compiler="nvcc"))
    assert b"dp4a.u32.s32" in ptx


def _space_sample(task, target, seed: int):
    from tvm.s_tir import meta_schedule as ms

    from harness.tune.spaces import cuda_int8_dp4a_space

    space = cuda_int8_dp4a_space(target)
    ctx = ms.TuneContext(mod=task.dispatched[0], target=target, space_generator=space.space_generator(),
                         task_name=task.task_name, rand_state=seed, num_threads=1)
    [sch] = ctx.generate_design_space()
    return sch


def test_dp4a_search_space_replays_every_tile(target):
    """The search re-plays a sample's trace with other tile decisions (mutation, database records):
    tile choices, 1-wide ones included, replay (same loops each time) and keep the intrinsic."""
    from tvm import s_tir

    [task] = tunable_tasks(int8_conv(ci=16, co=32, hw=14), target)
    trace = _space_sample(task, target, 0).trace
    samples = [inst for inst in trace.insts if inst.kind.name == "SamplePerfectTile"]
    assert len(samples) == 4  # output channels (3 levels), rows, columns (3 levels), input channels
    choices = []
    for inst in samples:
        decision = [int(v) for v in trace.decisions[inst]]
        choices.append(_tilings(int(np.prod(decision)), len(decision), int(inst.attrs[1])))
    combos = list(itertools.product(*choices))
    assert len(combos) > 100
    unit = tuple([opts[0][0] * int(np.prod(opts[0][1:])), *([1] * (len(opts[0]) - 1))] for opts in choices)
    picked = random.Random(0).sample(combos, 24) + [unit]  # 1-wide tiles everywhere among them
    for combo in picked:
        replay = trace
        for inst, decision in zip(samples, combo):
            replay = replay.with_decision(inst, [int(v) for v in decision], remove_postproc=True)
        sch = s_tir.Schedule(task.dispatched[0])
        replay.apply_to_schedule(sch, remove_postproc=True)
        assert trace_uses_intrinsic(sch.trace) == "dp4a_u8s8s32"


@needs_nvcc
def test_model_tuning_searches_the_dp4a_space_and_the_build_applies_it(target, tmp_path):
    """`harness tune --target cuda` on an int8 model, with a canned runner instead of a GPU: the
    default dp4a schedule is kept as a record, the search samples the dp4a space (every candidate
    built for sm_90 and tensorized), and the build takes the best record from the database."""
    from harness.tune.database import open_database, workload_records
    from harness.tune.search import tune_model
    from harness.tune.testing import CannedRunner

    mod = int8_conv(ci=16, co=32, hw=14)
    work_dir = str(tmp_path / "db")
    rng = random.Random(0)
    report = tune_model(mod, target, work_dir, trials=6, runner=CannedRunner(lambda _: rng.uniform(1e-4, 1e-3)),
                        seed=0)
    assert report.defaults_measured == 1 and report.trials == 6
    [task] = tunable_tasks(mod, target)
    records = workload_records(open_database(work_dir, target), task.dispatched[0])
    assert len(records) == 7
    assert all(trace_uses_intrinsic(rec.trace) == "dp4a_u8s8s32" for rec in records)
    assert len({str(rec.trace.decisions) for rec in records}) >= 5  # the samples differ
    best = min(records, key=lambda rec: float(rec.run_secs[0]))
    sch = tvm.s_tir.Schedule(best.workload.mod)
    best.trace.apply_to_schedule(sch, remove_postproc=False)
    threads = int(re.findall(r'T.thread_binding\(T.int64\((\d+)\), thread="threadIdx.x"\)', sch.mod.script())[-1])
    with _nvcc_mode():
        built = compile_module(mod, target, records=load_records([("db", work_dir)], target))
    assert built.report.from_database == [task.task_name] and not built.report.fallback
    # the conv with its weights packed at build (an unsplit copy of it may stay in the source too:
    # seen with a record applied on CUDA, 2026-12-02; it is the _prepacked one the build packs for)
    conv = [body for name, body in _kernels(cuda_source(built.executable)).items()
            if "__dp4a(" in body and "_prepacked" in name]
    assert len(conv) == 1
    ty = int(re.search(r'T.thread_binding\(T.int64\((\d+)\), thread="threadIdx.y"\)', sch.mod.script()).group(1))
    assert f"__launch_bounds__({threads * ty})" in conv[0]  # the best record's block of threads


@pytest.mark.slow
@needs_nvcc
def test_resnet18_int8_every_fitting_conv_on_dp4a(target):
    """A whole quantized ResNet-18 (small input) for sm_90: each int8 conv (all but the skipped
    first layer) runs `__dp4a`; nvcc compiles the module."""
    from harness.config import ModelConfig
    from harness.frontends import load_model
    from harness.quantize import qconfig, quantize

    model = load_model(ModelConfig(name="resnet18_v1", input_shape=[1, 3, 64, 64]))
    mod = bind_params(model.mod, model.params)
    rng = np.random.RandomState(0)
    calib = [{"data": rng.normal(size=(1, 3, 64, 64)).astype("float32")} for _ in range(2)]
    with qconfig(calibrate_mode="max", weight_scale="channel_max"):
        qmod = quantize(mod, calib_data=calib)
    int8_convs = {t.task_name for t in tunable_tasks(qmod, target)
                  if "conv2d" in t.task_name and '"int8")' in t.dispatched[0].script()}
    with _nvcc_mode():
        built = compile_module(qmod, target)
    kernels = _kernels(cuda_source(built.executable))
    dp4a = {name.split("_prepacked")[0] for name, body in kernels.items() if "__dp4a(" in body}
    assert len(int8_convs) >= 15  # 20 convs, the first skipped; several fused the same way are one task
    assert dp4a == int8_convs

"""Default CPU schedules (harness.schedules.cpu): the same numbers as the unscheduled build,
schedules that are really there (parallel + vectorized loops, `tirx.is_scheduled`), functions the
rule cannot handle left alone, the config's switches, and a whole ResNet-18 at a small input."""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import tvm
from tvm import relax

from harness.build import bind_params, compile_module, walk_modules
from harness.build.passes.apply_database import TuningRecords
from harness.build.pipeline import fuse_and_schedule, fused, relax_pipeline
from harness.schedules import ScheduleOptions, schedule_family
from harness.schedules import cpu as cpu_default
from harness.schedules.analysis import SCHEDULED_ATTR
from harness.targets import llvm_target, vector_bits
from tests.helpers import rel_err

RNG = np.random.RandomState(0)


@pytest.fixture(scope="module")
def target():
    return tvm.target.Target(llvm_target())


def _module(shape, dtype, body):
    """Relax module main(x) = body(x) (constants bound inside)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(body(bb, x))
        bb.emit_func_output(out)
    return bb.get()


def _const(a):
    return relax.const(np.ascontiguousarray(a))


def conv_bias_relu(ci=8, co=16, hw=14, k=3, stride=1, groups=1, dilation=1):
    w = RNG.normal(size=(co, ci // groups, k, k)).astype("float32")
    b = RNG.normal(size=(1, co, 1, 1)).astype("float32")

    def body(bb, x):
        y = bb.emit(relax.op.nn.conv2d(x, _const(w), strides=stride, padding=dilation * (k // 2),
                                       dilation=dilation, groups=groups))
        return relax.op.nn.relu(bb.emit(relax.op.add(y, _const(b))))

    return _module((1, ci, hw, hw), "float32", body)


def dense_bias(m=2, k=48, n=40):
    w = RNG.normal(size=(k, n)).astype("float32")  # (in, out): what the frontends fold W^T into
    b = RNG.normal(size=(n,)).astype("float32")
    return _module((m, k), "float32", lambda bb, x: relax.op.add(bb.emit(relax.op.matmul(x, _const(w))), _const(b)))


def pools(c=16, hw=15):
    def body(bb, x):
        mp = bb.emit(relax.op.nn.max_pool2d(x, pool_size=3, strides=2, padding=1))
        ap = bb.emit(relax.op.nn.avg_pool2d(mp, pool_size=2, strides=1))
        return relax.op.nn.adaptive_avg_pool2d(ap, output_size=1)

    return _module((1, c, hw, hw), "float32", body)


def odd_pools(c=8, hw=17):
    """17-wide outputs (widened and sliced back): 3x3/1 average pools with and without the padding
    counted, a 3x3/1 max pool, and a ceil-mode max pool (left as it is)."""
    def body(bb, x):
        a = bb.emit(relax.op.nn.avg_pool2d(x, pool_size=3, strides=1, padding=1, count_include_pad=True))
        b = bb.emit(relax.op.nn.avg_pool2d(a, pool_size=3, strides=1, padding=1, count_include_pad=False))
        m = bb.emit(relax.op.nn.max_pool2d(b, pool_size=3, strides=1, padding=1))
        return relax.op.nn.max_pool2d(m, pool_size=3, strides=2, padding=1, ceil_mode=True)

    return _module((1, c, hw, hw), "float32", body)


def int8_conv(ci=16, co=24, hw=12, k=3, epilogue=True, stride=1, data="uint8", groups=1, weight_bits=8):
    """uint8 (or int8) x int8 -> int32 conv; with `epilogue`, realize.py's dequantize / bias / ReLU /
    requantize chain after it (cast, per-channel multiply, add, relu, multiply, floor(+0.5), clip,
    cast); with epilogue "int_bias", an int32 bias add (integers all through: exact). Weights of
    `weight_bits` bits, symmetric (as the quantizer's nbit_weight makes them)."""
    top = 2 ** (weight_bits - 1) - 1
    w = RNG.randint(-top, top + 1, size=(co, ci // groups, k, k)).astype("int8")
    scale = RNG.uniform(1e-3, 1e-2, size=(1, co, 1, 1)).astype("float32")
    bias = RNG.normal(size=(1, co, 1, 1)).astype("float32")

    def body(bb, x):
        acc = bb.emit(relax.op.nn.conv2d(x, _const(w), strides=stride, padding=k // 2, groups=groups,
                                         out_dtype="int32"))
        if not epilogue:
            return acc
        if epilogue == "int_bias":
            return relax.op.add(acc, _const(np.rint(bias * 1000).astype("int32")))
        y = bb.emit(relax.op.multiply(bb.emit(relax.op.astype(acc, "float32")), _const(scale)))
        y = bb.emit(relax.op.nn.relu(bb.emit(relax.op.add(y, _const(bias)))))
        codes = bb.emit(relax.op.floor(bb.emit(relax.op.add(bb.emit(relax.op.multiply(y, relax.const(20.0, "float32"))),
                                                            relax.const(0.5, "float32")))))
        return relax.op.astype(bb.emit(relax.op.clip(codes, 0, 255)), "uint8")

    return _module((1, ci, hw, hw), data, body)


# These tests are about the dot-product, depthwise and plain schedules: on AMX hosts the 8-bit convs
# would get AMX tiles first (tests/tune/test_amx.py tests those), and on CPUs without VNNI the 3x3
# ones integer Winograd (tests/tune/test_winograd_int8.py), so the builds here have both off.
DOT = dict(cpu_int8_amx=False, cpu_int8_winograd=False)
NO_AMX = ScheduleOptions(**DOT)
PLAIN_INT8 = ScheduleOptions(cpu_int8_dot=False, **DOT)  # 8-bit convs on the plain schedule
# the tests that read a kernel's schedule read NCHW convs (tests/tune/test_packed_int8.py has the
# channel-blocked ones the builds here get between int8 convs)
NCHW_INT8 = ScheduleOptions(cpu_int8_blocked=False, **DOT)


def _family(target, options=None):
    return schedule_family(target, options or NO_AMX)


def _pipeline(target, options=None):
    return relax_pipeline(target, _family(target, options))


def _run(mod, x, target, on: bool, options=None):
    built = compile_module(mod, target, schedules=(options or NO_AMX) if on else ScheduleOptions.none())
    vm = relax.VirtualMachine(built.executable, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def _scheduled_funcs(mod, target, int8_dot=True, int8_depthwise=True):
    """{name: PrimFunc} of `mod` fused and given default schedules (fails if one was not)."""
    fmod = fused(mod, target, _family(target, NCHW_INT8))
    names = [gv.name_hint for gv, f in fmod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    with target:
        smod = cpu_default.default_schedule_pass(target, int8_dot=int8_dot, int8_depthwise=int8_depthwise,
                                                 int8_amx=False)(fmod)
    out = {}
    for name in names:
        func = smod[name]
        assert func.attrs is not None and bool(func.attrs.get(SCHEDULED_ATTR, False)), name
        out[name] = func
    return out


CASES = {
    "conv_bias_relu": (conv_bias_relu(), (1, 8, 14, 14), "float32"),
    "conv_stride2": (conv_bias_relu(ci=6, co=12, hw=13, k=3, stride=2), (1, 6, 13, 13), "float32"),
    # a stem-like 7x7 / 2 conv whose padded rows (22 wide) are stored de-interleaved
    "conv_7x7_stride2": (conv_bias_relu(ci=3, co=16, hw=16, k=7, stride=2), (1, 3, 16, 16), "float32"),
    "grouped_conv": (conv_bias_relu(ci=8, co=16, groups=4), (1, 8, 14, 14), "float32"),
    "depthwise_dilated": (conv_bias_relu(ci=16, co=16, groups=16, dilation=2), (1, 16, 14, 14), "float32"),
    "dense": (dense_bias(), (2, 48), "float32"),
    # more rows than one register tile holds: two tiles of rows, each streaming the packed weights
    "dense_batch16": (dense_bias(m=16, k=40, n=32), (16, 40), "float32"),
    "pools": (pools(), (1, 16, 15, 15), "float32"),
    "int8_conv_int32": (int8_conv(epilogue=False), (1, 16, 12, 12), "uint8"),
    "int8_conv_dequantize": (int8_conv(), (1, 16, 12, 12), "uint8"),
    # output widths with no divisor near the vector length: computed wider, sliced back
    "conv_odd_width": (conv_bias_relu(ci=8, co=16, hw=17), (1, 8, 17, 17), "float32"),
    "conv_odd_width_stride2": (conv_bias_relu(ci=6, co=12, hw=35, stride=2), (1, 6, 35, 35), "float32"),
    "int8_conv_odd_width": (int8_conv(ci=16, co=24, hw=17, epilogue=False), (1, 16, 17, 17), "uint8"),
    "pools_odd_width": (odd_pools(), (1, 8, 17, 17), "float32"),
    # 12 output channels: no whole vector of them for the dot-product schedule (the plain one runs)
    "int8_conv_12_channels": (int8_conv(ci=6, co=12, hw=12, epilogue="int_bias"), (1, 6, 12, 12), "uint8"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_numbers_as_unscheduled(case, target):
    mod, shape, dtype = CASES[case]
    x = RNG.randint(0, 256, size=shape).astype(dtype) if dtype == "uint8" else RNG.normal(size=shape).astype(dtype)
    funcs = _scheduled_funcs(mod, target)  # every kernel got a default schedule
    assert any("T.parallel" in f.script() or "T.vectorized" in f.script() for f in funcs.values())
    ref = _run(mod, x, target, on=False)
    got = _run(mod, x, target, on=True)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    if ref.dtype == np.float32:
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))
    elif case == "int8_conv_dequantize":  # uint8 codes: fp32 epilogue, at most a rounding step apart
        assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1
        assert (got == ref).mean() > 0.99
    else:  # int32 accumulators: exact
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("case", ["conv_bias_relu", "int8_conv_dequantize"])
def test_conv_is_parallel_vectorized_register_tiled(case, target):
    funcs = _scheduled_funcs(CASES[case][0], target, int8_dot=False)  # int8: the plain schedule
    [conv] = [f for name, f in funcs.items() if "conv2d" in name]
    text = conv.script()
    assert "T.parallel(" in text and "T.vectorized(" in text and "T.unroll(" in text
    assert '"tirx.is_scheduled": True' in text
    assert '_init"' in text  # the accumulator is initialized apart (decompose_reduction)


def _pad_shape(func) -> list:
    """The shapes of the function's padding buffers (its TVMScript: `pad_temp = T.sblock_alloc_buffer((...))`)."""
    return [[int(d) for d in re.findall(r"T\.int64\((\d+)\)", line[line.index("(("):line.index("))") + 1])]
            for line in func.script().splitlines() if re.match(r"\s*pad\w* = T\.sblock_alloc_buffer", line)]


def test_stride2_conv_reads_deinterleaved_rows(target):
    """A stride-2 conv's padded data is stored [n, c, y, x % 2, x / 2]: the vector of output columns
    reads contiguous bytes (the numbers: test_same_numbers_as_unscheduled[conv_7x7_stride2]); the
    max pool (a padding stage too) keeps its layout."""
    conv = next(f for name, f in _scheduled_funcs(CASES["conv_7x7_stride2"][0], target).items() if "conv2d" in name)
    assert _pad_shape(conv) == [[1, 3, 22, 2, 11]]
    pool = next(f for name, f in _scheduled_funcs(CASES["pools"][0], target).items() if "max_pool" in name)
    assert _pad_shape(pool) == [[1, 16, 17, 17]]


@pytest.mark.parametrize("rows", [1, 16])
def test_dense_streams_packed_weights(rows, target):
    """A dense layer's weights W[k, n] are packed [n / v, k, v] once at build (a layout-rewrite
    block), at batch 1 and at batch 16: each vector of outputs reads its weights contiguously
    (unpacked, a batch-16 tile reads one vector per row of W: vgg19's 25088 -> 4096 dense ran
    12x slower)."""
    mod = dense_bias(m=rows, k=64, n=48)
    [func] = [f for name, f in _scheduled_funcs(mod, target).items() if "matmul" in name]
    text = func.script()
    assert '"meta_schedule.layout_rewrite_preproc": 1' in text
    vec = cpu_default.pick_vector_factor(48, vector_bits(target) // 32)
    assert f"T.sblock_alloc_buffer((T.int64({48 // vec}), T.int64(64), T.int64({vec}))" in text
    m = compile_module(mod, target)
    assert m.report.kernels  # builds (the packing folded into the constant)


def test_vector_factor_and_target_width():
    assert cpu_default.pick_vector_factor(56, 8) == 8
    assert cpu_default.pick_vector_factor(28, 8) == 7
    assert cpu_default.pick_vector_factor(7, 16) == 7
    assert cpu_default.pick_vector_factor(1000, 16) == 10
    assert vector_bits(tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"})) == 512
    assert vector_bits(tvm.target.Target({"kind": "llvm", "mcpu": "znver2"})) == 256
    assert vector_bits(tvm.target.Target({"kind": "llvm", "mcpu": "x86-64"})) == 128


def test_odd_output_widths_are_padded_to_vectorize(target):
    # padded only where it at least halves the vector instructions of a row
    assert [cpu_default.padded_width(w, 8) for w in (17, 71, 73, 149, 147, 35, 56, 28, 14, 7, 1)] == \
        [18, 72, 80, 152, 147, 35, 56, 28, 14, 7, 1]
    # whole vectors where they are at most an eighth wider (LLVM splits 15-lane vectors): 147 and 149
    # as 160, not 150; 71 as 75 (80 is 13% wider)
    assert [cpu_default.padded_width(w, 16) for w in (56, 35, 7, 147, 149, 71)] == [56, 35, 7, 160, 160, 75]
    funcs = _scheduled_funcs(CASES["conv_odd_width"][0], target)
    [(name, conv)] = [(n, f) for n, f in funcs.items() if "conv2d" in n]
    assert "strided_slice" in name  # the slice back to 17 columns is fused into the conv's kernel
    text = conv.script()
    # fp32 lanes of this target: AVX2 computes 18 columns as 3 vectors of 6, AVX-512 as 2 of 9
    # (a 17-wide row is scalar)
    lanes = vector_bits(target) // 32
    wide = cpu_default.padded_width(17, lanes)
    assert wide > 17 and f"T.vectorized(T.int64({cpu_default.pick_vector_factor(wide, lanes)}))" in text
    assert [int(v) for v in conv.params[-1].shape] == [1, 16, 17, 17]  # output as it was
    pools = sorted(_scheduled_funcs(CASES["pools_odd_width"][0], target))  # the ceil-mode pool stays
    assert pools == ["fused_avg_pool2d1_strided_slice", "fused_avg_pool2d_strided_slice",
                     "fused_max_pool2d_strided_slice", "max_pool2d1"]


def test_unhandled_and_scheduled_functions_are_left_alone(target):
    from tvm.script import tirx as T

    @T.prim_func(private=True, s_tir=True)
    def dynamic(a: T.handle, b: T.handle):
        n = T.int64()
        A = T.match_buffer(a, (n,), "float32")
        B = T.match_buffer(b, (n,), "float32")
        for i in range(n):
            with T.sblock("B"):
                vi = T.axis.spatial(n, i)
                B[vi] = A[vi] * T.float32(2)

    assert cpu_default.schedule_func(dynamic, target) is None  # symbolic extent: not handled
    done = cpu_default.schedule_func(fused(conv_bias_relu(), target, _family(target))["fused_conv2d_add_relu"],
                                     target)
    assert done is not None and cpu_default.schedule_func(done, target) is None  # already scheduled
    mod = tvm.IRModule({"dynamic": dynamic, "done": done})
    with target:
        out = cpu_default.default_schedule_pass(target)(mod)
    assert out["dynamic"].same_as(dynamic) and out["done"].same_as(done)


def test_database_kernels_are_kept(target):
    """A kernel a tuning database schedules keeps that schedule; the others get the defaults."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    mod = _module((1, 8, 14, 14), "float32", lambda bb, x: relax.op.nn.relu(bb.emit(relax.op.nn.max_pool2d(
        bb.emit(relax.op.nn.conv2d(x, _const(RNG.normal(size=(16, 8, 3, 3)).astype("float32")), padding=1)),
        pool_size=2, strides=2))))
    family = _family(target)
    [task] = [t for t in ms.relax_integration.extract_tasks(fused(mod, target, family), target)
              if "conv2d" in t.task_name]
    db = ms.database.MemoryDatabase()
    sch = s_tir.Schedule(task.dispatched[0])
    sch.parallel(sch.get_loops(sch.get_sblock("conv2d_nchw"))[1])  # "tuned": output channels in parallel
    db.commit_tuning_record(ms.database.TuningRecord(sch.trace, db.commit_workload(task.dispatched[0]), [1e-3], target))

    records = TuningRecords()
    records.add("test", db.get_all_tuning_records())
    scheduled_by = {}
    out = fuse_and_schedule(mod, target, family, records, scheduled_by)
    assert scheduled_by[task.task_name] == "database:test"
    assert all(v.startswith("default:") for k, v in scheduled_by.items() if k != task.task_name)
    funcs = {gv.name_hint: f for gv, f in out.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    conv = funcs.pop(task.task_name).script()
    assert "T.parallel(T.int64(16))" in conv and "T.vectorized(" not in conv  # the database's schedule
    assert funcs and all("T.vectorized(" in f.script() for f in funcs.values())  # defaults elsewhere
    x = RNG.normal(size=(1, 8, 14, 14)).astype("float32")
    with target, tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(mod, target=target, relax_pipeline=relax_pipeline(target, family, records))
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, _run(mod, x, target, on=False), rtol=1e-5, atol=1e-5)


def test_dlight_rule(target):
    from tvm.s_tir import dlight as dl

    fmod = fused(dense_bias(), target, _family(target))
    with target:
        out = dl.ApplyDefaultSchedule(cpu_default.dlight_rule())(fmod)
    text = out["fused_matmul_add"].script()
    assert "T.vectorized(" in text and '"tirx.is_scheduled": True' in text


def test_switch(target):
    """The config's build.schedules pick the family (or none: TVM's own pipeline)."""
    cuda = tvm.target.Target({"kind": "cuda", "arch": "sm_90"})
    assert isinstance(schedule_family(target), cpu_default.CPUSchedules)
    assert schedule_family(target).int8_dot and not schedule_family(target, PLAIN_INT8).int8_dot
    assert schedule_family(target, ScheduleOptions(cpu_default=False)) is None
    assert schedule_family(cuda, ScheduleOptions(cpu_default=False)).name == "cuda"
    assert schedule_family(cuda, ScheduleOptions(cuda_int8_dp4a=False)) is None
    assert relax_pipeline(target, None) == "default"


def test_resnet18_logits_unchanged(target):
    from harness.config import ModelConfig
    from harness.frontends import load_model

    model = load_model(ModelConfig(name="resnet18_v1", input_shape=[1, 3, 64, 64]))
    mod = bind_params(model.mod, model.params)
    x = np.random.RandomState(3).normal(size=(1, 3, 64, 64)).astype("float32")
    ref = _run(mod, x, target, on=False)
    got = _run(mod, x, target, on=True)
    assert rel_err(got, ref) <= 1e-4
    assert got.argmax() == ref.argmax()


def test_amd_cpus_build_without_sse4a(monkeypatch):
    """LLVM assembles gathered int8 vectors with SSE4a's INSERTQ on Zen CPUs; beside 256-bit AVX code
    each one stalls (inception_v3's int8 convs with 17- and 71-wide outputs ran 43x slower). The
    harness's llvm targets switch SSE4a off on CPUs with AVX; the same kernel built for a plain
    `znver2` target still carries INSERTQ, so the check below can fail."""
    assert llvm_target("znver2")["mattr"] == ["-sse4a"]
    assert "mattr" not in llvm_target("skylake-avx512") and "mattr" not in llvm_target("x86-64")
    # 17 wide and not padded: no vector-sized divisor, so LLVM gathers the weights
    import harness.build.passes.pad_conv_width as widen

    monkeypatch.setattr(widen, "padded_width", lambda width, lanes: width)
    mod = int8_conv(ci=96, co=24, hw=17, k=3)

    def asm(tgt):
        tgt = tvm.target.Target(tgt)
        ex = tvm.compile(mod, tgt, relax_pipeline=_pipeline(tgt, PLAIN_INT8))  # the plain schedule's gathers
        return next(m.inspect_source("s") for m in [ex.mod, *ex.mod.imports] if m.kind == "llvm")

    assert "insertq" in asm({"kind": "llvm", "mcpu": "znver2", "num-cores": 2})
    assert "insertq" not in asm(llvm_target("znver2", 2))


# ----------------------------------------------------------------------------- 8-bit dot products

DOT_LLVM = {"vpdpbusd": "llvm.x86.avx512.vpdpbusd.512", 16: "llvm.x86.avx512.pmaddw.d.512",
            8: "llvm.x86.avx2.pmadd.wd"}
DOT_CASES = {  # (module, input shape, data dtype)
    "3x3_requantize": (int8_conv(ci=16, co=32, hw=12), (1, 16, 12, 12), "uint8"),
    "3x3_int_bias": (int8_conv(ci=16, co=32, hw=10, epilogue="int_bias"), (1, 16, 10, 10), "uint8"),
    # 32 output channels: two channel blocks even for 16-lane instructions (AVX-512), so that the
    # register tile has a choice of widths on every CPU
    "1x1_stride2_int8_data": (int8_conv(ci=8, co=32, hw=13, k=1, stride=2, epilogue="int_bias", data="int8"),
                              (1, 8, 13, 13), "int8"),
    "3x3_stride2_int8_data": (int8_conv(ci=4, co=16, hw=15, stride=2, data="int8"), (1, 4, 15, 15), "int8"),
}


def _codes(shape, dtype, seed=1):
    lo, hi = (0, 256) if dtype == "uint8" else (-128, 128)
    return np.random.RandomState(seed).randint(lo, hi, size=shape).astype(dtype)


def _run_switch(mod, x, target, dot: bool):
    return _run(mod, x, target, on=True, options=ScheduleOptions(cpu_int8_dot=dot, **DOT))


@pytest.mark.parametrize("case", sorted(DOT_CASES))
def test_int8_conv_on_the_cpu_dot_product(case, target):
    """8-bit convs run on the CPU's exact dot-product instruction (vpmaddwd here: AVX2), with packed
    channels and weights packed once at build time; the numbers are the plain schedule's."""
    from harness.schedules.intrinsics import cpu_int8_dots

    mod, shape, dtype = DOT_CASES[case]
    dots = cpu_int8_dots(target, dtype)
    if not dots:
        pytest.skip(f"no 8-bit dot product on {target}")  # x86 CPUs without AVX2 (none seen in CI)
    dot = dots[0]  # every case has a multiple of 16 output and of 4 input channels: the best fits
    funcs = _scheduled_funcs(mod, target)
    [conv] = [f for name, f in funcs.items() if "conv2d" in name]
    text = conv.script()
    assert DOT_LLVM["vpdpbusd" if dot[2] == 4 else dot[1]] in text
    assert "meta_schedule.layout_rewrite_preproc" in text  # the weight packing block ...
    built = fuse_and_schedule(mod, target, _family(target))
    names = [gv.name_hint for gv in built.functions.keys()]
    assert not [n for n in names if n.endswith("_weight_prepack")]  # ... was split out and folded
    [packed] = [n for n in names if n.endswith("_prepacked")]
    assert "layout_rewrite_preproc" not in built[packed].script()
    ref = _run_switch(mod, _codes(shape, dtype), target, dot=False)
    got = _run_switch(mod, _codes(shape, dtype), target, dot=True)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    if got.dtype == np.int32:  # integers all through: exact
        np.testing.assert_array_equal(got, ref)
    else:  # the same fp32 epilogue on the same int32 sums
        assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1 and (got == ref).mean() > 0.99


def test_int8_dot_convs_keep_odd_widths(target):
    """An 8-bit conv at an odd output width (17, inception_v3's) on the dot product is not computed
    wider and sliced back, as the plain schedule's is: the dot product's vector is output channels,
    and the slice would leave the requantizing epilogue in a kernel of its own (int32 sums written
    and read again). The same codes either way."""
    from harness.schedules.intrinsics import cpu_int8_dots

    if not cpu_int8_dots(target, "uint8"):
        pytest.skip(f"no 8-bit dot product on {target}")  # x86 CPUs without AVX2 (none seen in CI)
    mod, shape = int8_conv(ci=16, co=32, hw=17), (1, 16, 17, 17)

    def kernels(options):
        fmod = fused(mod, target, _family(target, options))
        return [gv.name_hint for gv, f in fmod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]

    assert not [n for n in kernels(NO_AMX) if "strided_slice" in n]
    assert [n for n in kernels(PLAIN_INT8) if "strided_slice" in n]
    ref = _run_switch(mod, _codes(shape, "uint8"), target, dot=False)
    got = _run_switch(mod, _codes(shape, "uint8"), target, dot=True)
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1 and (got == ref).mean() > 0.99


def test_int8_dot_product_per_cpu():
    """Which instruction each x86 CPU kind gets: VNNI for unsigned data where there is VNNI; the
    exact int16 vpmaddwd otherwise (AVX-512BW: 16 lanes, AVX2: 8); nothing without AVX2. VNNI in
    zmm (16 lanes) and ymm (8: AVX512-VL, or AVX-VNNI on CPUs without AVX-512)."""
    from harness.schedules.intrinsics import cpu_int8_dots

    def dots(mcpu, dtype="uint8"):
        return [d[1:] for d in cpu_int8_dots({"kind": "llvm", "mcpu": mcpu}, dtype)]

    assert dots("cascadelake") == [(16, 4), (8, 4), (16, 2), (8, 2)] and dots("znver4")[:2] == [(16, 4), (8, 4)]
    assert dots("alderlake") == [(8, 4), (8, 2)]  # AVX-VNNI (VEX, 256-bit) without AVX-512
    assert dots("cascadelake", "int8") == [(16, 2), (8, 2)]  # vpdpbusd multiplies unsigned data only
    assert dots("skylake-avx512") == [(16, 2), (8, 2)]
    assert dots("haswell") == [(8, 2)] and dots("znver2", "int8") == [(8, 2)]
    assert dots("x86-64") == [] and dots("znver2", "float32") == []


def test_seven_bit_weights_choose_pmaddubsw():
    """Weights of at most 7 bits (quantize.nbit_weight: 7) put unsigned data on vpmaddubsw (4 per
    lane, exact: 2 x 255 x 64 < 2^15) where there is no VNNI; VNNI CPUs and int8 data are unchanged."""
    from harness.schedules.intrinsics import cpu_int8_dots

    def dots(mcpu, dtype="uint8", bits=7):
        return [(d[0].endswith("pmaddubsw"),) + d[1:] for d in cpu_int8_dots({"kind": "llvm", "mcpu": mcpu}, dtype, bits)]

    assert dots("haswell") == [(True, 8, 4), (False, 8, 2)] and dots("haswell", bits=8) == [(False, 8, 2)]
    assert dots("skylake-avx512") == [(True, 16, 4), (True, 8, 4), (False, 16, 2), (False, 8, 2)]
    assert dots("cascadelake") == dots("cascadelake", bits=8)  # vpdpbusd is exact at 8 bits
    assert dots("znver2", "int8") == [(False, 8, 2)]  # vpmaddubsw's first operand is unsigned


@pytest.mark.parametrize("mcpu,feature,register", [("haswell", "avx2", "ymm"),
                                                   ("skylake-avx512", "avx512bw", "zmm")])
def test_seven_bit_weights_run_on_pmaddubsw_exactly(mcpu, feature, register):
    """A conv with 7-bit weights built for a CPU without VNNI: its kernel multiplies on vpmaddubsw
    (read from the assembly, on any host), the 8-bit build does not; run where this host has the
    instruction set, with the largest data codes (255) as well: equal to the plain schedule's sums."""

    from harness.targets import target_has_feature

    tgt = tvm.target.Target(llvm_target(mcpu, 2))
    mod = int8_conv(ci=16, co=32, hw=10, epilogue="int_bias", weight_bits=7)
    seven = ScheduleOptions(int8_weight_bits=7, **DOT)
    built = compile_module(mod, tgt, schedules=seven)
    eight = compile_module(mod, tgt, schedules=NO_AMX)

    def asm(b):
        return next(m.inspect_source("s") for m in [b.executable.mod, *b.executable.mod.imports] if m.kind == "llvm")

    assert re.search(rf"vpmaddubsw\s+%{register}", asm(built)) and "vpmaddubsw" not in asm(eight)
    host = tvm.target.Target(llvm_target())
    if not target_has_feature(host, feature):
        pytest.skip(f"compiled and read only: this host has no {feature} to run {mcpu} code")
    plain = compile_module(mod, tgt, schedules=ScheduleOptions.none())
    for x in (_codes((1, 16, 10, 10), "uint8"), np.full((1, 16, 10, 10), 255, "uint8")):
        got, ref = (relax.VirtualMachine(b.executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
                    for b in (built, plain))
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("mcpu,channels,instruction", [
    ("cascadelake", 32, r"vpdpbusd\s"),
    ("cascadelake", 24, r"vpdpbusd\s+%ymm"),  # 24 output channels: no whole zmm of them, VNNI in ymm
    ("alderlake", 32, r"\{vex\}\s+vpdpbusd\s+%ymm"),  # AVX-VNNI: the VEX encoding, no AVX-512
    ("skylake-avx512", 32, r"vpmaddwd\s+%zmm"),
    ("haswell", 32, r"vpmaddwd\s+%ymm"),
])
def test_int8_dot_compiles_for_other_cpus(mcpu, channels, instruction):
    """Built for CPUs this machine may not be (no run): the instruction is in the kernel's assembly."""
    tgt = tvm.target.Target(llvm_target(mcpu, 4))
    mod = int8_conv(ci=16, co=channels, hw=12)
    ex = tvm.compile(mod, tgt, relax_pipeline=_pipeline(tgt))
    asm = next(m.inspect_source("s") for m in [ex.mod, *ex.mod.imports] if m.kind == "llvm")
    assert re.search(instruction, asm), instruction


def _workspace_calls_per_tile(ex) -> dict:
    """{parallel loop body: TVMBackendAllocWorkspace calls in it} of a built module's LLVM IR: a
    call there runs once per tile (the kernels' own buffers, e.g. padding, are allocated outside)."""
    text = "".join(m.inspect_source("ll") for m in walk_modules(ex.mod) if m.kind == "llvm")
    calls = {}
    for func in text.split("\ndefine ")[1:]:
        name = re.search(r"@([\w.$]+)\(", func.split("\n", 1)[0]).group(1)  # (attributes may hold parentheses)
        if "parallel_lambda" in name:
            calls[name] = func.split("\n}", 1)[0].count("@__TVMBackendAllocWorkspace")
    return calls


@pytest.mark.parametrize("mcpu,case,weight_bits", [
    ("haswell", "conv_bias_relu", 8),  # fp32, the register-tiled schedule's accumulator
    ("haswell", "int8_conv_dequantize", 8),  # vpmaddwd
    ("haswell", "int8_conv_dequantize", 7),  # vpmaddubsw
    ("cascadelake", "int8_conv_dequantize", 8),  # vpdpbusd (VNNI)
    ("haswell", "dense", 8),
])
def test_no_workspace_allocation_per_tile(mcpu, case, weight_bits):
    """The accumulator tile and the dot product's operands live in registers / on the stack: no
    workspace allocation inside the parallel loop (TVM 0.27 turns every "local" buffer, and every
    named temporary of a tensor intrinsic, into a TVMBackendAllocWorkspace call per iteration;
    on Zen 3 removing them made resnet50_v1 int8 1.32x and mobilenetv2_1.0 fp32 1.82x faster)."""
    tgt = tvm.target.Target(llvm_target(mcpu, 4))
    mod = int8_conv(ci=16, co=32, hw=12, weight_bits=weight_bits) if case.startswith("int8") else CASES[case][0]
    options = dataclasses.replace(NO_AMX, int8_weight_bits=weight_bits)
    ex = tvm.compile(mod, tgt, relax_pipeline=_pipeline(tgt, options))
    calls = _workspace_calls_per_tile(ex)
    assert calls, "no parallel loop in the build"
    assert not any(calls.values()), calls


@pytest.mark.parametrize("reduce_range", [False, True])
def test_no_workspace_allocation_per_tile_in_a_model(reduce_range):
    """A whole int8 mobilenetv2_1.0 (dot-product, depthwise and plain convs, pools, dense, the
    quantize / requantize kernels) built for an AVX2 CPU, with 8-bit and 7-bit weights: no kernel
    allocates inside its parallel loop."""
    from harness.quantize import apply_table, qconfig
    from tests.helpers import calibrated_model

    mod, table, _ = calibrated_model("mobilenetv2_1.0", 32, 0, 2)
    with qconfig(calibrate_mode="max", weight_scale="channel_max", reduce_range=reduce_range) as cfg:
        qmod = apply_table(mod, None, table, config=cfg)
    tgt = tvm.target.Target(llvm_target("haswell", 4))
    options = dataclasses.replace(NO_AMX, int8_weight_bits=7 if reduce_range else 8)
    calls = _workspace_calls_per_tile(tvm.compile(qmod, tgt, relax_pipeline=_pipeline(tgt, options)))
    assert len(calls) > 20
    assert not any(calls.values()), {k: v for k, v in calls.items() if v}


def test_int8_dot_search_space_tunes_the_register_tile(target, tmp_path):
    """`harness tune`'s search space for a dot-product conv: the default schedule with its
    register tile sampled. Every sample runs the instruction and, applied from a database at
    build time, gives the plain schedule's numbers (int32 out: exactly)."""
    from harness.tune.search import tunable_tasks
    from harness.schedules.intrinsics import cpu_int8_dots, trace_uses_intrinsic
    from tests.helpers import dot_space_sample, run_with_record

    mod, shape, dtype = DOT_CASES["3x3_int_bias"]
    if not cpu_int8_dots(target, dtype):
        pytest.skip(f"no 8-bit dot product on {target}")
    x = _codes(shape, dtype)
    ref = _run_switch(mod, x, target, dot=False)
    [task] = tunable_tasks(mod, target, NO_AMX)
    tiles = set()
    for seed in range(3):
        sch = dot_space_sample(task, target, seed)
        assert trace_uses_intrinsic(sch.trace) == cpu_int8_dots(target, dtype)[0][0]
        decisions = tuple(tuple(int(v) for v in d) for d in sch.trace.decisions.values())
        assert len(decisions) == 3  # channel blocks, rows, pixels of the register tile
        tiles.add(decisions)
        got = run_with_record(mod, x, target, task, sch, str(tmp_path / f"db{seed}"), NO_AMX)
        np.testing.assert_array_equal(got, ref)
    assert len(tiles) > 1  # the samples differ


@pytest.mark.parametrize("case", ["3x3_int_bias", "1x1_stride2_int8_data"])
def test_int8_dot_search_space_replays_every_tile(case, target):
    """The search re-plays a sample's trace with other tile decisions (mutation, database records):
    every register tile it may choose, 1-wide ones included, must replay (same loops each time)."""
    import itertools

    from tvm import s_tir

    from harness.tune.search import tunable_tasks
    from harness.schedules.intrinsics import cpu_int8_dots
    from tests.helpers import dot_space_sample

    mod, _, dtype = DOT_CASES[case]
    if not cpu_int8_dots(target, dtype):
        pytest.skip(f"no 8-bit dot product on {target}")
    [task] = tunable_tasks(mod, target, NO_AMX)
    trace = dot_space_sample(task, target, 0).trace
    samples = [inst for inst in trace.insts if inst.kind.name == "SamplePerfectTile"]
    choices = []
    for inst in samples:
        outer, inner = (int(v) for v in trace.decisions[inst])
        extent, most = outer * inner, int(inst.attrs[1])
        choices.append([[extent // f, f] for f in range(1, min(extent, most) + 1) if extent % f == 0])
    combos = list(itertools.product(*choices))
    assert len(combos) >= 4 and any(1 in (c[0][1], c[1][1], c[2][1]) for c in combos)
    for combo in combos:
        replay = trace
        for inst, decision in zip(samples, combo):
            replay = replay.with_decision(inst, decision, remove_postproc=True)
        replay.apply_to_schedule(s_tir.Schedule(task.dispatched[0]), remove_postproc=True)


# ----------------------------------------------------------------------------- 8-bit depthwise convs

DW_CASES = {  # (module, input shape, data dtype): mobilenet / efficientnet-lite depthwise shapes, small
    "3x3_requantize": (int8_conv(ci=32, co=32, hw=14, groups=32), (1, 32, 14, 14), "uint8"),
    "3x3_stride2_int8_data": (int8_conv(ci=48, co=48, hw=15, stride=2, epilogue="int_bias", data="int8", groups=48),
                              (1, 48, 15, 15), "int8"),
    "5x5_stride2_int_bias": (int8_conv(ci=32, co=32, hw=13, k=5, stride=2, epilogue="int_bias", groups=32),
                             (1, 32, 13, 13), "uint8"),
}


def _dw_lanes(target, channels: int) -> int:
    """The channel vector the depthwise schedule should pick: one vector of int32, else half of one."""
    bits = vector_bits(target)
    return next(n for n in (bits // 32, bits // 64) if channels % n == 0)


def _channel_vector(func) -> str:
    """The loop right around the depthwise conv's update block (its innermost loop)."""
    lines = func.script().splitlines()
    at = next(i for i, line in enumerate(lines) if 'T.sblock("group_conv2d_nchw_update")' in line)
    return lines[at - 1].strip()


@pytest.mark.parametrize("case", sorted(DW_CASES))
def test_int8_depthwise_conv_is_vectorized_across_channels(case, target):
    """8-bit depthwise convs get the channel-vector schedule: packed data and weights, the channel
    vector innermost (int32 lanes of the target) and the plain schedule's numbers."""
    mod, shape, dtype = DW_CASES[case]
    funcs = _scheduled_funcs(mod, target)
    [conv] = [f for name, f in funcs.items() if "conv2d" in name]
    lanes = _dw_lanes(target, shape[1])
    assert _channel_vector(conv) == f"for ax0_1 in T.vectorized(T.int64({lanes})):", _channel_vector(conv)
    text = conv.script()
    assert "meta_schedule.layout_rewrite_preproc" in text
    assert f"pad_temp = T.sblock_alloc_buffer((T.int64(1), T.int64({shape[1] // lanes}), " in text  # packed data
    names = [gv.name_hint for gv in fuse_and_schedule(mod, target, _family(target, NCHW_INT8)).functions.keys()]
    assert [n for n in names if n.endswith("_prepacked")] and not [n for n in names if n.endswith("_weight_prepack")]
    ref = _run_switch(mod, _codes(shape, dtype), target, dot=False)
    got = _run_switch(mod, _codes(shape, dtype), target, dot=True)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    if got.dtype == np.int32:  # integers all through: exact
        np.testing.assert_array_equal(got, ref)
    else:  # the same fp32 epilogue on the same int32 sums
        assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1 and (got == ref).mean() > 0.99


def test_int8_depthwise_schedule_scope(target):
    """Grouped convs with several channels per group, channel counts no vector divides, and the
    switch off keep the plain schedule (the output row is the vector)."""
    bits = vector_bits(target)
    odd = 6  # depthwise, and no channel vector of the target divides it (12 would: AVX2's half vector is 4)
    assert all(odd % n for n in (bits // 32, bits // 64))
    cases = [int8_conv(ci=32, co=32, hw=14, groups=8), int8_conv(ci=odd, co=odd, hw=14, groups=odd)]
    for mod in cases:
        [conv] = [f for name, f in _scheduled_funcs(mod, target).items() if "conv2d" in name]
        assert "ax0_1 in T.vectorized" not in _channel_vector(conv) and "T.vectorized" in _channel_vector(conv)
    off = _scheduled_funcs(DW_CASES["3x3_requantize"][0], target, int8_depthwise=False)
    [conv] = [f for name, f in off.items() if "conv2d" in name]
    assert "ax0_1 in T.vectorized" not in _channel_vector(conv)


@pytest.mark.parametrize("mcpu,register", [("skylake-avx512", "zmm"), ("haswell", "ymm")])
def test_int8_depthwise_compiles_for_other_cpus(mcpu, register):
    """Built for CPUs this machine may not be (no run): the 8-bit products of the channel vector are
    vpmaddwd on whole registers of the target (16 int32 lanes on AVX-512, 8 on AVX2)."""
    tgt = tvm.target.Target(llvm_target(mcpu, 4))
    ex = tvm.compile(DW_CASES["3x3_requantize"][0], tgt, relax_pipeline=_pipeline(tgt))
    asm = next(m.inspect_source("s") for m in [ex.mod, *ex.mod.imports] if m.kind == "llvm")
    assert re.search(rf"vpmaddwd\s+[^\n]*%{register}", asm)


def _mobilenetv2_like():
    """A small MobileNetV2: stem conv, two inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1
    project; the first with stride 2, the second with a residual add), global pool, dense."""
    import mxnet as mx
    from mxnet.gluon import nn

    from harness.models import _randomize_batchnorm

    class Block(mx.gluon.HybridBlock):
        def __init__(self, cin, cout, stride, **kwargs):
            super().__init__(**kwargs)
            mid = cin * 2
            self.residual = stride == 1 and cin == cout
            with self.name_scope():
                self.body = nn.HybridSequential()
                self.body.add(nn.Conv2D(mid, 1, use_bias=False, in_channels=cin), nn.BatchNorm(in_channels=mid),
                              nn.Activation("relu"),
                              nn.Conv2D(mid, 3, strides=stride, padding=1, groups=mid, use_bias=False, in_channels=mid),
                              nn.BatchNorm(in_channels=mid), nn.Activation("relu"),
                              nn.Conv2D(cout, 1, use_bias=False, in_channels=mid), nn.BatchNorm(in_channels=cout))

        def hybrid_forward(self, F, x):
            y = self.body(x)
            return x + y if self.residual else y

    net = nn.HybridSequential(prefix="mnv2like_")
    with net.name_scope():
        net.add(nn.Conv2D(16, 3, strides=2, padding=1, in_channels=3), nn.Activation("relu"),
                Block(16, 16, 2), Block(16, 16, 1), nn.GlobalAvgPool2D(), nn.Flatten(), nn.Dense(10, in_units=16))
    mx.random.seed(0)
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    _randomize_batchnorm(net, 0)
    net.hybridize()
    return net


def test_mobilenetv2_like_int8_agrees_with_fp32(target):
    """Int8 with the depthwise schedule gives what int8 gave before it (plain depthwise schedule),
    both agreeing with fp32; every depthwise kernel of the model took the channel-vector schedule."""
    from harness.frontends.mxnet import from_mxnet
    from harness.models import input_data
    from harness.peers import agreement
    from harness.quantize import calibrate, qconfig, apply_table

    shape = (1, 3, 32, 32)
    mod, params = from_mxnet(_mobilenetv2_like(), shape={"data": shape})
    fmod = bind_params(mod, params)
    calib = [{"data": input_data(shape, seed=10 + i)} for i in range(4)]
    with qconfig(calibrate_mode="max", weight_scale="channel_max") as cfg:
        table = calibrate(fmod, None, calib, config=cfg)
        qmod = apply_table(fmod, None, table, config=cfg)
    dws = [f for name, f in _scheduled_funcs(qmod, target).items() if "group_conv2d" in f.script()]
    assert len(dws) == 2
    for func in dws:
        assert _channel_vector(func).startswith("for ax0_1 in T.vectorized"), _channel_vector(func)
    x = input_data(shape, seed=0)
    fp32 = _run(fmod, x, target, on=True)
    after = _run(qmod, x, target, on=True)
    before = _run(qmod, x, target, on=True, options=ScheduleOptions(cpu_int8_depthwise=False, **DOT))
    assert rel_err(after, before) <= 1e-5
    g_after, g_before = agreement(after, fp32), agreement(before, fp32)
    assert g_after["cosine"] == pytest.approx(g_before["cosine"], abs=1e-6) and g_after["cosine"] >= 0.99, g_after
    assert g_after["top1_agree"] == 1.0


def test_a_record_for_other_weight_bits_is_not_applied(tmp_path, caplog):
    """A tuning record of a vpmaddubsw kernel (7-bit weights) reaches no build whose weights have 8
    bits (it would saturate), and one of a vpmaddwd kernel (8-bit weights) no build whose uint8 convs
    have 7 (it would run them at half vpmaddubsw's rate): those convs get the default schedule of
    their own weights, with one warning for all. Compiled for haswell (AVX2) and read, on any host."""
    import logging

    from tvm.s_tir import meta_schedule as ms

    from harness.schedules.intrinsics import trace_uses_intrinsic
    from harness.tune.database import load_records, open_database
    from harness.tune.search import tunable_tasks
    from harness.tune.spaces import cpu_int8_dot_space

    tgt = tvm.target.Target(llvm_target("haswell", 2))
    mod = int8_conv(ci=16, co=32, hw=10, epilogue="int_bias", weight_bits=7)
    options = {bits: ScheduleOptions(int8_weight_bits=bits, **DOT) for bits in (7, 8)}
    for made, other in ((7, 8), (8, 7)):
        [task] = tunable_tasks(mod, tgt, options[made])
        space = cpu_int8_dot_space(tgt, options[made].weight_bits(), amx=False)
        ctx = ms.TuneContext(mod=task.dispatched[0], target=tgt, task_name=task.task_name, rand_state=0,
                             space_generator=space.space_generator(), num_threads=1)
        [sch] = ctx.generate_design_space()
        assert ("pmaddubsw" in trace_uses_intrinsic(sch.trace)) == (made == 7)
        work_dir = str(tmp_path / f"w{made}")
        database = open_database(work_dir, tgt, create=True)
        database.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, database.commit_workload(task.dispatched[0]), [1e-3], tgt,
            ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)))
        records = load_records([("db", work_dir)], tgt)
        assert compile_module(mod, tgt, records=records, schedules=options[made]).report.from_database == [task.task_name]
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            built = compile_module(mod, tgt, records=records, schedules=options[other])
        assert built.report.from_database == []
        [warning] = [r.getMessage() for r in caplog.records if "not applied" in r.getMessage()]
        assert warning.startswith("1 tuning records of 1 kernels not applied") and "re-tune" in warning
        asm = next(m.inspect_source("s") for m in [built.executable.mod, *built.executable.mod.imports]
                   if m.kind == "llvm")
        assert ("vpmaddubsw" in asm) == (other == 7)


@pytest.mark.parametrize("bits, pixels, blocks, expected", [
    (512, 7, 32, (7, 2)),    # resnet50_v1's last stage: was 1 x 16 (4-5x slower on Zen 5)
    (512, 56, 4, (7, 2)),    # was 4 x 4
    (512, 8, 16, (4, 2)),    # a tie (4 x 2, 2 x 4): the wider row
    (512, 17, 48, (1, 12)),  # a prime row wider than the tile: one pixel, the most blocks
    (256, 56, 8, (4, 2)),    # AVX2's 12 registers: as before
    (256, 14, 32, (2, 4)),
    (256, 35, 8, (5, 2)),    # was 1 x 8
])
def test_dense_register_tile_loads_fewest_operands_per_product(bits, pixels, blocks, expected):
    """The register tile of the dot-product kernels: the divisors of the row and of the channel
    blocks within the accumulator cap whose loads per product, 1/kb + 1/xi, are fewest."""
    xi, kb = cpu_default.dense_register_tile(pixels, blocks, bits)
    assert (xi, kb) == expected
    budget = min(cpu_default.accumulator_budget(bits), cpu_default.DENSE_ACCUMULATORS)
    assert pixels % xi == 0 and blocks % kb == 0 and xi * kb <= budget
    for x in (d for d in range(1, pixels + 1) if pixels % d == 0 and d <= budget):
        for k in (d for d in range(1, blocks + 1) if blocks % d == 0 and x * d <= budget):
            assert (x + k) * xi * kb >= (xi + kb) * x * k, (x, k)


def int8_dense(batch: int, k: int, n: int, data: str = "uint8"):
    """(Relax main(x) = dequantize(matmul(x 8-bit [batch, k], int8 constant [k, n]) -> int32), as
    the quantizer writes a dense layer; the weights; the scales)."""
    w = np.random.RandomState(5).randint(-128, 128, size=(k, n)).astype("int8")
    scale = np.random.RandomState(6).uniform(1e-3, 1e-2, size=(1, n)).astype("float32")

    def body(bb, x):
        acc = bb.emit(relax.op.matmul(x, relax.const(w), out_dtype="int32"))
        return bb.emit(relax.op.multiply(bb.emit(relax.op.astype(acc, "float32")), relax.const(scale)))
    return _module((batch, k), data, body), w, scale


@pytest.mark.parametrize("batch,k,n,data", [(1, 256, 64, "uint8"), (3, 200, 48, "int8"), (16, 64, 32, "uint8")])
def test_int8_dense_on_the_cpu_dot_product(batch, k, n, data, target):
    """An 8-bit dense layer (int8 matmul of a constant) runs on the dot product, its weights packed
    at build; the same int32 sums as the plain schedule, so the same floats out."""
    from harness.schedules.intrinsics import cpu_int8_dots

    dots = cpu_int8_dots(target, data)
    if not dots:
        pytest.skip(f"no 8-bit dot product on {target}")  # x86 CPUs without AVX2 (none seen in CI)
    mod, w, scale = int8_dense(batch, k, n, data)
    built = compile_module(mod, target, schedules=NO_AMX)
    [(name, how)] = [(k_, v) for k_, v in built.report.kernels.items() if "matmul" in k_]
    assert how == "default:cpu_int8_dot", built.report.kernels
    x = _codes((batch, k), data)
    got = relax.VirtualMachine(built.executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, _run_switch(mod, x, target, dot=False))
    np.testing.assert_array_equal(got, (x.astype(np.int64) @ w.astype(np.int64)).astype(np.float32) * scale)


def test_int8_dense_on_vnni_assembly():
    """On a VNNI CPU (Cascade Lake) the dense layer's products are vpdpbusd on zmm; compiled and
    read on any host."""
    tgt = tvm.target.Target(llvm_target("cascadelake", 2))
    built = compile_module(int8_dense(1, 512, 64)[0], tgt, schedules=NO_AMX)
    asm = next(m.inspect_source("s") for m in [built.executable.mod, *built.executable.mod.imports]
               if m.kind == "llvm")
    assert re.search(r"vpdpbusd\s+[^\n]*%zmm", asm)

"""Channel-blocked 8-bit tensors between int8 convs (harness.build.passes.packed_int8): the same
integer sums as the NCHW build (bit-identical outputs), the layout changes where the design puts
them, explicit pads folded into the conv, depthwise convs still on their vectorized schedule, and
channel counts the block does not divide left NCHW. Targets pin `mcpu: haswell` (AVX2, which every
x86 CPU these tests meet has): the dot product is vpmaddwd there, with blocks of 8 channels."""
from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import relax

from harness.build import compile_module
from harness.build.passes.packed_int8 import blocked_int8_pass
from harness.schedules import ScheduleOptions
from harness.targets import llvm_target

RNG = np.random.RandomState(3)
# (the dot-product kernels these tests look at: the 3x3 convs stay off Winograd, whose own tests
# are test_winograd_int8.py)
BLOCKED = ScheduleOptions(cpu_int8_amx=False, cpu_int8_blocked=True, cpu_int8_winograd=False)
NCHW = ScheduleOptions(cpu_int8_amx=False, cpu_int8_blocked=False)


@pytest.fixture(scope="module")
def target():
    return tvm.target.Target(llvm_target("haswell", 2))


def _const(a):
    return relax.const(np.ascontiguousarray(a))


def _requantize(bb, acc, channels: int, scale: float):
    """int32 sums -> uint8 codes the way realize.py writes it (cast, per-channel multiply, bias,
    relu, multiply, floor(+0.5), clip, cast)."""
    mult = _const(RNG.uniform(1e-3, 1e-2, size=(1, channels, 1, 1)).astype("float32"))
    bias = _const(RNG.normal(size=(1, channels, 1, 1)).astype("float32"))
    y = bb.emit(relax.op.multiply(bb.emit(relax.op.astype(acc, "float32")), mult))
    y = bb.emit(relax.op.nn.relu(bb.emit(relax.op.add(y, bias))))
    y = bb.emit(relax.op.floor(bb.emit(relax.op.add(bb.emit(relax.op.multiply(y, relax.const(scale, "float32"))),
                                                    relax.const(0.5, "float32")))))
    return bb.emit(relax.op.astype(bb.emit(relax.op.clip(y, 0, 255)), "uint8"))


def _conv(bb, x, ci, co, k=3, stride=1, groups=1, padding=None, bits=8):
    top = 2 ** (bits - 1) - 1
    w = RNG.randint(-top, top + 1, size=(co, ci // groups, k, k)).astype("int8")
    return bb.emit(relax.op.nn.conv2d(x, _const(w), strides=stride, padding=k // 2 if padding is None else padding,
                                      groups=groups, out_dtype="int32"))


def two_convs(ci=16, mid=24, co=32, groups=1, k=3, stride=1, residual=False, first_bits=8):
    """uint8 input -> int8 conv (weights of `first_bits` bits) -> requantize -> (grouped) int8 conv ->
    requantize [-> + input codes as float] -> float: two convs with an 8-bit tensor between them."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, ci, 13, 13), "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = _requantize(bb, _conv(bb, x, ci, mid, bits=first_bits), mid, 20.0)
            b = _requantize(bb, _conv(bb, a, mid, co, k=k, stride=stride, groups=groups), co, 15.0)
            out = bb.emit(relax.op.astype(b, "float32"))
            if residual:
                out = bb.emit(relax.op.add(out, bb.emit(relax.op.astype(x, "float32"))))
            out = bb.emit_output(out)
        bb.emit_func_output(out)
    return bb.get(), (1, ci, 13, 13)


def _run(mod, x, target, options):
    built = compile_module(mod, target, schedules=options)
    out = relax.VirtualMachine(built.executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    return out, built.report.kernels


def _codes(shape, seed=0):
    return np.random.RandomState(seed).randint(0, 256, size=shape).astype("uint8")


def _layout_kernels(kernels) -> list:
    return sorted(k for k in kernels if "layout_transform" in k)


CASES = {
    "3x3": dict(),
    "1x1_residual": dict(k=1, co=16, residual=True),
    "3x3_stride2": dict(stride=2),
    "grouped": dict(mid=32, co=32, groups=4),  # 8 channels per group: a block of output channels per group
    "grouped_wide": dict(mid=32, co=64, groups=2, stride=2),  # 16 -> 32 channels per group, stride 2
    "grouped_merged": dict(mid=32, co=32, groups=8),  # 4 per group: pairs of groups merged (zero weights between)
    "grouped_unmerged": dict(mid=24, co=24, groups=6),  # 4 per group, 6 groups: no pairs into blocks of 8
    "depthwise": dict(mid=32, co=32, groups=32),
    "channels_not_blocked": dict(ci=12, mid=20, co=28),  # 20 and 28 channels: no block of 8 divides them
    "second_not_blocked": dict(ci=16, mid=16, co=12),  # 16 -> 16 blocked, 16 -> 12 NCHW
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_blocked_equals_nchw_exactly(case, target):
    mod, shape = two_convs(**CASES[case])
    x = _codes(shape)
    blocked, kernels = _run(mod, x, target, BLOCKED)
    nchw, nchw_kernels = _run(mod, x, target, NCHW)
    np.testing.assert_array_equal(blocked, nchw)
    assert not _layout_kernels(nchw_kernels)
    if case == "channels_not_blocked":  # nothing to block: the kernels the NCHW build has (clip as max / min)
        assert not _layout_kernels(kernels) and len(kernels) == len(nchw_kernels)
    else:
        assert _layout_kernels(kernels)  # the uint8 input enters the blocked part


def test_depthwise_stays_on_its_vectorized_schedule(target):
    mod, shape = two_convs(mid=32, co=32, groups=32)
    _, kernels = _run(mod, _codes(shape), target, BLOCKED)
    assert sorted(kernels.values()).count("default:cpu_int8_depthwise") == 1, kernels
    assert sorted(kernels.values()).count("default:cpu_int8_dot") == 1, kernels


@pytest.mark.parametrize("groups,merged", [(4, False), (8, True), (16, True)])
def test_grouped_convs_run_on_the_dot_product(groups, merged, target):
    """A grouped 8-bit conv between blocked tensors takes the dot-product schedule: 8 or more
    output channels per group as they are, fewer with neighbouring groups merged into one of 8
    (their weights block-diagonal); either way the same integer sums as TVM's NCHW grouped conv."""
    mod, shape = two_convs(mid=32, co=32, groups=groups)
    lowered = blocked_int8_pass()(mod)
    te_groups = [gv for gv, f in lowered.functions_items() if "group_conv2d_blocked" in str(f)]
    assert len(te_groups) == 1
    conv = lowered[te_groups[0]]
    weight = next(b for b in conv.params if str(b.dtype) == "int8")  # (TVM 0.27: the parameters are the buffers)
    # [groups, k / groups, c / groups, kh, kw]: groups halved (or quartered) where merged
    per_group = 32 // groups
    merge = 8 // per_group if merged else 1
    assert [int(v) for v in weight.shape] == [groups // merge, per_group * merge,
                                                               per_group * merge, 3, 3]
    x = _codes(shape)
    blocked, kernels = _run(mod, x, target, BLOCKED)
    assert sorted(kernels.values()).count("default:cpu_int8_dot") == 2, kernels
    np.testing.assert_array_equal(blocked, _run(mod, x, target, NCHW)[0])


def _conv_widths(mod) -> list:
    """(width the 8-bit conv block computes, width its kernel writes) of each legalized conv."""
    found = []
    for _, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc) or "conv2d_nchw" not in func.script():
            continue
        sch = tvm.s_tir.Schedule(func)
        conv = sch.get(sch.get_sblock("conv2d_nchw"))
        found.append((int(conv.writes[0].source.shape[3]), int(func.params[-1].shape[3])))
    return found


def test_a_prime_row_is_computed_wider_inside_the_kernel(target, monkeypatch):
    """A 13-pixel row (prime: its only register tile would be one pixel wide) is computed at the
    width :func:`dense_row_width` gives for 4 blocks of output channels (15: 3 x 4 tiles on AVX2),
    the extra columns only in the conv's accumulator: the kernel writes 13, and the output is the
    NCHW build's. (Builds widen rows on AVX-512 only; here the AVX2 build is made to, so that the
    numbers are checked on any host.)"""
    from harness.schedules.cpu import dense_register_tile, dense_row_width

    assert dense_register_tile(13, 4, 256) == (1, 4)
    assert dense_row_width(13, 4, 256) == 15 and dense_register_tile(15, 4, 256) == (3, 4)
    assert dense_row_width(56, 4, 256) == 56  # a row whose tile is good keeps its width
    from harness.schedules.cpu import row_widening_bits

    # (the builds widen rows on AVX-512 only, where it was measured to gain)
    assert row_widening_bits(target) == 0
    assert row_widening_bits(tvm.target.Target(llvm_target("skylake-avx512", 2))) == 512
    mod, _ = two_convs(ci=16, mid=24, co=32)
    assert _conv_widths(blocked_int8_pass()(mod)) == [(13, 13), (13, 13)]
    # mid 24 = 3 blocks of 8: 13 -> 16 with 4 x 3; co 32: 13 -> 15 with 3 x 4
    assert dense_row_width(13, 3, 256) == 16 and dense_register_tile(16, 3, 256) == (4, 3)
    assert sorted(_conv_widths(blocked_int8_pass(row_bits=256)(mod))) == [(15, 13), (16, 13)]
    import harness.schedules.cpu as cpu

    x = _codes((1, 16, 13, 13))
    nchw, _ = _run(mod, x, target, NCHW)
    monkeypatch.setattr(cpu, "row_widening_bits", lambda tgt: 256)
    widened, kernels = _run(mod, x, target, BLOCKED)
    assert sorted(kernels.values()).count("default:cpu_int8_dot") == 2, kernels
    np.testing.assert_array_equal(widened, nchw)


def test_grouped_conv_search_space_replays_and_stays_exact(target, tmp_path):
    """`harness tune` samples the grouped conv's register tile like a dense conv's: a sample's
    trace, as a database record, builds the kernel with the same integer sums."""
    from harness.tune.search import tunable_tasks
    from tests.helpers import dot_space_sample, run_with_record

    mod, shape = two_convs(mid=32, co=32, groups=4)
    [task] = [t for t in tunable_tasks(mod, target, BLOCKED) if "group_conv2d_blocked" in t.dispatched[0].script()]
    x = _codes(shape)
    ref, _ = _run(mod, x, target, NCHW)
    for seed in range(2):
        sch = dot_space_sample(task, target, seed)
        got = run_with_record(mod, x, target, task, sch, str(tmp_path / f"db{seed}"), BLOCKED)
        np.testing.assert_array_equal(got, ref)


def _asm(built) -> str:
    return next(m.inspect_source("s") for m in [built.executable.mod, *built.executable.mod.imports]
                if m.kind == "llvm")


def test_grouped_conv_on_vnni_in_ymm():
    """On a VNNI CPU (Cascade Lake: AVX512-VNNI + VL) a group's 8 output channels take vpdpbusd on a
    ymm (8 int32 lanes; the dense conv's 32 take the zmm form); the NCHW build's grouped conv has no
    dot product, so no ymm vpdpbusd. Compiled and read on any host; run where the host has VNNI."""
    from harness.targets import target_has_feature

    tgt = tvm.target.Target(llvm_target("cascadelake", 2))
    mod, shape = two_convs(mid=32, co=32, groups=4)
    blocked = compile_module(mod, tgt, schedules=BLOCKED)
    nchw = compile_module(mod, tgt, schedules=NCHW)
    ymm = r"vpdpbusd\s+%ymm"
    assert re.search(ymm, _asm(blocked)) and not re.search(ymm, _asm(nchw))
    host = tvm.target.Target(llvm_target())
    if not (target_has_feature(host, "avx512vnni") and target_has_feature(host, "avx512vl")):
        pytest.skip("compiled and read only: this host has no AVX512-VNNI to run cascadelake code")
    x = _codes(shape)
    got, ref = (relax.VirtualMachine(b.executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
                for b in (blocked, nchw))
    np.testing.assert_array_equal(got, ref)


def test_grouped_conv_with_8bit_weights_is_exact_where_ungrouped_ones_have_7(target):
    """``reduce_range`` gives 7-bit weights to ungrouped convs only (the build's int8_weight_bits 7
    puts those on vpmaddubsw): a grouped conv's 8-bit weights must not go there, where pair sums
    of 255-codes and weights near 127 would saturate at int16."""
    import dataclasses

    mod, shape = two_convs(mid=32, co=32, groups=4)
    x = np.full(shape, 255, "uint8")
    opts = {name: dataclasses.replace(o, int8_weight_bits=7) for name, o in (("b", BLOCKED), ("n", NCHW))}
    blocked, _ = _run(mod, x, target, opts["b"])
    nchw, _ = _run(mod, x, target, opts["n"])
    np.testing.assert_array_equal(blocked, nchw)


def test_a_grouped_conv_record_applies_where_ungrouped_convs_have_7_bit_weights(target, tmp_path):
    """With ``reduce_range`` the ungrouped convs' weights have 7 bits (on vpmaddubsw) and the grouped
    ones 8 (on vpmaddwd): a tuning record of the grouped kernel is for 8-bit weights, and the
    build applies it rather than turning it away as a record for other weights."""
    import dataclasses

    from harness.schedules.intrinsics import trace_uses_intrinsic
    from harness.tune.search import tunable_tasks
    from tests.helpers import dot_space_sample, run_with_record

    reduced = dataclasses.replace(BLOCKED, int8_weight_bits=7)
    mod, shape = two_convs(mid=32, co=32, groups=4, first_bits=7)  # as reduce_range quantizes them
    [task] = [t for t in tunable_tasks(mod, target, reduced) if "group_conv2d_blocked" in t.dispatched[0].script()]
    sch = dot_space_sample(task, target, 0)
    assert trace_uses_intrinsic(sch.trace).endswith("_u8_pmaddwd")
    x = _codes(shape)
    got = run_with_record(mod, x, target, task, sch, str(tmp_path / "db"), reduced)
    np.testing.assert_array_equal(got, _run(mod, x, target, NCHW)[0])


def _padded_conv(pad_value: float, shift: float):
    """fp32 input -> explicit pad (an asymmetric TF "same" pad, as efficientnet_lite0's stride-2
    convs have) -> quantize (multiply, add `shift` + 0.5, floor, clip, cast) -> int8 conv without padding."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 16, 14, 14), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            p = bb.emit(relax.op.nn.pad(x, [0, 0, 0, 0, 0, 1, 0, 1], pad_value=pad_value))
            q = bb.emit(relax.op.multiply(p, relax.const(30.0, "float32")))
            q = bb.emit(relax.op.floor(bb.emit(relax.op.add(q, relax.const(shift + 0.5, "float32")))))
            q = bb.emit(relax.op.astype(bb.emit(relax.op.clip(q, -127, 127)), "int8"))
            acc = _conv(bb, q, 16, 16, k=3, stride=2, padding=0)
            out = bb.emit_output(bb.emit(relax.op.astype(acc, "float32")))
        bb.emit_func_output(out)
    return bb.get()


def _functions(mod) -> list:
    """The names of `mod`'s functions (the pass leaves every op legalized: a PrimFunc each)."""
    return sorted(gv.name_hint for gv in mod.get_global_vars())


@pytest.mark.parametrize("pad_value,shift,folded", [(0.0, 0.0, True), (1.0, 0.0, False), (0.0, 2.0, False)])
def test_explicit_pad_folds_into_the_conv_only_where_it_quantizes_to_zero(pad_value, shift, folded, target):
    """The pad goes into the conv's padding (so the tensor can stay blocked) only where the quantize
    chain maps the pad value to the code 0 the conv pads with; either way the output is the NCHW build's."""
    mod = _padded_conv(pad_value, shift)
    names = _functions(blocked_int8_pass()(mod))
    assert (not any(re.fullmatch(r"pad\d*", n) for n in names)) == folded, names
    x = RNG.normal(size=(1, 16, 14, 14)).astype("float32")
    blocked, _ = _run(mod, x, target, BLOCKED)
    nchw, _ = _run(mod, x, target, NCHW)
    np.testing.assert_array_equal(blocked, nchw)


def test_pass_leaves_fp32_modules_alone():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 6, 6), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            w = _const(RNG.normal(size=(8, 8, 3, 3)).astype("float32"))
            out = bb.emit_output(bb.emit(relax.op.clip(bb.emit(relax.op.nn.conv2d(x, w, padding=1)), 0, 6)))
        bb.emit_func_output(out)
    mod = bb.get()
    assert blocked_int8_pass()(mod).same_as(mod)


@pytest.mark.slow
def test_resnet18_blocked_equals_nchw_and_changes_layout_three_times(target):
    """Int8 resnet18_v1 (64 x 64 input): the blocked build's output is the NCHW build's, bit for
    bit; its convs all run on the dot product as before; and it has the three layout kernels the
    design has: the uint8 stem output into the blocked part, the first block's fp32 shortcut (the
    dequantized stem output, computed NCHW before the blocked part begins), the pooled features
    out of it for the dense layer."""
    from harness.quantize import apply_table, qconfig
    from tests.helpers import calibrated_model

    mod, table, calib = calibrated_model("resnet18_v1", 64, 0, 2)
    with qconfig(calibrate_mode="max", weight_scale="channel_max") as cfg:
        qmod = apply_table(mod, None, table, config=cfg)
    x = calib[0]["data"]
    blocked, kernels = _run(qmod, x, target, BLOCKED)
    nchw, nchw_kernels = _run(qmod, x, target, NCHW)
    np.testing.assert_array_equal(blocked, nchw)
    # kernels, not convs: convs of the same shape and epilogue share one (`requantize: folded` makes
    # the epilogue's constants parameters): 18 of the blocked build's for its 19 int8 convs, 17 NCHW
    assert sorted(kernels.values()).count("default:cpu_int8_dot") == 18
    assert sorted(nchw_kernels.values()).count("default:cpu_int8_dot") == 17
    assert len(_layout_kernels(kernels)) == 3, _layout_kernels(kernels)


def test_pools_between_blocked_convs_keep_their_width(target):
    """A float max pool between two int8 convs with an output row :func:`padded_width` would widen
    (17) keeps its width in the channel-blocked build: it becomes ``NCHW{c}c``, whose vector is
    the channel block, and a wider row would only copy its input into a padded one (inception_v3's
    first max pool, 0.38 ms on Zen 5). The NCHW build widens it; the outputs are the same."""
    from harness.build.pipeline import fuse_and_schedule
    from harness.schedules import schedule_family
    from harness.schedules.cpu import padded_width

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 16, 35, 35), "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.astype(_requantize(bb, _conv(bb, x, 16, 16), 16, 20.0), "float32"))
            p = bb.emit(relax.op.nn.max_pool2d(a, pool_size=3, strides=2))  # 35 -> 17
            p = bb.emit(relax.op.astype(p, "uint8"))
            b = _requantize(bb, _conv(bb, p, 16, 32), 32, 15.0)
            out = bb.emit_output(bb.emit(relax.op.astype(b, "float32")))
        bb.emit_func_output(out)
    mod = bb.get()
    assert padded_width(17, 8) > 17  # (float32 rows on AVX2: 8 lanes)

    def pool_kernels(options):  # (a widened pool is sliced back to its width in its kernel)
        fused = fuse_and_schedule(mod, target, schedule_family(target, options))
        return [gv.name_hint for gv in fused.functions.keys() if "max_pool2d" in gv.name_hint]

    assert pool_kernels(BLOCKED) == ["fused_max_pool2d_cast3"]
    assert pool_kernels(NCHW) == ["fused_max_pool2d_strided_slice_cast3"]
    codes = _codes((1, 16, 35, 35))
    np.testing.assert_array_equal(_run(mod, codes, target, BLOCKED)[0], _run(mod, codes, target, NCHW)[0])


def test_sixteen_channel_blocks_where_every_conv_allows():
    """On AVX-512 the block is 16 channels, the int32 lanes of its vector (the epilogue then stores
    whole vectors); a module keeps 8 where one conv's channels are a multiple of 8 but not of 16, or
    where a grouped conv's groups have fewer output channels than 16 (more groups would be merged,
    multiplying more zeros). AVX2 targets keep 8."""
    from harness.build.passes.packed_int8 import _int8_convs, module_block
    from harness.schedules.cpu import channel_block

    assert channel_block(tvm.target.Target(llvm_target("cascadelake", 2))) == 16
    assert channel_block(tvm.target.Target(llvm_target("haswell", 2))) == 8

    def block(**case):
        return module_block(_int8_convs(two_convs(**case)[0]), 16)

    assert block(ci=16, mid=32, co=32) == 16
    assert block(ci=16, mid=24, co=32) == 8  # 24 channels: blocks of 8 only
    assert block(ci=12, mid=20, co=32) == 16  # 12 and 20 stay NCHW at either block: the rest can be 16
    assert block(mid=32, co=64, groups=2) == 16  # 32 output channels per group
    assert block(mid=32, co=32, groups=4) == 8  # 8 per group
    assert block(mid=32, co=32, groups=32) == 16  # depthwise
    assert module_block(_int8_convs(two_convs(mid=24)[0]), 8) == 8
    mod, _ = two_convs(ci=16, mid=32, co=32)
    conv_outputs = [[int(v) for v in f.params[-1].shape] for _, f in blocked_int8_pass(block=16)(mod).functions_items()
                    if isinstance(f, tvm.tirx.PrimFunc) and "conv2d" in f.script()]
    assert conv_outputs == [[1, 2, 13, 13, 16]] * 2


def _host_vnni() -> bool:
    from harness.schedules.intrinsics import has_vnni

    return has_vnni(tvm.target.Target(llvm_target()), 16)


@pytest.mark.skipif(not _host_vnni(), reason="runs AVX-512 VNNI code: this CPU has no avx512_vnni")
@pytest.mark.parametrize("case", ["3x3", "1x1_residual", "3x3_stride2", "grouped_wide", "depthwise"])
def test_sixteen_channel_blocks_equal_nchw_exactly(case):
    """The 16-channel blocked build (an AVX-512 VNNI target) gives the NCHW build's output bit for
    bit, its convs on the dot product (the depthwise one on its vectorized schedule)."""
    target = tvm.target.Target(llvm_target("cascadelake", 2))
    params = dict(CASES[case], ci=16)
    params.setdefault("mid", 32)
    params["co"] = 32 if case != "grouped_wide" else 64
    if case == "1x1_residual":
        params["co"] = 16
    mod, shape = two_convs(**params)
    x = _codes(shape)
    blocked, kernels = _run(mod, x, target, BLOCKED)
    np.testing.assert_array_equal(blocked, _run(mod, x, target, NCHW)[0])
    schedules = sorted(kernels.values())
    assert schedules.count("default:cpu_int8_dot") == (1 if case == "depthwise" else 2), kernels
    assert schedules.count("default:cpu_int8_depthwise") == (case == "depthwise"), kernels


def test_a_depthwise_prime_row_is_computed_wider(target, monkeypatch):
    """A depthwise 8-bit conv whose row has no divisor of at least 4 to tile by (17, 13) is computed
    at the next width that has one (18, 14: tiles of 6 and 7 pixels), inside its kernel: the output
    is the NCHW build's. (On AVX-512 builds; here the AVX2 build is made to, so that the numbers are
    checked on any host.)"""
    import harness.schedules.cpu as cpu

    assert [cpu.depthwise_row_width(w) for w in (17, 13, 73, 149, 35, 56, 7, 8, 1)] == [18, 14, 75, 150, 35, 56, 7,
                                                                                        8, 1]
    mod, shape = two_convs(mid=32, co=32, groups=32)
    lowered = blocked_int8_pass(row_bits=256)(mod)
    [depthwise] = [f for _, f in lowered.functions_items()
                   if isinstance(f, tvm.tirx.PrimFunc) and "depthwise_conv2d_nchw" in f.script()]
    sch = tvm.s_tir.Schedule(depthwise)
    assert int(sch.get(sch.get_sblock("depthwise_conv2d_nchw")).writes[0].source.shape[3]) == 14
    assert int(depthwise.params[-1].shape[3]) == 13
    x = _codes(shape)
    nchw, _ = _run(mod, x, target, NCHW)
    monkeypatch.setattr(cpu, "row_widening_bits", lambda tgt: 256)
    widened, kernels = _run(mod, x, target, BLOCKED)
    assert sorted(kernels.values()).count("default:cpu_int8_depthwise") == 1, kernels
    np.testing.assert_array_equal(widened, nchw)

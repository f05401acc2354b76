"""AMX int8 tile kernels (harness.schedules.amx): built for `mcpu: sapphirerapids` on any host their
object code holds the tile instructions (and a CPU without amx-int8 gets none); run, they give
numpy's integer sums exactly and a quantized ResNet-18 the VNNI build's outputs: on any host with
their tile instructions in the C emulator (harness.schedules.amx_emulate, "emulated"), and on a
host with AMX on the tiles themselves ("tiles")."""
from __future__ import annotations

import contextlib
import ctypes
import re

import numpy as np
import pytest
import tvm
from tvm import relax

from harness.build import compile_module
from harness.build.pipeline import fused
from harness.schedules import ScheduleOptions, amx, amx_emulate, schedule_family
from harness.targets import target_has_vnni
from tests.tune.test_cpu_default import int8_conv

SPR = {"kind": "llvm", "mcpu": "sapphirerapids", "num-cores": 2}
TILE_INSTRUCTIONS = ("tdpbusd", "tdpbsud", "tileloadd", "ldtilecfg", "tilestored", "tilezero")
needs_amx = pytest.mark.skipif(not amx.host_has_amx(), reason="this CPU has no amx-int8 (runs only on AMX hosts)")
# how an AMX kernel runs: its tile instructions in the C emulator (any host), or on the tiles (AMX hosts)
MODES = ["emulated", pytest.param("tiles", marks=needs_amx)]


def _target(mode):
    """The build target of `mode`: this CPU with AMX added (emulated), or the host's own (tiles)."""
    from harness.targets import llvm_target

    return tvm.target.Target(amx_emulate.emulation_target(num_cores=2) if mode == "emulated" else llvm_target())


@contextlib.contextmanager
def _tiles(mode):
    """Builds inside are made for `mode` (the emulator: yielded, its counts reset)."""
    if mode == "emulated":
        with amx_emulate.emulated() as emulator:
            yield emulator
    else:
        yield None


def _ran_on_tiles(emulator, products=1):
    """The emulated kernels ran at least `products` tile dot products, none the hardware faults on."""
    if emulator is not None:
        emulator.check()
        assert emulator.products() >= products


def _asm(built, fmt: str = "s") -> str:
    """The build's llvm module as assembly (or `fmt`: "ll", LLVM IR)."""
    ex = built.executable
    return next(m.inspect_source(fmt) for m in [ex.mod, *ex.mod.imports] if m.kind == "llvm")


def _counts(asm: str) -> dict:
    return {name: len(re.findall(rf"\b{name}\b", asm)) for name in TILE_INSTRUCTIONS}


def _codes(shape, seed=1):
    return np.random.RandomState(seed).randint(0, 256, size=shape).astype("uint8")


def _conv_reference(x, w, stride, pad):
    """numpy's int64 conv2d (NCHW / OIHW), the integer truth."""
    n, c, h, wd = x.shape
    k, _, r, s = w.shape
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - r) // stride + 1, (wd + 2 * pad - s) // stride + 1
    out = np.zeros((n, k, oh, ow), np.int64)
    for i in range(r):
        for j in range(s):
            win = xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
            out += np.einsum("nchw,kc->nkhw", win, w[:, :, i, j].astype(np.int64))
    return out


def _plain_conv(ci, co, hw, k, stride, seed=0):
    """Relax main(x) = conv2d(x uint8, W int8) -> int32, and W."""
    w = np.random.RandomState(seed).randint(-128, 128, size=(co, ci, k, k)).astype("int8")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, ci, hw, hw), "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.conv2d(x, relax.const(w), strides=stride, padding=k // 2,
                                                    out_dtype="int32"))
        bb.emit_func_output(out)
    return bb.get(), w


def test_target_features():
    assert amx.target_has_amx(SPR) and amx.target_has_amx({"kind": "llvm", "mcpu": "emeraldrapids"})
    for mcpu in ("cascadelake", "icelake-server", "znver4", "znver2", "x86-64"):
        assert not amx.target_has_amx({"kind": "llvm", "mcpu": mcpu}), mcpu
    assert not amx.target_has_amx({"kind": "cuda", "arch": "sm_90"})


def test_tile_config_bytes():
    """ldtilecfg's 64 bytes: palette 1, then per tile its bytes per row (u16 at 16 + 2t) and rows
    (u8 at 48 + t): accumulators tm x 64, data tm x kc, weights kc/4 x 64."""
    plan = amx.TilePlan(mt=2, tm=14, nt=2, kc=32, stride=1)
    cfg = plan.config_bytes()
    assert len(cfg) == 64 and cfg[0] == 1 and cfg[1:16] == bytes(15)
    colsb = [int.from_bytes(cfg[16 + 2 * t:18 + 2 * t], "little") for t in range(8)]
    assert colsb == [64, 64, 64, 64, 32, 32, 64, 64]
    assert list(cfg[48:56]) == [14, 14, 14, 14, 14, 14, 8, 8] and cfg[56:] == bytes(8)
    with pytest.raises(ValueError):
        amx.TilePlan(mt=2, tm=16, nt=3, kc=64, stride=1)  # 6 + 2 + 3 tiles: more than tmm0..tmm7


@pytest.mark.parametrize("ci,co,hw,k,stride", [(64, 32, 14, 3, 1), (128, 64, 14, 1, 2), (40, 48, 9, 3, 2)])
def test_amx_conv_compiles_to_tile_instructions_on_any_host(ci, co, hw, k, stride):
    """An int8 conv built for sapphirerapids (no run: any host) is one AMX kernel: stride 1 (and
    strided 1x1, as a slice and a stride-1 conv) on output-channel-row tiles (tdpbsud: int8 weights
    x uint8 data), other strided convs on pixel-row tiles (tdpbusd: uint8 data x int8 weights)."""
    built = compile_module(int8_conv(ci=ci, co=co, hw=hw, k=k, stride=stride, epilogue="int_bias"),
                           tvm.target.Target(SPR))
    assert built.amx_kernels and all("conv2d" in name for name in built.amx_kernels)
    counts = _counts(_asm(built))
    dot, other = ("tdpbsud", "tdpbusd") if stride == 1 or k == 1 else ("tdpbusd", "tdpbsud")
    assert counts[other] == 0 and all(counts[name] >= 1 for name in TILE_INSTRUCTIONS if name != other), counts


@pytest.mark.parametrize("mcpu", ["cascadelake", "znver2"])
def test_no_tile_instructions_without_amx(mcpu):
    built = compile_module(int8_conv(ci=64, co=32, hw=14, epilogue="int_bias"),
                           tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 2}))
    assert built.amx_kernels is None
    assert not any(_counts(_asm(built)).values())


def test_switch_and_fallbacks():
    """Off with the config's switch (build.schedules.cpu_int8_amx); convs AMX cannot run (int8 data, channel counts that are not multiples of
    16 output / 8 input channels) keep the dot-product / plain schedules."""
    tgt = tvm.target.Target(SPR)

    def kinds(mod, rule=amx.schedule_amx):
        fmod = fused(mod, tgt, schedule_family(tgt))
        out = {}
        for gv, func in fmod.functions.items():
            if isinstance(func, tvm.tirx.PrimFunc) and "conv2d" in gv.name_hint:
                try:
                    out[gv.name_hint] = rule(tvm.s_tir.Schedule(func), tgt)
                except amx.NotApplicable as err:
                    out[gv.name_hint] = f"no: {err}"
        [kind] = out.values()
        return kind

    assert kinds(int8_conv(ci=64, co=32, hw=14)).startswith(amx.AMX_KIND)
    assert kinds(int8_conv(ci=64, co=32, hw=14), amx.schedule_amx_channels).startswith(amx.AMX_KIND)
    assert "strided" in kinds(int8_conv(ci=64, co=32, hw=14, stride=2), amx.schedule_amx_channels)
    assert "not a multiple of 16" in kinds(int8_conv(ci=64, co=24, hw=14))
    assert "not a multiple of 8" in kinds(int8_conv(ci=12, co=32, hw=14))
    assert "unsigned data only" in kinds(int8_conv(ci=64, co=32, hw=14, data="int8"))
    [kernel] = [f for gv, f in fused(int8_conv(ci=64, co=32, hw=14), tgt, schedule_family(tgt)).functions.items()
                if isinstance(f, tvm.tirx.PrimFunc) and "conv2d" in gv.name_hint]
    assert schedule_family(tgt).default_schedule(kernel, tgt)[1] == "cpu_int8_amx"
    off = schedule_family(tgt, ScheduleOptions(cpu_int8_amx=False))
    assert off.default_schedule(kernel, tgt)[1] == "cpu_int8_dot"
    # AMX off: the 8-bit tensors between the dot-product convs channel-blocked (on: AMX's own pass)
    assert [p.info.name for p in off.graph_passes(tgt)] == ["HarnessPadConvWidth", "HarnessBlockedInt8"]
    assert "HarnessBlockedInt8" not in [p.info.name for p in schedule_family(tgt).graph_passes(tgt)]
    assert amx.applies_to(tgt) and not amx.applies_to(tvm.target.Target({"kind": "llvm", "mcpu": "cascadelake"}))


def _manual_dot(a, b, a_signed, b_signed):
    """The SDM's tdpbusd / tdpbsud of byte tiles a (M x 4K) and b (K x 4N): int32 sums of 4-byte groups."""
    a = (a.view(np.int8) if a_signed else a.view(np.uint8)).astype(np.int64)
    b = (b.view(np.int8) if b_signed else b.view(np.uint8)).astype(np.int64)
    m, k4 = a.shape
    n4 = b.shape[1]
    return np.einsum("mki,kni->mn", a.reshape(m, k4 // 4, 4), b.reshape(k4 // 4, n4 // 4, 4)).astype(np.int32)


def _tile_config(shapes):
    """A palette-1 ldtilecfg operand: {tile: (rows, bytes per row)}."""
    cfg = bytearray(64)
    cfg[0] = 1
    for tile, (rows, colsb) in shapes.items():
        cfg[16 + 2 * tile], cfg[48 + tile] = colsb, rows
    return (ctypes.c_uint8 * 64).from_buffer_copy(bytes(cfg))


def test_the_emulator_follows_the_manual():
    """The C emulator's tile instructions, called directly: tdpbusd (u8 x s8) and tdpbsud (s8 x u8)
    sum 4-byte groups into int32 as numpy does, on full 16 x 64-byte tiles and on a smaller
    configuration (rows past it are neither loaded nor stored); what the hardware faults on (a tile
    before ldtilecfg, shapes that do not agree) is counted with a message, and sttilecfg of an
    unconfigured state reads zeros."""
    emulator = amx_emulate.library()
    lib = emulator.lib
    ptr = ctypes.c_void_p
    rng = np.random.RandomState(0)

    def run(shapes, a, b, op, steps):
        out = np.full((16, 16), -7, np.int32)
        lib.harness_amx_ldtilecfg(_tile_config(shapes))
        lib.harness_amx_tilezero(0)
        lib.harness_amx_tileloadd64(1, a.ctypes.data_as(ptr), ctypes.c_int64(a.strides[0]))
        lib.harness_amx_tileloadd64(2, b.ctypes.data_as(ptr), ctypes.c_int64(b.strides[0]))
        for _ in range(steps):
            getattr(lib, f"harness_amx_{op}")(0, 1, 2)
        lib.harness_amx_tilestored64(0, out.ctypes.data_as(ptr), ctypes.c_int64(out.strides[0]))
        return out

    emulator.reset()
    for op, signs in (("tdpbusd", (False, True)), ("tdpbsud", (True, False))):
        a = rng.randint(0, 256, size=(16, 64)).astype(np.uint8)
        b = rng.randint(0, 256, size=(16, 64)).astype(np.uint8)
        got = run({0: (16, 64), 1: (16, 64), 2: (16, 64)}, a, b, op, steps=2)
        np.testing.assert_array_equal(got, 2 * _manual_dot(a, b, *signs), err_msg=op)
        # 5 pixels x 8 sums from 6 groups of 4 bytes: the rows and columns past them stay as they were
        got = run({0: (5, 32), 1: (5, 24), 2: (6, 32)}, a, b, op, steps=1)
        np.testing.assert_array_equal(got[:5, :8], _manual_dot(a[:5, :24], b[:6, :32], *signs), err_msg=op)
        assert (got[5:] == -7).all() and (got[:, 8:] == -7).all()
    assert emulator.errors() == 0 and emulator.products() == 6

    lib.harness_amx_ldtilecfg((ctypes.c_uint8 * 64)())  # palette 0: back to unconfigured
    state = (ctypes.c_uint8 * 64)(*([9] * 64))
    lib.harness_amx_sttilecfg(state)
    assert bytes(state) == bytes(64)
    lib.harness_amx_tilezero(0)
    assert emulator.errors() == 1 and "before ldtilecfg" in emulator.message()
    lib.harness_amx_ldtilecfg(_tile_config({0: (16, 64), 1: (16, 64), 2: (8, 64)}))  # b: 8 rows, a: 16 groups
    lib.harness_amx_tdpbusd(0, 1, 2)
    assert emulator.errors() == 2 and emulator.products() == 6
    with pytest.raises(Exception, match="2 faulting tile instruction.*before ldtilecfg"):
        emulator.check()
    emulator.reset()


def test_emulated_builds_call_the_emulator_not_the_tiles():
    """A build made under emulated() has the AMX kernel (same schedule and intrinsic names) with
    calls of the emulator where the tile instructions were; one made under without_tiles() has
    neither (and runs on any host); a build after them has the instructions."""
    tgt = tvm.target.Target(SPR)
    mod = int8_conv(ci=64, co=32, hw=14, epilogue="int_bias")
    with amx_emulate.emulated():
        emulated = compile_module(mod, tgt)
    with amx_emulate.without_tiles():
        dropped = compile_module(mod, tgt)
    real = compile_module(mod, tgt)
    assert emulated.amx_kernels == dropped.amx_kernels == real.amx_kernels != []
    asm = _asm(emulated)
    assert not any(_counts(asm).values())
    assert all(f"harness_amx_{op}" in asm for op in ("ldtilecfg", "tilezero", "tileloadd64", "tdpbsud",
                                                     "tilestored64")), asm[:2000]
    assert not any(_counts(_asm(dropped)).values()) and "harness_amx_" not in _asm(dropped)
    assert _counts(_asm(real))["tdpbsud"] >= 1 and "harness_amx_" not in _asm(real)
    with pytest.raises(ValueError, match="valid: hardware, emulated, dropped"):
        amx.set_tile_mode("emulate")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ci,co,hw,k,stride", [
    (64, 64, 14, 3, 1),   # 14 wide: one 14-row tile x 2 tile columns
    (128, 64, 28, 3, 1),  # 2 x 2 accumulator tiles of 14 rows
    (256, 128, 28, 1, 2),  # 1x1 stride 2: data rows 2 pixels apart
    (40, 16, 9, 3, 2),    # 8 input channels per step, one tile column, 5-row tiles
    (40, 48, 9, 3, 1),    # channel rows: 3 tiles of 16 output channels x 9 pixels, 8 input channels per step
    (64, 16, 24, 1, 1),   # rows outer (576 pixels per weight byte of a channel >= 32 x 16)
])
def test_amx_conv_equals_numpy(ci, co, hw, k, stride, mode):
    """The kernel's int32 sums are numpy's, exactly."""
    mod, w = _plain_conv(ci, co, hw, k, stride)
    with _tiles(mode) as emulator:
        built = compile_module(mod, _target(mode))
    assert built.amx_kernels
    x = _codes((1, ci, hw, hw))
    vm = relax.VirtualMachine(built.executable, tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, _conv_reference(x, w, stride, k // 2))
    _ran_on_tiles(emulator)


@pytest.mark.parametrize("mode", MODES)
def test_channels_that_do_not_fit_the_tiles_are_still_right(mode):
    """12 input / 24 output channels: no AMX kernel (nor VNNI for 24), the same integer sums."""
    mod, w = _plain_conv(12, 24, 10, 3, 1)
    with _tiles(mode):
        built = compile_module(mod, _target(mode))
    assert built.amx_kernels == []
    x = _codes((1, 12, 10, 10))
    got = relax.VirtualMachine(built.executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, _conv_reference(x, w, 1, 1))


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_quantized_resnet18_on_amx_equals_the_vnni_build(mode):
    """A quantized ResNet-18 (32 x 32 input, the default requantization): its int8 convs on AMX tiles
    give the same outputs as the dot-product build's (the same integer sums, the same epilogues;
    on an AVX2 host the emulated build's other kernels are AVX2 code)."""
    from harness.bench import make_vm, run_once
    from harness.quantize import apply_table, qconfig
    from tests.helpers import calibrated_resnet18

    mod, table, calib = calibrated_resnet18(32, 0, 2)
    with qconfig(calibrate_mode="max", weight_scale="channel_max") as cfg:
        qmod = apply_table(mod, None, table, config=cfg)
    tgt = _target(mode)
    with _tiles(mode) as emulator:
        on_amx = compile_module(qmod, tgt)
    # the dot-product build without Winograd (chosen on AVX2 CPUs: its sums are rounded another way)
    on_vnni = compile_module(qmod, tgt, schedules=ScheduleOptions(cpu_int8_amx=False, cpu_int8_winograd=False))
    assert len(on_amx.amx_kernels) >= 10 and on_vnni.amx_kernels == []
    assert ("vpdpbusd" in _asm(on_vnni)) == target_has_vnni(tgt) and "tdpbusd" not in _asm(on_vnni)
    x = calib[0]["data"]
    got = run_once(make_vm(on_amx.executable, tvm.cpu()), tvm.cpu(), [x])
    ref = run_once(make_vm(on_vnni.executable, tvm.cpu()), tvm.cpu(), [x])
    np.testing.assert_array_equal(got, ref)
    _ran_on_tiles(emulator, products=1000)


def test_permission_request_is_idempotent_or_a_clear_error():
    """On an AMX host the request succeeds (twice: once per process); elsewhere it is either granted
    (an AMX-capable kernel) or refused with a one-line reason naming the way out."""
    try:
        amx.request_permission()
        amx.request_permission()
    except amx.AMXPermissionError as err:
        assert not amx.host_has_amx()
        assert "AMX tile state" in str(err) and "\n" not in str(err)


@pytest.mark.slow
@needs_amx
def test_tuning_measures_the_amx_kernel_and_builds_from_it(tmp_path):
    """`harness tune` seeds each task with its default schedule: on an AMX host that is the AMX
    kernel, measured in MetaSchedule's runner processes (which ask for tile state themselves), and
    searches the AMX tile plans (every record an AMX kernel); the build from the database then runs
    the fastest (the record lists it) with numpy's integer sums."""
    from harness.targets import llvm_target
    from harness.tune.database import load_records, open_database
    from harness.tune.search import tune_model

    target = tvm.target.Target(llvm_target())
    assert amx.target_has_amx(target)
    mod, w = _plain_conv(64, 32, 14, 3, 1)
    work_dir = str(tmp_path / "db")
    report = tune_model(mod, target, work_dir, trials=2, seed=0)
    assert report.defaults_measured == 1
    records = open_database(work_dir, target).get_all_tuning_records()
    amx_records = [rec for rec in records if "harness_amx_" in str(rec.trace)]
    assert report.trials == 2 and len(amx_records) == len(records) == 3, [str(r.trace)[-300:] for r in records]
    assert all(0 < float(rec.run_secs[0]) < 1 for rec in amx_records)
    built = compile_module(mod, target, records=load_records([("db", work_dir)], target))
    x = _codes((1, 64, 14, 14))
    got = relax.VirtualMachine(built.executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, _conv_reference(x, w, 1, 1))
    assert len(built.amx_kernels) == 1  # the fastest record is an AMX one: the build says so


def test_database_records_of_amx_kernels_are_read_in_a_new_process(tmp_path):
    """A tuning record of an AMX kernel names the harness's AMX intrinsics; a new process (which has
    registered none) must read it as a record, not move it aside as corrupt (any host: nothing runs)."""
    import subprocess
    import sys

    from tvm.s_tir import meta_schedule as ms

    from harness.tune.database import RECORD_FILE, open_database
    from tests.conftest import ROOT

    tgt = tvm.target.Target(SPR)
    mod = int8_conv(ci=64, co=32, hw=14, epilogue="int_bias")
    [kernel] = [f for gv, f in fused(mod, tgt, schedule_family(tgt)).functions.items()
                if isinstance(f, tvm.tirx.PrimFunc) and "conv2d" in gv.name_hint]
    sch, kind = schedule_family(tgt).default_schedule(kernel, tgt)
    assert kind == "cpu_int8_amx"
    work_dir = str(tmp_path / "db")
    database = open_database(work_dir, tgt, create=True)
    database.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, database.commit_workload(tvm.IRModule({"main": kernel})), [1e-3], tgt))
    line = open(f"{work_dir}/{RECORD_FILE}").read()
    assert re.search(r"harness_amx_dot_k\d+_x\d+x\d+_c\d+", line)  # a channel-row tile plan
    code = ("import sys; from harness.tune.database import sanitize_database; "
            "print(len(sanitize_database(sys.argv[1])))")
    done = subprocess.run([sys.executable, "-c", code, work_dir], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "0", done.stderr[-2000:]
    assert open(f"{work_dir}/{RECORD_FILE}").read() == line


def _amx_spaces(task, target):
    """The design spaces of `harness tune`'s search space of `task` on an AMX target."""
    from tvm.s_tir import meta_schedule as ms

    from harness.tune.spaces import cpu_int8_dot_space

    ctx = ms.TuneContext(mod=task.dispatched[0], target=target, task_name=task.task_name, rand_state=1,
                         space_generator=cpu_int8_dot_space(target, amx=True).space_generator(), num_threads=1)
    return ctx.generate_design_space()


def _plan_of(sch) -> str:
    [plan] = set(re.findall(r"harness_amx_dot_(k\d+_x\d+x\d+_c\d+(?:_rows)?)", str(sch.trace)))
    return plan


def test_amx_search_space_is_one_design_space_per_tile_plan():
    """On an AMX target `harness tune` searches a stride-1 conv's AMX kernel over its tile plans,
    one design space each (the plan is in the tensor intrinsics' names: a replayed decision could
    not change it): 1-3 tiles of 16 output channels x 1 or 2 pixel tiles of 4..16 pixels dividing
    the width, within the 8 tile registers, each with channels or rows outermost, the default plan
    first (3 x 1 tiles, channels outer here: 144 pixels < 32 x 96 weight bytes per channel)."""
    from harness.tune.search import tunable_tasks

    tgt = tvm.target.Target(SPR)
    [task] = tunable_tasks(_plain_conv(32, 96, 12, 1, 1)[0], tgt)
    spaces = _amx_spaces(task, tgt)
    plans = [_plan_of(sch) for sch in spaces]
    # 6 channel tiles: mt 1, 2, 3; width 12: tn 4 (3 tiles: nt 1), 6 (nt 1, 2), 12 (nt 1)
    want = {f"k{mt}_x{nt}x{tn}_c32{order}" for mt in (1, 2, 3) for tn, nt in ((4, 1), (6, 1), (6, 2), (12, 1))
            for order in ("", "_rows") if mt * nt + mt + nt <= 8}
    assert plans[0] == "k3_x1x12_c32" and len(plans) == len(set(plans)) and set(plans) == want, plans
    # the two orders: the parallel loop's slowest iterator is the block of 48 output channels (2)
    # or the output row (12)
    slowest = {plan: _slowest_parallel_extent(sch) for sch, plan in zip(spaces, plans)}
    assert slowest["k3_x1x12_c32"] == 2 and slowest["k3_x1x12_c32_rows"] == 12, slowest


def _slowest_parallel_extent(sch) -> int:
    """The extent of the conv block iterator bound to ``fused // ...`` (its parallel loop's slowest)."""
    text = sch.mod["main"].script()
    init = text[text.index('T.sblock("conv2d_nchw_init_o")'):]
    return int(re.search(r"T\.axis\.spatial\(T\.int64\((\d+)\), \w+_fused // ", init).group(1))


@pytest.mark.parametrize("mode", ["compiled", "emulated"])
def test_amx_search_space_plans_build_and_are_exact(tmp_path, mode):
    """Each design space, applied from a database at build time, is the build's AMX kernel: built
    for sapphirerapids (any host) compiled to tile instructions, run on an AMX host; emulated (any
    host), run. Run, it gives numpy's integer sums exactly."""
    from tvm.s_tir import meta_schedule as ms

    from harness.tune.database import load_records, open_database
    from harness.tune.search import tunable_tasks

    tgt = _target("emulated") if mode == "emulated" else tvm.target.Target(SPR)
    mod, w = _plain_conv(64, 64, 28, 3, 1)
    x = _codes((1, 64, 28, 28))
    with _tiles(mode) as emulator:
        [task] = tunable_tasks(mod, tgt)
        spaces = _amx_spaces(task, tgt)
        assert len(spaces) > 4
        for i, sch in enumerate(spaces[1:4]):  # the default plan is tested above; three others
            work_dir = str(tmp_path / f"db{i}")
            database = open_database(work_dir, tgt, create=True)
            database.commit_tuning_record(ms.database.TuningRecord(
                sch.trace, database.commit_workload(task.dispatched[0]), [1e-3], tgt,
                ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)))
            built = compile_module(mod, tgt, records=load_records([("db", work_dir)], tgt))
            assert built.report.from_database == [task.task_name] and built.amx_kernels
            if mode == "compiled":
                assert _counts(_asm(built))["tdpbsud"] >= 1, _plan_of(sch)
            if mode == "emulated" or amx.host_has_amx():
                got = relax.VirtualMachine(built.executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
                np.testing.assert_array_equal(got, _conv_reference(x, w, 1, 1), err_msg=_plan_of(sch))
    _ran_on_tiles(emulator)


def _one_conv_int8(shape, relu: bool):
    """conv2d + bias (+ ReLU) of `shape` quantized as the harness quantizes a model: its conv
    kernel's epilogue differs with `relu`, its conv (the anchor block) does not."""
    from harness.quantize import QConfig, quantize

    rng = np.random.RandomState(0)
    weight = rng.normal(size=(shape.k, shape.c, shape.r, shape.s)).astype("float32") / 8
    bb = relax.BlockBuilder()
    x = relax.Var("data", relax.TensorType((shape.n, shape.c, shape.h, shape.w), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(bb.emit(relax.op.nn.relu(x)), relax.const(weight),
                                           strides=shape.stride, padding=shape.pad))
            y = bb.emit(relax.op.add(y, relax.const(np.full((1, shape.k, 1, 1), 0.1, "float32"))))
            out = bb.emit_output(relax.op.nn.relu(y) if relu else y)
        bb.emit_func_output(out)
    calib = [{"data": rng.normal(size=(shape.n, shape.c, shape.h, shape.w)).astype("float32")} for _ in range(2)]
    return quantize(bb.get(), {}, calib, model_name="one_conv", config=QConfig(skip_conv_layers=[]))


def test_a_searched_tile_plan_applies_to_the_same_conv_with_another_epilogue():
    """A record of a searched (non-default) AMX plan, tuned on a conv kernel with one epilogue, is
    applied to the same conv fused with another as that kernel's own design space of the plan
    (MetaSchedule's anchor-trace replay fails on these schedules: resnet50_v1's residual-add
    kernels kept their default plans)."""
    import tvm_ffi

    from harness.build.passes.apply_database import Record, replay
    from harness.tune import ConvShape
    from harness.tune.conv import _conv_task

    target = tvm.target.Target(SPR)
    family = schedule_family(target)
    shape = ConvShape.parse("1,32,8,8,32,1,1,1,0")
    tuned = _conv_task(_one_conv_int8(shape, relu=True), target, None).dispatched[0]
    other = _conv_task(_one_conv_int8(shape, relu=False), target, None).dispatched[0]
    assert not tvm_ffi.structural_equal(tuned, other)
    spaces = family.sample_schedule(tvm.s_tir.Schedule(tuned), target)
    plans = [_plan(space) for space in spaces]
    assert len(plans) > 2
    record = Record("conv/t", spaces[2].trace, tuned, 1e-4)
    sch, how = replay(record, other["main"], target, family)
    assert how == "same tile plan" and _plan(sch) == plans[2] != plans[0]
    asm = _asm(compile_module(tvm.IRModule({"main": sch.mod["main"]}), target, fallback=False))
    assert _counts(asm)["tdpbsud"] > 0


def _plan(sch) -> str:
    """The AMX tile plan a schedule tensorizes with (its dot intrinsic's name)."""
    from harness.schedules.intrinsics import trace_uses_intrinsic

    return trace_uses_intrinsic(sch.trace)


_RUN_EXPORTED = """
import sys
import numpy as np
import tvm
from tvm import relax
lib = tvm.runtime.load_module(sys.argv[1])
x = np.load(sys.argv[2])
out = relax.VirtualMachine(lib, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
np.save(sys.argv[3], out)
"""


def _run_exported(path, x, tmp_path):
    """Run an exported library in a new process with TVM alone (no harness: nothing asked for tile
    state, nothing loaded the emulator); its output."""
    import subprocess
    import sys

    np.save(tmp_path / "x.npy", x)
    done = subprocess.run([sys.executable, "-c", _RUN_EXPORTED, path, str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                          capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    return np.load(tmp_path / "y.npy")


def _symbols(path) -> str:
    import subprocess

    return subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("mode", MODES)
def test_an_exported_amx_library_runs_in_a_process_with_tvm_alone(mode, tmp_path):
    """compile_module(export=) links into a library with AMX kernels what it needs to run anywhere
    its code runs: the tile-state request at load (tiles), or the emulator itself (emulated); a
    new process with only TVM loads it and gets numpy's integer sums."""
    mod, w = _plain_conv(64, 32, 14, 3, 1)
    path = str(tmp_path / "conv.so")
    with _tiles(mode):
        built = compile_module(mod, _target(mode), export=path)
    assert built.amx_kernels
    symbols = _symbols(path)
    if mode == "tiles":
        assert "harness_amx_tile_state_error" in symbols and "harness_amx_tdpbsud" not in symbols
    else:
        assert "harness_amx_tdpbsud" in symbols and "harness_amx_tile_state_error" not in symbols
    x = _codes((1, 64, 14, 14))
    np.testing.assert_array_equal(_run_exported(path, x, tmp_path), _conv_reference(x, w, 1, 1))


def test_only_libraries_with_amx_kernels_carry_the_tile_state_request(tmp_path):
    """Any host (nothing runs): the sapphirerapids export of an int8 conv has the loader's request;
    the same conv without AMX (switched off, or a CPU without it) has none."""
    mod = int8_conv(ci=64, co=32, hw=14, epilogue="int_bias")
    cases = {"spr": (SPR, None), "spr_off": (SPR, ScheduleOptions(cpu_int8_amx=False)),
             "cascadelake": ({"kind": "llvm", "mcpu": "cascadelake", "num-cores": 2}, None)}
    for name, (target, options) in cases.items():
        path = str(tmp_path / f"{name}.so")
        built = compile_module(mod, tvm.target.Target(target), schedules=options, export=path)
        assert ("harness_amx_tile_state_error" in _symbols(path)) == bool(built.amx_kernels) == (name == "spr"), name


def _workspace_calls_in_parallel_loops(built) -> int:
    """TVMBackendAllocWorkspace calls in the LLVM IR's parallel-loop bodies (per block, where any)."""
    calls, func = 0, ""
    for line in _asm(built, "ll").splitlines():
        if line.startswith("define"):
            func = line
        elif "load ptr, ptr @__TVMBackendAllocWorkspace" in line and "__tvm_parallel_lambda" in func:
            calls += 1
    return calls


def test_the_sums_of_a_tile_stay_on_the_stack():
    """Any host (nothing runs): a stride-1 AMX kernel stores its sums and runs its epilogue one
    accumulator tile at a time, from a buffer of that tile on the stack where it is under 1 KB (16
    channels x up to 15 pixels of int32), not from a workspace allocated per block inside the
    parallel loop: 2 x 1 tiles of 7 pixels, 2 x 2 tiles of 14; a 16-pixel tile (1 KB) still
    allocates one."""
    tgt = tvm.target.Target(SPR)
    for hw, calls in ((7, 0), (28, 0), (16, 1)):
        built = compile_module(_plain_conv(64, 64, hw, 3, 1)[0], tgt)
        assert built.amx_kernels and _workspace_calls_in_parallel_loops(built) == calls, hw

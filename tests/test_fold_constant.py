"""harness.build.passes.fold_constant: the constants relax.transform.FoldConstant computes, with each
distinct kernel compiled once instead of once per call."""
from __future__ import annotations

import importlib

import pytest
import tvm_ffi
import tvm
from tvm import relax

from harness.build.passes.fold_constant import fold_constant_pass
from harness.build.pipeline import fuse_passes
from harness.schedules import ScheduleOptions, schedule_family
from harness.targets import llvm_target


@pytest.fixture
def builds():
    """Every PrimFunc compiled through the global "tirx.build" (what FoldConstant calls) while the
    test runs."""
    build_module = importlib.import_module("tvm.tirx.build")
    seen = []

    def counting(func, *args, **kwargs):
        seen.append(func)
        return build_module.build(func, *args, **kwargs)

    tvm.register_global_func("tirx.build", counting, override=True)
    try:
        yield seen
    finally:
        tvm.register_global_func("tirx.build", build_module.build, override=True)


def _legalized_int8_mobilenetv2():
    """Int8 mobilenetv2_1.0 (32 x 32 input) as a CPU build has it just before its first
    FoldConstant: batch norms on dequantized conv outputs, channel-blocked 8-bit tensors."""
    from harness.quantize import apply_table, qconfig
    from tests.helpers import calibrated_model

    mod, table, _ = calibrated_model("mobilenetv2_1.0", 32, 0, 1)
    with qconfig(calibrate_mode="max", weight_scale="channel_max") as cfg:
        qmod = apply_table(mod, None, table, config=cfg)
    target = tvm.target.Target(llvm_target("haswell", 2))
    passes = fuse_passes(target, schedule_family(target, ScheduleOptions(cpu_int8_amx=False)))
    upto = [p.info.name for p in passes].index("HarnessFoldConstant")
    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(passes[:upto])(qmod)


def test_folds_what_fold_constant_folds_compiling_each_kernel_once(builds):
    mod = _legalized_int8_mobilenetv2()
    plain = relax.transform.FoldConstant()(mod)
    plain_builds = len(builds)
    builds.clear()
    ours = fold_constant_pass()(mod)
    # the same module: the same kernels, the same folded constants bit for bit, no symbol left behind,
    tvm.ir.assert_structural_equal(ours, plain, map_free_vars=True)
    # in the same order (kernels are emitted in the module's order)
    assert [gv.name_hint for gv in ours.functions.keys()] == [gv.name_hint for gv in plain.functions.keys()]
    assert not any("global_symbol" in (f.attrs or {}) for _, f in ours.functions_items()
                   if isinstance(f, tvm.tirx.PrimFunc))
    # each kernel compiled once (FoldConstant names each "tir_function" before it compiles it)
    distinct = []
    for func in builds:
        assert not any(tvm_ffi.structural_equal(func, d) for d in distinct), func
        distinct.append(func)
    # TVM 0.27's FoldConstant alone compiles a kernel per call; should it stop doing so, this pass
    # has become unnecessary
    assert len(distinct) < plain_builds, (len(distinct), plain_builds)

"""`partition_conversions` (harness/quantize/partition.py): main split into quantize_inputs /
quantized_main / dequantize_outputs with the same results; `fully_integral` refuses a float32 core
and names what is float32 in it, and accepts a core that is integers only."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from harness.bench import make_vm, run_once
from harness.build import compile_module
from harness.errors import ConfigError
from harness.quantize import QConfig, apply_table, qconfig
from harness.quantize.partition import core_float_ops
from harness.schedules import ScheduleOptions
from tests.helpers import calibrated_model, calibrated_resnet18

PARTS = ["quantize_inputs", "quantized_main", "dequantize_outputs", "main"]


# the 3x3 convs on the dot product: with integer Winograd on (CPUs without VNNI) the partitioned and
# the plain resnet18 builds differ in the float epilogue of the last conv (up to 2.3e-5, the int32
# sums being equal): fused into the Winograd kernel it runs as separate multiplies and adds, in the
# partitioned build's own float kernel as FMAs (README, integer Winograd), so these tests compare
# the builds on the dot product
SAME_KERNELS = ScheduleOptions(cpu_int8_winograd=False)


def _run(mod, x, target):
    return run_once(make_vm(compile_module(mod, target, schedules=SAME_KERNELS).executable, tvm.cpu()),
                    tvm.cpu(), [x])


def _dtypes(func) -> set:
    return {str(b.var.ty.dtype) for blk in func.body.blocks for b in blk.bindings if hasattr(b.var.ty, "dtype")}


@pytest.fixture(scope="module")
def resnet18_small():
    mod, table, calib = calibrated_resnet18(32, 0, 2)
    return mod, table, calib[0]["data"]


def test_partitioned_resnet18_gives_the_same_outputs(resnet18_small, llvm_target):
    mod, table, x = resnet18_small
    with qconfig(calibrate_mode="max", weight_scale="channel_max") as cfg:
        plain = apply_table(mod, None, table, config=cfg)
    with qconfig(calibrate_mode="max", weight_scale="channel_max", partition_conversions="enabled") as cfg:
        parted = apply_table(mod, None, table, config=cfg)
    assert sorted(gv.name_hint for gv in parted.functions) == sorted(PARTS)
    # the skipped first conv and its pool are the input conversion; it ends in the 8-bit casts
    pre = parted["quantize_inputs"]
    assert "uint8" in _dtypes(pre) and "int32" not in _dtypes(pre)
    assert "R.nn.conv2d" in pre.script() and 'out_dtype="int32"' not in pre.script()
    assert parted["quantized_main"].script().count('out_dtype="int32"') == 19  # every int8 conv
    assert "R.matmul" in parted["dequantize_outputs"].script()  # the fp32 dense after the last dequantize
    np.testing.assert_array_equal(_run(parted, x, llvm_target), _run(plain, x, llvm_target))
    assert core_float_ops(parted)["add"] > 0  # residual adds stay float32 in the core


def test_fully_integral_names_the_float_ops(resnet18_small):
    """With the float requantization (the default) every epilogue between int8 convs is float32."""
    mod, table, _ = resnet18_small
    with qconfig(calibrate_mode="max", weight_scale="channel_max", requantize="float",
                 partition_conversions="fully_integral") as cfg:
        with pytest.raises(ConfigError, match=r"fully_integral: the quantized core still computes in float32: "
                                              r"\d+ add, .*nn\.relu.* \(use 'enabled' to partition anyway\)"):
            apply_table(mod, None, table, config=cfg)


def test_fully_integral_accepts_resnet18_with_integer_requantize(resnet18_small, llvm_target):
    """`requantize: integer` makes resnet18's core integers only: the 8 conv -> conv links inside its
    basic blocks and 7 of its 8 residual adds (the last one feeds the float32 pool and dense, in
    dequantize_outputs) are fixed-point requantizations. Same outputs as the unpartitioned integer
    build, and close to the float requantization's."""
    mod, table, x = resnet18_small
    knobs = dict(calibrate_mode="max", weight_scale="channel_max", requantize="integer")
    with qconfig(**knobs, partition_conversions="fully_integral") as cfg:
        parted = apply_table(mod, None, table, config=cfg)
    assert not core_float_ops(parted)
    core = parted["quantized_main"].script()
    assert core.count("R.right_shift") == 15 and core.count('out_dtype="int32"') == 19
    assert _dtypes(parted["quantized_main"]) <= {"uint8", "int8", "int32", "uint64", "int64", ""}
    with qconfig(**knobs) as cfg:
        plain = apply_table(mod, None, table, config=cfg)
    got = _run(parted, x, llvm_target)
    np.testing.assert_array_equal(got, _run(plain, x, llvm_target))
    with qconfig(calibrate_mode="max", weight_scale="channel_max", requantize="float") as cfg:
        ref = _run(apply_table(mod, None, table, config=cfg), x, llvm_target)
    a, b = ref.ravel(), got.ravel()
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.999
    assert a.argmax() == b.argmax()



@pytest.mark.parametrize("name,integer_ops", [
    ("mobilenetv2_1.0", "global average pool"),  # its classifier is a 1x1 conv after the pool
    ("efficientnet_lite0", "residual adds without ReLU, int8"),
    ("vgg16", "max pools"),
    ("inception_v3", "concats, average pools of codes, nested concats"),
])
def test_fully_integral_accepts_registry_models(name, integer_ops):
    """`requantize: integer` leaves no float32 op in the core of these models either (what each
    needs in integers: `integer_ops`)."""
    mod, table, _ = calibrated_model(name, {"vgg16": 224, "inception_v3": 299}.get(name, 64), 0, 1)
    with qconfig(calibrate_mode="max", weight_scale="channel_max", requantize="integer",
                 partition_conversions="fully_integral") as cfg:
        parted = apply_table(mod, None, table, config=cfg)
    assert not core_float_ops(parted), integer_ops

def test_fully_integral_core(llvm_target):
    """Two convs with a bias and ReLU between them, integer requantization: the core is integers
    only (uint8 -> int32 conv -> int32 bias, fixed-point requantize -> uint8 -> int32 conv)."""
    from harness.quantize import quantize

    rng = np.random.RandomState(1)
    w1 = rng.normal(size=(16, 8, 3, 3)).astype("float32")
    b1 = rng.normal(size=(1, 16, 1, 1)).astype("float32")
    w2 = rng.normal(size=(8, 16, 3, 3)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("data", relax.TensorType((1, 8, 12, 12), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(w1), padding=1))
            y = bb.emit(relax.op.nn.relu(bb.emit(relax.op.add(y, relax.const(b1)))))
            out = bb.emit_output(relax.op.nn.conv2d(y, relax.const(w2), padding=1))
        bb.emit_func_output(out)
    mod = bb.get()
    calib = [{"data": rng.uniform(0, 1, size=(1, 8, 12, 12)).astype("float32")} for _ in range(4)]
    knobs = dict(calibrate_mode="max", weight_scale="channel_max", skip_conv_layers=[], requantize="integer")
    with qconfig(**knobs):
        plain = quantize(mod, calib_data=calib)
    with qconfig(**knobs, partition_conversions="fully_integral"):
        parted = quantize(mod, calib_data=calib)
    assert not core_float_ops(parted)
    assert _dtypes(parted["quantized_main"]) <= {"uint8", "int8", "int32", "uint64", "int64", ""}
    np.testing.assert_array_equal(_run(parted, calib[0]["data"], llvm_target),
                                  _run(plain, calib[0]["data"], llvm_target))


def test_knob_values():
    assert QConfig(partition_conversions="enabled").partition_conversions == "enabled"
    with pytest.raises(ConfigError, match="quantize.partition_conversions: unknown 'yes'; valid: disabled, "
                                          "enabled, fully_integral"):
        QConfig(partition_conversions="yes")
    with pytest.raises(ConfigError, match="needs do_simulation: false"):
        QConfig(partition_conversions="enabled", do_simulation=True)

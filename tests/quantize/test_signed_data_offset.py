"""quantize.signed_data_offset: an ungrouped, unpadded conv on signed (int8) codes reads them as
uint8 codes + 128 and takes 128 x each output channel's weight sum off its int32 sums, so that it
runs on the dot products that read unsigned data (VNNI, vpmaddubsw); the same integers."""
import dataclasses

import numpy as np
import pytest
import tvm
from tvm import relax

from harness.bench import make_vm, run_once
from harness.build import compile_module
from harness.config import config_from_dict
from harness.errors import ConfigError
from harness.quantize import QConfig, apply_table, calibrate
from tests.helpers import int8_convs

C, SIDE = 16, 10


@pytest.mark.parametrize("target,reduce_range,offset", [
    ({"kind": "llvm", "mcpu": "haswell"}, "auto", True),         # vpmaddubsw (7-bit) against vpmaddwd
    ({"kind": "llvm", "mcpu": "haswell"}, False, False),         # 8-bit weights: vpmaddwd either way
    ({"kind": "llvm", "mcpu": "znver1"}, "auto", True),
    ({"kind": "llvm", "mcpu": "skylake-avx512"}, "auto", True),
    ({"kind": "llvm", "mcpu": "cascadelake"}, "auto", True),     # VNNI reads unsigned data only
    ({"kind": "llvm", "mcpu": "znver4"}, False, True),
    ({"kind": "llvm", "mcpu": "x86-64"}, "auto", False),         # no 8-bit dot product at all
    ({"kind": "cuda", "arch": "sm_90"}, "auto", False),          # dp4a takes signed data
])
def test_auto_follows_the_target(target, reduce_range, offset):
    cfg = config_from_dict({"model": {"name": "resnet18_v1"}, "target": target,
                            "quantize": {"reduce_range": reduce_range}})
    assert cfg.quantize.signed_data_offset == "auto" and cfg.qconfig().signed_data_offset is offset
    for given in (True, False):  # a choice given is kept on every target
        cfg = config_from_dict({"model": {"name": "resnet18_v1"}, "target": target,
                                "quantize": {"signed_data_offset": given}})
        assert cfg.qconfig().signed_data_offset is given


def test_bad_values_are_refused():
    with pytest.raises(ConfigError, match=r"quantize.signed_data_offset: 'on'; valid: auto, true, false"):
        QConfig(signed_data_offset="on")


def _model() -> tvm.IRModule:
    """Three convs on signed data (the model's input): a 1x1 one (offset), a padded 3x3 one (a
    padded border would read 0, not the offset: kept signed) and a grouped 1x1 one (kept signed);
    then a 1x1 conv on the concatenation of their ReLUs (uint8 data already)."""
    rng = np.random.RandomState(0)
    w1, w3 = rng.normal(scale=0.2, size=(C, C, 1, 1)), rng.normal(scale=0.2, size=(C, C, 3, 3))
    wg, w4 = rng.normal(scale=0.2, size=(C, 2, 1, 1)), rng.normal(scale=0.2, size=(C, 3 * C, 1, 1))
    x = relax.Var("data", relax.TensorType((1, C, SIDE, SIDE), "float32"))
    bb, op = relax.BlockBuilder(), relax.op
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(op.nn.conv2d(x, relax.const(w1.astype("float32"))))
            b = bb.emit(op.nn.conv2d(x, relax.const(w3.astype("float32")), padding=1))
            c = bb.emit(op.nn.conv2d(x, relax.const(wg.astype("float32")), groups=C // 2))
            s = bb.emit(op.concat([bb.emit(op.nn.relu(t)) for t in (a, b, c)], axis=1))
            out = bb.emit_output(op.nn.conv2d(s, relax.const(w4.astype("float32"))))
        bb.emit_func_output(out)
    return bb.get()


def _run(mod, x, target):
    return run_once(make_vm(compile_module(mod, target).executable, tvm.cpu()), tvm.cpu(), [x])


@pytest.mark.parametrize("requantize", ["float", "integer"])
def test_same_integers_on_unsigned_data(requantize, llvm_target):
    mod = _model()
    rng = np.random.RandomState(1)
    calib = [{"data": rng.normal(size=(1, C, SIDE, SIDE)).astype("float32")} for _ in range(4)]
    base = QConfig(calibrate_mode="max", weight_scale="channel_max", skip_conv_layers=[], requantize=requantize)
    table = calibrate(mod, None, calib, config=base)
    signed = apply_table(mod, None, table, config=base)
    offset = apply_table(mod, None, table, config=dataclasses.replace(base, signed_data_offset=True))
    assert int8_convs(signed) == [(1, "int8", 127), (1, "int8", 127), (C // 2, "int8", 127), (1, "uint8", 127)]
    assert int8_convs(offset) == [(1, "uint8", 127), (1, "int8", 127), (C // 2, "int8", 127), (1, "uint8", 127)]
    text = offset["main"].script()
    assert text.count('R.const(128, "int16")') == 1
    if requantize == "integer":  # the sums minus the offset's are still requantized in integers
        assert text.count("R.right_shift") == signed["main"].script().count("R.right_shift") > 0
    x = calib[0]["data"]
    np.testing.assert_array_equal(_run(offset, x, llvm_target), _run(signed, x, llvm_target))
    # with reduce_range, the offset conv's weights get its 7 bits (the convs vpmaddubsw multiplies)
    reduced = apply_table(mod, None, table, config=dataclasses.replace(base, signed_data_offset=True,
                                                                       reduce_range=True))
    assert int8_convs(reduced) == [(1, "uint8", 63), (1, "int8", 127), (C // 2, "int8", 127), (1, "uint8", 63)]
    with pytest.raises(ValueError, match="resolved for a target first"):
        apply_table(mod, None, table, config=dataclasses.replace(base, signed_data_offset="auto"))


@pytest.mark.slow
def test_mobilenetv2_expand_convs(llvm_target):
    """mobilenetv2 (64x64): its 16 expand convs and the last 1x1 conv read the signed output of a
    linear bottleneck; with the offset they read uint8, and the output is bit-identical (8-bit
    weights both ways)."""
    from harness.config import load_config
    from harness.frontends import load_model
    from harness.models import input_data
    from harness.pipeline import calibration_table, int8_module

    cfg = load_config("configs/mobilenetv2_1.0_int8.yaml")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, input_shape=[1, 3, 64, 64]))
    model = load_model(cfg.model)
    table = calibration_table(cfg, model, status=lambda m: None)
    x = input_data(model.input_shape, 0)
    outs, offsets = {}, {}
    for offset in (False, True):
        c = dataclasses.replace(cfg, quantize=dataclasses.replace(cfg.quantize, reduce_range=False,
                                                                   signed_data_offset=offset))
        mod = int8_module(c, model, table)
        offsets[offset] = mod.script().count('R.const(128, "int16")')
        built = compile_module(mod, llvm_target, schedules=c.schedule_options())
        outs[offset] = run_once(make_vm(built.executable, tvm.cpu()), tvm.cpu(), [x])
    assert offsets == {False: 0, True: 17}
    np.testing.assert_array_equal(outs[True], outs[False])

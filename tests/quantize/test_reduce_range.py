"""quantize.reduce_range: 7-bit weights for the convs x86 CPUs without VNNI multiply on vpmaddubsw
(ungrouped convs on uint8 data), chosen by the build's target when `auto`."""
import numpy as np
import pytest
import tvm
from tvm import relax

from harness.config import config_from_dict
from harness.errors import ConfigError
from harness.quantize import QConfig, apply_table, calibrate
from tests.helpers import int8_convs

C, SIDE = 16, 10


@pytest.mark.parametrize("target,reduced", [
    ({"kind": "llvm", "mcpu": "haswell"}, True),          # AVX2: vpmaddwd (8-bit) or vpmaddubsw (7-bit)
    ({"kind": "llvm", "mcpu": "znver3"}, True),
    ({"kind": "llvm", "mcpu": "skylake-avx512"}, True),   # AVX-512BW without VNNI
    ({"kind": "llvm", "mcpu": "cascadelake"}, False),     # VNNI: vpdpbusd is exact at 8 bits
    ({"kind": "llvm", "mcpu": "znver4"}, False),
    ({"kind": "llvm", "mcpu": "sapphirerapids"}, False),
    ({"kind": "llvm", "mcpu": "x86-64"}, False),          # no 8-bit dot product at all
    ({"kind": "cuda", "arch": "sm_90"}, False),
])
def test_auto_follows_the_target(target, reduced):
    cfg = config_from_dict({"model": {"name": "resnet18_v1"}, "target": target, "quantize": {}})
    assert cfg.quantize.reduce_range == "auto" and cfg.qconfig().reduce_range is reduced
    # reduce_range shortens the ungrouped convs' weights only: grouped ones keep 8 bits
    options = cfg.schedule_options()
    assert (options.int8_weight_bits, options.int8_grouped_weight_bits) == (7 if reduced else 8, 8)
    for given in (True, False):  # a choice given is kept on every target
        cfg = config_from_dict({"model": {"name": "resnet18_v1"}, "target": target,
                                "quantize": {"reduce_range": given}})
        assert cfg.qconfig().reduce_range is given
        assert cfg.schedule_options().int8_weight_bits == (7 if given else 8)


def test_bad_values_are_refused():
    with pytest.raises(ConfigError, match=r"quantize.reduce_range: invalid value 'yes'; valid: auto, True, False"):
        config_from_dict({"model": {"name": "resnet18_v1"}, "quantize": {"reduce_range": "yes"}})
    with pytest.raises(ConfigError, match=r"quantize.reduce_range: 'on'; valid: auto, true, false"):
        QConfig(reduce_range="on")


def _model() -> tvm.IRModule:
    """conv_a(x) reads signed data; conv_b reads relu (uint8 codes); dw is depthwise on uint8 codes."""
    rng = np.random.RandomState(0)
    wa, wb = (rng.normal(scale=0.2, size=(C, C, 3, 3)).astype("float32") for _ in range(2))
    wd = rng.normal(scale=0.2, size=(C, 1, 3, 3)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("data", relax.TensorType((1, C, SIDE, SIDE), "float32"))
    op = relax.op
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(op.nn.relu(bb.emit(op.nn.conv2d(x, relax.const(wa), padding=1))))
            b = bb.emit(op.nn.relu(bb.emit(op.nn.conv2d(a, relax.const(wb), padding=1))))
            out = bb.emit_output(op.nn.conv2d(b, relax.const(wd), padding=1, groups=C))
        bb.emit_func_output(out)
    return bb.get()


def test_seven_bits_go_only_to_the_convs_vpmaddubsw_multiplies():
    mod = _model()
    rng = np.random.RandomState(1)
    calib = [{"data": rng.normal(size=(1, C, SIDE, SIDE)).astype("float32")} for _ in range(4)]
    cfg = QConfig(calibrate_mode="max", weight_scale="channel_max", skip_conv_layers=[])
    table = calibrate(mod, None, calib, config=cfg)
    eight = int8_convs(apply_table(mod, None, table, config=cfg))
    assert eight == [(1, "int8", 127), (1, "uint8", 127), (C, "uint8", 127)]
    reduced = QConfig(calibrate_mode="max", weight_scale="channel_max", skip_conv_layers=[], reduce_range=True)
    # signed data (vpmaddwd) and depthwise (its own vpmaddwd kernel) keep 8 bits
    assert int8_convs(apply_table(mod, None, table, config=reduced)) == [
        (1, "int8", 127), (1, "uint8", 63), (C, "uint8", 127)]
    with pytest.raises(ValueError, match="resolved for a target first"):
        apply_table(mod, None, table, config=QConfig(calibrate_mode="max", skip_conv_layers=[], reduce_range="auto"))

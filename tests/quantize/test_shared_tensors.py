"""quantize.shared_tensors: a tensor read by a quantized op and by something else (a residual block's
input) is stored once in 8 bits; the other readers see its dequantized value."""
import dataclasses

import numpy as np
import pytest
import tvm
from tvm import relax

from harness.bench import make_vm, run_once
from harness.build import compile_module
from harness.errors import ConfigError
from harness.quantize import QConfig, apply_table, calibrate
from harness.quantize.realize import data_quant, fake_quantize

C, SIDE = 16, 12


def residual_block(seed: int = 0) -> tvm.IRModule:
    """main(x) = conv2(relu(conv1(t))) + t with t = relu(x): t is read by conv1 and by the add."""
    rng = np.random.RandomState(seed)
    w1, w2 = (rng.normal(scale=0.2, size=(C, C, 3, 3)).astype("float32") for _ in range(2))
    bb = relax.BlockBuilder()
    x = relax.Var("data", relax.TensorType((1, C, SIDE, SIDE), "float32"))
    op = relax.op
    with bb.function("main", [x]):
        with bb.dataflow():
            t = bb.emit(op.nn.relu(x))
            y = bb.emit(op.nn.relu(bb.emit(op.nn.conv2d(t, relax.const(w1), padding=1))))
            y = bb.emit(op.nn.conv2d(y, relax.const(w2), padding=1))
            out = bb.emit_output(op.add(y, t))
        bb.emit_func_output(out)
    return bb.get()


@pytest.fixture(scope="module")
def block():
    mod = residual_block()
    rng = np.random.RandomState(1)
    calib = [{"data": rng.normal(size=(1, C, SIDE, SIDE)).astype("float32")} for _ in range(4)]
    cfg = QConfig(calibrate_mode="max", weight_scale="channel_max", skip_conv_layers=[])
    return mod, calibrate(mod, None, calib, config=cfg), cfg


def _casts_to_uint8_of_float(mod) -> int:
    return sum(1 for blk in mod["main"].body.blocks for b in blk.bindings
               if isinstance(b.value, relax.Call) and b.value.op.name == "relax.astype"
               and str(b.value.attrs.dtype) == "uint8" and str(b.value.args[0].ty.dtype) == "float32")


def test_the_skip_connection_reads_the_8bit_codes(block, llvm_target):
    mod, table, cfg = block
    shared = apply_table(mod, None, table, config=cfg)
    separate = apply_table(mod, None, table, config=dataclasses.replace(cfg, shared_tensors="float"))
    # t is quantized once in both (only conv1 quantizes it); conv2's input once: two uint8 tensors
    assert _casts_to_uint8_of_float(shared) == _casts_to_uint8_of_float(separate) == 2
    assert _skip_input(shared) == "uint8"  # the add reads astype(codes, float32) x scale
    assert _skip_input(separate) == "float32"  # the add reads relu(x) itself
    x = np.random.RandomState(2).normal(size=(1, C, SIDE, SIDE)).astype("float32")
    dev = tvm.cpu()
    outs = {k: np.asarray(run_once(make_vm(compile_module(m, llvm_target).executable, dev), dev, [x]))
            for k, m in (("shared", shared), ("separate", separate))}
    # the conv path is the same int8 computation in both; the skip connection adds t's 8-bit value
    # (codes x scale, as conv1 sees it) instead of t itself
    tq = _tensor_quant(table, cfg)
    t = np.maximum(x, 0)
    assert np.abs(fake_quantize(t, tq, cfg) - t).max() > 1e-3  # (so that the check below can fail)
    np.testing.assert_allclose(outs["shared"] - outs["separate"], fake_quantize(t, tq, cfg) - t, atol=2e-5)


def _skip_input(mod) -> str:
    """The storage type the skip connection's add reads t from: through multiply(astype(v), scale)
    the dtype of v, else the add's operand's own dtype."""
    values = {b.var: b.value for blk in mod["main"].body.blocks for b in blk.bindings}

    def value(v):
        return next((val for var, val in values.items() if var.same_as(v)), None)

    add = next(val for val in values.values() if isinstance(val, relax.Call) and val.op.name == "relax.add"
               and all(isinstance(a, relax.Var) for a in val.args))
    skip = add.args[1]
    mul = value(skip)
    if isinstance(mul, relax.Call) and mul.op.name == "relax.multiply":
        cast = value(mul.args[0])
        if isinstance(cast, relax.Call) and cast.op.name == "relax.astype":
            return str(cast.args[0].ty.dtype)
    return str(skip.ty.dtype)


def _tensor_quant(table, cfg):
    from harness.quantize.table import quants_from_table  # pylint: disable=import-outside-toplevel
    from harness.quantize.annotate import find_ops  # pylint: disable=import-outside-toplevel

    ops = find_ops(residual_block(), cfg)
    return quants_from_table(table, "model", ops, "table", cfg)["conv2d_0.data"]


def test_simulation_shares_the_same_way(block, llvm_target):
    """do_simulation fake-quantizes t once and the add reads that value: the simulated module agrees
    with the int8 one (float convs on fake-quantized weights against int32 sums)."""
    mod, table, cfg = block
    x = np.random.RandomState(3).normal(size=(1, C, SIDE, SIDE)).astype("float32")
    dev = tvm.cpu()
    outs = [np.asarray(run_once(make_vm(compile_module(apply_table(mod, None, table, config=c), llvm_target)
                                        .executable, dev), dev, [x]))
            for c in (cfg, dataclasses.replace(cfg, do_simulation=True))]
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-4 * np.abs(outs[1]).max())


def test_unknown_value_is_refused():
    with pytest.raises(ConfigError, match="quantize.shared_tensors: unknown 'int4'; valid: int8, float"):
        QConfig(shared_tensors="int4")


def test_uint8_scale_of_the_shared_tensor():
    """t = relu(x) is non-negative: stored as uint8 codes (data_quant's choice for the conv's input)."""
    tq = data_quant("t", 2.0, 0.0, QConfig())
    assert tq.dtype == "uint8"

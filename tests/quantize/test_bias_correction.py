"""Bias correction: the expected output shift of a quantized conv / dense, measured from the
calibration data's channel means, subtracted in the int8 kernel's epilogue."""
import numpy as np
import pytest
import tvm
from tvm import relax

from harness.bench import make_vm, run_once
from harness.build import compile_module
from harness.quantize import QConfig, TableError, apply_table, calibrate
from harness.quantize.realize import data_quant, fake_quantize, output_shift, quantize_weight, weight_scales

RNG = np.random.RandomState(3)


def test_output_shift_is_the_exact_mean_change_of_a_1x1_grouped_conv_and_a_dense():
    cfg = QConfig(weight_scale="channel_max")
    x = RNG.normal(1.0, 2.0, size=(6, 4, 5, 5)).astype("float32")  # mean far from 0: shifts show
    tq = data_quant("x", 3.0, float(x.min()), cfg)  # clips the upper tail: biased
    xq = fake_quantize(x, tq, cfg)
    tq.mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
    tq.mean_quantized = xq.mean(axis=(0, 2, 3), dtype=np.float64)
    w = RNG.normal(size=(8, 2, 1, 1))  # groups=2: output k reads input channels 2*(k//4) + (0, 1)
    s = weight_scales(w, cfg)
    w_hat = quantize_weight(w, s, cfg) * s.reshape(-1, 1, 1, 1)

    def conv(data, weight):
        groups = [np.einsum("kc,nchw->nkhw", weight[4 * g:4 * g + 4, :, 0, 0], data[:, 2 * g:2 * g + 2])
                  for g in range(2)]
        return np.concatenate(groups, axis=1)

    expected = (conv(xq.astype(np.float64), w_hat) - conv(x.astype(np.float64), w)).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(output_shift(w, w_hat, tq, groups=2), expected, rtol=1e-9, atol=1e-12)

    xd = x[:, :, 0, 0]  # dense: (out, in) weights, per-feature means
    tqd = data_quant("x", 3.0, float(xd.min()), cfg)
    xdq = fake_quantize(xd, tqd, cfg)
    tqd.mean, tqd.mean_quantized = xd.mean(0, dtype=np.float64), xdq.mean(0, dtype=np.float64)
    wd = RNG.normal(size=(3, 4))
    sd = weight_scales(wd, cfg)
    wd_hat = quantize_weight(wd, sd, cfg) * sd[:, None]
    expected = (xdq.astype(np.float64) @ wd_hat.T - xd.astype(np.float64) @ wd.T).mean(0)
    np.testing.assert_allclose(output_shift(wd, wd_hat, tqd), expected, rtol=1e-9, atol=1e-12)


def _one_conv():
    """main(x) = conv2d(x, W) (1x1, 2 groups): the shift over the calibration data is exact."""
    w = RNG.normal(size=(8, 2, 1, 1)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 4, 6, 6), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.conv2d(x, relax.const(w), groups=2))
        bb.emit_func_output(y)
    return bb.get()


def _channel_errors(bias_correction, llvm_target):
    mod = _one_conv()
    data = [{"x": RNG.normal(1.0, 2.0, size=(2, 4, 6, 6)).astype("float32")} for _ in range(3)]
    cfg = QConfig(calibrate_mode="percentile", percentile=0.9, weight_scale="channel_max", skip_conv_layers=[],
                  bias_correction=bias_correction)
    table = calibrate(mod, {}, data, config=cfg)
    errs = []
    for built in (compile_module(apply_table(mod, {}, table, config=cfg), llvm_target),
                  compile_module(mod, llvm_target)):
        vm = make_vm(built.executable, tvm.cpu())
        errs.append(np.concatenate([run_once(vm, tvm.cpu(), [b["x"]]) for b in data]))
    return table, (errs[0].astype(np.float64) - errs[1]).mean(axis=(0, 2, 3))


def test_int8_conv_has_no_mean_error_on_its_calibration_data(llvm_target):
    table, corrected = _channel_errors(True, llvm_target)
    _, plain = _channel_errors(False, llvm_target)
    row = next(r for r in table["tensors"] if r["enabled"])
    assert len(row["channel_mean"]) == len(row["channel_mean_quantized"]) == 4  # kept in the table
    assert np.abs(plain).max() > 0.05  # clipping 10% of a mean-1 input shifts the outputs
    assert np.abs(corrected).max() < 1e-4  # the same int8 kernels, shift subtracted


def test_table_without_channel_means_is_refused_with_bias_correction():
    mod = _one_conv()
    data = [{"x": RNG.normal(size=(2, 4, 6, 6)).astype("float32")}]
    off = QConfig(calibrate_mode="max", skip_conv_layers=[], bias_correction=False)
    table = calibrate(mod, {}, data, config=off)
    assert "channel_mean" not in next(r for r in table["tensors"] if r["enabled"])
    apply_table(mod, {}, table, config=off)  # fine as it was made
    with pytest.raises(TableError, match=r"t.json: tensor 'conv2d_0.data' has no channel means \(the table was "
                                         r"made with bias_correction off\): recalibrate, or set "
                                         r"quantize.bias_correction: false"):
        apply_table(mod, {}, table, config=QConfig(skip_conv_layers=[]), table_path="t.json")
    # global_scale uses no data, so there are no means to ask for
    table = calibrate(mod, {}, None, config=QConfig(calibrate_mode="global_scale", skip_conv_layers=[]))
    apply_table(mod, {}, table, config=QConfig(calibrate_mode="global_scale", skip_conv_layers=[]))

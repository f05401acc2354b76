"""Integer-only requantization (`requantize: integer`, harness/quantize/requantize.py): the
fixed-point form of the factor, exact shifts for power-of-two scales with and without
`round_for_shift`, agreement with the float path otherwise, and a whole ResNet-18. The same chains
folded into one float multiply-add (`requantize: folded`): exact where the scales are powers of
two, within a step of the float path otherwise."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from harness.bench import make_vm, run_once
from harness.build import compile_module
from harness.errors import ConfigError
from harness.quantize import QConfig
from harness.quantize.requantize import fixed_point, folded_requantize, integer_requantize

RNG = np.random.RandomState(0)


def _const(a, dtype=None):
    return relax.const(np.ascontiguousarray(a), dtype)


def _dequantized_conv(bb, x, w, combined, bias):
    """A 3x3 pad-1 conv (8-bit x int8 -> int32) dequantized per channel, plus its bias, as realize.py
    emits it."""
    k = w.shape[0]
    acc = bb.emit(relax.op.nn.conv2d(x, _const(w), padding=1, out_dtype="int32"))
    y = bb.emit(relax.op.multiply(bb.emit(relax.op.astype(acc, "float32")),
                                  _const(np.float32(combined).reshape(1, k, 1, 1))))
    return bb.emit(relax.op.add(y, _const(np.float32(bias).reshape(1, k, 1, 1))))


def _quantized_upward(bb, y, inv_scale, lo=0, hi=255, dtype="uint8"):
    """The next op's quantize of `y` (halves rounded up), as the module's output."""
    v = bb.emit(relax.op.multiply(y, relax.const(inv_scale, "float32")))
    codes = bb.emit(relax.op.floor(bb.emit(relax.op.add(v, relax.const(0.5, "float32")))))
    return bb.emit_output(relax.op.astype(bb.emit(relax.op.clip(codes, lo, hi)), dtype))


def _one_chain(mod, mode="integer"):
    """`mod` with its one chain made integer-only (rounding UPWARD, round_for_shift) or folded, and
    its text."""
    qmod, chains = integer_requantize(mod, "UPWARD", True) if mode == "integer" else folded_requantize(mod, "UPWARD")
    assert chains == 1
    return qmod, qmod["main"].script()


def _assert_form(text: str, mode: str, addends: int, shifts: int = 1):
    """Integer-only (`shifts` right shifts, no float32), or folded: one float multiply per addend,
    one floor, no ReLU."""
    if mode == "integer":
        assert text.count("R.right_shift") == shifts and '"float32"' not in text
    else:
        assert text.count("R.multiply") == addends and text.count("R.floor") == shifts
        assert "R.nn.relu" not in text and "R.right_shift" not in text


def _chain(combined, bias, inv_scale, w, *, act="relu", rounding="UPWARD", hw=9):
    """What realize.py emits between two int8 convs: conv (uint8 x int8 -> int32), dequantize
    (per channel), bias, ReLU, and the next conv's quantize to uint8 (as the module's output)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, w.shape[1], hw, hw), "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = _dequantized_conv(bb, x, w, combined, bias)
            if act == "relu":
                y = bb.emit(relax.op.nn.relu(y))
            elif act is not None:  # ("clip", a, b): ReLU6 and the like
                y = bb.emit(relax.op.clip(y, act[1], act[2]))
            if rounding == "UPWARD":
                out = _quantized_upward(bb, y, inv_scale)
            else:
                codes = bb.emit(relax.op.round(bb.emit(relax.op.multiply(y, relax.const(inv_scale, "float32")))))
                out = bb.emit_output(relax.op.astype(bb.emit(relax.op.clip(codes, 0, 255)), "uint8"))
        bb.emit_func_output(out)
    return bb.get()


def _run(mod, x, llvm_target):
    return run_once(make_vm(compile_module(mod, llvm_target).executable, tvm.cpu()), tvm.cpu(), [x])


def _acc(x, w):
    """The int32 sums of the 3x3 pad-1 conv, in numpy (exact)."""
    n, c, h, wd = x.shape
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, w.shape[0], h, wd), dtype=np.int64)
    for r in range(3):
        for s in range(3):
            out += np.einsum("nchw,kc->nkhw", xp[:, :, r:r + h, s:s + wd], w[:, :, r, s].astype(np.int64))
    return out


def test_fixed_point_form():
    factors = np.array([2.0 ** -8, 0.75, 1e-3, 3.3e-5, 0.999999999])
    m, n = fixed_point(factors)
    assert (m < 2 ** 31).all() and (m >= 2 ** 30).all() and (n > 0).all() and (n <= 62).all()
    np.testing.assert_allclose(m / 2.0 ** n, factors, rtol=2.0 ** -31)
    assert (m[0], n[0]) == (2 ** 30, 38)  # a power of two: a plain shift
    with pytest.raises(ValueError):
        fixed_point(np.array([0.0]))


@pytest.mark.parametrize("act", ["relu", ("clip", 0, 602), None])
@pytest.mark.parametrize("round_for_shift", [True, False])
def test_power_of_two_scales_shift_exactly(round_for_shift, act, llvm_target):
    """Scales that are powers of two (relay's power2 case): requantizing is `(y + 2^(n-1)) >> n`
    (round_for_shift: halves round up, like the float path's floor(v + 0.5)) or `y >> n`
    (truncation towards -inf), the activation's bounds (ReLU, a clip like ReLU6) rounded the same
    way. Checked exactly against the sums computed in numpy."""
    k, c = 8, 16
    w = RNG.randint(-8, 9, size=(k, c, 3, 3)).astype("int8")  # small weights: codes mostly in range
    combined = np.full(k, 2.0 ** -6)
    bias = combined * RNG.randint(-3000, 3000, size=k)  # whole accumulator steps: exact in int32
    mod = _chain(combined, bias, 0.25, w, act=act, hw=16)  # f = 2^-6 * 2^-2 = 2^-8
    qmod, chains = integer_requantize(mod, "UPWARD", round_for_shift)
    assert chains == 1
    text = qmod["main"].script()
    assert "R.right_shift" in text and '"float32"' not in text  # integers only
    x = RNG.randint(0, 256, size=(1, c, 16, 16)).astype("uint8")
    y = _acc(x, w) + np.rint(bias / combined).astype(np.int64).reshape(1, k, 1, 1)
    want = (y + 128) >> 8 if round_for_shift else y >> 8
    # the clip's 602 is 150.5 codes: 151 rounded half up, 150 truncated
    hi = 255 if act != ("clip", 0, 602) else (151 if round_for_shift else 150)
    got = _run(qmod, x, llvm_target)
    np.testing.assert_array_equal(got, np.clip(want, 0, hi).astype("uint8"))
    assert ((y % 256 == 128) & (y > 0) & (y < hi * 256)).any()  # exact halves, unclipped: rounding is tested
    assert 0.2 < (got == 0).mean() < 0.8 and (got == hi).mean() < 0.2
    if round_for_shift:  # the float path computes the same numbers exactly here
        np.testing.assert_array_equal(got, _run(mod, x, llvm_target))


@pytest.mark.parametrize("act", ["relu", ("clip", 0, 602), None])
def test_folded_power_of_two_scales_are_exact(act, llvm_target):
    """The folded chain, ``floor(y * f/s + (bias/s + 1/2))`` clipped, with power-of-two scales:
    every step is exact in float32, so the codes equal numpy's integer result (halves up) and the
    float path's."""
    k, c = 8, 16
    w = RNG.randint(-8, 9, size=(k, c, 3, 3)).astype("int8")
    combined = np.full(k, 2.0 ** -6)
    bias = combined * RNG.randint(-3000, 3000, size=k)
    mod = _chain(combined, bias, 0.25, w, act=act, hw=16)  # f = 2^-8
    qmod, text = _one_chain(mod, "folded")
    _assert_form(text, "folded", 1)
    x = RNG.randint(0, 256, size=(1, c, 16, 16)).astype("uint8")
    y = _acc(x, w) + np.rint(bias / combined).astype(np.int64).reshape(1, k, 1, 1)
    hi = 255 if act != ("clip", 0, 602) else 151  # 602 is 150.5 codes: 151 rounded half up
    got = _run(qmod, x, llvm_target)
    np.testing.assert_array_equal(got, np.clip((y + 128) >> 8, 0, hi).astype("uint8"))
    assert ((y % 256 == 128) & (y > 0) & (y < hi * 256)).any()  # exact halves, unclipped: rounding is tested
    np.testing.assert_array_equal(got, _run(mod, x, llvm_target))


@pytest.mark.parametrize("mode", ["integer", "folded"])
@pytest.mark.parametrize("rounding", ["UPWARD", "TONEAREST"])
def test_other_scales_agree_with_the_float_path(rounding, mode, llvm_target):
    """Per-channel scales that are not powers of two: the fixed-point multiply gives the float
    path's codes except, at most one step off, where a value is within rounding of a half (the
    bias is carried in accumulator units, rounded to an integer)."""
    k, c = 16, 32
    w = RNG.randint(-127, 128, size=(k, c, 3, 3)).astype("int8")
    combined = RNG.uniform(2e-5, 9e-5, size=k)
    bias = RNG.normal(scale=0.5, size=k)
    mod = _chain(combined, bias, 1 / 0.0437, w, rounding=rounding)
    qmod, chains = integer_requantize(mod, rounding, True) if mode == "integer" else folded_requantize(mod, rounding)
    assert chains == 1
    x = RNG.randint(0, 256, size=(1, c, 9, 9)).astype("uint8")
    ref = _run(mod, x, llvm_target).astype(int)
    got = _run(qmod, x, llvm_target).astype(int)
    assert np.abs(got - ref).max() <= 1
    assert (got != ref).mean() <= 0.01  # measured: none of the 1296 differ
    assert 0 < ref.mean() < 255  # not all clipped


def _run_args(mod, args, llvm_target):
    return run_once(make_vm(compile_module(mod, llvm_target).executable, tvm.cpu()), tvm.cpu(), args)


def _residual(w, combined, bias, skip_scale, inv_scale, *, act="relu", hw=16, w_skip=None, comb_skip=None):
    """A residual block's end as realize.py emits it: conv sums dequantized (per channel) plus bias,
    added to the skip connection, ReLU (or none), quantized for the next block. The skip is the
    block input's 8-bit codes dequantized (`w_skip` None: the module's second input) or a second
    conv's dequantized sums over the same input (a downsample branch)."""
    k, c = w.shape[0], w.shape[1]
    out_dtype = "uint8" if act == "relu" else "int8"
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, c, hw, hw), "uint8"))
    s = relax.Var("s", relax.TensorType((1, k, hw, hw), out_dtype))
    with bb.function("main", [x] if w_skip is not None else [x, s]):
        with bb.dataflow():
            y = _dequantized_conv(bb, x, w, combined, bias)
            if w_skip is None:
                r = bb.emit(relax.op.multiply(bb.emit(relax.op.astype(s, "float32")),
                                              relax.const(skip_scale, "float32")))
            else:
                acc2 = bb.emit(relax.op.nn.conv2d(x, _const(w_skip), padding=1, out_dtype="int32"))
                r = bb.emit(relax.op.multiply(bb.emit(relax.op.astype(acc2, "float32")),
                                              _const(np.float32(comb_skip).reshape(1, k, 1, 1))))
            y = bb.emit(relax.op.add(r, y))  # the skip first, as realize emits it
            if act == "relu":
                y = bb.emit(relax.op.nn.relu(y))
            lo, hi = (0, 255) if out_dtype == "uint8" else (-127, 127)
            out = _quantized_upward(bb, y, inv_scale, lo, hi, out_dtype)
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("mode", ["integer", "folded"])
@pytest.mark.parametrize("act", ["relu", None])
@pytest.mark.parametrize("branch", ["identity", "downsample"])
def test_residual_add_in_integers_is_exact(branch, act, mode, llvm_target):
    """A residual add of two quantized tensors in integers (as relay's realize did it): each addend
    in its own units (the conv's int32 sums plus its bias; the skip's 8-bit codes or a downsample
    conv's sums) times its fixed-point factor, one shift per channel, summed in int64, the ReLU a
    bound on the codes. Power-of-two scales make the factors exact, so the codes must equal a numpy
    reference computed from the integer sums (halves rounded up, as the float path does)."""
    rng = np.random.RandomState(7)
    k, c = 8, 16
    w = rng.randint(-8, 9, size=(k, c, 3, 3)).astype("int8")
    combined = np.full(k, 2.0 ** -10)  # output scale 2^-2: the conv's factor is 2^-8
    bias = combined * rng.randint(-3000, 3000, size=k)  # whole accumulator steps
    w_skip = rng.randint(-8, 9, size=(k, c, 3, 3)).astype("int8") if branch == "downsample" else None
    mod = _residual(w, combined, bias, 2.0 ** -3, 4.0, act=act, w_skip=w_skip, comb_skip=np.full(k, 2.0 ** -11))
    qmod, text = _one_chain(mod, mode)
    _assert_form(text, mode, 2)  # (folded: one float multiply-add per addend)
    x = rng.randint(0, 256, size=(1, c, 16, 16)).astype("uint8")
    y = _acc(x, w) + np.rint(bias / combined).astype(np.int64).reshape(1, k, 1, 1)  # units of 2^-10
    if branch == "identity":  # skip codes of 2^-3: 128 units of 2^-10
        skip = (rng.randint(0, 256, size=(1, k, 16, 16)) if act == "relu"
                else rng.randint(-127, 128, size=(1, k, 16, 16))).astype(mod["main"].params[1].ty.dtype)
        total, shift, args = y + 128 * skip.astype(np.int64), 8, [x, skip]
    else:  # downsample sums of 2^-11: the total in units of 2^-11
        total, shift, args = 2 * y + _acc(x, w_skip), 9, [x]
    want = (total + (1 << (shift - 1))) >> shift
    lo, hi = (0, 255) if act == "relu" else (-127, 127)
    got = _run_args(qmod, args, llvm_target)
    np.testing.assert_array_equal(got, np.clip(want, lo, hi).astype(got.dtype))
    halves = (total % (1 << shift) == 1 << (shift - 1)) & (want > lo) & (want < hi)
    assert halves.any()  # exact halves, unclipped: rounding is tested
    assert (got == lo).mean() < 0.8 and (got == hi).mean() < 0.2  # mostly not clipped
    np.testing.assert_array_equal(got, _run_args(mod, args, llvm_target))  # the float path: exact here too


@pytest.mark.parametrize("mode", ["integer", "folded"])
@pytest.mark.parametrize("branch", ["identity", "downsample"])
def test_residual_add_other_scales_agree_with_the_float_path(branch, mode, llvm_target):
    """Scales that are not powers of two: the integer residual add gives the float path's codes
    except, one step off, where a value lies within rounding of a half."""
    rng = np.random.RandomState(8)
    k, c = 16, 32
    w = rng.randint(-127, 128, size=(k, c, 3, 3)).astype("int8")
    combined = rng.uniform(2e-5, 9e-5, size=k)
    bias = rng.normal(scale=0.5, size=k)
    w_skip = rng.randint(-127, 128, size=(k, c, 3, 3)).astype("int8") if branch == "downsample" else None
    mod = _residual(w, combined, bias, 0.0173, 1 / 0.0437, hw=9, w_skip=w_skip,
                    comb_skip=rng.uniform(1e-5, 5e-5, size=k))
    qmod, _ = _one_chain(mod, mode)
    x = rng.randint(0, 256, size=(1, c, 9, 9)).astype("uint8")
    args = [x] if branch == "downsample" else [x, rng.randint(0, 256, size=(1, k, 9, 9)).astype("uint8")]
    ref = _run_args(mod, args, llvm_target).astype(int)
    got = _run_args(qmod, args, llvm_target).astype(int)
    assert np.abs(got - ref).max() <= 1
    assert (got != ref).mean() <= 0.01
    assert 0 < ref.mean() < 255  # not all clipped


@pytest.mark.parametrize("act", ["relu", ("clip", 0.0, 6.0), None])
def test_global_average_pool_in_integers_is_exact(act, llvm_target):
    """conv -> dequantize, bias -> ReLU / ReLU6 / none -> global average pool -> the classifier's
    quantize (mobilenet's and DRN's heads): the activation clips the int32 sums (bounds in sum units),
    the pool sums them in int64 and the factor carries 1/(H*W). Power-of-two scales: the codes equal a
    numpy reference from the integer sums, and the float path's."""
    rng = np.random.RandomState(9)
    k, c, hw = 16, 16, 4
    w = rng.randint(-8, 9, size=(k, c, 3, 3)).astype("int8")
    combined = np.full(k, 2.0 ** -10)  # the pooled value's scale 2^-5: the factor is 2^-10 * 2^5 / 16
    bias = combined * rng.randint(-3000, 3000, size=k)
    out_dtype = "int8" if act is None else "uint8"
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, c, hw, hw), "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = _dequantized_conv(bb, x, w, combined, bias)
            if act == "relu":
                y = bb.emit(relax.op.nn.relu(y))
            elif act is not None:
                y = bb.emit(relax.op.clip(y, act[1], act[2]))
            y = bb.emit(relax.op.nn.adaptive_avg_pool2d(y, output_size=[1, 1]))
            lo, hi = (0, 255) if out_dtype == "uint8" else (-127, 127)
            out = _quantized_upward(bb, y, 32.0, lo, hi, out_dtype)
        bb.emit_func_output(out)
    mod = bb.get()
    assert folded_requantize(mod, "UPWARD")[1] == 0  # folded: the float path's mean of the activation
    qmod, text = _one_chain(mod)
    assert "R.right_shift" in text and "R.sum" in text and '"float32"' not in text  # integers only
    xs = rng.randint(0, 256, size=(1, c, hw, hw)).astype("uint8")
    y = _acc(xs, w) + np.rint(bias / combined).astype(np.int64).reshape(1, k, 1, 1)  # units of 2^-10
    if act == "relu":
        y = np.maximum(y, 0)
    elif act is not None:
        y = np.clip(y, 0, 6 * 2 ** 10)
    total = y.sum(axis=(2, 3), keepdims=True)  # the factor: 2^-10 * 32 / 16 = 2^-9
    want = np.clip((total + 2 ** 8) >> 9, lo, hi)
    got = _run(qmod, xs, llvm_target)
    np.testing.assert_array_equal(got, want.astype(out_dtype))
    assert len(np.unique(got)) > k // 2  # not all clipped
    np.testing.assert_array_equal(got, _run(mod, xs, llvm_target))  # the float path: exact here too


@pytest.mark.parametrize("mode", ["integer", "folded"])
@pytest.mark.parametrize("order", ["relu_then_pool", "pool_then_relu"])
def test_max_pool_takes_the_codes(order, mode, llvm_target):
    """conv -> dequantize, bias -> ReLU and a max pool (either order) -> the next conv's quantize
    (VGG's blocks): requantizing is monotone, so the pool is taken of the integer codes. Exact
    against numpy with power-of-two scales, and equal to the float path."""
    rng = np.random.RandomState(10)
    k, c, hw = 8, 16, 8
    w = rng.randint(-8, 9, size=(k, c, 3, 3)).astype("int8")
    combined = np.full(k, 2.0 ** -10)  # output scale 2^-2: the factor is 2^-8
    bias = combined * rng.randint(-3000, 3000, size=k)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, c, hw, hw), "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = _dequantized_conv(bb, x, w, combined, bias)
            for step in order.split("_then_"):
                y = bb.emit(relax.op.nn.relu(y) if step == "relu" else
                            relax.op.nn.max_pool2d(y, pool_size=[2, 2], strides=[2, 2]))
            out = _quantized_upward(bb, y, 4.0)
        bb.emit_func_output(out)
    mod = bb.get()
    qmod, text = _one_chain(mod, mode)
    assert "R.nn.max_pool2d" in text
    _assert_form(text, mode, 1)
    xs = rng.randint(0, 256, size=(1, c, hw, hw)).astype("uint8")
    y = _acc(xs, w) + np.rint(bias / combined).astype(np.int64).reshape(1, k, 1, 1)
    codes = np.clip((y + 128) >> 8, 0, 255)
    want = codes.reshape(1, k, hw // 2, 2, hw // 2, 2).max(axis=(3, 5))
    got = _run(qmod, xs, llvm_target)
    np.testing.assert_array_equal(got, want.astype("uint8"))
    assert 0.05 < (got == 0).mean() < 0.8 and (got == 255).mean() < 0.2  # mostly not clipped
    np.testing.assert_array_equal(got, _run(mod, xs, llvm_target))


@pytest.mark.parametrize("mode", ["integer", "folded"])
def test_concat_takes_each_input_to_its_scale(mode, llvm_target):
    """quantize(concat(conv -> ReLU, avg pool of codes, max pool of codes)) (inception's blocks):
    each input requantized to the concat's scale in integers, the codes concatenated; the average
    pool is a window sum (a depthwise conv by ones) over its count in the factor. Exact against
    numpy's integer result (no value lies on a half here), and equal to the float path."""
    rng = np.random.RandomState(11)
    k, c, hw = 8, 8, 6
    w = rng.randint(-8, 9, size=(k, c, 3, 3)).astype("int8")
    combined = np.full(k, 2.0 ** -10)  # the concat's scale 2^-3: the conv's factor is 2^-7
    bias = combined * rng.randint(-3000, 3000, size=k)
    s_x = 2.0 ** -1  # the pools' input codes: factors 2^-1 / 9 / 2^-3 = 4/9 and 4
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, c, hw, hw), "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.nn.relu(_dequantized_conv(bb, x, w, combined, bias)))
            pools = []
            for kind in ("avg", "max"):
                xf = bb.emit(relax.op.multiply(bb.emit(relax.op.astype(x, "float32")), relax.const(s_x, "float32")))
                pool = relax.op.nn.avg_pool2d(xf, pool_size=[3, 3], padding=[1, 1], count_include_pad=True) \
                    if kind == "avg" else relax.op.nn.max_pool2d(xf, pool_size=[3, 3], padding=[1, 1])
                pools.append(bb.emit(pool))
            cat = bb.emit(relax.op.concat([a] + pools, axis=1))
            out = _quantized_upward(bb, cat, 8.0)
        bb.emit_func_output(out)
    mod = bb.get()
    qmod, text = _one_chain(mod, mode)
    assert "R.concat" in text
    _assert_form(text, mode, 3, shifts=3)  # (folded: the average pool's window sum by the ones conv too)
    if mode == "folded":
        assert "R.nn.conv2d" in text and "R.nn.avg_pool2d" not in text
    xs = rng.randint(0, 64, size=(1, c, hw, hw)).astype("uint8")
    y = np.maximum(_acc(xs, w) + np.rint(bias / combined).astype(np.int64).reshape(1, k, 1, 1), 0)
    padded = np.pad(xs.astype(np.int64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.stack([padded[:, :, r:r + hw, s:s + hw] for r in range(3) for s in range(3)])
    want = np.concatenate([(y + 64) >> 7,  # 2^-7, halves up
                           (8 * windows.sum(axis=0) + 9) // 18,  # floor(4/9 * sum + 1/2)
                           4 * windows.max(axis=0)], axis=1)
    got = _run(qmod, xs, llvm_target)
    np.testing.assert_array_equal(got, np.clip(want, 0, 255).astype("uint8"))
    assert (got[:, :k] > 0).mean() > 0.2 and (got == 255).mean() < 0.2  # mostly not clipped
    np.testing.assert_array_equal(got, _run(mod, xs, llvm_target))


@pytest.mark.parametrize("shared", [False, True])
def test_tensors_read_elsewhere_keep_the_float_path(shared):
    """A ReLU output that something else reads too (a residual add) is not rewritten."""
    k = 8
    w = RNG.randint(-127, 128, size=(k, 8, 3, 3)).astype("int8")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 6, 6), "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            acc = bb.emit(relax.op.nn.conv2d(x, _const(w), padding=1, out_dtype="int32"))
            y = bb.emit(relax.op.multiply(bb.emit(relax.op.astype(acc, "float32")),
                                          _const(np.full((1, k, 1, 1), 1e-3, "float32"))))
            r = bb.emit(relax.op.nn.relu(y))
            v = bb.emit(relax.op.floor(bb.emit(relax.op.add(bb.emit(relax.op.multiply(r, relax.const(4.0, "float32"))),
                                                            relax.const(0.5, "float32")))))
            q = bb.emit(relax.op.astype(bb.emit(relax.op.clip(v, 0, 255)), "uint8"))
            other = relax.op.add(r, r) if shared else relax.op.add(x, x)
            out = bb.emit_output(relax.Tuple([q, other]))
        bb.emit_func_output(out)
    _, chains = integer_requantize(bb.get(), "UPWARD", True)
    assert chains == (0 if shared else 1)


def test_qconfig_knob():
    assert QConfig().requantize == "folded"
    assert QConfig(requantize="integer").requantize == "integer"
    assert QConfig(requantize="float").requantize == "float"
    assert QConfig(requantize="folded").requantize == "folded"
    with pytest.raises(ConfigError, match="quantize.requantize: unknown 'int'; valid: float, integer, folded"):
        QConfig(requantize="int")


@pytest.mark.slow
def test_resnet18_integer_requantize(llvm_target):
    """resnet18 (small input): the conv -> BN/ReLU -> conv links inside its 8 basic blocks and the
    residual adds whose sum a quantized op reads (7: the last one feeds the float32 pool) become
    integer-only, or folded; logits agree with the float path."""
    from harness.quantize import apply_table, qconfig
    from tests.helpers import calibrated_resnet18

    mod, table, calib = calibrated_resnet18(64, 3, 4)
    outs, texts = {}, {}
    for mode in ("float", "integer", "folded"):
        with qconfig(calibrate_mode="max", weight_scale="channel_max", requantize=mode) as cfg:
            qmod = apply_table(mod, None, table, config=cfg)
        outs[mode] = _run(qmod, calib[0]["data"], llvm_target)
        texts[mode] = qmod["main"].script()
    assert texts["integer"].count("R.right_shift") == 8 + 7
    # folded: the same 15 chains, their ReLUs in the clip (the stem's and the last block's stay float)
    assert texts["float"].count("R.nn.relu") - texts["folded"].count("R.nn.relu") == 8 + 7
    a = outs["float"].ravel()
    for mode in ("integer", "folded"):
        b = outs[mode].ravel()
        assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.999
        assert a.argmax() == b.argmax()


@pytest.mark.parametrize("gamma_sign", [1.0, -1.0])
def test_batch_norm_and_explicit_pad_fold_into_the_chain(gamma_sign, llvm_target):
    """What the PyTorch frontend gives efficientnet_lite0 between two int8 convs: the dequantized
    sums, the bias correction, a batch norm kept as one op, ReLU6 and an explicit zero pad ("same"
    padding) before the quantize. Folded: one multiply-add per channel, the pad of the codes, within
    a step of the float path. Integer-only too, where every channel's factor is positive (a batch
    norm's negative scale keeps the float path there)."""
    rng = np.random.RandomState(12)
    k, c, hw = 16, 16, 8
    w = rng.randint(-127, 128, size=(k, c, 3, 3)).astype("int8")
    gamma = rng.uniform(0.5, 2.0, size=k) * np.where(np.arange(k) % 3 == 0, gamma_sign, 1.0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, c, hw, hw), "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = _dequantized_conv(bb, x, w, rng.uniform(2e-5, 9e-5, size=k), rng.normal(scale=0.1, size=k))
            y = bb.emit(relax.op.subtract(y, _const(np.float32(rng.normal(scale=0.05, size=(1, k, 1, 1))))))
            bn = bb.emit(relax.op.nn.batch_norm(y, *(_const(np.float32(v)) for v in (
                gamma, rng.normal(size=k), rng.normal(scale=0.2, size=k), rng.uniform(0.5, 1.5, size=k))), axis=1, training=False))
            y = bb.emit(relax.op.clip(bb.emit(relax.TupleGetItem(bn, 0)), 0, 6))
            y = bb.emit(relax.op.nn.pad(y, [0, 0, 0, 0, 1, 1, 1, 1]))
            out = _quantized_upward(bb, y, 255 / 6)
        bb.emit_func_output(out)
    mod = bb.get()
    qmod, text = _one_chain(mod, "folded")
    _assert_form(text, "folded", 1)
    assert "R.nn.batch_norm" not in text and text.index("R.astype") < text.index("R.nn.pad")  # the codes padded
    assert integer_requantize(mod, "UPWARD", True)[1] == (1 if gamma_sign > 0 else 0)
    xs = rng.randint(0, 256, size=(1, c, hw, hw)).astype("uint8")
    ref = _run(mod, xs, llvm_target).astype(int)
    got = _run(qmod, xs, llvm_target).astype(int)
    assert got.shape == (1, k, hw + 2, hw + 2) and not got[:, :, 0].any()
    assert np.abs(got - ref).max() <= 1 and (got != ref).mean() <= 0.01
    assert 0.1 < (ref[:, :, 1:-1, 1:-1] > 0).mean() and (ref == 255).mean() < 0.2  # mostly not clipped

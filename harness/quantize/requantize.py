"""Requantization between quantized ops, integer-only (``requantize: integer``) or folded into
one float multiply-add (``requantize: folded``).

Realize (realize.py) dequantizes every int8 op's int32 sums to fp32 and the next quantized op
quantizes its input again, the two fused into one epilogue that does the requantization as a float
multiply. Where the tensor between two quantized ops is only

    acc (int32) -> * s_x*s_w (per channel) [- bias correction] [+ bias] [ReLU | clip] -> next op's quantize

(nothing else reads it), this pass makes that epilogue integers only, as relay's realize did:

    y     = acc + round((bias - correction) / (s_x*s_w))          int32, per channel
    codes = clip((y * M + 2^(n-1)) >> n, lo, hi)                   int64 product, per channel M, n

(the ReLU, or ReLU6's clip, becomes the code bounds ``lo``/``hi``: rounding is monotone)
with ``M * 2^-n`` the fixed-point form of ``f = s_x*s_w / s_next`` (``M`` a 31-bit integer: f is
carried to 2^-31 relative). ``round_for_shift`` adds the half (``2^(n-1)``) before the arithmetic
shift, which rounds halves up like ``rounding: UPWARD`` (with ``TONEAREST`` exact halves, which
only a power-of-two factor makes common, round up here and to even on the float path); without it
the shift truncates (towards -inf). Where f is a power of two (power-of-two weight scales and thresholds) ``M`` is ``2^30`` and
the requantization is a plain shift, the case relay's ``round_for_shift`` was written for.

A residual add of two quantized tensors whose sum the next quantized op reads,

    y1 * f1 + y2 * f2 [ReLU] -> next op's quantize

(y1 a conv's sums plus its bias as above; y2 the skip connection's 8-bit codes, f2 their scale, or a
downsample conv's sums) is carried the same way, as relay's realize added in integers: each factor
``f_i / s_next`` gets a multiplier ``M_i`` over one shift ``n`` per channel, fixed by the larger
factor with 30 bits so that the int64 sum cannot overflow:

    codes = clip((y1 * M1 + y2 * M2 + 2^(n-1)) >> n, lo, hi)

No intermediate scale is needed (a downsample conv's output has none of its own).

Pools between the activation and the next quantize: a max pool is taken of the codes (requantizing
is monotone, so the pool of the codes is the codes of the pool: VGG's blocks); a global average
pool (a classifier's input: mobilenet, DRN) clips the int32 sums at the activation's bounds in sum
units, sums them in int64 and carries 1/(H*W) in the factor. An average pool of codes (inside
inception's blocks; its count fixed: padding counted or none) is a window sum, a depthwise conv by
ones in int32, with 1/count in the factor. A concat of such inputs (nested concats too) takes each
input to the concat's scale in integers and concatenates the codes.

Codes agree with the float path except where the value lies within float32 rounding of a half
(measured in the tests). Tensors read by anything else (two consumers, a model output) keep the
float path.

``requantize: folded`` rewrites the same chains (but those through a global average pool) in
float32, every constant step folded into one multiply-add per addend and channel:

    codes = clip(floor(y1 * f1/s + [y2 * f2/s] + (bias/s + 1/2)), lo, hi)    (round() for TONEAREST)

(y1 the int32 sums, y2 the skip connection's codes or a downsample conv's sums, as float32; the
activation's bounds become ``lo``/``hi`` as above; a concat's inputs each written at its scale; an
average pool of codes a window sum by the ones conv). The float path's epilogue -- cast, multiply,
subtract the bias correction, add the bias, ReLU, multiply, add the half, floor, clip -- is about
twice the instructions, which on a 1x1 conv over 64 channels costs as much as its dot products;
and the float path's concat writes and reads float32 (4 bytes a value) where this one concatenates
the codes.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np
import tvm
from tvm import relax

_MANTISSA_BITS = 31
_MAX_SHIFT = 62  # int64 products: |y| < 2^31, M < 2^31


def fixed_point(factors: np.ndarray, bits: int = _MANTISSA_BITS) -> tuple:
    """(M, n) int64 arrays with M * 2^-n ~= factor: M < 2^bits (`bits` significant bits), 0 < n <= 62."""
    ms, ns = [], []
    for f in np.asarray(factors, dtype=np.float64).ravel():
        if not f > 0 or not math.isfinite(f):
            raise ValueError(f"requantization factor must be positive and finite, got {f}")
        mant, exp = math.frexp(f)  # f = mant * 2^exp, mant in [0.5, 1)
        m = round(mant * (1 << bits))
        n = bits - exp
        if m == 1 << bits:
            m, n = m >> 1, n - 1
        if n > _MAX_SHIFT:  # a tiny factor: fewer significant bits, every code is 0 or 1 anyway
            m, n = round(f * 2.0 ** _MAX_SHIFT), _MAX_SHIFT
        if n < 1:
            raise ValueError(f"requantization factor {f} too large for an int32 accumulator")
        ms.append(m)
        ns.append(n)
    return np.array(ms, dtype=np.int64), np.array(ns, dtype=np.int64)


def _op(call) -> Optional[str]:
    if isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op):
        return call.op.name
    return None


def _const(expr) -> Optional[np.ndarray]:
    """The value of a constant tensor or scalar (None for anything computed)."""
    if isinstance(expr, (tvm.tirx.IntImm, tvm.tirx.FloatImm)):  # scalars (clip bounds)
        return np.array(expr.value)
    if isinstance(expr, tvm.ir.expr.Constant) and hasattr(expr.value, "numpy"):
        return expr.value.numpy()
    return None


def _scalar(expr) -> Optional[float]:
    value = _const(expr)
    return float(value.ravel()[0]) if value is not None and value.size == 1 else None


def _per_channel(value: Optional[np.ndarray], k: int, ndim: int) -> Optional[np.ndarray]:
    """`value` as a (k,) vector when it broadcasts along axis 1 of a rank-`ndim` tensor only."""
    if value is None:
        return None
    if value.size == 1:
        return np.full(k, float(value.ravel()[0]))
    shape = (1,) * (ndim - value.ndim) + tuple(value.shape)
    if len(shape) != ndim or shape[1] != k or any(d != 1 for i, d in enumerate(shape) if i != 1):
        return None
    return value.astype(np.float64).reshape(k)


class _Term:  # pylint: disable=too-few-public-methods
    """One addend of a chain, ``astype(value, float32) * factor [+ bias]``: the int32 sums of a conv or
    dense (factor s_x*s_w per channel, bias its offsets) or the 8-bit codes of a quantized tensor (a
    residual add's skip connection: factor its scale, no bias)."""

    def __init__(self, value, factor: np.ndarray, bias: np.ndarray, window=None):
        self.value, self.factor, self.bias = value, factor, bias
        self.window = window  # an average pool over the codes (inception): summed by a ones conv


def _sum_window(pool) -> bool:
    """An average pool whose every window divides by the same count (its kernel size): NCHW, no
    ceil mode, and padding counted (or none)."""
    attrs = pool.attrs
    return (str(attrs.layout) == "NCHW" and str(attrs.out_layout) == "NCHW" and not bool(attrs.ceil_mode)
            and (bool(attrs.count_include_pad) or all(int(p) == 0 for p in attrs.padding)))


class _Chain:  # pylint: disable=too-few-public-methods,too-many-instance-attributes
    """A matched `terms -> ... -> codes` chain: one term (requantization between two quantized ops),
    two (a residual add of two quantized tensors), or ``parts`` (a concat: one chain per input), with
    a max pool or a global average pool between the activation and the codes."""

    def __init__(self, terms, bounds, inv_scale, lo, hi, dtype, pool_hw: int = 0, max_pool=None, parts=None,
                 pad=None):
        self.terms, self.bounds = terms, bounds
        self.inv_scale, self.lo, self.hi, self.dtype = inv_scale, lo, hi, dtype
        self.pool_hw = pool_hw  # a global average pool between the activation and the quantize: H*W
        self.max_pool = max_pool  # a max pool call there: applied to the codes
        self.parts = parts  # a concat's inputs (chains of their own, same scale): the codes concatenated
        self.pad = pad  # a pad by zeros just before the quantize (explicit "same" padding): of the codes


def _global_pool_hw(call) -> int:
    """H*W of the input of a global average pool (NCHW, output 1x1); 0 for anything else."""
    if _op(call) != "relax.nn.adaptive_avg_pool2d" or str(call.attrs.layout) != "NCHW" \
            or str(call.attrs.out_layout) != "NCHW":
        return 0
    size = call.attrs.output_size
    if size is None or [int(d) for d in size] != [1, 1]:
        return 0
    shape = [int(d) for d in call.args[0].ty.shape]
    return shape[2] * shape[3] if len(shape) == 4 else 0


def _batch_norm_affine(bn, k: int) -> Optional[tuple]:
    """(a, b) where the ``batch_norm`` call `bn`'s output 0 is ``a * input + b`` per channel: at
    inference, over axis 1, with constant statistics; None for anything else."""
    if int(bn.attrs.axis) != 1 or bool(bn.attrs.training):
        return None
    params = [_const(arg) for arg in bn.args[1:5]]
    if any(v is None or v.size != k for v in params):
        return None
    gamma, beta, mean, var = (v.astype(np.float64).reshape(k) for v in params)
    a = (gamma if bool(bn.attrs.scale) else 1.0) / np.sqrt(var + float(bn.attrs.epsilon))
    b = (beta if bool(bn.attrs.center) else 0.0) - mean * a
    return a, b


def _term(node, value) -> Optional[_Term]:  # pylint: disable=too-many-return-statements,too-many-branches
    """`node` (a binding's value) as a _Term, or None. `value(var)` gives the value bound to a var
    that nothing else reads. Constant per-channel steps between the dequantize and `node` -- adds
    and subtracts (bias, bias correction), a batch norm at inference (a frontend that keeps it) --
    fold into the term's factor and bias."""
    steps = []  # outermost first: (+1.0 or -1.0, the constant added or subtracted) | ("batch_norm", the call)
    window = None
    while True:
        if _op(node) in ("relax.add", "relax.subtract") and _const(node.args[1]) is not None:
            steps.append((1.0 if _op(node) == "relax.add" else -1.0, node.args[1]))
            node = value(node.args[0])
        elif isinstance(node, relax.TupleGetItem) and node.index == 0 \
                and _op(value(node.tuple_value)) == "relax.nn.batch_norm":
            bn = value(node.tuple_value)
            steps.append(("batch_norm", bn))
            node = value(bn.args[0])
        else:
            break
    if _op(node) == "relax.nn.avg_pool2d" and not steps and _sum_window(node):
        window, node = node, value(node.args[0])
    if _op(node) != "relax.multiply":
        return None
    factor_const = _const(node.args[1])
    widened = value(node.args[0])
    if _op(widened) != "relax.astype" or str(widened.attrs.dtype) != "float32":
        return None
    src = widened.args[0]
    dtype = str(getattr(src.ty, "dtype", ""))
    if dtype == "int32":
        sums = value(src)
        if _op(sums) == "relax.subtract" and _const(sums.args[1]) is not None:
            sums = value(sums.args[0])  # a conv on offset data (realize's signed_data_offset): minus the offset's sums
        if _op(sums) not in ("relax.nn.conv2d", "relax.matmul"):
            return None
    elif dtype not in ("int8", "uint8") or not isinstance(src, relax.Var):
        return None
    if window is not None and dtype == "int32":
        return None
    shape = [int(d) for d in src.ty.shape]
    if len(shape) < 2:
        return None
    k, ndim = shape[1], len(shape)
    factor = _per_channel(factor_const, k, ndim)
    if factor is None or not np.all(factor != 0):
        return None
    bias = np.zeros(k)
    for step in reversed(steps):  # innermost first: value = factor * src + bias, then each step
        if step[0] == "batch_norm":
            affine = _batch_norm_affine(step[1], k)
            if affine is None:
                return None
            a, b = affine
            factor, bias = factor * a, bias * a + b
        else:
            vec = _per_channel(_const(step[1]), k, ndim)
            if vec is None:
                return None
            bias = bias + step[0] * vec
    if window is not None:  # the window's sum, over its count
        factor = factor / float(np.prod([int(d) for d in window.attrs.pool_size]))
    return _Term(src, factor, bias, window)


def _match(var, var2val, uses, rounding: str) -> Optional[_Chain]:  # pylint: disable=too-many-return-statements,too-many-branches
    """The chain whose quantized result is `var` (an astype to int8/uint8), or None."""

    def value(v, single=True):
        if not isinstance(v, relax.Var) or v not in var2val:
            return None
        if single and uses.get(v, 0) != 1:
            return None
        return var2val[v]

    cast = var2val.get(var)
    if _op(cast) != "relax.astype" or str(cast.attrs.dtype) not in ("int8", "uint8"):
        return None
    clip = value(cast.args[0])
    if _op(clip) != "relax.clip":
        return None
    lo, hi = _scalar(clip.args[1]), _scalar(clip.args[2])
    rounded = value(clip.args[0])
    if rounding == "UPWARD":
        if _op(rounded) != "relax.floor":
            return None
        half = value(rounded.args[0])
        if _op(half) != "relax.add" or _scalar(half.args[1]) != 0.5:
            return None
        scaled = value(half.args[0])
    else:
        if _op(rounded) != "relax.round":
            return None
        scaled = value(rounded.args[0])
    if _op(scaled) != "relax.multiply" or _scalar(scaled.args[1]) is None or lo is None or hi is None:
        return None
    inv_scale = _scalar(scaled.args[1])
    quant = (inv_scale, lo, hi, str(cast.attrs.dtype))

    def chain(node) -> Optional[_Chain]:
        if _op(node) == "relax.concat" and isinstance(node.args[0], relax.Tuple) and int(node.attrs.axis) == 1:
            # each input quantized to the concat's scale, the codes concatenated (inception's blocks)
            parts = [chain(value(field)) for field in node.args[0].fields]
            if any(part is None for part in parts):
                return None
            return _Chain([], (-math.inf, math.inf), *quant, parts=parts)
        return _body(node, value, quant)

    return chain(value(scaled.args[0]))


def _zero_pad(call) -> bool:
    """A constant pad by zeros (whose codes are 0 at any scale)."""
    return (_op(call) == "relax.nn.pad" and str(call.attrs.pad_mode) == "constant"
            and float(call.attrs.pad_value) == 0.0)


def _body(node, value, quant: tuple) -> Optional[_Chain]:  # pylint: disable=too-many-return-statements
    """The chain from what a quantize (`quant`: inv_scale, lo, hi, dtype) reads: [zero pad] [pool]
    [activation] [max pool] over one term or a residual add of two; None where it is anything else."""
    pad = None
    if _zero_pad(node) and quant[1] <= 0 <= quant[2]:  # (efficientnet_lite0's explicit "same" padding)
        pad, node = node, value(node.args[0])
    chain = _unpadded_body(node, value, quant)
    if chain is not None:
        chain.pad = pad
    return chain


def _unpadded_body(node, value, quant: tuple) -> Optional[_Chain]:  # pylint: disable=too-many-return-statements
    bounds = (-math.inf, math.inf)
    pool_hw, max_pool = _global_pool_hw(node), None
    if pool_hw:  # conv -> [activation] -> global average pool -> quantize (a classifier's input)
        node = value(node.args[0])
    elif _op(node) == "relax.nn.max_pool2d":  # max pools commute with the monotone requantization:
        max_pool, node = node, value(node.args[0])  # the pool of the codes (VGG's blocks)
    if _op(node) == "relax.nn.relu":
        node, bounds = value(node.args[0]), (0.0, math.inf)
    elif _op(node) == "relax.clip":  # ReLU6 and the like
        bounds = (_scalar(node.args[1]), _scalar(node.args[2]))
        if None in bounds:
            return None
        node = value(node.args[0])
    if _op(node) == "relax.nn.max_pool2d" and max_pool is None and not pool_hw:  # pool before ReLU
        max_pool, node = node, value(node.args[0])
    if _op(node) == "relax.add" and _const(node.args[1]) is None and not pool_hw:  # a residual add
        first = _term(value(node.args[0]), value)
        second = _term(value(node.args[1]), value) if first is not None else None
        if second is None or second.factor.shape != first.factor.shape \
                or [int(d) for d in node.args[0].ty.shape] != [int(d) for d in node.args[1].ty.shape]:
            return None
        terms = [first, second]
    else:
        term = _term(node, value)
        if term is None or (pool_hw and str(term.value.ty.dtype) != "int32"):
            return None
        terms = [term]
    return _Chain(terms, bounds, *quant, pool_hw, max_pool)


def _plus_bias(y: relax.Expr, term: _Term, shape: tuple) -> relax.Expr:
    """`y` (the term's int32 units) with the term's bias added, rounded to those units."""
    bias = np.rint(term.bias / term.factor)
    if np.any(bias != 0):
        y = relax.op.add(y, relax.const(bias.astype("int32").reshape(shape), "int32"))
    return y


def _shifted_codes(p: relax.Expr, n: np.ndarray, wide: str, shape: tuple, round_for_shift: bool,
                   lo: int, hi: int, dtype: str) -> relax.Expr:
    """The codes of the fixed-point products `p` (`wide`: int64 or uint64): shifted right by `n`
    (rounded: the half added first), clipped to [lo, hi], cast to `dtype`."""
    if round_for_shift:
        p = relax.op.add(p, relax.const((np.int64(1) << (n - 1)).reshape(shape).astype(wide), wide))
    shifted = relax.op.right_shift(p, relax.const(n.reshape(shape).astype(wide), wide))
    return relax.op.astype(relax.op.clip(shifted, lo, hi), dtype)


def _window_sums(term: _Term) -> relax.Expr:
    """The int32 sums over an average pool's windows of 8-bit codes: a depthwise conv by ones."""
    pool, channels = term.window, int(term.value.ty.shape[1])
    ones = np.ones((channels, 1) + tuple(int(d) for d in pool.attrs.pool_size), dtype="int8")
    return relax.op.nn.conv2d(term.value, relax.const(ones, "int8"), strides=pool.attrs.strides,
                              padding=pool.attrs.padding, dilation=pool.attrs.dilation, groups=channels,
                              out_dtype="int32")


def _pooled_codes(chain: _Chain, round_for_shift: bool) -> relax.Expr:
    """conv -> [activation] -> global average pool -> codes: the activation clips the sums (its bounds
    in accumulator units, per channel), the pool sums them in int64, and the factor carries the
    1 / (H*W) with as many bits as the sum leaves room for (|sum| < H*W * 2^31)."""
    term, shape = chain.terms[0], (1, -1, 1, 1)
    inv_scale = np.float64(np.float32(chain.inv_scale))
    room = 62 - 31 - max(1, math.ceil(math.log2(chain.pool_hw))) - 1
    m, n = fixed_point(term.factor * inv_scale / chain.pool_hw, min(_MANTISSA_BITS, room))
    y = _plus_bias(term.value, term, shape)
    for bound, limit in ((chain.bounds[0], relax.op.maximum), (chain.bounds[1], relax.op.minimum)):
        if math.isfinite(bound):
            steps = np.clip(np.rint(bound / term.factor), -2.0 ** 31, 2.0 ** 31 - 1)
            y = limit(y, relax.const(steps.astype("int32").reshape(shape), "int32"))
    total = relax.op.sum(relax.op.astype(y, "int64"), axis=[2, 3], keepdims=True)
    wide = "int64"
    if chain.bounds[0] >= 0:  # sums of non-negative values: an unsigned shift
        wide = "uint64"
        total = relax.op.astype(total, wide)
    p = relax.op.multiply(total, relax.const(m.reshape(shape).astype(wide), wide))
    return _shifted_codes(p, n, wide, shape, round_for_shift, int(chain.lo), int(chain.hi), chain.dtype)


def _pooled_and_padded(chain: _Chain, codes: relax.Expr) -> relax.Expr:
    """The chain's codes after its max pool and its zero pad, where it has them."""
    if chain.max_pool is not None:
        codes = relax.Call(chain.max_pool.op, [codes], chain.max_pool.attrs)
    if chain.pad is not None:
        codes = relax.Call(chain.pad.op, [codes], chain.pad.attrs)
    return codes


def _integer_codes(chain: _Chain, round_for_shift: bool) -> relax.Expr:
    if chain.parts is not None:
        return relax.op.concat([_integer_codes(part, round_for_shift) for part in chain.parts], axis=1)
    if chain.pool_hw:
        return _pooled_codes(chain, round_for_shift)
    return _pooled_and_padded(chain, _requantized_codes(chain, round_for_shift))


def _code_bounds(chain: _Chain, inv_scale: float, rnd) -> tuple:
    """(lo, hi): the codes' range with the activation's bounds (ReLU: 0, ReLU6: 0 and 6) in it,
    rounded by `rnd`. They clip the codes instead of the sums: rounding is monotone, so rounding a
    clipped value is clipping the rounded value at the rounded bounds."""
    lo, hi = chain.lo, chain.hi
    if chain.bounds[0] > -math.inf:
        lo = max(lo, rnd(chain.bounds[0] * inv_scale))
    if chain.bounds[1] < math.inf:
        hi = min(hi, rnd(chain.bounds[1] * inv_scale))
    return lo, hi


def _requantized_codes(chain: _Chain, round_for_shift: bool) -> relax.Expr:
    ndim = len(chain.terms[0].value.ty.shape)
    shape = (1, -1) + (1,) * (ndim - 2)
    inv_scale = np.float64(np.float32(chain.inv_scale))
    factors = [t.factor * inv_scale for t in chain.terms]
    # one shift n per channel for all terms, from the largest factor: with two terms each M < 2^30, so
    # that |y1*M1 + y2*M2| and the rounding half stay below 2^63
    _, n = fixed_point(np.maximum.reduce(factors), _MANTISSA_BITS + 1 - len(chain.terms))
    ms = [np.rint(f * np.ldexp(1.0, n)).astype(np.int64) for f in factors]
    lo, hi = _code_bounds(chain, inv_scale, (lambda v: math.floor(v + 0.5)) if round_for_shift else math.floor)
    ys = []
    for term in chain.terms:  # each term in its own units: int32 sums with the bias added, or codes
        if term.window is not None:
            y = _window_sums(term)
        elif str(term.value.ty.dtype) != "int32":  # 8-bit codes
            y = relax.op.astype(term.value, "int32")
        else:
            y = term.value
        ys.append(_plus_bias(y, term, shape))
    # codes that cannot be negative (uint8, ReLU): negative sums all give the lowest code, so the
    # sums are clamped at 0 and the product is unsigned (AVX2 has no 64-bit arithmetic shift)
    wide = "uint64" if lo >= 0 else "int64"
    if len(ys) == 1:
        y = relax.op.maximum(ys[0], relax.const(0, "int32")) if lo >= 0 else ys[0]
        p = relax.op.multiply(relax.op.astype(y, wide), relax.const(ms[0].reshape(shape).astype(wide), wide))
    else:  # a residual add: the sum of the two products, in int64, then clamped
        p = None
        for y, m in zip(ys, ms):
            prod = relax.op.multiply(relax.op.astype(y, "int64"), relax.const(m.reshape(shape), "int64"))
            p = prod if p is None else relax.op.add(p, prod)
        if lo >= 0:
            p = relax.op.astype(relax.op.maximum(p, relax.const(0, "int64")), wide)
    return _shifted_codes(p, n, wide, shape, round_for_shift, int(lo), int(max(lo, hi)), chain.dtype)


def _folded_codes(chain: _Chain, rounding: str) -> relax.Expr:
    """``requantize: folded``: the chain as one float32 multiply-add per addend and channel, from the
    int32 sums (or the skip connection's codes) straight to the next codes:
    ``clip(floor(y1 * (f1/s) + [y2 * (f2/s)] + (b/s + 1/2)), lo, hi)`` (``round`` without the half
    for TONEAREST), the activation's bounds folded into the clip as in the integer form."""
    if chain.parts is not None:
        return relax.op.concat([_folded_codes(part, rounding) for part in chain.parts], axis=1)
    ndim = len(chain.terms[0].value.ty.shape)
    shape = (1, -1) + (1,) * (ndim - 2)
    inv_scale = np.float64(np.float32(chain.inv_scale))
    half = 0.5 if rounding == "UPWARD" else 0.0
    lo, hi = _code_bounds(chain, inv_scale, (lambda v: math.floor(v + 0.5)) if rounding == "UPWARD" else round)
    z, offset = None, np.full(chain.terms[0].factor.shape, half)
    for term in chain.terms:
        y = _window_sums(term) if term.window is not None else term.value
        prod = relax.op.multiply(relax.op.astype(y, "float32"),
                                 relax.const((term.factor * inv_scale).astype("float32").reshape(shape)))
        z = prod if z is None else relax.op.add(z, prod)
        offset = offset + term.bias * inv_scale
    if np.any(offset != 0):
        z = relax.op.add(z, relax.const(offset.astype("float32").reshape(shape)))
    z = relax.op.floor(z) if rounding == "UPWARD" else relax.op.round(z)
    return _pooled_and_padded(chain, relax.op.astype(relax.op.clip(z, int(lo), int(max(lo, hi))), chain.dtype))


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, chains: Dict[relax.Var, _Chain], codes):
        super().__init__(mod)
        self.mod_ = mod
        self.chains = chains
        self.codes = codes  # chain -> the expression of its codes

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        chain = self.chains.get(binding.var)
        if chain is None:
            return super().visit_var_binding_(binding)
        expr = self.visit_expr(self.codes(chain))
        emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
        self.set_var_remap(binding.var, emit(expr, name_hint=binding.var.name))


def _has_global_pool(chain: _Chain) -> bool:
    return bool(chain.pool_hw) or any(_has_global_pool(part) for part in chain.parts or [])


def _rewrite_chains(mod: tvm.IRModule, rounding: str, codes, keep=lambda chain: False) -> tuple:
    """(module, number of chains rewritten): each chain of a realized int8 module that `keep` does
    not keep replaced by ``codes(chain)``."""
    mod = relax.transform.DeadCodeElimination(["main"])(mod)  # realize leaves float values unread
    func = mod["main"]
    var2val = relax.analysis.get_var2val(func)
    uses: Dict[relax.Var, int] = {}
    used = [relax.analysis.free_vars(b.value) for block in func.body.blocks for b in block.bindings]
    for variables in used + [relax.analysis.free_vars(func.body.body)]:
        for v in variables:
            uses[v] = uses.get(v, 0) + 1
    chains = {}
    for var in var2val:
        chain = _match(var, var2val, uses, rounding)
        if chain is not None and not keep(chain):
            chains[var] = chain
    if not chains:
        return mod, 0
    rewriter = _Rewriter(mod, chains, codes)
    new_func = rewriter.visit_expr(func)
    rewriter.builder_.update_func(mod.get_global_var("main"), new_func)
    out = rewriter.builder_.get()
    return relax.transform.DeadCodeElimination(["main"])(out), len(chains)


def _signed_factor(chain: _Chain) -> bool:
    """Whether some channel's factor is negative (a batch norm's negative scale after the conv)."""
    return any(np.any(t.factor < 0) for t in chain.terms) or any(_signed_factor(p) for p in chain.parts or [])


def integer_requantize(mod: tvm.IRModule, rounding: str, round_for_shift: bool) -> tuple:
    """(module, number of chains made integer-only) for a realized int8 module (chains with a
    negative factor keep the float path: the fixed-point form is of positive factors)."""
    return _rewrite_chains(mod, rounding, lambda chain: _integer_codes(chain, round_for_shift), keep=_signed_factor)


def folded_requantize(mod: tvm.IRModule, rounding: str) -> tuple:
    """(module, number of chains folded into one float multiply-add, :func:`_folded_codes`) for a
    realized int8 module; chains through a global average pool keep the float path (its mean is
    taken of the activation's values)."""
    return _rewrite_chains(mod, rounding, lambda chain: _folded_codes(chain, rounding), keep=_has_global_pool)

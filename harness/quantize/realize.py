"""Realize: rewrite each planned conv2d / dense into an int8 x int8 -> int32 op.

For a planned `y = conv2d(x, W)` with data scale s_x (from calibration) and
weight scale s_w (per tensor or per output channel):

    xq  = cast<int8|uint8>(clip(round(x / s_x), qmin, qmax))      # quantize
    acc = conv2d(xq, Wq, out_dtype="int32")                        # int8 kernel, int32 accumulation
    y   = cast<float32>(acc) * (s_x * s_w)                         # dequantize (per channel)

The dequantize multiply is elementwise, so the fusion pass puts it, the bias
add, the ReLU and the next layer's quantize into the conv's own kernel: between
two quantized convolutions the tensor in memory is int8 and the requantization
is a fixed-point multiply (carried out in fp32) in the producer's epilogue.
`do_simulation` instead emits the fake-quantized fp32 graph (quantize then
immediately dequantize, and fp32 convolution on fake-quantized weights).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import tvm
from tvm import relax

from .annotate import QuantOp
from .calib import qmax, threshold_to_scale
from .qconfig import QConfig


# signed_data_offset: int8 codes (-127..127) read as uint8 codes + 128 (1..255)
_DATA_OFFSET = 128


@dataclass
class TensorQuant:
    """How one tensor (an op's data input) is quantized: the calibration table's row."""

    name: str
    threshold: float
    scale: float
    dtype: str  # "int8" | "uint8"
    mean: Optional[np.ndarray] = None  # per channel: E[x] over the calibration data
    mean_quantized: Optional[np.ndarray] = None  # per channel: E[Q(x)], x quantized as above


def code_range(tq: TensorQuant, cfg: QConfig) -> tuple:
    """(lowest, highest) integer code of a tensor: 0..255 for uint8, symmetric -127..127 for int8."""
    if tq.dtype == "uint8":
        return 0, 2 ** cfg.nbit_input - 1
    hi = 2 ** (cfg.nbit_input - 1) - 1
    return -hi, hi


def fake_quantize(x: np.ndarray, tq: TensorQuant, cfg: QConfig) -> np.ndarray:
    """x quantized and dequantized as the realized module does it (float32, numpy)."""
    lo, hi = code_range(tq, cfg)
    v = np.asarray(x, dtype=np.float32) * np.float32(1.0 / tq.scale)
    codes = np.rint(v) if cfg.rounding == "TONEAREST" else np.floor(v + np.float32(0.5))
    return np.clip(codes, lo, hi) * np.float32(tq.scale)


def output_shift(w_oi: np.ndarray, w_hat: np.ndarray, tq: TensorQuant, groups: int = 1) -> np.ndarray:
    """Expected per output channel change of a conv2d (OIHW weights) / dense ((out, in) weights)
    when its input x becomes Q(x) and its weights W become W_hat:

        E[conv(Q(x), W_hat)] - E[conv(x, W)] = sum_(c,r,s) W_hat[k,c,r,s] E[Q(x)_c] - W[k,c,r,s] E[x_c]

    from the per-channel means the calibration measured (border taps are counted as if they read
    the channel mean, not padding zeros). Subtracting it is bias correction (Nagel et al. 2019,
    "Data-Free Quantization", and Banner et al. 2019): the mean error of weight rounding and of
    activation clipping, which per-channel scales alone leave in place (depthwise convs most)."""
    k, cg = w_oi.shape[0], w_oi.shape[1]
    sum_hat = w_hat.reshape(k, cg, -1).sum(axis=2, dtype=np.float64)
    sum_w = w_oi.reshape(k, cg, -1).sum(axis=2, dtype=np.float64)
    channel = (np.arange(k) // (k // groups))[:, None] * cg + np.arange(cg)[None, :]  # (k, cg) input channel
    mean = np.asarray(tq.mean, dtype=np.float64)[channel]
    mean_q = np.asarray(tq.mean_quantized, dtype=np.float64)[channel]
    return (sum_hat * mean_q).sum(axis=1) - (sum_w * mean).sum(axis=1)


def data_quant(name: str, threshold: float, min_value: float, cfg: QConfig) -> TensorQuant:
    """Scale and storage type of a data tensor from its threshold (and its minimum, for uint8)."""
    if cfg.activation_dtype == "uint8" or (cfg.activation_dtype == "auto" and min_value >= 0.0):
        dtype = "uint8"
    else:
        dtype = cfg.dtype_input
    signed = dtype == "int8"
    return TensorQuant(name, float(threshold), threshold_to_scale(threshold, cfg.nbit_input, signed), dtype)


def weight_scales(w: np.ndarray, cfg: QConfig, bits: Optional[int] = None) -> np.ndarray:
    """Per output channel scales (shape (K,)) for weights of `bits` bits (default
    ``cfg.nbit_weight``); per-tensor modes repeat one value."""
    k = w.shape[0]
    q = qmax(cfg.nbit_weight if bits is None else bits, True)
    if cfg.weight_scale == "channel_max":
        m = np.abs(w.reshape(k, -1)).max(axis=1).astype(np.float64)
        m[m == 0] = 1.0  # an all-zero channel: any scale represents it exactly
        return m / q
    m = float(np.abs(w).max()) or 1.0
    if cfg.weight_scale == "power2":
        # relay: the weight range is rounded up to a power of two, so that dequantization is a shift
        m = 2.0 ** math.ceil(math.log2(m))
    return np.full(k, m / q)


def quantize_weight(w: np.ndarray, scales: np.ndarray, cfg: QConfig, bits: Optional[int] = None) -> np.ndarray:
    q = qmax(cfg.nbit_weight if bits is None else bits, True)
    shape = (-1,) + (1,) * (w.ndim - 1)
    return np.clip(np.rint(w / scales.reshape(shape)), -q, q).astype("int8")


def _round(x: relax.Expr, cfg: QConfig) -> relax.Expr:
    if cfg.rounding == "TONEAREST":
        return relax.op.round(x)
    return relax.op.floor(relax.op.add(x, relax.const(0.5, "float32")))  # UPWARD: half rounds up


def _quantize_expr(x: relax.Expr, tq: TensorQuant, cfg: QConfig) -> relax.Expr:
    """x -> integer codes (as float32): clip(round(x / s), qmin, qmax)."""
    lo, hi = code_range(tq, cfg)
    codes = _round(relax.op.multiply(x, relax.const(1.0 / tq.scale, "float32")), cfg)
    return relax.op.clip(codes, lo, hi)


MAX_POOL = tvm.ir.Op.get("relax.nn.max_pool2d")


def _arg_vars(arg: relax.Expr) -> list:
    """The vars a call argument passes (a var, or the vars of a tuple such as concat's)."""
    return [v for v in (arg.fields if isinstance(arg, relax.Tuple) else [arg]) if isinstance(v, relax.Var)]


def _shared_inputs(func: relax.Function, enabled: List[QuantOp], quants: Dict[str, TensorQuant]) -> List[list]:
    """The data tensors to quantize once (``shared_tensors: int8``): a var bound in `func` that
    quantized ops read with one scale and type, and that something else reads too (or a second
    quantized op). ``[[var, TensorQuant, None], ...]``."""
    readers: Dict[int, list] = {}  # index of the var among the bindings -> [quant ops]
    bound = []
    other_reads = []
    for block in func.body.blocks:
        for b in block.bindings:
            bound.append(b.var)
            op = next((o for o in enabled if o.var.same_as(b.var)), None)
            call = b.value
            if not isinstance(call, relax.Call):
                other_reads.extend(relax.analysis.free_vars(call))
                continue
            args = list(call.args)
            if op is not None:
                data = args.pop(0)
                idx = next((i for i, v in enumerate(bound) if v.same_as(data)), None)
                if idx is not None:
                    readers.setdefault(idx, []).append(op)
            for a in args:
                other_reads.extend(_arg_vars(a))
    other_reads.extend(relax.analysis.free_vars(func.body.body))
    out = []
    for idx, ops in readers.items():
        tqs = [quants[o.tensor] for o in ops]
        if any(t.scale != tqs[0].scale or t.dtype != tqs[0].dtype for t in tqs):
            continue
        read_elsewhere = any(v.same_as(bound[idx]) for v in other_reads)
        if len(ops) > 1 or read_elsewhere:
            out.append([bound[idx], tqs[0], None])
    return out


@relax.expr_functor.mutator
class _Realizer(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, ops: List[QuantOp], quants: Dict[str, TensorQuant], cfg: QConfig,
                 switchable: bool = False):
        super().__init__(mod)
        self.mod_ = mod
        self.by_var = {op.var: op for op in ops if op.enabled}
        self.quants = quants
        self.cfg = cfg
        enabled = [op for op in ops if op.enabled]
        self.switch_index = {op.name: i for i, op in enumerate(enabled)} if switchable else None
        self.switch = relax.Var("quant_switch", relax.TensorType((len(enabled),), "float32")) \
            if switchable else None
        # shared_tensors: int8 (not in a switchable build, whose fp32 choice must see fp32 inputs):
        # [original var, its TensorQuant, its 8-bit value once emitted]
        self.shared = _shared_inputs(mod["main"], enabled, quants) \
            if cfg.shared_tensors == "int8" and not switchable else []

    def transform(self) -> tvm.IRModule:
        func = self.visit_expr(self.mod_["main"])
        if self.switch is not None:
            func = relax.Function(list(func.params) + [self.switch], func.body, func.ret_ty,
                                  func.is_pure, func.attrs)
        self.builder_.update_func(self.mod_.get_global_var("main"), func)
        return self.builder_.get()

    def _shared(self, var) -> Optional[list]:
        return next((entry for entry in self.shared if entry[0].same_as(var)), None)

    def _emit_binding(self, binding: relax.VarBinding, value: relax.Expr) -> relax.Var:
        if isinstance(binding.var, relax.DataflowVar):
            new_var = self.builder_.emit(value, name_hint=binding.var.name)
        else:
            new_var = self.builder_.emit_output(value, name_hint=binding.var.name)
        self.set_var_remap(binding.var, new_var)
        return new_var

    def _dequantized(self, entry: list) -> relax.Expr:
        """A shared tensor as its non-quantized readers see it (emitted for each reader, so that it
        fuses into the reader's kernel: the tensor in memory stays 8-bit)."""
        _, tq, value = entry
        if self.cfg.do_simulation:
            return value
        return self.builder_.emit(relax.op.multiply(relax.op.astype(value, "float32"),
                                                    relax.const(tq.scale, "float32")))

    def _eight_bit(self, binding: relax.VarBinding, tq: TensorQuant) -> relax.Var:
        """The bound tensor's 8-bit codes (do_simulation: their fp32 value). The codes of a max pool's
        output are the max pool of its input's codes (quantizing is monotone: the same codes), so that
        the pool and its producer's output are 8-bit too."""
        value = binding.value
        if not self.cfg.do_simulation and isinstance(value, relax.Call) and value.op.same_as(MAX_POOL):
            pooled = relax.Call(value.op, [self._quantized_value(self.visit_expr(value.args[0]), tq)], value.attrs)
            return self.builder_.emit(pooled, name_hint=f"{binding.var.name}_q")
        return self._quantized_value(self.visit_expr(binding.var), tq, name_hint=f"{binding.var.name}_q")

    def _quantized_value(self, x: relax.Expr, tq: TensorQuant, name_hint: str = "") -> relax.Var:
        """x as a quantized op reads it: its 8-bit codes (do_simulation: their fp32 value)."""
        codes = self.builder_.emit(_quantize_expr(x, tq, self.cfg))
        if self.cfg.do_simulation:
            return self.builder_.emit(relax.op.multiply(codes, relax.const(tq.scale, "float32")), name_hint=name_hint)
        return self.builder_.emit(relax.op.astype(codes, tq.dtype), name_hint=name_hint)

    def _reader(self, binding: relax.VarBinding) -> bool:
        """A binding reading shared tensors (not as a quantized op's data): its call rewritten to
        read their dequantized values; False where it reads none."""
        call = binding.value
        if not isinstance(call, relax.Call) or not any(
                self._shared(v) is not None for a in call.args for v in _arg_vars(a)):
            return False

        def arg(a):
            if isinstance(a, relax.Tuple):
                return relax.Tuple([arg(f) for f in a.fields])
            entry = self._shared(a) if isinstance(a, relax.Var) else None
            return self._dequantized(entry) if entry is not None and entry[2] is not None else self.visit_expr(a)

        self._emit_binding(binding, relax.Call(call.op, [arg(a) for a in call.args], call.attrs, call.ty_args))
        return True

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        op = None
        for v, o in self.by_var.items():
            if v.same_as(binding.var):
                op = o
                break
        if op is None:
            if not self._reader(binding):
                super().visit_var_binding_(binding)
            entry = self._shared(binding.var)
            if entry is not None:  # quantized once, here, for all its readers
                entry[2] = self._eight_bit(binding, entry[1])
            return None
        call = binding.value
        entry = self._shared(call.args[0])
        data = self.visit_expr(call.args[0])
        w = call.args[1].value.numpy()
        out = self._quantized(op, call, data, w, entry[2] if entry is not None else None)
        if self.switch is not None:
            # switch i: 1 keeps the int8 result, 0 the op's own fp32 result (one build, any choice)
            quant = self.builder_.emit(out)
            fp32 = self.builder_.emit(relax.Call(call.op, [data] + list(call.args[1:]), call.attrs))
            flag = self.builder_.emit(relax.op.take(self.switch, relax.const(self.switch_index[op.name], "int64"),
                                                    axis=0))
            out = relax.op.where(relax.op.greater(flag, relax.const(0.5, "float32")), quant, fp32)
        self._emit_binding(binding, out)
        return None

    def _quantized(self, op: QuantOp, call: relax.Call, data: relax.Expr, w: np.ndarray,
                   shared: Optional[relax.Expr] = None) -> relax.Expr:
        """The op on 8-bit data (`shared`: its data's codes, already emitted for several readers)."""
        cfg = self.cfg
        tq = self.quants[op.tensor]
        emit = self.builder_.emit
        if op.kind == "nn.dense":
            w_oi = w.T  # matmul(x, W^T): the constant is (in, out); scales are per output unit
        else:
            w_oi = w
        offset = self._offset_data(op, call, tq)
        bits = cfg.weight_bits(op.kind, int(call.attrs.groups) if op.kind == "nn.conv2d" else 1,
                               "uint8" if offset else tq.dtype)
        s_w = weight_scales(w_oi, cfg, bits)
        wq = quantize_weight(w_oi, s_w, cfg, bits)
        xq = shared if shared is not None else self._quantized_value(data, tq)
        if offset:  # the codes + 128 as uint8 (-127..127 -> 1..255)
            xq = relax.op.astype(relax.op.add(relax.op.astype(xq, "int16"), relax.const(_DATA_OFFSET, "int16")),
                                 "uint8")
        combined = (tq.scale * s_w).astype("float32")
        scale_shape = (1, -1, 1, 1) if op.kind == "nn.conv2d" else (1, -1)
        w_shape = (-1,) + (1,) * (w_oi.ndim - 1)
        if cfg.do_simulation:
            # fake quantization in fp32: same rounding and clipping, no integer kernels
            w_fake = (wq.astype("float64") * s_w.reshape(w_shape)).astype("float32")
            weight = relax.const(w_fake if op.kind == "nn.conv2d" else np.ascontiguousarray(w_fake.T))
            out = self._op(op, call, xq, weight, out_dtype="float32")
        else:
            weight = relax.const(wq if op.kind == "nn.conv2d" else np.ascontiguousarray(wq.T))
            acc = emit(self._op(op, call, xq, weight, out_dtype="int32"))
            if offset:  # what the offset added: 128 x each output channel's weight sum (exact, int32)
                added = _DATA_OFFSET * wq.astype(np.int64).reshape(wq.shape[0], -1).sum(axis=1)
                acc = emit(relax.op.subtract(acc, relax.const(added.astype("int32").reshape(scale_shape))))
            out = relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(combined.reshape(scale_shape)))
        if cfg.bias_correction and tq.mean is not None:
            groups = int(call.attrs.groups) if op.kind == "nn.conv2d" else 1
            shift = output_shift(w_oi, wq.astype("float64") * s_w.reshape(w_shape), tq, groups)
            out = relax.op.subtract(emit(out), relax.const(shift.astype("float32").reshape(scale_shape)))
        return out

    def _offset_data(self, op: QuantOp, call: relax.Call, tq: TensorQuant) -> bool:
        """Whether this op reads its signed codes as uint8 + 128 (``signed_data_offset``): an
        ungrouped conv without padding (a padded border would read 0, not the offset) on int8 data."""
        cfg = self.cfg
        if cfg.signed_data_offset == "auto":
            raise ValueError("qconfig.signed_data_offset 'auto' is resolved for a target first (RunConfig.qconfig)")
        if not cfg.signed_data_offset or cfg.do_simulation or op.kind != "nn.conv2d" or tq.dtype != "int8":
            return False
        return int(call.attrs.groups) == 1 and all(int(p) == 0 for p in call.attrs.padding)

    @staticmethod
    def _op(op: QuantOp, call: relax.Call, data: relax.Expr, weight: relax.Expr, out_dtype: str) -> relax.Expr:
        if op.kind == "nn.dense":
            return relax.op.matmul(data, weight, out_dtype=out_dtype)
        a = call.attrs
        return relax.op.nn.conv2d(
            data, weight, strides=a.strides, padding=a.padding, dilation=a.dilation, groups=a.groups,
            data_layout=a.data_layout, kernel_layout=a.kernel_layout, out_dtype=out_dtype,
        )


def realize(mod: tvm.IRModule, ops: List[QuantOp], quants: Dict[str, TensorQuant], cfg: QConfig,
            switchable: bool = False) -> tvm.IRModule:
    """The int8 (or, with do_simulation, fake-quantized) module; with ``requantize: integer`` the
    requantization between two quantized ops is made integer-only, with ``folded`` one float
    multiply-add (requantize.py), with
    ``partition_conversions`` main is split into conversions and core (partition.py).
    ``switchable``: main's last input ``quant_switch`` (one float32 per enabled op) picks each op's
    int8 (1) or fp32 (0) result at run time (see apply_table)."""
    qmod = _Realizer(mod, ops, quants, cfg, switchable).transform()
    if cfg.requantize == "integer" and not cfg.do_simulation:
        from .requantize import integer_requantize  # pylint: disable=import-outside-toplevel

        qmod, _ = integer_requantize(qmod, cfg.rounding, cfg.round_for_shift)
    elif cfg.requantize == "folded" and not cfg.do_simulation:
        from .requantize import folded_requantize  # pylint: disable=import-outside-toplevel

        qmod, _ = folded_requantize(qmod, cfg.rounding)
    if cfg.partition_conversions != "disabled":
        from .partition import partition_conversions  # pylint: disable=import-outside-toplevel

        qmod = partition_conversions(qmod, fully_integral=cfg.partition_conversions == "fully_integral")
    return qmod

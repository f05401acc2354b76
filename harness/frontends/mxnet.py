"""MXNet (symbol JSON / Gluon) to Relax converter.

TVM 0.27 has no MXNet frontend, so the harness carries its own. It reads the
symbol's JSON graph (the format every MXNet 1.x model is saved in), so that it
needs MXNet only to *load* a Gluon block or an `mx.sym.Symbol`; a `-symbol.json`
file plus a `.params` file convert without MXNet's engine running.

The result follows relay's convention: `main(data, *weights)` with the weights
as function parameters (attribute `num_input` = number of real inputs) and a
`params` dict of numpy arrays. `harness.build.bind_params` binds them as
constants. Inference-mode BatchNorm is folded into the preceding convolution
when it is the convolution's only consumer, otherwise it becomes a per-channel
multiply-add.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tvm
from tvm import relax

from ..errors import ConversionError, InputShapeError, UnsupportedOpError
from .deformable import deformable_conv2d_nchw
from .mxnet_attrs import (  # noqa: F401 (shared with the torch peers)
    _attr_bool, _attr_float, _attr_int, _attr_str, _attr_tuple, mxnet_reshape_shape)

Shape = Tuple[int, ...]

# ----------------------------------------------------------------------------- loading


def _load_symbol_json(symbol: Any) -> dict:
    """Accept a path to `-symbol.json`, a JSON string, an `mx.sym.Symbol` or a Gluon HybridBlock."""
    if isinstance(symbol, dict):
        return symbol
    if isinstance(symbol, (str, os.PathLike)):
        text = str(symbol)
        if text.lstrip().startswith("{"):
            return json.loads(text)
        if not os.path.isfile(text):
            raise ConversionError(f"MXNet symbol file not found: {text}")
        with open(text) as f:
            try:
                return json.load(f)
            except json.JSONDecodeError as e:
                raise ConversionError(f"{text}: not an MXNet symbol JSON file ({e})") from None
    if hasattr(symbol, "tojson"):  # mx.sym.Symbol
        return json.loads(symbol.tojson())
    if hasattr(symbol, "collect_params"):  # Gluon block
        import mxnet as mx

        sym = symbol(mx.sym.var("data"))
        if isinstance(sym, (list, tuple)):
            sym = mx.sym.Group(list(sym))
        return json.loads(sym.tojson())
    raise ConversionError(
        f"cannot read an MXNet model from {type(symbol).__name__}: "
        "give a -symbol.json path, an mx.sym.Symbol or a Gluon HybridBlock"
    )


def mxnet_reason(error: Exception) -> str:
    """The reason in an MXNetError's text, without its C++ backtrace ("Traceback ...", "File ...",
    "Check failed: <condition>:" lines), e.g. "Invalid NDArray file format"."""
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("Traceback", "File ", "[bt]", "Stack trace"))]
    if not lines:
        return type(error).__name__
    reason = re.sub(r"^\w*Error:\s*", "", lines[-1])
    reason = re.sub(r"^Check failed: .*?: ", "", reason)
    return reason or type(error).__name__


def load_params(params: Any, block: Any = None) -> Dict[str, np.ndarray]:
    """`.params` path, dict of arrays (`arg:`/`aux:` prefixes allowed), or None (taken from a Gluon block)."""
    if params is None:
        if block is not None and hasattr(block, "collect_params"):
            return {name: p.data().asnumpy() for name, p in block.collect_params().items()}
        return {}
    if isinstance(params, (str, os.PathLike)):
        if not os.path.isfile(params):
            raise ConversionError(f"MXNet params file not found: {params}")
        import mxnet as mx

        try:
            loaded = mx.nd.load(str(params))
        except Exception as e:  # MXNet raises MXNetError with a C++ backtrace
            raise ConversionError(f"{params}: not an MXNet .params file ({mxnet_reason(e)})") from None
        params = loaded
    out = {}
    for key, value in params.items():
        name = key.split(":", 1)[1] if key.startswith(("arg:", "aux:")) else key
        out[name] = value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)
    return out


# ----------------------------------------------------------------------------- converter


class _Converter:
    """Walks the nodes of a symbol JSON graph in order, emitting Relax bindings."""

    def __init__(self, graph: dict, params: Dict[str, np.ndarray], shape: Dict[str, Shape], dtype: str):
        self.nodes: List[dict] = graph["nodes"]
        self.heads = graph["heads"]
        self.params = params
        self.shape = shape
        self.dtype = dtype
        self.bb = relax.BlockBuilder()
        self.inputs: List[relax.Var] = []
        self.weights: Dict[str, relax.Var] = {}  # param name -> relax var
        self.used_params: Dict[str, np.ndarray] = {}
        self.values: Dict[int, List[relax.Expr]] = {}
        # consumers per node, for BatchNorm folding
        self.consumers: Dict[int, int] = {}
        for node in self.nodes:
            for src, _, *_ in node["inputs"]:
                self.consumers[src] = self.consumers.get(src, 0) + 1
        for src, _, *_ in self.heads:
            self.consumers[src] = self.consumers.get(src, 0) + 1
        self.folded_conv: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}

    # -- helpers
    def node_name(self, idx: int) -> str:
        return self.nodes[idx]["name"]

    def inp(self, node: dict, i: int) -> relax.Expr:
        src, out_idx, *_ = node["inputs"][i]
        return self.values[src][out_idx]

    def param_array(self, node: dict, i: int) -> Optional[np.ndarray]:
        """The numpy value of a weight input (None when the input is not a known parameter)."""
        src, _, *_ = node["inputs"][i]
        src_node = self.nodes[src]
        if src_node["op"] != "null":
            return None
        return self.params.get(src_node["name"])

    def new_weight(self, name: str, value: np.ndarray) -> relax.Var:
        value = np.ascontiguousarray(value.astype(self.dtype if value.dtype.kind == "f" else value.dtype))
        var = relax.Var(name, relax.TensorType(value.shape, str(value.dtype)))
        self.weights[name] = var
        self.used_params[name] = value
        return var

    def emit(self, expr: relax.Expr, node: dict) -> relax.Expr:
        try:
            return self.bb.emit(expr)
        except Exception as e:  # TVM's FFI raises ValueError/TypeError for shapes that do not fit
            raise self._shape_error(node, e) from None

    def emit_te(self, func: Callable, node: dict, *args, **kwargs) -> relax.Expr:
        try:
            return self.bb.emit_te(func, *args, **kwargs)
        except Exception as e:
            raise self._shape_error(node, e) from None

    def _shape_error(self, node: dict, err: Exception) -> InputShapeError:
        first = str(err).strip().splitlines()
        detail = next((ln for ln in reversed(first) if ln.strip()), type(err).__name__) if first else ""
        given = ", ".join(f"{k}={tuple(v)}" for k, v in self.shape.items())
        return InputShapeError(
            f"input shape {given} does not fit the model at node '{node['name']}' "
            f"({node['op']}): {detail.strip()[:300]}"
        )

    # -- main loop
    def convert(self) -> Tuple[tvm.IRModule, Dict[str, np.ndarray]]:
        data_names = [n["name"] for n in self.nodes if n["op"] == "null" and n["name"] not in self.params]
        for name in self.shape:
            if name not in data_names:
                raise InputShapeError(
                    f"input '{name}' is not an input of the model; its inputs are: "
                    f"{', '.join(data_names) or '(none)'}"
                )
        missing = [n for n in data_names if n not in self.shape and not self._is_optional_label(n)]
        if missing:
            raise ConversionError(
                f"no shape and no weight for variable(s) {', '.join(missing)}: pass them in `shape=` "
                "(inputs) or in `params` (weights)"
            )
        for name, shp in self.shape.items():
            var = relax.Var(name, relax.TensorType(tuple(int(d) for d in shp), self.dtype))
            self.inputs.append(var)
        input_by_name = {v.name: v for v in self.inputs}
        func_params: List[relax.Var] = []
        with self.bb.function("main"):
            with self.bb.dataflow():
                for idx, node in enumerate(self.nodes):
                    op = node["op"]
                    if op == "null":
                        name = node["name"]
                        if name in input_by_name:
                            self.values[idx] = [input_by_name[name]]
                        elif name in self.params:
                            # weights become vars lazily (folded BN params never appear)
                            self.values[idx] = [_LazyParam(name)]
                        else:
                            self.values[idx] = [None]  # label of a loss op
                        continue
                    handler = _OPS.get(op)
                    if handler is None:
                        raise UnsupportedOpError(op, node["name"])
                    out = handler(self, idx, node, node.get("attrs") or node.get("param") or {})
                    self.values[idx] = out if isinstance(out, list) else [out]
                outs = [self.values[src][i] for src, i, *_ in self.heads]
                result = outs[0] if len(outs) == 1 else relax.Tuple(outs)
                gv = self.bb.emit_output(result)
            func_params = self.inputs + list(self.weights.values())
            self.bb.emit_func_output(gv, params=func_params)
        mod = self.bb.get()
        func = mod["main"].with_attr("num_input", len(self.inputs))
        mod["main"] = func
        return mod, dict(self.used_params)

    def _is_optional_label(self, name: str) -> bool:
        return name.endswith("_label") or name == "label"

    def resolve(self, expr):
        """Turn a lazily referenced parameter into a relax Var."""
        if isinstance(expr, _LazyParam):
            if expr.name in self.weights:
                return self.weights[expr.name]
            return self.new_weight(expr.name, self.params[expr.name])
        return expr

    def arg(self, node: dict, i: int) -> relax.Expr:
        value = self.resolve(self.inp(node, i))
        if value is None:
            raise ConversionError(f"node '{node['name']}' ({node['op']}): input {i} has no value")
        return value


class _LazyParam:
    def __init__(self, name: str):
        self.name = name


# ----------------------------------------------------------------------------- op handlers

_OPS: Dict[str, Callable] = {}


def _register(*names):
    def deco(fn):
        for n in names:
            _OPS[n] = fn
        return fn

    return deco


def supported_ops() -> List[str]:
    return sorted(_OPS)


def _bn_scale_shift(cv: _Converter, node: dict) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Per-channel (scale, shift) of an inference-mode BatchNorm, or None if its params are unknown."""
    arrays = [cv.param_array(node, i) for i in range(1, 5)]
    if any(a is None for a in arrays):
        return None
    gamma, beta, mean, var = (a.astype(np.float64) for a in arrays)
    attrs = node.get("attrs") or {}
    if _attr_bool(attrs, "fix_gamma", True):
        gamma = np.ones_like(gamma)
    eps = _attr_float(attrs, "eps", 1e-3)
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale


def _conv_can_fold(cv: _Converter, conv_idx: int) -> bool:
    return cv.nodes[conv_idx]["op"] == "Convolution" and cv.consumers.get(conv_idx, 0) == 1


@_register("Convolution")
def _conv(cv: _Converter, idx: int, node: dict, attrs: dict):
    kernel = _attr_tuple(attrs, "kernel", (1, 1))
    if len(kernel) != 2:
        raise UnsupportedOpError(f"Convolution with {len(kernel)}-d kernel", node["name"])
    layout = _attr_str(attrs, "layout", "NCHW")
    if layout not in ("NCHW", "None"):
        raise UnsupportedOpError(f"Convolution with layout {layout}", node["name"])
    no_bias = _attr_bool(attrs, "no_bias", False)
    # Fold a following inference BatchNorm into the weights (the BN handler finds it here).
    fold = cv.folded_conv.get(idx)
    weight_np = cv.param_array(node, 1)
    bias_np = None if no_bias else cv.param_array(node, 2)
    next_bn = _following_batchnorm(cv, idx)
    if next_bn is not None and weight_np is not None and (no_bias or bias_np is not None):
        ss = _bn_scale_shift(cv, cv.nodes[next_bn])
        if ss is not None:
            scale, shift = ss
            w = (weight_np.astype(np.float64) * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
            b0 = np.zeros(w.shape[0]) if bias_np is None else bias_np.astype(np.float64)
            b = (b0 * scale + shift).astype(np.float32)
            bn_name = cv.nodes[next_bn]["name"]
            weight = cv.new_weight(f"{node['name']}_weight_bnfold", w)
            bias = cv.new_weight(f"{bn_name}_bias_bnfold", b)
            cv.folded_conv[idx] = (next_bn,)
            return _conv_expr(cv, node, attrs, cv.arg(node, 0), weight, bias, kernel)
    weight = cv.arg(node, 1)
    bias = None if no_bias else cv.arg(node, 2)
    return _conv_expr(cv, node, attrs, cv.arg(node, 0), weight, bias, kernel)


def _following_batchnorm(cv: _Converter, conv_idx: int) -> Optional[int]:
    if cv.consumers.get(conv_idx, 0) != 1:
        return None
    for j in range(conv_idx + 1, len(cv.nodes)):
        n = cv.nodes[j]
        if any(src == conv_idx for src, *_ in n["inputs"]):
            return j if n["op"] == "BatchNorm" and n["inputs"][0][0] == conv_idx else None
    return None


def _conv_expr(cv, node, attrs, data, weight, bias, kernel):
    stride = _attr_tuple(attrs, "stride", (1, 1))
    dilate = _attr_tuple(attrs, "dilate", (1, 1))
    pad = _attr_tuple(attrs, "pad", (0, 0))
    groups = _attr_int(attrs, "num_group", 1)
    out = cv.emit(
        relax.op.nn.conv2d(data, weight, strides=stride, padding=pad, dilation=dilate, groups=groups),
        node,
    )
    if bias is not None:
        out = cv.emit(relax.op.add(out, relax.op.reshape(bias, (1, -1, 1, 1))), node)
    return out


@_register("_contrib_DeformableConvolution")
def _deformable_conv(cv: _Converter, idx: int, node: dict, attrs: dict):
    kernel = _attr_tuple(attrs, "kernel", (1, 1))
    stride = _attr_tuple(attrs, "stride", (1, 1))
    dilate = _attr_tuple(attrs, "dilate", (1, 1))
    pad = _attr_tuple(attrs, "pad", (0, 0))
    groups = _attr_int(attrs, "num_group", 1)
    dgroups = _attr_int(attrs, "num_deformable_group", 1)
    no_bias = _attr_bool(attrs, "no_bias", False)
    data, offset, weight = cv.arg(node, 0), cv.arg(node, 1), cv.arg(node, 2)
    oshape = [int(d) for d in offset.ty.shape]
    if oshape[1] != 2 * dgroups * kernel[0] * kernel[1]:
        raise InputShapeError(
            f"node '{node['name']}' (_contrib_DeformableConvolution): offset has {oshape[1]} channels, "
            f"expected 2*num_deformable_group*kh*kw = {2 * dgroups * kernel[0] * kernel[1]}"
        )
    out = cv.emit_te(
        deformable_conv2d_nchw, node, data, offset, weight, stride, pad, dilate, dgroups, groups,
        cv.dtype,
        primfunc_name_hint="deformable_conv2d_nchw",
    )
    if not no_bias:
        out = cv.emit(relax.op.add(out, relax.op.reshape(cv.arg(node, 3), (1, -1, 1, 1))), node)
    return out


@_register("BatchNorm")
def _batchnorm(cv: _Converter, idx: int, node: dict, attrs: dict):
    src = node["inputs"][0][0]
    if src in cv.folded_conv and cv.folded_conv[src][0] == idx:
        return [cv.inp(node, 0), None, None]  # already folded into the conv's weights
    axis = _attr_int(attrs, "axis", 1)
    data = cv.arg(node, 0)
    ndim = len(data.ty.shape)
    bshape = [1] * ndim
    bshape[axis % ndim] = -1
    ss = _bn_scale_shift(cv, node)
    if ss is not None:
        scale = cv.new_weight(f"{node['name']}_scale", ss[0].astype(np.float32))
        shift = cv.new_weight(f"{node['name']}_shift", ss[1].astype(np.float32))
        out = cv.emit(relax.op.multiply(data, relax.op.reshape(scale, bshape)), node)
        out = cv.emit(relax.op.add(out, relax.op.reshape(shift, bshape)), node)
        return [out, None, None]
    # Parameters unknown at conversion time: keep BatchNorm symbolic (inference form).
    gamma, beta, mean, var = (cv.arg(node, i) for i in range(1, 5))
    eps = _attr_float(attrs, "eps", 1e-3)
    if _attr_bool(attrs, "fix_gamma", True):
        gamma = relax.op.ones_like(gamma)
    out = cv.emit(
        relax.op.nn.batch_norm(data, gamma, beta, mean, var, axis=axis % ndim, epsilon=eps, training=False),
        node,
    )
    return [cv.emit(relax.TupleGetItem(out, 0), node), None, None]


_ACTIVATIONS = {
    "relu": relax.op.nn.relu,
    "sigmoid": relax.op.sigmoid,
    "tanh": relax.op.tanh,
    "softrelu": relax.op.nn.softplus,
}


@_register("Activation")
def _activation(cv, idx, node, attrs):
    act = _attr_str(attrs, "act_type", "relu")
    if act == "softsign":
        x = cv.arg(node, 0)
        return cv.emit(relax.op.divide(x, relax.op.add(relax.op.abs(x), relax.const(1.0, cv.dtype))), node)
    fn = _ACTIVATIONS.get(act)
    if fn is None:
        raise UnsupportedOpError(f"Activation(act_type={act})", node["name"])
    return cv.emit(fn(cv.arg(node, 0)), node)


@_register("relu")
def _relu(cv, idx, node, attrs):
    return cv.emit(relax.op.nn.relu(cv.arg(node, 0)), node)


@_register("sigmoid")
def _sigmoid(cv, idx, node, attrs):
    return cv.emit(relax.op.sigmoid(cv.arg(node, 0)), node)


@_register("LeakyReLU")
def _leaky_relu(cv, idx, node, attrs):
    act = _attr_str(attrs, "act_type", "leaky")
    x = cv.arg(node, 0)
    if act == "leaky":
        return cv.emit(relax.op.nn.leakyrelu(x, _attr_float(attrs, "slope", 0.25)), node)
    if act == "prelu":
        alpha = cv.arg(node, 1)
        return cv.emit(relax.op.nn.prelu(x, alpha, axis=1), node)
    if act == "elu":
        slope = relax.const(_attr_float(attrs, "slope", 0.25), cv.dtype)
        neg = relax.op.multiply(slope, relax.op.subtract(relax.op.exp(x), relax.const(1.0, cv.dtype)))
        return cv.emit(relax.op.where(relax.op.greater(x, relax.const(0.0, cv.dtype)), x, neg), node)
    raise UnsupportedOpError(f"LeakyReLU(act_type={act})", node["name"])


@_register("Pooling")
def _pooling(cv, idx, node, attrs):
    pool_type = _attr_str(attrs, "pool_type", "max")
    x = cv.arg(node, 0)
    if _attr_str(attrs, "layout", "NCHW") not in ("NCHW", "None"):
        raise UnsupportedOpError(f"Pooling with layout {attrs['layout']}", node["name"])
    if _attr_bool(attrs, "global_pool", False):
        if pool_type == "avg":
            return cv.emit(relax.op.nn.adaptive_avg_pool2d(x, output_size=(1, 1)), node)
        if pool_type == "max":
            return cv.emit(relax.op.max(x, axis=[2, 3], keepdims=True), node)
        if pool_type == "sum":
            return cv.emit(relax.op.sum(x, axis=[2, 3], keepdims=True), node)
        raise UnsupportedOpError(f"Pooling(pool_type={pool_type})", node["name"])
    kernel = _attr_tuple(attrs, "kernel", (1, 1))
    stride = _attr_tuple(attrs, "stride", (1, 1))
    pad = _attr_tuple(attrs, "pad", (0, 0))
    ceil = _attr_str(attrs, "pooling_convention", "valid") == "full"
    if pool_type == "max":
        return cv.emit(relax.op.nn.max_pool2d(x, kernel, stride, pad, ceil_mode=ceil), node)
    if pool_type == "avg":
        include_pad = _attr_bool(attrs, "count_include_pad", True)
        return cv.emit(
            relax.op.nn.avg_pool2d(x, kernel, stride, pad, ceil_mode=ceil, count_include_pad=include_pad),
            node,
        )
    raise UnsupportedOpError(f"Pooling(pool_type={pool_type})", node["name"])


@_register("FullyConnected")
def _dense(cv, idx, node, attrs):
    x = cv.arg(node, 0)
    if _attr_bool(attrs, "flatten", True) and len(x.ty.shape) != 2:
        x = cv.emit(relax.op.reshape(x, (int(x.ty.shape[0]), -1)), node)
    w = cv.arg(node, 1)
    out = cv.emit(relax.op.matmul(x, relax.op.permute_dims(w)), node)
    if not _attr_bool(attrs, "no_bias", False):
        out = cv.emit(relax.op.add(out, cv.arg(node, 2)), node)
    return out


@_register("Flatten", "flatten")
def _flatten(cv, idx, node, attrs):
    x = cv.arg(node, 0)
    return cv.emit(relax.op.reshape(x, (int(x.ty.shape[0]), -1)), node)


def _binary(fn):
    def handler(cv, idx, node, attrs):
        return cv.emit(fn(cv.arg(node, 0), cv.arg(node, 1)), node)

    return handler


for _names, _fn in (
    (("elemwise_add", "broadcast_add", "_add", "_Plus", "_plus", "broadcast_plus"), relax.op.add),
    (("elemwise_sub", "broadcast_sub", "_sub", "_Minus", "_minus", "broadcast_minus"), relax.op.subtract),
    (("elemwise_mul", "broadcast_mul", "_mul", "_Mul"), relax.op.multiply),
    (("elemwise_div", "broadcast_div", "_div", "_Div"), relax.op.divide),
):
    _register(*_names)(_binary(_fn))


def _scalar(fn, reverse=False):
    def handler(cv, idx, node, attrs):
        s = relax.const(_attr_float(attrs, "scalar", 0.0), cv.dtype)
        x = cv.arg(node, 0)
        return cv.emit(fn(s, x) if reverse else fn(x, s), node)

    return handler


_register("_plus_scalar", "_PlusScalar")(_scalar(relax.op.add))
_register("_minus_scalar", "_MinusScalar")(_scalar(relax.op.subtract))
_register("_rminus_scalar", "_RMinusScalar")(_scalar(relax.op.subtract, reverse=True))
_register("_mul_scalar", "_MulScalar")(_scalar(relax.op.multiply))
_register("_div_scalar", "_DivScalar")(_scalar(relax.op.divide))


@_register("Concat", "concat")
def _concat(cv, idx, node, attrs):
    axis = _attr_int(attrs, "dim", 1)
    parts = [cv.arg(node, i) for i in range(len(node["inputs"]))]
    return cv.emit(relax.op.concat(parts, axis=axis), node)


@_register("Dropout", "_copy", "identity", "BlockGrad", "stop_gradient")
def _identity(cv, idx, node, attrs):
    return cv.arg(node, 0)


@_register("softmax", "SoftmaxActivation", "SoftmaxOutput", "Softmax")
def _softmax(cv, idx, node, attrs):
    x = cv.arg(node, 0)
    if node["op"] == "SoftmaxActivation" and _attr_str(attrs, "mode", "instance") == "channel":
        axis = 1
    elif node["op"] in ("SoftmaxOutput", "Softmax"):
        if _attr_bool(attrs, "multi_output", False):
            axis = 1
        else:
            if len(x.ty.shape) > 2:
                x = cv.emit(relax.op.reshape(x, (int(x.ty.shape[0]), -1)), node)
            axis = -1
    else:
        axis = _attr_int(attrs, "axis", -1)
    return cv.emit(relax.op.nn.softmax(x, axis=axis), node)


@_register("clip")
def _clip(cv, idx, node, attrs):
    lo, hi = _attr_float(attrs, "a_min", 0.0), _attr_float(attrs, "a_max", 6.0)
    x = cv.arg(node, 0)
    if lo == 0.0 and hi == 6.0:
        return cv.emit(relax.op.nn.relu6(x), node)
    return cv.emit(relax.op.clip(x, lo, hi), node)


@_register("Reshape", "reshape")
def _reshape(cv, idx, node, attrs):
    x = cv.arg(node, 0)
    in_shape = [int(d) for d in x.ty.shape]
    spec = _attr_tuple(attrs, "shape", ())
    if _attr_bool(attrs, "reverse", False):
        raise UnsupportedOpError("Reshape(reverse=True)", node["name"])
    out = mxnet_reshape_shape(in_shape, spec)
    return cv.emit(relax.op.reshape(x, out), node)


# ----------------------------------------------------------------------------- entry point


def from_mxnet(
    symbol: Any,
    params: Union[None, str, Dict[str, Any]] = None,
    shape: Optional[Dict[str, Sequence[int]]] = None,
    dtype: str = "float32",
) -> Tuple[tvm.IRModule, Dict[str, np.ndarray]]:
    """Convert an MXNet model to a Relax IRModule.

    Parameters
    ----------
    symbol : path to `-symbol.json`, `mx.sym.Symbol` or Gluon `HybridBlock`
    params : path to `.params`, dict of arrays, or None (a Gluon block's own parameters)
    shape : input name -> shape; default ``{"data": (1, 3, 224, 224)}``
    dtype : input and weight dtype

    Returns
    -------
    (mod, params) : `main(data, *weights)` and the weights by name (numpy arrays)
    """
    shape = {"data": (1, 3, 224, 224)} if shape is None else dict(shape)
    for name, shp in shape.items():
        if not all(isinstance(d, (int, np.integer)) and d > 0 for d in shp):
            raise InputShapeError(f"input '{name}': shape must be positive integers, got {tuple(shp)}")
    graph = _load_symbol_json(symbol)
    block = symbol if hasattr(symbol, "collect_params") else None
    param_arrays = load_params(params, block)
    return _Converter(graph, param_arrays, {k: tuple(v) for k, v in shape.items()}, dtype).convert()

"""Run an MXNet symbol graph with PyTorch: the torch peers' (and the ONNX export's) copy of a Gluon model.

`MXNetGraphModule(graph, params)` walks the symbol JSON's nodes in order, like
`harness.frontends.mxnet` does when it builds Relax, but evaluates each node with
`torch.nn.functional`. The weights are buffers of the module, so `.to(device)`,
`.half()` and `torch.onnx.export` see them; BatchNorm runs in inference form with
the stored statistics (not folded, so that the torch peers compute what the Gluon
block defines, in the order it defines it). The op coverage is the converter's;
an op outside it raises `UnsupportedOpError` when the module is built.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConversionError, UnsupportedOpError
from ..frontends.mxnet_attrs import _attr_bool, _attr_float, _attr_int, _attr_str, _attr_tuple, mxnet_reshape_shape

Step = Callable[..., Any]


class TorchUnsupportedOp(UnsupportedOpError):
    """An MXNet op the torch interpreter has no implementation of."""

    def __init__(self, op: str, node: str, why: str = ""):
        super().__init__(op, node)
        self.args = (f"MXNet op '{op}' at node '{node}' has no PyTorch implementation" + (f": {why}" if why else ""),)

    def __str__(self) -> str:
        return self.args[0]


# ----------------------------------------------------------------------------- op builders
# Each builder gets (attrs, node) and returns f(*inputs) -> tensor or list of tensors.

_BUILDERS: Dict[str, Callable[[dict, dict], Step]] = {}


def _register(*names):
    def deco(fn):
        for n in names:
            _BUILDERS[n] = fn
        return fn

    return deco


def supported_ops() -> List[str]:
    return sorted(_BUILDERS)


@_register("Convolution")
def _conv(attrs, node):
    kernel = _attr_tuple(attrs, "kernel", (1, 1))
    if len(kernel) != 2:
        raise TorchUnsupportedOp("Convolution", node["name"], f"{len(kernel)}-d kernel")
    layout = _attr_str(attrs, "layout", "NCHW")
    if layout not in ("NCHW", "None"):
        raise TorchUnsupportedOp("Convolution", node["name"], f"layout {layout}")
    stride = _attr_tuple(attrs, "stride", (1, 1))
    dilate = _attr_tuple(attrs, "dilate", (1, 1))
    pad = _attr_tuple(attrs, "pad", (0, 0))
    groups = _attr_int(attrs, "num_group", 1)
    no_bias = _attr_bool(attrs, "no_bias", False)

    def run(x, w, b=None):
        return F.conv2d(x, w, None if no_bias else b, stride, pad, dilate, groups)

    return run


@_register("_contrib_DeformableConvolution")
def _deformable(attrs, node):
    raise TorchUnsupportedOp(
        "_contrib_DeformableConvolution", node["name"],
        "deformable convolution needs torchvision.ops.deform_conv2d (torchvision is not installed), "
        "whose border sampling also differs from MXNet's",
    )


@_register("BatchNorm")
def _batchnorm(attrs, node):
    axis = _attr_int(attrs, "axis", 1)
    eps = _attr_float(attrs, "eps", 1e-3)
    fix_gamma = _attr_bool(attrs, "fix_gamma", True)

    def run(x, gamma, beta, mean, var):
        if fix_gamma:
            gamma = torch.ones_like(gamma)
        if axis % x.dim() == 1:
            out = F.batch_norm(x, mean, var, gamma, beta, False, 0.0, eps)
        else:
            shape = [1] * x.dim()
            shape[axis % x.dim()] = -1
            scale = gamma / torch.sqrt(var + eps)
            out = x * scale.reshape(shape) + (beta - mean * scale).reshape(shape)
        return [out, mean, var]

    return run


def _softsign(x):
    return x / (x.abs() + 1.0)


_ACTIVATIONS = {"relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "softrelu": F.softplus,
                "softsign": _softsign}


@_register("Activation")
def _activation(attrs, node):
    act = _attr_str(attrs, "act_type", "relu")
    if act not in _ACTIVATIONS:
        raise TorchUnsupportedOp(f"Activation(act_type={act})", node["name"])
    return _ACTIVATIONS[act]


_register("relu")(lambda attrs, node: F.relu)
_register("sigmoid")(lambda attrs, node: torch.sigmoid)


@_register("LeakyReLU")
def _leaky(attrs, node):
    act = _attr_str(attrs, "act_type", "leaky")
    slope = _attr_float(attrs, "slope", 0.25)
    if act == "leaky":
        return lambda x: F.leaky_relu(x, slope)
    if act == "prelu":
        return lambda x, alpha: F.prelu(x, alpha)
    if act == "elu":
        return lambda x: torch.where(x > 0, x, slope * (torch.exp(x) - 1.0))
    raise TorchUnsupportedOp(f"LeakyReLU(act_type={act})", node["name"])


@_register("Pooling")
def _pooling(attrs, node):
    name = node["name"]
    pool_type = _attr_str(attrs, "pool_type", "max")
    if _attr_str(attrs, "layout", "NCHW") not in ("NCHW", "None"):
        raise TorchUnsupportedOp("Pooling", name, f"layout {attrs['layout']}")
    if pool_type not in ("max", "avg", "sum"):
        raise TorchUnsupportedOp(f"Pooling(pool_type={pool_type})", name)
    if _attr_bool(attrs, "global_pool", False):
        if pool_type == "avg":
            return lambda x: x.mean(dim=(2, 3), keepdim=True)
        if pool_type == "max":
            return lambda x: x.amax(dim=(2, 3), keepdim=True)
        return lambda x: x.sum(dim=(2, 3), keepdim=True)
    if pool_type == "sum":
        raise TorchUnsupportedOp("Pooling(pool_type=sum) with a window", name)
    kernel = _attr_tuple(attrs, "kernel", (1, 1))
    stride = _attr_tuple(attrs, "stride", (1, 1))
    pad = _attr_tuple(attrs, "pad", (0, 0))
    full = _attr_str(attrs, "pooling_convention", "valid") == "full"
    include_pad = _attr_bool(attrs, "count_include_pad", True)
    if len(kernel) != 2:
        raise TorchUnsupportedOp("Pooling", name, f"{len(kernel)}-d window")
    if any(2 * p > k for p, k in zip(pad, kernel)):
        raise TorchUnsupportedOp("Pooling", name, f"padding {pad} over half the window {kernel}")

    def run(x):
        if full:
            # MXNet 'full': 1 + ceil((n + 2p - k) / s) windows. torch's ceil_mode drops a last window
            # that would start in the right padding; such a window is not computed here.
            for n, k, s, p in zip(x.shape[2:], kernel, stride, pad):
                windows = 1 + -(-(int(n) + 2 * p - k) // s)
                if (windows - 1) * s >= int(n) + p:
                    raise TorchUnsupportedOp("Pooling(pooling_convention=full)", name,
                                             "its last window starts inside the padding")
        if pool_type == "max":
            return F.max_pool2d(x, kernel, stride, pad, ceil_mode=full)
        return F.avg_pool2d(x, kernel, stride, pad, ceil_mode=full, count_include_pad=include_pad)

    return run


@_register("FullyConnected")
def _dense(attrs, node):
    flatten = _attr_bool(attrs, "flatten", True)
    no_bias = _attr_bool(attrs, "no_bias", False)

    def run(x, w, b=None):
        if flatten and x.dim() != 2:
            x = torch.flatten(x, 1)
        return F.linear(x, w, None if no_bias else b)

    return run


@_register("Flatten", "flatten")
def _flatten(attrs, node):
    return lambda x: torch.flatten(x, 1)


for _names, _fn in (
    (("elemwise_add", "broadcast_add", "_add", "_Plus", "_plus", "broadcast_plus"), torch.add),
    (("elemwise_sub", "broadcast_sub", "_sub", "_Minus", "_minus", "broadcast_minus"), torch.sub),
    (("elemwise_mul", "broadcast_mul", "_mul", "_Mul"), torch.mul),
    (("elemwise_div", "broadcast_div", "_div", "_Div"), torch.div),
):
    _register(*_names)(lambda attrs, node, _fn=_fn: _fn)


def _scalar(op: str):
    def build(attrs, node):
        s = _attr_float(attrs, "scalar", 0.0)
        return {
            "add": lambda x: x + s,
            "sub": lambda x: x - s,
            "rsub": lambda x: s - x,
            "mul": lambda x: x * s,
            "div": lambda x: x / s,
        }[op]

    return build


_register("_plus_scalar", "_PlusScalar")(_scalar("add"))
_register("_minus_scalar", "_MinusScalar")(_scalar("sub"))
_register("_rminus_scalar", "_RMinusScalar")(_scalar("rsub"))
_register("_mul_scalar", "_MulScalar")(_scalar("mul"))
_register("_div_scalar", "_DivScalar")(_scalar("div"))


@_register("Concat", "concat")
def _concat(attrs, node):
    axis = _attr_int(attrs, "dim", 1)
    return lambda *xs: torch.cat(xs, dim=axis)


@_register("Dropout", "_copy", "identity", "BlockGrad", "stop_gradient")
def _identity(attrs, node):
    return lambda x, *rest: x


@_register("softmax", "SoftmaxActivation", "SoftmaxOutput", "Softmax")
def _softmax(attrs, node):
    op = node["op"]
    flatten = False
    if op == "SoftmaxActivation" and _attr_str(attrs, "mode", "instance") == "channel":
        axis = 1
    elif op in ("SoftmaxOutput", "Softmax"):
        multi = _attr_bool(attrs, "multi_output", False)
        axis = 1 if multi else -1
        flatten = not multi
    else:
        axis = _attr_int(attrs, "axis", -1)

    def run(x, *label):
        if flatten and x.dim() > 2:
            x = torch.flatten(x, 1)
        return torch.softmax(x, dim=axis)

    return run


@_register("clip")
def _clip(attrs, node):
    lo, hi = _attr_float(attrs, "a_min", 0.0), _attr_float(attrs, "a_max", 6.0)
    return lambda x: torch.clamp(x, lo, hi)


@_register("Reshape", "reshape")
def _reshape(attrs, node):
    if _attr_bool(attrs, "reverse", False):
        raise TorchUnsupportedOp("Reshape(reverse=True)", node["name"])
    spec = _attr_tuple(attrs, "shape", ())

    def run(x):
        return x.reshape(mxnet_reshape_shape([int(d) for d in x.shape], spec))

    return run




# ----------------------------------------------------------------------------- the module


class MXNetGraphModule(torch.nn.Module):
    """A torch module that evaluates an MXNet symbol graph (JSON dict) with the given weights."""

    def __init__(self, graph: dict, params: Dict[str, np.ndarray], input_names: Sequence[str] = ("data",)):
        super().__init__()
        self.nodes: List[dict] = graph["nodes"]
        self.heads = [(int(h[0]), int(h[1])) for h in graph["heads"]]
        self.input_names = list(input_names)
        # per node: ("input", position) | ("param", buffer name) | ("none",) | ("op", fn, [(src, out)])
        self._plan: List[tuple] = []
        n_buffers = 0
        for idx, node in enumerate(self.nodes):
            op, name = node["op"], node["name"]
            if op == "null":
                if name in self.input_names:
                    self._plan.append(("input", self.input_names.index(name)))
                elif name in params:
                    buf = f"w{n_buffers}"
                    n_buffers += 1
                    self.register_buffer(buf, torch.from_numpy(np.ascontiguousarray(params[name])))
                    self._plan.append(("param", buf))
                else:
                    self._plan.append(("none",))  # a loss op's label
                continue
            builder = _BUILDERS.get(op)
            if builder is None:
                raise TorchUnsupportedOp(op, name)
            attrs = node.get("attrs") or node.get("param") or {}
            fn = builder(attrs, node)
            self._plan.append(("op", fn, [(int(s), int(o)) for s, o, *_ in node["inputs"]]))
        variables = {n["name"] for n in self.nodes if n["op"] == "null"}
        missing = [n for n in self.input_names if n not in variables]
        if missing:
            raise ConversionError(f"input '{missing[0]}' is not a variable of the MXNet graph")

    def forward(self, *inputs):
        values: List[Optional[list]] = []
        for step in self._plan:
            kind = step[0]
            if kind == "input":
                values.append([inputs[step[1]]])
            elif kind == "param":
                values.append([getattr(self, step[1])])
            elif kind == "none":
                values.append([None])
            else:
                args = [values[s][o] for s, o in step[2]]
                out = step[1](*args)
                values.append(out if isinstance(out, list) else [out])
        outs = [values[s][o] for s, o in self.heads]
        return outs[0] if len(outs) == 1 else tuple(outs)


def gluon_graph(block) -> Tuple[dict, Dict[str, np.ndarray]]:
    """Symbol JSON (as a dict) and weights of a Gluon HybridBlock (input variable 'data')."""
    import mxnet as mx

    from ..frontends.mxnet import load_params

    sym = block(mx.sym.var("data"))
    if isinstance(sym, (list, tuple)):
        sym = mx.sym.Group(list(sym))
    return json.loads(sym.tojson()), load_params(None, block)


def from_gluon(block) -> MXNetGraphModule:
    graph, params = gluon_graph(block)
    return MXNetGraphModule(graph, params).eval()

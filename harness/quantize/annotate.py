"""Annotate: find the ops to quantize and the tensors that need a scale.

Works on the `main` function of a Relax module whose weights are bound as
constants (`harness.build.bind_params`, then FoldConstant). The quantized ops
are conv2d and dense (matmul with a constant 2-D weight); their data input is
the tensor that gets calibrated. Ops between them (add, multiply, concatenate,
pooling, relu/clip, reshape/flatten) stay in fp32 arithmetic but run inside the
fused kernels of the neighbouring int8 ops (see realize.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import tvm
from tvm import relax

from .qconfig import QConfig

CONV = tvm.ir.Op.get("relax.nn.conv2d")
MATMUL = tvm.ir.Op.get("relax.matmul")


@dataclass
class QuantOp:
    """One op that the plan quantizes (or deliberately keeps fp32)."""

    index: int  # position among the ops of its kind (conv 0, conv 1, ...; dense 0, ...)
    kind: str  # "nn.conv2d" | "nn.dense"
    name: str  # stable tensor name: "conv2d_3", "dense_0"
    var: relax.Var  # the binding's var in the annotated function
    weight_shape: tuple
    enabled: bool
    reason: str = ""  # why it is kept fp32

    @property
    def tensor(self) -> str:
        return f"{self.name}.data"


def prepare(mod: tvm.IRModule) -> tvm.IRModule:
    """Normalise a bound module for annotation: fold constants (transposed dense weights etc.)."""
    return relax.transform.FoldConstant()(mod)


def _bindings(func: relax.Function):
    for block in func.body.blocks:
        for b in block.bindings:
            if isinstance(b, relax.VarBinding):
                yield b


def find_ops(mod: tvm.IRModule, cfg: QConfig) -> List[QuantOp]:
    """The quantization plan: every conv2d / dense with a constant weight, in program order."""
    ops: List[QuantOp] = []
    n_conv = n_dense = 0
    enabled_kinds = set(cfg.debug_enabled_ops) if cfg.debug_enabled_ops else None
    skip_conv = set(cfg.skip_conv_layers or [])
    for b in _bindings(mod["main"]):
        call = b.value
        if not isinstance(call, relax.Call):
            continue
        if call.op.same_as(CONV) and isinstance(call.args[1], tvm.ir.expr.Constant):
            if str(call.attrs.data_layout) != "NCHW" or str(call.attrs.kernel_layout) != "OIHW":
                continue
            kind, name, index = "nn.conv2d", f"conv2d_{n_conv}", n_conv
            n_conv += 1
            enabled, reason = True, ""
            if index in skip_conv:
                enabled, reason = False, "skip_conv_layers"
        elif (call.op.same_as(MATMUL) and isinstance(call.args[1], tvm.ir.expr.Constant)
              and len(call.args[1].value.shape) == 2 and len(call.args[0].ty.shape) == 2):
            kind, name, index = "nn.dense", f"dense_{n_dense}", n_dense
            n_dense += 1
            enabled, reason = True, ""
            if cfg.skip_dense_layer:
                enabled, reason = False, "skip_dense_layer"
        else:
            continue
        if enabled and enabled_kinds is not None and kind not in enabled_kinds:
            enabled, reason = False, "debug_enabled_ops"
        ops.append(QuantOp(index, kind, name, b.var, tuple(int(d) for d in call.args[1].value.shape),
                           enabled, reason))
    return ops


def find_call(mod: tvm.IRModule, var: relax.Var) -> Optional[relax.Call]:
    for b in _bindings(mod["main"]):
        if b.var.same_as(var):
            return b.value
    return None


def plan_table(ops: List[QuantOp]) -> List[list]:
    """Rows for `harness quantize --show-plan`."""
    return [[op.name, op.kind, "x".join(str(d) for d in op.weight_shape),
             "int8" if op.enabled else "fp32", op.reason] for op in ops]


def weight_of(mod: tvm.IRModule, op: QuantOp) -> np.ndarray:
    return find_call(mod, op.var).args[1].value.numpy()

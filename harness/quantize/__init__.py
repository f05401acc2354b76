"""relay.quantize rebuilt on Relax: annotate -> calibrate -> realize.

    from harness.quantize import qconfig, quantize
    with qconfig(calibrate_mode="kl_divergence", weight_scale="channel_max"):
        qmod = quantize(mod, params, calib_data=[{"data": batch} for batch in batches])

Calibration data is passed in (an iterable of input-name -> array dicts), never
loaded here. `calibrate()` returns the calibration table alone and
`apply_table()` re-applies one without data.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional

import numpy as np
import tvm

from .annotate import QuantOp, find_ops, plan_table, prepare
from .calib import (CALIBRATORS, HistogramCollector, get_calibrator, kl_divergence_threshold,
                    percentile_threshold, threshold_to_scale)
from .collect import collect_stats, threshold_of
from .qconfig import QConfig, current_qconfig, qconfig
from .realize import TensorQuant, data_quant, realize
from .table import (TableError, check_table_path, check_table_qconfig, fallback_layers, load_table, make_table,
                    quants_from_table, save_table, set_accuracy_target, table_mismatch)


def _bound(mod: tvm.IRModule, params: Optional[Dict[str, np.ndarray]]) -> tvm.IRModule:
    from ..build import bind_params

    return prepare(bind_params(mod, params or {}))


def _cpu_target() -> tvm.target.Target:
    from ..targets import llvm_target

    return tvm.target.Target(llvm_target())


def plan(mod: tvm.IRModule, params=None, config: Optional[QConfig] = None):
    """Which ops would be quantized (and which kept fp32, and why)."""
    return find_ops(_bound(mod, params), config or current_qconfig())


def calibrate(mod: tvm.IRModule, params, calib_data: Iterable[Dict[str, np.ndarray]], *,
              model_name: str = "model", config: Optional[QConfig] = None,
              progress: Optional[Callable[[int], None]] = None) -> dict:
    """Run calibration and return the calibration table (see table.py)."""
    cfg = config or current_qconfig()
    bound = _bound(mod, params)
    ops = find_ops(bound, cfg)
    enabled = [op for op in ops if op.enabled]
    if cfg.calibrate_mode == "global_scale":
        stats = {}
        quants = {op.tensor: data_quant(op.tensor, cfg.global_scale, -1.0, cfg) for op in enabled}
    else:
        if calib_data is None:
            raise TableError(f"calibrate_mode {cfg.calibrate_mode} needs calibration data")
        def quantizer(name, st):
            return data_quant(name, threshold_of(st, cfg), st.min_value, cfg)

        # with bias correction a second pass measures E[Q(x)]; it quantizes (st.quant) on the way
        stats = collect_stats(bound, enabled, calib_data, cfg, _cpu_target(), progress,
                              quantizer if cfg.bias_correction else None)
        quants = {}
        for name, st in stats.items():
            quants[name] = st.quant or quantizer(name, st)
            if cfg.bias_correction:
                quants[name].mean, quants[name].mean_quantized = st.channel_means()
    return make_table(model_name, ops, quants, cfg)


def apply_table(mod: tvm.IRModule, params, table: dict, *, model_name: str = "model",
                config: Optional[QConfig] = None, table_path: str = "table",
                only: Optional[Iterable[str]] = None, fp32_layers: Optional[Iterable[str]] = None,
                switchable: bool = False) -> tvm.IRModule:
    """Quantize with a calibration table (no data needed).

    `only`: quantize just these tensors' ops (op names like "conv2d_3"), for sensitivity analysis.
    `fp32_layers`: keep these ops fp32; default: the ones an accuracy-target search recorded in the
    table (table.fallback_layers), so that a saved table rebuilds the model it was chosen for.
    `switchable`: main takes a second input, one float32 per quantized op (plan order): 1 runs that op
    int8, 0 runs it fp32; one build then measures any choice of fp32 layers (accuracy_target.py). It
    requantizes in float and is not partitioned, whatever `config` says.
    """
    cfg = config or current_qconfig()
    bound = _bound(mod, params)
    ops = find_ops(bound, cfg)
    if only is not None:
        keep = set(only)
        for op in ops:
            op.enabled = op.enabled and op.name in keep
    skip = set(fallback_layers(table) if fp32_layers is None else fp32_layers)
    unknown = sorted(skip - {op.name for op in ops})
    if unknown:
        raise TableError(f"{table_path}: fp32 layer '{unknown[0]}' is not a conv2d / dense of this model")
    for op in ops:
        if op.enabled and op.name in skip:
            op.enabled, op.reason = False, "accuracy_target"
    quants = quants_from_table(table, model_name, ops, table_path, cfg)
    if switchable:
        import dataclasses

        return realize(bound, ops, quants,
                       dataclasses.replace(cfg, requantize="float", partition_conversions="disabled"),
                       switchable=True)
    return realize(bound, ops, quants, cfg)


def quantize(mod: tvm.IRModule, params=None, calib_data: Optional[Iterable[Dict[str, np.ndarray]]] = None, *,
             model_name: str = "model", config: Optional[QConfig] = None,
             progress: Optional[Callable[[int], None]] = None) -> tvm.IRModule:
    """relay.quantize.quantize: calibrate on `calib_data` and return the int8 module (weights bound)."""
    cfg = config or current_qconfig()
    table = calibrate(mod, params, calib_data, model_name=model_name, config=cfg, progress=progress)
    return apply_table(mod, params, table, model_name=model_name, config=cfg)


__all__ = [
    "QConfig", "qconfig", "current_qconfig", "quantize", "calibrate", "apply_table", "plan", "plan_table",
    "kl_divergence_threshold", "percentile_threshold", "threshold_to_scale", "HistogramCollector",
    "get_calibrator", "CALIBRATORS", "load_table", "save_table", "check_table_path", "check_table_qconfig",
    "table_mismatch", "TableError", "QuantOp", "TensorQuant", "fallback_layers", "set_accuracy_target",
]

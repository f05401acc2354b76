"""Calibration table: per-tensor thresholds/scales, saved as JSON and re-applied without data.

Like TensorRT's calibration cache: versioned, tied to one model (its name and
the shapes of its quantized ops' weights), and carrying the qconfig it was made with.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

import numpy as np

from ..errors import HarnessError
from .annotate import QuantOp
from .qconfig import QConfig
from .realize import TensorQuant

TABLE_VERSION = 1


class TableError(HarnessError):
    pass


def make_table(model: str, ops: List[QuantOp], quants: Dict[str, TensorQuant], cfg: QConfig) -> dict:
    rows = []
    for op in ops:
        tq = quants.get(op.tensor)
        rows.append({
            "tensor": op.tensor, "op": op.kind, "weight_shape": list(op.weight_shape),
            "enabled": op.enabled,
            **({"threshold": tq.threshold, "scale": tq.scale, "dtype": tq.dtype} if tq else {}),
            **({"channel_mean": [float(v) for v in tq.mean],
                "channel_mean_quantized": [float(v) for v in tq.mean_quantized]}
               if tq is not None and tq.mean is not None else {}),
        })
    return {"version": TABLE_VERSION, "model": model, "qconfig": cfg.to_dict(), "tensors": rows}


def save_table(table: dict, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(table, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)  # nothing half-written
    return path


def load_table(path: str) -> dict:
    if not os.path.isfile(path):
        raise TableError(f"calibration table not found: {path}")
    try:
        with open(path) as f:
            table = json.load(f)
    except json.JSONDecodeError as e:
        raise TableError(f"{path}: not a calibration table (invalid JSON: {e})") from None
    if not isinstance(table, dict) or table.get("version") != TABLE_VERSION or "tensors" not in table:
        raise TableError(f"{path}: not a calibration table of version {TABLE_VERSION}")
    return table


def quants_from_table(table: dict, model: str, ops: List[QuantOp], path: str = "table",
                      cfg: Optional[QConfig] = None) -> Dict[str, TensorQuant]:
    """Check that `table` was made for this model and plan, and return its per-tensor quantization
    (with the channel means bias correction needs, when `cfg` asks for it)."""
    if table.get("model") != model:
        raise TableError(f"{path}: calibration table is for model '{table.get('model')}', not '{model}'")
    rows = {r["tensor"]: r for r in table["tensors"]}
    # global_scale calibrates without data: no channel means, nothing to correct
    needs_means = cfg is not None and cfg.bias_correction and \
        table.get("qconfig", {}).get("calibrate_mode") != "global_scale"
    quants = {}
    for op in ops:
        if not op.enabled:
            continue
        row = rows.get(op.tensor)
        if row is None or "threshold" not in row:
            raise TableError(f"{path}: no calibration for tensor '{op.tensor}' (made with another plan?)")
        if tuple(row["weight_shape"]) != tuple(op.weight_shape):
            raise TableError(
                f"{path}: tensor '{op.tensor}' has weight shape {tuple(row['weight_shape'])} in the table "
                f"but {tuple(op.weight_shape)} in the model: the table is from another model"
            )
        means = {}
        if needs_means:
            if "channel_mean" not in row:
                raise TableError(
                    f"{path}: tensor '{op.tensor}' has no channel means (the table was made with "
                    "bias_correction off): recalibrate, or set quantize.bias_correction: false")
            means = {"mean": np.asarray(row["channel_mean"], dtype=np.float64),
                     "mean_quantized": np.asarray(row["channel_mean_quantized"], dtype=np.float64)}
        quants[op.tensor] = TensorQuant(op.tensor, float(row["threshold"]), float(row["scale"]), row["dtype"],
                                        **means)
    return quants


# The accuracy-target search (harness.accuracy_target) records its choice in the table as one field of
# its own, "accuracy_target": {"fp32_layers": [op names], the target, what was reached, ...}, so that
# re-applying the table without data builds the same model. Tables without it keep every planned op int8.
ACCURACY_TARGET_FIELD = "accuracy_target"


def fallback_layers(table: dict) -> List[str]:
    """The ops (like "conv2d_47") an accuracy-target search chose to keep fp32; [] if none was made."""
    return list((table.get(ACCURACY_TARGET_FIELD) or {}).get("fp32_layers", []))


def set_accuracy_target(table: dict, result: dict) -> dict:
    """`table` with the search's result recorded (a new dict; the calibration rows are unchanged)."""
    return {**table, ACCURACY_TARGET_FIELD: result}

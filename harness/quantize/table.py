"""Calibration table: per-tensor thresholds/scales, saved as JSON and re-applied without data.

Like TensorRT's calibration cache: versioned, tied to one model (its name and
the shapes of its quantized ops' weights), and carrying the qconfig it was made with.
"""
from __future__ import annotations

import contextlib
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


def check_table_path(path: str, *, key: str = "--table", force: bool = False) -> str:
    """Before calibrating: `path` can take a calibration table (not a folder, in a writable folder),
    and what is there already is a calibration table (anything else is refused unless `force`)."""
    from ..record import check_output_file

    check_output_file(path, key, "calibration table file")
    if os.path.exists(path) and not force:
        try:
            load_table(path)
        except TableError:
            raise TableError(f"{key}: {path} exists and is not a calibration table; not overwriting it "
                             "(give another path, or --force to replace it)") from None
    return path


def save_table(table: dict, path: str) -> str:
    """Write `table` to `path` whole or not at all (a `.tmp` beside it, renamed; removed on failure)."""
    if os.path.isdir(path):
        raise TableError(f"{path}: is a folder; a calibration table is written to a file")
    tmp = path + ".tmp"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
        with open(tmp, "w") as f:
            json.dump(table, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)  # nothing half-written
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise TableError(f"cannot write the calibration table {path} ({e.strerror or e})") from None
    return path


# qconfig keys that decide what a table holds: which tensors are calibrated (the plan) and their
# thresholds, scales and storage types; keys used only where the mode or bias correction reads them
PLAN_KEYS = ("skip_conv_layers", "skip_dense_layer", "debug_enabled_ops")
_THRESHOLD_KEYS = ("calibrate_mode", "nbit_input", "dtype_input", "activation_dtype")


def table_mismatch(table: dict, cfg: QConfig) -> List[str]:
    """The qconfig keys in which `table` was made differently from `cfg` in a way that changes the
    plan or the thresholds (keys used only when the int8 module is built, such as weight_scale or
    requantize, are `cfg`'s to choose and are not listed), as "key: table X, config Y"."""
    made = {**QConfig().to_dict(), **table.get("qconfig", {})}  # a key missing from the table: its default
    want = cfg.to_dict()
    keys = list(PLAN_KEYS + _THRESHOLD_KEYS)
    if want["calibrate_mode"] == made["calibrate_mode"] == "global_scale":
        keys.append("global_scale")
    if want["calibrate_mode"] == made["calibrate_mode"] == "percentile":
        keys.append("percentile")
    if want["bias_correction"]:  # E[Q(x)] of the channel means depends on the rounding
        keys.append("rounding")
    return [f"{k}: table {made[k]!r}, config {want[k]!r}" for k in keys if made[k] != want[k]]


def check_table_qconfig(table: dict, cfg: QConfig, path: str = "table") -> None:
    """Refuse a table calibrated with a qconfig that would change this config's plan or thresholds."""
    differ = table_mismatch(table, cfg)
    if differ:
        raise TableError(f"{path}: calibration table made with another qconfig ({'; '.join(differ)}): "
                         "recalibrate (harness quantize CONFIG --table PATH --force) or set the config's "
                         "quantize keys as the table has them")


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

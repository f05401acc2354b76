"""Shared pieces of the calibrators: errors, input checks, the calibrator record, scales.

A *threshold* T is the largest magnitude a tensor keeps after quantization: values are clipped
to [-T, T] (or [0, T] for unsigned tensors) and mapped onto the integer grid. Every calibrator
in this package returns a threshold; :func:`threshold_to_scale` turns it into a scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ...errors import ConfigError, HarnessError


class CalibrationError(HarnessError, ValueError):
    """A threshold cannot be computed from the data given (empty, all zero, NaN/inf, ...)."""


class UnknownCalibratorError(ConfigError, ValueError):
    """``calibrate_mode`` names no registered calibrator."""


def as_values(values: Any, what: str = "calibration data", *, finite: bool = True) -> np.ndarray:
    """``values`` as a flat float32/float64 array, checked to be non-empty (and finite).

    float16 and integer inputs are widened to float32 / float64; float32 stays float32 so that
    histograms bin exactly as ``np.histogram`` does on the caller's own array.
    """
    x = np.asarray(values)
    if x.dtype.kind == "f":
        if x.dtype.itemsize < 4:
            x = x.astype(np.float32)
    elif x.dtype.kind in "iub":
        x = x.astype(np.float64)
    else:
        raise CalibrationError(f"{what}: expected a numeric array, got dtype {x.dtype}")
    x = x.ravel()
    if x.size == 0:
        raise CalibrationError(f"{what}: no values (empty array)")
    if finite:
        check_finite(x, what)
    return x


def check_finite(x: np.ndarray, what: str) -> tuple[float, float]:
    """Return (min, max) of a non-empty float array; raise if it holds NaN or +-inf."""
    lo, hi = x.min(), x.max()  # NaN propagates through min/max, inf shows up in them
    if not (np.isfinite(lo) and np.isfinite(hi)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise CalibrationError(f"{what}: {bad} of {x.size} values are NaN or infinite")
    return float(lo), float(hi)


def all_zero_error(n: int, what: str = "calibration data") -> CalibrationError:
    return CalibrationError(
        f"{what}: all {n} values are zero, so there is no range to calibrate "
        "(any positive threshold represents them exactly, e.g. 1.0)")


def qmax(nbit: int = 8, signed: bool = True) -> int:
    """Largest integer code: 127 for int8, 255 for uint8, 2**(nbit-1)-1 / 2**nbit-1 in general."""
    if not isinstance(nbit, (int, np.integer)) or nbit < 2:
        raise ValueError(f"nbit must be an integer >= 2, got {nbit!r}")
    return 2 ** (nbit - 1) - 1 if signed else 2 ** nbit - 1


def threshold_to_scale(threshold: float, nbit: int = 8, signed: bool = True, *,
                       convention: str = "max_int") -> float:
    """Scale (real value of one integer step) for a threshold.

    ``convention="max_int"`` (default, MXNet / TensorRT / ONNX Runtime): T maps onto the largest
    code, ``scale = T / 127`` for int8 and ``T / 255`` for uint8 (non-negative tensors).

    ``convention="relay"``: what TVM relay.quantize does in ``_set_params``: ``dom_scale = T /
    2**(nbit - sign)`` i.e. ``T / 128`` for int8 (with clipping to +-127, so values in
    [127/128 T, T] saturate), ``T / 256`` for uint8.
    """
    t = float(threshold)
    if not np.isfinite(t) or t <= 0:
        raise CalibrationError(f"threshold must be a positive finite number, got {threshold!r}")
    if convention == "max_int":
        return t / qmax(nbit, signed)
    if convention == "relay":
        qmax(nbit, signed)  # validates nbit
        return t / 2 ** (nbit - 1 if signed else nbit)
    raise ValueError(f"unknown scale convention {convention!r}; valid: max_int, relay")


@dataclass(frozen=True)
class Calibrator:
    """One registered calibration method: ``calibrator(data, **options) -> threshold``.

    ``data`` is an array of values, or a :class:`~.histogram.HistogramCollector` that streamed
    them (``needs_histogram`` says whether the method uses the histogram, not only max/min);
    ``global_scale`` ignores it (``needs_data`` is False).
    """

    name: str
    fn: Callable[..., float]
    needs_data: bool = True
    needs_histogram: bool = False
    summary: str = ""

    def __call__(self, data: Any = None, **options: Any) -> float:
        return self.fn(data, **options)

"""Max calibration: the threshold is max |x| (relay's ``max`` weight scale; MXNet's ``naive``
calibration uses the min/max the same way). :func:`power2_threshold` is relay's ``power2``
weight scale: max |x| rounded up to a power of two.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import CalibrationError, all_zero_error, as_values
from .histogram import HistogramCollector


def max_threshold(data: Any) -> float:
    """max |x| of an array, or the exact max |x| a :class:`HistogramCollector` has seen."""
    if isinstance(data, HistogramCollector):
        if data.count == 0:
            raise CalibrationError("max calibration: the collector has seen no data")
        t, n = data.max_abs, data.count
    else:
        x = as_values(data, "max calibration")
        t, n = float(np.max(np.abs(x))), x.size
    if t == 0.0:
        raise all_zero_error(n, "max calibration")
    return t


def power2_threshold(data: Any) -> float:
    """max |x| rounded up to a power of two (relay's ``weight_scale="power2"``).

    relay returns 1.0 for an all-zero tensor; this raises like the other calibrators.
    """
    t = max_threshold(data)
    return float(2.0 ** math.ceil(math.log2(t)))

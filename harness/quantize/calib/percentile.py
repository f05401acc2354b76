"""Percentile calibration: the threshold is a high percentile of |x| (relay's ``percentile`` mode).

relay's ``_find_scale_by_percentile(arr, percentile=0.99999)`` takes ``x = |arr|`` and returns the
order statistic ``k = int(x.size * percentile)`` (0-based, ascending), with no interpolation --
e.g. the 11th largest |x| of a million values. That is what the array path returns (``k`` is
capped at ``size - 1``, so ``percentile=1.0`` is the max).

From a :class:`HistogramCollector` the same order statistic is located in the folded |x|
histogram and the *upper edge* of its bin is returned (capped at the exact max |x|): never below
the exact value, and at most one bin width above it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import CalibrationError, all_zero_error, as_values
from .histogram import HistogramCollector

DEFAULT_PERCENTILE = 0.99999


def _rank(n: int, percentile: float) -> int:
    if not (0.0 < percentile <= 1.0):
        raise ValueError(f"percentile must be in (0, 1] (a fraction, 0.99999 = 99.999%), "
                         f"got {percentile!r}")
    return min(int(n * percentile), n - 1)


def _zero_percentile_error(percentile: float, n: int) -> CalibrationError:
    return CalibrationError(
        f"percentile calibration: the {percentile:g} percentile of |x| over {n} values is 0 "
        "(too many exact zeros); use calibrate_mode 'max' or 'kl_divergence' for this tensor")


def percentile_threshold(data: Any, percentile: float = DEFAULT_PERCENTILE) -> float:
    """The ``percentile`` (fraction) order statistic of |x|, relay's rule (see module doc)."""
    if isinstance(data, HistogramCollector):
        return _from_histogram(data, percentile)
    x = np.abs(as_values(data, "percentile calibration"))
    k = _rank(x.size, percentile)
    t = float(np.partition(x, k)[k])
    if t == 0.0:
        if not x.any():
            raise all_zero_error(x.size, "percentile calibration")
        raise _zero_percentile_error(percentile, x.size)
    return t


def _from_histogram(c: HistogramCollector, percentile: float) -> float:
    if c.count == 0:
        raise CalibrationError("percentile calibration: the collector has seen no data")
    if c.range == 0.0:
        raise all_zero_error(c.count, "percentile calibration")
    h = c.hist
    z = h.size // 2
    # folded bin k holds |x| in [(k - 1/2) w, (k + 1/2) w) (bin 0: [0, w/2));
    # its upper edge is edges[z + k + 1]
    folded = h[z:].copy()
    folded[1:] += h[:z][::-1]
    k = _rank(c.count, percentile)
    b = int(np.searchsorted(np.cumsum(folded), k, side="right"))  # first bin with cum > k
    # (if that is the centre bin, whose values may all be exact zeros, this is w/2: still a
    # valid upper bound, unlike the array path there is no way to tell)
    return min(float(c.edges[z + b + 1]), c.max_abs)

"""Calibration algorithms (pure numpy): each turns a tensor's values, or a streamed histogram of
them, into a threshold T (values are clipped to [-T, T] and quantized).

=================  =====================================================================
``kl_divergence``  relay/MXNet's entropy search on an 8001-bin histogram (kl_divergence.py)
``percentile``     relay's 0.99999 order statistic of |x| (percentile.py)
``max``            max |x| (max_abs.py)
``global_scale``   a fixed threshold, 8.0 by default, no data (global_scale.py)
=================  =====================================================================

``get_calibrator(name)(data, **options)`` returns the threshold; ``data`` is an array or a
:class:`HistogramCollector` fed batch by batch (histogram.py). :func:`threshold_to_scale` maps
a threshold to a scale.
"""

from __future__ import annotations

from typing import Any

from .base import (Calibrator, CalibrationError, UnknownCalibratorError, qmax,
                   threshold_to_scale)
from .global_scale import DEFAULT_GLOBAL_SCALE, global_scale
from .histogram import DEFAULT_NUM_BINS, HistogramCollector, histogram_of, rebin
from .kl_divergence import (kl_divergence_curve, kl_divergence_threshold,
                            kl_threshold_from_histogram)
from .max_abs import max_threshold, power2_threshold
from .percentile import DEFAULT_PERCENTILE, percentile_threshold

CALIBRATORS: dict[str, Calibrator] = {
    c.name: c for c in (
        Calibrator("global_scale", global_scale, needs_data=False,
                   summary="fixed threshold (default 8.0) for every tensor"),
        Calibrator("kl_divergence", kl_divergence_threshold, needs_histogram=True,
                   summary="minimise KL(p||q) over 8001-bin histogram thresholds"),
        Calibrator("max", max_threshold, summary="max |x|"),
        Calibrator("percentile", percentile_threshold, needs_histogram=True,
                   summary="the 0.99999 order statistic of |x|"),
    )
}


def get_calibrator(name: str) -> Calibrator:
    """The registered calibrator ``name``; an unknown name is an error listing the valid ones."""
    try:
        return CALIBRATORS[name]
    except (KeyError, TypeError):
        raise UnknownCalibratorError(
            f"unknown calibrate_mode {name!r}; valid: {', '.join(sorted(CALIBRATORS))}") from None


def calibrate(data: Any, mode: str = "kl_divergence", **options: Any) -> float:
    """Threshold of ``data`` (array or HistogramCollector) by calibrator ``mode``."""
    return get_calibrator(mode)(data, **options)


__all__ = [
    "CALIBRATORS", "Calibrator", "CalibrationError", "UnknownCalibratorError",
    "DEFAULT_GLOBAL_SCALE", "DEFAULT_NUM_BINS", "DEFAULT_PERCENTILE", "HistogramCollector",
    "calibrate", "get_calibrator", "global_scale", "histogram_of", "kl_divergence_curve",
    "kl_divergence_threshold", "kl_threshold_from_histogram", "max_threshold",
    "percentile_threshold", "power2_threshold", "qmax", "rebin", "threshold_to_scale",
]

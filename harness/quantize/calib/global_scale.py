"""Global-scale "calibration": one fixed threshold for every tensor, no data needed.

relay's ``calibrate_mode="global_scale"`` with ``global_scale=8.0`` (its default) gives every
activation the threshold 8.0 (relay then uses ``dom_scale = 8.0 / 128``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_GLOBAL_SCALE = 8.0


def global_scale(data: Any = None, scale: float = DEFAULT_GLOBAL_SCALE) -> float:
    """The fixed threshold ``scale`` (``data`` is ignored)."""
    t = float(scale)
    if not np.isfinite(t) or t <= 0:
        raise ValueError(f"global_scale must be a positive finite number, got {scale!r}")
    return t

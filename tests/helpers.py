"""Shared test helpers."""
import numpy as np


def rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |a - e| / max |e|: the relative error used for logits."""
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))

"""Shared test helpers."""
import numpy as np


def rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |a - e| / max |e|: the relative error used for logits."""
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


def calibrated_resnet18(side: int, seed: int, samples: int):
    """resnet18_v1 at a small `side` x `side` input: see :func:`calibrated_model`."""
    return calibrated_model("resnet18_v1", side, seed, samples)


def calibrated_model(name: str, side: int, seed: int, samples: int):
    """A registry model at a small `side` x `side` input (weights bound) and its calibration table
    (max thresholds, per-channel weights) from `samples` seeded normal inputs:
    (module, table, calibration inputs)."""
    from harness.build import bind_params
    from harness.config import ModelConfig
    from harness.frontends import load_model
    from harness.quantize import calibrate, qconfig

    model = load_model(ModelConfig(name=name, input_shape=[1, 3, side, side]))
    mod = bind_params(model.mod, model.params)
    rng = np.random.RandomState(seed)
    calib = [{"data": rng.normal(size=(1, 3, side, side)).astype("float32")} for _ in range(samples)]
    with qconfig(calibrate_mode="max", weight_scale="channel_max") as cfg:
        table = calibrate(mod, None, calib, config=cfg)
    return mod, table, calib

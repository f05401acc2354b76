"""Accuracy of the int8 model against fp32 (and against labels where the data has them)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from .errors import ConfigError


@dataclass
class EvalData:
    name: str
    inputs: np.ndarray  # (N, C, H, W)
    labels: Optional[np.ndarray] = None


def eval_data(cfg, spec, input_shape, num_classes: Optional[int] = None) -> EvalData:
    """The evaluation set an AccuracyConfig names, preprocessed for the model.

    ``images`` with class sub-folders is labeled (harness.data.labeled_images); num_classes, the
    width of the model's output, bounds the class indices its labels may have.
    """
    from . import data as hdata

    n = cfg.num_samples
    if cfg.dataset == "images" and hdata.is_labeled_folder(cfg.path):
        images = hdata.labeled_images(cfg.path, labels_file=getattr(cfg, "labels", None),
                                      synsets_file=getattr(cfg, "synsets", None), num_classes=num_classes,
                                      num_samples=n)
        x = hdata.load_labeled_images(images, input_shape[2:], spec.mean, spec.std)
        return EvalData(f"images {cfg.path} ({len(x)}, {len(images.classes)} classes)", x, images.labels)
    if cfg.dataset == "images" and (getattr(cfg, "labels", None) or getattr(cfg, "synsets", None)):
        raise ConfigError(f"accuracy.{'labels' if cfg.labels else 'synsets'}: {cfg.path} has no class "
                          "sub-folders to label (one sub-folder per class)")
    if cfg.dataset == "digits":
        from .models.digits import load_digits_split

        _, (x, y) = load_digits_split(seed=0)
        if tuple(input_shape[1:]) != tuple(x.shape[1:]):
            raise ConfigError(f"accuracy.dataset digits has inputs {x.shape[1:]}, the model wants {tuple(input_shape[1:])}")
        return EvalData("digits (held-out split)", x[:n] if n else x, y[:n] if n else y)
    if cfg.dataset == "photos":
        x = hdata.load_photos(input_shape[2], spec.mean, spec.std)
        return EvalData(f"scikit-image photos ({len(x[:n] if n else x)})", x[:n] if n else x)
    calib = hdata.CalibSpec(source="images" if cfg.dataset == "images" else "synthetic", path=cfg.path,
                            num_samples=n or 16, batch_size=n or 16, seed=123)
    x = hdata.calibration_arrays(calib, input_name="data", input_shape=tuple(input_shape), mean=spec.mean,
                                 std=spec.std, image_size=input_shape[2])
    return EvalData(f"{cfg.dataset} ({len(x)})", x)


def predict(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int) -> np.ndarray:
    """Logits for all of `x`, run `batch` at a time (the tail padded and trimmed)."""
    outs = []
    for s in range(0, len(x), batch):
        part = x[s:s + batch]
        keep = len(part)
        if keep < batch:
            part = np.concatenate([part, np.repeat(part[:1], batch - keep, axis=0)])
        outs.append(np.asarray(run(part))[:keep])
    return np.concatenate(outs)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


CONFIDENT_MARGIN = 0.05  # fp32 top-1 probability ahead of the runner-up by at least this much


def compare(fp32: np.ndarray, int8: np.ndarray, labels: Optional[np.ndarray] = None) -> Dict:
    """Agreement metrics of int8 logits with fp32 logits (per sample, then averaged).

    Besides plain top-1 agreement it reports agreement on the "confident" samples, where fp32's
    softmax top-1 leads the runner-up by CONFIDENT_MARGIN or more: a near-tie flips under any
    perturbation, so on unlabeled photos that number separates quantization damage from coin flips.
    """
    top1_f, top1_q = fp32.argmax(1), int8.argmax(1)
    k = min(5, fp32.shape[1])
    top5_f = np.argsort(-fp32, axis=1)[:, :k]
    top5_q = np.argsort(-int8, axis=1)[:, :k]
    overlap = [len(set(a) & set(b)) / k for a, b in zip(top5_f, top5_q)]
    cos = cosine(fp32, int8)
    out = {
        "samples": int(len(fp32)),
        "top1_agreement": float((top1_f == top1_q).mean()),
        "top5_overlap": float(np.mean(overlap)),
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
    }
    p = np.exp(fp32 - fp32.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top2 = np.sort(p, axis=1)[:, -2:]
    confident = (top2[:, 1] - top2[:, 0]) >= CONFIDENT_MARGIN
    out["confident_samples"] = int(confident.sum())
    out["top1_agreement_confident"] = float((top1_f == top1_q)[confident].mean()) if confident.any() else None
    if labels is not None:
        labels = np.asarray(labels).reshape(-1, 1)
        out["top1_fp32"] = float((top1_f == labels[:, 0]).mean())
        out["top1_int8"] = float((top1_q == labels[:, 0]).mean())
        out["top5_fp32"] = float((top5_f == labels).any(1).mean())
        out["top5_int8"] = float((top5_q == labels).any(1).mean())
    return out


def output_classes(mod) -> Optional[int]:
    """The width of a Relax module's (first) output, the number of classes; None if not static 2-D."""
    sinfo = mod["main"].ret_ty
    if hasattr(sinfo, "fields"):
        sinfo = sinfo.fields[0]
    shape = getattr(sinfo, "shape", None)
    try:
        dims = [int(d) for d in shape]
    except (TypeError, ValueError):
        return None
    return dims[-1] if len(dims) == 2 else None

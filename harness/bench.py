"""Latency measurement with the VM's `time_evaluator`, after a warm-up run."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Sequence

import numpy as np
import tvm
from tvm import relax


@dataclass
class LatencyStats:
    """One measurement: per-batch latency statistics in ms over `repeat` samples."""

    mean_ms: float
    median_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    images_per_s: float
    batch: int
    number: int
    repeat: int
    min_repeat_ms: int
    samples_ms: List[float]

    @property
    def ms_per_image(self) -> float:
        return self.mean_ms / self.batch

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ms_per_image"] = self.ms_per_image
        return d

    @classmethod
    def from_samples(cls, samples_s: Sequence[float], *, batch: int, number: int, repeat: int,
                     min_repeat_ms: int) -> "LatencyStats":
        ms = np.asarray(samples_s, dtype=np.float64) * 1e3
        mean = float(ms.mean())
        return cls(mean, float(np.median(ms)), float(ms.std()), float(ms.min()), float(ms.max()),
                   batch * 1e3 / mean, batch, number, repeat, min_repeat_ms, [float(x) for x in ms])


def make_vm(executable, dev) -> relax.VirtualMachine:
    return relax.VirtualMachine(executable, dev)


def run_once(vm, dev, inputs: Sequence[np.ndarray]):
    """Run `main` once; returns numpy output(s)."""
    args = [tvm.runtime.tensor(x, dev) for x in inputs]
    out = vm["main"](*args)
    return _to_numpy(out)


def _to_numpy(out):
    if hasattr(out, "numpy"):
        return out.numpy()
    return [_to_numpy(o) for o in out]


def time_vm(vm, dev, inputs: Sequence[np.ndarray], *, number: int = 10, repeat: int = 5,
            min_repeat_ms: int = 200, warmup: int = 1, batch: int = 1) -> LatencyStats:
    """`vm.time_evaluator("main", dev, number, repeat, min_repeat_ms)` after `warmup` plain runs."""
    args = [tvm.runtime.tensor(x, dev) for x in inputs]
    for _ in range(warmup):
        vm["main"](*args)
    dev.sync()
    timer = vm.time_evaluator("main", dev, number=number, repeat=repeat, min_repeat_ms=min_repeat_ms)
    result = timer(*args)
    return LatencyStats.from_samples(list(result.results), batch=batch, number=number, repeat=repeat,
                                     min_repeat_ms=min_repeat_ms)

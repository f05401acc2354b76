"""Latency measurement with the VM's `time_evaluator` (and the same rule for Python callables), after a warm-up run."""
from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np
import tvm  # the runtime is enough here (`harness bench-bundle`); tvm.relax is imported where needed

from .targets import default_cpu_threads


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
    rounds: int = 1  # alternating rounds the samples come from (:func:`time_in_rounds`)

    @property
    def ms_per_image(self) -> float:
        return self.mean_ms / self.batch

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ms_per_image"] = self.ms_per_image
        return d

    @classmethod
    def from_samples(cls, samples_s: Sequence[float], *, batch: int, number: int, repeat: int,
                     min_repeat_ms: int, rounds: int = 1) -> "LatencyStats":
        ms = np.asarray(samples_s, dtype=np.float64) * 1e3
        mean = float(ms.mean())
        return cls(mean, float(np.median(ms)), float(ms.std()), float(ms.min()), float(ms.max()),
                   batch * 1e3 / mean, batch, number, repeat, min_repeat_ms, [float(x) for x in ms], rounds)


#: seconds of rest before each measurement of an alternating round: the previous system's worker
#: threads (ONNX Runtime's and OpenVINO's spin a while after a run) go idle before the next is timed
SETTLE_S = 0.2


def time_in_rounds(measures: dict, rounds: int, *, settle_s: float = SETTLE_S,
                   sleep: Callable[[float], None] = time.sleep) -> dict:
    """{name: LatencyStats} of several systems timed in `rounds` alternating rounds.

    `measures` maps each name to ``measure(first_round: bool) -> LatencyStats`` (one measurement
    of `repeat` samples: the system's warm-up on the first round only). Each round measures every
    system once, in order, after `settle_s` of rest; a system's statistics are those of its
    samples from all rounds (``repeat`` is then repeat x rounds, ``number`` the last round's). A
    measure that returns None (its system failed) drops that system: it is missing from the result."""
    samples = {name: [] for name in measures}
    last = {}
    failed = set()
    for r in range(rounds):
        for name, measure in measures.items():
            if name in failed:
                continue
            if settle_s > 0:
                sleep(settle_s)
            stats = measure(r == 0)
            if stats is None:
                failed.add(name)
                last.pop(name, None)
                continue
            samples[name] += [v / 1e3 for v in stats.samples_ms]
            last[name] = stats
    return {name: LatencyStats.from_samples(samples[name], batch=s.batch, number=s.number,
                                            repeat=len(samples[name]), min_repeat_ms=s.min_repeat_ms,
                                            rounds=rounds)
            for name, s in last.items()}


#: TVM's runtime decides its CPU thread count once per process as half the logical CPUs on x86
#: ("ignore hyper-threading"): on a machine whose CPUs are all cores (a 2-vCPU cloud guest: 1 thread
#: per core) it runs every kernel on half of them while the peers use all. The harness sets it.
_CPU_THREADS: dict = {}  # OS thread -> threads its TVM thread pool was last set to


def use_cpu_threads(threads: Optional[int] = None) -> int:
    """Run this thread's TVM CPU kernels on `threads` threads (default: :func:`default_cpu_threads`),
    sharing the CPUs this process may use; returns the count. Set again only when it changes."""
    count = int(threads or default_cpu_threads())
    if count < 1:
        raise ValueError(f"CPU threads must be at least 1, got {threads!r}")
    key = threading.get_ident()
    if _CPU_THREADS.get(key) != count:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(default_cpu_threads())
        # mode -3 (kSpecifyThreadShareAllCore): `count` workers, none pinned, on these CPUs
        tvm.get_global_func("runtime.config_threadpool")(-3, count, [str(c) for c in cpus])
        _CPU_THREADS[key] = count
    return count


def make_vm(executable, dev, threads: Optional[int] = None) -> "relax.VirtualMachine":
    """A VM of `executable` on `dev`; on a CPU, its kernels run on `threads` threads
    (:func:`use_cpu_threads`; default: all cores)."""
    from tvm import relax  # pylint: disable=import-outside-toplevel

    if dev.dlpack_device_type() == 1:  # kDLCPU
        use_cpu_threads(threads)
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


#: TVM's `limit_zero_time_iterations`: give up growing `number` after this many 0-ns measurements.
_ZERO_TIME_LIMIT = 100


def time_callable(fn: Callable[[], object], *, number: int = 10, repeat: int = 5, min_repeat_ms: int = 200,
                  warmup: int = 1, batch: int = 1, sync: Optional[Callable[[], object]] = None,
                  clock: Callable[[], float] = time.perf_counter) -> LatencyStats:
    """Time a Python callable the way TVM's `time_evaluator` times a packed function.

    `warmup` plain calls; then `repeat` measurements, each of `number` back-to-back calls. While a
    measurement takes under `min_repeat_ms`, `number` grows (TVM's rule: to what the last measurement
    predicts reaches `min_repeat_ms`, at least x1.618) and the measurement is redone; the grown
    `number` carries over to the following repeats. A sample is elapsed / number seconds.
    `sync` (e.g. `torch.cuda.synchronize`) is called before each reading of the clock, so that
    asynchronous work is inside the measurement. `number` in the result is the one finally used.
    """
    for _ in range(warmup):
        fn()
    number = max(1, int(number))
    samples: List[float] = []
    for _ in range(repeat):
        duration_ms = 0.0
        zero_times = 0
        while True:
            if duration_ms > 0.0:
                number = int(max(min_repeat_ms / (duration_ms / number) + 1, number * 1.618))
            if sync is not None:
                sync()
            start = clock()
            for _ in range(number):
                fn()
            if sync is not None:
                sync()
            elapsed = clock() - start
            duration_ms = elapsed * 1e3
            if elapsed <= 0.0:
                zero_times += 1
            if duration_ms >= min_repeat_ms or zero_times >= _ZERO_TIME_LIMIT:
                break
        samples.append(elapsed / number)
    return LatencyStats.from_samples(samples, batch=batch, number=number, repeat=repeat,
                                     min_repeat_ms=min_repeat_ms)


def time_vm(vm, dev, inputs: Sequence[np.ndarray], *, number: int = 10, repeat: int = 5,
            min_repeat_ms: int = 200, warmup: int = 1, batch: int = 1) -> LatencyStats:
    """`vm.time_evaluator("main", dev, number, repeat, min_repeat_ms)` after `warmup` plain runs."""
    args = [tvm.runtime.tensor(x, dev) for x in inputs]
    return time_vm_args(vm, dev, args, number=number, repeat=repeat, min_repeat_ms=min_repeat_ms, warmup=warmup,
                        batch=batch)


def time_vm_args(vm, dev, args: Sequence, *, number: int = 10, repeat: int = 5, min_repeat_ms: int = 200,
                 warmup: int = 1, batch: int = 1, func: str = "main") -> LatencyStats:
    """:func:`time_vm` on arguments already on `dev` (tensors), e.g. the input and the weights of a
    library whose weights are parameters (`harness bench-bundle`)."""
    for _ in range(warmup):
        vm[func](*args)
    dev.sync()
    timer = vm.time_evaluator(func, dev, number=number, repeat=repeat, min_repeat_ms=min_repeat_ms)
    result = timer(*args)
    return LatencyStats.from_samples(list(result.results), batch=batch, number=number, repeat=repeat,
                                     min_repeat_ms=min_repeat_ms)


def alternate_vms(vms: dict, dev, inputs: Sequence[np.ndarray], *, rounds: int = 3, repeat: int = 5) -> dict:
    """{label: median ms} of the VMs ({label: vm}) timed in alternating rounds (one `time_vm` of each
    per round, number=1): what the benchmark scripts compare side by side on a noisy machine."""
    times = {k: [] for k in vms}
    for _ in range(rounds):
        for k, vm in vms.items():
            times[k].append(time_vm(vm, dev, inputs, number=1, repeat=repeat, min_repeat_ms=0).mean_ms)
    return {k: statistics.median(v) for k, v in times.items()}

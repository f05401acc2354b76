"""Calibrate: run the fp32 model on the user's data and collect per-tensor statistics.

A "probe" module returns the data inputs of the planned ops; it is compiled once
(per chunk of `calibrate_chunk_by` tensors) and run over every calibration batch,
feeding streaming histograms (bounded memory, see calib/histogram.py). The
thresholds then come from the configured calibrator.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import tvm
from tvm import relax

from ..build import compile_module
from ..errors import HarnessError
from .annotate import QuantOp, find_call
from .calib import HistogramCollector, get_calibrator
from .qconfig import QConfig
from .realize import TensorQuant, data_quant, fake_quantize


def _channel_sums(values: np.ndarray) -> np.ndarray:
    """Sums per channel (axis 1) of an (N, C, ...) array."""
    return values.sum(axis=tuple(i for i in range(values.ndim) if i != 1), dtype=np.float64)


@dataclass
class TensorStats:
    collector: Optional[HistogramCollector]
    min_value: float = np.inf
    max_value: float = -np.inf
    count: int = 0
    channel_sum: Optional[np.ndarray] = None  # per channel sums of x (bias correction)
    channel_sum_quantized: Optional[np.ndarray] = None  # ... of Q(x), from the second pass
    quant: Optional[TensorQuant] = None  # set by the second pass

    def update(self, values: np.ndarray) -> None:
        if self.collector is not None:
            self.collector.update(values)
        self.min_value = min(self.min_value, float(values.min()))
        self.max_value = max(self.max_value, float(values.max()))
        self.count += values.size
        sums = _channel_sums(values)
        self.channel_sum = sums if self.channel_sum is None else self.channel_sum + sums

    def update_quantized(self, values: np.ndarray) -> None:
        sums = _channel_sums(values)
        self.channel_sum_quantized = sums if self.channel_sum_quantized is None else self.channel_sum_quantized + sums

    def channel_means(self) -> tuple:
        """(E[x], E[Q(x)]) per channel."""
        per_channel = self.count / len(self.channel_sum)
        return self.channel_sum / per_channel, self.channel_sum_quantized / per_channel


def probe_module(mod: tvm.IRModule, ops: Sequence[QuantOp]) -> tvm.IRModule:
    """`mod` whose main returns the data inputs of `ops` (a tuple) instead of its output."""
    func = mod["main"]
    bindings = [b for block in func.body.blocks for b in block.bindings]
    data = [find_call(mod, op.var).args[0] for op in ops]
    bb = relax.BlockBuilder()
    with bb.function("main", params=list(func.params)):
        with bb.dataflow():
            for b in bindings:
                bb.emit_normalized(b)
            out = bb.emit_output(relax.Tuple(data))
        bb.emit_func_output(out)
    probe = bb.get()["main"]
    new = tvm.IRModule({gv: f for gv, f in mod.functions.items() if gv.name_hint != "main"})
    new["main"] = probe
    return new


def _check_batch(batch: Dict[str, np.ndarray], func: relax.Function, index: int) -> List[np.ndarray]:
    params = list(func.params)
    if not isinstance(batch, dict):
        raise HarnessError(f"calibration batch {index}: expected a dict of input name -> array, got "
                           f"{type(batch).__name__}")
    arrays = []
    for p in params:
        if p.name not in batch:
            raise HarnessError(f"calibration batch {index}: no input '{p.name}' (has: {', '.join(batch)})")
        x = np.asarray(batch[p.name])
        want_shape = [int(d) for d in p.ty.shape]
        want_dtype = str(p.ty.dtype)
        if list(x.shape[1:]) != want_shape[1:] or str(x.dtype) != want_dtype:
            raise HarnessError(
                f"calibration data has shape {tuple(x.shape)} and dtype {x.dtype}; the model input "
                f"'{p.name}' is {tuple(want_shape)} {want_dtype}"
            )
        arrays.append(x)
    return arrays


def collect_stats(mod: tvm.IRModule, ops: Sequence[QuantOp], calib_data: Iterable[Dict[str, np.ndarray]],
                  cfg: QConfig, target: tvm.target.Target,
                  progress: Optional[Callable[[int], None]] = None,
                  quantizer: Optional[Callable[[str, TensorStats], TensorQuant]] = None) -> Dict[str, TensorStats]:
    """Run the model over `calib_data` and return statistics per op tensor name.

    With `quantizer` (tensor name, its statistics -> how it is quantized) a second pass over the
    data measures the per-channel mean of each tensor as quantized (for bias correction); the
    quantization is kept in the statistics' `quant`."""
    needs_hist = get_calibrator(cfg.calibrate_mode).needs_histogram
    stats = {op.tensor: TensorStats(HistogramCollector() if needs_hist else None) for op in ops}
    if not ops:
        return stats
    func = mod["main"]
    model_batch = int(func.params[0].ty.shape[0])
    chunk = len(ops) if cfg.calibrate_chunk_by == -1 else cfg.calibrate_chunk_by
    batches = calib_data if isinstance(calib_data, list) else list(calib_data)
    if not batches:
        raise HarnessError("calibration data is empty: give at least one batch")
    dev = tvm.cpu(0)
    for start in range(0, len(ops), chunk):
        part = ops[start:start + chunk]
        ex = compile_module(probe_module(mod, part), target).executable  # (default CPU schedules)
        vm = relax.VirtualMachine(ex, dev)

        def each_output(use):
            for i, batch in enumerate(batches):
                arrays = _check_batch(batch, func, i)
                n = arrays[0].shape[0]
                for s in range(0, n, model_batch):
                    pieces = [a[s:s + model_batch] for a in arrays]
                    if pieces[0].shape[0] < model_batch:  # pad the tail with its own first rows
                        pad = model_batch - pieces[0].shape[0]
                        pieces = [np.concatenate([p, p[:1].repeat(pad, axis=0)]) for p in pieces]
                        keep = model_batch - pad
                    else:
                        keep = model_batch
                    outs = vm["main"](*[tvm.runtime.tensor(p, dev) for p in pieces])
                    for op, out in zip(part, outs):
                        use(op.tensor, out.numpy()[:keep])
                if progress is not None:
                    progress(1)

        each_output(lambda name, values: stats[name].update(values))
        if quantizer is not None:
            for op in part:
                stats[op.tensor].quant = quantizer(op.tensor, stats[op.tensor])
            each_output(lambda name, values: stats[name].update_quantized(
                fake_quantize(values, stats[name].quant, cfg)))
    return stats


def threshold_of(st: TensorStats, cfg: QConfig) -> float:
    """The calibrated threshold of one tensor from its statistics."""
    calibrator = get_calibrator(cfg.calibrate_mode)
    if cfg.calibrate_mode == "global_scale":
        return float(calibrator(None, scale=cfg.global_scale))
    if cfg.calibrate_mode == "percentile":
        return float(calibrator(st.collector, percentile=cfg.percentile))
    if cfg.calibrate_mode == "max":
        return max(abs(st.min_value), abs(st.max_value))
    # a tensor stored as uint8 has 255 positive levels, not 127: search with the uint8 rule
    unsigned = cfg.activation_dtype == "uint8" or (cfg.activation_dtype == "auto" and st.min_value >= 0)
    return float(calibrator(st.collector, signed=not unsigned))

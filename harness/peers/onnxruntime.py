"""ONNX Runtime peers on ``CPUExecutionProvider``: ``onnxruntime-fp32`` (the ONNX export as it is) and
``onnxruntime-int8`` (static QDQ quantization of the same export, entropy calibration, per-channel weights).

ONNX Runtime does not say which instruction set its kernels (MLAS) use, so these records carry none.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
import warnings
from typing import Sequence

import numpy as np

from . import PeerUnavailable, _Context, _onnx_fp32_skips, _Prepared


def _ort_session(path: str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _cpu_only(ctx: _Context, name: str) -> None:
    if ctx.device != "cpu":
        raise PeerUnavailable(f"{name} runs on CPU only (CPUExecutionProvider)")


def _runner(sess, input_name: str, x: np.ndarray, detail: dict) -> _Prepared:
    feed = {input_name: x}

    def run():
        return sess.run(None, feed)[0]

    return _Prepared(run, detail=detail)


def peer_onnxruntime_fp32(ctx: _Context, rec: dict) -> _Prepared:
    import onnxruntime as ort

    rec["software"] = f"onnxruntime {ort.__version__}"
    rec["threads"] = ctx.threads
    _cpu_only(ctx, "onnxruntime-fp32")
    path, input_name = ctx.onnx_export()
    return _runner(_ort_session(path, ctx.threads), input_name, ctx.x, {"export_s": ctx.export_s})


def peer_onnxruntime_int8(ctx: _Context, rec: dict) -> _Prepared:
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    rec["software"] = f"onnxruntime {ort.__version__}"
    rec["threads"] = ctx.threads
    _cpu_only(ctx, "onnxruntime-int8")

    class Reader(CalibrationDataReader):
        def __init__(self, name: str, chunks: Sequence[np.ndarray]):
            self._items = iter([{name: c} for c in chunks])

        def get_next(self):
            return next(self._items, None)

    src, input_name = ctx.onnx_export()
    with tempfile.TemporaryDirectory(prefix="harness-ort-") as tmp:
        pre = os.path.join(tmp, "fp32-pre.onnx")
        quant_pre_process(src, pre, skip_symbolic_shape=True)
        fp32_out = _ort_session(pre, ctx.threads).run(None, {input_name: ctx.x})[0]
        g32 = ctx.check_export(fp32_out, "ORT")
        chunks = ctx.calib_chunks(ctx.batch)
        skip = _onnx_fp32_skips(pre, ctx.fp32_dense)
        ctx.status(f"onnxruntime-int8: entropy calibration on {len(chunks) * ctx.batch} samples")
        t1 = time.perf_counter()
        qpath = os.path.join(tmp, "int8.onnx")
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # it prints progress
            warnings.simplefilter("ignore")
            quantize_static(pre, qpath, Reader(input_name, chunks), quant_format=QuantFormat.QDQ,
                            per_channel=True, calibrate_method=CalibrationMethod.Entropy, nodes_to_exclude=skip)
        calib_s = time.perf_counter() - t1
        sess = _ort_session(qpath, ctx.threads)
    return _runner(sess, input_name, ctx.x,
                   {"calibration": "entropy", "calib_samples": len(chunks) * ctx.batch, "fp32_nodes": skip,
                    "export_s": ctx.export_s, "calibration_s": round(calib_s, 3), "fp32_export_agreement": g32})

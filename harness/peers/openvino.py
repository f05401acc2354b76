"""OpenVINO peers on its CPU plugin: ``openvino-fp32`` and ``openvino-int8`` (quantized by NNCF).

Both read the ONNX export the ONNX Runtime peers use (same weights) and compile it with the latency
hint on all cores. fp32 sets ``INFERENCE_PRECISION_HINT: f32``: on CPUs with AMX or AVX-512 bf16 the
plugin otherwise runs bf16. int8 is ``nncf.quantize`` (its default min/max statistics) on the
calibration samples the TVM int8 build uses, with the first convolution and (where the TVM int8
build keeps them: ``quantize.skip_dense_layer``) the dense layers kept fp32 in the model like the
other int8 peers (the plugin runs those at its default inference
precision: bf16 on AMX CPUs, see ``detail.inference_precision``); OpenVINO picks the int8
instructions itself (AMX where present).

OpenVINO's runtime model names the kernel of every layer (``primitiveType``, e.g.
``brgconv_avx512_amx_I8``): the record's ``detail.kernels`` counts them for the convolution and
fully-connected layers and ``detail.isa`` lists the instruction sets those names carry (a kernel
such as ``gemm_mlas_f32`` names none: MLAS picks its own).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import time
from collections import Counter

import numpy as np

from . import INT8_SKIP_FIRST_CONV, PeerUnavailable, _Context, _Prepared

#: OpenVINO CPU layer types whose kernels the record lists.
_COMPUTE_LAYERS = ("Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution")
#: instruction-set words in the CPU plugin's kernel names (longest first).
_ISA_RE = re.compile(r"avx512_amx|avx2_vnni_2|avx2_vnni|avx512|avx2|amx|sse42|avx")


def _software(with_nncf: bool) -> str:
    import openvino as ov

    text = f"openvino {ov.__version__.split('-')[0]}"
    if with_nncf:
        import nncf

        text += f", nncf {nncf.__version__}"
    return text


def _compile(model, f32: bool, threads: int):
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if f32:
        config["INFERENCE_PRECISION_HINT"] = "f32"
    return ov.Core().compile_model(model, "CPU", config)


def runtime_kernels(compiled) -> dict:
    """What the compiled model runs: kernels of its compute layers, their ISA words, precision and threads."""
    kernels: Counter = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) in _COMPUTE_LAYERS:
            kernels[info["primitiveType"].astype(str)] += 1
    isa = sorted({m.group(0) for k in kernels for m in [_ISA_RE.search(k)] if m})
    return {"kernels": dict(kernels.most_common()), "isa": isa,
            "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
            "threads": int(compiled.get_property("INFERENCE_NUM_THREADS"))}


def _runner(compiled, x: np.ndarray, detail: dict) -> _Prepared:
    request = compiled.create_infer_request()
    feed = {0: x}

    def run():
        return request.infer(feed)

    return _Prepared(run, fetch=lambda out: np.array(out[0]), detail=detail)


def _cpu_only(ctx: _Context, name: str) -> None:
    if ctx.device != "cpu":
        raise PeerUnavailable(f"{name} runs on CPU only (OpenVINO's CPU plugin)")


def peer_openvino_fp32(ctx: _Context, rec: dict) -> _Prepared:
    import openvino as ov

    rec["software"] = _software(False)
    _cpu_only(ctx, "openvino-fp32")
    path, _ = ctx.onnx_export()
    compiled = _compile(ov.Core().read_model(path), f32=True, threads=ctx.threads)
    return _runner(compiled, ctx.x, {"export_s": ctx.export_s, **runtime_kernels(compiled)})


def _fp32_ignored(model, fp32_dense: bool) -> dict:
    """NNCF IgnoredScope arguments keeping the first convolution and (`fp32_dense`) the dense
    layers fp32."""
    names = []
    if INT8_SKIP_FIRST_CONV:
        convs = [op.get_friendly_name() for op in model.get_ordered_ops()
                 if op.get_type_name() in ("Convolution", "GroupConvolution")]
        names = convs[:1]
    return {"names": names, "types": ["MatMul"] if fp32_dense else []}


def peer_openvino_int8(ctx: _Context, rec: dict) -> _Prepared:
    import openvino as ov

    rec["software"] = _software(True)
    _cpu_only(ctx, "openvino-int8")
    os.environ.setdefault("NNCF_CI", "1")  # NNCF's telemetry stays off (nothing leaves this machine)
    import nncf

    path, _ = ctx.onnx_export()
    model = ov.Core().read_model(path)
    fp32_out = np.array(_compile(model, f32=True, threads=ctx.threads).create_infer_request().infer({0: ctx.x})[0])
    g32 = ctx.check_export(fp32_out, "OpenVINO")
    chunks = ctx.calib_chunks(ctx.batch)
    ignored = _fp32_ignored(model, ctx.fp32_dense)
    ctx.status(f"openvino-int8: NNCF calibration on {len(chunks) * ctx.batch} samples")
    t0 = time.perf_counter()
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.ERROR)
    try:
        # NNCF draws a progress bar on the terminal
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            qmodel = nncf.quantize(model, nncf.Dataset(chunks), subset_size=len(chunks) * ctx.batch,
                                   ignored_scope=nncf.IgnoredScope(**ignored, validate=False))
    finally:
        nncf_log.setLevel(level)
    calib_s = time.perf_counter() - t0
    compiled = _compile(qmodel, f32=False, threads=ctx.threads)
    detail = {"calibration": "nncf min/max (default preset)", "calib_samples": len(chunks) * ctx.batch,
              "fp32_nodes": ignored["names"] + [f"type {t}" for t in ignored["types"]],
              "export_s": ctx.export_s, "calibration_s": round(calib_s, 3), "fp32_export_agreement": g32,
              **runtime_kernels(compiled)}
    return _runner(compiled, ctx.x, detail)

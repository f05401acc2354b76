"""Peer baselines: the same model, weights and input run by other inference systems, timed like TVM.

    variants = run_peers(["mxnet-fp32", "torch-fp32"], model, x, reference, bench=cfg.bench,
                         calib_batches=batches)

Each peer first runs once on the benchmark input `x`; its output is compared with
TVM fp32's (`reference`) and only a peer that agrees is timed (:func:`harness.bench.time_callable`,
TVM's `time_evaluator` rule). Agreement criteria: fp32 peers by max relative error
(:data:`FP32_MAX_REL_ERR`), the fp16 and int8 peers by cosine (:data:`FP16_MIN_COSINE`,
:data:`INT8_MIN_COSINE`), since reduced precision legitimately moves the logits.

A peer that cannot run (package missing, op without an equivalent, failed export,
wrong device) or disagrees comes back with ``latency: None`` and a one-line
``note`` starting with ``n/a:``; it is never dropped.

Peers
-----
``mxnet-fp32``
    MXNet's engine on the model's Gluon block (registry MXNet models only).
``mxnet-int8``
    MXNet's oneDNN (MKLDNN) int8 path: ``quantize_net_v2`` with entropy calibration on `calib_batches`.
``onnxruntime-fp32`` / ``onnxruntime-int8`` (:mod:`harness.peers.onnxruntime`)
    ONNX Runtime on ``CPUExecutionProvider`` with an ONNX export of the same weights (via the torch
    module below; the file itself for ONNX-frontend models): fp32 as exported, int8 by static QDQ
    quantization (entropy calibration, per-channel weights). The int8 peer first checks its export
    in fp32 against TVM.
``openvino-fp32`` / ``openvino-int8`` (:mod:`harness.peers.openvino`)
    OpenVINO's CPU plugin on the same ONNX export, latency hint, all cores; fp32 with
    ``INFERENCE_PRECISION_HINT: f32`` (AMX CPUs otherwise run bf16), int8 quantized by NNCF
    (``nncf.quantize``) on `calib_batches`. Each records the kernels OpenVINO ran (its ISA).
``torch-fp32`` / ``torch-fp16``
    PyTorch on the same weights: the PyTorch frontend's module, or for MXNet models the Gluon
    block's symbol graph run op by op with torch (:mod:`harness.peers.mxnet_torch`). fp16 runs on
    CUDA only.

The ONNX export is made once per :func:`run_peers` call and shared by the ONNX Runtime and
OpenVINO peers. Where the library says which instruction set it ran, the record's ``detail`` has
it (``isa``): OpenVINO's runtime model names each kernel; MXNet's oneDNN reports the ISA it caps
itself at in its verbose log (read in a probe process with the same environment).

The int8 peers keep the first convolution in fp32, like TVM's default qconfig
(``skip_conv_layers=[0]``; see :data:`INT8_SKIP_FIRST_CONV`), and the dense layers where the TVM
int8 build does (``fp32_dense``: the run's ``quantize.skip_dense_layer``, by default true).
"""
from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .. import bench as hbench
from ..errors import HarnessError

log = logging.getLogger("harness")

PEERS = ("mxnet-fp32", "mxnet-int8", "onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-int8",
         "torch-fp32", "torch-fp16")

#: fp32 peers must match TVM fp32 within this max |a - b| / max |b|.
FP32_MAX_REL_ERR = 1e-3
#: the fp16 peer's minimum cosine similarity with TVM fp32 (worst sample of the batch).
FP16_MIN_COSINE = 0.999
#: the int8 peers' minimum cosine similarity with TVM fp32 (worst sample of the batch).
INT8_MIN_COSINE = 0.98
#: int8 peers keep the first convolution fp32 (TVM's default skip_conv_layers=[0]).
INT8_SKIP_FIRST_CONV = True
#: ONNX opset of the torch -> ONNX export.
ONNX_OPSET = 17

Status = Callable[[str], None]


class PeerUnavailable(HarnessError):
    """Why a peer cannot run here (becomes its n/a note)."""


@dataclass
class _Prepared:
    """A peer ready to run: `run()` is what is timed; `fetch(run())` is its output as numpy."""

    run: Callable[[], object]
    fetch: Callable[[object], np.ndarray] = np.asarray
    sync: Optional[Callable[[], object]] = None
    cleanup: Optional[Callable[[], None]] = None
    detail: dict = field(default_factory=dict)


class _Context:
    def __init__(self, model, x, reference, bench, calib_batches, device, status, threads=None, fp32_dense=True):
        from ..targets import default_cpu_threads  # pylint: disable=import-outside-toplevel

        self.model = model
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.reference = np.asarray(reference)
        self.bench = bench
        # NCHW arrays; {input name: array} batches (harness.data.calibration_batches) are accepted too
        self.calib_batches = [np.asarray(next(iter(b.values())) if isinstance(b, dict) else b, dtype=np.float32)
                              for b in (calib_batches or [])]
        self.device = device
        self.status = status
        self.threads = int(threads or default_cpu_threads())  # CPU threads of the peers that take a count
        self.fp32_dense = fp32_dense  # the int8 peers keep dense layers fp32 (quantize.skip_dense_layer)
        self._torch = None  # (module, None) or (None, exception)
        self._onnx = None  # ((path, input name), None) or (None, exception)
        self._tmp = None  # TemporaryDirectory holding the ONNX export, removed by close()
        self.export_s = None  # seconds the ONNX export took

    @property
    def batch(self) -> int:
        return int(self.x.shape[0])

    def gluon_block(self):
        block = (self.model.extra or {}).get("block")
        if block is None:
            raise PeerUnavailable(f"no MXNet definition of '{self.model.name}' (frontend {self.model.frontend}; "
                                  "only registry MXNet models carry their Gluon block)")
        return block

    def torch_module(self):
        """The model as an fp32 torch module in eval mode (built once, shared by the torch and ORT peers)."""
        if self._torch is None:
            try:
                self._torch = (_make_torch_module(self.model), None)
            except Exception as e:  # noqa: BLE001 - remembered and re-raised for each peer that needs it
                self._torch = (None, e)
        module, err = self._torch
        if err is not None:
            raise err
        return module

    def onnx_export(self) -> tuple:
        """(path, input name) of the fp32 ONNX model of the same weights, exported once (shared by the ONNX peers)."""
        if self._onnx is None:
            self.status("exporting ONNX")
            t0 = time.perf_counter()
            try:
                self._tmp = tempfile.TemporaryDirectory(prefix="harness-onnx-")
                self._onnx = (_export_onnx(self, self._tmp.name), None)
                self.export_s = round(time.perf_counter() - t0, 3)
            except Exception as e:  # noqa: BLE001 - remembered and re-raised for each peer that needs it
                self._onnx = (None, e)
        export, err = self._onnx
        if err is not None:
            raise err
        return export

    def check_export(self, fp32_out, runtime: str) -> dict:
        """An int8 peer quantizes the ONNX export: its agreement with TVM fp32 when run in `runtime`'s
        fp32 (recorded), or PeerUnavailable where it differs beyond the fp32 peers' bound."""
        g32 = agreement(fp32_out, self.reference)
        if not g32["max_rel_err"] <= FP32_MAX_REL_ERR:
            raise PeerUnavailable(f"the ONNX export differs from TVM fp32 in {runtime} fp32 ({_differs(g32)})")
        return g32

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def calib_samples(self) -> np.ndarray:
        if not self.calib_batches:
            raise PeerUnavailable("no calibration batches were given")
        return np.concatenate(self.calib_batches)

    def calib_chunks(self, size: int) -> List[np.ndarray]:
        """The calibration samples in batches of `size` (a partial last batch is dropped)."""
        data = self.calib_samples()
        n = (len(data) // size) * size
        if n == 0:
            raise PeerUnavailable(f"{len(data)} calibration samples, fewer than the batch size {size}")
        return [data[i:i + size] for i in range(0, n, size)]


def _make_torch_module(model):
    extra = model.extra or {}
    if extra.get("torch_module") is not None:
        return extra["torch_module"].eval()
    if extra.get("block") is not None:
        from .mxnet_torch import from_gluon

        return from_gluon(extra["block"])
    raise PeerUnavailable(f"no PyTorch or MXNet definition of '{model.name}' (frontend {model.frontend})")


# ----------------------------------------------------------------------------- agreement


def agreement(output: np.ndarray, reference: np.ndarray) -> Dict[str, float]:
    """cosine (worst sample), max_rel_err (max |a-b| / max |b|) and top1_agree (fraction of samples)."""
    out = np.asarray(output, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if out.size != ref.size:
        raise PeerUnavailable(f"output shape {tuple(out.shape)} differs from TVM fp32's {tuple(ref.shape)}")
    n = ref.shape[0] if ref.ndim > 1 else 1
    a, b = out.reshape(n, -1), ref.reshape(n, -1)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    err = np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)
    return {"cosine": float(cos.min()), "max_rel_err": float(err),
            "top1_agree": float((a.argmax(1) == b.argmax(1)).mean())}


def _criterion(name: str):
    """(passes(agreement) -> bool, what it needs, in words) for peer `name`."""
    if name.endswith("fp32"):
        return lambda g: g["max_rel_err"] <= FP32_MAX_REL_ERR, f"fp32 peers need max rel err <= {FP32_MAX_REL_ERR:g}"
    if name.endswith("fp16"):
        return lambda g: g["cosine"] >= FP16_MIN_COSINE, f"fp16 needs cosine >= {FP16_MIN_COSINE:g}"
    return lambda g: g["cosine"] >= INT8_MIN_COSINE, f"int8 needs cosine >= {INT8_MIN_COSINE:g}"


def _differs(g: Dict[str, float]) -> str:
    return f"cosine {g['cosine']:.4f}, max rel err {g['max_rel_err']:.2e}"


# ----------------------------------------------------------------------------- MXNet


def _mxnet_symbol_block(block):
    """A hybridized SymbolBlock of `block`'s graph sharing its weights; `block` itself is left as it is.

    (On resnet50_v1 this ran faster than the registry block object itself; `static_alloc` gained
    nothing and breaks oneDNN int8 graphs, so plain `hybridize()`.)
    """
    import mxnet as mx

    data = mx.sym.var("data")
    sym = block(data)
    with warnings.catch_warnings():  # "Cannot decide type for the following arguments": data is float32
        warnings.simplefilter("ignore", UserWarning)
        net = mx.gluon.SymbolBlock(sym, data, params=block.collect_params())
    net.hybridize()
    return net, sym


_ONEDNN_PROBE = """
import mxnet as mx
x = mx.nd.ones((1, 8, 8, 8))
mx.nd.Convolution(x, mx.nd.ones((8, 8, 3, 3)), kernel=(3, 3), num_filter=8, no_bias=True).wait_to_read()
"""
_onednn_isa_cache: Optional[dict] = None


def mxnet_onednn_isa() -> dict:
    """The instruction set MXNet's oneDNN caps itself at here, as its verbose log says it.

    oneDNN reads ``DNNL_VERBOSE`` once, when it first runs, and MXNet exposes no call to turn it on,
    so one small convolution runs in a probe process with this process's environment (same CPU, same
    ``DNNL_MAX_CPU_ISA``); once per process. ``{"isa": ..., "onednn": ..., "DNNL_MAX_CPU_ISA": ...}``.
    """
    global _onednn_isa_cache
    if _onednn_isa_cache is None:
        env = dict(os.environ, DNNL_VERBOSE="1", MKLDNN_VERBOSE="1")
        info = {"isa": None, "onednn": None, "DNNL_MAX_CPU_ISA": os.environ.get("DNNL_MAX_CPU_ISA")}
        try:
            out = subprocess.run([sys.executable, "-c", _ONEDNN_PROBE], env=env, capture_output=True, text=True,
                                 timeout=120).stdout
        except (OSError, subprocess.SubprocessError) as e:
            out = ""
            info["isa"] = f"not reported (probe failed: {type(e).__name__})"
        for line in out.splitlines():
            if line.startswith("dnnl_verbose,info,cpu,isa:"):
                info["isa"] = line.split("isa:", 1)[1].strip()
            elif line.startswith("dnnl_verbose,info,oneDNN "):
                info["onednn"] = line.split("oneDNN ", 1)[1].split()[0]
        if info["isa"] is None:
            info["isa"] = "not reported (no oneDNN verbose output)"
        _onednn_isa_cache = info
    return dict(_onednn_isa_cache)


def _mxnet_cpu_only(ctx, what: str) -> None:
    if ctx.device != "cpu":
        raise PeerUnavailable(f"{what} runs on CPU only (device {ctx.device} asked for)")


def _mxnet_runner(net, x) -> _Prepared:
    import mxnet as mx

    data = mx.nd.array(x, ctx=mx.cpu())

    def run():
        return net(data).asnumpy()  # asnumpy waits for MXNet's asynchronous engine

    return _Prepared(run)


def _peer_mxnet_fp32(ctx: _Context, rec: dict) -> _Prepared:
    import mxnet as mx

    rec["software"] = f"mxnet {mx.__version__}"
    _mxnet_cpu_only(ctx, "the mxnet-fp32 peer (pip mxnet is a CPU build)")
    net, _ = _mxnet_symbol_block(ctx.gluon_block())
    prepared = _mxnet_runner(net, ctx.x)
    prepared.detail = mxnet_onednn_isa()
    return prepared


def _peer_mxnet_int8(ctx: _Context, rec: dict) -> _Prepared:
    import json

    import mxnet as mx
    from mxnet.contrib.quantization import quantize_net_v2

    rec["software"] = f"mxnet {mx.__version__}"
    _mxnet_cpu_only(ctx, "MXNet's oneDNN int8 path")
    if not mx.runtime.Features().is_enabled("MKLDNN"):
        raise PeerUnavailable("this MXNet build has no oneDNN (MKLDNN), so no int8 CPU kernels")
    block = ctx.gluon_block()
    net, sym = _mxnet_symbol_block(block)
    nodes = json.loads(sym.tojson())["nodes"]
    exclude = []
    convs = [n["name"] for n in nodes if n["op"] == "Convolution"]
    if INT8_SKIP_FIRST_CONV and convs:
        exclude.append(convs[0])
    if ctx.fp32_dense:
        exclude += [n["name"] for n in nodes if n["op"] == "FullyConnected"]
    calib = ctx.calib_samples()
    size = min(len(ctx.calib_batches[0]), len(calib))  # calibrate in the batches given
    data_iter = mx.io.NDArrayIter(data={"data": calib}, batch_size=size, last_batch_handle="discard")
    ctx.status(f"mxnet-int8: entropy calibration on {len(calib)} samples")
    qnet = quantize_net_v2(net, quantized_dtype="auto", quantize_mode="full",
                           exclude_layers=exclude,
                           calib_data=data_iter, calib_mode="entropy", ctx=mx.cpu())
    prepared = _mxnet_runner(qnet, ctx.x)
    prepared.detail = {"calibration": "entropy", "calib_samples": int(len(calib) // size * size),
                       "fp32_layers": exclude, **mxnet_onednn_isa()}
    return prepared


# ----------------------------------------------------------------------------- PyTorch


def _peer_torch(ctx: _Context, rec: dict, half: bool) -> _Prepared:
    import torch

    rec["software"] = f"torch {torch.__version__}"
    if half and ctx.device != "cuda":
        raise PeerUnavailable("fp16 peer runs on GPU only")
    if ctx.device == "cuda":
        if not torch.cuda.is_available():
            raise PeerUnavailable(f"torch {torch.__version__} sees no CUDA GPU")
        rec["target"] = f"cuda:{torch.cuda.get_device_name(0)}"
    module = ctx.torch_module()
    if ctx.device == "cpu":
        tx = torch.from_numpy(ctx.x)

        def run():
            with torch.inference_mode():
                return module(tx)

        return _Prepared(run, fetch=lambda out: out.numpy())

    dev = torch.device("cuda")
    dtype = torch.float16 if half else torch.float32
    m = copy.deepcopy(module).to(dev, dtype=dtype, memory_format=torch.channels_last).eval()
    tx = torch.from_numpy(ctx.x).to(dev, dtype=dtype).contiguous(memory_format=torch.channels_last)
    flags = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.benchmark = True
    # fp32 means fp32 (TVM's fp32 kernels do not use TF32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

    def restore():
        (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
         torch.backends.cuda.matmul.allow_tf32) = flags

    def run():
        with torch.inference_mode():
            return m(tx)

    return _Prepared(run, fetch=lambda out: out.float().cpu().numpy(), sync=torch.cuda.synchronize,
                     cleanup=restore)


# ----------------------------------------------------------------------------- ONNX export (ONNX Runtime, OpenVINO)


def _export_onnx(ctx: _Context, tmp: str) -> tuple:
    """(path, input name) of an fp32 ONNX model of the same weights (use :meth:`_Context.onnx_export`)."""
    model = ctx.model
    if model.frontend == "onnx" and model.source and os.path.isfile(model.source):
        return model.source, model.input_name
    import torch

    module = ctx.torch_module()
    path = os.path.join(tmp, "fp32.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(module, (torch.from_numpy(ctx.x),), path, dynamo=False, opset_version=ONNX_OPSET,
                              input_names=["data"], output_names=["output"], do_constant_folding=True)
    return path, "data"


def _onnx_fp32_skips(path: str, fp32_dense: bool) -> List[str]:
    """Node names the int8 peers keep fp32: the first Conv and (`fp32_dense`) the dense layers
    (Gemm / MatMul)."""
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    skip = []
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    if INT8_SKIP_FIRST_CONV and convs:
        skip.append(convs[0])
    if fp32_dense:
        skip += [n.name for n in graph.node if n.op_type in ("Gemm", "MatMul")]
    return [s for s in skip if s]


# ----------------------------------------------------------------------------- driver

from .onnxruntime import peer_onnxruntime_fp32, peer_onnxruntime_int8  # noqa: E402 - they use the helpers above
from .openvino import peer_openvino_fp32, peer_openvino_int8  # noqa: E402

_PEER_FUNCS = {
    "mxnet-fp32": _peer_mxnet_fp32,
    "mxnet-int8": _peer_mxnet_int8,
    "onnxruntime-fp32": peer_onnxruntime_fp32,
    "onnxruntime-int8": peer_onnxruntime_int8,
    "openvino-fp32": peer_openvino_fp32,
    "openvino-int8": peer_openvino_int8,
    "torch-fp32": lambda ctx, rec: _peer_torch(ctx, rec, half=False),
    "torch-fp16": lambda ctx, rec: _peer_torch(ctx, rec, half=True),
}


def _reason(e: BaseException) -> str:
    """One line saying why a peer failed."""
    if isinstance(e, ModuleNotFoundError) and e.name:
        return f"{e.name.split('.')[0]} is not installed"
    text = str(e) if isinstance(e, HarnessError) else f"{type(e).__name__}: {e}"
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    line = lines[0]
    if "Traceback" in line and len(lines) > 1:  # MXNetError carries a C++ backtrace: its last line says it
        line = f"{type(e).__name__}: {lines[-1]}"
    return line if len(line) <= 300 else line[:297] + "..."


def _cleanup(prepared: Optional[_Prepared]) -> None:
    if prepared is not None and prepared.cleanup is not None:
        prepared.cleanup()


def _prepare_peer(name: str, ctx: _Context) -> tuple:
    """(record, prepared): the peer set up, run once and checked against TVM fp32's output;
    prepared is None where the peer is n/a (the record's note says why; it is cleaned up then)."""
    rec = {"variant": name, "target": "cpu" if ctx.device == "cpu" else "cuda", "software": "",
           "latency": None, "note": ""}
    ctx.status(f"{name}: preparing")
    t0 = time.perf_counter()
    prepared = None
    try:
        prepared = _PEER_FUNCS[name](ctx, rec)
        rec["setup_s"] = round(time.perf_counter() - t0, 3)
        if prepared.detail:
            rec["detail"] = prepared.detail
        out = prepared.fetch(prepared.run())
        rec["agreement"] = agreement(out, ctx.reference)
        passes, needs = _criterion(name)
        if not passes(rec["agreement"]):
            rec["note"] = f"n/a: output differs from TVM fp32 ({_differs(rec['agreement'])}; {needs})"
            _cleanup(prepared)
            return rec, None
        return rec, prepared
    except Exception as e:  # noqa: BLE001 - any failure of a peer makes it n/a, never the run
        log.debug("peer %s failed", name, exc_info=True)
        rec["note"] = f"n/a: {_reason(e)}"
        rec.setdefault("setup_s", round(time.perf_counter() - t0, 3))
        _cleanup(prepared)
        return rec, None


def _measure(rec: dict, prepared: _Prepared, ctx: _Context, first: bool = True) -> Optional[hbench.LatencyStats]:
    """One measurement of a prepared peer with the run's bench settings (its warm-up on the first);
    None where it fails (the peer is then n/a: the record's note says why)."""
    b = ctx.bench
    try:
        return hbench.time_callable(prepared.run, number=b.number, repeat=b.repeat, min_repeat_ms=b.min_repeat_ms,
                                    warmup=b.warmup if first else 0, batch=ctx.batch, sync=prepared.sync)
    except Exception as e:  # noqa: BLE001 - any failure of a peer makes it n/a, never the run
        log.debug("peer %s failed", rec["variant"], exc_info=True)
        rec["note"] = f"n/a: {_reason(e)}"
        return None


def run_peer(name: str, ctx: _Context) -> dict:
    rec, prepared = _prepare_peer(name, ctx)
    if prepared is None:
        return rec
    try:
        b = ctx.bench
        ctx.status(f"timing {name} (number={b.number}, repeat={b.repeat}, min_repeat_ms={b.min_repeat_ms})")
        stats = _measure(rec, prepared, ctx)
        if stats is not None:
            rec["latency"] = stats.to_dict()
    finally:
        _cleanup(prepared)
    return rec


def _check_names(names: Sequence[str], device: str) -> None:
    for name in names:
        if name not in _PEER_FUNCS:
            raise HarnessError(f"unknown peer '{name}'; valid: {', '.join(PEERS)}")
    if device not in ("cpu", "cuda"):
        raise HarnessError(f"peers: unknown device '{device}'; valid: cpu, cuda")


class PeerSession:
    """Peers set up and checked, all kept ready, to be timed in rounds beside TVM's variants
    (``bench.rounds``; :func:`harness.bench.time_in_rounds`): ``records`` (one per name, in order;
    n/a ones carry the reason), ``measures()`` for the ones that agreed, ``close()`` when done.
    Same arguments as :func:`run_peers`."""

    def __init__(self, names: Sequence[str], model, x: np.ndarray, reference: np.ndarray, *, bench,
                 calib_batches, device: str = "cpu", status: Status = lambda msg: None,
                 threads: Optional[int] = None, fp32_dense: bool = True):
        names = list(names)
        _check_names(names, device)
        self.ctx = _Context(model, x, reference, bench, calib_batches, device, status, threads, fp32_dense)
        self.records: List[dict] = []
        self._prepared: Dict[str, tuple] = {}  # name -> (record, prepared)
        try:
            for name in names:
                rec, prepared = _prepare_peer(name, self.ctx)
                self.records.append(rec)
                if prepared is not None:
                    self._prepared[name] = (rec, prepared)
        except BaseException:
            self.close()
            raise

    def measures(self) -> Dict[str, Callable[[bool], Optional[hbench.LatencyStats]]]:
        """{name: measure(first_round)} of the peers that agreed; a measure that fails makes its
        peer n/a (the record's note) and returns None."""
        return {name: (lambda first, rec=rec, prepared=prepared: _measure(rec, prepared, self.ctx, first))
                for name, (rec, prepared) in self._prepared.items()}

    def close(self) -> None:
        for _, prepared in self._prepared.values():
            _cleanup(prepared)
        self._prepared = {}
        self.ctx.close()


def run_peers(names: Sequence[str], model, x: np.ndarray, reference: np.ndarray, *, bench, calib_batches,
              device: str = "cpu", status: Status = lambda msg: None, threads: Optional[int] = None,
              fp32_dense: bool = True) -> List[dict]:
    """Run, check against `reference` (TVM fp32 on `x`) and time each peer; one variant dict per name, in order.

    `bench` is a BenchConfig (number, repeat, min_repeat_ms, warmup); `calib_batches` are the NCHW
    float32 arrays the int8 peers calibrate on; `device` is "cpu" or "cuda"; `threads`: the CPU
    threads of ONNX Runtime and OpenVINO (default: all cores, as TVM's); `fp32_dense`: the int8
    peers keep the dense layers fp32 (as TVM int8 does with ``quantize.skip_dense_layer``).
    """
    names = list(names)
    _check_names(names, device)
    ctx = _Context(model, x, reference, bench, calib_batches, device, status, threads, fp32_dense)
    try:
        return [run_peer(name, ctx) for name in names]
    finally:
        ctx.close()

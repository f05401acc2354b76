"""Peer baselines (harness.peers): agreement with TVM fp32 first, then timing; n/a with a reason otherwise."""
import os
import sys

import mxnet as mx
import numpy as np
import pytest
import torch
from mxnet import gluon
from mxnet.gluon import nn

from harness import bench, build
from harness.bench import time_callable
from harness.config import BenchConfig, ModelConfig, TargetConfig
from harness.errors import HarnessError, UnsupportedOpError
from harness.frontends import LoadedModel, load_model
from harness.frontends.mxnet import from_mxnet
from harness.models import _randomize_batchnorm, input_data
from harness.peers import (FP32_MAX_REL_ERR, INT8_MIN_COSINE, PEERS, agreement, run_peers)
from harness.peers.mxnet_torch import MXNetGraphModule, from_gluon, gluon_graph
from tests.helpers import rel_err

# one run per measurement: these tests check logic, not speed
QUICK = BenchConfig(number=1, repeat=2, min_repeat_ms=0, warmup=1)
CPU_PEERS = ("mxnet-fp32", "mxnet-int8", "onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-int8",
             "torch-fp32")


def _host_isa() -> str:
    """The widest ISA word OpenVINO's kernel names should carry on this CPU.

    From the kernel's CPU flags, not LLVM's host CPU name (LLVM calls this AMX Xeon "rocketlake").
    """
    with open("/proc/cpuinfo") as f:
        flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    for flag, word in (("amx_int8", "avx512_amx"), ("avx512bw", "avx512"), ("avx2", "avx2")):
        if flag in flags:
            return word
    return "sse42"


def _tvm_fp32(mod, params, x):
    target = build.resolve_target(TargetConfig(kind="llvm"))
    ex = build.compile_module(build.bind_params(mod, params), target).executable
    dev = build.device_for(target)
    out = bench.run_once(bench.make_vm(ex, dev), dev, [x])
    return out if isinstance(out, np.ndarray) else out[0]


@pytest.fixture(scope="module")
def resnet18():
    """resnet18_v1 at 64x64, its seeded input, TVM fp32's output, and 32 calibration samples.

    (At 32x32 mxnet-int8 reaches cosine 0.984 only, too close to INT8_MIN_COSINE; 0.996 at 64x64.)
    """
    shape = [1, 3, 64, 64]
    model = load_model(ModelConfig(name="resnet18_v1", input_shape=shape))
    x = input_data(shape, seed=0)
    calib = [input_data([8, 3, 64, 64], seed=100 + i) for i in range(4)]
    return model, x, _tvm_fp32(model.mod, model.params, x), calib


@pytest.fixture(scope="module")
def digits():
    """The trained digits CNN (1x1x8x8), a test digit, TVM fp32's output, and real digits to calibrate on."""
    from harness.models.digits import load_digits_split

    model = load_model(ModelConfig(name="digits_cnn"))
    (x_tr, _), (x_te, _) = load_digits_split(seed=0)
    x = np.ascontiguousarray(x_te[:1], dtype=np.float32)
    calib = [np.ascontiguousarray(x_tr[i:i + 8], dtype=np.float32) for i in range(0, 32, 8)]
    return model, x, _tvm_fp32(model.mod, model.params, x), calib


def _check_timed(rec, name):
    assert rec["variant"] == name
    assert rec["note"] == "", rec["note"]
    assert rec["target"] == "cpu"
    lat = rec["latency"]
    assert lat is not None and lat["mean_ms"] > 0 and lat["repeat"] == QUICK.repeat and len(lat["samples_ms"]) == 2
    g = rec["agreement"]
    if name.endswith("fp32"):
        assert g["max_rel_err"] <= FP32_MAX_REL_ERR
    else:
        assert g["cosine"] >= INT8_MIN_COSINE
    assert g["top1_agree"] == 1.0


@pytest.mark.parametrize("fixture", ["resnet18", "digits"])
def test_cpu_peers_agree_and_are_timed(fixture, request):
    model, x, ref, calib = request.getfixturevalue(fixture)
    recs = run_peers(PEERS, model, x, ref, bench=QUICK, calib_batches=calib)
    assert [r["variant"] for r in recs] == list(PEERS)
    by_name = {r["variant"]: r for r in recs}
    for name in CPU_PEERS:
        _check_timed(by_name[name], name)
    assert by_name["mxnet-fp32"]["software"] == f"mxnet {mx.__version__}"
    assert by_name["torch-fp32"]["software"] == f"torch {torch.__version__}"
    assert by_name["onnxruntime-int8"]["software"].startswith("onnxruntime ")
    assert by_name["onnxruntime-fp32"]["software"] == by_name["onnxruntime-int8"]["software"]
    # the ONNX export was checked in fp32 before quantizing (ONNX Runtime and OpenVINO read the same one)
    for name in ("onnxruntime-int8", "openvino-int8"):
        assert by_name[name]["detail"]["fp32_export_agreement"]["max_rel_err"] <= FP32_MAX_REL_ERR
    assert by_name["openvino-fp32"]["software"].startswith("openvino 20")
    assert by_name["openvino-int8"]["software"].startswith(by_name["openvino-fp32"]["software"] + ", nncf ")
    # OpenVINO says which kernels it ran: fp32 really f32 (not bf16), int8 convs on int8 kernels, ISA named
    ov32, ov8 = by_name["openvino-fp32"]["detail"], by_name["openvino-int8"]["detail"]
    assert ov32["inference_precision"] == "f32" and ov32["threads"] == os.cpu_count()
    assert by_name["onnxruntime-fp32"]["threads"] == by_name["onnxruntime-int8"]["threads"] == os.cpu_count()
    assert all(k.endswith("_f32") for k in ov32["kernels"]), ov32["kernels"]
    n_convs, n_dense = {"resnet18": (20, 1), "digits": (2, 2)}[fixture]
    assert sum(ov32["kernels"].values()) == n_convs + n_dense
    int8_kernels = sum(n for k, n in ov8["kernels"].items() if k.lower().endswith("_i8"))
    assert int8_kernels == n_convs - 1, ov8["kernels"]  # all but the first conv (kept fp32 like TVM's default)
    isa = _host_isa()
    assert isa in ov8["isa"], (isa, ov8)
    assert isa.replace("_amx", "") in ov32["isa"], (isa, ov32)
    # MXNet's oneDNN reports the ISA it caps itself at (2.4 stops below AMX unless DNNL_MAX_CPU_ISA says)
    for name in ("mxnet-fp32", "mxnet-int8"):
        d = by_name[name]["detail"]
        assert d["onednn"] == "v2.4.4" and d["isa"].startswith("Intel "), d
        if d["DNNL_MAX_CPU_ISA"] is None:
            assert "AMX" not in d["isa"], d
    # like TVM's default qconfig, the int8 peers keep the first conv and the dense layer fp32
    fp32_layers = by_name["mxnet-int8"]["detail"]["fp32_layers"]
    assert fp32_layers[0].endswith("conv0_fwd") and fp32_layers[1:] and all("dense" in n for n in fp32_layers[1:])
    fp16 = by_name["torch-fp16"]
    assert fp16["latency"] is None and fp16["note"] == "n/a: fp16 peer runs on GPU only"


def test_int8_peers_quantize_dense_layers_where_tvm_does(digits):
    """With ``quantize.skip_dense_layer: false`` (``fp32_dense=False``) the int8 peers quantize the
    dense layers too, as the TVM int8 build then does: only the first conv stays fp32 (the digits
    CNN: 2 convs, 2 dense layers), and they still agree with TVM fp32."""
    model, x, ref, calib = digits
    names = ["mxnet-int8", "onnxruntime-int8", "openvino-int8"]
    by_name = {r["variant"]: r for r in run_peers(names, model, x, ref, bench=QUICK, calib_batches=calib,
                                                    fp32_dense=False)}
    for name in names:
        _check_timed(by_name[name], name)
    fp32_layers = by_name["mxnet-int8"]["detail"]["fp32_layers"]
    assert len(fp32_layers) == 1 and fp32_layers[0].endswith("conv0_fwd"), fp32_layers
    assert len(by_name["onnxruntime-int8"]["detail"]["fp32_nodes"]) == 1
    ov8 = by_name["openvino-int8"]["detail"]
    assert ov8["fp32_nodes"] and not any(n.startswith("type ") for n in ov8["fp32_nodes"])
    assert sum(n for k, n in ov8["kernels"].items() if k.lower().endswith("_i8")) == 1 + 2, ov8["kernels"]


# ----------------------------------------------------------------------------- torch interpreter


class _Variety(gluon.HybridBlock):
    """Grouped / dilated / depthwise convs, both BatchNorm forms, many pooling kinds, concat, elementwise ops."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.c1 = nn.Conv2D(8, 3, padding=1, in_channels=3)
            self.bn1 = nn.BatchNorm(in_channels=8)
            self.grouped = nn.Conv2D(8, 3, padding=2, dilation=2, groups=4, in_channels=8)
            self.prelu = nn.PReLU(in_channels=8)
            self.dw = nn.Conv2D(8, 3, strides=2, padding=1, groups=8, use_bias=False, in_channels=8)
            self.bn2 = nn.BatchNorm(in_channels=8, scale=False)  # fix_gamma=True in the symbol
            self.fc = nn.Dense(10, in_units=56 + 56 * 16)

    def hybrid_forward(self, F, x):
        a = F.Activation(self.bn1(self.c1(x)), act_type="relu")
        b = F.LeakyReLU(self.grouped(a), act_type="leaky", slope=0.1)
        c = F.Activation(a, act_type="tanh") * F.sigmoid(b)
        d = F.concat(a, b, c, dim=1)
        p1 = F.Pooling(d, kernel=(3, 3), stride=(2, 2), pool_type="max", pooling_convention="full")
        p2 = F.Pooling(d, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="avg", count_include_pad=False)
        e = F.LeakyReLU(self.bn2(self.dw(self.prelu(c))), act_type="elu", slope=0.5)
        g = F.concat(p1, p2, e, dim=1)
        h = F.clip(g, -1.0, 2.0) + F.broadcast_mul(g, F.Pooling(g, global_pool=True, pool_type="avg", kernel=(1, 1)))
        h = h * 0.5 + 1.0
        r = F.reshape(F.Pooling(h, global_pool=True, pool_type="max", kernel=(1, 1)), shape=(0, -1))
        fl = F.Flatten(F.Pooling(h, kernel=(2, 2), stride=(2, 2), pool_type="avg"))
        out = self.fc(F.Dropout(F.concat(r, fl, dim=1), p=0.5))
        return out + F.softmax(out, axis=-1)


def _variety_block():
    block = _Variety(prefix="variety_")
    mx.random.seed(0)
    block.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    _randomize_batchnorm(block, 0)
    block.hybridize()
    return block


def test_torch_interpreter_matches_tvm_fp32():
    shape = (2, 3, 16, 16)  # 16: 'full' max pooling gives 8x8 where 'valid' would give 7x7
    block = _variety_block()
    x = input_data(shape, seed=3)
    expected_mx = block(mx.nd.array(x)).asnumpy()
    mod, params = from_mxnet(block, shape={"data": shape})
    ref = _tvm_fp32(mod, params, x)
    graph, _ = gluon_graph(block)
    ops = {n["op"] for n in graph["nodes"]}
    assert {"Convolution", "BatchNorm", "LeakyReLU", "Pooling", "Concat", "FullyConnected", "clip",
            "Reshape", "Flatten", "broadcast_mul", "elemwise_add", "_mul_scalar", "softmax"} <= ops, ops
    module = from_gluon(block)
    with torch.inference_mode():
        out = module(torch.from_numpy(x)).numpy()
    assert out.shape == ref.shape == (2, 10)
    assert rel_err(out, ref) <= 1e-4
    assert rel_err(out, expected_mx) <= 1e-4


def test_interpreter_matches_on_resnet18(resnet18):
    model, x, ref, _ = resnet18
    with torch.inference_mode():
        out = from_gluon(model.extra["block"])(torch.from_numpy(x)).numpy()
    assert rel_err(out, ref) <= 1e-4


def test_interpreter_refuses_unknown_ops_when_built():
    graph = {"nodes": [{"op": "null", "name": "data", "inputs": []},
                       {"op": "_contrib_Foo", "name": "foo0", "inputs": [[0, 0, 0]]}],
             "heads": [[1, 0, 0]]}
    with pytest.raises(UnsupportedOpError, match="MXNet op '_contrib_Foo' at node 'foo0' has no PyTorch"):
        MXNetGraphModule(graph, {})


# ----------------------------------------------------------------------------- n/a cases


def _tiny_dcn():
    class DCN(gluon.HybridBlock):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            with self.name_scope():
                self.dcn = mx.gluon.contrib.cnn.DeformableConvolution(4, kernel_size=3, padding=1, in_channels=3)
                self.fc = nn.Dense(5, in_units=4 * 8 * 8)

        def hybrid_forward(self, F, x):
            return self.fc(F.relu(self.dcn(x)))

    block = DCN(prefix="tinydcn_")
    block.initialize(mx.init.Xavier())
    block.hybridize()
    return block


def test_deformable_conv_makes_torch_peers_na():
    shape = (1, 3, 8, 8)
    block = _tiny_dcn()
    x = input_data(shape, seed=0)
    ref = block(mx.nd.array(x)).asnumpy()
    model = LoadedModel("tiny_dcn", "mxnet", None, {}, "data", shape, extra={"block": block})
    recs = run_peers(["torch-fp32", "onnxruntime-int8", "mxnet-fp32"], model, x, ref, bench=QUICK,
                     calib_batches=[input_data((4,) + shape[1:], seed=1)])
    for rec in recs[:2]:
        assert rec["latency"] is None
        assert rec["note"].startswith("n/a: ") and "_contrib_DeformableConvolution" in rec["note"], rec["note"]
        assert "\n" not in rec["note"] and "agreement" not in rec
    # MXNet's own engine runs it
    assert recs[2]["latency"] is not None and recs[2]["agreement"]["max_rel_err"] == 0.0


def test_disagreeing_reference_is_na(digits):
    model, x, ref, calib = digits
    # 1% larger logits: beyond the fp32 tolerance, invisible to cosine
    recs = run_peers(["mxnet-fp32", "torch-fp32", "onnxruntime-fp32", "openvino-fp32", "onnxruntime-int8",
                      "openvino-int8", "mxnet-int8"], model, x, ref * 1.01, bench=QUICK, calib_batches=calib)
    for rec in recs[:4]:
        assert rec["latency"] is None
        assert rec["note"].startswith("n/a: output differs from TVM fp32 (cosine 1.0000, max rel err 9.9"), rec["note"]
        assert rec["agreement"]["max_rel_err"] > FP32_MAX_REL_ERR
    # the ONNX int8 peers check their fp32 export against the reference before quantizing
    assert recs[4]["latency"] is None and "ONNX export differs from TVM fp32 in ORT fp32" in recs[4]["note"]
    assert recs[5]["latency"] is None and "ONNX export differs from TVM fp32 in OpenVINO fp32" in recs[5]["note"]
    assert recs[6]["latency"] is not None and recs[6]["note"] == ""
    # the opposite logits: cosine -1 fails the int8 criterion too
    rec = run_peers(["mxnet-int8"], model, x, -ref, bench=QUICK, calib_batches=calib)[0]
    assert rec["latency"] is None and rec["agreement"]["cosine"] < 0
    assert rec["note"].startswith("n/a: output differs from TVM fp32 (cosine -")


def test_peers_run_on_the_threads_they_are_given(digits):
    """`threads` (the target's num_cores, TVM's thread count) is what ONNX Runtime and OpenVINO use."""
    model, x, ref, calib = digits
    recs = run_peers(["onnxruntime-fp32", "openvino-fp32"], model, x, ref, bench=QUICK, calib_batches=calib,
                     threads=1)
    assert recs[0]["note"] == "" and recs[0]["threads"] == 1
    assert recs[1]["note"] == "" and recs[1]["detail"]["threads"] == 1


def test_missing_package_and_missing_definition_are_na(digits, monkeypatch):
    model, x, ref, calib = digits
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime fails
    rec = run_peers(["onnxruntime-int8"], model, x, ref, bench=QUICK, calib_batches=calib)[0]
    assert rec == {"variant": "onnxruntime-int8", "target": "cpu", "software": "", "latency": None,
                   "note": "n/a: onnxruntime is not installed", "setup_s": rec["setup_s"]}
    monkeypatch.setitem(sys.modules, "nncf", None)  # OpenVINO without NNCF: fp32 runs, int8 cannot
    recs = run_peers(["openvino-int8", "openvino-fp32"], model, x, ref, bench=QUICK, calib_batches=calib)
    assert recs[0]["note"] == "n/a: nncf is not installed" and recs[0]["latency"] is None
    assert recs[1]["note"] == "" and recs[1]["latency"] is not None
    monkeypatch.setitem(sys.modules, "openvino", None)
    rec = run_peers(["openvino-fp32"], model, x, ref, bench=QUICK, calib_batches=calib)[0]
    assert rec["note"] == "n/a: openvino is not installed" and rec["latency"] is None
    bare = LoadedModel("file_model", "onnx", model.mod, model.params, "data", model.input_shape, source="")
    recs = run_peers(["mxnet-fp32", "torch-fp32"], bare, x, ref, bench=QUICK, calib_batches=calib)
    assert "no MXNet definition of 'file_model'" in recs[0]["note"]
    assert "no PyTorch or MXNet definition of 'file_model'" in recs[1]["note"]
    assert all(r["latency"] is None for r in recs)


def test_cuda_only_and_cpu_only_peers():
    model = LoadedModel("m", "mxnet", None, {}, "data", (1, 3, 8, 8))
    x = np.zeros((1, 3, 8, 8), np.float32)
    names = ["mxnet-int8", "onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-int8"]
    recs = run_peers(names, model, x, np.zeros((1, 4)), bench=QUICK, calib_batches=[x], device="cuda")
    assert all("CPU only" in r["note"] for r in recs), [r["note"] for r in recs]
    if not torch.cuda.is_available():
        rec = run_peers(["torch-fp16"], model, x, np.zeros((1, 4)), bench=QUICK, calib_batches=[x],
                        device="cuda")[0]
        assert rec["note"].startswith("n/a: torch") and "no CUDA GPU" in rec["note"]


def test_unknown_peer_name():
    with pytest.raises(HarnessError, match="unknown peer 'tensorrt-int8'; valid: mxnet-fp32, mxnet-int8"):
        run_peers(["mxnet-fp32", "tensorrt-int8"], None, np.zeros(1), np.zeros(1), bench=QUICK, calib_batches=[])
    with pytest.raises(HarnessError, match="device"):
        run_peers(["mxnet-fp32"], None, np.zeros(1), np.zeros(1), bench=QUICK, calib_batches=[], device="tpu")


def test_agreement_numbers():
    ref = np.array([[1.0, 2.0, 4.0], [3.0, 0.0, 1.0]])
    g = agreement(ref.copy(), ref)
    assert g == {"cosine": pytest.approx(1.0), "max_rel_err": 0.0, "top1_agree": 1.0}
    out = ref.copy()
    out[1] = [0.0, 3.0, 1.0]  # second sample's top-1 moves
    g = agreement(out, ref)
    assert g["top1_agree"] == 0.5 and g["max_rel_err"] == pytest.approx(3.0 / 4.0)
    assert g["cosine"] == pytest.approx(1.0 / 10.0)  # the worst sample: (0*3 + 3*0 + 1*1) / (sqrt(10)^2)


# ----------------------------------------------------------------------------- time_callable


class _FakeClock:
    """Each call of the timed function advances time by 1 ms."""

    def __init__(self):
        self.now = 0.0
        self.calls = 0
        self.syncs = 0

    def fn(self):
        self.calls += 1
        self.now += 1e-3

    def sync(self):
        self.syncs += 1

    def clock(self):
        return self.now


def test_time_callable_grows_number_like_time_evaluator():
    c = _FakeClock()
    stats = time_callable(c.fn, number=1, repeat=3, min_repeat_ms=10, warmup=2, batch=4, sync=c.sync, clock=c.clock)
    # warm-up 2; first repeat: 1 call (1 ms < 10 ms), grown to 10 / 1 + 1 = 11 calls; then 11 + 11
    assert c.calls == 2 + 1 + 11 + 11 + 11
    assert c.syncs == 2 * 4  # before both clock readings of each of the 4 measurements
    assert stats.number == 11 and stats.repeat == 3 and stats.batch == 4
    assert stats.samples_ms == pytest.approx([1.0, 1.0, 1.0])
    assert stats.mean_ms == pytest.approx(1.0) and stats.images_per_s == pytest.approx(4000.0)


def test_time_callable_golden_ratio_and_no_min():
    c = _FakeClock()
    # a 1 ms call and min_repeat_ms 2: 2 / 1 + 1 = 3 calls, not less than 1.618 x 1
    stats = time_callable(c.fn, number=1, repeat=1, min_repeat_ms=2, warmup=0, clock=c.clock)
    assert (c.calls, stats.number) == (1 + 3, 3)
    c = _FakeClock()
    stats = time_callable(c.fn, number=5, repeat=2, min_repeat_ms=0, warmup=1, clock=c.clock)
    assert (c.calls, stats.number, len(stats.samples_ms)) == (1 + 5 + 5, 5, 2)
    # growth by at least 1.618x when the prediction is smaller: 10 calls of 1 ms, min 12 ms -> 16
    c = _FakeClock()
    stats = time_callable(c.fn, number=10, repeat=1, min_repeat_ms=12, warmup=0, clock=c.clock)
    assert stats.number == 16 and c.calls == 10 + 16

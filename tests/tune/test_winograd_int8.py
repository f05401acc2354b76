"""Exact integer Winograd F(2x2, 3x3) for 8-bit 3x3 convs (harness.schedules.winograd): the
transforms give 4 x the conv in integers, the int32 wrap-around stays exact up to the channel
bound the algorithm states, the built kernels equal the dot-product build bit for bit, and only
targets without VNNI get them. Targets pin their `mcpu` (haswell: AVX2, which every x86 CPU these
tests meet has; AVX-512 and VNNI CPUs are compiled for and their code read, not run)."""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import tvm
from tvm import relax, s_tir, te

from harness.build import compile_module
from harness.quantize import QConfig
from harness.schedules import ScheduleOptions
from harness.schedules import winograd
from harness.targets import llvm_target
from harness.tune import ConvShape, conv_model

WINOGRAD = ScheduleOptions(cpu_int8_amx=False)
DIRECT = ScheduleOptions(cpu_int8_amx=False, cpu_int8_winograd=False)


@pytest.fixture(scope="module")
def haswell():
    return tvm.target.Target(llvm_target("haswell", 2))


def _conv_int64(data: np.ndarray, weight: np.ndarray, pad: int) -> np.ndarray:
    """NCHW stride-1 3x3 conv in int64 (the reference every exact kernel must equal)."""
    x = np.pad(data.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, _, h, w = x.shape
    out = np.zeros((n, weight.shape[0], h - 2, w - 2), np.int64)
    for r in range(3):
        for s in range(3):
            out += np.einsum("nchw,kc->nkhw", x[:, :, r:r + h - 2, s:s + w - 2], weight[:, :, r, s].astype(np.int64))
    return out


def _winograd_numpy(data: np.ndarray, weight: np.ndarray, tile: int, chunks: int = 1) -> np.ndarray:
    """F(tile x tile, 3x3) as the kernel computes it (unpadded data, output a multiple of `tile`):
    the products summed per chunk of input channels (asserted within int32, where the kernel sums
    them), the output transform in int64, then the scale taken off."""
    tf = winograd.TRANSFORMS[tile]
    n, c, h, w = data.shape
    k, a = weight.shape[0], tf.alpha
    u = winograd.pack_weights(winograd.transformed(weight, tile), 8)  # [a, a, K / 8, C / 2, 8, 2]
    u = u.transpose(0, 1, 2, 4, 3, 5).reshape(a, a, k, c).astype(np.int64)
    th, tw = (h - 2) // tile, (w - 2) // tile
    tiles = np.stack([np.stack([data[:, :, tile * y:tile * y + a, tile * x:tile * x + a] for x in range(tw)], 2)
                      for y in range(th)], 2).astype(np.int64)  # [n, c, th, tw, a, a]
    v = np.einsum("ei,nctwij,uj->euntwc", tf.data, tiles, tf.data)
    assert np.abs(v).max() < 2 ** 15  # int16
    per = c // chunks
    m = np.stack([np.einsum("eukc,euntwc->euntwk", u[..., q * per:(q + 1) * per], v[..., q * per:(q + 1) * per])
                  for q in range(chunks)])
    assert np.abs(m).max() <= 2 ** 31 - 1  # each chunk's sums stay in int32
    y = np.einsum("oe,qeuntwk,pu->ntwkop", tf.out, m, tf.out)
    assert (y % tf.scale == 0).all()
    return (y // tf.scale).transpose(0, 3, 1, 4, 2, 5).reshape(n, k, tile * th, tile * tw)


@pytest.mark.parametrize("tile,u_max", [(2, 9 * 128), (4, 49 * 128)])
def test_integer_transforms_give_the_conv(tile, u_max):
    """The integer weight and data transforms, multiplied and brought back by the output transform,
    are scale x the conv exactly (4 for F(2x2), 576 for F(4x4); random codes and the extremes), and
    the transformed weights fit int16 with room to spare."""
    rng = np.random.RandomState(0)
    data = rng.randint(0, 256, size=(2, 6, 10, 10)).astype(np.uint8)
    data[0, 0] = 255
    weight = rng.randint(-128, 128, size=(16, 6, 3, 3)).astype(np.int8)
    weight[0] = -128
    weight[1] = 127
    assert winograd.TRANSFORMS[tile].scale == {2: 4, 4: 576}[tile]
    np.testing.assert_array_equal(_winograd_numpy(data, weight, tile), _conv_int64(data, weight, 0))
    assert np.abs(winograd.pack_weights(winograd.transformed(weight, tile), 8).astype(np.int64)).max() <= u_max


def _chunks(weight: np.ndarray, tile: int) -> int:
    return winograd.channel_chunks(weight, winograd.transformed(weight, tile), "uint8")


def _position_bound(tile: int, data_max: int = 255) -> np.ndarray:
    """Per position, the largest |B^T d B| over uint8 codes, found at the two extreme corners of
    the data's box (a linear form's extremes: 255 where its coefficient is positive, or negative)."""
    b = winograd.TRANSFORMS[tile].data
    coef = np.einsum("ei,uj->euij", b, b)
    return np.maximum((coef * (coef > 0)).sum((2, 3)), -(coef * (coef < 0)).sum((2, 3))) * data_max


@pytest.mark.parametrize("tile", [2, 4])
def test_data_bounds_are_the_extremes(tile):
    np.testing.assert_array_equal(winograd.data_bounds("uint8", tile), _position_bound(tile))
    assert winograd.data_bounds("uint8", 4).max() == 17340 < 2 ** 15  # int16
    assert winograd.data_bounds("int8", 4).max() <= 100 * 128  # B^T's rows: |.| sums 10


def test_channel_bound_of_f2_is_where_int32_stops_being_exact():
    """4 x C x 9 x 255 x 128 < 2^31 bounds F(2x2)'s sums of uint8 data at 1827 channels (int8 data:
    |x| <= 128, 3640) whatever the weights; near it, extreme operands give the exact conv."""
    assert winograd.max_channels("uint8") == 1827
    assert winograd.max_channels("int8") == 3640
    assert 4 * 1827 * 9 * 255 * 128 < 2 ** 31 <= 4 * 1828 * 9 * 255 * 128
    c = 1826  # even: the kernel multiplies channel pairs
    data = np.full((1, c, 4, 4), 255, np.uint8)
    data[:, :, 1::2, ::2] = 0  # the tile's transform then has large and small terms both
    weight = np.full((8, c, 3, 3), -128, np.int8)
    weight[1::2] = 127
    weight[:, :, 1, 1] = -128
    assert _chunks(weight, 2) == 1
    exact = _conv_int64(data, weight, 0)
    assert np.abs(4 * exact).max() > 2 ** 30  # near the limit
    np.testing.assert_array_equal(_winograd_numpy(data, weight, 2), exact)


@pytest.mark.parametrize("tile,chans", [(2, 1826), (2, 1828), (4, 64), (4, 256), (4, 768)])
def test_chunks_are_the_fewest_that_keep_int32(tile, chans):
    """The kernel sums a chunk of input channels in int32: for the weights with the largest
    transform (every tap -128), the chunk count is the fewest (of even chunk sizes dividing the
    channels) whose per-chunk sum at the worst position, chunk x |U| x the data bound, fits int32."""
    weight = np.full((8, chans, 3, 3), -128, np.int8)
    worst = (np.abs(winograd.transformed(weight[:1, :1], tile))[:, :, 0, 0] * _position_bound(tile)).max()
    valid = [q for q in range(1, chans // 2 + 1) if chans % q == 0 and (chans // q) % 2 == 0]
    expected = next(q for q in valid if chans // q * worst <= 2 ** 31 - 1)
    assert _chunks(weight, tile) == expected
    if expected > 1:  # one chunk fewer would leave int32
        assert chans // valid[valid.index(expected) - 1] * worst > 2 ** 31 - 1
    if tile == 2:
        assert expected == (1 if chans <= winograd.max_channels("uint8") else 2)


def test_chunks_follow_the_weights_values():
    """Real weights are far from the extremes: resnet-like 7-bit weights of 512 channels need one
    chunk, the same shape at -128 everywhere several; a conv whose 9 x its result could leave int32
    (F(4x4) divides by 9 in int32) is not taken (0)."""
    rng = np.random.RandomState(0)
    small = np.clip(np.round(rng.normal(0, 12, size=(16, 512, 3, 3))), -63, 63).astype(np.int8)
    assert _chunks(small, 4) == 1
    assert _chunks(np.full((16, 512, 3, 3), -128, np.int8), 4) > 1
    huge = np.full((8, 7000, 3, 3), -128, np.int8)  # 9 x 7000 x 9 x 255 x 128 > 2^31
    assert _chunks(huge, 4) == 0


def test_applies_to_3x3_stride1_ungrouped():
    ok = dict(strides=(1, 1), dilation=(1, 1), groups=1, block=8, lanes=8)
    assert winograd.applies("uint8", (64, 64, 3, 3), **ok)
    assert winograd.applies("int8", (64, 3640, 3, 3), **ok)
    assert not winograd.applies("uint8", (64, 63, 3, 3), **ok)  # odd channel count: no pair
    assert not winograd.applies("uint8", (64, 64, 1, 1), **ok)
    assert not winograd.applies("uint8", (64, 64, 3, 3), **dict(ok, strides=(2, 2)))
    assert not winograd.applies("uint8", (64, 64, 3, 3), **dict(ok, dilation=(2, 2)))
    assert not winograd.applies("uint8", (64, 64, 3, 3), **dict(ok, groups=2))
    assert not winograd.applies("uint8", (24, 64, 3, 3), **dict(ok, lanes=16))  # 24 not whole zmm vectors
    assert not winograd.applies("float32", (64, 64, 3, 3), **ok)


@pytest.mark.parametrize("mcpu,lanes", [
    ("haswell", 8), ("znver1", 8), ("znver2", 8), ("skylake-avx512", 16),  # no VNNI
    ("cascadelake", 0), ("znver4", 0), ("znver5", 0), ("alderlake", 0), ("emeraldrapids", 0),  # VNNI
    ("nehalem", 0),  # no AVX2
])
def test_targets_without_vnni_get_it(mcpu, lanes):
    """The rewrite pays where vpmaddwd is the best 8-bit product (AVX2, AVX-512BW without VNNI);
    VNNI's vpdpbusd multiplies 4 x as many per instruction, and AMX CPUs have VNNI."""
    assert winograd.lanes_for(tvm.target.Target(llvm_target(mcpu, 2))) == lanes


def test_cuda_never_gets_it():
    assert winograd.lanes_for(tvm.target.Target({"kind": "cuda", "arch": "sm_90"})) == 0


def _built(shape, options, target, data_dtype=None):
    mod = conv_model(ConvShape.parse(shape), "int8", data_dtype=data_dtype, qconfig=QConfig(reduce_range=True))
    return compile_module(mod, target, schedules=options, fallback=False)


def _run(built, shape, seed=1):
    s = ConvShape.parse(shape)
    x = np.random.RandomState(seed).normal(size=(s.n, s.c, s.h, s.w)).astype("float32")
    vm = relax.VirtualMachine(built.executable, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("shape,data_dtype", [
    ("1,64,14,14,64,3,3,1,1", None),     # padded; 14 = 3.5 tiles of 4: the last ones half used
    ("1,32,15,9,16,3,3,1,1", None),      # odd output height and width: the last tiles partly used
    ("2,32,8,8,32,3,3,1,0", None),       # batch 2, no padding
    ("1,48,10,10,24,3,3,1,1", "int8"),   # signed data (a padded conv after a linear layer)
])
def test_kernel_equals_the_dot_product_build(haswell, shape, data_dtype, tile):
    """The quantized conv built with the Winograd kernel (F(2x2) and F(4x4)) gives the dot-product
    build's output bit for bit (the same integer sums), and the build says which kernel it used."""
    wino = _built(shape, dataclasses.replace(WINOGRAD, cpu_int8_winograd_tile=tile), haswell, data_dtype)
    direct = _built(shape, DIRECT, haswell, data_dtype)
    assert wino.report.counts().get("default:cpu_int8_winograd") == 1
    assert "default:cpu_int8_winograd" not in direct.report.counts()
    assert direct.report.counts().get("default:cpu_int8_dot") == 1
    np.testing.assert_array_equal(_run(wino, shape), _run(direct, shape))


def _asm(built) -> str:
    ex = built.executable
    return next(m.inspect_source("s") for m in [ex.mod, *ex.mod.imports] if m.kind == "llvm")


@pytest.mark.parametrize("mcpu,register", [("haswell", "ymm"), ("skylake-avx512", "zmm")])
def test_products_are_vpmaddwd(mcpu, register):
    """Compiled and read (not run: the host may lack AVX-512): the kernel multiplies with vpmaddwd
    on full vectors of the target."""
    shape = "1,64,14,14,64,3,3,1,1"
    built = _built(shape, WINOGRAD, tvm.target.Target(llvm_target(mcpu, 2)))
    assert built.report.counts().get("default:cpu_int8_winograd") == 1
    assert re.search(rf"vpmaddwd\s[^\n]*{register}", _asm(built))


def test_vnni_target_keeps_the_dot_product():
    built = _built("1,64,14,14,64,3,3,1,1", WINOGRAD, tvm.target.Target(llvm_target("cascadelake", 2)))
    assert "default:cpu_int8_winograd" not in built.report.counts()
    assert built.report.counts().get("default:cpu_int8_dot") == 1


@pytest.mark.parametrize("tile,chans,chunks", [(2, 1824, 1), (4, 296, 4)])
def test_worst_case_operands_at_the_chunk_bound(haswell, tile, chans, chunks):
    """The compiled kernel on the weights with the largest transform (-128 everywhere; every other
    output channel's first tap 127) and, in every channel, the data tile whose transform is largest
    at the position where the product sums are: each chunk's sum there ends within 2^25 of int32's
    end (F(2x2) at 1824 uint8 channels, one chunk; F(4x4) at 296, 4 chunks of 74), and the result is
    the exact conv."""
    from harness.schedules.winograd import schedule_int8_winograd

    tf, k = winograd.TRANSFORMS[tile], 8
    weight = np.full((k, chans, 3, 3), -128, np.int8)
    weight[1::2, :, 0, 0] = 127  # some output channels away from the extreme
    assert _chunks(weight, tile) == chunks
    per_channel = np.abs(winograd.transformed(weight[:1, :1], tile))[:, :, 0, 0] * _position_bound(tile)
    e, u = np.unravel_index(per_channel.argmax(), per_channel.shape)
    assert 2 ** 31 - 2 ** 25 < chans // chunks * per_channel[e, u] < 2 ** 31
    coef = np.outer(tf.data[e], tf.data[u])
    pattern = np.where(coef > 0, 255, 0) if coef[coef > 0].sum() >= -coef[coef < 0].sum() else np.where(coef < 0, 255, 0)
    data = np.broadcast_to(pattern.astype(np.uint8), (1, chans, tf.alpha, tf.alpha)).copy()
    exact = _conv_int64(data, weight, 0)
    blocked = data.reshape(1, chans // 8, 8, tf.alpha, tf.alpha).transpose(0, 1, 3, 4, 2).copy()
    packed = winograd.pack_weights(winograd.transformed(weight, tile), 8)
    x = te.placeholder(blocked.shape, "uint8", name="x")
    w = te.placeholder(packed.shape, "int16", name="u")
    out = winograd.winograd_conv2d_te(x, w, padding=(0, 0, 0, 0), block=8, lanes=8, tile=tile, chunks=chunks)
    sch = s_tir.Schedule(te.create_prim_func([x, w, out]))
    schedule_int8_winograd(sch, haswell)
    lib = tvm.compile(sch.mod, target=haswell)
    dev = tvm.cpu()
    result = tvm.runtime.tensor(np.zeros([int(v) for v in out.shape], "int32"), dev)
    lib["main"](tvm.runtime.tensor(blocked, dev), tvm.runtime.tensor(packed, dev), result)
    np.testing.assert_array_equal(result.numpy().transpose(0, 1, 4, 2, 3).reshape(exact.shape), exact)


@pytest.mark.slow
def test_resnet18_int8_equals_the_dot_product_build(haswell):
    """Int8 resnet18_v1 (64 x 64 input, reduce_range's 7-bit weights): its 13 3x3 stride-1 convs on
    Winograd, the other 6 on the dot product, and the output is the all-dot-product build's, bit
    for bit."""
    from harness.quantize import apply_table, qconfig
    from tests.helpers import calibrated_model

    mod, table, calib = calibrated_model("resnet18_v1", 64, 0, 2)
    with qconfig(calibrate_mode="max", weight_scale="channel_max", reduce_range=True) as cfg:
        qmod = apply_table(mod, None, table, config=cfg)
    x = calib[0]["data"]
    outs, kinds = [], []
    for options in (WINOGRAD, DIRECT):
        built = compile_module(qmod, haswell, schedules=dataclasses.replace(options, int8_weight_bits=7))
        outs.append(relax.VirtualMachine(built.executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy())
        kinds.append(sorted(built.report.kernels.values()))
    # kernels, not convs: two 3x3 convs of the same shape and epilogue share one (`requantize: folded`
    # makes the epilogue's constants parameters), so 12 Winograd kernels for the 13 convs, and 18
    # dot-product kernels for the 19 convs of the direct build
    assert kinds[0].count("default:cpu_int8_winograd") == 12 and kinds[0].count("default:cpu_int8_dot") == 6
    assert kinds[1].count("default:cpu_int8_dot") == 18 and "default:cpu_int8_winograd" not in kinds[1]
    np.testing.assert_array_equal(outs[0], outs[1])

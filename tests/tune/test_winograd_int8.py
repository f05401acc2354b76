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


def _products(data: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """The 16 sums M[e, u, n, tile row, tile column, k] of F(2x2, 3x3) over unpadded data with an
    even output, in int64, from the kernel's transformed weights."""
    n, c, h, w = data.shape
    k = weight.shape[0]
    u = winograd.transform_weights(weight, 8)  # [4, 4, K / 8, C / 2, 8, 2]
    u = u.transpose(0, 1, 2, 4, 3, 5).reshape(4, 4, k, c).astype(np.int64)
    th, tw = (h - 2) // 2, (w - 2) // 2
    tiles = np.stack([np.stack([data[:, :, 2 * y:2 * y + 4, 2 * x:2 * x + 4] for x in range(tw)], 2)
                      for y in range(th)], 2).astype(np.int64)  # [n, c, th, tw, 4, 4]
    v = np.einsum("ei,nctwij,uj->euntwc", winograd.B_T, tiles, winograd.B_T)
    assert np.abs(v).max() <= 4 * 255
    return np.einsum("eukc,euntwc->euntwk", u, v)


def _winograd_numpy(data: np.ndarray, weight: np.ndarray, wrap: bool) -> np.ndarray:
    """The F(2x2, 3x3) the kernel computes (unpadded data, even output), in int64 or, with
    `wrap`, with the kernel's int32 products / uint32 output transform wrap-around."""
    n, _, h, w = data.shape
    k = weight.shape[0]
    th, tw = (h - 2) // 2, (w - 2) // 2
    m = _products(data, weight)
    if wrap:
        m = m.astype(np.int32).astype(np.uint32).astype(np.int64)  # the sums kept modulo 2^32
    y = np.einsum("oe,euntwk,pu->ntwkop", winograd.A_T, m, winograd.A_T)
    if wrap:
        y = (y % 2 ** 32).astype(np.uint32).astype(np.int32).astype(np.int64)
    assert (y % 4 == 0).all()
    y = y >> winograd.SCALE_SHIFT
    return y.transpose(0, 3, 1, 4, 2, 5).reshape(n, k, 2 * th, 2 * tw)


def test_integer_transforms_give_four_times_the_conv():
    """(2G) g (2G)^T and B^T d B, multiplied and brought back by A^T . A, are 4 x the conv exactly
    (random codes and the extremes), and the transformed weights fit int16 with room to spare."""
    rng = np.random.RandomState(0)
    data = rng.randint(0, 256, size=(2, 6, 10, 8)).astype(np.uint8)
    data[0, 0] = 255
    weight = rng.randint(-128, 128, size=(16, 6, 3, 3)).astype(np.int8)
    weight[0] = -128
    weight[1] = 127
    np.testing.assert_array_equal(_winograd_numpy(data, weight, wrap=False), _conv_int64(data, weight, 0))
    assert np.abs(winograd.transform_weights(weight, 8).astype(np.int64)).max() <= 9 * 128


def test_channel_bound_is_where_int32_stops_being_exact():
    """4 x C x 9 x 255 x 128 < 2^31 bounds uint8 data at 1827 channels (int8 data: |x| <= 128, 3640);
    near the bound, extreme operands in the kernel's 32-bit arithmetic (emulated) give the exact conv."""
    assert winograd.max_channels("uint8") == 1827
    assert winograd.max_channels("int8") == 3640
    assert 4 * 1827 * 9 * 255 * 128 < 2 ** 31 <= 4 * 1828 * 9 * 255 * 128
    c = 1826  # even: the kernel multiplies channel pairs
    data = np.full((1, c, 4, 4), 255, np.uint8)
    data[:, :, 1::2, ::2] = 0  # the tile's transform then has large and small terms both
    weight = np.full((8, c, 3, 3), -128, np.int8)
    weight[1::2] = 127
    weight[:, :, 1, 1] = -128
    exact = _conv_int64(data, weight, 0)
    assert np.abs(4 * exact).max() > 2 ** 30  # near the limit: the wrap matters
    np.testing.assert_array_equal(_winograd_numpy(data, weight, wrap=True), exact)


def test_applies_to_3x3_stride1_ungrouped_within_the_bound():
    ok = dict(strides=(1, 1), dilation=(1, 1), groups=1, block=8, lanes=8)
    assert winograd.applies("uint8", (64, 64, 3, 3), **ok)
    assert winograd.applies("int8", (64, 3640, 3, 3), **ok)
    assert not winograd.applies("uint8", (64, 1828, 3, 3), **ok)  # past the bound
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


@pytest.mark.parametrize("shape,data_dtype", [
    ("1,64,14,14,64,3,3,1,1", None),     # even output, padded
    ("1,32,15,9,16,3,3,1,1", None),      # odd output height and width: the last tiles half used
    ("2,32,8,8,32,3,3,1,0", None),       # batch 2, no padding
    ("1,48,10,10,24,3,3,1,1", "int8"),   # signed data (a padded conv after a linear layer)
])
def test_kernel_equals_the_dot_product_build(haswell, shape, data_dtype):
    """The quantized conv built with the Winograd kernel gives the dot-product build's output bit
    for bit (the same integer sums), and the build says which kernel it used."""
    wino = _built(shape, WINOGRAD, haswell, data_dtype)
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


def test_no_partial_sum_outgrows_the_conv_bound():
    """Per input channel, every sum the kernel forms -- the 16 products U . V and the output
    transform's row sums -- stays within 4 x 9 x 255 x 128, the bound of 4 x the conv itself (the
    products by the operands' bounds, 1152 x 1020; the row sums over 200000 random tiles of
    extreme codes): so up to :func:`max_channels` nothing in the kernel leaves int32."""
    rng = np.random.RandomState(0)
    n = 200000
    d = np.where(rng.rand(n, 4, 4) < 0.5, 255, 0)
    g = np.where(rng.rand(n, 3, 3) < 0.5, -128, 127)
    m = np.einsum("ei,nij,uj->neu", winograd.G2, g, winograd.G2) * np.einsum("ei,nij,uj->neu", winograd.B_T, d,
                                                                             winograd.B_T)
    rows = np.einsum("oe,neu->nou", winograd.A_T, m)
    bound = 4 * 9 * 255 * 128
    assert np.abs(m).max() <= bound and np.abs(rows).max() <= bound
    assert np.abs(rows).max() == bound  # reached: the bound is tight


def test_worst_case_operands_at_the_channel_bound(haswell):
    """The compiled kernel at 1824 uint8 input channels (a multiple of the 8-channel block under
    1827) on the tile and weights whose row sum reaches the bound in every channel: 4 x the conv
    is 2143272960, 4 MB under 2^31, and the result is the exact conv."""
    from harness.schedules.winograd import schedule_int8_winograd

    c, k = 1824, 8
    tile = np.array([[0, 0, 0, 0], [255, 255, 255, 255], [255, 255, 255, 0], [255, 255, 255, 0]], np.uint8)
    data = np.broadcast_to(tile, (1, c, 4, 4)).copy()
    weight = np.full((k, c, 3, 3), -128, np.int8)
    weight[1::2, :, 0, 0] = 127  # some output channels away from the extreme
    exact = _conv_int64(data, weight, 0)
    assert np.abs(4 * exact).max() == 4 * c * 9 * 255 * 128  # the largest magnitude there is
    blocked = data.reshape(1, c // 8, 8, 4, 4).transpose(0, 1, 3, 4, 2).copy()
    packed = winograd.transform_weights(weight, 8)
    x = te.placeholder(blocked.shape, "uint8", name="x")
    u = te.placeholder(packed.shape, "int16", name="u")
    out = winograd.winograd_conv2d_te(x, u, padding=(0, 0, 0, 0), block=8, lanes=8)
    sch = s_tir.Schedule(te.create_prim_func([x, u, out]))
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
    assert kinds[0].count("default:cpu_int8_winograd") == 13 and kinds[0].count("default:cpu_int8_dot") == 6
    assert kinds[1].count("default:cpu_int8_dot") == 19 and "default:cpu_int8_winograd" not in kinds[1]
    np.testing.assert_array_equal(outs[0], outs[1])

"""Tensor intrinsics the harness's int8 schedules use, registered once per process: TVM's own
(``tvm.s_tir.tensor_intrin``: dp4a, wmma), a corrected VNNI ``vpdpbusd`` (TVM's ``dot_16x4_vnni``
does not build with the wheel's LLVM 22) in zmm and ymm (AVX512-VL, AVX-VNNI), and the exact
``vpmaddwd`` on int16-widened operands (AVX-512BW and AVX2); which of them a target has (:func:`cpu_int8_dots`), and which one a schedule
trace uses (:func:`trace_uses_intrinsic`).

``vpmaddubsw`` saturates its pairwise u8 x s8 sums to int16 (2 x 255 x 127 > 32767): it is used
(:func:`pmaddubsw_intrinsic`) only for weights of at most 7 bits (``quantize.nbit_weight: 7``,
2 x 255 x 64 <= 32767), where it is exact, on CPUs without VNNI.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..targets import cuda_sm, normalize_target, target_has_feature


_INTRIN_LOADED = False


def intrinsics_loaded() -> bool:
    """Whether :func:`load_tensor_intrinsics` has run in this process."""
    return _INTRIN_LOADED


def load_tensor_intrinsics() -> None:
    """Register TVM's tensor intrinsics (imports ``tvm.s_tir.tensor_intrin``).

    The import parses a few hundred TVMScript functions and takes 40 s or more on a 2-core
    machine; it is done once per process, and only where TVM's own intrinsics are needed (CUDA
    schedules and searches, records that name them).
    """
    global _INTRIN_LOADED  # pylint: disable=global-statement
    if not _INTRIN_LOADED:
        import tvm.s_tir.tensor_intrin  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

        _INTRIN_LOADED = True


VNNI_INTRIN = "harness_dot_16x4_vnni"


def _dot_desc(data_dtype: str, lanes: int, red: int, weight_dtype: str = "int8"):
    """What every x86 8-bit dot product computes: ``C[0:lanes] += sum_(k<red) A[k] * B[0:lanes, k]``
    (A: `red` activations of `data_dtype`, B: weights of `weight_dtype`, int8 but for the int16
    Winograd products, C: int32), the description a
    tensor intrinsic's implementation is matched against."""
    from tvm.script import tirx as T  # pylint: disable=import-outside-toplevel

    @T.prim_func(s_tir=True)
    def desc(
        a: T.Buffer((red,), data_dtype, offset_factor=1),
        b: T.Buffer((lanes, red), weight_dtype, offset_factor=1),
        c: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:red], b[0:lanes, 0:red])
            T.writes(c[0:lanes])
            for lane, k in T.grid(lanes, red):
                with T.sblock("update"):
                    vl, vr = T.axis.remap("SR", [lane, k])
                    c[vl] = c[vl] + T.cast(a[vr], "int32") * T.cast(b[vl, vr], "int32")

    return desc


# int32 lanes -> LLVM intrinsic; the 256-bit form is VEX-encoded on CPUs with AVX-VNNI and no
# AVX-512 (Alder Lake and later clients), EVEX with AVX512-VL
_VNNI_LLVM = {16: "llvm.x86.avx512.vpdpbusd.512", 8: "llvm.x86.avx512.vpdpbusd.256"}


def _vnni_name(lanes: int) -> str:
    return VNNI_INTRIN if lanes == 16 else f"harness_dot_{lanes}x4_vnni"


def _register_vnni_intrinsic(lanes: int = 16) -> None:
    """Register ``C[0:lanes] += sum_k u8 A[k] * s8 B[0:lanes, k]`` via vpdpbusd (:data:`VNNI_INTRIN`
    for 16 lanes, a zmm; ``harness_dot_8x4_vnni`` for 8, a ymm).

    TVM 0.27 ships ``dot_16x4_vnni`` whose implementation calls
    ``llvm.x86.avx512.vpdpbusd.512`` with ``<16 x i32>`` operands.  LLVM 21 changed that
    intrinsic (and its 256-bit sibling) to take the byte vectors as ``<64 x i8>``; TVM 0.27's
    wheel is built with a newer LLVM, so every kernel using ``dot_16x4_vnni`` fails LLVM's
    verifier ("Call parameter type does not match function signature").  This registers the same
    computation with the byte operands passed as 8-bit vectors (the broadcast 4 activations, and
    the lanes x 4 weights).
    """
    from tvm.s_tir import TensorIntrin  # pylint: disable=import-outside-toplevel
    from tvm.script import tirx as T  # pylint: disable=import-outside-toplevel

    name = _vnni_name(lanes)
    if TensorIntrin.get(name, allow_missing=True) is not None:
        return
    nbytes = 4 * lanes

    @T.prim_func(s_tir=True)
    def impl(
        a: T.Buffer((4,), "uint8", offset_factor=1),
        b: T.Buffer((lanes, 4), "int8", offset_factor=1),
        c: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:4], b[0:lanes, 0:4])
            T.writes(c[0:lanes])
            # the 4 activation bytes, seen as one int32, repeated in every lane (one expression:
            # a named value here would be a buffer of its own, allocated per call in the kernel)
            c[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(_VNNI_LLVM[lanes]),
                c.vload([0], dtype=f"int32x{lanes}"),
                T.reinterpret(T.broadcast(T.reinterpret(a.vload([0], "uint8x4"), dtype="int32"), lanes),
                              dtype=f"uint8x{nbytes}"),
                b.vload([0, 0], dtype=f"int8x{nbytes}"),
                dtype=f"int32x{lanes}",
            )

    TensorIntrin.register(name, _dot_desc("uint8", lanes, 4), impl)


def _vnni_takes_bytes() -> bool:
    """Whether TVM's LLVM has the vpdpbusd intrinsics with 8-bit vector operands (LLVM 21 or
    later; an unknown version is taken for a new one)."""
    from tvm.target import codegen  # pylint: disable=import-outside-toplevel

    try:
        major = int(codegen.llvm_version_major())
    except Exception:  # pylint: disable=broad-except
        major = 0
    return not major or major >= 21


def vnni_intrinsic(lanes: int = 16) -> str:
    """Name of a VNNI ``lanes`` x 4 intrinsic (16: zmm, 8: ymm) that compiles with the LLVM TVM
    was built with (16 lanes only before LLVM 21: TVM's own registration, whose signature
    matches the old ``<16 x i32>`` one)."""
    if not _vnni_takes_bytes():
        if lanes != 16:
            raise ValueError(f"VNNI with {lanes} lanes needs TVM built with LLVM 21 or later")
        load_tensor_intrinsics()
        return "dot_16x4_vnni"
    _register_vnni_intrinsic(lanes)
    return _vnni_name(lanes)


def has_vnni(target: Any, lanes: int = 16) -> bool:
    """Whether an llvm target has vpdpbusd on ``lanes`` int32 lanes: 16 with AVX512-VNNI; 8 with
    AVX512-VNNI and AVX512-VL, or with AVX-VNNI (LLVM 21 or later, see :func:`vnni_intrinsic`)."""
    tgt = normalize_target(target)
    if lanes == 16:
        return target_has_feature(tgt, "avx512vnni")
    return lanes == 8 and _vnni_takes_bytes() and (
        (target_has_feature(tgt, "avx512vnni") and target_has_feature(tgt, "avx512vl"))
        or target_has_feature(tgt, "avxvnni"))


_PMADDWD_LLVM = {8: ("llvm.x86.avx2.pmadd.wd", "avx2"), 16: ("llvm.x86.avx512.pmaddw.d.512", "avx512bw")}
_PMADDWD_SUFFIX = {"uint8": "u8", "int8": "s8", "int16": "s16"}


def pmaddwd_intrinsic(lanes: int, data_dtype: str) -> str:
    """Register (once) and name ``C[0:lanes] += sum_(k<2) A[k] * B[0:lanes, k]`` with one vpmaddwd.

    A: two 8-bit activations (``uint8`` or ``int8``), B: ``lanes`` x 2 int8 weights, C: int32.
    Both operands are widened to int16 first, so the pairwise sums (at most 2 * 255 * 128) never
    saturate: the result is exact, unlike ``vpmaddubsw``'s.  ``lanes`` 8 is AVX2 (ymm), 16 is
    AVX-512BW (zmm).  This is the 8-bit dot product of x86 CPUs without VNNI.

    ``data_dtype`` ``int16``: A two int16 values and B int16 weights, multiplied as they are --
    the products of the integer Winograd kernel (:mod:`harness.schedules.winograd`), whose
    operands stay within +-1152, so that no pair sum comes near vpmaddwd's one overflow
    (-32768 x -32768 twice).
    """
    from tvm.s_tir import TensorIntrin  # pylint: disable=import-outside-toplevel
    from tvm.script import tirx as T  # pylint: disable=import-outside-toplevel

    llvm_name = _PMADDWD_LLVM[lanes][0]
    name = f"harness_dot_{lanes}x2_{_PMADDWD_SUFFIX[data_dtype]}_pmaddwd"
    if TensorIntrin.get(name, allow_missing=True) is not None:
        return name
    halves, wide = f"int16x{2 * lanes}", f"int32x{lanes}"
    weight_dtype = "int16" if data_dtype == "int16" else "int8"

    def pair(a):  # the two activations as int16 (widened where 8-bit)
        loaded = a.vload([0], f"{data_dtype}x2")
        return loaded if data_dtype == "int16" else T.Cast("int16x2", loaded)

    def weights(b):  # the lanes x 2 weights as int16
        loaded = b.vload([0, 0], dtype=f"{weight_dtype}x{2 * lanes}")
        return loaded if weight_dtype == "int16" else T.Cast(halves, loaded)

    @T.prim_func(s_tir=True)
    def impl(
        a: T.Buffer((2,), data_dtype, offset_factor=1),
        b: T.Buffer((lanes, 2), weight_dtype, offset_factor=1),
        c: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:2], b[0:lanes, 0:2])
            T.writes(c[0:lanes])
            # the two activations (int16), seen as one int32, repeated in every lane
            # (inline: see the VNNI intrinsic)
            c[T.ramp(T.int32(0), 1, lanes)] = c.vload([0], dtype=wide) + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_name),
                T.reinterpret(T.broadcast(T.reinterpret(pair(a), dtype="int32"), lanes), dtype=halves),
                weights(b), dtype=wide,
            )

    TensorIntrin.register(name, _dot_desc(data_dtype, lanes, 2, weight_dtype), impl)
    return name


_PMADDUBSW_LLVM = {8: ("llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd", "avx2"),
                   16: ("llvm.x86.avx512.pmaddubs.w.512", "llvm.x86.avx512.pmaddw.d.512", "avx512bw")}
# |weight| <= 64: a vpmaddubsw pair sum is at most 2 x 255 x 64 = 32640 in magnitude (int16: exact)
PMADDUBSW_MAX_WEIGHT_BITS = 7


@dataclass(frozen=True)
class WeightBits:
    """The most bits of a module's int8 conv weights, per kind of conv: the quantizer decides them
    (``quantize.nbit_weight``, with ``reduce_range`` at most 7 for some convs:
    :meth:`harness.quantize.qconfig.QConfig.weight_bits`), and a dot-product kernel may multiply on
    ``vpmaddubsw`` only where its conv's weights have at most 7."""

    dense: int = 8  # ungrouped convs
    grouped: int = 8  # grouped convs (their group an axis of the kernel)

    def of(self, grouped: bool) -> int:
        return self.grouped if grouped else self.dense


def pmaddubsw_intrinsic(lanes: int) -> str:
    """Register (once) and name ``C[0:lanes] += sum_(k<4) A[k] * B[0:lanes, k]`` for uint8 A and
    int8 B whose values fit 7 bits, as ``vpmaddubsw`` (u8 x s8 pair sums to int16) then
    ``vpmaddwd`` by ones (int16 pair sums to int32): 4 multiply-adds per lane in two instructions,
    against two per lane in one for the exact :func:`pmaddwd_intrinsic` (plus its widening).

    Exact only while no int16 pair sum saturates: weights in [-64, 64] (the quantizer's
    ``nbit_weight: 7`` gives [-63, 63]). The schedules pick it only where the build says its
    weights have at most :data:`PMADDUBSW_MAX_WEIGHT_BITS` bits."""
    from tvm.s_tir import TensorIntrin  # pylint: disable=import-outside-toplevel
    from tvm.script import tirx as T  # pylint: disable=import-outside-toplevel

    pairs_llvm, quads_llvm, _ = _PMADDUBSW_LLVM[lanes]
    name = f"harness_dot_{lanes}x4_u8s7_pmaddubsw"
    if TensorIntrin.get(name, allow_missing=True) is not None:
        return name
    nbytes, halves, wide = 4 * lanes, f"int16x{2 * lanes}", f"int32x{lanes}"

    @T.prim_func(s_tir=True)
    def impl(
        a: T.Buffer((4,), "uint8", offset_factor=1),
        b: T.Buffer((lanes, 4), "int8", offset_factor=1),
        c: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:4], b[0:lanes, 0:4])
            T.writes(c[0:lanes])
            # the 4 activation bytes, seen as one int32, repeated in every lane; their pair sums
            # with the weights (vpmaddubsw), then the sums of those pairs (vpmaddwd by ones)
            # (inline: see the VNNI intrinsic)
            c[T.ramp(T.int32(0), 1, lanes)] = c.vload([0], dtype=wide) + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(quads_llvm),
                T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(pairs_llvm),
                    T.reinterpret(T.broadcast(T.reinterpret(a.vload([0], "uint8x4"), dtype="int32"), lanes),
                                  dtype=f"uint8x{nbytes}"),
                    b.vload([0, 0], dtype=f"int8x{nbytes}"), dtype=halves),
                T.broadcast(T.int16(1), 2 * lanes), dtype=wide,
            )

    TensorIntrin.register(name, _dot_desc("uint8", lanes, 4), impl)
    return name


def register_cpu_int8_intrinsics() -> None:
    """Register the harness's x86 8-bit dot products (:func:`vnni_intrinsic`, every
    :func:`pmaddwd_intrinsic` variant): database records of kernels that use one name it, and
    replaying such a record needs it registered."""
    vnni_intrinsic()
    if _vnni_takes_bytes():
        vnni_intrinsic(8)
    for lanes in _PMADDWD_LLVM:
        for data_dtype in _PMADDWD_SUFFIX:
            pmaddwd_intrinsic(lanes, data_dtype)
    for lanes in _PMADDUBSW_LLVM:
        pmaddubsw_intrinsic(lanes)


def cpu_int8_dots(target: Any, data_dtype: str, weight_bits: int = 8) -> list:
    """The exact 8-bit dot products of an llvm target, best first, as ``(intrinsic, lanes,
    reduction)``: VNNI ``vpdpbusd`` (16 x 4 on AVX512-VNNI, 8 x 4 with AVX512-VL or on AVX-VNNI;
    unsigned activations only); without VNNI, for
    unsigned activations and weights of at most 7 bits (`weight_bits`), ``vpmaddubsw`` +
    ``vpmaddwd`` on AVX-512BW (16 x 4) and on AVX2 (8 x 4); then ``vpmaddwd`` on int16-widened
    operands on AVX-512BW (16 x 2) and on AVX2 (8 x 2).  Empty for other CPUs."""
    tgt = normalize_target(target)
    if tgt.kind.name != "llvm" or data_dtype not in ("uint8", "int8"):
        return []
    found = []
    vnni = [lanes for lanes in (16, 8) if has_vnni(tgt, lanes)]
    if data_dtype == "uint8" and vnni:
        found += [(vnni_intrinsic(lanes), lanes, 4) for lanes in vnni]
    elif data_dtype == "uint8" and weight_bits <= PMADDUBSW_MAX_WEIGHT_BITS:
        found += [(pmaddubsw_intrinsic(lanes), lanes, 4) for lanes in (16, 8)
                  if target_has_feature(tgt, _PMADDUBSW_LLVM[lanes][2])]
    for lanes in (16, 8):
        if target_has_feature(tgt, _PMADDWD_LLVM[lanes][1]):
            found.append((pmaddwd_intrinsic(lanes, data_dtype), lanes, 2))
    return found


def fitting_int8_dots(target: Any, data_dtype: str, out_channels: int, in_channels: int,
                      weight_bits: int = 8) -> list:
    """The dot products of :func:`cpu_int8_dots`, best first, whose vector of output channels and
    group of input channels divide a conv's (per group, for a grouped one)."""
    return [d for d in cpu_int8_dots(target, data_dtype, weight_bits)
            if out_channels % d[1] == 0 and in_channels % d[2] == 0]


def reduced_range_pays(target: Any) -> bool:
    """True where 7-bit weights change the dot product 8-bit data multiply on: an x86 CPU without
    VNNI whose best exact choice becomes ``vpmaddubsw`` (AVX2, AVX-512BW) instead of ``vpmaddwd``."""
    dots = cpu_int8_dots(target, "uint8", PMADDUBSW_MAX_WEIGHT_BITS)
    return bool(dots) and dots[0][0] != cpu_int8_dots(target, "uint8", 8)[0][0]


def unsigned_data_pays(target: Any, weight_bits: int) -> bool:
    """True where an ungrouped conv multiplies more input channels per instruction on unsigned
    data (with weights of `weight_bits` bits) than on signed data: VNNI's ``vpdpbusd`` and
    ``vpmaddubsw`` (weights of at most 7 bits) read unsigned data, 4 channels per lane, where signed
    data goes to ``vpmaddwd`` on int16, 2 per lane (``quantize.signed_data_offset``)."""
    unsigned = cpu_int8_dots(target, "uint8", weight_bits)
    signed = cpu_int8_dots(target, "int8", 8)
    return bool(unsigned) and (not signed or unsigned[0][2] > signed[0][2])


def dot_weight_bits_mismatch(trace: Any, target: Any, weight_bits: int) -> str | None:
    """Why a schedule `trace` (a tuning record's) does not suit a build whose dot-product convs have
    weights of `weight_bits` bits, or None: a ``vpmaddubsw`` kernel needs at most 7 (it would
    saturate), and where the build's uint8 convs multiply on ``vpmaddubsw`` a ``vpmaddwd`` kernel
    of 8-bit weights would run them at half its rate."""
    name = trace_uses_intrinsic(trace) or ""
    if "pmaddubsw" in name and weight_bits > PMADDUBSW_MAX_WEIGHT_BITS:
        return (f"its kernel multiplies on vpmaddubsw, exact only for weights of at most "
                f"{PMADDUBSW_MAX_WEIGHT_BITS} bits; this build's have {weight_bits}")
    if name.endswith("_u8_pmaddwd") and weight_bits <= PMADDUBSW_MAX_WEIGHT_BITS and reduced_range_pays(target):
        return (f"its kernel is for 8-bit weights (vpmaddwd); this build's have {weight_bits} bits "
                "and multiply on vpmaddubsw (quantize.reduce_range)")
    return None


def int8_intrinsics_for(target: Any, data_dtype: str = "int8") -> list[str]:
    """Names of the int8 intrinsics the int8 rules try for ``target`` (may be empty)."""
    tgt = normalize_target(target)
    kind = tgt.kind.name
    if kind == "llvm":
        # The best exact dot product (VNNI for u8 data, else vpmaddwd on int16-widened
        # operands); the packed tune-conv layout is made for it (workloads.packed_blocks).
        # TVM's "dot_16x4_avx512" (vpmaddubsw + vpmaddwd) is never used: vpmaddubsw saturates
        # its pairwise u8*s8 sums to int16 (255*127*2 > 32767).
        dots = cpu_int8_dots(tgt, data_dtype)
        return [dots[0][0]] if dots else []
    if kind == "cuda":
        names = ["dp4a_u8s8s32" if data_dtype == "uint8" else "dp4a_s8s8s32"]
        if data_dtype == "int8" and cuda_sm(tgt) >= 75:
            names.append("wmma_sync_16x16x16_s8s8s32_trans")
        return names
    return []


def trace_uses_intrinsic(trace: Any, intrinsics: list[str] | None = None) -> str | None:
    """Name of the tensor intrinsic a schedule trace tensorizes with, or None.

    Looks for ``tensorize`` instructions and for the ``meta_schedule.auto_tensorize``
    annotations the intrinsic rules leave for the ``RewriteTensorize`` postprocessor.
    """
    text = str(trace)
    names = list(intrinsics) if intrinsics else []
    found = re.findall(r'"((?:harness_dot_|harness_amx_dot|dot_16x4|dp4a|wmma_sync|mma_)[A-Za-z0-9_]*)"', text)
    for name in found:
        if not names or name in names:
            return name
    return None


def dp4a_intrinsic(data_dtype: str) -> str:
    """TVM's dp4a intrinsic for 8-bit data x int8 weights (u8 x s8 is PTX's mixed ``dp4a.u32.s32``)."""
    return "dp4a_u8s8s32" if data_dtype == "uint8" else "dp4a_s8s8s32"

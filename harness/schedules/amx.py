"""AMX int8 (Sapphire / Emerald / Granite Rapids): tile kernels for the 8-bit NCHW convs.

One ``tdpbusd`` multiplies a tile of up to 16 rows x 64 u8 (data: output pixels x input
channels) by a tile of 16 rows x 64 s8 (weights: 4 input channels x 16 output channels,
4-byte interleaved) into a tile of up to 16 rows x 16 int32 (pixels x output channels): 16,384
multiply-adds, about 1024 per cycle and core against 128 for AVX-512 VNNI. TVM 0.27 has no AMX
tensor intrinsic; this module registers three (see :func:`amx_intrinsics`), built on the LLVM
intrinsics ``llvm.x86.ldtilecfg`` / ``tilezero`` / ``tileloadd64`` / ``tdpbusd`` /
``tilestored64`` whose tile operands are immediate register numbers (tmm0..tmm7):

* ``zero``  (the conv's init block):  ``ldtilecfg`` of the kernel's tile shapes (a 64-byte
  palette-1 configuration on the stack), ``tilezero`` of the ``mt x nt`` accumulator tiles;
* ``dot``   (one step of ``kc`` input channels at one kernel position): ``mt`` data tiles and
  ``nt`` weight tiles loaded, ``mt x nt`` ``tdpbusd`` into the accumulators;
* ``store`` (a copy block after the reduction): the accumulator tiles stored to memory.

The accumulators live in tile registers from ``zero`` to ``store``: the local buffer the TIR
describes them with is never read or written (the three intrinsics run, in this order, inside
one output block of the schedule, and nothing between them touches the tiles).

Two orientations of the same implicit GEMM, tried in this order (:data:`RULES`):

* stride-1 convs (:func:`schedule_amx_channel_conv`, :class:`ChannelPlan`): accumulator tiles of
  16 output channels x up to 16 pixels, ``tdpbsud`` (int8 weight tiles x uint8 data tiles); the
  data in the 4-channel interleave ``[n, y, c / 4, x, 4]``; the sums leave the tiles in the
  output's pixel order, so the epilogue reads them as vectors. (The pixel-row form's 64-channel
  data rows need a byte transpose of every input, its epilogue gathers. Against the VNNI
  schedule in two noisy runs here, resnet50's stride-1 56x56 / 28x28 / 14x14 layers went from
  0.4-2.7x to 2.5-10.7x; its 7x7 layers from 1.9-2.8x to 1.4-1.7x.)
* any stride (:func:`schedule_amx_conv`, :class:`TilePlan`), used for the strided convs:
  accumulator tiles of up to 16 pixels x 16 output channels, ``tdpbusd`` (uint8 data rows, one
  pixel ``stride`` pixels after the other, x int8 weight tiles), as below.

The pixel-row conv (:func:`schedule_amx_conv`) over packed operands:

    data   [n, c, y, x]     -> [n, c / kc, y, x, kc]                   (padding / packing stage)
    weight [k, c, r, s]     -> [c / kc, r, s, k / 16, kc / 4, 16, 4]   (folded into the constant)
    acc    [n, k, y, x]     -> [n, y, k / 16, x, 16]                   (int32, tile stores)

    parallel for (n, y, k / (16 nt), x / (mt tm)):
        zero: ldtilecfg; tilezero mt x nt
        for (c / kc, r, s):
            dot: tileloadd mt data tiles (tm pixels x kc channels, row stride = conv stride)
                 tileloadd nt weight tiles (kc / 4 rows x 64 bytes); tdpbusd mt x nt
        store: tilestored mt x nt -> acc
        epilogue (dequantize, bias, ReLU, requantize) -> output NCHW

``tm`` (rows per tile) is a divisor of the output width of at most 16; ``kc`` the largest of
64, 32, 16, 8 dividing the input channels. Output channels must be a multiple of 16 and
input channels of 8; other convs are left to the VNNI / plain schedules (the numbers do not
change: integer sums in another order are bit-identical).

Linux hands out tile state only to processes that asked for it
(``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``); :func:`request_permission` asks,
once per process, and the harness calls it when a build holds AMX kernels
(:func:`harness.build.compile_module`, on a host with AMX). A library the harness exports from
an AMX build (``compile_module(export=)``, ``harness bundle``) asks by itself when it is loaded
(``amx_loader.c`` linked in: :func:`export_addons`); one exported otherwise needs
:data:`PERMISSION_NOTE`.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Optional, Tuple

from ..targets import AMXPermissionError as _AMXPermissionError
from ..targets import host_has_amx, target_has_feature, vector_bits
from ..targets import request_amx_permission as _request_permission
from .analysis import NotApplicable
from .analysis import const_int as _int
from .analysis import root_blocks as _root_blocks
from .int8_conv import int8_conv_iters, pack_int8_conv

logger = logging.getLogger(__name__)

__all__ = ["host_has_amx"]  # (a target fact, kept importable from here)

FEATURE = "amx-int8"
TILES = 8  # tmm0..tmm7
MAX_ROWS = 16
ROW_BYTES = 64
ACC_LANES = 16  # int32 accumulators per tile row
PEAK_MACS_PER_CYCLE = 1024  # per core: one 16x64x16 tdpbusd every 16 cycles
AMX_KIND = "int8 AMX conv"  # how the default-schedule rule describes what it did


PERMISSION_NOTE = (
    "A library exported from an AMX build needs tile state: on Linux the process that loads it must call "
    "arch_prctl(ARCH_REQ_XCOMP_PERM=0x1023, XFEATURE_XTILEDATA=18) once before the first run (syscall 158 "
    "on x86_64; in Python: harness.schedules.amx.request_permission()), else its first tile instruction "
    "kills the process with SIGILL.")


AMXPermissionError = _AMXPermissionError  # (defined with the request, in harness.targets)
request_permission = _request_permission  # once per process; a one-line HarnessError where the OS refuses


# The same request for MetaSchedule's runner processes (a PopenPool initializer: a lambda, so that
# it is pickled by value and the worker needs nothing of the harness); a refusal surfaces there as
# the first tile instruction's SIGILL, a failed measurement.
worker_permission = lambda: __import__("ctypes").CDLL(None).syscall(158, 0x1023, 18)  # noqa: E731


def target_has_amx(target) -> bool:
    """Whether LLVM gives the llvm target's ``mcpu`` the AMX int8 instructions."""
    return target_has_feature(target, FEATURE) and target_has_feature(target, "amx-tile")


def applies_to(target) -> bool:
    """Whether 8-bit convs built for `target` may get AMX kernels (an llvm target with amx-int8;
    the config's build.schedules.cpu_int8_amx decides whether they do)."""
    return target is not None and target.kind.name == "llvm" and target_has_amx(target)


# ----------------------------------------------------------------------------- tile plan


class TilePlan:  # pylint: disable=too-few-public-methods
    """One AMX micro-kernel: ``mt`` data tiles of ``tm`` rows (pixels) x ``kc`` bytes (input
    channels), ``nt`` weight tiles of ``kc / 4`` rows x 64 bytes, ``mt x nt`` accumulator tiles of
    ``tm`` rows x 16 int32; data rows ``stride`` pixels apart."""

    def __init__(self, mt: int, tm: int, nt: int, kc: int, stride: int):
        if mt * nt + mt + nt > TILES or not 1 <= tm <= MAX_ROWS or kc not in (8, 16, 32, 64):
            raise ValueError(f"no AMX tile plan mt={mt} tm={tm} nt={nt} kc={kc}")
        self.mt, self.tm, self.nt, self.kc, self.stride = mt, tm, nt, kc, stride

    @property
    def key(self) -> str:
        return f"m{self.mt}x{self.tm}_n{self.nt}_k{self.kc}_s{self.stride}"

    def acc(self, m: int, n: int) -> int:
        return m * self.nt + n

    def a_tile(self, m: int) -> int:
        return self.mt * self.nt + m

    def b_tile(self, n: int) -> int:
        return self.mt * self.nt + self.mt + n

    def config_bytes(self) -> bytes:
        """The 64-byte palette-1 tile configuration (``ldtilecfg``'s operand)."""
        cfg = bytearray(64)
        cfg[0] = 1  # palette 1
        shapes = {}
        for m in range(self.mt):
            for n in range(self.nt):
                shapes[self.acc(m, n)] = (self.tm, ACC_LANES * 4)
            shapes[self.a_tile(m)] = (self.tm, self.kc)
        for n in range(self.nt):
            shapes[self.b_tile(n)] = (self.kc // 4, ROW_BYTES)
        for tile, (rows, colsb) in shapes.items():
            cfg[16 + 2 * tile] = colsb & 0xFF
            cfg[17 + 2 * tile] = colsb >> 8
            cfg[48 + tile] = rows
        return bytes(cfg)


def _configure_and_zero(plan: TilePlan):
    """The body of a plan's ``zero`` intrinsic (a TVMScript macro): load the plan's tile
    configuration where this thread's tiles are configured otherwise, zero its accumulators."""
    from tvm.script import tirx as T  # pylint: disable=import-outside-toplevel

    config = plan.config_bytes()
    words = [int.from_bytes(config[8 * i:8 * i + 8], "little") for i in range(8)]  # the 64 bytes as 8 stores
    accumulators = plan.mt * plan.nt

    @T.macro
    def configure_and_zero():
        # (64 bytes in global scope go on the stack; "local" ones were a workspace call per block)
        cfg = T.alloc_buffer((8,), "uint64", scope="global")
        cfg[0] = T.uint64(words[0])
        cfg[1] = T.uint64(words[1])
        cfg[2] = T.uint64(words[2])
        cfg[3] = T.uint64(words[3])
        cfg[4] = T.uint64(words[4])
        cfg[5] = T.uint64(words[5])
        cfg[6] = T.uint64(words[6])
        cfg[7] = T.uint64(words[7])
        # ldtilecfg costs hundreds of cycles: only where this thread's tiles are configured otherwise
        cur = T.alloc_buffer((8,), "uint64", scope="global")
        T.evaluate(_intrin("sttilecfg", T.address_of(cur[0])))
        if (cur[0] != cfg[0]) or (cur[1] != cfg[1]) or (cur[2] != cfg[2]) or (cur[3] != cfg[3]) or (
                cur[4] != cfg[4]) or (cur[5] != cfg[5]) or (cur[6] != cfg[6]) or (cur[7] != cfg[7]):
            T.evaluate(_intrin("ldtilecfg", T.address_of(cfg[0])))
        for t in T.unroll(accumulators):
            T.evaluate(_intrin("tilezero", T.Cast("int8", t)))

    return configure_and_zero


def _intrin(name, *args):
    """A call of the LLVM intrinsic ``llvm.x86.<name>`` (AMX: tile numbers are immediates); in a
    build made under :func:`harness.schedules.amx_emulate.emulated`, of the C emulator's
    ``harness_amx_<name>`` (tile numbers as int32); under :func:`~harness.schedules.amx_emulate.
    without_tiles`, nothing."""
    from tvm.script import tirx as T  # pylint: disable=import-outside-toplevel

    if _MODE["tiles"] == "emulated":
        return T.call_extern("void", f"harness_amx_{name}",
                             *[T.Cast("int32", a) if str(a.ty) == "int8" else a for a in args])
    if _MODE["tiles"] == "dropped":
        return T.int32(0)
    return T.call_llvm_intrin("void", f"llvm.x86.{name}", *args)


# How the tile instructions are emitted (`_intrin`: TILE_MODES), and each registered plan's
# intrinsics with the mode they were registered in: a switch of mode registers them again
# (tensorize inlines the implementation current when a schedule is applied, so builds follow the
# mode of their time).
TILE_MODES = ("hardware", "emulated", "dropped")
_MODE = {"tiles": "hardware"}
_REGISTERED: dict = {}  # dot intrinsic name -> (register function, plan, tile mode)


def _registered(name: str) -> bool:
    entry = _REGISTERED.get(name)
    return entry is not None and entry[2] == _MODE["tiles"]


def _register(register, plan, names, impls) -> None:
    """TensorIntrin.register of `impls` ((desc, impl) pairs: zero, dot, store, ...) under `names`."""
    from tvm.s_tir import TensorIntrin  # pylint: disable=import-outside-toplevel

    for name, (desc, impl) in zip(names, impls):
        TensorIntrin.register(name, desc, impl, override=True)
    _REGISTERED[names[1]] = (register, plan, _MODE["tiles"])


LOADER_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "amx_loader.c")
EMULATOR_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "amx_emulator.c")


def export_addons(has_amx_kernels: bool) -> list:
    """The C sources linked into a library exported from a build (``export_library(addons=)``):
    with AMX kernels, the tile-state request run when the library is loaded (``amx_loader.c``), or,
    for a build made in the emulator's mode, the emulator itself (the library then runs anywhere
    without it loaded); none otherwise (nor for a build without its tile instructions)."""
    if not has_amx_kernels or _MODE["tiles"] == "dropped":
        return []
    return [EMULATOR_SOURCE if _MODE["tiles"] == "emulated" else LOADER_SOURCE]


def set_tile_mode(mode: str) -> str:
    """Emit the tile instructions as themselves ("hardware"), as calls of the C emulator
    ("emulated") or not at all ("dropped": what is left of the kernels, to time), and register
    every plan's intrinsics registered so far again in that form; returns the mode before."""
    if mode not in TILE_MODES:
        raise ValueError(f"tile mode {mode!r}; valid: {', '.join(TILE_MODES)}")
    before, _MODE["tiles"] = _MODE["tiles"], mode
    if mode != before:
        for register, plan, _ in list(_REGISTERED.values()):
            register(plan)
    return before


def amx_intrinsics(plan: TilePlan, data_dtype: str = "uint8") -> Tuple[str, str, str]:
    """Register (once) and name the (zero, dot, store) tensor intrinsics of `plan`."""
    from tvm.script import tirx as T  # pylint: disable=import-outside-toplevel

    if data_dtype != "uint8":
        raise NotApplicable("tdpbusd multiplies unsigned data")
    names = tuple(f"harness_amx_{part}_{plan.key}" for part in ("zero", "dot", "store"))
    if _registered(names[1]):
        return names
    mt, tm, nt, kc, sw = plan.mt, plan.tm, plan.nt, plan.kc, plan.stride
    rows = mt * tm  # output pixels of one micro-kernel
    a_rows = (rows - 1) * sw + 1
    configure_and_zero, intrin = _configure_and_zero(plan), _intrin

    @T.prim_func(s_tir=True)
    def zero_desc(c: T.Buffer((nt, rows, 16), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads()
            T.writes(c[0:nt, 0:rows, 0:16])
            for x, j in T.grid(rows, nt * 16):
                with T.sblock("init"):
                    vj = T.axis.spatial(nt * 16, j)
                    vx = T.axis.spatial(rows, x)
                    c[vj // 16, vx, vj % 16] = 0

    @T.prim_func(s_tir=True)
    def zero_impl(c: T.Buffer((nt, rows, 16), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads()
            T.writes(c[0:nt, 0:rows, 0:16])
            configure_and_zero()

    @T.prim_func(s_tir=True)
    def dot_desc(
        a: T.Buffer((a_rows, kc), "uint8", offset_factor=1, strides=[T.int32(), 1]),
        b: T.Buffer((nt, kc // 4, 16, 4), "int8", offset_factor=1),
        c: T.Buffer((nt, rows, 16), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:nt, 0:rows, 0:16], a[0:a_rows, 0:kc], b[0:nt, 0:kc // 4, 0:16, 0:4])
            T.writes(c[0:nt, 0:rows, 0:16])
            for x, j, k in T.grid(rows, nt * 16, kc):
                with T.sblock("update"):
                    vj = T.axis.spatial(nt * 16, j)
                    vx = T.axis.spatial(rows, x)
                    vk = T.axis.reduce(kc, k)
                    c[vj // 16, vx, vj % 16] = c[vj // 16, vx, vj % 16] + T.Cast("int32", a[vx * sw, vk]) * T.Cast(
                        "int32", b[vj // 16, vk // 4, vj % 16, vk % 4])

    a_stride = T.int32()
    b_stride = T.int32()

    @T.prim_func(s_tir=True)
    def dot_impl(
        a: T.Buffer((a_rows, kc), "uint8", offset_factor=1, strides=[a_stride, 1]),
        b: T.Buffer((nt, kc // 4, 16, 4), "int8", offset_factor=1, strides=[b_stride, 64, 4, 1]),
        c: T.Buffer((nt, rows, 16), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:nt, 0:rows, 0:16], a[0:a_rows, 0:kc], b[0:nt, 0:kc // 4, 0:16, 0:4])
            T.writes(c[0:nt, 0:rows, 0:16])
            for m in T.unroll(mt):
                T.evaluate(intrin("tileloadd64", T.Cast("int8", mt * nt + m), T.address_of(a[m * tm * sw, 0]),
                                  T.Cast("int64", a_stride * sw)))
            for n in T.unroll(nt):
                T.evaluate(intrin("tileloadd64", T.Cast("int8", mt * nt + mt + n), T.address_of(b[n, 0, 0, 0]),
                                  T.int64(64)))
            for m in T.unroll(mt):
                for n in T.unroll(nt):
                    T.evaluate(intrin("tdpbusd", T.Cast("int8", m * nt + n), T.Cast("int8", mt * nt + m),
                                      T.Cast("int8", mt * nt + mt + n)))

    @T.prim_func(s_tir=True)
    def store_desc(
        c: T.Buffer((nt, rows, 16), "int32", offset_factor=1, scope="local"),
        d: T.Buffer((nt, rows, 16), "int32", offset_factor=1, strides=[T.int32(), T.int32(), 1]),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:nt, 0:rows, 0:16])
            T.writes(d[0:nt, 0:rows, 0:16])
            for n, x, lane in T.grid(nt, rows, 16):
                with T.sblock("store"):
                    vn, vx, vl = T.axis.remap("SSS", [n, x, lane])
                    d[vn, vx, vl] = c[vn, vx, vl]

    @T.prim_func(s_tir=True)
    def store_desc_1(  # one accumulator tile column: the copy block has no output-channel-tile iter
        c: T.Buffer((1, rows, 16), "int32", offset_factor=1, scope="local"),
        d: T.Buffer((1, rows, 16), "int32", offset_factor=1, strides=[T.int32(), T.int32(), 1]),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0, 0:rows, 0:16])
            T.writes(d[0, 0:rows, 0:16])
            for x, lane in T.grid(rows, 16):
                with T.sblock("store"):
                    vx, vl = T.axis.remap("SS", [x, lane])
                    d[0, vx, vl] = c[0, vx, vl]

    d_stride0 = T.int32()
    d_stride1 = T.int32()

    @T.prim_func(s_tir=True)
    def store_impl(
        c: T.Buffer((nt, rows, 16), "int32", offset_factor=1, scope="local"),
        d: T.Buffer((nt, rows, 16), "int32", offset_factor=1, strides=[d_stride0, d_stride1, 1]),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:nt, 0:rows, 0:16])
            T.writes(d[0:nt, 0:rows, 0:16])
            for m in T.unroll(mt):
                for n in T.unroll(nt):
                    T.evaluate(intrin("tilestored64", T.Cast("int8", m * nt + n), T.address_of(d[n, m * tm, 0]),
                                      T.Cast("int64", d_stride1 * 4)))

    _register(amx_intrinsics, plan, names,
              [(zero_desc, zero_impl), (dot_desc, dot_impl), (store_desc if nt > 1 else store_desc_1, store_impl)])
    return names


_NAME = re.compile(r"harness_amx_(?:zero|dot|store)_m(\d+)x(\d+)_n(\d+)_k(\d+)_s(\d+)")


_CHANNEL_NAME = re.compile(r"harness_amx_(?:zero|dot|store)_k(\d+)_x(\d+)x(\d+)_c(\d+)(_rows)?")


def register_named(text: str) -> None:
    """Register the AMX intrinsics that `text` (e.g. a tuning database's records) names: a record
    of an AMX kernel replays only where its tile plan's intrinsics are registered (pixel-row
    plans ``..._m<mt>x<tm>_n<nt>_k<kc>_s<stride>`` and channel-row plans ``..._k<mt>_x<nt>x<tn>_c<kc>``)."""
    for mt, tm, nt, kc, stride in sorted(set(_NAME.findall(text))):
        amx_intrinsics(TilePlan(int(mt), int(tm), int(nt), int(kc), int(stride)))
    for mt, nt, tn, kc, rows in sorted(set(_CHANNEL_NAME.findall(text))):
        channel_intrinsics(ChannelPlan(mt=int(mt), tn=int(tn), nt=int(nt), kc=int(kc), rows_outer=bool(rows)))


# ----------------------------------------------------------------------------- the conv schedule

_KC = (64, 32, 16, 8)


def _x_stride(sch, anchor, conv) -> int:
    """The conv's stride along the output width (data column = x * stride + ...)."""
    from tvm.sym.pattern import detect_linear_equation  # pylint: disable=import-outside-toplevel

    block = sch.get(anchor.rv)
    col = block.reads[0].region[-1].min
    coef = detect_linear_equation(col, [anchor.iters[conv.x_i].var])
    if len(coef) != 2:
        raise NotApplicable(f"data column {col} is not linear in the output column")
    return _int(coef[0])


def _divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def plan_for(conv, stride: int, *, tm: Optional[int] = None, mt: Optional[int] = None,
             nt: Optional[int] = None) -> TilePlan:
    """The default :class:`TilePlan` of an 8-bit conv (NotApplicable where AMX cannot run it):
    tiles as tall as a divisor of the output width allows (at most 16 rows), 2 x 2 accumulator
    tiles where the width and the output channels split so, else 1 x 3 / 1 x 2 / 2 x 1."""
    if conv.data_dtype != "uint8":
        raise NotApplicable("tdpbusd multiplies unsigned data only (the data is int8)")
    if conv.k_ext % ACC_LANES:
        raise NotApplicable(f"{conv.k_ext} output channels: not a multiple of {ACC_LANES}")
    kc = next((k for k in _KC if conv.c_ext % k == 0), None)
    if kc is None:
        raise NotApplicable(f"{conv.c_ext} input channels: not a multiple of 8")
    tm = tm or _divisor_at_most(conv.x_ext, MAX_ROWS)
    x_tiles, k_tiles = conv.x_ext // tm, conv.k_ext // ACC_LANES
    if mt is None or nt is None:
        if x_tiles % 2 == 0 and k_tiles % 2 == 0:
            mt, nt = 2, 2
        elif k_tiles % 3 == 0:
            mt, nt = 1, 3
        elif k_tiles % 2 == 0:
            mt, nt = 1, 2
        elif x_tiles % 2 == 0:
            mt, nt = 2, 1
        else:
            mt, nt = 1, 1
    return TilePlan(mt, tm, nt, kc, stride)


def schedule_amx_conv(sch, blocks, anchor, target, *, plan: Optional[TilePlan] = None) -> TilePlan:
    """The 8-bit NCHW conv2d (``conv2d_nchw``: uint8 data, int8 weights, int32 sums) on AMX tiles
    (the module docstring has the loop nest); `plan` (default :func:`plan_for`) sets the tiles."""
    if not target_has_amx(target):
        raise NotApplicable(f"no {FEATURE} on this target")
    conv = int8_conv_iters(sch, anchor)
    plan = plan or plan_for(conv, _x_stride(sch, anchor, conv))
    mt, tm, nt, kc = plan.mt, plan.tm, plan.nt, plan.kc
    if conv.x_ext % (mt * tm) or conv.k_ext % (nt * ACC_LANES) or conv.c_ext % kc:
        raise NotApplicable(f"tile plan {plan.key} does not divide the conv")
    zero, dot, store_intrin = amx_intrinsics(plan, conv.data_dtype)
    k_i, c_i, x_i = conv.k_i, conv.c_i, conv.x_i
    iters = anchor.iters
    parts = pack_int8_conv(sch, blocks, anchor, kc,
                           lambda k, c, r, s: (c // kc, r, s, k // 16, (c % kc) // 4, k % 16, c % 4))
    epilogue = parts.epilogue
    if epilogue is None:  # the int32 sums are the kernel's output: a copy stage writes it
        epilogue = sch.cache_write(anchor.rv, 0, "global")
    sch.transform_layout(anchor.rv, ("write", 0), lambda n, k, y, x: (n, y, k // 16, x, k % 16))
    store = sch.cache_write(anchor.rv, 0, "local")  # the tiles (never touched as memory)

    loops = sch.get_loops(anchor.rv)
    spatial, reduce = [], []
    k_in = x_in = c_in = None
    for i, loop in enumerate(loops):
        if i == k_i:
            k_out, k_in = sch.split(loop, [None, nt * ACC_LANES])
            spatial.append(k_out)
        elif i == x_i:
            x_out, x_in = sch.split(loop, [None, mt * tm])
            spatial.append(x_out)
        elif i == c_i:
            c_out, c_in = sch.split(loop, [None, kc])
            reduce.append(c_out)
        elif iters[i].iter_type == iters[i].CommReduce:
            reduce.append(loop)
        else:
            spatial.append(loop)
    sch.reorder(*spatial, *reduce, x_in, k_in, c_in)
    sch.reverse_compute_at(store, spatial[-1], preserve_unit_loops=True)
    sch.reverse_compute_at(epilogue, spatial[-1], preserve_unit_loops=False)
    outer = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
    if _int(sch.get(outer).extent) > 1:
        sch.parallel(outer)
    init = sch.decompose_reduction(anchor.rv, reduce[0])
    sch.tensorize(x_in, dot)
    sch.tensorize(sch.get_loops(init)[-2], zero)
    sch.tensorize(sch.get_loops(store)[-3 if nt > 1 else -2], store_intrin)
    bits = vector_bits(target)
    epi_loops = sch.get_loops(epilogue)
    if len(epi_loops) > 1 and _int(sch.get(epi_loops[-1]).extent) > 1:
        sch.vectorize(epi_loops[-1])
    for blk in parts.prologue + parts.rest:
        _schedule_injective(sch, blk.rv, bits)
    _schedule_injective(sch, parts.weights, bits)
    return plan


def _schedule_injective(sch, block_rv, bits):
    from .cpu import schedule_injective  # pylint: disable=import-outside-toplevel

    schedule_injective(sch, block_rv, bits)


def _amx_anchor(sch, target):
    if not target_has_amx(target):
        raise NotApplicable(f"no {FEATURE} on this target")
    blocks = _root_blocks(sch)
    reductions = [b for b in blocks if b.is_reduction]
    if len(reductions) != 1:
        raise NotApplicable(f"{len(reductions)} reduction blocks")
    return blocks, reductions[0]


def schedule_amx(sch, target) -> str:
    """A default-schedule rule (:func:`harness.schedules.cpu_default.default_schedule`): the fused
    function's one 8-bit conv on AMX tiles with pixel rows (:func:`schedule_amx_conv`: any
    stride), or NotApplicable."""
    blocks, anchor = _amx_anchor(sch, target)
    plan = schedule_amx_conv(sch, blocks, anchor, target)
    return f"{AMX_KIND} {plan.key}"


def schedule_amx_channels(sch, target) -> str:
    """A default-schedule rule, tried before :func:`schedule_amx`: a stride-1 conv on AMX tiles with
    output-channel rows (:func:`schedule_amx_channel_conv`), or NotApplicable."""
    blocks, anchor = _amx_anchor(sch, target)
    plan = schedule_amx_channel_conv(sch, blocks, anchor, target)
    return f"{AMX_KIND} {plan.key}"



# ----------------------------------------------------------------------------- channel-row tiles (stride 1)


class ChannelPlan(TilePlan):  # pylint: disable=too-few-public-methods
    """The other orientation, for stride-1 convs: accumulator tiles of 16 output channels (rows) x
    ``tn`` pixels (int32 columns), so that the sums leave the tiles in the output's own order
    (pixels contiguous: the epilogue reads them as vectors). ``tdpbsud`` multiplies the int8
    weight tiles (16 channels x kc bytes) by uint8 data tiles of kc / 4 rows x ``tn`` pixels x
    4 channels: the data layout is ``[n, y, c / 4, x, 4]``, the 4-channel interleave the VNNI
    schedule packs too (cheap), not the 64-channel rows of :class:`TilePlan` (a byte transpose).
    ``mt`` tiles of 16 output channels x ``nt`` tiles of ``tn`` pixels.

    ``rows_outer``: the kernel's parallel loop runs over output rows first, each thread computing
    all output channels of its rows (the rows its own data packing stage wrote), instead of over
    output-channel blocks first (each thread its channels of every row). It is part of the key (so
    of the intrinsics' names, which is how a record's plan reaches a kernel): ``..._rows``."""

    def __init__(self, mt: int, tn: int, nt: int, kc: int, rows_outer: bool = False):
        super().__init__(mt, 16, nt, kc, 1)
        if not 1 <= tn <= MAX_ROWS:
            raise ValueError(f"no AMX channel-row plan with {tn} pixels per tile")
        self.tn, self.rows_outer = tn, bool(rows_outer)

    @property
    def key(self) -> str:
        return f"k{self.mt}_x{self.nt}x{self.tn}_c{self.kc}" + ("_rows" if self.rows_outer else "")

    def config_bytes(self) -> bytes:
        cfg = bytearray(64)
        cfg[0] = 1
        shapes = {}
        for m in range(self.mt):
            for n in range(self.nt):
                shapes[self.acc(m, n)] = (16, self.tn * 4)
            shapes[self.a_tile(m)] = (16, self.kc)
        for n in range(self.nt):
            shapes[self.b_tile(n)] = (self.kc // 4, self.tn * 4)
        for tile, (rows, colsb) in shapes.items():
            cfg[16 + 2 * tile] = colsb & 0xFF
            cfg[17 + 2 * tile] = colsb >> 8
            cfg[48 + tile] = rows
        return bytes(cfg)


TILE_STORE = "_tile"  # the suffix of a channel-row plan's store of one tile (the schedule's since 2026-12-06)


def channel_intrinsics(plan: ChannelPlan) -> Tuple[str, str, str]:
    """Register (once) and name the (zero, dot, store) intrinsics of a :class:`ChannelPlan`."""
    from tvm.script import tirx as T  # pylint: disable=import-outside-toplevel

    names = tuple(f"harness_amx_{part}_{plan.key}" for part in ("zero", "dot", "store"))
    used = (names[0], names[1], names[2] + TILE_STORE)  # what the schedule tensorizes with
    if _registered(names[1]):
        return used
    mt, nt, tn, kc = plan.mt, plan.nt, plan.tn, plan.kc
    chans, pix = mt * 16, nt * tn
    configure_and_zero, intrin = _configure_and_zero(plan), _intrin

    @T.prim_func(s_tir=True)
    def zero_desc(c: T.Buffer((chans, pix), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads()
            T.writes(c[0:chans, 0:pix])
            for k, x in T.grid(chans, pix):
                with T.sblock("init"):
                    vk, vx = T.axis.remap("SS", [k, x])
                    c[vk, vx] = 0

    @T.prim_func(s_tir=True)
    def zero_impl(c: T.Buffer((chans, pix), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads()
            T.writes(c[0:chans, 0:pix])
            configure_and_zero()

    @T.prim_func(s_tir=True)
    def dot_desc(
        a: T.Buffer((mt, 16, kc), "int8", offset_factor=1, strides=[T.int32(), T.int32(), 1]),
        b: T.Buffer((kc // 4, pix, 4), "uint8", offset_factor=1, strides=[T.int32(), 4, 1]),
        c: T.Buffer((chans, pix), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:chans, 0:pix], b[0:kc // 4, 0:pix, 0:4], a[0:mt, 0:16, 0:kc])
            T.writes(c[0:chans, 0:pix])
            for k, x, r in T.grid(chans, pix, kc):
                with T.sblock("update"):
                    vk, vx, vr = T.axis.remap("SSR", [k, x, r])
                    c[vk, vx] = c[vk, vx] + T.Cast("int32", b[vr // 4, vx, vr % 4]) * T.Cast(
                        "int32", a[vk // 16, vk % 16, vr])

    a_s0 = T.int32()
    a_s1 = T.int32()
    b_s0 = T.int32()

    @T.prim_func(s_tir=True)
    def dot_impl(
        a: T.Buffer((mt, 16, kc), "int8", offset_factor=1, strides=[a_s0, a_s1, 1]),
        b: T.Buffer((kc // 4, pix, 4), "uint8", offset_factor=1, strides=[b_s0, 4, 1]),
        c: T.Buffer((chans, pix), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:chans, 0:pix], b[0:kc // 4, 0:pix, 0:4], a[0:mt, 0:16, 0:kc])
            T.writes(c[0:chans, 0:pix])
            for m in T.unroll(mt):
                T.evaluate(intrin("tileloadd64", T.Cast("int8", mt * nt + m), T.address_of(a[m, 0, 0]),
                                  T.Cast("int64", a_s1)))
            for n in T.unroll(nt):
                T.evaluate(intrin("tileloadd64", T.Cast("int8", mt * nt + mt + n), T.address_of(b[0, n * tn, 0]),
                                  T.Cast("int64", b_s0)))
            for m in T.unroll(mt):
                for n in T.unroll(nt):
                    T.evaluate(intrin("tdpbsud", T.Cast("int8", m * nt + n), T.Cast("int8", mt * nt + m),
                                      T.Cast("int8", mt * nt + mt + n)))

    @T.prim_func(s_tir=True)
    def store_desc(
        c: T.Buffer((chans, pix), "int32", offset_factor=1, scope="local"),
        d: T.Buffer((chans, pix), "int32", offset_factor=1, strides=[T.int32(), 1], scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:chans, 0:pix])
            T.writes(d[0:chans, 0:pix])
            for k, x in T.grid(chans, pix):
                with T.sblock("store"):
                    vk, vx = T.axis.remap("SS", [k, x])
                    d[vk, vx] = c[vk, vx]

    d_s0 = T.int32()

    @T.prim_func(s_tir=True)
    def store_impl(
        c: T.Buffer((chans, pix), "int32", offset_factor=1, scope="local"),
        d: T.Buffer((chans, pix), "int32", offset_factor=1, strides=[d_s0, 1], scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:chans, 0:pix])
            T.writes(d[0:chans, 0:pix])
            for m in T.unroll(mt):
                for n in T.unroll(nt):
                    T.evaluate(intrin("tilestored64", T.Cast("int8", m * nt + n), T.address_of(d[m * 16, n * tn]),
                                      T.Cast("int64", d_s0 * 4)))

    # One accumulator tile (16 channels x tn pixels) to a "global" buffer of that size, which TVM
    # 0.27 keeps on the stack where it is under 1 KB (a "local" one, or a larger one, is a workspace
    # call and its free inside the parallel loop). The tile's number is its place in the block's
    # tile buffer (c's offset: m 16 pix + n tn), a constant once the unrolled tile loops are.
    @T.prim_func(s_tir=True)
    def tile_store_desc(
        c: T.Buffer((16, tn), "int32", offset_factor=1, strides=[T.int32(), 1], scope="local"),
        d: T.Buffer((16, tn), "int32", offset_factor=1, strides=[T.int32(), 1]),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:16, 0:tn])
            T.writes(d[0:16, 0:tn])
            for k, x in T.grid(16, tn):
                with T.sblock("store"):
                    vk, vx = T.axis.remap("SS", [k, x])
                    d[vk, vx] = c[vk, vx]

    c_off = T.int32()
    c_s0 = T.int32()
    t_s0 = T.int32()

    @T.prim_func(s_tir=True)
    def tile_store_impl(
        c: T.Buffer((16, tn), "int32", elem_offset=c_off, offset_factor=1, strides=[c_s0, 1], scope="local"),
        d: T.Buffer((16, tn), "int32", offset_factor=1, strides=[t_s0, 1]),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:16, 0:tn])
            T.writes(d[0:16, 0:tn])
            T.evaluate(intrin("tilestored64", T.Cast("int8", c_off // (16 * c_s0) * nt + c_off % c_s0 // tn),
                              T.address_of(d[0, 0]), T.Cast("int64", t_s0 * 4)))

    # (the block store is the one records made before 2026-12-06 hold, registered so that they replay)
    _register(channel_intrinsics, plan, names + (used[2],),
              [(zero_desc, zero_impl), (dot_desc, dot_impl), (store_desc, store_impl), (tile_store_desc, tile_store_impl)])
    return used


def channel_plan_for(conv) -> ChannelPlan:
    """The default :class:`ChannelPlan` of a stride-1 8-bit conv: ``tn`` the largest divisor of the
    output width up to 16, 2 x 2 accumulator tiles where channels and width split so."""
    if conv.data_dtype != "uint8":
        raise NotApplicable("tdpbsud multiplies unsigned data only (the data is int8)")
    if conv.k_ext % 16:
        raise NotApplicable(f"{conv.k_ext} output channels: not a multiple of 16")
    kc = next((k for k in _KC if conv.c_ext % k == 0), None)
    if kc is None:
        raise NotApplicable(f"{conv.c_ext} input channels: not a multiple of 8")
    tn = _divisor_at_most(conv.x_ext, MAX_ROWS)
    k_tiles, x_tiles = conv.k_ext // 16, conv.x_ext // tn
    mt = 2 if k_tiles % 2 == 0 else 1
    nt = 2 if x_tiles % 2 == 0 else 1
    if nt == 1 and mt == 2 and k_tiles % 3 == 0:
        mt = 3
    return ChannelPlan(mt, tn, nt, kc, rows_outer=rows_outer_by_default(conv))


# Rows-outer where the conv has at least this many output pixels per weight byte of one input
# channel (y x / (k r s): its input, packed by rows, outweighs its weights ~this much). Measured
# 2026-12-03 on a 2-core Emerald Rapids guest, both cores, one A/B run each: rows-outer ran 1.40x
# and 1.65x faster on resnet50's 64 -> 64 and 256 -> 64 1x1 convs at 56x56 (49 pixels per byte)
# and 0.70-0.93x on its 14x14 layers (0.08-0.77); the ratios in between were not measured.
ROWS_OUTER_PIXELS_PER_WEIGHT = 32


def rows_outer_by_default(conv) -> bool:
    """Whether the default plan of `conv` iterates rows outermost (:data:`ROWS_OUTER_PIXELS_PER_WEIGHT`)."""
    return conv.y_ext * conv.x_ext >= ROWS_OUTER_PIXELS_PER_WEIGHT * conv.k_ext * conv.taps


def schedule_amx_channel_conv(sch, blocks, anchor, target, *, plan: Optional[ChannelPlan] = None) -> ChannelPlan:
    """A stride-1 8-bit NCHW conv2d on AMX tiles in the :class:`ChannelPlan` orientation:

        data   [n, c, y, x]   -> [n, y, c / 4, x, 4]                      (padding / packing stage)
        weight [k, c, r, s]   -> [c / kc, r, s, k / 16, 16, kc]             (folded into the constant)
        acc    [n, k, y, x]   -> [n, y, k, x]                               (int32, tile stores)

        parallel for (n, k / (16 mt), y, x / (nt tn)):     (rows_outer: n, y, x / (nt tn), k / (16 mt))
            zero; for (c / kc, r, s): dot (mt weight tiles, nt data tiles, tdpbsud); store
            epilogue -> output NCHW (pixels contiguous in the tiles and in the output)
    """
    if not target_has_amx(target):
        raise NotApplicable(f"no {FEATURE} on this target")
    conv = int8_conv_iters(sch, anchor)
    if _x_stride(sch, anchor, conv) != 1:
        raise NotApplicable("strided: data rows are not contiguous pixels")
    plan = plan or channel_plan_for(conv)
    mt, tn, nt, kc = plan.mt, plan.tn, plan.nt, plan.kc
    if conv.x_ext % (nt * tn) or conv.k_ext % (mt * 16) or conv.c_ext % kc:
        raise NotApplicable(f"tile plan {plan.key} does not divide the conv")
    k_i, c_i, x_i = conv.k_i, conv.c_i, conv.x_i
    iters = anchor.iters
    parts = pack_int8_conv(sch, blocks, anchor, 4,
                           lambda k, c, r, s: (c // kc, r, s, k // 16, k % 16, c % kc))
    # pack_int8_conv wrote the data [n, c / 4, y, x, 4]; rows of one pixel row side by side
    data_pack = next(b for b in parts.prologue if any(
        w.source.same_as(sch.get(anchor.rv).reads[0].source) for w in sch.get(b.rv).writes))
    sch.transform_layout(data_pack.rv, ("write", 0), lambda n, c, y, x, i: (n, y, c, x, i))
    epilogue = parts.epilogue
    if epilogue is None:
        epilogue = sch.cache_write(anchor.rv, 0, "global")
    sch.transform_layout(anchor.rv, ("write", 0), lambda n, k, y, x: (n, y, k, x))
    store = sch.cache_write(anchor.rv, 0, "local")  # (the sums of one tile: "global", on the stack)

    zero, dot, store_intrin = channel_intrinsics(plan)
    loops = sch.get_loops(anchor.rv)
    spatial, reduce = [], []
    k_in = x_in = c_in = None
    for i, loop in enumerate(loops):
        if i == k_i:
            k_out, k_in = sch.split(loop, [None, mt * 16])
            spatial.append(k_out)
        elif i == x_i:
            x_out, x_in = sch.split(loop, [None, nt * tn])
            spatial.append(x_out)
        elif i == c_i:
            c_out, c_in = sch.split(loop, [None, kc])
            reduce.append(c_out)
        elif iters[i].iter_type == iters[i].CommReduce:
            reduce.append(loop)
        else:
            spatial.append(loop)
    if plan.rows_outer:  # (n, k / 16mt, y, x / ntn) -> (n, y, x / ntn, k / 16mt)
        spatial.append(spatial.pop(spatial.index(k_out)))
    sch.reorder(*spatial, *reduce, k_in, x_in, c_in)
    sch.reverse_compute_at(store, spatial[-1], preserve_unit_loops=True)
    # the tiles stored and their epilogue run one tile at a time: (mt, nt) unrolled x (16, tn)
    m_o, k_tile = sch.split(sch.get_loops(store)[-2], [mt, 16])
    n_o, x_tile = sch.split(sch.get_loops(store)[-1], [nt, tn])
    sch.reorder(m_o, n_o, k_tile, x_tile)
    sch.reverse_compute_at(epilogue, n_o, preserve_unit_loops=False)
    sch.unroll(m_o)
    sch.unroll(n_o)
    outer = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
    if _int(sch.get(outer).extent) > 1:
        sch.parallel(outer)
    init = sch.decompose_reduction(anchor.rv, reduce[0])
    sch.tensorize(k_in, dot)
    sch.tensorize(sch.get_loops(init)[-2], zero)
    sch.tensorize(k_tile, store_intrin)
    bits = vector_bits(target)
    epi_loops = sch.get_loops(epilogue)
    if len(epi_loops) > 1 and _int(sch.get(epi_loops[-1]).extent) > 1:
        sch.vectorize(epi_loops[-1])
    for blk in parts.prologue + parts.rest:
        if blk is data_pack:
            _schedule_interleave(sch, blk.rv)
        else:
            _schedule_injective(sch, blk.rv, bits)
    _schedule_injective(sch, parts.weights, bits)
    return plan


def channel_plans(conv) -> list:
    """Every :class:`ChannelPlan` a stride-1 8-bit conv can run (its search space, default first):
    1-3 tiles of 16 output channels, 1 or 2 pixel tiles of any width divisor from 4 to 16 pixels
    (or the whole row where it is narrower), within the 8 tile registers, each with the output
    channels outer and with the rows outer (which loops the threads divide)."""
    default = channel_plan_for(conv)
    k_tiles, width = conv.k_ext // 16, conv.x_ext
    widths = [d for d in range(min(4, width), MAX_ROWS + 1) if width % d == 0] or [default.tn]
    plans = [default]
    for tn in widths:
        for nt in (1, 2):
            for mt in (1, 2, 3):
                if (width // tn) % nt or k_tiles % mt or mt * nt + mt + nt > TILES:
                    continue
                for rows_outer in (False, True):
                    plan = ChannelPlan(mt, tn, nt, default.kc, rows_outer)
                    if plan.key != default.key:
                        plans.append(plan)
    return plans


def amx_channel_spaces(sch, target) -> list:
    """`harness tune`'s search space of a stride-1 8-bit conv kernel on AMX: one design space per
    tile plan (:func:`channel_plans`), each the channel-row schedule of that plan, copies of `sch`.
    The plan is the tensor intrinsics' own (their names hold it), so plans are design spaces, not
    sampled decisions (a trace replayed with another decision would keep the first plan's
    intrinsics). NotApplicable, before `sch` is changed, where the AMX kernel does not apply."""
    blocks, anchor = _amx_anchor(sch, target)
    conv = int8_conv_iters(sch, anchor)
    if _x_stride(sch, anchor, conv) != 1:
        raise NotApplicable("strided: data rows are not contiguous pixels")
    spaces = []
    for plan in channel_plans(conv):
        space = sch.copy()
        schedule_amx_channel_conv(space, *_amx_anchor(space, target), target, plan=plan)
        spaces.append(space)
    return spaces


def _schedule_interleave(sch, block_rv) -> None:
    """The data packing stage ``[n, c, y, x] -> [n, y, c / 4, x, 4]``: iterated in the order it
    writes, (n, y, c / 4) parallel, each output row a loop over x with the 4 channels unrolled
    (4 contiguous loads, one interleaved 4-byte store per pixel: LLVM vectorizes it with shuffles)."""
    if len(sch.get(block_rv).iter_vars) == 4:
        sch.transform_block_layout(block_rv, lambda n, c, y, x: (n, y, c // 4, x, c % 4))
    else:  # (a unit batch is no iter of a cache_read stage)
        sch.transform_block_layout(block_rv, lambda c, y, x: (y, c // 4, x, c % 4))
    loops = sch.get_loops(block_rv)
    outer = sch.fuse(*loops[:-2])
    sch.parallel(outer)
    sch.unroll(loops[-1])


RULES = (schedule_amx_channels, schedule_amx)  # the default-schedule rules, in the order they are tried


def strided_pointwise_pass(target):
    """Relax pass (before legalization): an 8-bit 1x1 conv with a stride and no padding reads every
    stride-th pixel; it becomes a strided slice of its input (a small copy) and a stride-1 1x1 conv,
    which runs on the channel-row tiles (the pixel-row form of strided convs is several times
    slower here). The sums are the same integers."""
    import tvm  # pylint: disable=import-outside-toplevel
    from tvm import relax  # pylint: disable=import-outside-toplevel

    from ..build.passes.rewrite import rewrite_calls  # pylint: disable=import-outside-toplevel

    def as_slice(bb, call, _func):
        a = call.attrs
        try:
            data_ty, w_ty = call.args[0].ty, call.args[1].ty
            strides = [int(v) for v in a.strides]
            kernel = [int(v) for v in w_ty.shape.values[2:]]
            height, width = (int(v) for v in data_ty.shape.values[2:])
        except (AttributeError, TypeError, ValueError):
            return None
        if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout or a.data_layout)) != ("NCHW", "OIHW", "NCHW") \
                or str(data_ty.dtype) != "uint8" or str(w_ty.dtype) != "int8" or kernel != [1, 1] \
                or strides == [1, 1] or any(int(v) for v in a.padding) or any(int(v) != 1 for v in a.dilation) \
                or int(a.groups) != 1:
            return None
        sliced = bb.emit(relax.op.strided_slice(call.args[0], axes=[2, 3], begin=[0, 0],
                                                end=[height, width], strides=strides))
        return relax.op.nn.conv2d(sliced, call.args[1], strides=1, padding=0, data_layout="NCHW",
                                  kernel_layout="OIHW", out_dtype=str(call.ty.dtype))

    @tvm.transform.module_pass(opt_level=0, name="HarnessAMXStridedPointwise")
    def _pass(mod, _ctx):
        return rewrite_calls(mod, ["relax.nn.conv2d"], as_slice)

    return _pass

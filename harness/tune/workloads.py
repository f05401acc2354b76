"""Conv2d workloads for single-shape tuning ("tune-conv").

A :class:`ConvShape` is the user's description of one conv2d (NCHW input, OIHW kernel,
symmetric stride / padding / dilation, optional groups).  :func:`conv_workload` turns it into
a :class:`ConvWorkload`: a TIR ``PrimFunc`` in a layout that the int8 dot-product intrinsics
can be mapped onto, plus helpers that convert numpy arrays to and from that layout and a numpy
reference implementation used by the tests.

Layouts
-------
int8, packed (the default for int8 whenever the intrinsics can apply)
    data   ``NCHW{ib}c``         ``(N, Cp/ib, H, W, ib)``           uint8 on x86, int8 on CUDA
    kernel ``OIHW{ob}o{ib}i``    ``(Kp/ob, Cgp/ib, R, S, ob, ib)``  int8
    output ``NCHW{ob}c``         ``(N, Kp/ob, OH, OW, ob)``         int32

    ``ob`` (output-channel block) is the number of int32 lanes of one dot-product instruction
    and ``ib`` (input-channel block) the number of products it sums per lane: on CUDA 4 x 4 --
    the ``NCHW4c`` / ``OIHW4o4i`` layout of TVM's 2019 ``conv2d_NCHWc_int8`` dp4a template; on
    x86 the target's best exact 8-bit dot product (:func:`harness.tune.rules.cpu_int8_dots`):
    16 x 4 with VNNI (``vpdpbusd``), 16 x 2 with AVX-512BW and 8 x 2 with AVX2 (``vpmaddwd``);
    16 x 4 on other CPUs (tuned without an intrinsic).

    Channel padding: when ``C`` (per group: ``C/groups``) is not a multiple of ``ib``, or ``K``
    (per group) is not a multiple of ``ob``, the channel dimension is zero-padded up to the next
    multiple (``Cp``, ``Kp``).  Zero input channels / zero filters do not change the result; the
    extra output channels are zeros and :meth:`ConvWorkload.unpack_output` drops them.  So odd
    channel counts (e.g. the 3-channel first layer) work, at the price of the padded work.

    Grouped convolutions use the packed layout only when every group already fills whole blocks
    (``C/groups % ib == 0`` and ``K/groups % ob == 0``: a block of ``ob`` outputs must read the
    same input channels).  Other grouped convolutions (e.g. depthwise) would waste 4x-64x work
    after padding, so they fall back to the plain layout below and are tuned without intrinsics.

    On x86 the padding stage of the packed conv carries ``schedule_rule = "None"`` so that
    MetaSchedule never inlines it into the conv (an inlined ``if_then_else`` load cannot be
    tensorized); on CUDA it is inlined into the shared-memory copy as usual.

int8, plain / float32
    data ``NCHW``, kernel ``OIHW`` (grouped: ``(K, C/groups, R, S)``), output ``NCHW``.
    float32 always uses this layout (MetaSchedule's default rules handle it well).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import HarnessError

__all__ = [
    "ConvShape",
    "ConvShapeError",
    "ConvWorkload",
    "conv_workload",
    "conv_relax_module",
    "target_kind",
    "data_dtype_for",
    "packed_blocks",
    "SUPPORTED_DTYPES",
]

SUPPORTED_DTYPES = ("int8", "float32")

_FIELDS = ("n", "c", "h", "w", "k", "r", "s", "stride", "pad", "dilation", "groups")


class ConvShapeError(HarnessError, ValueError):
    """A conv shape that cannot be parsed or describes an impossible convolution."""


@dataclass(frozen=True)
class ConvShape:
    """One conv2d problem: input ``(n, c, h, w)``, ``k`` filters of ``r x s``.

    ``stride``, ``pad`` and ``dilation`` apply to both spatial dimensions.  Construction
    validates the numbers and raises a one-line :class:`ValueError` for impossible convs.
    """

    n: int
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int
    stride: int = 1
    pad: int = 0
    dilation: int = 1
    groups: int = 1

    def __post_init__(self) -> None:
        for name in _FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConvShapeError(f"conv shape: {name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
            lowest = 0 if name == "pad" else 1
            if int(value) < lowest:
                raise ConvShapeError(f"conv shape: {name} must be >= {lowest}, got {value}")
        if self.c % self.groups or self.k % self.groups:
            raise ConvShapeError(
                f"conv shape: channels (C={self.c}, K={self.k}) must be divisible by "
                f"groups={self.groups}"
            )
        for axis, size, ker in (("height", self.h, self.r), ("width", self.w, self.s)):
            extent = self.dilation * (ker - 1) + 1
            if extent > size + 2 * self.pad:
                raise ConvShapeError(
                    f"conv shape: kernel {axis} {ker} (dilated extent {extent}) is larger than "
                    f"the padded input {axis} {size}+2*{self.pad}={size + 2 * self.pad}"
                )

    # -- parsing / printing -------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> "ConvShape":
        """Parse ``"N,C,H,W,K,R,S,stride,pad[,dilation,groups]"`` (9, 10 or 11 integers)."""
        if not isinstance(text, str):
            raise ConvShapeError(f"conv shape: expected a string, got {type(text).__name__}")
        parts = [p.strip() for p in text.strip().split(",")]
        if len(parts) not in (9, 10, 11):
            raise ConvShapeError(
                f"conv shape {text!r}: expected 9 to 11 comma-separated integers "
                "N,C,H,W,K,R,S,stride,pad[,dilation,groups], got "
                f"{len(parts) if text.strip() else 0}"
            )
        values = []
        for name, part in zip(_FIELDS, parts):
            if not re.fullmatch(r"[+]?\d+", part):
                raise ConvShapeError(
                    f"conv shape {text!r}: {name} must be a non-negative integer, got {part!r}"
                )
            values.append(int(part))
        return cls(*values)

    def __str__(self) -> str:
        return ",".join(str(getattr(self, f)) for f in _FIELDS)

    @property
    def key(self) -> str:
        """A file-name friendly identifier, e.g. ``n1_c64_h56_w56_k64_r3_s3_st1_p1_d1_g1``."""
        short = ("n", "c", "h", "w", "k", "r", "s", "st", "p", "d", "g")
        return "_".join(f"{a}{getattr(self, f)}" for a, f in zip(short, _FIELDS))

    # -- derived sizes ------------------------------------------------------------------------
    @property
    def out_h(self) -> int:
        return (self.h + 2 * self.pad - self.dilation * (self.r - 1) - 1) // self.stride + 1

    @property
    def out_w(self) -> int:
        return (self.w + 2 * self.pad - self.dilation * (self.s - 1) - 1) // self.stride + 1

    @property
    def flops(self) -> int:
        """Multiply-adds counted as 2 operations: ``2*N*K*OH*OW*C/groups*R*S``."""
        return (
            2 * self.n * self.k * self.out_h * self.out_w * (self.c // self.groups) * self.r * self.s
        )

    def gops(self, latency_ms: float) -> float:
        """Throughput in GOP/s for a latency in milliseconds."""
        if not latency_ms or latency_ms <= 0 or not np.isfinite(latency_ms):
            return 0.0
        return self.flops / (latency_ms * 1e-3) / 1e9

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def _ceil_to(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def target_kind(target: Any) -> str:
    """``"llvm"`` / ``"cuda"`` / ... for a target dict, string or ``tvm.target.Target``."""
    if isinstance(target, dict):
        return str(target.get("kind", ""))
    if isinstance(target, str):
        return target.split()[0]
    return str(target.kind.name)


def data_dtype_for(dtype: str, target: Any) -> str:
    """Activation dtype used for ``dtype`` on ``target``: x86 VNNI multiplies u8 by s8."""
    if dtype == "float32":
        return "float32"
    return "uint8" if target_kind(target) == "llvm" else "int8"


@dataclass(frozen=True)
class ConvWorkload:
    """A conv2d ready for tuning: the TIR function plus everything needed to feed it.

    Attributes
    ----------
    shape : the user's :class:`ConvShape`.
    dtype : ``"int8"`` or ``"float32"`` (the *kernel* arithmetic).
    data_dtype, weight_dtype, out_dtype : element types of the three buffers.
    packed : True for the ``NCHW{ib}c`` / ``OIHW{ob}o{ib}i`` int8 layout.
    out_block : ``ob`` (output channels per block) when packed, else 0.
    in_block : ``ib`` (input channels per block) when packed, else 0.
    c_pad, k_pad : channel counts after zero padding (== c, k when nothing was padded).
    func : the TIR ``PrimFunc`` (arguments: data, kernel, output).
    name : function name, also the MetaSchedule task name.
    """

    shape: ConvShape
    dtype: str
    data_dtype: str
    weight_dtype: str
    out_dtype: str
    packed: bool
    out_block: int
    in_block: int
    c_pad: int
    k_pad: int
    func: Any
    name: str

    @property
    def layout(self) -> str:
        if self.packed:
            ob, ib = self.out_block, self.in_block
            return f"NCHW{ib}c-OIHW{ob}o{ib}i-NCHW{ob}c"
        return "NCHW-OIHW-NCHW"

    @property
    def data_shape(self) -> tuple[int, ...]:
        s = self.shape
        if self.packed:
            return (s.n, self.c_pad // self.in_block, s.h, s.w, self.in_block)
        return (s.n, s.c, s.h, s.w)

    @property
    def kernel_shape(self) -> tuple[int, ...]:
        s = self.shape
        if self.packed:
            cg_pad = self.c_pad // s.groups
            ob, ib = self.out_block, self.in_block
            return (self.k_pad // ob, cg_pad // ib, s.r, s.s, ob, ib)
        return (s.k, s.c // s.groups, s.r, s.s)

    @property
    def out_shape(self) -> tuple[int, ...]:
        s = self.shape
        if self.packed:
            return (s.n, self.k_pad // self.out_block, s.out_h, s.out_w, self.out_block)
        return (s.n, s.k, s.out_h, s.out_w)

    @property
    def padded_flops(self) -> int:
        """Operations the kernel really performs (including zero-padded channels)."""
        s = self.shape
        return 2 * s.n * self.k_pad * s.out_h * s.out_w * (self.c_pad // s.groups) * s.r * s.s

    # -- numpy helpers ------------------------------------------------------------------------
    def random_inputs(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Random NCHW data and OIHW weights of the user shape (not packed)."""
        rng = np.random.default_rng(seed)
        s = self.shape
        dshape = (s.n, s.c, s.h, s.w)
        wshape = (s.k, s.c // s.groups, s.r, s.s)
        if self.dtype == "float32":
            return (
                rng.standard_normal(dshape).astype("float32"),
                rng.standard_normal(wshape).astype("float32"),
            )
        lo = 0 if self.data_dtype == "uint8" else -128
        data = rng.integers(lo, lo + 256, size=dshape).astype(self.data_dtype)
        weight = rng.integers(-128, 128, size=wshape).astype(self.weight_dtype)
        return data, weight

    def pack_data(self, data: np.ndarray) -> np.ndarray:
        """NCHW -> the kernel's data layout (zero-padding channels)."""
        if not self.packed:
            return np.ascontiguousarray(data)
        s = self.shape
        cg, cg_pad = s.c // s.groups, self.c_pad // s.groups
        buf = np.zeros((s.n, s.groups, cg_pad, s.h, s.w), dtype=data.dtype)
        buf[:, :, :cg] = data.reshape(s.n, s.groups, cg, s.h, s.w)
        buf = buf.reshape(s.n, self.c_pad // self.in_block, self.in_block, s.h, s.w)
        return np.ascontiguousarray(buf.transpose(0, 1, 3, 4, 2))

    def pack_kernel(self, weight: np.ndarray) -> np.ndarray:
        """OIHW (grouped: ``(K, C/groups, R, S)``) -> the kernel's weight layout."""
        if not self.packed:
            return np.ascontiguousarray(weight)
        s = self.shape
        ob, ib = self.out_block, self.in_block
        kg, kg_pad = s.k // s.groups, self.k_pad // s.groups
        cg, cg_pad = s.c // s.groups, self.c_pad // s.groups
        buf = np.zeros((s.groups, kg_pad, cg_pad, s.r, s.s), dtype=weight.dtype)
        buf[:, :kg, :cg] = weight.reshape(s.groups, kg, cg, s.r, s.s)
        buf = buf.reshape(self.k_pad // ob, ob, cg_pad // ib, ib, s.r, s.s)
        return np.ascontiguousarray(buf.transpose(0, 2, 4, 5, 1, 3))

    def unpack_output(self, out: np.ndarray) -> np.ndarray:
        """The kernel's output layout -> NCHW (dropping padded channels)."""
        if not self.packed:
            return out
        s = self.shape
        kg, kg_pad = s.k // s.groups, self.k_pad // s.groups
        nchw = out.transpose(0, 1, 4, 2, 3).reshape(s.n, s.groups, kg_pad, s.out_h, s.out_w)
        return np.ascontiguousarray(nchw[:, :, :kg].reshape(s.n, s.k, s.out_h, s.out_w))

    def reference(self, data: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """Plain numpy conv2d (NCHW / OIHW -> NCHW), int32 accumulation for int8."""
        s = self.shape
        acc = "float64" if self.dtype == "float32" else "int64"
        x = np.pad(
            data.astype(acc), ((0, 0), (0, 0), (s.pad, s.pad), (s.pad, s.pad)), mode="constant"
        )
        wt = weight.astype(acc)
        cg, kg = s.c // s.groups, s.k // s.groups
        out = np.zeros((s.n, s.k, s.out_h, s.out_w), dtype=acc)
        for g in range(s.groups):
            xg = x[:, g * cg : (g + 1) * cg]
            wg = wt[g * kg : (g + 1) * kg]
            for i in range(s.r):
                for j in range(s.s):
                    hi, wj = i * s.dilation, j * s.dilation
                    patch = xg[
                        :,
                        :,
                        hi : hi + s.stride * (s.out_h - 1) + 1 : s.stride,
                        wj : wj + s.stride * (s.out_w - 1) + 1 : s.stride,
                    ]
                    out[:, g * kg : (g + 1) * kg] += np.einsum("nchw,kc->nkhw", patch, wg[:, :, i, j])
        return out.astype(self.out_dtype)


def _packed_conv_te(shape: ConvShape, data_dtype: str, ob: int, ib: int, c_pad: int, k_pad: int):
    """TE description of the packed int8 conv (NCHW{ib}c x OIHW{ob}o{ib}i -> NCHW{ob}c, int32)."""
    from tvm import te, tirx  # pylint: disable=import-outside-toplevel

    s = shape
    cg_blocks = c_pad // s.groups // ib  # input-channel blocks per group
    k_blocks_per_group = k_pad // s.groups // ob
    data = te.placeholder((s.n, c_pad // ib, s.h, s.w, ib), data_dtype, name="data")
    kernel = te.placeholder((k_pad // ob, cg_blocks, s.r, s.s, ob, ib), "int8", name="kernel")
    if s.pad:
        padded = te.compute(
            (s.n, c_pad // ib, s.h + 2 * s.pad, s.w + 2 * s.pad, ib),
            lambda n, cb, y, x, ci: tirx.if_then_else(
                tirx.all(y >= s.pad, y < s.h + s.pad, x >= s.pad, x < s.w + s.pad),
                data[n, cb, y - s.pad, x - s.pad, ci],
                tirx.const(0, data_dtype),
            ),
            name="data_pad",
        )
    else:
        padded = data
    icb = te.reduce_axis((0, cg_blocks), name="icb")
    kh = te.reduce_axis((0, s.r), name="kh")
    kw = te.reduce_axis((0, s.s), name="kw")
    ici = te.reduce_axis((0, ib), name="ici")

    def _in_block(kb, icb_):
        if s.groups == 1:
            return icb_
        return kb // k_blocks_per_group * cg_blocks + icb_

    conv = te.compute(
        (s.n, k_pad // ob, s.out_h, s.out_w, ob),
        lambda n, kb, y, x, ko: te.sum(
            padded[
                n,
                _in_block(kb, icb),
                y * s.stride + kh * s.dilation,
                x * s.stride + kw * s.dilation,
                ici,
            ].astype("int32")
            * kernel[kb, icb, kh, kw, ko, ici].astype("int32"),
            axis=[icb, kh, kw, ici],
        ),
        name="conv2d_NCHWc_int8",
    )
    return data, kernel, conv


def _plain_conv_te(shape: ConvShape, data_dtype: str, weight_dtype: str, out_dtype: str):
    """TE description of a plain NCHW / OIHW conv (float32, or int8 that cannot be packed)."""
    from tvm import te, tirx  # pylint: disable=import-outside-toplevel

    s = shape
    cg, kg = s.c // s.groups, s.k // s.groups
    data = te.placeholder((s.n, s.c, s.h, s.w), data_dtype, name="data")
    kernel = te.placeholder((s.k, cg, s.r, s.s), weight_dtype, name="kernel")
    if s.pad:
        padded = te.compute(
            (s.n, s.c, s.h + 2 * s.pad, s.w + 2 * s.pad),
            lambda n, c, y, x: tirx.if_then_else(
                tirx.all(y >= s.pad, y < s.h + s.pad, x >= s.pad, x < s.w + s.pad),
                data[n, c, y - s.pad, x - s.pad],
                tirx.const(0, data_dtype),
            ),
            name="data_pad",
        )
    else:
        padded = data
    rc = te.reduce_axis((0, cg), name="rc")
    kh = te.reduce_axis((0, s.r), name="kh")
    kw = te.reduce_axis((0, s.s), name="kw")

    def _in_channel(k, rc_):
        return rc_ if s.groups == 1 else k // kg * cg + rc_

    conv = te.compute(
        (s.n, s.k, s.out_h, s.out_w),
        lambda n, k, y, x: te.sum(
            padded[
                n, _in_channel(k, rc), y * s.stride + kh * s.dilation, x * s.stride + kw * s.dilation
            ].astype(out_dtype)
            * kernel[k, rc, kh, kw].astype(out_dtype),
            axis=[rc, kh, kw],
        ),
        name="conv2d_nchw",
    )
    return data, kernel, conv


def conv_workload(
    shape: ConvShape | str,
    *,
    dtype: str = "int8",
    target: Any = None,
    data_dtype: str | None = None,
    packed: bool | None = None,
) -> ConvWorkload:
    """Build the tunable TIR conv2d for ``shape``.

    Parameters
    ----------
    shape : a :class:`ConvShape` or its string form.
    dtype : ``"int8"`` (int8 x int8 -> int32) or ``"float32"``.
    target : target dict / ``Target``; picks the channel blocks (:func:`packed_blocks`) and
        the activation dtype (uint8 on llvm, int8 on CUDA for dp4a).
    data_dtype : override the activation dtype (``"int8"`` or ``"uint8"``) for int8.
    packed : force (True) or forbid (False) the packed int8 layout; default: packed whenever the
        intrinsics can apply (see the module docstring).
    """
    from tvm import te  # pylint: disable=import-outside-toplevel

    if isinstance(shape, str):
        shape = ConvShape.parse(shape)
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported; valid: {', '.join(SUPPORTED_DTYPES)}")
    kind = target_kind(target) if target is not None else "llvm"
    if dtype == "float32":
        if packed:
            raise ValueError("the packed layout is only used for int8 convolutions")
        data, kernel, conv = _plain_conv_te(shape, "float32", "float32", "float32")
        func = te.create_prim_func([data, kernel, conv])
        return ConvWorkload(
            shape, dtype, "float32", "float32", "float32", False, 0, 0, shape.c, shape.k,
            func.with_attr("global_symbol", "conv2d_nchw_fp32"), "conv2d_nchw_fp32",
        )  # fmt: skip

    ddt = data_dtype or data_dtype_for(dtype, kind)
    if ddt not in ("int8", "uint8"):
        raise ValueError(f"int8 conv data dtype must be int8 or uint8, got {ddt!r}")
    ob, ib = packed_blocks(target, ddt)
    g = shape.groups
    packable = g == 1 or ((shape.c // g) % ib == 0 and (shape.k // g) % ob == 0)
    if packed is None:
        packed = packable
    elif packed and not packable:
        raise ValueError(
            f"grouped conv {shape} cannot use the packed int8 layout: C/groups must be a multiple "
            f"of {ib} and K/groups a multiple of {ob}"
        )
    if packed:
        c_pad = _ceil_to(shape.c // g, ib) * g
        k_pad = _ceil_to(shape.k // g, ob) * g
        data, kernel, conv = _packed_conv_te(shape, ddt, ob, ib, c_pad, k_pad)
        name = f"conv2d_NCHW{ib}c_OIHW{ob}o{ib}i_{ddt}"
    else:
        ob, ib, c_pad, k_pad = 0, 0, shape.c, shape.k
        data, kernel, conv = _plain_conv_te(shape, ddt, "int8", "int32")
        name = f"conv2d_nchw_{ddt}"
    func = te.create_prim_func([data, kernel, conv]).with_attr("global_symbol", name)
    if packed and kind == "llvm" and shape.pad:
        func = _keep_padding_separate(func)
    return ConvWorkload(shape, dtype, ddt, "int8", "int32", packed, ob, ib, c_pad, k_pad, func, name)


def packed_blocks(target: Any, data_dtype: str) -> tuple[int, int]:
    """``(ob, ib)`` of the packed int8 layout for ``target``: the lanes and the reduction of
    the dot-product instruction its kernels are built on (see the module docstring)."""
    if target is None or target_kind(target) != "llvm":
        return (16, 4) if target is None else (4, 4)
    from .rules import cpu_int8_dots  # pylint: disable=import-outside-toplevel

    dots = cpu_int8_dots(target, data_dtype)
    return (dots[0][1], dots[0][2]) if dots else (16, 4)


def _keep_padding_separate(func):
    """Keep MetaSchedule from inlining the padding stage into the conv (x86 int8).

    If the ``data_pad`` block is inlined, the conv reads ``if_then_else(in_bounds, data, 0)``,
    which no longer matches the VNNI intrinsic's ``a[k]`` load: tensorization fails and the
    candidate silently runs scalar code (about 1 candidate in 5 with MetaSchedule's
    RandomComputeLocation).  The ``schedule_rule = "None"`` annotation makes MetaSchedule skip
    every generic rule on that block; the padding then runs as its own (parallel) loop nest.
    """
    from tvm import s_tir  # pylint: disable=import-outside-toplevel

    sch = s_tir.Schedule(func)
    sch.annotate(sch.get_sblock("data_pad"), "schedule_rule", "None")
    return sch.mod["main"]


def conv_relax_module(workload: ConvWorkload):
    """A Relax module ``main(data NCHW, weight OIHW) -> NCHW`` around the tuned conv.

    ``main`` packs the inputs (one TIR function each), calls the conv ``PrimFunc`` of
    ``workload`` unchanged (so a database tuned on it applies), and unpacks the output.  Every
    ``PrimFunc`` is marked opaque so that operator fusion keeps the conv as its own kernel.
    """
    from tvm import relax, te, tirx  # pylint: disable=import-outside-toplevel

    s = workload.shape
    opaque = 8  # relay/relax OpPatternKind::kOpaque

    def _prim(tensors, name):
        f = te.create_prim_func(tensors).with_attr("global_symbol", name)
        return f.with_attr("op_pattern", opaque)

    bb = relax.BlockBuilder()
    d_in = relax.Var("data", relax.TensorType((s.n, s.c, s.h, s.w), workload.data_dtype))
    w_in = relax.Var("weight", relax.TensorType((s.k, s.c // s.groups, s.r, s.s), workload.weight_dtype))
    with bb.function("main", [d_in, w_in]):
        with bb.dataflow():
            d_arg, w_arg = d_in, w_in
            if workload.packed:
                ob, ib = workload.out_block, workload.in_block
                cg, cg_pad = s.c // s.groups, workload.c_pad // s.groups
                kg, kg_pad = s.k // s.groups, workload.k_pad // s.groups
                d = te.placeholder((s.n, s.c, s.h, s.w), workload.data_dtype, name="d")
                dp = te.compute(
                    workload.data_shape,
                    lambda n, cb, y, x, ci: _channel_or_zero(
                        d, n, cb * ib + ci, y, x, cg, cg_pad, workload.data_dtype
                    ),
                    name="pack_data",
                )
                w = te.placeholder((s.k, cg, s.r, s.s), "int8", name="w")

                def _wval(kb, icb, i, j, ko, ici):
                    oc = kb * ob + ko  # padded output channel
                    grp, ocg = oc // kg_pad, oc % kg_pad
                    ic = icb * ib + ici
                    ok = tirx.all(ocg < kg, ic < cg)
                    safe_oc = tirx.Select(ok, grp * kg + ocg, 0)
                    safe_ic = tirx.Select(ok, ic, 0)
                    return tirx.if_then_else(
                        ok, w[safe_oc, safe_ic, i, j], tirx.const(0, "int8")
                    )

                wp = te.compute(workload.kernel_shape, _wval, name="pack_kernel")
                gv_pd = bb.add_func(_prim([d, dp], "pack_data"), "pack_data")
                gv_pw = bb.add_func(_prim([w, wp], "pack_kernel"), "pack_kernel")
                d_arg = bb.emit(
                    relax.call_tir(gv_pd, [d_in], relax.TensorType(workload.data_shape, workload.data_dtype))
                )
                w_arg = bb.emit(
                    relax.call_tir(gv_pw, [w_in], relax.TensorType(workload.kernel_shape, "int8"))
                )
            gv_conv = bb.add_func(workload.func.with_attr("op_pattern", opaque), workload.name)
            out = bb.emit(
                relax.call_tir(
                    gv_conv, [d_arg, w_arg], relax.TensorType(workload.out_shape, workload.out_dtype)
                )
            )
            if workload.packed:
                o = te.placeholder(workload.out_shape, "int32", name="o")
                kg, kg_pad = s.k // s.groups, workload.k_pad // s.groups
                ob = workload.out_block

                def _oval(n, k, y, x):
                    padded_k = k // kg * kg_pad + k % kg
                    return o[n, padded_k // ob, y, x, padded_k % ob]

                oc = te.compute((s.n, s.k, s.out_h, s.out_w), _oval, name="unpack_output")
                gv_uo = bb.add_func(_prim([o, oc], "unpack_output"), "unpack_output")
                out = bb.emit(
                    relax.call_tir(
                        gv_uo, [out], relax.TensorType((s.n, s.k, s.out_h, s.out_w), "int32")
                    )
                )
            out = bb.emit_output(out)
        bb.emit_func_output(out)
    return bb.get()


def _channel_or_zero(d, n, c_padded, y, x, cg, cg_pad, dtype):
    """Element of NCHW ``d`` for a channel index in the group-padded channel space, else 0."""
    from tvm import tirx  # pylint: disable=import-outside-toplevel

    grp, cgi = c_padded // cg_pad, c_padded % cg_pad
    ok = cgi < cg
    safe_c = tirx.Select(ok, grp * cg + cgi, 0)
    return tirx.if_then_else(ok, d[n, safe_c, y, x], tirx.const(0, dtype))

"""``harness tune-conv``: tune one conv2d shape as exactly the kernel a model build compiles for it.

The conv is built as a one-conv model (data -> [ReLU] -> conv2d -> bias -> ReLU) and sent through the
real pipeline: for ``int8`` the harness's quantizer (the default int8 config's ``quantize:`` section,
or a config file's; the conv is never skipped) calibrates it on seeded data and realizes it, then the
build's own legalize / fuse steps make its kernel: the fused 8-bit ``conv2d_nchw`` with its epilogue
that ``harness run`` compiles. ``--dtype int8`` is uint8 data where the conv's input is non-negative
(the ReLU in front: what every conv after a ReLU gets), int8 weights and int32 sums; ``data_dtype=
"int8"`` drops the ReLU, so the data is signed.

That kernel is tuned exactly as ``harness tune`` tunes a model's (:func:`harness.tune.search.
tune_model`: its default schedule measured first, then the search in the same space), into
``tuning_logs/<target key>/conv/<shape>-<dtype>/``. Builds read every such database and apply a
record by the conv itself (its anchor block), whatever epilogue the model fuses into it
(:mod:`harness.build.passes.apply_database`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

import numpy as np

from ..errors import HarnessError
from ..schedules import ScheduleOptions
from ..targets import normalize_target, target_key, target_summary

logger = logging.getLogger("harness")


_FIELDS = ("n", "c", "h", "w", "k", "r", "s", "stride", "pad", "dilation", "groups")


class NoSearchSpace(HarnessError):
    """The conv's kernel on this target has no search space (integer Winograd): builds run its
    default schedule."""


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


def conv_model(shape: ConvShape, dtype: str = "int8", *, data_dtype: Optional[str] = None, qconfig=None,
               seed: int = 0):
    """The one-conv Relax module whose conv kernel a model build compiles for `shape` (weights bound;
    for ``int8`` quantized by the harness's quantizer with `qconfig`, default: QConfig()'s, 8-bit weights)."""
    from tvm import relax  # pylint: disable=import-outside-toplevel

    if dtype not in ("int8", "float32"):
        raise HarnessError(f"conv dtype {dtype!r}: valid: int8, float32")
    if data_dtype not in (None, "uint8", "int8"):
        raise HarnessError(f"conv data dtype {data_dtype!r}: valid: uint8, int8")
    signed = data_dtype == "int8"
    rng = np.random.RandomState(seed)
    s = shape
    fan_in = (s.c // s.groups) * s.r * s.s
    weight = (rng.normal(size=(s.k, s.c // s.groups, s.r, s.s)) / np.sqrt(fan_in)).astype("float32")
    bias = (0.1 * rng.normal(size=(1, s.k, 1, 1))).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("data", relax.TensorType((s.n, s.c, s.h, s.w), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            data = x if signed else bb.emit(relax.op.nn.relu(x))
            y = bb.emit(relax.op.nn.conv2d(data, relax.const(weight), strides=s.stride, padding=s.pad,
                                           dilation=s.dilation, groups=s.groups))
            y = bb.emit(relax.op.add(y, relax.const(bias)))
            out = bb.emit_output(relax.op.nn.relu(y))
        bb.emit_func_output(out)
    mod = bb.get()
    if dtype == "float32":
        return mod
    from ..quantize import QConfig, quantize  # pylint: disable=import-outside-toplevel

    config = dataclasses.replace(qconfig or QConfig(), skip_conv_layers=[], debug_enabled_ops=None)
    calib = [{"data": rng.normal(size=(s.n, s.c, s.h, s.w)).astype("float32")} for _ in range(4)]
    return quantize(mod, {}, calib, model_name=f"conv_{s.key}", config=config)


def is_conv_task(task) -> bool:
    """The conv2d kernel of a one-conv model (not the quantize / dequantize kernels around it)."""
    return "conv2d" in task.task_name


def conv_work_dir(logs_root: str, target: Any, shape: ConvShape, dtype: str) -> str:
    """``<logs_root>/<target key>/conv/<N_C_H_W_K_R_S_stride_pad[_dilation_groups]>-<dtype>``."""
    return os.path.join(logs_root, target_key(target), "conv", f"{str(shape).replace(',', '_')}-{dtype}")


@dataclass
class TuneResult:
    """What the database of one conv holds (:func:`tune_conv`, :func:`tuning_result`)."""

    shape: ConvShape
    dtype: str
    data_dtype: str  # what the kernel multiplies: uint8 / int8 (int8 convs) or float32
    target: dict
    work_dir: str
    task_name: str
    trials: int  # records of this conv's kernel in the database (its default schedule among them)
    new_trials: int  # measured by this call
    best_latency_ms: Optional[float]
    gops: Optional[float]
    intrinsic: Optional[str]  # the dot-product instruction of the best record, if any
    best_is_default: bool  # the best record is the kernel's default schedule

    def as_dict(self) -> dict:
        out = asdict(self)
        out["shape"] = str(self.shape)
        return out

    def summary(self) -> str:
        lat = f"{self.best_latency_ms:.4f} ms" if self.best_latency_ms else "no valid trial"
        gops = f"{self.gops:.1f} GOPS" if self.gops else "-"
        how = "default schedule" if self.best_is_default else "searched schedule"
        intr = self.intrinsic or "no int8 instruction"
        return (f"conv {self.shape} {self.dtype} ({self.data_dtype} data) on {target_key(self.target)}: "
                f"best {lat}, {gops} ({how}, {intr}); {self.trials} records ({self.new_trials} new)")


def _conv_task(mod, tgt, options):
    from .search import tunable_tasks  # pylint: disable=import-outside-toplevel

    tasks = [t for t in tunable_tasks(mod, tgt, options) if is_conv_task(t)]
    if not tasks and _runs_on_winograd(mod, tgt, options):
        raise NoSearchSpace(f"on {target_key(tgt)} this conv runs on the integer Winograd kernel "
                           "(build.schedules.cpu_int8_winograd), which has no search space: builds use its "
                           "default schedule. To tune the dot-product kernel instead, switch "
                           "cpu_int8_winograd off (and build with it off)")
    if len(tasks) != 1:
        raise HarnessError(f"the one-conv model has {len(tasks)} conv kernels, expected 1")
    return tasks[0]


def _runs_on_winograd(mod, tgt, options) -> bool:
    from ..schedules.winograd import KERNEL_NAME  # pylint: disable=import-outside-toplevel
    from .search import extracted_tasks  # pylint: disable=import-outside-toplevel

    return any(KERNEL_NAME in t.task_name for t in extracted_tasks(mod, tgt, options))


def _kernel_data_dtype(func) -> str:
    """What the kernel multiplies: uint8 or int8 data (its weights are int8), else float32."""
    text = func.script()
    for dtype in ("uint8", "int8"):
        if f'"{dtype}")' in text:
            return dtype
    return "float32"


def tune_conv(shape: ConvShape | str, *, dtype: str = "int8", target: Any = None, trials: int = 32,
              work_dir: str, runner: Any = "local", progress: Optional[Callable] = None,
              seed: Optional[int] = None, qconfig=None, data_dtype: Optional[str] = None,
              options: Optional[ScheduleOptions] = None, timeout_sec: float = 60.0) -> TuneResult:
    """Tune the kernel a model build compiles for one conv (see the module docstring).

    `trials`: search trials wanted in `work_dir` (those there count; its default schedule is
    measured once besides, as `harness tune` does); `runner`: ``"local"`` or a MetaSchedule
    runner (e.g. :func:`harness.tune.testing.CannedRunner`); `qconfig`: the quantizer's settings
    (default: QConfig()'s, 8-bit weights; `harness tune-conv` passes a config's, its reduce_range
    resolved for the target); `options`: the builds' schedule families (default: all on, 8-bit weights).
    """
    from .search import tune_model  # pylint: disable=import-outside-toplevel

    if isinstance(shape, str):
        shape = ConvShape.parse(shape)
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 0:
        raise HarnessError(f"trials must be a non-negative integer, got {trials!r}")
    tgt = normalize_target(target or _host_target())
    mod = conv_model(shape, dtype, data_dtype=data_dtype, qconfig=qconfig)
    before = tuning_result(shape, dtype=dtype, target=tgt, work_dir=work_dir, data_dtype=data_dtype,
                           qconfig=qconfig, options=options, mod=mod).trials if os.path.isdir(work_dir) else 0
    tune_model(mod, tgt, work_dir, trials=trials, runner=runner, progress=progress, seed=seed,
               timeout_sec=timeout_sec, options=options, only=is_conv_task)
    result = tuning_result(shape, dtype=dtype, target=tgt, work_dir=work_dir, data_dtype=data_dtype,
                           qconfig=qconfig, options=options, mod=mod)
    result.new_trials = max(0, result.trials - before)
    return result


def tuning_result(shape: ConvShape | str, *, dtype: str = "int8", target: Any, work_dir: str,
                  data_dtype: Optional[str] = None, qconfig=None, options: Optional[ScheduleOptions] = None,
                  mod=None) -> TuneResult:
    """The :class:`TuneResult` of what `work_dir` holds for this conv (no tuning)."""
    from .database import mean_secs, open_database, workload_records  # pylint: disable=import-outside-toplevel
    from .search import default_schedules  # pylint: disable=import-outside-toplevel
    from ..schedules.intrinsics import trace_uses_intrinsic  # pylint: disable=import-outside-toplevel

    if isinstance(shape, str):
        shape = ConvShape.parse(shape)
    tgt = normalize_target(target)
    if mod is None:
        mod = conv_model(shape, dtype, data_dtype=data_dtype, qconfig=qconfig)
    task = _conv_task(mod, tgt, options)
    kernel = task.dispatched[0]
    records = workload_records(open_database(work_dir, tgt), kernel) if os.path.isdir(work_dir) else []
    valid = [(secs, rec) for rec in records if (secs := mean_secs(rec)) is not None]
    best_ms = gops = intrinsic = None
    is_default = False
    if valid:
        secs, best = min(valid, key=lambda x: x[0])
        best_ms = secs * 1e3
        gops = shape.gops(best_ms)
        intrinsic = trace_uses_intrinsic(best.trace)
        [default] = default_schedules([(kernel, task.task_name)], tgt, options)
        is_default = default is not None and list(default.trace.as_python()) == list(best.trace.as_python())
    return TuneResult(shape=shape, dtype=dtype, data_dtype=_kernel_data_dtype(kernel["main"]),
                      target=target_summary(tgt), work_dir=os.path.abspath(work_dir), task_name=task.task_name,
                      trials=len(records), new_trials=0, best_latency_ms=best_ms, gops=gops,
                      intrinsic=intrinsic, best_is_default=is_default)


def _host_target() -> dict:
    from ..targets import llvm_target  # pylint: disable=import-outside-toplevel

    return llvm_target()


def emit_source(shape: ConvShape | str, *, dtype: str = "int8", target: Any, work_dir: Optional[str] = None,
                fmt: Optional[str] = None, data_dtype: Optional[str] = None, qconfig=None,
                options: Optional[ScheduleOptions] = None) -> str:
    """Source of the conv's kernel as a build compiles it (the best record of `work_dir` applied,
    else its default schedule): x86 assembly (``fmt="asm"``, default) or LLVM IR (``"ll"``) of the
    conv function; CUDA C (``"cu"``, default; the conv and its packing kernels) or PTX (``"ptx"``),
    compiled for real with nvcc (no GPU needed)."""
    from ..build import compile_module, cuda_source, walk_modules  # pylint: disable=import-outside-toplevel
    from .database import load_records  # pylint: disable=import-outside-toplevel
    from .runners import nvcc_mode  # pylint: disable=import-outside-toplevel

    if isinstance(shape, str):
        shape = ConvShape.parse(shape)
    tgt = normalize_target(target)
    cuda = tgt.kind.name == "cuda"
    valid = ("cu", "cuda", "ptx") if cuda else ("asm", "s", "ll", "llvm")
    if fmt is not None and fmt not in valid:
        raise HarnessError(f"source format {fmt!r} is not valid for {tgt.kind.name}; valid: {', '.join(valid)}")
    mod = conv_model(shape, dtype, data_dtype=data_dtype, qconfig=qconfig)
    records = load_records([("conv", work_dir)], tgt) if work_dir else None
    with nvcc_mode() if cuda else _nullcontext():
        built = compile_module(mod, tgt, records=records, schedules=options, fallback=False)
    if cuda:
        source = cuda_source(built.executable)
        if fmt in (None, "cu", "cuda"):
            return source
        from tvm.support import nvcc  # pylint: disable=import-outside-toplevel

        with tgt:
            ptx = nvcc.compile_cuda(source, target_format="ptx", arch=str(tgt.attrs["arch"]), compiler="nvcc")
        return bytes(ptx).decode("utf-8", errors="replace")
    llvm = next(m for m in walk_modules(built.executable.mod) if m.kind == "llvm")
    text = llvm.inspect_source("ll" if fmt in ("ll", "llvm") else "asm")
    conv = next((k for k in built.report.kernels if "conv2d" in k), None)
    return _function_text(text, conv) if conv else text


def _nullcontext():
    import contextlib  # pylint: disable=import-outside-toplevel

    return contextlib.nullcontext()


def _function_text(text: str, name: str) -> str:
    """The parts of an assembly / LLVM IR listing that define function `name` and the functions
    made from it (``..._prepacked``, ``..._compute_``, and the parallel-loop bodies LLVM emits
    after them, ``.L__tvm_parallel_lambda*``); all of it where none is found."""
    label = re.compile(r"\w*" + re.escape(name) + r"\w*:")
    lambda_label = re.compile(r"\.?L?__tvm_parallel_lambda[\w.]*:|define internal \S+ @__tvm_parallel_lambda")
    parts, inside, ours = [], False, False
    for line in text.splitlines(keepends=True):
        if not inside:
            if label.match(line) or (line.startswith("define") and f"@{name}" in line):
                inside = ours = True
            elif ours and lambda_label.match(line):
                inside = True
            elif line.startswith("define") or (re.match(r"[\w.]+:", line) and not line.startswith(".L")):
                ours = False
        if inside:
            parts.append(line)
            if line.startswith(".Lfunc_end") or line.startswith("}"):
                inside = False
    return "".join(parts) if parts else text

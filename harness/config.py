"""Typed run configuration, loaded from YAML once and validated at the door.

Every section is a dataclass; the loader walks the dataclass fields, so the set
of valid keys, their types and their choices live in one place (here) and every
mistake produces one line naming the key and what would have been valid.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

import yaml

from .errors import ConfigError
from .quantize.qconfig import QConfig

# ----------------------------------------------------------------------------- sections


@dataclass
class ModelConfig:
    """Which network to run and where its files come from."""

    name: str = "resnet18_v1"  # a registry name (`harness models`) or a free label for file models
    frontend: Literal["mxnet", "onnx", "pytorch"] = "mxnet"
    batch: int = 1
    input_shape: Optional[list] = None  # full NCHW shape; default: the registry's shape at `batch`
    input_name: str = "data"
    dtype: Literal["float32"] = "float32"
    seed: int = 0  # seed of random weights and of the benchmark input
    symbol: Optional[str] = None  # MXNet `-symbol.json` path (with `params:`)
    params: Optional[str] = None  # MXNet `.params` path
    onnx: Optional[str] = None  # ONNX model path
    pytorch: Optional[str] = None  # TorchScript / torch.export `.pt2` path


@dataclass
class TargetConfig:
    """Where the compiled model runs. `kind: auto` picks CUDA when a GPU is visible."""

    kind: Literal["auto", "llvm", "cuda"] = "auto"
    mcpu: Optional[str] = None  # llvm: default is this machine's CPU (llvm_get_system_cpu)
    num_cores: Optional[int] = None  # llvm: the threads kernels (and CPU peers) run on; default: all CPUs
    arch: Optional[str] = None  # cuda: e.g. sm_90; default: the visible GPU's, else sm_90


@dataclass
class SchedulesConfig:
    """Which of the harness's default schedule families builds use (harness.schedules); each
    changes what is built and measured, and the record says which were on."""

    cpu_default: bool = True  # llvm: default CPU schedules for kernels no database covers (off: TVM's own loops)
    cpu_int8_dot: bool = True  # llvm: 8-bit convs on the CPU's exact dot product (off: the plain schedule)
    cpu_int8_depthwise: bool = True  # llvm: 8-bit depthwise convs vectorized across channels (off: the plain one)
    cpu_int8_amx: bool = True  # llvm with amx-int8: 8-bit convs on AMX tiles (off: the dot product / plain)
    cpu_int8_blocked: bool = True  # llvm without AMX: 8-bit tensors between int8 convs stored NCHW8c (off: NCHW)
    cpu_int8_winograd: bool = True  # llvm without VNNI, blocked: 8-bit 3x3 stride-1 convs as exact integer Winograd
    cpu_int8_winograd_tile: Literal[2, 4] = 4  # its outputs per tile side: F(4x4, 3x3) or F(2x2, 3x3)
    cuda_int8_dp4a: bool = True  # cuda: 8-bit convs on __dp4a (off: TVM's GPU schedules)

    def options(self):
        from .schedules import ScheduleOptions

        return ScheduleOptions(**dataclasses.asdict(self))


@dataclass
class BuildConfig:
    opt_level: int = 3
    export: Optional[str] = None  # write the deployable library (.so) here
    schedules: SchedulesConfig = field(default_factory=SchedulesConfig)
    # a build that fails with the harness's schedules is built again without them (the record says
    # so and why); false: the failure is an error
    fallback: bool = True


@dataclass
class BenchConfig:
    """time_evaluator settings, as TVM names them."""

    number: int = 10
    repeat: int = 5
    min_repeat_ms: int = 200
    warmup: int = 1
    # >1: every system of a run (TVM's variants, the peers) timed in this many alternating rounds
    # (`repeat` measurements each per round), so that a noisy machine's slow minutes fall on all alike
    rounds: int = 1
    results_dir: str = "results"


@dataclass
class CalibConfig:
    """Calibration data (see harness.data.CalibSpec)."""

    source: Literal["synthetic", "npy", "images", "photos", "digits"] = "synthetic"
    path: Optional[str] = None  # npy: .npy/.npz file or folder; images: folder of images
    num_samples: int = 32
    batch_size: int = 8
    seed: int = 0


@dataclass
class AccuracyTargetConfig:
    """Keep the fewest layers fp32 that bring int8 to this accuracy (harness.accuracy_target).

    Measured on the `accuracy:` data against fp32 (cosine, top1_agreement) or the labels (top1_drop).
    """

    metric: Literal["cosine", "top1_agreement", "top1_drop"] = "cosine"
    min: Optional[float] = None  # cosine, top1_agreement: reach at least this
    max: Optional[float] = None  # top1_drop: fp32 top-1 minus int8 top-1 (a fraction) at most this
    max_fp32_layers: int = 3  # never keep more layers fp32 than this (besides skip_conv_layers etc.)


@dataclass
class QuantizeConfig(QConfig):
    """relay.quantize's qconfig knobs (harness.quantize.QConfig) plus where calibration comes from."""

    # a config's default is the target's choice (QConfig's, for the library API, relay's 8 bits)
    reduce_range: Literal["auto", True, False] = "auto"
    signed_data_offset: Literal["auto", True, False] = "auto"
    calib: CalibConfig = field(default_factory=CalibConfig)
    table: Optional[str] = None  # re-apply this calibration table instead of calibrating
    accuracy_target: Optional[AccuracyTargetConfig] = None  # choose fp32 fallback layers to reach it


@dataclass
class AccuracyConfig:
    """How `harness run` measures int8 accuracy against fp32 (and labels where there are any)."""

    dataset: Literal["photos", "images", "digits", "synthetic"] = "photos"
    path: Optional[str] = None  # images: folder (labeled when it has one sub-folder per class)
    num_samples: Optional[int] = None  # default: all (photos, digits, labeled images), 16 (synthetic, images)
    labels: Optional[str] = None  # images: YAML/JSON file, class folder name -> the model's class index
    synsets: Optional[str] = None  # images: text file, line i = class i's folder name (ImageNet synsets)


@dataclass
class TuningConfig:
    """MetaSchedule tuning (`harness tune`) and where tuned databases live (applied by `harness run`)."""

    logs: str = "tuning_logs"  # databases: <logs>/<target key>/<run key>/ (relative to the repo root)
    trials: int = 64  # search trials wanted in the database of `harness tune`, over all tasks (those there count)
    apply: bool = True  # `harness run` applies the run key's database and the target's conv/ databases
    runner: Literal["local", "rpc"] = "local"
    tracker: Optional[str] = None  # rpc: tracker host:port (python -m tvm.exec.rpc_tracker)
    key: Optional[str] = None  # rpc: device key the servers registered with


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    build: BuildConfig = field(default_factory=BuildConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    quantize: Optional[QuantizeConfig] = None  # present: build and time an int8 variant too
    accuracy: Optional[AccuracyConfig] = None  # present (with quantize): measure int8 vs fp32
    tuning: TuningConfig = field(default_factory=TuningConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def qconfig(self, target=None):
        """The quantizer's QConfig of the ``quantize:`` section, its autos resolved for `target`
        (default: the config's own target): ``reduce_range`` on where the target's best exact dot
        product for 8-bit data is ``vpmaddubsw`` (x86 without VNNI), off elsewhere; then
        ``signed_data_offset`` on where unsigned data gets a dot product of more channels per
        instruction than signed data (VNNI; ``vpmaddubsw`` with reduce_range), off elsewhere."""
        from .pipeline import qconfig_of  # pylint: disable=import-outside-toplevel

        qc = qconfig_of(self.quantize)
        if "auto" in (qc.reduce_range, qc.signed_data_offset):
            from .schedules.intrinsics import reduced_range_pays, unsigned_data_pays  # pylint: disable=import-outside-toplevel
            from .targets import resolve_target  # pylint: disable=import-outside-toplevel

            tgt = target or resolve_target(self.target)
            if qc.reduce_range == "auto":
                qc = dataclasses.replace(qc, reduce_range=reduced_range_pays(tgt))
            if qc.signed_data_offset == "auto":
                qc = dataclasses.replace(qc, signed_data_offset=unsigned_data_pays(
                    tgt, qc.weight_bits("nn.conv2d", 1, "uint8")))
        return qc

    def schedule_options(self, target=None):
        """The build's :class:`harness.schedules.ScheduleOptions`: the ``build.schedules`` switches,
        and the most bits of the weights the dot-product convs get from the quantizer, for
        ungrouped and for grouped convs (``quantize.nbit_weight``; ``reduce_range`` makes it 7 at
        most for ungrouped ones; `target` resolves its auto)."""
        dense = grouped = 8
        if self.quantize is not None:
            qc = self.qconfig(target)
            dense, grouped = (qc.weight_bits("nn.conv2d", groups, "uint8") for groups in (1, 2))
        return dataclasses.replace(self.build.schedules.options(), int8_weight_bits=dense,
                                   int8_grouped_weight_bits=grouped)


# ----------------------------------------------------------------------------- loading

_SCALAR_SHORTHAND = {
    # `target: llvm` is shorthand for `target: {kind: llvm}`
    TargetConfig: "kind",
}


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    return getattr(tp, "__name__", str(tp))


def _check_value(path: str, value: Any, tp) -> Any:
    """Return `value` converted to `tp`, or raise ConfigError naming `path`."""
    origin = typing.get_origin(tp)
    if origin is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _check_value(path, value, args[0])
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(
                f"{path}: invalid value {value!r}; valid: {', '.join(str(c) for c in choices)}"
            )
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    if tp is list or origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return value
    return value


def _build(cls, data: Any, path: str):
    if data is None:
        data = {}
    shorthand = _SCALAR_SHORTHAND.get(cls)
    if shorthand is not None and not isinstance(data, dict):
        data = {shorthand: data}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in names:
            near = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise ConfigError(
                f"unknown config key '{where}'{hint}; valid keys{' in ' + path if path else ''}: "
                f"{', '.join(names)}"
            )
        kwargs[key] = _check_value(where, value, hints[key])
    return cls(**kwargs)


def config_from_dict(data: dict, *, base_dir: str = ".", cls=RunConfig):
    cfg = _build(cls, data, "")
    if isinstance(cfg, RunConfig):
        _resolve_paths(cfg, base_dir)
        _validate(cfg)
    return cfg


def load_config(path: str, overrides: Optional[dict] = None, cls=RunConfig):
    """Load a YAML config file into a typed config object.

    `overrides` is a nested dict applied on top of the file (what command-line
    flags such as `--target cuda` change).
    """
    data = read_yaml(path, "suite" if cls.__name__ == "SuiteConfig" else "config")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for section, values in (overrides or {}).items():
        cur = data.get(section)
        if shorthand_key := _SCALAR_SHORTHAND.get(typing.get_type_hints(cls).get(section)):
            if cur is not None and not isinstance(cur, dict):
                cur = {shorthand_key: cur}
        cur = dict(cur or {})
        cur.update(values)
        data[section] = cur
    return config_from_dict(data, base_dir=os.path.dirname(os.path.abspath(path)), cls=cls)


_EMPTY_HINT = {
    "config": "name a model at least, e.g. `model: {name: resnet18_v1}` (every key: configs/TEMPLATE.yaml)",
    "suite": "name its models at least, e.g. `models: [resnet18_v1]` (examples: configs/suites/)",
}


def read_yaml(path: str, what: str = "config"):
    """The YAML document in `path`; ConfigError (one line, naming the file) when the file is missing,
    unreadable, not UTF-8 text, not YAML, or empty (an empty file would silently mean every default)."""
    if os.path.isdir(path):
        raise ConfigError(f"{path}: is a directory, not a {what} file")
    if not os.path.isfile(path):
        raise ConfigError(f"{what} file not found: {path}")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the {what} file ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file (byte {e.start} is not UTF-8); a {what} file is "
                          "UTF-8 YAML") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a text file (it contains NUL bytes); a {what} file is UTF-8 YAML")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if data is None:
        raise ConfigError(f"{path}: the {what} file is empty: {_EMPTY_HINT.get(what, 'give its keys')}")
    return data


def _resolve_paths(cfg, base_dir: str) -> None:
    """Model file paths are relative to the config file's folder (or absolute)."""
    model = cfg.model
    for key in ("symbol", "params", "onnx", "pytorch"):
        value = getattr(model, key)
        if value is None:
            continue
        resolved = value if os.path.isabs(value) else os.path.normpath(os.path.join(base_dir, value))
        if not os.path.exists(resolved) and os.path.exists(value):
            resolved = os.path.abspath(value)  # relative to the working directory
        if not os.path.isfile(resolved):
            raise ConfigError(f"model.{key}: file not found: {value}")
        setattr(model, key, resolved)
    # data and table paths: relative to the config's folder when not absolute (need not exist yet)
    for obj, key in ((cfg.quantize, "table"), (cfg.quantize and cfg.quantize.calib, "path"),
                     (cfg.accuracy, "path"), (cfg.accuracy, "labels"), (cfg.accuracy, "synsets")):
        if obj is not None and getattr(obj, key) and not os.path.isabs(getattr(obj, key)):
            value = getattr(obj, key)
            candidate = os.path.normpath(os.path.join(base_dir, value))
            setattr(obj, key, candidate if os.path.exists(candidate) or not os.path.exists(value)
                    else os.path.abspath(value))


def _validate(cfg) -> None:
    m = cfg.model
    if m.batch < 1:
        raise ConfigError(f"model.batch: must be >= 1, got {m.batch}")
    if m.input_shape is not None:
        if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in m.input_shape):
            raise ConfigError(f"model.input_shape: expected positive integers, got {m.input_shape}")
    if m.frontend == "mxnet" and (m.symbol is None) != (m.params is None):
        raise ConfigError("model: `symbol:` and `params:` go together (an MXNet model needs both files)")
    if m.frontend == "onnx" and m.onnx is None and m.name not in _registry_names():
        raise ConfigError("model.onnx: the onnx frontend needs `onnx: path/to/model.onnx`")
    if m.frontend == "mxnet" and m.symbol is None and m.name not in _registry_names():
        from .models import unknown_model_message

        raise ConfigError(unknown_model_message(m.name))
    if cfg.build.opt_level not in range(0, 4):
        raise ConfigError(f"build.opt_level: expected 0..3, got {cfg.build.opt_level}")
    if cfg.quantize is not None and cfg.quantize.table and os.path.isdir(cfg.quantize.table):
        raise ConfigError(f"quantize.table: {cfg.quantize.table} is a folder; give a calibration table file "
                          "(read if it exists, written if not)")
    t = cfg.tuning
    if t.runner == "rpc" and (not t.tracker or not t.key):
        raise ConfigError("tuning.runner rpc needs `tracker: host:port` and `key:`")
    if t.tracker and (":" not in t.tracker or not t.tracker.rsplit(":", 1)[1].isdigit()):
        raise ConfigError(f"tuning.tracker: expected host:port, got {t.tracker!r}")
    if t.trials < 0:
        raise ConfigError(f"tuning.trials: must be >= 0, got {t.trials}")
    _validate_accuracy(cfg)
    b = cfg.bench
    if b.number < 1 or b.repeat < 1 or b.rounds < 1 or b.min_repeat_ms < 0 or b.warmup < 0:
        raise ConfigError("bench: number, repeat and rounds must be >= 1, min_repeat_ms and warmup >= 0")


def _validate_accuracy(cfg) -> None:
    a = cfg.accuracy
    if a is not None:
        if a.num_samples is not None and a.num_samples < 1:
            raise ConfigError(f"accuracy.num_samples: must be >= 1, got {a.num_samples}")
        if a.dataset == "images" and not a.path:
            raise ConfigError("accuracy.path: dataset images needs a folder of images")
        for key in ("labels", "synsets"):
            if getattr(a, key) and a.dataset != "images":
                raise ConfigError(f"accuracy.{key}: only for dataset images (a folder with one sub-folder "
                                  f"per class), not {a.dataset}")
        if a.labels and a.synsets:
            raise ConfigError("accuracy: give `labels:` or `synsets:`, not both")
    t = cfg.quantize.accuracy_target if cfg.quantize is not None else None
    if t is None:
        return
    want, other = ("max", "min") if t.metric == "top1_drop" else ("min", "max")
    if getattr(t, other) is not None:
        raise ConfigError(f"quantize.accuracy_target: metric {t.metric} takes `{want}:`, not `{other}:`")
    value = getattr(t, want)
    if value is None:
        example = "{metric: top1_drop, max: 0.005}" if want == "max" else f"{{metric: {t.metric}, min: 0.995}}"
        raise ConfigError(f"quantize.accuracy_target: metric {t.metric} needs `{want}:`, e.g. {example}")
    lo_ok = value >= 0.0 if want == "max" else value > 0.0
    if not (lo_ok and value <= 1.0):
        raise ConfigError(f"quantize.accuracy_target.{want}: must be in {'[0, 1]' if want == 'max' else '(0, 1]'}, "
                          f"got {value}")
    if t.max_fp32_layers < 1:
        raise ConfigError(f"quantize.accuracy_target.max_fp32_layers: must be >= 1, got {t.max_fp32_layers}")
    if a is None:
        raise ConfigError("quantize.accuracy_target: needs an `accuracy:` section (the data the target is "
                          "measured on)")
    if t.metric == "top1_drop" and a.dataset not in ("digits", "images"):
        raise ConfigError(f"quantize.accuracy_target: metric top1_drop needs labels; accuracy.dataset "
                          f"{a.dataset} has none (valid: digits, or images with one sub-folder per class)")


def _registry_names():
    from .models import MODELS

    return MODELS.keys()

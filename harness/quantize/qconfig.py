"""QConfig: relay.quantize's knobs, same names and meanings, plus the harness's own.

    with qconfig(calibrate_mode="kl_divergence", weight_scale="channel_max"):
        qmod = quantize(mod, params, calib_data=batches)
"""
from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import List, Literal, Optional

from ..errors import ConfigError

CALIBRATE_MODES = ("global_scale", "kl_divergence", "percentile", "max")
WEIGHT_SCALES = ("power2", "max", "channel_max")
QUANTIZABLE_OPS = ("nn.conv2d", "nn.dense")
REDUCED_WEIGHT_BITS = 7  # reduce_range: 2 x 255 x 64 <= 32767, so vpmaddubsw's int16 pair sums cannot saturate


@dataclass
class QConfig:
    nbit_input: int = 8  # bits of quantized conv/dense inputs
    nbit_weight: int = 8  # bits of quantized weights
    # True: the weights of the convs that x86 CPUs without VNNI multiply on vpmaddubsw (ungrouped,
    # uint8 data) get at most 7 bits, which makes that instruction exact (ONNX Runtime's name for the
    # same choice); "auto" is resolved by the build's target (RunConfig.qconfig): True on x86 CPUs
    # whose best exact 8-bit dot product is vpmaddubsw, False elsewhere
    reduce_range: Literal["auto", True, False] = False
    # True: an ungrouped, unpadded conv on signed data (int8 codes: a linear bottleneck's output, the
    # input of mobilenetv2's and efficientnet's expand convs) reads them as uint8, each code + 128, and
    # 128 x the sum of each output channel's weights is taken from its int32 sums: the same integers,
    # on the dot products that need unsigned data (VNNI's vpdpbusd; vpmaddubsw, with reduce_range)
    # instead of vpmaddwd on int16-widened data; "auto" is resolved by the build's target
    # (RunConfig.qconfig): True where such a dot product takes more channels per instruction
    signed_data_offset: Literal["auto", True, False] = False
    nbit_activation: int = 32  # bits of the accumulator (int32)
    dtype_input: Literal["int8", "uint8"] = "int8"
    dtype_weight: Literal["int8"] = "int8"
    dtype_activation: Literal["int32"] = "int32"
    calibrate_mode: Literal["global_scale", "kl_divergence", "percentile", "max"] = "kl_divergence"
    global_scale: float = 8.0  # threshold of every tensor in calibrate_mode global_scale
    percentile: float = 0.99999  # fraction of |x| kept in calibrate_mode percentile
    weight_scale: Literal["power2", "max", "channel_max"] = "power2"
    skip_conv_layers: Optional[List[int]] = field(default_factory=lambda: [0])  # conv indices kept fp32
    skip_dense_layer: bool = True  # keep dense (FullyConnected) layers fp32, as relay did
    round_for_shift: bool = True  # round (not truncate) the integer requantization's shift (requantize: integer)
    rounding: Literal["UPWARD", "TONEAREST"] = "UPWARD"
    do_simulation: bool = False  # fake-quantized fp32 graph instead of int8 kernels (debugging)
    # split main into quantize_inputs / quantized_main / dequantize_outputs (partition.py);
    # fully_integral: and refuse a core that still computes in float32
    partition_conversions: Literal["disabled", "enabled", "fully_integral"] = "disabled"
    calibrate_chunk_by: int = -1  # probe this many tensors per pass over the data (-1: all at once)
    debug_enabled_ops: Optional[List[str]] = None  # e.g. ["nn.conv2d"]: only these ops are quantized
    activation_dtype: Literal["int8", "uint8", "auto"] = "auto"  # auto: uint8 where the tensor is >= 0
    bias_correction: bool = True  # subtract each quantized op's expected output shift (see realize.py)
    # between two quantized ops: "folded" (from the int32 sums to the next codes one float multiply-add
    # per addend and channel: bias, batch norm, ReLU and the next scale folded in; residual adds, pools
    # and concat too), "float" (dequantize, bias, activation and requantize as float ops, fused into
    # one epilogue) or "integer" (int32 bias and ReLU, fixed-point multiply and shift; round_for_shift
    # rounds it); requantize.py
    requantize: Literal["float", "integer", "folded"] = "folded"
    # a tensor that quantized ops read and other ops read too (a residual block's input: its first
    # conv and its skip-connection add; a pool's output read by two convs): "int8" quantizes it once
    # and stores the 8-bit codes, the other readers get their dequantized value inside their own
    # kernels (relay's realize did the same); "float": it stays float32 and every quantized reader
    # quantizes a copy of its own (4x the memory traffic on ResNets' skip connections)
    shared_tensors: Literal["int8", "float"] = "int8"

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        for key in ("nbit_input", "nbit_weight"):
            v = getattr(self, key)
            if not 2 <= v <= 8:
                raise ConfigError(f"quantize.{key}: {v} bits not supported; valid: 2..8 (stored as 8-bit)")
        for key in ("reduce_range", "signed_data_offset"):
            value = getattr(self, key)
            if not (value == "auto" or isinstance(value, bool)):
                raise ConfigError(f"quantize.{key}: {value!r}; valid: auto, true, false")
        if self.nbit_activation != 32:
            raise ConfigError(f"quantize.nbit_activation: {self.nbit_activation} not supported; valid: 32")
        if not 0.0 < self.percentile <= 1.0:
            raise ConfigError(f"quantize.percentile: must be in (0, 1], got {self.percentile}")
        if self.global_scale <= 0:
            raise ConfigError(f"quantize.global_scale: must be > 0, got {self.global_scale}")
        if self.calibrate_chunk_by == 0 or self.calibrate_chunk_by < -1:
            raise ConfigError("quantize.calibrate_chunk_by: -1 (all at once) or a positive count")
        if self.requantize not in ("float", "integer", "folded"):
            raise ConfigError(f"quantize.requantize: unknown '{self.requantize}'; valid: float, integer, folded")
        if self.shared_tensors not in ("int8", "float"):
            raise ConfigError(f"quantize.shared_tensors: unknown '{self.shared_tensors}'; valid: int8, float")
        if self.partition_conversions not in ("disabled", "enabled", "fully_integral"):
            raise ConfigError(f"quantize.partition_conversions: unknown '{self.partition_conversions}'; "
                              "valid: disabled, enabled, fully_integral")
        if self.partition_conversions != "disabled" and self.do_simulation:
            raise ConfigError("quantize.partition_conversions: needs do_simulation: false (a simulated "
                              "module has no integer core to partition)")
        for op in self.debug_enabled_ops or []:
            if op not in QUANTIZABLE_OPS:
                raise ConfigError(f"quantize.debug_enabled_ops: unknown op '{op}'; valid: {', '.join(QUANTIZABLE_OPS)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def weight_bits(self, op_kind: str, groups: int, data_dtype: str) -> int:
        """Bits of the weights of one quantized op: ``nbit_weight``, and at most 7 for an ungrouped
        conv on uint8 data where ``reduce_range`` is on (the convs the vpmaddubsw dot product takes)."""
        if self.reduce_range == "auto":
            raise ValueError("qconfig.reduce_range 'auto' is resolved for a target first (RunConfig.qconfig)")
        if self.reduce_range and op_kind == "nn.conv2d" and groups == 1 and data_dtype == "uint8":
            return min(self.nbit_weight, REDUCED_WEIGHT_BITS)
        return self.nbit_weight

    @classmethod
    def from_dict(cls, data: dict) -> "QConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown qconfig key '{unknown[0]}'; valid: {', '.join(sorted(names))}")
        return cls(**data)


_state = threading.local()


def current_qconfig() -> QConfig:
    stack = getattr(_state, "stack", None)
    return stack[-1] if stack else QConfig()


class qconfig:
    """`with qconfig(**knobs):` scope, like relay's `relay.quantize.qconfig`."""

    def __init__(self, **kwargs):
        self.config = dataclasses.replace(current_qconfig(), **kwargs) if kwargs else current_qconfig()

    def __enter__(self) -> QConfig:
        if not hasattr(_state, "stack"):
            _state.stack = []
        _state.stack.append(self.config)
        return self.config

    def __exit__(self, *exc) -> None:
        _state.stack.pop()

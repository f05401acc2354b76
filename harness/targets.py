"""The CPU target every llvm build, calibration run and tuning run of the harness uses.

One rule lives here: on CPUs whose LLVM model has both AVX and AMD's SSE4a (every Zen),
SSE4a is switched off (`mattr: ["-sse4a"]`). SSE4a's INSERTQ/EXTRQ have no VEX encoding, and
LLVM picks them to assemble gathered int8 vectors; mixed with 256-bit AVX code each one cost
~80 ns (measured on the Zen 2 this was found on: 2 insertq beside 2 ymm adds, 159 ns per
loop vs 1.8 ns without the ymm adds), which made inception_v3's int8 convolutions with odd
output widths 43x slower (8.3 s -> 0.19 s for its 80->192 3x3 conv). Nothing else in LLVM's
x86 output needs SSE4a.
"""
from __future__ import annotations

import os
from typing import Optional

import tvm


def llvm_target(mcpu: Optional[str] = None, num_cores: Optional[int] = None) -> dict:
    """Target dict for `mcpu` (default: this machine's CPU) with `num_cores` threads."""
    from tvm.target import codegen  # pylint: disable=import-outside-toplevel

    config = {"kind": "llvm", "mcpu": str(mcpu or codegen.llvm_get_system_cpu()),
              "num-cores": int(num_cores or os.cpu_count() or 1)}
    probe = tvm.target.Target(config)
    if codegen.target_has_features("sse4a", probe) and codegen.target_has_features("avx", probe):
        config["mattr"] = ["-sse4a"]
    if config["mcpu"] == str(codegen.llvm_get_system_cpu()) and not codegen.target_has_features("amx-int8", probe):
        # issue 14: a hypervisor may hide the CPU model (a Sapphire Rapids guest seen as
        # "rocketlake"); the host's own AMX flags give its builds the AMX int8 kernels
        from .tune.amx import host_has_amx  # pylint: disable=import-outside-toplevel

        if host_has_amx():
            config["mattr"] = config.get("mattr", []) + ["+amx-tile", "+amx-int8"]
    return config

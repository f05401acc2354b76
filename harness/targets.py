"""Target facts, in one place: the llvm target of this machine, resolving a config's target,
the short key of a target (folder names), CPU features and vector width, GPU visibility.

One rule lives in :func:`llvm_target`: on CPUs whose LLVM model has both AVX and AMD's SSE4a
(every Zen), SSE4a is switched off (`mattr: ["-sse4a"]`). SSE4a's INSERTQ/EXTRQ have no VEX
encoding, and LLVM picks them to assemble gathered int8 vectors; mixed with 256-bit AVX code each
one cost ~80 ns (measured on the Zen 2 this was found on: 2 insertq beside 2 ymm adds, 159 ns per
loop vs 1.8 ns without the ymm adds), which made inception_v3's int8 convolutions with odd output
widths 43x slower (8.3 s -> 0.19 s for its 80->192 3x3 conv). Nothing else in LLVM's x86 output
needs SSE4a.

Importing this module imports TVM's runtime only; the functions that need the compiler import it.
"""
from __future__ import annotations

import os
import re
from typing import Any, Optional

from .errors import ConfigError


def default_cpu_threads() -> int:
    """The CPU threads a run uses unless told otherwise: all of this machine's (an llvm target's
    ``num-cores`` default, TVM's runtime thread pool and the CPU peers' thread counts)."""
    return os.cpu_count() or 1


def llvm_target(mcpu: Optional[str] = None, num_cores: Optional[int] = None) -> dict:
    """Target dict for `mcpu` (default: this machine's CPU) with `num_cores` threads."""
    import tvm  # pylint: disable=import-outside-toplevel
    from tvm.target import codegen  # pylint: disable=import-outside-toplevel

    config = {"kind": "llvm", "mcpu": str(mcpu or codegen.llvm_get_system_cpu()),
              "num-cores": int(num_cores or default_cpu_threads())}
    probe = tvm.target.Target(config)
    if codegen.target_has_features("sse4a", probe) and codegen.target_has_features("avx", probe):
        config["mattr"] = ["-sse4a"]
    if config["mcpu"] == str(codegen.llvm_get_system_cpu()) and host_has_amx() \
            and not codegen.target_has_features("amx-int8", probe):
        # a hypervisor may hide the CPU model (an Emerald Rapids guest is "rocketlake" to LLVM): the
        # host's own AMX flags give its builds the AMX int8 instructions (the target key is unchanged)
        config["mattr"] = config.get("mattr", []) + ["+amx-tile", "+amx-int8"]
    return config


class AMXPermissionError(ConfigError):
    """The OS refused (or does not offer) AMX tile state to this process."""


_AMX_PERMISSION = False


def request_amx_permission() -> None:
    """Ask Linux for AMX tile state for this process (once; later calls return at once): a process
    must do so before its first tile instruction, or that instruction kills it (SIGILL). Raises
    :class:`AMXPermissionError` with the reason where the OS refuses (kernel before 5.16, a
    hypervisor that hides AMX, another OS). Needs neither TVM nor its compiler (an exported library
    run with the runtime alone asks here too)."""
    global _AMX_PERMISSION  # pylint: disable=global-statement
    import ctypes  # pylint: disable=import-outside-toplevel
    import platform  # pylint: disable=import-outside-toplevel

    if _AMX_PERMISSION:
        return
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise AMXPermissionError(f"AMX tile state: only Linux on x86_64 is supported here, not "
                                 f"{platform.system()} on {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    # arch_prctl (syscall 158 on x86_64) ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18)
    if libc.syscall(ctypes.c_long(158), ctypes.c_long(0x1023), ctypes.c_long(18)) != 0:
        err = ctypes.get_errno()
        raise AMXPermissionError(f"the OS refused AMX tile state (arch_prctl(ARCH_REQ_XCOMP_PERM, "
                                 f"XFEATURE_XTILEDATA) failed: {os.strerror(err)}); build for a target "
                                 f"without amx-int8 or set build.schedules.cpu_int8_amx: false")
    _AMX_PERMISSION = True


def host_has_amx() -> bool:
    """True when this machine's CPU reports amx_tile and amx_int8 (Linux /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return {"amx_tile", "amx_int8"} <= set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return False


def gpu_visible() -> bool:
    """Whether a CUDA GPU is visible to TVM here."""
    import tvm  # pylint: disable=import-outside-toplevel

    try:
        return bool(tvm.cuda(0).exist)
    except Exception:
        return False


def resolve_target(cfg):
    """`TargetConfig` -> `tvm.target.Target` (dict form: 0.27 refuses flag strings)."""
    import tvm  # pylint: disable=import-outside-toplevel

    kind = cfg.kind
    if kind == "auto":
        kind = "cuda" if gpu_visible() else "llvm"
    if kind == "llvm":
        mcpu = cfg.mcpu or tvm.target.codegen.llvm_get_system_cpu()
        if not tvm.target.codegen.llvm_is_valid_cpu(mcpu, tvm.target.codegen.llvm_get_system_triple()):
            raise ConfigError(f"target.mcpu: LLVM does not know CPU '{mcpu}' (e.g. znver4, skylake-avx512, x86-64)")
        return tvm.target.Target(llvm_target(mcpu, cfg.num_cores))
    if kind == "cuda":
        arch = cfg.arch
        if arch is None:
            arch = "sm_90"
            if gpu_visible():
                major, minor = tvm.cuda(0).compute_version.split(".")
                arch = f"sm_{major}{minor}"
        return tvm.target.Target({"kind": "cuda", "arch": arch})
    raise ConfigError(f"target.kind: unknown '{kind}'; valid: auto, llvm, cuda")


def device_for(target):
    """The TVM device a build for `target` runs on (GPU 0 or the CPU)."""
    import tvm  # pylint: disable=import-outside-toplevel

    return tvm.cuda(0) if target.kind.name == "cuda" else tvm.cpu(0)


def cpu_threads(target) -> Optional[int]:
    """The threads a build for `target` runs its CPU kernels on: an llvm target's ``num-cores``
    (``target.num_cores``; default all cores), None for a GPU target."""
    if target.kind.name != "llvm":
        return None
    return int(target.attrs.get("num-cores", 0)) or None


# ----------------------------------------------------------------------------- target handling
def target_key(target: Any) -> str:
    """Directory-friendly name of a target, e.g. ``llvm-znver5`` or ``cuda-sm_90``.

    Accepts anything :func:`target_summary` does, or such a summary itself.
    """
    identity = ("kind", "arch", "mcpu", "mtriple")
    if isinstance(target, dict) and target.get("kind") and all(k in identity for k in target):
        summary = target
    else:
        summary = target_summary(target)
    return "-".join([str(summary["kind"])] + [str(summary[k]) for k in ("arch", "mcpu") if summary.get(k)])


# Defaults filled into a CUDA target given as {"kind": "cuda", "arch": ...}: MetaSchedule's
# GPU rules (AutoBind, CrossThreadReduction, VerifyGPUCode) need them.  These are the limits
# every NVIDIA GPU since Kepler has (per block: 1024 threads, 48 KiB static shared memory,
# 64K registers; warps of 32).
_CUDA_DEFAULTS = {
    "max_threads_per_block": 1024,
    "max_num_threads": 1024,
    "thread_warp_size": 32,
    "max_shared_memory_per_block": 49152,
    "registers_per_block": 65536,
}


def normalize_target(target: Any):
    """A ``tvm.target.Target`` from a dict / Target (strings without flags are accepted too).

    CUDA targets get the thread / shared-memory limits MetaSchedule needs when they are missing.
    """
    from tvm.target import Target  # pylint: disable=import-outside-toplevel

    if isinstance(target, Target):
        config = dict(target.export())
    elif isinstance(target, dict):
        config = dict(target)
    elif isinstance(target, str):
        config = dict(Target(target).export())
    else:
        raise TypeError(f"target must be a dict, a string or a tvm Target, got {type(target).__name__}")
    if config.get("kind") == "cuda":
        for key, value in _CUDA_DEFAULTS.items():
            config.setdefault(key, value)
        config.setdefault("arch", "sm_90")
    for key in ("tag", "keys"):
        if key in config and not config[key]:
            config.pop(key)
    if "keys" in config:
        config["keys"] = list(config["keys"])
    return Target(config)


def target_summary(target: Any) -> dict[str, str]:
    """What identifies a target for a tuning database: kind plus ``arch`` (CUDA) / ``mcpu``."""
    tgt = normalize_target(target)
    config = dict(tgt.export())
    summary = {"kind": str(config["kind"])}
    for key in ("arch", "mcpu", "mtriple"):
        if config.get(key):
            summary[key] = str(config[key])
    if summary["kind"] == "llvm" and "mcpu" not in summary:
        summary["mcpu"] = "generic"
    return summary


def target_has_feature(target: Any, feature: str) -> bool:
    """True when LLVM reports CPU `feature` (e.g. ``avx512vnni``) for an llvm target's ``mcpu``."""
    from tvm.target import codegen  # pylint: disable=import-outside-toplevel

    tgt = normalize_target(target)
    if tgt.kind.name != "llvm":
        return False
    try:
        return bool(codegen.target_has_features(feature, tgt))
    except Exception:  # pylint: disable=broad-except
        return False


def target_has_vnni(target: Any) -> bool:
    """True when LLVM reports AVX512-VNNI for the target's ``mcpu``."""
    return target_has_feature(target, "avx512vnni")


def cuda_sm(target: Any) -> int:
    """Compute capability as an integer (``sm_90a`` -> 90); 0 when unknown."""
    arch = str(dict(normalize_target(target).export()).get("arch", ""))
    match = re.match(r"sm_(\d+)", arch)
    return int(match.group(1)) if match else 0


def vector_bits(target) -> int:
    """SIMD register width in bits of an llvm target, from its CPU features.

    (`llvm_get_vector_width` of the 0.27 wheel answers 512 for every x86 CPU, so it is only
    the last resort.)
    """
    from tvm.target import codegen  # pylint: disable=import-outside-toplevel

    try:
        with target:
            feats = {str(k) for k in codegen.llvm_get_cpu_features(target)}
    except Exception:  # pylint: disable=broad-except
        feats = set()
    if "avx512f" in feats:
        return 512
    if "avx" in feats:
        return 256
    if feats & {"sse2", "sse4.1", "sse4.2", "neon", "simd128", "altivec", "v"}:
        return 128
    try:
        width = int(codegen.llvm_get_vector_width(target))
    except Exception:  # pylint: disable=broad-except
        width = -1
    return width if width >= 128 else 128


def vector_registers(bits: int) -> int:
    return 32 if bits >= 512 else 16

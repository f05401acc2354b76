"""Target resolution and compilation (`tvm.compile` at opt_level 3, like relay.build did)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import tvm
from tvm import relax

from .errors import ConfigError, HarnessError
from .targets import llvm_target


def gpu_visible() -> bool:
    try:
        return bool(tvm.cuda(0).exist)
    except Exception:
        return False


def resolve_target(cfg) -> tvm.target.Target:
    """`TargetConfig` -> `tvm.target.Target` (dict form: 0.27 refuses flag strings)."""
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


def target_key(target: tvm.target.Target) -> str:
    """Short name of a target for folder names: `llvm-znver5`, `cuda-sm_90` (one rule, in harness.tune)."""
    from .tune.conv import target_key as _target_key

    return _target_key(target)


def device_for(target: tvm.target.Target):
    return tvm.cuda(0) if target.kind.name == "cuda" else tvm.cpu(0)


def bind_params(mod: tvm.IRModule, params: Dict[str, np.ndarray]) -> tvm.IRModule:
    """Bind weights as constants (so that FoldConstant and the quantizer see them)."""
    if not params:
        return mod
    bound = relax.transform.BindParams("main", {k: tvm.runtime.tensor(v) for k, v in params.items()})(mod)
    func = bound["main"]
    if func.attrs is not None and "num_input" in func.attrs:
        func = func.without_attr("num_input")
        bound["main"] = func
    return bound


@dataclass
class BuildResult:
    executable: object
    target: tvm.target.Target
    compile_seconds: float
    export_path: Optional[str] = None
    database: Optional[object] = None  # harness.tune.model.BuildDatabaseReport
    amx_kernels: Optional[list] = None  # kernels on AMX tiles (llvm targets with amx-int8), else None


def compile_module(mod: tvm.IRModule, target: tvm.target.Target, *, opt_level: int = 3,
                   export: Optional[str] = None, database: Optional[str] = None):
    """Compile a Relax module (weights already bound) under PassContext(opt_level).

    With `database` (a tuning database folder that exists), its tuned kernels are applied
    (MetaSchedule) and the rest keep default schedules; `BuildResult.database` says which.
    """
    from .tune import amx
    from .tune.model import BuildDatabaseReport

    start = time.perf_counter()
    report = BuildDatabaseReport(None)
    try:
        with amx.collect() as amx_kernels:
            ex, report = _compile(mod, target, database, opt_level)
    except HarnessError:
        raise
    except Exception as e:  # nvcc failures, unsupported schedules: keep the last informative line
        lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
        raise HarnessError(f"compilation for {target_key(target)} failed: {lines[-1] if lines else e}") from e
    seconds = time.perf_counter() - start
    if amx_kernels and amx.host_has_amx():
        amx.request_permission()  # tile state for this process, before the first run (HarnessError if refused)
    path = None
    if export:
        os.makedirs(os.path.dirname(os.path.abspath(export)) or ".", exist_ok=True)
        ex.export_library(export)
        path = os.path.abspath(export)
    return BuildResult(ex, target, seconds, path, report,
                       sorted(set(amx_kernels)) if amx.target_has_amx(target) else None)


def _compile(mod: tvm.IRModule, target: tvm.target.Target, database: Optional[str], opt_level: int):
    """(executable, BuildDatabaseReport). llvm builds get default CPU schedules for the kernels the
    database does not cover (harness.tune.cpu_default; HARNESS_CPU_DEFAULT_SCHEDULES=0 turns them
    off), CUDA builds dp4a schedules for their int8 convs (harness.tune.cuda_default;
    HARNESS_CUDA_INT8_DP4A=0); should such a build fail, it is built again without them."""
    from .tune.model import compile_with_database, harness_pipeline, schedule_family

    def build():
        # compile_with_database and the pipeline below ask harness_pipeline() themselves
        ex, report = compile_with_database(mod, target, database, opt_level=opt_level)
        if ex is None:
            pipeline = harness_pipeline(target) or "default"
            with target, tvm.transform.PassContext(opt_level=opt_level):
                ex = tvm.compile(mod, target=target, relax_pipeline=pipeline)
        return ex, report

    schedules = schedule_family(target)
    if schedules is None:
        return build()
    try:
        return build()
    except HarnessError:
        raise
    except Exception as e:  # pylint: disable=broad-except
        lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
        schedules.logger.warning("build with the harness's default schedules failed (%s); building without them",
                                 lines[-1] if lines else type(e).__name__)
        from .tune import amx

        amx.forget()  # the failed build's AMX kernels are not in this one
        with schedules.disabled():
            return build()


def cuda_source(ex) -> str:
    """The CUDA C the executable carries (for inspection on machines without a GPU)."""
    for m in _walk_modules(ex.mod):
        if m.kind == "cuda":
            return m.inspect_source()
    return ""


def _walk_modules(mod):
    stack, seen = [mod], []
    while stack:
        m = stack.pop()
        seen.append(m)
        stack.extend(m.imports)
    return seen

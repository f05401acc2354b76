"""Compilation: `tvm.compile` at opt_level 3 (as relay.build did) through the harness's own Relax
pipeline (:mod:`harness.build.pipeline`), tuning records applied by the conv they were tuned on
(:mod:`harness.build.passes.apply_database`), and export.

What was built is reported per kernel (:class:`BuildReport`): which database a schedule came from,
which default schedule family made it, or whether TVM's own fallback did; which schedule families
were on (the config's ``build.schedules``) and whether the build had to be redone without them.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import tvm
from tvm import relax

from ..errors import HarnessError
from ..schedules import ScheduleOptions, schedule_family
from ..targets import device_for, gpu_visible, resolve_target, target_key  # noqa: F401  (re-exported)
from .passes.apply_database import TuningRecords

logger = logging.getLogger("harness")


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
class BuildReport:
    """Where each kernel's schedule came from, and how the build went."""

    sources: List[str] = field(default_factory=list)  # tuning databases the records came from
    kernels: Dict[str, str] = field(default_factory=dict)  # kernel -> database:<name> | default:<kind> | tvm
    schedules: Dict[str, bool] = field(default_factory=dict)  # the schedule families as built
    fallback: Optional[str] = None  # why the build was redone without the harness's schedules
    amx_records: List[str] = field(default_factory=list)  # kernels given a database record on AMX tiles

    @property
    def from_database(self) -> List[str]:
        return [k for k, v in self.kernels.items() if v.startswith("database:")]

    @property
    def amx_kernels(self) -> List[str]:
        """The kernels on AMX tiles (the default AMX schedule, or a tuning record of one)."""
        return sorted(k for k, v in self.kernels.items() if v == "default:cpu_int8_amx" or k in self.amx_records)

    @property
    def default_schedules(self) -> List[str]:
        """The kernels not from a database (default schedules, or TVM's own)."""
        return [k for k, v in self.kernels.items() if not v.startswith("database:")]

    def counts(self) -> Dict[str, int]:
        """How many kernels each schedule source gave."""
        out: Dict[str, int] = {}
        for source in self.kernels.values():
            out[source] = out.get(source, 0) + 1
        return dict(sorted(out.items()))

    def as_dict(self) -> dict:
        return {"databases": list(self.sources), "from_database": len(self.from_database),
                "default_schedules": len(self.default_schedules), "by_source": self.counts(),
                "kernels": dict(sorted(self.kernels.items()))}

    def __str__(self) -> str:
        parts = [f"{n} {source}" for source, n in self.counts().items()]
        return f"{len(self.kernels)} kernels: " + ", ".join(parts) if parts else "no kernels"


@dataclass
class BuildResult:
    executable: object
    target: tvm.target.Target
    compile_seconds: float
    export_path: Optional[str] = None
    report: BuildReport = field(default_factory=BuildReport)

    @property
    def database(self) -> BuildReport:  # the name records and older callers use
        return self.report

    @property
    def amx_kernels(self) -> Optional[List[str]]:
        """The kernels on AMX tiles; None for a target without amx-int8."""
        from ..schedules.amx import target_has_amx  # pylint: disable=import-outside-toplevel

        return self.report.amx_kernels if target_has_amx(self.target) else None


def compile_module(mod: tvm.IRModule, target: tvm.target.Target, *, opt_level: int = 3,
                   export: Optional[str] = None, records: Optional[TuningRecords] = None,
                   schedules: Optional[ScheduleOptions] = None, fallback: bool = True) -> BuildResult:
    """Compile a Relax module (weights already bound) under PassContext(opt_level).

    `records` (:func:`harness.tune.database.load_records`): tuned kernels applied where their conv
    matches; `schedules`: which default schedule families are on (default: all); should the build
    fail with them and `fallback` be set, it is built again with every family off and the report
    says why (`fallback=False`: the error is raised).
    """
    schedules = schedules or ScheduleOptions()
    start = time.perf_counter()
    try:
        ex, report = _build(mod, target, records, schedules, opt_level)
    except HarnessError:
        raise
    except Exception as e:  # pylint: disable=broad-except
        reason = _last_line(e)
        if not fallback or schedule_family(target, schedules) is None:
            raise HarnessError(f"compilation for {target_key(target)} failed: {reason}") from e
        logger.warning("build with the harness's default schedules failed (%s); building without them", reason)
        try:
            ex, report = _build(mod, target, records, ScheduleOptions.none(), opt_level)
        except Exception as e2:  # nvcc failures, unsupported schedules: keep the last informative line
            raise HarnessError(f"compilation for {target_key(target)} failed: {_last_line(e2)}") from e2
        report.fallback = reason
    seconds = time.perf_counter() - start
    if report.amx_kernels:
        from ..schedules import amx  # pylint: disable=import-outside-toplevel
        from ..targets import host_has_amx  # pylint: disable=import-outside-toplevel

        if host_has_amx():
            amx.request_permission()  # tile state for this process, before the first run (HarnessError if refused)
    path = None
    if export:
        os.makedirs(os.path.dirname(os.path.abspath(export)) or ".", exist_ok=True)
        from ..schedules.amx import export_addons  # pylint: disable=import-outside-toplevel

        ex.export_library(export, addons=export_addons(bool(report.amx_kernels)))
        path = os.path.abspath(export)
    return BuildResult(ex, target, seconds, path, report)


def _last_line(err: Exception) -> str:
    lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__


def _build(mod, target, records, schedules: ScheduleOptions, opt_level: int):
    from .pipeline import relax_pipeline  # pylint: disable=import-outside-toplevel

    family = schedule_family(target, schedules)
    report = BuildReport(sources=list(records.sources) if records is not None else [],
                         schedules=schedules.as_dict())
    pipeline = relax_pipeline(target, family, records, report.kernels, report.amx_records)
    with target, tvm.transform.PassContext(opt_level=opt_level):
        ex = tvm.compile(mod, target=target, relax_pipeline=pipeline)
    return ex, report


def cuda_source(ex) -> str:
    """The CUDA C the executable carries (for inspection on machines without a GPU)."""
    for m in walk_modules(ex.mod):
        if m.kind == "cuda":
            return m.inspect_source()
    return ""


def walk_modules(mod):
    """A runtime module and every module it imports."""
    stack, seen = [mod], []
    while stack:
        m = stack.pop()
        seen.append(m)
        stack.extend(m.imports)
    return seen

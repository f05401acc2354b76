"""How tuning candidates are built and measured: the local runner (this machine's CPU or GPU),
a MetaSchedule runner object (e.g. TVM's RPC runner), and the build function of the candidates."""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any

from ..errors import HarnessError
from ..targets import gpu_visible


def make_runner(runner: Any, target, *, timeout_sec: float, number: int, repeat: int, min_repeat_ms: int):
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

    if runner is None or runner == "local":
        if target.kind.name == "cuda" and not gpu_visible():
            raise HarnessError(
                "tuning for CUDA needs a GPU to time the kernels, and none is visible here: run on "
                "a GPU machine, pass an RPC runner, or use emit_source() to only compile"
            )
        config = ms.runner.EvaluatorConfig(
            number=number, repeat=repeat, min_repeat_ms=min_repeat_ms, enable_cpu_cache_flush=False
        )
        from ..schedules import amx  # pylint: disable=import-outside-toplevel
        from ..targets import cpu_threads, host_has_amx  # pylint: disable=import-outside-toplevel

        # AMX kernels measured in the runner's processes need their own tile state; CPU kernels run on
        # the threads a build of the target runs them on
        init = functools.partial(_runner_worker_setup, cpu_threads(target), amx.applies_to(target) and host_has_amx())
        return ms.runner.LocalRunner(timeout_sec=timeout_sec, evaluator_config=config, initializer=init)
    if isinstance(runner, str):
        raise ValueError(f"unknown runner {runner!r}; valid: 'local' or a MetaSchedule Runner object")
    return runner


def _runner_worker_setup(threads, amx_tiles: bool) -> None:
    """Run once in each process of the local runner: the AMX tile permission where its kernels may
    use tiles, and the TVM runtime's CPU threads (`threads`; None: a GPU target, left as it is)."""
    if amx_tiles:
        from ..schedules import amx  # pylint: disable=import-outside-toplevel

        amx.worker_permission()
    if threads:
        from ..bench import use_cpu_threads  # pylint: disable=import-outside-toplevel

        use_cpu_threads(threads)


@contextlib.contextmanager
def nvcc_mode():
    """Make TVM compile CUDA with ``nvcc`` (its default is NVRTC) inside the block."""
    old = os.environ.get("TVM_CUDA_COMPILE_MODE")
    os.environ["TVM_CUDA_COMPILE_MODE"] = "nvcc"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TVM_CUDA_COMPILE_MODE", None)
        else:
            os.environ["TVM_CUDA_COMPILE_MODE"] = old


def _pass_config_for(mod) -> dict:
    """Extra PassContext options a scheduled module needs to compile on TVM 0.27.

    int8 wmma kernels stage the int8 operands and the int32 results in shared memory; TVM
    0.27's storage rewrite then lets the int32 buffer reuse an int8 one and the build dies with
    "tvm_access_ptr element type must match the source buffer".  Turning storage rewrite off
    for those kernels (only) avoids it.
    """
    text = mod.script() if hasattr(mod, "script") else ""
    if "wmma." in text:
        return {"tirx.disable_storage_rewrite": True}
    return {}


def build_candidate(mod, target, _params=None):
    """MetaSchedule build function used by :func:`tune_conv` (runs in builder workers).

    Same as MetaSchedule's default build, plus the workaround of :func:`_pass_config_for`.
    """
    import tvm  # pylint: disable=import-outside-toplevel
    from tvm.driver import build as tvm_build  # pylint: disable=import-outside-toplevel
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock  # pylint: disable=import-outside-toplevel

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    config = _pass_config_for(mod)
    if config:
        with tvm.transform.PassContext(opt_level=3, config=config):
            return tvm_build(mod, target=target)
    return tvm_build(mod, target=target)

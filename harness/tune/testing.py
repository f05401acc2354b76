"""Test doubles for the tuning loop (like ``tvm.s_tir.meta_schedule.testing``): a runner that
measures nothing, so that the whole loop runs in tests, CUDA included, on a machine without a GPU."""

from __future__ import annotations

from typing import Any, Callable


# -------------------------------------------------------------------------------- runners
_CANNED_CLASS = None


def CannedRunner(latency_fn: Callable[[Any], float] | None = None):  # pylint: disable=invalid-name
    """A MetaSchedule runner that measures nothing and returns made-up latencies.

    ``latency_fn(runner_input) -> seconds`` defaults to a deterministic value derived from the
    built artifact's path.  Useful for exercising the whole tuning loop (including CUDA on a
    machine without a GPU) in tests.  The returned object has ``calls`` (inputs seen).
    """
    global _CANNED_CLASS  # pylint: disable=global-statement
    if _CANNED_CLASS is None:
        import zlib  # pylint: disable=import-outside-toplevel

        from tvm.ir.utils import derived_object  # pylint: disable=import-outside-toplevel
        from tvm.s_tir.meta_schedule.runner import PyRunner, RunnerFuture, RunnerResult  # pylint: disable=import-outside-toplevel

        def _default_latency(runner_input) -> float:
            digest = zlib.crc32(str(runner_input.artifact_path).encode())
            return 1e-4 * (1.0 + (digest % 1000) / 1000.0)

        @derived_object
        class _Canned(PyRunner):
            def __init__(self, fn=None) -> None:
                super().__init__()
                self.fn = fn or _default_latency
                self.calls = 0

            def run(self, runner_inputs):
                futures = []
                for runner_input in runner_inputs:
                    self.calls += 1
                    result = RunnerResult([float(self.fn(runner_input))], None)
                    futures.append(RunnerFuture(lambda: True, lambda r=result: r))
                return futures

        _CANNED_CLASS = _Canned
    return _CANNED_CLASS(latency_fn)

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The README's test command runs two test processes (pytest-xdist, `-n 2`) on the machine's cores.
# Each process (and the CLI subprocesses its tests start) then runs TVM's and OpenMP's parallel
# loops on one thread: with a thread pool per process as wide as the machine, a parallel loop
# waits at its barrier for threads the other process keeps off the cores (a 5-second test took
# over 3 minutes). No test asserts a time; outputs do not depend on the thread count.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def llvm_target():
    import tvm

    from harness.targets import llvm_target as host_target

    return tvm.target.Target(host_target())


def run_cli(*args, cwd=None, timeout=900):
    """Run `python -m harness ARGS` in a subprocess; returns CompletedProcess (text)."""
    import subprocess

    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=timeout)

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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

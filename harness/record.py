"""The result record: one JSON document per run, from which every table is made."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import subprocess
from typing import Any, Dict, Optional

SCHEMA_VERSION = 1


def _git(*args: str) -> Optional[str]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except Exception:
        return None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> Optional[str]:
    try:
        import tvm

        dev = tvm.cuda(0)
        if dev.exist:
            return dev.device_name
    except Exception:
        pass
    return None


def _llvm_cpu() -> Optional[str]:
    """LLVM's name of this CPU; None where TVM runs without its compiler (`harness bench-bundle`)."""
    try:
        import tvm

        return tvm.target.codegen.llvm_get_system_cpu()
    except Exception:  # pylint: disable=broad-except
        return None


def machine_info() -> Dict[str, Any]:
    return {
        "hostname": platform.node(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "llvm_cpu": _llvm_cpu(),
        "gpu": gpu_name(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def software_info() -> Dict[str, Any]:
    import numpy
    import tvm

    info = {"tvm": tvm.__version__, "numpy": numpy.__version__}
    for mod in ("mxnet", "torch", "onnxruntime"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            pass
    return info


def git_info() -> Dict[str, Any]:
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def new_record(kind: str, config: Dict[str, Any], **fields) -> Dict[str, Any]:
    rec = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "software": software_info(),
        "git": git_info(),
        "config": config,
    }
    rec.update(fields)
    return rec


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def write_record(record: Dict[str, Any], results_dir: str, run_key: str) -> str:
    os.makedirs(results_dir, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(results_dir, f"{stamp}-{_slug(run_key)}.json")
    n = 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(results_dir, f"{stamp}-{_slug(run_key)}-{n}.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)  # never a half-written record
    return path


def load_record(path: str) -> Dict[str, Any]:
    with open(path) as f:
        rec = json.load(f)
    if rec.get("schema_version") != SCHEMA_VERSION:
        from .errors import HarnessError

        raise HarnessError(f"{path}: record schema version {rec.get('schema_version')} "
                           f"(this harness reads {SCHEMA_VERSION})")
    return rec

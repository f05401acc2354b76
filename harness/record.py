"""The result record: one JSON document per run, from which every table is made."""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import re
import subprocess
import tempfile
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


def _existing_part(path: str) -> str:
    """The longest leading part of `path` (absolute) that exists."""
    probe = os.path.abspath(path)
    while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    return probe


def check_writable_dir(path: str, key: str = "bench.results_dir", what: str = "records") -> str:
    """Make sure `what` can be written into folder `path` before any work starts (without making it):
    ConfigError naming `key`, the folder and why when it is a file, lies below a file, or cannot be
    written (permissions, a read-only or virtual file system such as /proc). Returns `path`."""
    from .errors import ConfigError

    probe = _existing_part(path)
    if os.path.exists(probe) and not os.path.isdir(probe):
        where = "is a file" if probe == os.path.abspath(path) else f"lies below the file {probe}"
        raise ConfigError(f"{key}: {path} {where}, not a folder; give a folder for the {what}")
    try:  # a file made and removed where the folder is (or would be made): nothing is left behind
        fd, tmp = tempfile.mkstemp(prefix=".harness-write-test-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ConfigError(f"{key}: cannot write {what} into {path} ({e.strerror or e}); "
                          "give a folder you can write") from None
    return path


def check_output_file(path: str, key: str, what: str = "file") -> str:
    """ConfigError naming `key` unless `path` can be written as a file (without writing it): it must
    not be a folder, and the folder it goes in must be one (or be possible to make) and writable."""
    from .errors import ConfigError

    if os.path.isdir(path):
        raise ConfigError(f"{key}: {path} is a folder; give a {what} path")
    folder = os.path.dirname(os.path.abspath(path))
    probe = _existing_part(folder)
    if os.path.exists(probe) and not os.path.isdir(probe):
        raise ConfigError(f"{key}: {path} lies below the file {probe}; give a {what} path in a folder")
    check_writable_dir(folder, key, what)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise ConfigError(f"{key}: cannot write {path} (permission denied)")
    return path


def fallback_results_dir() -> str:
    """Where a record goes when its results folder refuses it at the end of a run."""
    return os.path.join(tempfile.gettempdir(), "harness-results")


def write_record_somewhere(record: Dict[str, Any], results_dir: str, run_key: str,
                           key: str = "bench.results_dir") -> tuple:
    """write_record into `results_dir`, else into fallback_results_dir(), else the current folder, so
    that nothing measured is lost: (path or None, None or one line saying what failed and where the
    record went instead)."""
    try:
        return write_record(record, results_dir, run_key), None
    except OSError as e:
        why = f"{key}: could not write the record into {results_dir} ({e.strerror or e})"
    for other in (fallback_results_dir(), os.getcwd()):
        try:
            path = write_record(record, other, run_key)
        except OSError:
            continue
        return path, f"{why}; it was written to {path} instead"
    return None, f"{why}, nor into {fallback_results_dir()} or the current folder; it follows on stdout as JSON"


def write_record(record: Dict[str, Any], results_dir: str, run_key: str) -> str:
    os.makedirs(results_dir, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(results_dir, f"{stamp}-{_slug(run_key)}.json")
    n = 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(results_dir, f"{stamp}-{_slug(run_key)}-{n}.json")
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(record, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)  # never a half-written record
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def load_record(path: str) -> Dict[str, Any]:
    with open(path) as f:
        rec = json.load(f)
    if rec.get("schema_version") != SCHEMA_VERSION:
        from .errors import HarnessError

        raise HarnessError(f"{path}: record schema version {rec.get('schema_version')} "
                           f"(this harness reads {SCHEMA_VERSION})")
    return rec

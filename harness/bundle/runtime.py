"""A runtime-only copy of the installed TVM: the ``tvm`` package without ``lib/libtvm_compiler.so``,
``3rdparty/``, its C++ sources and headers (``src/``, ``include/``), the web runtime (``web/``) and
byte-code caches (about 12 MiB of files instead of 300 MiB). With
``TVM_USE_RUNTIME_LIB=1`` its ``import tvm`` loads ``libtvm_runtime.so`` only, which is all
`harness bench-bundle` needs (plus ``tvm_ffi`` and numpy).

    python -m harness.bundle.runtime DEST      # DEST/tvm
"""
from __future__ import annotations

import os
import shutil
import sys

#: Left out of the copy, anywhere: the compiler library and byte-code caches.
EXCLUDED = ("libtvm_compiler.so", "__pycache__")
#: Left out of the copy, at the package's top: third-party and C++ sources, headers, the web runtime.
EXCLUDED_TOP = ("3rdparty", "src", "include", "web")


def installed_tvm_dir() -> str:
    import importlib.util

    spec = importlib.util.find_spec("tvm")
    if spec is None or not spec.submodule_search_locations:
        from ..errors import HarnessError

        raise HarnessError("no installed tvm package to copy the runtime from")
    return list(spec.submodule_search_locations)[0]


def copy_runtime(dest: str, source: str = None) -> str:
    """Copy the runtime-only subset of the ``tvm`` package into ``dest/tvm``; returns that path."""
    source = source or installed_tvm_dir()
    target = os.path.join(dest, "tvm")
    if os.path.exists(target):
        shutil.rmtree(target)
    anywhere = shutil.ignore_patterns(*EXCLUDED)

    def ignore(folder, names):
        top = os.path.abspath(folder) == os.path.abspath(source)
        return set(anywhere(folder, names)) | ({n for n in names if n in EXCLUDED_TOP} if top else set())

    shutil.copytree(source, target, ignore=ignore)
    return target


def tree_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) != 2:
        print("usage: python -m harness.bundle.runtime DEST", file=sys.stderr)
        sys.exit(2)
    out = copy_runtime(sys.argv[1])
    print(f"{out}: {tree_bytes(out) / 2**20:.1f} MiB")

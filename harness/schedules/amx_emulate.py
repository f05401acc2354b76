"""The AMX kernels run on any x86 CPU: their tile instructions as calls of a C emulator.

A build made inside :func:`emulated` (for an llvm target with amx-int8, e.g.
:func:`emulation_target`: this CPU plus ``+amx-tile,+amx-int8``) gets the same AMX schedules,
tile plans, data layouts and epilogues as an AMX build; only the tile instructions
(``ldtilecfg``, ``sttilecfg``, ``tilezero``, ``tileloadd64``, ``tilestored64``, ``tdpbusd``,
``tdpbsud``) become calls of ``harness_amx_<name>`` in ``amx_emulator.c`` (per-thread tile
state, the SDM's semantics; what the hardware would fault on is counted). The emulator is
compiled once per source version with the C compiler TVM exports libraries with, and loaded
into the process with its symbols global, where the built kernels find them.

It checks what the kernels compute (tests: numpy's integer sums, a model's outputs against the
VNNI build's) on CPUs without AMX; it is hundreds of times slower than the tiles and measures
nothing. :func:`without_tiles` builds the kernels with no tile instructions at all: their other
parts can then be timed on any CPU (``scripts/bench_amx.py --without-tiles``).
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import tempfile
from typing import Iterator

from ..errors import HarnessError
from . import amx

SOURCE = amx.EMULATOR_SOURCE
_LIBRARY: dict = {}


class Emulator:
    """The loaded emulator: its fault count and first message (the hardware's #UD / #GP)."""

    def __init__(self, lib: ctypes.CDLL):
        self.lib = lib
        lib.harness_amx_emulator_message.restype = ctypes.c_char_p
        lib.harness_amx_emulator_products.restype = ctypes.c_long

    def errors(self) -> int:
        return int(self.lib.harness_amx_emulator_errors())

    def message(self) -> str:
        return self.lib.harness_amx_emulator_message().decode()

    def products(self) -> int:
        """Tile dot products (tdpbusd / tdpbsud) run since the last reset, all threads."""
        return int(self.lib.harness_amx_emulator_products())

    def reset(self) -> None:
        self.lib.harness_amx_emulator_reset()

    def check(self) -> None:
        """Raise where a tile instruction ran that the hardware would have faulted on."""
        if self.errors():
            raise HarnessError(f"AMX emulator: {self.errors()} faulting tile instruction(s), the first: "
                               f"{self.message()}")


def library() -> Emulator:
    """The emulator, compiled (once per source version, in the temp directory) and loaded."""
    if "lib" not in _LIBRARY:
        from tvm.support import cc  # pylint: disable=import-outside-toplevel

        digest = hashlib.sha256(open(SOURCE, "rb").read()).hexdigest()[:16]
        path = os.path.join(tempfile.gettempdir(), f"harness-amx-emulator-{digest}.so")
        if not os.path.exists(path):
            tmp = f"{path}.{os.getpid()}.so"  # parallel test workers: each compiles, one rename wins
            cc.create_shared(tmp, [SOURCE], options=["-O2", "-fPIC"])
            os.replace(tmp, path)
        _LIBRARY["lib"] = Emulator(ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL))
    return _LIBRARY["lib"]


@contextlib.contextmanager
def emulated() -> Iterator[Emulator]:
    """Builds inside emulate the AMX tile instructions (the emulator's fault count starts at 0)."""
    emulator = library()
    emulator.reset()
    before = amx.set_tile_mode("emulated")
    try:
        yield emulator
    finally:
        amx.set_tile_mode(before)


@contextlib.contextmanager
def without_tiles() -> Iterator[None]:
    """Builds inside have AMX kernels without their tile instructions: what is left (the data
    packing, the epilogue, the loops) runs on any x86 CPU and can be timed; its outputs are
    meaningless (the sums are never computed)."""
    before = amx.set_tile_mode("dropped")
    try:
        yield
    finally:
        amx.set_tile_mode(before)


def emulation_target(mcpu=None, num_cores=None) -> dict:
    """This CPU's llvm target (or `mcpu`'s) with the AMX int8 features, so that the AMX schedules
    apply (their tile instructions must then be emulated: this CPU may have none)."""
    from ..targets import llvm_target  # pylint: disable=import-outside-toplevel

    config = llvm_target(mcpu, num_cores)
    extra = [f for f in ("+amx-tile", "+amx-int8") if f not in config.get("mattr", [])]
    config["mattr"] = config.get("mattr", []) + extra
    return config

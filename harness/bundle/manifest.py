"""The bundle's manifest (``manifest.json``): format, checks and seeded weights. No TVM here."""
from __future__ import annotations

import json
import os
import zlib
from typing import Dict, List, Sequence

import numpy as np

from ..errors import HarnessError

#: Bumped whenever the layout or the meaning of a manifest field changes.
BUNDLE_FORMAT = 1
MANIFEST = "manifest.json"

#: Variants a bundle can hold: the harness's int8 schedules (dp4a convs on CUDA, dot-product convs
#: on llvm), int8 with TVM's own default schedules only (CUDA: dlight), and fp32 (harness pipeline).
VARIANTS = {
    "tvm-int8": "int8, the harness's default schedules (CUDA: __dp4a convs, then TVM's GPU rules)",
    "tvm-int8-dlight": "int8, TVM's own GPU default schedules only (dlight; CUDA targets)",
    "tvm-fp32": "fp32, the harness's build pipeline",
}
#: Function names in every library (LiftTransformParams names the transform after the function).
MAIN = "main"
TRANSFORM = "main_transform_params"


class BundleError(HarnessError):
    """A bundle that cannot be used here (wrong version, missing file, wrong device)."""


def harness_version() -> str:
    from .. import __version__

    return __version__


def load_manifest(bundle_dir: str) -> Dict:
    """The checked manifest of `bundle_dir`: this harness's version and format, every library present."""
    path = os.path.join(bundle_dir, MANIFEST)
    if not os.path.isdir(bundle_dir):
        raise BundleError(f"{bundle_dir}: no such bundle directory (make one with `harness bundle`)")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise BundleError(f"{bundle_dir}: not a bundle (no {MANIFEST}; make one with `harness bundle`)") from None
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: cannot read the manifest ({e})") from None
    version, fmt = manifest.get("harness_version"), manifest.get("bundle_format")
    if version != harness_version() or fmt != BUNDLE_FORMAT:
        raise BundleError(f"{bundle_dir}: built by harness {version} (bundle format {fmt}); this is harness "
                          f"{harness_version()} (bundle format {BUNDLE_FORMAT}): rebuild it with `harness bundle`")
    for lib in libraries(manifest):
        if not os.path.isfile(os.path.join(bundle_dir, lib)):
            raise BundleError(f"{bundle_dir}: library {lib} is missing (listed in {MANIFEST}); "
                              "copy the whole bundle directory, or rebuild it with `harness bundle`")
    return manifest


def libraries(manifest: Dict) -> List[str]:
    """Every library path (relative to the bundle) the manifest lists."""
    cases = list(manifest.get("cases", []))
    if manifest.get("reference"):
        cases.append(manifest["reference"])
    return [v["library"] for case in cases for v in case.get("variants", [])]


def seeded_weight(name: str, shape: Sequence[int], dtype: str, seed: int, bits: int = 8) -> np.ndarray:
    """A weight of `shape` / `dtype` from `seed` and its name (so each tensor is the same whatever
    the order): int8 over the symmetric range of `bits` bits (what the build's kernels were made
    for: 7 where they multiply on vpmaddubsw), uint8 over its range, int32 small, float He-normal (fan-in: all axes but
    the first) for tensors, and around 1 (positive) for the per-channel vectors of BatchNorm
    (``gamma``, ``var``) or around 0 for the others."""
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())])
    shape = tuple(int(d) for d in shape)
    if dtype == "int8":
        top = 2 ** (int(bits) - 1) - 1
        return rng.integers(-top, top + 1, size=shape, dtype=np.int8)
    if dtype == "uint8":
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    if dtype.startswith("int"):
        return rng.integers(-1000, 1001, size=shape).astype(dtype)
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:])) or 1
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)
    if name.endswith(("gamma", "var", "running_var", "moving_var")):
        return rng.uniform(0.5, 1.5, size=shape).astype(dtype)
    return (rng.standard_normal(shape) * 0.1).astype(dtype)


def seeded_weights(specs: Sequence[Dict], seed: int) -> List[np.ndarray]:
    """:func:`seeded_weight` for each ``{"name", "shape", "dtype"[, "bits"]}`` of a manifest's variant."""
    return [seeded_weight(w["name"], w["shape"], w["dtype"], seed, w.get("bits", 8)) for w in specs]


def write_json(path: str, data) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)

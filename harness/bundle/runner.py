"""`harness bench-bundle DIR`: run a bundle with the TVM runtime alone (no compiler, MXNet or ONNX).

Imports numpy and the TVM runtime (``tvm.runtime``); torch only for the torch peers, where it is
installed. For each library: ``main_transform_params`` once on the weights, then ``main`` timed with
``time_evaluator`` exactly as `harness run` does (:func:`harness.bench.time_vm_args`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .manifest import MAIN, TRANSFORM, BundleError, load_manifest, seeded_weights

Status = Callable[[str], None]

#: The reference case passes when the target's int8 output is within this of the CPU's, relative to
#: the largest |CPU output|, and every image's top-1 class is the CPU's. The integer sums are exact,
#: but the float requantize / dequantize epilogues may round differently (a contracted multiply-add
#: on the GPU), which moves an 8-bit activation by one step now and then: about 1e-4..1e-3 of the
#: largest logit each. A wrong kernel (layout, packing, accumulation) is off by the logits' own size.
REFERENCE_MAX_REL_ERR = 1e-2
DEVICES = ("cpu", "cuda")


@dataclass
class BenchSettings:
    """`bench:` of the run config (what `harness run` times with)."""

    number: int = 10
    repeat: int = 5
    min_repeat_ms: int = 200
    warmup: int = 1
    rounds: int = 1  # >1: the case's libraries and peers timed in alternating rounds (bench.rounds)

    @classmethod
    def of(cls, config: Dict) -> "BenchSettings":
        b = (config or {}).get("bench") or {}
        return cls(**{k: b[k] for k in ("number", "repeat", "min_repeat_ms", "warmup", "rounds") if k in b})


def _device(manifest: Dict, device: Optional[str], bundle_dir: str):
    import tvm

    target = manifest["target"]
    want = "cuda" if target["kind"] == "cuda" else "cpu"
    if device is not None and device not in DEVICES:
        raise BundleError(f"--device: unknown '{device}'; valid: {', '.join(DEVICES)}")
    if device is not None and device != want:
        raise BundleError(f"{bundle_dir}: its libraries are for {target['key']} and run on the {want} device; "
                          f"--device {device} cannot run them (valid: {want}; or build a bundle with "
                          f"--target {'cuda' if device == 'cuda' else 'llvm'})")
    if want == "cuda":
        why = load_cuda_runtime()
        dev = tvm.cuda(0)
        if not dev.exist:
            raise BundleError(f"{bundle_dir}: built for {target['key']}, but no CUDA GPU is visible here"
                              f"{f' ({why})' if why else ''}; run it on a machine with one, or build a bundle "
                              "with --target llvm")
        arch = "sm_" + dev.compute_version.replace(".", "")
        if target.get("arch") and arch != target["arch"]:
            raise BundleError(f"{bundle_dir}: built for {target['arch']}, but this GPU ({dev.device_name}) is {arch}; "
                              f"rebuild it with --arch {arch}")
        return dev
    return tvm.cpu(0)


def load_cuda_runtime() -> str:
    """Load TVM's CUDA runtime library (``lib/libtvm_runtime_cuda.so``) where ``import tvm`` did not: TVM
    loads its backends only when its compiler is there. Returns why it could not be loaded ("" if it is)."""
    from pathlib import Path

    from tvm.base import _LOADED_LIBS
    from tvm_ffi.libinfo import load_lib_ctypes

    if "tvm_runtime_cuda" in _LOADED_LIBS:
        return ""
    try:
        _LOADED_LIBS["tvm_runtime_cuda"] = load_lib_ctypes(
            package="tvm", target_name="tvm_runtime_cuda", mode="RTLD_LOCAL",
            extra_lib_paths=[Path(_LOADED_LIBS["tvm_runtime"]._name).resolve().parent])  # pylint: disable=protected-access
    except (OSError, RuntimeError) as e:
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return ""


class _Library:
    """One exported library on `dev`: the weights transformed once, then `main` on an input."""

    def __init__(self, bundle_dir: str, entry: Dict, dev, weights: Sequence[np.ndarray]):
        import tvm
        from tvm.runtime import vm as rvm

        path = os.path.join(bundle_dir, entry["library"])
        if str(dev).startswith("cpu"):
            from ..targets import host_has_amx, request_amx_permission

            if host_has_amx():  # a CPU library may hold AMX tile kernels: tile state before its first run
                request_amx_permission()
            from ..bench import use_cpu_threads

            use_cpu_threads()  # all CPUs (TVM alone takes half of them on x86), as `harness run` does
        try:
            self.vm = rvm.VirtualMachine(tvm.runtime.load_module(path), dev)
        except Exception as e:  # a library of another target / a broken file: one line
            lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
            raise BundleError(f"{path}: cannot load it here: {lines[-1] if lines else type(e).__name__}") from e
        self.dev = dev
        raw = [tvm.runtime.tensor(np.ascontiguousarray(w), dev) for w in weights]
        self.params = list(self.vm[TRANSFORM](raw))
        dev.sync()

    def args(self, x: np.ndarray) -> list:
        import tvm

        return [tvm.runtime.tensor(np.ascontiguousarray(x), self.dev), *self.params]

    def run(self, x: np.ndarray) -> np.ndarray:
        out = self.vm[MAIN](*self.args(x))
        return out.numpy() if hasattr(out, "numpy") else out[0].numpy()


# ----------------------------------------------------------------------------- reference case


def check_reference(bundle_dir: str, manifest: Dict, dev, status: Status = lambda m: None) -> Optional[Dict]:
    """Run the reference case's libraries on its real weights; compare with the CPU's int8 output."""
    ref = manifest.get("reference")
    if not ref:
        return None
    x = np.load(os.path.join(bundle_dir, ref["input"]))
    expected = np.load(os.path.join(bundle_dir, ref["expected"]))
    stored = np.load(os.path.join(bundle_dir, ref["weights_file"]))
    result = {"model": ref["model"], "batch": ref["batch"], "expected_from": ref["expected_from"],
              "max_rel_err_allowed": REFERENCE_MAX_REL_ERR, "variants": {}}
    for entry in ref["variants"]:
        out = _Library(bundle_dir, entry, dev, [stored[w["name"]] for w in entry["weights"]]).run(x)
        err = float(np.abs(out.astype(np.float64) - expected).max() / max(float(np.abs(expected).max()), 1e-12))
        top1 = float((out.argmax(-1) == expected.argmax(-1)).mean())
        ok = bool(np.isfinite(out).all() and err <= REFERENCE_MAX_REL_ERR and top1 == 1.0)
        result["variants"][entry["variant"]] = {"max_rel_err": err, "bit_identical": bool(np.array_equal(out, expected)),
                                                "top1_agreement": top1, "passed": ok}
        status(f"reference {ref['model']} {entry['variant']}: max rel err {err:.3g} vs the CPU's int8 output "
               f"({'passed' if ok else 'FAILED'})")
    result["passed"] = all(v["passed"] for v in result["variants"].values())
    return result


# ----------------------------------------------------------------------------- timing


def _input(case: Dict) -> np.ndarray:
    spec = case["input"]
    # harness.models.input_data: the benchmark input of `harness run`
    return np.random.RandomState(spec["seed"]).normal(0.0, 1.0, size=tuple(spec["shape"])).astype(spec["dtype"])


def _prepare_variant(bundle_dir: str, case: Dict, entry: Dict, dev, x: np.ndarray, bench: BenchSettings,
                     tkey: str):
    """(record without latency, measure(first_round) -> LatencyStats) of one library."""
    from .. import bench as hbench

    lib = _Library(bundle_dir, entry, dev, seeded_weights(entry["weights"], case["weight_seed"]))
    first = lib.run(x)
    args = lib.args(x)

    def measure(first_round: bool):
        return hbench.time_vm_args(lib.vm, dev, args, number=bench.number, repeat=bench.repeat,
                                   min_repeat_ms=bench.min_repeat_ms, warmup=bench.warmup if first_round else 0,
                                   batch=case["batch"])

    variant = {"variant": entry["variant"], "target": tkey, "compile_seconds": entry.get("compile_seconds"),
               "export": entry["library"], "schedules": entry.get("schedules"),
               "weights": f"seeded (seed {case['weight_seed']}), from the bundle",
               "output_shape": list(first.shape), "output_finite": bool(np.isfinite(first).all()),
               "latency": None, **(entry.get("extra") or {})}
    if "dp4a_kernels" in entry:
        variant["dp4a_kernels"] = entry["dp4a_kernels"]
    return variant, measure


class _PeerModel:  # pylint: disable=too-few-public-methods
    """What harness.peers needs of a model: its name and a torch module."""

    def __init__(self, name: str, module):
        self.name, self.frontend, self.extra = name, "bundle", {"torch_module": module}


def _peer_setup(bundle_dir: str, case: Dict, x: np.ndarray, bench: BenchSettings, device: str,
                status: Status):
    """(records of peers that cannot run here, or None; the arguments of harness.peers.run_peers /
    PeerSession for the others). The torch peers run on the MXNet graph the bundle carries, with
    seeded weights, checked against torch fp32 on the CPU with the same weights (TVM fp32's weights
    are BatchNorm-folded by the converter, so not the same seeded values)."""
    info = case.get("peers")
    if not info:
        return [], None
    names = list(info["names"])
    if not info.get("graph"):
        return [{"variant": n, "latency": None, "note": info.get("note", "n/a: no graph")} for n in names], None
    try:
        import torch  # noqa: F401  pylint: disable=unused-import
    except ImportError:
        return [{"variant": n, "latency": None, "note": "n/a: torch is not installed here"} for n in names], None
    import json

    import torch

    from ..peers.mxnet_torch import MXNetGraphModule

    with open(os.path.join(bundle_dir, info["graph"]), encoding="utf-8") as f:
        graph = json.load(f)
    params = dict(zip([w["name"] for w in info["weights"]], seeded_weights(info["weights"], case["weight_seed"])))
    module = MXNetGraphModule(graph, params, [info.get("input_name", "data")]).eval()
    with torch.inference_mode():
        reference = module(torch.from_numpy(x)).float().numpy()
    status(f"{case['model']} B{case['batch']}: peers {', '.join(names)}")
    return None, dict(names=names, model=_PeerModel(case["model"], module), x=x, reference=reference, bench=bench,
                      calib_batches=[], device=device, status=status)


def _time_case(bundle_dir: str, case: Dict, dev, x: np.ndarray, bench: BenchSettings, tkey: str, device: str,
               peers: bool, status: Status) -> List[Dict]:
    """Every library of a case (and its peers) timed: one after another, or with ``bench.rounds`` > 1
    all set up and checked first, then timed in alternating rounds (harness.bench.time_in_rounds)."""
    from .. import bench as hbench
    from ..peers import PeerSession, run_peers

    variants, measures = [], {}
    how = (f"number={bench.number}, repeat={bench.repeat}, min_repeat_ms={bench.min_repeat_ms}"
           f"{' each per round' if bench.rounds > 1 else ''}")
    for entry in case["variants"]:
        variant, measure = _prepare_variant(bundle_dir, case, entry, dev, x, bench, tkey)
        variants.append(variant)
        if bench.rounds == 1:
            status(f"{case['model']} B{case['batch']} {entry['variant']}: timing ({how})")
            variant["latency"] = measure(True).to_dict()
        else:
            measures[entry["variant"]] = measure
    peer_records, peer_args = _peer_setup(bundle_dir, case, x, bench, device, status) if peers else ([], None)
    session = None
    try:
        if peer_args is not None and bench.rounds == 1:
            peer_records = run_peers(**peer_args)
        elif peer_args is not None:
            session = PeerSession(**peer_args)
            peer_records = session.records
            measures.update(session.measures())
        if measures:
            status(f"{case['model']} B{case['batch']}: timing {', '.join(measures)} in {bench.rounds} "
                   f"alternating rounds ({how})")
            stats = hbench.time_in_rounds(measures, bench.rounds)
            for rec in variants + peer_records:
                if rec["variant"] in stats:
                    rec["latency"] = stats[rec["variant"]].to_dict()
    finally:
        if session is not None:
            session.close()
    if peer_args is not None:  # the peers that ran here (not the ones this machine cannot run)
        for rec in peer_records:
            rec["checked_against"] = "torch fp32 on the CPU, same seeded weights"
    return variants + list(peer_records)


# ----------------------------------------------------------------------------- the command


def bench_bundle(bundle_dir: str, out_dir: Optional[str] = None, *, device: Optional[str] = None,
                 peers: bool = True, status: Status = lambda m: None) -> List[Dict]:
    """Check the reference case, time every case's variants (and peers); write one record per case."""
    from ..record import new_record, write_record

    manifest = load_manifest(bundle_dir)
    dev = _device(manifest, device, bundle_dir)
    tkey, tstr = manifest["target"]["key"], manifest["target"]["target"]
    out_dir = out_dir or os.path.join(bundle_dir, "results")
    reference = check_reference(bundle_dir, manifest, dev, status)
    records = []
    for case in manifest["cases"]:
        bench = BenchSettings.of(case["config"])
        x = _input(case)
        device = "cuda" if manifest["target"]["kind"] == "cuda" else "cpu"
        variants = _time_case(bundle_dir, case, dev, x, bench, tkey, device, peers, status)
        for variant in variants:
            if reference is not None and variant["variant"] in reference["variants"]:
                variant["reference_check"] = reference["variants"][variant["variant"]]
        by_name = {v["variant"]: v for v in variants}
        fp32, int8 = by_name.get("tvm-fp32"), by_name.get("tvm-int8")
        if fp32 and int8 and fp32.get("latency") and int8.get("latency"):
            int8["speedup_vs_fp32"] = fp32["latency"]["mean_ms"] / int8["latency"]["mean_ms"]
        record = new_record("run", case["config"], run_key=case["run_key"], model=case["model_info"],
                            target={"key": tkey, "target": tstr}, variants=variants, accuracy=None,
                            calibration=None)
        # the code that built the libraries, not this copy's checkout (which may have no .git)
        record["git"] = manifest.get("harness_git")
        record["bundle"] = {"dir": os.path.abspath(bundle_dir), "created": manifest["created"],
                            "build_software": manifest.get("build_software"), "switches": manifest.get("switches"),
                            "reference": reference}
        record["path"] = write_record(record, out_dir, case["run_key"])
        records.append(record)
    return records

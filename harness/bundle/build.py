"""`harness bundle`: compile every model x batch x variant with its weights as parameters, export the
libraries and write the manifest (needs the TVM compiler; CUDA needs nvcc, not a GPU)."""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tvm
from tvm import relax

from .. import build as hbuild
from ..errors import ConfigError, HarnessError
from .manifest import BUNDLE_FORMAT, MAIN, MANIFEST, TRANSFORM, VARIANTS, harness_version, write_json

Status = Callable[[str], None]

#: The reference case: a small trained model whose int8 output the target must reproduce.
REFERENCE_CONFIG = "configs/digits_cnn_int8.yaml"
#: Images of the reference input (the held-out digits, in order).
REFERENCE_BATCH = 8
#: CUDA variants by default; llvm has no dlight variant (TVM's CPU default is no schedule at all).
DEFAULT_VARIANTS = {"cuda": ["tvm-int8", "tvm-int8-dlight", "tvm-fp32"], "llvm": ["tvm-int8", "tvm-fp32"]}
DEFAULT_PEERS = {"cuda": ["torch-fp32", "torch-fp16"], "llvm": []}


# ----------------------------------------------------------------------------- weights as parameters


def _is_weight(const) -> bool:
    """A tensor with at least two axes longer than 1 (conv / dense weights); per-channel vectors,
    scalars and broadcast shapes like [1, K, 1, 1] stay constants."""
    return sum(1 for d in const.value.shape if int(d) > 1) >= 2


def constants_to_params(mod: tvm.IRModule) -> Tuple[tvm.IRModule, List[Tuple[str, np.ndarray]]]:
    """`main` with its weight constants (:func:`_is_weight`) turned into parameters ``w0, w1, ...``
    after the inputs (``num_input`` = the inputs); returns the module and [(name, value)] in order."""
    names: List[str] = []
    found: list = []
    new_vars: List[relax.Var] = []

    @relax.expr_functor.mutator
    class _Lift(relax.PyExprMutator):  # pylint: disable=abstract-method
        def visit_generic_const_(self, op):  # pylint: disable=arguments-renamed
            if not _is_weight(op):
                return op
            for old, var in zip(found, new_vars):
                if old.same_as(op):
                    return var
            name = f"w{len(new_vars)}"
            var = relax.Var(name, op.ty)
            found.append(op)
            new_vars.append(var)
            names.append(name)
            return var

    func = mod[MAIN]
    n_inputs = int(func.attrs["num_input"]) if func.attrs is not None and "num_input" in func.attrs \
        else len(func.params)
    body = _Lift(mod).visit_expr(func.body)
    attrs = dict(func.attrs) if func.attrs is not None else {}
    attrs["num_input"] = n_inputs
    new = relax.Function(list(func.params) + new_vars, body, func.ret_ty, func.is_pure, tvm.ir.DictAttrs(attrs))
    out = mod.clone()
    out[MAIN] = new
    return out, [(n, c.value.numpy()) for n, c in zip(names, found)]


def _params_of(mod: tvm.IRModule) -> List[Tuple[str, List[int], str]]:
    func = mod[MAIN]
    n_inputs = int(func.attrs["num_input"])
    return [(p.name, [int(d) for d in p.ty.shape], str(p.ty.dtype))
            for p in func.params[n_inputs:]]


# ----------------------------------------------------------------------------- compiling


@dataclass
class Built:
    executable: object
    seconds: float
    schedules: str
    dp4a_kernels: int = 0
    amx_kernels: int = 0  # kernels on AMX tiles (their library asks for tile state when loaded)


def _pipeline(target, family, records, scheduled_by=None, amx_records=None) -> tvm.transform.Pass:
    """Fuse and schedule like `harness run` (:func:`harness.build.pipeline.fuse_and_schedule`), lift
    the work on weights alone (the int8 weight packing among it) into `main_transform_params`, lower.
    `scheduled_by` / `amx_records`: filled as in :class:`harness.build.BuildReport`."""
    from ..build.pipeline import fuse_and_schedule, lower_passes

    @tvm.transform.module_pass(opt_level=0, name="HarnessBundlePipeline")
    def _run(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        mod = fuse_and_schedule(mod, target, family, records, scheduled_by, amx_records)
        with target:
            mod = relax.transform.LiftTransformParams()(mod)
            return tvm.transform.Sequential(lower_passes(target))(mod)

    return _run


def _family(target, variant: str, options=None):
    """(schedule family or None, description) of `variant` on `target` with the config's
    `build.schedules` `options`."""
    from ..schedules import schedule_family

    if variant == "tvm-int8-dlight":
        if target.kind.name != "cuda":
            raise ConfigError("variant tvm-int8-dlight: CUDA targets only (TVM's GPU default schedules); "
                              f"valid for {target.kind.name}: tvm-int8, tvm-fp32")
        return None, "TVM's GPU default schedules (dlight)"
    family = schedule_family(target, options)
    if target.kind.name == "cuda":
        what = "harness dp4a int8 convs, then " if family is not None else ""
        return family, what + "TVM's GPU default schedules (dlight)"
    return family, "harness default CPU schedules" if family is not None else "TVM's llvm pipeline"


def compile_lifted(mod: tvm.IRModule, target, variant: str, *, opt_level: int = 3, records=None,
                   options=None) -> Built:
    """Compile `mod` (weights as parameters, ``num_input`` set) for `variant`: a library with
    ``main_transform_params`` (run once on the weights) and ``main`` (input, transformed weights).
    `records`: tuning records (:func:`harness.pipeline.tuning_records`); `options`: the config's
    ``build.schedules``."""
    family, what = _family(target, variant, options)
    if variant == "tvm-int8-dlight":
        records = None
    if records is not None and len(records):
        what = f"tuning records of {', '.join(records.sources)}, then {what}"
    start = time.perf_counter()
    report = hbuild.BuildReport()
    try:
        with target, tvm.transform.PassContext(opt_level=opt_level):
            ex = tvm.compile(mod, target=target,
                             relax_pipeline=_pipeline(target, family, records, report.kernels, report.amx_records))
    except HarnessError:
        raise
    except Exception as e:  # nvcc failures, unsupported schedules: keep the last informative line
        lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
        raise HarnessError(f"{variant}: compilation for {hbuild.target_key(target)} failed: "
                           f"{lines[-1] if lines else e}") from e
    seconds = time.perf_counter() - start
    dp4a = 0
    if target.kind.name == "cuda":
        dp4a = _dp4a_kernels(hbuild.cuda_source(ex))
    return Built(ex, seconds, what, dp4a, len(report.amx_kernels))


def _dp4a_kernels(source: str) -> int:
    """How many `__global__` kernels of a CUDA source call ``__dp4a``."""
    kernels = source.split("__global__")[1:]
    return sum(1 for k in kernels if "__dp4a" in k)


def _export(built: Built, bundle_dir: str, rel: str) -> Dict:
    from ..schedules.amx import export_addons  # pylint: disable=import-outside-toplevel

    path = os.path.join(bundle_dir, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    built.executable.export_library(path, addons=export_addons(built.amx_kernels > 0))
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return {"library": rel, "bytes": os.path.getsize(path), "sha256": digest}


# ----------------------------------------------------------------------------- cases


def _weight_specs(mod: tvm.IRModule, init: str, int8_bits: int = 8) -> List[Dict]:
    """The parameters' specs; int8 ones carry `int8_bits` where the kernels need fewer than 8 (seeded
    weights of 8 bits would saturate a vpmaddubsw kernel built for 7-bit ones)."""
    return [{"name": n, "shape": s, "dtype": d, "init": init, **({"bits": int8_bits} if d == "int8" and int8_bits < 8
                                                                    else {})}
            for n, s, d in _params_of(mod)]


def _variant_modules(cfg, model, variants: Sequence[str], status: Status, target=None):
    """[(variant, module with weights as parameters, weights [(name, array)], extra)]; the int8
    module quantized for `target` (default: the config's; its reduce_range)."""
    from ..pipeline import calibration_table, int8_module

    out = []
    if "tvm-fp32" in variants:
        func = model.mod[MAIN]
        names = [p.name for p in func.params[1:]]
        missing = [n for n in names if n not in model.params]
        if missing:
            raise HarnessError(f"{model.name}: parameter {missing[0]} has no weight")
        out.append(("tvm-fp32", model.mod, [(n, model.params[n]) for n in names], {}))
    int8 = [v for v in variants if v.startswith("tvm-int8")]
    if int8:
        if cfg.quantize is None:
            raise ConfigError(f"{model.name}: variants {', '.join(int8)} need a quantize: section in the config")
        table = calibration_table(cfg, model, status=status)
        mod, weights = constants_to_params(int8_module(cfg, model, table, target=target))
        n_q = sum(1 for t in table["tensors"] if t["enabled"])
        extra = {"calibrate_mode": table["qconfig"]["calibrate_mode"], "quantized_ops": n_q,
                 "fp32_ops": len(table["tensors"]) - n_q}
        out += [(v, mod, weights, extra) for v in int8]
    order = {v: i for i, v in enumerate(variants)}
    return sorted(out, key=lambda item: order[item[0]])


def _case(cfg, target, bundle_dir: str, variants: Sequence[str], peers: Sequence[str], status: Status) -> Dict:
    from ..frontends import load_model
    from ..pipeline import run_key, tuning_records

    status(f"loading {cfg.model.name} ({cfg.model.frontend})")
    model = load_model(cfg.model)
    batch = model.input_shape[0]
    folder = f"cases/{model.name}-B{batch}"
    case = {
        "model": model.name, "batch": batch,
        "run_key": run_key(model.name, batch, "int8" if cfg.quantize is not None else "float32"),
        "config": cfg.to_dict(),
        "model_info": {"name": model.name, "frontend": model.frontend, "source": model.source, "batch": batch,
                       "input_shape": list(model.input_shape),
                       "num_params": int(sum(p.size for p in model.params.values()))},
        "input": {"name": model.mod[MAIN].params[0].name, "shape": list(model.input_shape),
                  "dtype": model.dtype, "seed": cfg.model.seed},
        "weight_seed": cfg.model.seed,
        "variants": [],
        "peers": None,
    }
    options = cfg.schedule_options(target)
    for variant, mod, _, extra in _variant_modules(cfg, model, variants, status, target):
        dkey = "float32" if variant == "tvm-fp32" else "int8"
        records = tuning_records(cfg, target, run_key(model.name, batch, dkey))
        status(f"{model.name} B{batch} {variant}: compiling for {hbuild.target_key(target)}")
        built = compile_lifted(mod, target, variant, opt_level=cfg.build.opt_level, records=records,
                               options=options)
        entry = {"variant": variant, **_export(built, bundle_dir, f"{folder}/{variant}.so"),
                 "compile_seconds": round(built.seconds, 3), "schedules": built.schedules,
                 "weights": _weight_specs(mod, "seeded", min(options.int8_weight_bits,
                                                                   options.int8_grouped_weight_bits)),
                 "extra": extra}
        if target.kind.name == "cuda":
            entry["dp4a_kernels"] = built.dp4a_kernels
        case["variants"].append(entry)
    if peers:
        case["peers"] = _peer_graph(model, bundle_dir, list(peers))
    return case


def _peer_graph(model, bundle_dir: str, peers: List[str]) -> Dict:
    """The model's MXNet graph (no weights) for the torch peers, or why there is none."""
    block = (model.extra or {}).get("block")
    if block is None:
        return {"names": peers, "graph": None,
                "note": f"n/a: no MXNet graph of '{model.name}' (frontend {model.frontend}) to carry"}
    from ..peers.mxnet_torch import gluon_graph

    graph, params = gluon_graph(block)
    rel = f"peers/{model.name}.json"
    write_json(os.path.join(bundle_dir, rel), graph)
    return {"names": peers, "graph": rel, "input_name": "data",
            "weights": [{"name": n, "shape": list(a.shape), "dtype": str(a.dtype)} for n, a in params.items()]}


def _reference(target, bundle_dir: str, variants: Sequence[str], config: str, status: Status) -> Dict:
    """The reference case: `config`'s int8 model with its real weights, a fixed input (the first
    held-out digits) and the output of the harness's CPU build of the same int8 module (weights bound,
    as `harness run` builds it), which the target's libraries must reproduce."""
    from ..config import load_config
    from ..frontends import load_model
    from ..models.digits import load_digits_split
    from ..pipeline import calibration_table, int8_module

    cfg = load_config(config, {"model": {"batch": REFERENCE_BATCH}})
    if cfg.model.name != "digits_cnn" or cfg.quantize is None:
        raise ConfigError(f"{config}: the reference case is the int8 digits_cnn (model.name digits_cnn and a "
                          "quantize: section)")
    status(f"reference case: {cfg.model.name} int8, batch {REFERENCE_BATCH}")
    model = load_model(cfg.model)
    int8 = int8_module(cfg, model, calibration_table(cfg, model, status=status), target=target)  # its weight bits
    x = np.ascontiguousarray(load_digits_split()[1][0][:REFERENCE_BATCH])
    cpu = hbuild.resolve_target(dataclasses.replace(cfg.target, kind="llvm"))
    ex = hbuild.compile_module(int8, cpu, opt_level=cfg.build.opt_level).executable
    from .. import bench

    dev = tvm.cpu(0)
    expected = bench.run_once(bench.make_vm(ex, dev), dev, [x])
    mod, weights = constants_to_params(int8)
    os.makedirs(os.path.join(bundle_dir, "reference"), exist_ok=True)
    np.save(os.path.join(bundle_dir, "reference", "input.npy"), x)
    np.save(os.path.join(bundle_dir, "reference", "expected.npy"), expected)
    np.savez(os.path.join(bundle_dir, "reference", "weights.npz"), **dict(weights))
    ref = {"model": cfg.model.name, "batch": REFERENCE_BATCH, "config": cfg.to_dict(),
           "input": "reference/input.npy", "expected": "reference/expected.npy",
           "weights_file": "reference/weights.npz",
           "expected_from": f"harness CPU build ({hbuild.target_key(cpu)}, weights bound)", "variants": []}
    for variant in [v for v in variants if v.startswith("tvm-int8")]:
        status(f"reference case {variant}: compiling for {hbuild.target_key(target)}")
        built = compile_lifted(mod, target, variant, opt_level=cfg.build.opt_level,
                               options=cfg.schedule_options(target))
        entry = {"variant": variant, **_export(built, bundle_dir, f"reference/{variant}.so"),
                 "schedules": built.schedules, "weights": _weight_specs(mod, "reference/weights.npz")}
        if target.kind.name == "cuda":
            entry["dp4a_kernels"] = built.dp4a_kernels
        ref["variants"].append(entry)
    return ref


# ----------------------------------------------------------------------------- the bundle


def bundle_configs(path: str, *, target_kind: str, arch: Optional[str], batches: Optional[Sequence[int]],
                   models: Optional[Sequence[str]] = None) -> List:
    """The run configs of a run config file (one per batch) or a suite file (its models x batches)."""
    import yaml

    from ..config import load_config

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    if arch and target_kind != "cuda":
        raise ConfigError(f"--arch {arch}: only for --target cuda")
    target = {"kind": target_kind, **({"arch": arch} if arch else {})}
    if isinstance(data, dict) and "models" in data:
        from ..suite import cells, load_suite

        scfg = load_suite(path, models=models, batches=batches, peers=[], target=target_kind)
        out = [cell.config for cell in cells(scfg)]
        for cfg in out:
            if arch:
                cfg.target.arch = arch
        return out
    if models:
        raise ConfigError("--models: only for a suite file")
    return [load_config(path, {"target": target, **({"model": {"batch": b}} if b else {})})
            for b in (batches or [None])]


def build_bundle(configs: Sequence, out_dir: str, *, variants: Optional[Sequence[str]] = None,
                 peers: Optional[Sequence[str]] = None, reference: Optional[str] = REFERENCE_CONFIG,
                 status: Status = lambda msg: None) -> Dict:
    """Build the bundle of `configs` (RunConfigs, one target) into `out_dir`; returns the manifest."""
    from ..record import git_info, software_info

    targets = {str(hbuild.resolve_target(c.target)) for c in configs}
    if len(targets) != 1:
        raise ConfigError(f"one target per bundle; the configs name {', '.join(sorted(targets))}")
    target = hbuild.resolve_target(configs[0].target)
    kind = target.kind.name
    variants = list(variants or DEFAULT_VARIANTS[kind])
    for v in variants:
        if v not in VARIANTS:
            raise ConfigError(f"--variants: unknown '{v}'; valid: {', '.join(VARIANTS)}")
        if v == "tvm-int8-dlight":
            _family(target, v)  # refuses it off CUDA
    peers = list(DEFAULT_PEERS[kind] if peers is None else peers)
    for p in peers:
        if p not in ("torch-fp32", "torch-fp16"):
            raise ConfigError(f"--peers: '{p}' cannot run from a bundle; valid: torch-fp32, torch-fp16")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if not os.path.exists(os.path.join(out_dir, MANIFEST)):
            raise ConfigError(f"--out {out_dir}: exists and is not a bundle; give a new or empty directory")
        shutil.rmtree(out_dir)  # a bundle is rebuilt whole: no library of an older build may stay
    os.makedirs(out_dir, exist_ok=True)
    manifest = {
        "bundle_format": BUNDLE_FORMAT, "harness_version": harness_version(),
        "harness_git": git_info(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "build_software": software_info(),
        "target": {"kind": kind, "key": hbuild.target_key(target), "target": str(target),
                   "arch": str(target.attrs["arch"]) if kind == "cuda" else None,
                   "mcpu": str(target.attrs["mcpu"]) if kind == "llvm" else None},
        "functions": {"transform": TRANSFORM, "main": MAIN},
        "switches": {"variants": variants, "peers": peers, "opt_level": sorted({c.build.opt_level for c in configs}),
                     "schedules": [c.schedule_options().as_dict() for c in configs], "tuning_apply": sorted({c.tuning.apply for c in configs}),
                     "weights": "parameters; packing lifted into main_transform_params (LiftTransformParams)"},
        "cases": [],
        "reference": None,
    }
    if reference and any(v.startswith("tvm-int8") for v in variants):
        manifest["reference"] = _reference(target, out_dir, variants, reference, status)
    for cfg in configs:
        manifest["cases"].append(_case(cfg, target, out_dir, variants, peers, status))
        write_json(os.path.join(out_dir, MANIFEST), manifest)  # a partial bundle says what it holds
    manifest["bytes"] = bundle_bytes(out_dir)
    write_json(os.path.join(out_dir, MANIFEST), manifest)
    return manifest


def bundle_bytes(bundle_dir: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(bundle_dir) for f in fs)

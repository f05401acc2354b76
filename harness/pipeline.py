"""`harness run` and `harness quantize`: frontend -> [quantize] -> build -> bench -> record."""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from . import bench, build
from .errors import HarnessError
from .frontends import LoadedModel, load_model
from .models import MODELS, ModelSpec, input_data
from .record import new_record, write_record
from .tune.model import tuning_dir

log = logging.getLogger("harness")
Status = Callable[[str], None]


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_key(model_name: str, batch: int, variant: str) -> str:
    """Run key in the TLCBench style: `resnet50_v1-B1-int8`."""
    return f"{model_name}-B{batch}-{variant}"


def logs_root(cfg) -> str:
    """`tuning.logs`, relative to the repository (where the shipped logs are) unless absolute."""
    return cfg.tuning.logs if os.path.isabs(cfg.tuning.logs) else os.path.join(REPO_ROOT, cfg.tuning.logs)


def variant_modules(cfg, model: LoadedModel, *, status: Status, progress: bool = False):
    """[(variant name, dtype key, bound module, extra record fields)] for fp32 and, if configured, int8."""
    modules = [("tvm-fp32", "float32", build.bind_params(model.mod, model.params), {})]
    if cfg.quantize is not None:
        table = calibration_table(cfg, model, status=status, progress=progress)
        if cfg.quantize.table and not os.path.isfile(cfg.quantize.table):
            from .quantize import save_table

            save_table(table, cfg.quantize.table)
        name = "tvm-int8-sim" if cfg.quantize.do_simulation else "tvm-int8"
        n_q = sum(1 for t in table["tensors"] if t["enabled"])
        modules.append((name, "int8", int8_module(cfg, model, table),
                        {"calibrate_mode": table["qconfig"]["calibrate_mode"], "quantized_ops": n_q,
                         "fp32_ops": len(table["tensors"]) - n_q, "_table": table}))
    return modules


def _spec(model: LoadedModel) -> ModelSpec:
    spec = MODELS.get(model.name)
    if spec is not None:
        return spec
    c, h = model.input_shape[1], model.input_shape[2]
    return ModelSpec(model.name, h, "user model", channels=c)


def _input_name(model: LoadedModel) -> str:
    return model.mod["main"].params[0].name


# ----------------------------------------------------------------------------- quantization


def qconfig_of(qcfg):
    """The QConfig part of a QuantizeConfig section."""
    from .quantize import QConfig

    names = {f.name for f in dataclasses.fields(QConfig)}
    return QConfig(**{k: v for k, v in dataclasses.asdict(qcfg).items() if k in names})


def calibration_inputs(calib_cfg, model: LoadedModel) -> List[Dict[str, np.ndarray]]:
    """The calibration batches a `quantize.calib` section names, as input dicts (model's preprocessing)."""
    from . import data as hdata

    spec = _spec(model)
    c = calib_cfg
    calib = hdata.CalibSpec(source=c.source, path=c.path, num_samples=c.num_samples, batch_size=c.batch_size,
                            seed=c.seed)
    return list(hdata.calibration_batches(
        calib, input_name=_input_name(model), input_shape=model.input_shape, mean=spec.mean, std=spec.std,
        image_size=model.input_shape[2]))


def calibration_table(cfg, model: LoadedModel, *, status: Status, progress: bool = False,
                      recalibrate: bool = False) -> dict:
    """Calibrate on the configured data, or load `quantize.table` when it exists (unless `recalibrate`)."""
    from .quantize import calibrate, load_table

    qcfg = cfg.quantize
    if qcfg.table and os.path.isfile(qcfg.table) and not recalibrate:
        status(f"using calibration table {qcfg.table}")
        return load_table(qcfg.table)
    c = qcfg.calib
    batches = calibration_inputs(c, model)
    status(f"calibrating ({qcfg.calibrate_mode}, {sum(len(next(iter(b.values()))) for b in batches)} "
           f"samples from {c.source})")
    bar = None
    if progress:
        from tqdm import tqdm

        passes = 2 if qcfg.bias_correction else 1  # the second pass measures the quantized means
        bar = tqdm(total=len(batches) * passes, desc="calibrate", unit="batch", leave=False)
    try:
        return calibrate(model.mod, model.params, batches, model_name=model.name, config=qconfig_of(qcfg),
                         progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()


def int8_module(cfg, model: LoadedModel, table: dict, only=None):
    from .quantize import apply_table

    return apply_table(model.mod, model.params, table, model_name=model.name, config=qconfig_of(cfg.quantize),
                       table_path=cfg.quantize.table or "table", only=only)


# ----------------------------------------------------------------------------- run


def _vm_runner(vm, dev):
    def run(x: np.ndarray) -> np.ndarray:
        out = bench.run_once(vm, dev, [x])
        return out if isinstance(out, np.ndarray) else out[0]

    return run


def run(cfg, *, compile_only: bool = False, write: bool = True, status: Status = lambda msg: None,
        progress: bool = False, peers: Sequence[str] = (), model: Optional[LoadedModel] = None) -> Dict:
    """Run the configured model; returns the result record (also written under bench.results_dir).

    `peers` (harness.peers.PEERS names) are checked against TVM fp32's output on the same input, then
    timed with the same settings, and added to the record's variants. `model` skips loading it again.
    """
    if model is None:
        status(f"loading {cfg.model.name} ({cfg.model.frontend})")
        model = load_model(cfg.model)
    target = build.resolve_target(cfg.target)
    tkey = build.target_key(target)
    batch = model.input_shape[0]
    if target.kind.name == "cuda" and not build.gpu_visible() and not compile_only:
        raise HarnessError("target cuda: no GPU is visible on this machine; add --compile-only to only build")

    modules = variant_modules(cfg, model, status=status, progress=progress)
    table = modules[1][3].pop("_table") if len(modules) > 1 else None

    x = input_data(model.input_shape, cfg.model.seed, model.dtype)
    variants: List[Dict] = []
    runners = {}
    for name, dkey, mod, extra in modules:
        status(f"compiling {name} for {tkey} at opt_level={cfg.build.opt_level}")
        export = cfg.build.export
        if export and name != "tvm-fp32":
            root, ext = os.path.splitext(export)
            export = f"{root}-{name.split('-', 1)[1]}{ext}"
        work_dir = tuning_dir(logs_root(cfg), target, run_key(model.name, batch, dkey)) if cfg.tuning.apply else None
        built = build.compile_module(mod, target, opt_level=cfg.build.opt_level, export=export,
                                     database=work_dir)
        db_report = built.database
        if db_report.work_dir:
            status(f"{name}: {db_report}")
        variant = {"variant": name, "target": tkey, "compile_seconds": round(built.compile_seconds, 3),
                   "export": built.export_path,
                   "tuning": {"database": db_report.work_dir, "from_database": len(db_report.from_database),
                              "default_schedules": len(db_report.fallback)},
                   **extra}
        if built.amx_kernels is not None:  # a target with amx-int8: which kernels run on AMX tiles
            variant["amx_kernels"] = built.amx_kernels
        if compile_only:
            variant["latency"] = None
            variant["note"] = "compile only"
        else:
            dev = build.device_for(target)
            vm = bench.make_vm(built.executable, dev)
            runners[name] = _vm_runner(vm, dev)
            first = runners[name](x)
            variant["output_shape"] = list(first.shape)
            variant["output_finite"] = bool(np.isfinite(first).all())
            status(f"timing {name} (number={cfg.bench.number}, repeat={cfg.bench.repeat}, "
                   f"min_repeat_ms={cfg.bench.min_repeat_ms})")
            stats = bench.time_vm(vm, dev, [x], number=cfg.bench.number, repeat=cfg.bench.repeat,
                                  min_repeat_ms=cfg.bench.min_repeat_ms, warmup=cfg.bench.warmup, batch=batch)
            variant["latency"] = stats.to_dict()
        variants.append(variant)

    if peers:
        variants += peer_variants(cfg, model, peers, x, runners, compile_only=compile_only, target=target,
                                  status=status)

    if len(variants) > 1 and variants[0].get("latency") and variants[1].get("latency"):
        variants[1]["speedup_vs_fp32"] = variants[0]["latency"]["mean_ms"] / variants[1]["latency"]["mean_ms"]

    accuracy = None
    if cfg.accuracy is not None and cfg.quantize is not None and not compile_only:
        from .accuracy import compare, eval_data, predict

        data = eval_data(cfg.accuracy, _spec(model), model.input_shape)
        status(f"accuracy on {data.name}")
        fp32 = predict(runners["tvm-fp32"], data.inputs, batch)
        q = predict(runners[modules[1][0]], data.inputs, batch)
        accuracy = {"dataset": data.name, **compare(fp32, q, data.labels)}

    variant_key = "int8" if cfg.quantize is not None else "float32"
    record = new_record(
        "run",
        cfg.to_dict(),
        run_key=run_key(model.name, batch, variant_key),
        model={"name": model.name, "frontend": model.frontend, "source": model.source, "batch": batch,
               "input_shape": list(model.input_shape),
               "num_params": int(sum(p.size for p in model.params.values()))},
        target={"key": tkey, "target": str(target)},
        variants=variants,
        accuracy=accuracy,
        calibration=None if table is None else {"tensors": len(table["tensors"]), "qconfig": table["qconfig"]},
    )
    if write:
        record["path"] = write_record(record, cfg.bench.results_dir, record["run_key"])
    return record


def peer_variants(cfg, model: LoadedModel, peers: Sequence[str], x: np.ndarray, runners: Dict, *,
                  compile_only: bool, target, status: Status) -> List[Dict]:
    """Peer systems on the same weights and input, as result variants (n/a ones carry the reason)."""
    from .config import CalibConfig
    from .peers import run_peers

    if compile_only:
        return [{"variant": p, "latency": None, "note": "compile only"} for p in peers]
    reference = runners["tvm-fp32"](x)
    calib_cfg = cfg.quantize.calib if cfg.quantize is not None else CalibConfig()
    calib = [b[_input_name(model)] for b in calibration_inputs(calib_cfg, model)]
    device = "cuda" if target.kind.name == "cuda" else "cpu"
    return run_peers(list(peers), model, x, reference, bench=cfg.bench, calib_batches=calib, device=device,
                     status=status)


# ----------------------------------------------------------------------------- sensitivity


def sensitivity(cfg, model: LoadedModel, table: dict, *, status: Status = lambda m: None) -> Dict:
    """Quantize one layer at a time; the accuracy cost of each, and a suggested skip list."""
    from .accuracy import compare, eval_data, predict

    target = build.resolve_target(dataclasses.replace(cfg.target, kind="llvm"))
    acc_cfg = cfg.accuracy
    if acc_cfg is None:
        from .config import AccuracyConfig

        acc_cfg = AccuracyConfig(dataset="synthetic", num_samples=8)
    data = eval_data(acc_cfg, _spec(model), model.input_shape)
    batch = model.input_shape[0]
    dev = build.device_for(target)

    def logits(mod):
        ex = build.compile_module(mod, target).executable
        return predict(_vm_runner(bench.make_vm(ex, dev), dev), data.inputs, batch)

    fp32 = logits(build.bind_params(model.mod, model.params))
    rows = []
    enabled = [t["tensor"].rsplit(".", 1)[0] for t in table["tensors"] if t["enabled"]]
    for i, name in enumerate(enabled):
        status(f"sensitivity {i + 1}/{len(enabled)}: {name}")
        q = logits(int8_module(cfg, model, table, only=[name]))
        rows.append({"op": name, **compare(fp32, q, data.labels)})
    drops = np.array([1.0 - r["cosine_mean"] for r in rows])
    suggested = []
    if len(rows) and drops.sum() > 0:
        # the fewest worst layers that carry half of the summed cosine loss (at most 3)
        order = np.argsort(-drops)
        acc = 0.0
        for j in order[:3]:
            suggested.append(rows[j]["op"])
            acc += drops[j]
            if acc >= 0.5 * drops.sum():
                break
    skip_conv = sorted(int(n.split("_")[1]) for n in suggested if n.startswith("conv2d_"))
    return {"dataset": data.name, "layers": rows, "suggested_skip": suggested,
            "suggested_skip_conv_layers": sorted(set((cfg.quantize.skip_conv_layers or []) + skip_conv))}

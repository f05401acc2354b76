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
from .record import check_writable_dir, new_record, write_record_somewhere
from .targets import cpu_threads

log = logging.getLogger("harness")
Status = Callable[[str], None]


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_key(model_name: str, batch: int, variant: str) -> str:
    """Run key in the TLCBench style: `resnet50_v1-B1-int8`."""
    return f"{model_name}-B{batch}-{variant}"


def logs_root(cfg) -> str:
    """`tuning.logs`, relative to the repository (where the shipped logs are) unless absolute."""
    return cfg.tuning.logs if os.path.isabs(cfg.tuning.logs) else os.path.join(REPO_ROOT, cfg.tuning.logs)


def tuning_records(cfg, target, run_key_: str):
    """The tuning records a build of `run_key_` uses (`tuning.apply`): the run key's database and
    every `tune-conv` database of the target; None when tuning.apply is off."""
    from .tune.database import conv_databases, load_records
    from .tune.search import tuning_dir

    if not cfg.tuning.apply:
        return None
    root = logs_root(cfg)
    return load_records([(run_key_, tuning_dir(root, target, run_key_)), *conv_databases(root, target)], target)


def build_module(cfg, mod, target, run_key_: str, *, export: Optional[str] = None):
    """Compile `mod` as `harness run` does: the config's opt_level, schedule families and fallback,
    the tuning records of :func:`tuning_records`."""
    return build.compile_module(mod, target, opt_level=cfg.build.opt_level, export=export,
                                records=tuning_records(cfg, target, run_key_),
                                schedules=cfg.schedule_options(), fallback=cfg.build.fallback)


def variant_modules(cfg, model: LoadedModel, *, status: Status, progress: bool = False, data=None):
    """[(variant name, dtype key, bound module, extra record fields)] for fp32 and, if configured, int8.

    `data`: the accuracy data (harness.accuracy.EvalData), when the caller has it loaded already."""
    modules = [("tvm-fp32", "float32", build.bind_params(model.mod, model.params), {})]
    if cfg.quantize is not None:
        from .quantize import check_table_path, fallback_layers, load_table, save_table

        if cfg.quantize.table and not os.path.isfile(cfg.quantize.table):  # written after calibrating
            check_table_path(cfg.quantize.table, key="quantize.table")

        path = cfg.quantize.table
        before = load_table(path).get("accuracy_target") if path and os.path.isfile(path) else False
        table = calibration_table(cfg, model, status=status, progress=progress, data=data)
        if path and before is False:
            save_table(table, path)
        elif path and table.get("accuracy_target") != before:  # a search ran on a loaded table
            save_table(table, path)
            status(f"recorded the chosen fp32 layers in {path}")
        name = "tvm-int8-sim" if cfg.quantize.do_simulation else "tvm-int8"
        n_q = sum(1 for t in table["tensors"] if t["enabled"]) - len(fallback_layers(table))
        # what was built: the config's qconfig (a table of another plan or thresholds is refused above)
        modules.append((name, "int8", int8_module(cfg, model, table),
                        {"calibrate_mode": cfg.quantize.calibrate_mode, "quantized_ops": n_q,
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


def accuracy_data(cfg, model: LoadedModel):
    """The `accuracy:` section's data, preprocessed for the model (labels checked against its classes)."""
    from .accuracy import eval_data, output_classes

    return eval_data(cfg.accuracy, _spec(model), model.input_shape, output_classes(model.mod))


def calibration_table(cfg, model: LoadedModel, *, status: Status, progress: bool = False,
                      recalibrate: bool = False, data=None) -> dict:
    """Calibrate on the configured data, or load `quantize.table` when it exists (unless `recalibrate`);
    then, with `quantize.accuracy_target`, choose the fp32 layers (accuracy_fallback). A table that
    records a choice for the same target is used as it is (no data needed)."""
    from .quantize import check_table_qconfig, load_table

    qcfg = cfg.quantize
    loaded = bool(qcfg.table) and os.path.isfile(qcfg.table) and not recalibrate
    if loaded:
        table = load_table(qcfg.table)
        check_table_qconfig(table, qconfig_of(qcfg), qcfg.table)  # same plan and thresholds, or refused
        # the build's qconfig (reduce_range resolved for the target; a table's "auto" was the same choice)
        made, want = table.get("qconfig", {}), cfg.qconfig().to_dict()
        other = "; ".join(f"{k} {v!r} (table: {made[k]!r})" for k, v in want.items()
                          if k in made and made[k] != v and made[k] != "auto")
        status(f"using calibration table {qcfg.table}" + (f", building with the config's {other}" if other else ""))
    else:
        table = _calibrate(cfg, model, status=status, progress=progress)
    return accuracy_fallback(cfg, model, table, status=status, progress=progress, data=data, force=not loaded)


def accuracy_fallback(cfg, model: LoadedModel, table: dict, *, status: Status, progress: bool = False,
                      data=None, force: bool = False) -> dict:
    """`table` with the fp32 layers `quantize.accuracy_target` needs recorded (harness.accuracy_target).

    Without a target the table is returned as it is (a choice recorded in it still applies). With one,
    a choice the table records for the same target (metric, bound, max_fp32_layers) is kept unless
    `force`; otherwise the search runs on the accuracy data (`data`, or loaded here)."""
    from .accuracy_target import search, target_of
    from .quantize import fallback_layers, set_accuracy_target

    tcfg = cfg.quantize.accuracy_target
    recorded = table.get("accuracy_target")
    if tcfg is None:
        if recorded:
            status(f"calibration table keeps {', '.join(fallback_layers(table)) or 'no layers'} fp32 (chosen "
                   f"for {recorded['metric']} {recorded['bound']} {recorded['value']:g})")
        return table
    want = target_of(tcfg)
    if recorded and not force and all(recorded.get(k) == v for k, v in want.items()):
        status(f"calibration table: fp32 layers for {want['metric']} {want['bound']} {want['value']:g}: "
               f"{', '.join(fallback_layers(table)) or 'none'}")
        return table
    if data is None:
        data = accuracy_data(cfg, model)
    result = search(cfg, model, table, data, status=status, progress=progress)
    return set_accuracy_target(table, result)


def _calibrate(cfg, model: LoadedModel, *, status: Status, progress: bool = False) -> dict:
    from .quantize import calibrate

    qcfg = cfg.quantize
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


def int8_module(cfg, model: LoadedModel, table: dict, only=None, fp32_layers=None, switchable: bool = False,
                target=None):
    """The int8 module of `table` (fp32_layers: default the table's recorded choice; see apply_table)."""
    from .quantize import apply_table

    return apply_table(model.mod, model.params, table, model_name=model.name, config=cfg.qconfig(target),
                       table_path=cfg.quantize.table or "table", only=only, fp32_layers=fp32_layers,
                       switchable=switchable)


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
    if write:  # a folder that cannot take the record fails now, not after minutes of timing
        check_writable_dir(cfg.bench.results_dir)
    if model is None:
        status(f"loading {cfg.model.name} ({cfg.model.frontend})")
        model = load_model(cfg.model)
    target = build.resolve_target(cfg.target)
    tkey = build.target_key(target)
    batch = model.input_shape[0]
    if target.kind.name == "cuda" and not build.gpu_visible() and not compile_only:
        raise HarnessError("target cuda: no GPU is visible on this machine; add --compile-only to only build")

    data = None
    if cfg.accuracy is not None and cfg.quantize is not None and not compile_only:
        data = accuracy_data(cfg, model)  # before any long work: a bad folder or label file fails now
    modules = variant_modules(cfg, model, status=status, progress=progress, data=data)
    table = modules[1][3].pop("_table") if len(modules) > 1 else None

    x = input_data(model.input_shape, cfg.model.seed, model.dtype)
    variants: List[Dict] = []
    runners = {}
    measures = {}  # variant -> measure(first_round) of its VM (bench.rounds > 1: timed after the builds)
    for name, dkey, mod, extra in modules:
        status(f"compiling {name} for {tkey} at opt_level={cfg.build.opt_level}")
        export = cfg.build.export
        if export and name != "tvm-fp32":
            root, ext = os.path.splitext(export)
            export = f"{root}-{name.split('-', 1)[1]}{ext}"
        key = run_key(model.name, batch, dkey)
        built = build_module(cfg, mod, target, key, export=export)
        report = built.report
        status(f"{name}: {report}")
        if report.fallback:
            status(f"{name}: built without the harness's schedules: {report.fallback}")
        database = os.path.join(logs_root(cfg), tkey, key)
        variant = {"variant": name, "target": tkey, "compile_seconds": round(built.compile_seconds, 3),
                   "export": built.export_path,
                   "build": {"schedules": report.schedules, "fallback": report.fallback},
                   # a target with amx-int8: which kernels run on AMX tiles
                   **({} if built.amx_kernels is None else {"amx_kernels": built.amx_kernels}),
                   "tuning": {"database": database if key in report.sources else None, **report.as_dict()},
                   **extra}
        if compile_only:
            variant["latency"] = None
            variant["note"] = "compile only"
        else:
            dev = build.device_for(target)
            threads = cpu_threads(target)
            vm = bench.make_vm(built.executable, dev, threads)
            if threads is not None:
                variant["threads"] = threads  # the TVM runtime's CPU threads (target.num_cores)
            runners[name] = _vm_runner(vm, dev)
            first = runners[name](x)
            variant["output_shape"] = list(first.shape)
            variant["output_finite"] = bool(np.isfinite(first).all())
            measures[name] = _vm_measure(cfg.bench, vm, dev, x, batch)
            if cfg.bench.rounds == 1:  # timed now; else below, in rounds with the peers
                status(f"timing {name} (number={cfg.bench.number}, repeat={cfg.bench.repeat}, "
                       f"min_repeat_ms={cfg.bench.min_repeat_ms})")
                variant["latency"] = measures.pop(name)(True).to_dict()
        variants.append(variant)

    if cfg.bench.rounds > 1 and not compile_only:
        variants += _time_in_rounds(cfg, model, peers, x, runners, measures, variants, target=target, status=status)
    elif peers:
        variants += peer_variants(cfg, model, peers, x, runners, compile_only=compile_only, target=target,
                                  status=status)

    if len(variants) > 1 and variants[0].get("latency") and variants[1].get("latency"):
        variants[1]["speedup_vs_fp32"] = variants[0]["latency"]["mean_ms"] / variants[1]["latency"]["mean_ms"]

    accuracy = None
    if data is not None:
        from .accuracy import compare, predict

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
        calibration=None if table is None else {
            "tensors": len(table["tensors"]), "qconfig": cfg.qconfig(target).to_dict(),
            "table": cfg.quantize.table, "table_qconfig": table["qconfig"]},
        accuracy_target=None if table is None else table.get("accuracy_target"),
    )
    if write:  # should the folder refuse it now, the record goes elsewhere and `write_error` says where
        record["path"], error = write_record_somewhere(record, cfg.bench.results_dir, record["run_key"])
        if error:
            record["write_error"] = error
    return record


def _vm_measure(b, vm, dev, x: np.ndarray, batch: int):
    """measure(first_round) -> LatencyStats of a VM with the bench settings `b` (warm-up on the first)."""
    def measure(first: bool):
        return bench.time_vm(vm, dev, [x], number=b.number, repeat=b.repeat, min_repeat_ms=b.min_repeat_ms,
                             warmup=b.warmup if first else 0, batch=batch)
    return measure


def _peer_arguments(cfg, model: LoadedModel, x: np.ndarray, runners: Dict, target, status: Status) -> dict:
    from .config import CalibConfig

    calib_cfg = cfg.quantize.calib if cfg.quantize is not None else CalibConfig()
    return dict(model=model, x=x, reference=runners["tvm-fp32"](x), bench=cfg.bench,
                calib_batches=[b[_input_name(model)] for b in calibration_inputs(calib_cfg, model)],
                device="cuda" if target.kind.name == "cuda" else "cpu", status=status, threads=cpu_threads(target),
                fp32_dense=cfg.quantize.skip_dense_layer if cfg.quantize is not None else True)


def peer_variants(cfg, model: LoadedModel, peers: Sequence[str], x: np.ndarray, runners: Dict, *,
                  compile_only: bool, target, status: Status) -> List[Dict]:
    """Peer systems on the same weights and input, as result variants (n/a ones carry the reason)."""
    from .peers import run_peers

    if compile_only:
        return [{"variant": p, "latency": None, "note": "compile only"} for p in peers]
    args = _peer_arguments(cfg, model, x, runners, target, status)
    return run_peers(list(peers), args.pop("model"), args.pop("x"), args.pop("reference"), **args)


def _time_in_rounds(cfg, model: LoadedModel, peers: Sequence[str], x: np.ndarray, runners: Dict, measures: Dict,
                    variants: List[Dict], *, target, status: Status) -> List[Dict]:
    """``bench.rounds`` > 1: the peers set up and checked, then TVM's variants (`measures`, their
    records in `variants`) and the peers timed in alternating rounds; the peers' records."""
    from .peers import PeerSession

    session = None
    if peers:
        args = _peer_arguments(cfg, model, x, runners, target, status)
        session = PeerSession(list(peers), args.pop("model"), args.pop("x"), args.pop("reference"), **args)
    try:
        everything = {**measures, **(session.measures() if session is not None else {})}
        b = cfg.bench
        status(f"timing {', '.join(everything)} in {b.rounds} alternating rounds (number={b.number}, "
               f"repeat={b.repeat}, min_repeat_ms={b.min_repeat_ms} each per round)")
        stats = bench.time_in_rounds(everything, b.rounds)
    finally:
        if session is not None:
            session.close()
    records = session.records if session is not None else []
    for rec in variants + records:
        if rec["variant"] in stats:
            rec["latency"] = stats[rec["variant"]].to_dict()
    return records


# ----------------------------------------------------------------------------- sensitivity


def sensitivity(cfg, model: LoadedModel, table: dict, *, status: Status = lambda m: None,
                progress: bool = False) -> Dict:
    """Quantize one layer at a time; the accuracy cost of each, and a suggested skip list."""
    from .accuracy import compare, eval_data, output_classes, predict

    target = build.resolve_target(dataclasses.replace(cfg.target, kind="llvm"))
    acc_cfg = cfg.accuracy
    if acc_cfg is None:
        from .config import AccuracyConfig

        acc_cfg = AccuracyConfig(dataset="synthetic", num_samples=8)
    data = eval_data(acc_cfg, _spec(model), model.input_shape, output_classes(model.mod))
    batch = model.input_shape[0]
    dev = build.device_for(target)

    def logits(mod):
        ex = build.compile_module(mod, target).executable
        return predict(_vm_runner(bench.make_vm(ex, dev), dev), data.inputs, batch)

    fp32 = logits(build.bind_params(model.mod, model.params))
    rows = []
    enabled = [t["tensor"].rsplit(".", 1)[0] for t in table["tensors"] if t["enabled"]]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(enabled), desc="sensitivity", unit="layer", leave=False)
    try:
        for i, name in enumerate(enabled):
            if bar is None:
                status(f"sensitivity {i + 1}/{len(enabled)}: {name}")
            else:
                bar.set_postfix_str(name)
            q = logits(int8_module(cfg, model, table, only=[name], fp32_layers=[]))
            rows.append({"op": name, **compare(fp32, q, data.labels)})
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
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

"""`quantize.accuracy_target`: keep the fewest layers fp32 that bring int8 to the user's accuracy.

The search (like an accuracy criterion with op-by-op fallback, or per-layer precision):

1. build the int8 model as calibrated and measure the target's metric on the `accuracy:` data
   (against fp32's logits, or against the labels for ``top1_drop``); met: done, nothing kept fp32;
2. otherwise add one layer to the fp32 set: every layer still int8 is tried on top of the layers
   already chosen (the most sensitive one given those is the one whose fp32 fallback brings the
   metric furthest; cosine breaks ties), on one *switchable* build whose per-layer int8/fp32 choice
   is an input (``apply_table(switchable=True)``), so trying a layer costs a run, not a build;
   the first step tries every quantized layer, later steps re-measure the RERANK best of the first
   step's ranking (the layers that matter alone are the ones that matter together);
3. build the model with the chosen layers fp32 and measure it again (the numbers reported are those
   of this real build); stop as soon as the target is met, or when ``max_fp32_layers`` layers are
   fp32 (then the result says what was reached and that the target was not).

The result (the layers, the target, what each step reached) goes into the calibration table
(table.set_accuracy_target), so a re-run with the saved table and no data builds the same model,
and into the run record. Measurements run on the CPU (llvm), like the sensitivity report.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional

import numpy as np

from . import bench, build
from .accuracy import EvalData, compare, predict

Status = Callable[[str], None]

#: after the first step, this many of its best layers are tried again at each step
RERANK = 8

#: metric name -> (key of harness.accuracy.compare's result it reads, bound kind)
METRICS = {
    "cosine": ("cosine_mean", "min"),
    "top1_agreement": ("top1_agreement", "min"),
    "top1_drop": ("top1_drop", "max"),
}


def metric_values(metrics: Dict) -> Dict:
    """compare()'s result plus ``top1_drop`` (fp32 top-1 minus int8 top-1 vs labels) where labeled."""
    out = dict(metrics)
    if "top1_fp32" in out:
        out["top1_drop"] = out["top1_fp32"] - out["top1_int8"]
    return out


def target_of(tcfg) -> Dict:
    """The target as recorded: metric, bound ("min" | "max"), value, max_fp32_layers."""
    bound = METRICS[tcfg.metric][1]
    return {"metric": tcfg.metric, "bound": bound, "value": float(getattr(tcfg, bound)),
            "max_fp32_layers": int(tcfg.max_fp32_layers)}


def meets(values: Dict, target: Dict) -> bool:
    v = values[METRICS[target["metric"]][0]]
    return v >= target["value"] if target["bound"] == "min" else v <= target["value"]


def _rank_key(values: Dict, target: Dict) -> tuple:
    """Larger is better: the target's metric first, then cosine."""
    v = values[METRICS[target["metric"]][0]]
    return (v if target["bound"] == "min" else -v, values["cosine_mean"])


def _bar(total: int, desc: str, progress: bool):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="layer", leave=False)


def search(cfg, model, table: dict, data: EvalData, *, status: Status = lambda m: None,
           progress: bool = False) -> Dict:
    """Choose the fp32 layers for `cfg.quantize.accuracy_target` (see the module docstring).

    cfg: the run config; model: the LoadedModel; table: its calibration table (a choice already
    recorded in it is ignored here: the search starts from the plan); data: the accuracy data.
    Returns the result that table.set_accuracy_target records.
    """
    from .pipeline import int8_module
    from .quantize import plan

    if data.labels is None and cfg.quantize.accuracy_target.metric == "top1_drop":
        from .errors import ConfigError

        raise ConfigError(f"quantize.accuracy_target: metric top1_drop needs labels; {data.name} has none "
                          "(use a folder with one sub-folder per class, or dataset digits)")
    target = target_of(cfg.quantize.accuracy_target)
    tgt = build.resolve_target(dataclasses.replace(cfg.target, kind="llvm"))
    dev = build.device_for(tgt)
    batch = model.input_shape[0]
    from .pipeline import qconfig_of

    candidates = [op.name for op in plan(model.mod, model.params, qconfig_of(cfg.quantize)) if op.enabled]

    def logits_of(mod, extra=None):
        vm = bench.make_vm(build.compile_module(mod, tgt).executable, dev)
        return lambda: predict(_runner(vm, dev, extra), data.inputs, batch), vm

    status(f"accuracy target {target['metric']} {target['bound']} {target['value']:g}: measuring fp32 and "
           f"int8 on {data.name}")
    fp32 = logits_of(build.bind_params(model.mod, model.params))[0]()

    def measure(fp32_layers: List[str]) -> Dict:
        run = logits_of(int8_module(cfg, model, table, fp32_layers=fp32_layers))[0]
        return metric_values(compare(fp32, run(), data.labels))

    chosen: List[str] = []
    values = measure(chosen)
    steps = [_step(chosen, values, target)]
    switch_vm = None
    ranking: Optional[List[Dict]] = None  # the first step's, best first
    while not meets(values, target) and len(chosen) < target["max_fp32_layers"]:
        pool = candidates if ranking is None else [r["layer"] for r in ranking[:RERANK]]
        left = [c for c in pool if c not in chosen]
        if not left:
            break
        if switch_vm is None:
            status(f"building the switchable model ({len(candidates)} quantized layers)")
            switch_vm = bench.make_vm(build.compile_module(
                int8_module(cfg, model, table, fp32_layers=[], switchable=True), tgt).executable, dev)
        bar = _bar(len(left), f"fp32 layer {len(chosen) + 1}", progress)
        tried = []
        try:
            for name in left:
                flags = np.array([0.0 if c in chosen or c == name else 1.0 for c in candidates], "float32")
                q = predict(_runner(switch_vm, dev, flags), data.inputs, batch)
                got = metric_values(compare(fp32, q, data.labels))
                tried.append((_rank_key(got, target), name, got))
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        order = sorted(tried, key=lambda t: t[0], reverse=True)  # stable: plan order among equals
        best = order[0][1]
        if ranking is None:
            ranking = [{"layer": name, **{k: got[k] for k in ("cosine_mean", "top1_agreement", "top1_drop")
                                          if k in got}} for _, name, got in order]
        chosen.append(best)
        status(f"keeping {best} fp32 ({len(chosen)}/{target['max_fp32_layers']}); measuring the build")
        values = measure(chosen)
        steps.append(_step(chosen, values, target))
    met = meets(values, target)
    reached = {k: values[k] for k in ("cosine_mean", "cosine_min", "top1_agreement", "top5_overlap",
                                      "top1_fp32", "top1_int8", "top5_fp32", "top5_int8", "top1_drop")
               if k in values}
    result = {**target, "fp32_layers": list(chosen), "met": met, "reached": reached,
              "dataset": data.name, "samples": int(len(data.inputs)), "steps": steps}
    if ranking is not None:  # what each layer alone gains, kept fp32 on its own (the first step)
        result["first_step"] = ranking[:RERANK]
    if not met:
        if len(chosen) == len(candidates):
            why = "every quantized layer is fp32 already"
        elif len(chosen) >= target["max_fp32_layers"]:
            why = f"the bound of {target['max_fp32_layers']} fp32 layers was hit"
        else:
            why = f"the {RERANK} layers that gained most on their own are all fp32"
        result["note"] = (f"target not met: {why}; raise quantize.accuracy_target.max_fp32_layers, or relax "
                          f"the target")
    return result


def _step(chosen: List[str], values: Dict, target: Dict) -> Dict:
    """One build of the search: its fp32 layers and what it reached."""
    keys = ["cosine_mean", "top1_agreement"] + (["top1_drop"] if "top1_drop" in values else [])
    return {"fp32_layers": list(chosen), **{k: values[k] for k in keys}, "met": meets(values, target)}


def _runner(vm, dev, extra: Optional[np.ndarray]):
    import tvm

    extra_arg = None if extra is None else tvm.runtime.tensor(extra, dev)

    def run(x: np.ndarray) -> np.ndarray:
        args = [tvm.runtime.tensor(x, dev)] + ([] if extra_arg is None else [extra_arg])
        out = vm["main"](*args)
        out = out.numpy() if hasattr(out, "numpy") else out[0].numpy()
        return out

    return run

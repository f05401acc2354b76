#!/usr/bin/env python
"""What an accuracy target's fp32 layers cost: fp32, all-int8 and int8 with the chosen fp32 layers,
timed side by side in one run, with their accuracy against fp32 on the config's `accuracy:` data.

The config's `quantize.table` must exist (written by `harness quantize` / `harness run` with
`quantize.accuracy_target`); its recorded fp32 layers are the third variant. The three builds are
timed in turns (`--rounds` rounds of time_evaluator each), so that load from other processes falls
on all of them alike; medians over the rounds are printed, with each one's ratio to fp32.

    .venv/bin/python scripts/bench_fallback.py CONFIG.yaml [--rounds 5]
"""
import argparse
import datetime
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import bench, build  # noqa: E402
from harness.accuracy import compare, predict  # noqa: E402
from harness.config import load_config  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.frontends import load_model  # noqa: E402
from harness.models import input_data  # noqa: E402
from harness.pipeline import _vm_runner, accuracy_data, int8_module  # noqa: E402
from harness.quantize import fallback_layers, load_table  # noqa: E402
from harness.record import cpu_name  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--rounds", type=int, default=5, help="turns of timing per build (default 5)")
    args = ap.parse_args()
    cfg = load_config(args.config)
    if cfg.quantize is None or not cfg.quantize.table or not os.path.isfile(cfg.quantize.table):
        raise SystemExit("error: the config needs quantize.table: an existing calibration table")
    table = load_table(cfg.quantize.table)
    layers = fallback_layers(table)
    if not layers:
        raise SystemExit(f"error: {cfg.quantize.table} records no fp32 layers (no accuracy target chosen)")
    model = load_model(cfg.model)
    target = build.resolve_target(cfg.target)
    dev = build.device_for(target)
    x = input_data(model.input_shape, cfg.model.seed, model.dtype)
    data = accuracy_data(cfg, model) if cfg.accuracy is not None else None
    variants = [("fp32", build.bind_params(model.mod, model.params)),
                ("int8, all layers", int8_module(cfg, model, table, fp32_layers=[])),
                (f"int8, fp32: {', '.join(layers)}", int8_module(cfg, model, table))]
    vms, logits = {}, {}
    for name, mod in variants:
        print(f"compiling {name}", file=sys.stderr, flush=True)
        vms[name] = bench.make_vm(build.compile_module(mod, target).executable, dev)
        if data is not None:
            logits[name] = predict(_vm_runner(vms[name], dev), data.inputs, model.input_shape[0])
    times = {name: [] for name, _ in variants}
    for r in range(args.rounds):
        for name, _ in variants:
            stats = bench.time_vm(vms[name], dev, [x], number=cfg.bench.number, repeat=cfg.bench.repeat,
                                  min_repeat_ms=cfg.bench.min_repeat_ms, warmup=cfg.bench.warmup,
                                  batch=model.input_shape[0])
            times[name].append(stats.median_ms)
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
    fp32_ms = float(np.median(times["fp32"]))
    print(f"{model.name}, {build.target_key(target)} ({cpu_name()}), "
          f"{datetime.date.today().isoformat()}, {args.rounds} rounds of time_evaluator(number={cfg.bench.number}, "
          f"repeat={cfg.bench.repeat}); accuracy on {data.name if data else '-'}")
    print()
    print("| build | cosine vs fp32 | top-1 agreement | median ms | vs fp32 |")
    print("| --- | --- | --- | --- | --- |")
    for name, _ in variants:
        ms = float(np.median(times[name]))
        acc = compare(logits["fp32"], logits[name]) if data is not None else None
        cos = f"{acc['cosine_mean']:.5f}" if acc else "-"
        agree = f"{acc['top1_agreement']:.3f}" if acc else "-"
        print(f"| {name} | {cos} | {agree} | {ms:.2f} | {fp32_ms / ms:.2f}x |")


if __name__ == "__main__":
    try:
        main()
    except HarnessError as e:
        raise SystemExit(f"error: {e}")

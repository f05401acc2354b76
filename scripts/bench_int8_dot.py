#!/usr/bin/env python
"""Whole-model int8 on this CPU with and without its 8-bit dot-product instructions, beside fp32.

For each model: one calibration, then four builds timed in alternating rounds (this machine is
shared; the ratios are what to read): fp32, int8 with the plain register-tiled conv schedule
(build.schedules.cpu_int8_dot off), int8 with the dot-product conv schedule (vpdpbusd / vpmaddwd, see
harness.schedules.cpu.schedule_int8_dot_conv) but depthwise convs on the plain schedule
(build.schedules.cpu_int8_depthwise off: what builds did before the depthwise schedule), and int8 as
built today (dot product + the int8 depthwise schedule, harness.schedules.cpu.schedule_int8_depthwise_conv).
With --tuned, two more: fp32 and int8 with the
model's tuning databases (tuning_logs/<target>/<model>-B1-{float32,int8}, as `harness run` applies
them). The int8 builds must give the same logits. Prints a Markdown table.

    .venv/bin/python scripts/bench_int8_dot.py [--models resnet18_v1,resnet50_v1] [--rounds 3] [--tuned]
    .venv/bin/python scripts/bench_int8_dot.py --models mobilenetv2_1.0,efficientnet_lite0
"""
import argparse
import datetime
import os
import sys

import numpy as np
import tvm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import bench, build  # noqa: E402
from harness.config import load_config  # noqa: E402
from harness.frontends import load_model  # noqa: E402
from harness.models import input_data  # noqa: E402
from harness.pipeline import calibration_table, int8_module, logs_root, run_key  # noqa: E402
from harness.record import cpu_name  # noqa: E402
from harness.report import markdown_table  # noqa: E402
from harness.schedules import ScheduleOptions  # noqa: E402
from harness.schedules.intrinsics import cpu_int8_dots  # noqa: E402
from harness.tune.database import load_records  # noqa: E402
from harness.tune.search import tuning_dir  # noqa: E402

CONFIGS = {
    "resnet18_v1": "configs/resnet18_v1_int8.yaml",
    "resnet50_v1": "configs/resnet50_v1_int8.yaml",
    "efficientnet_lite0": "configs/efficientnet_lite0_int8.yaml",
    "mobilenetv2_1.0": "configs/mobilenetv2_1.0_int8.yaml",
}


def _build(mod, target, dot: bool, database=None, depthwise: bool = True):
    """Each variant built with its own schedule switches (build.schedules.cpu_int8_dot,
    cpu_int8_depthwise)."""
    records = load_records([(os.path.basename(database), database)], target) if database else None
    built = build.compile_module(mod, target, records=records, fallback=False,
                                 schedules=ScheduleOptions(cpu_int8_dot=dot, cpu_int8_depthwise=depthwise and dot))
    if database:
        print(f"tuned: {built.report}", file=sys.stderr)
    return built.executable


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18_v1,resnet50_v1,efficientnet_lite0")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds per build")
    ap.add_argument("--repeat", type=int, default=5, help="time_evaluator repeats per round")
    ap.add_argument("--tuned", action="store_true", help="also int8 with the model's tuning database")
    args = ap.parse_args()
    rows, dev = [], tvm.cpu()
    dot = None
    for name in args.models.split(","):
        cfg = load_config(CONFIGS[name])
        model = load_model(cfg.model)
        target = build.resolve_target(cfg.target)
        dot = (cpu_int8_dots(target, "uint8") or [None])[0]
        x = input_data(model.input_shape, 0)
        table = calibration_table(cfg, model, status=lambda m: None)
        qmod = int8_module(cfg, model, table)
        vms = {
            "fp32": bench.make_vm(_build(build.bind_params(model.mod, model.params), target, True), dev),
            "int8 plain": bench.make_vm(_build(qmod, target, False), dev),
        }
        vms["int8 dot, plain dw"] = bench.make_vm(_build(qmod, target, True, depthwise=False), dev)
        vms["int8 dot"] = bench.make_vm(_build(qmod, target, True), dev)
        if args.tuned:
            for dkey, mod in (("float32", build.bind_params(model.mod, model.params)), ("int8", qmod)):
                work_dir = tuning_dir(logs_root(cfg), target, run_key(model.name, model.input_shape[0], dkey))
                if not os.path.isdir(work_dir):
                    sys.exit(f"error: no tuning database {work_dir} (run `harness tune {CONFIGS[name]} --only {dkey}`)")
                label = "fp32 tuned" if dkey == "float32" else "int8 tuned"
                vms[label] = bench.make_vm(_build(mod, target, True, work_dir), dev)
        outs = {k: np.asarray(bench.run_once(vm, dev, [x])) for k, vm in vms.items()}
        diff = max(float(np.abs(outs["int8 plain"] - outs[k]).max()) for k in vms if k.startswith("int8"))
        ms = bench.alternate_vms(vms, dev, [x], rounds=args.rounds, repeat=args.repeat)
        tuned = [f"{ms['fp32 tuned']:.1f}", f"{ms['int8 tuned']:.1f}",
                 f"{ms['fp32 tuned'] / ms['int8 tuned']:.2f}x"] if args.tuned else []
        rows.append([name, f"{ms['fp32']:.1f}", f"{ms['int8 plain']:.1f}", f"{ms['int8 dot, plain dw']:.1f}",
                     f"{ms['int8 dot']:.1f}", f"{ms['int8 plain'] / ms['int8 dot']:.2f}x",
                     f"{ms['fp32'] / ms['int8 dot, plain dw']:.2f}x", f"{ms['fp32'] / ms['int8 dot']:.2f}x", *tuned,
                     f"{diff:g}"])
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    instr = f"{dot[0]} ({dot[1]} lanes x {dot[2]})" if dot else "none (plain schedule only)"
    print(f"\nMeasured {datetime.date.today()} on {cpu_name()} ({os.cpu_count()} cores), TVM {tvm.__version__}, "
          f"{'untuned and tuned (tuning_logs)' if args.tuned else 'untuned'}, batch 1, median of {args.rounds} "
          f"alternating rounds; dot product: {instr}\n")
    head = ["model", "fp32 ms", "int8 plain ms", "int8 dot, plain dw ms", "int8 dot ms", "dot vs plain",
            "int8 dot, plain dw vs fp32", "int8 dot vs fp32",
            *(["fp32 tuned ms", "int8 tuned ms", "tuned int8 vs tuned fp32"] if args.tuned else []),
            "max logit diff"]
    print(markdown_table(head, rows))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""One quantize key, several values: speed and accuracy of each int8 build beside fp32, in one run.

For each model: one calibration (the model's int8 config under configs/; one per value for a key
that changes which ops are quantized: skip_conv_layers, skip_dense_layer), then fp32 and one int8
build per value of the key (`--key shared_tensors --values float,int8`), all for this CPU (or
`--mcpu`), timed in alternating rounds (the ratios measured side by side are what to read on a
shared machine), each int8 build's logits compared with fp32's on the bundled photos (cosine,
top-1 agreement). Prints a Markdown table.

    .venv/bin/python scripts/bench_qconfig.py [--models resnet50_v1,resnet18_v1] [--key shared_tensors]
        [--values float,int8] [--mcpu NAME]
"""
import argparse
import dataclasses
import datetime
import os
import sys

import numpy as np
import tvm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import bench, build  # noqa: E402
from harness.accuracy import compare, predict  # noqa: E402
from harness.config import load_config  # noqa: E402
from harness.data import load_photos  # noqa: E402
from harness.frontends import load_model  # noqa: E402
from harness.models import MODELS, input_data  # noqa: E402
from harness.pipeline import calibration_table, int8_module  # noqa: E402
from harness.quantize.qconfig import QConfig  # noqa: E402
from harness.quantize.table import PLAN_KEYS  # noqa: E402
from harness.record import cpu_name  # noqa: E402
from harness.report import markdown_table  # noqa: E402
from harness.targets import llvm_target  # noqa: E402

CONFIGS = {name: f"configs/{name}_int8.yaml" for name in
           ("resnet18_v1", "resnet50_v1", "efficientnet_lite0", "mobilenetv2_1.0")}


def _typed(key: str, text: str):
    """A value of the QConfig key `key` from its command-line text (the default's type)."""
    default = getattr(QConfig(), key)
    if isinstance(default, bool):
        return text.lower() in ("1", "true", "yes")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    if isinstance(default, list):  # e.g. skip_conv_layers: "0+3" -> [0, 3], "none" -> []
        return [] if text.lower() in ("none", "") else [int(v) for v in text.split("+")]
    return text


def main():  # pylint: disable=too-many-locals
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50_v1")
    ap.add_argument("--key", default="shared_tensors", help="a quantize: key (harness.quantize.QConfig)")
    ap.add_argument("--values", default="float,int8", help="comma-separated values of the key")
    ap.add_argument("--mcpu", default=None, help="the CPU the builds are for (default: this one)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds per build")
    ap.add_argument("--repeat", type=int, default=5, help="time_evaluator repeats per round")
    args = ap.parse_args()
    if args.key not in QConfig().to_dict():
        sys.exit(f"error: --key {args.key}: not a quantize key; valid: {', '.join(sorted(QConfig().to_dict()))}")
    values = [_typed(args.key, v) for v in args.values.split(",")]
    target = tvm.target.Target(llvm_target(args.mcpu))
    dev, rows = tvm.cpu(), []
    for name in args.models.split(","):
        if name not in CONFIGS:
            sys.exit(f"error: --models {name}: unknown; valid: {', '.join(CONFIGS)}")
        cfg = load_config(CONFIGS[name])
        model = load_model(cfg.model)
        spec = MODELS[name]
        # one calibration for all values; a key that changes which ops are quantized: one per value
        table = None if args.key in PLAN_KEYS else calibration_table(cfg, model, status=lambda m: None)
        mods = {"fp32": build.bind_params(model.mod, model.params)}
        for v in values:
            variant = dataclasses.replace(cfg, quantize=dataclasses.replace(cfg.quantize, **{args.key: v}))
            mods[f"{args.key}={v}"] = int8_module(
                variant, model, table or calibration_table(variant, model, status=lambda m: None))
        built = {k: build.compile_module(mod, target, fallback=False, schedules=cfg.schedule_options()).executable
                 for k, mod in mods.items()}
        vms = {k: bench.make_vm(ex, dev) for k, ex in built.items()}
        photos = load_photos(model.input_shape[2:], spec.mean, spec.std)
        logits = {k: predict(lambda b, vm=vm: np.asarray(bench.run_once(vm, dev, [b])), photos, model.input_shape[0])
                  for k, vm in vms.items()}
        ms = bench.alternate_vms(vms, dev, [input_data(model.input_shape, 0)], rounds=args.rounds, repeat=args.repeat)
        for k in mods:
            if k == "fp32":
                continue
            acc = compare(logits["fp32"], logits[k])
            rows.append([name, k, f"{ms['fp32']:.1f}", f"{ms[k]:.1f}", f"{ms['fp32'] / ms[k]:.2f}x",
                         f"{acc['cosine_mean']:.4f}", f"{acc['top1_agreement']:.2f}"])
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    print(f"\nMeasured {datetime.date.today()} on {cpu_name()} ({os.cpu_count()} cores), target {target}, "
          f"TVM {tvm.__version__}, untuned, batch 1, median of {args.rounds} alternating rounds; accuracy: "
          f"logits vs fp32 on {len(photos)} photos\n")
    head = ["model", "int8 build", "fp32 ms", "int8 ms", "int8 vs fp32", "cosine vs fp32", "top-1 agree"]
    print(markdown_table(head, rows))


if __name__ == "__main__":
    main()

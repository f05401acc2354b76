#!/usr/bin/env python
"""8-bit against 7-bit int8 weights (`quantize.reduce_range`, `nbit_weight: 7`) on a CPU without VNNI: speed and accuracy.

Without VNNI the exact 8-bit dot product of x86 is `vpmaddwd` on int16-widened operands (2 multiply-adds
per lane). With weights of at most 7 bits, `vpmaddubsw` (+ `vpmaddwd` by ones) multiplies uint8 data
exactly, 4 per lane (harness.schedules.intrinsics.pmaddubsw_intrinsic): what ONNX Runtime's
`reduce_range` does on AVX2. The price is one bit of weight precision. For each model: one
calibration, then fp32, int8 with 8-bit weights, int8 with `reduce_range` (7 bits on the convs that
multiply on vpmaddubsw: ungrouped, uint8 data; 8 on depthwise and the rest) and int8 with every weight
at 7 bits (`nbit_weight: 7`), built for `--mcpu` (default
haswell: AVX2, no VNNI; this host runs that code whatever it has beyond AVX2), timed in alternating
rounds (ratios measured side by side in one run are what to read on a shared machine), and each int8
build's logits compared with fp32's on the bundled photos (cosine, top-1 agreement). Prints a
Markdown table.

    .venv/bin/python scripts/bench_weight_bits.py [--models efficientnet_lite0,resnet50_v1] [--mcpu haswell]
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
from harness.record import cpu_name  # noqa: E402
from harness.report import markdown_table  # noqa: E402
from harness.schedules import ScheduleOptions  # noqa: E402
from harness.schedules.intrinsics import cpu_int8_dots  # noqa: E402
from harness.targets import llvm_target  # noqa: E402

CONFIGS = {
    "resnet18_v1": "configs/resnet18_v1_int8.yaml",
    "resnet50_v1": "configs/resnet50_v1_int8.yaml",
    "efficientnet_lite0": "configs/efficientnet_lite0_int8.yaml",
    "mobilenetv2_1.0": "configs/mobilenetv2_1.0_int8.yaml",
}


def _asm_count(executable, instruction: str) -> int:
    return sum(m.inspect_source("s").count(instruction) for m in build.walk_modules(executable.mod) if m.kind == "llvm")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="efficientnet_lite0,resnet50_v1")
    ap.add_argument("--mcpu", default="haswell", help="the CPU the builds are for (default: AVX2 without VNNI)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds per build")
    ap.add_argument("--repeat", type=int, default=5, help="time_evaluator repeats per round")
    args = ap.parse_args()
    target = tvm.target.Target(llvm_target(args.mcpu))
    dev, rows = tvm.cpu(), []
    for name in args.models.split(","):
        cfg = load_config(CONFIGS[name])
        model = load_model(cfg.model)
        spec = MODELS[name]
        table = calibration_table(cfg, model, status=lambda m: None)
        q = cfg.quantize
        configs = {"w8": dataclasses.replace(cfg, quantize=dataclasses.replace(q, reduce_range=False, nbit_weight=8)),
                   "reduce_range": dataclasses.replace(cfg, quantize=dataclasses.replace(q, reduce_range=True, nbit_weight=8)),
                   "w7 all": dataclasses.replace(cfg, quantize=dataclasses.replace(q, reduce_range=False, nbit_weight=7))}
        mods = {"fp32": build.bind_params(model.mod, model.params),
                **{k: int8_module(c, model, table) for k, c in configs.items()}}
        built = {k: build.compile_module(mod, target, fallback=False,
                                         schedules=configs[k].schedule_options(target) if k in configs
                                         else ScheduleOptions()).executable
                 for k, mod in mods.items()}
        uses = {k: _asm_count(ex, "vpmaddubsw") for k, ex in built.items()}
        if not uses["reduce_range"] or not uses["w7 all"] or uses["w8"]:
            sys.exit(f"error: {name}: vpmaddubsw in the 8-bit / reduce_range / 7-bit builds {uses['w8']} / "
                     f"{uses['reduce_range']} / {uses['w7 all']} times (want none / some / some): not the "
                     "comparison this script makes")
        vms = {k: bench.make_vm(ex, dev) for k, ex in built.items()}
        photos = load_photos(model.input_shape[2:], spec.mean, spec.std)
        logits = {k: predict(lambda b, vm=vm: np.asarray(bench.run_once(vm, dev, [b])), photos, model.input_shape[0])
                  for k, vm in vms.items()}
        acc = {k: compare(logits["fp32"], logits[k]) for k in configs}
        x = input_data(model.input_shape, 0)
        ms = bench.alternate_vms(vms, dev, [x], rounds=args.rounds, repeat=args.repeat)
        rows.append([name, *(f"{ms[k]:.1f}" for k in mods), f"{ms['w8'] / ms['reduce_range']:.2f}x",
                     f"{ms['fp32'] / ms['reduce_range']:.2f}x",
                     *(f"{acc[k]['cosine_mean']:.4f}" for k in configs),
                     *(f"{acc[k]['top1_agreement']:.2f}" for k in configs)])
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    dots = ", ".join(d[0] for d in cpu_int8_dots(target, "uint8", 7))
    print(f"\nMeasured {datetime.date.today()} on {cpu_name()} ({os.cpu_count()} cores), builds for mcpu="
          f"{args.mcpu} (dot products with 7-bit weights: {dots}), TVM {tvm.__version__}, untuned, batch 1, "
          f"median of {args.rounds} alternating rounds; w8: 8-bit weights; reduce_range: 7 bits on the ungrouped "
          f"uint8-data convs (vpmaddubsw), 8 on the rest; w7 all: nbit_weight 7; accuracy: logits vs fp32 on "
          f"{len(photos)} photos\n")
    head = ["model", "fp32 ms", "int8 w8 ms", "int8 reduce_range ms", "int8 w7 all ms", "reduce_range vs w8",
            "reduce_range vs fp32", "cosine w8", "cosine reduce_range", "cosine w7 all", "top-1 agree w8",
            "top-1 agree reduce_range", "top-1 agree w7 all"]
    print(markdown_table(head, rows))


if __name__ == "__main__":
    main()

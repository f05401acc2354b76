#!/usr/bin/env python
"""Int8 vs fp32 on this CPU, per calibration mode: accuracy (or agreement with fp32) and latency.

For each model the fp32 build is timed once and each calibration mode's int8 build is timed in
the same run, so the int8/fp32 ratios are measured side by side. Prints a Markdown table.

    .venv/bin/python scripts/quant_table.py [--models resnet18_v1,digits_cnn] [--modes kl_divergence,max]
        [--bias-correction on,off] [--requantize float,integer,folded]
"""
import argparse
import dataclasses
import datetime
import os
import sys

import tvm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import bench, build  # noqa: E402
from harness.accuracy import compare, eval_data, predict  # noqa: E402
from harness.config import load_config  # noqa: E402
from harness.frontends import load_model  # noqa: E402
from harness.models import input_data  # noqa: E402
from harness.pipeline import _spec, _vm_runner, calibration_table, int8_module  # noqa: E402
from harness.record import cpu_name  # noqa: E402

CONFIGS = {
    "resnet18_v1": "configs/resnet18_v1_int8.yaml",
    "resnet50_v1": "configs/resnet50_v1_int8.yaml",
    "efficientnet_lite0": "configs/efficientnet_lite0_int8.yaml",
    "digits_cnn": "configs/digits_cnn_int8.yaml",
}
MODES = ["kl_divergence", "percentile", "max", "global_scale"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(CONFIGS))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--bias-correction", default="on,off",
                    help="on, off or on,off (both, side by side): quantize.bias_correction")
    ap.add_argument("--requantize", default="folded",
                    help="folded, float, integer, or several comma-separated (side by side, one calibration): "
                         "quantize.requantize")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for name in args.models.split(","):
        cfg = load_config(CONFIGS[name])
        model = load_model(cfg.model)
        target = build.resolve_target(cfg.target)
        dev = tvm.cpu()
        data = eval_data(cfg.accuracy, _spec(model), model.input_shape)
        x = input_data(model.input_shape, 0)
        batch = model.input_shape[0]

        def build_and_time(mod):
            vm = bench.make_vm(build.compile_module(mod, target).executable, dev)
            stats = bench.time_vm(vm, dev, [x], number=cfg.bench.number, repeat=args.repeat, min_repeat_ms=0,
                                  batch=batch)
            return _vm_runner(vm, dev), stats

        run_fp32, fp32_stats = build_and_time(build.bind_params(model.mod, model.params))
        fp32_logits = predict(run_fp32, data.inputs, batch)
        for mode, bc in [(m, b) for m in args.modes.split(",") for b in args.bias_correction.split(",")]:
            if bc not in ("on", "off"):
                ap.error(f"--bias-correction: '{bc}' is not on or off")
            if mode == "global_scale" and bc == "on" and "off" in args.bias_correction:
                continue  # no calibration data, no channel means: the same module as "off"
            cfg.quantize = dataclasses.replace(cfg.quantize, calibrate_mode=mode, bias_correction=bc == "on")
            table = calibration_table(cfg, model, status=lambda m: None)
            for requantize in args.requantize.split(","):
                cfg.quantize = dataclasses.replace(cfg.quantize, requantize=requantize)
                run_q, q_stats = build_and_time(int8_module(cfg, model, table))
                acc = compare(fp32_logits, predict(run_q, data.inputs, batch), data.labels)
                if "top1_fp32" in acc:
                    quality = f"top-1 {acc['top1_int8']:.4f} (fp32 {acc['top1_fp32']:.4f})"
                else:
                    conf = acc["top1_agreement_confident"]
                    quality = (f"agree {acc['top1_agreement']:.3f}, decisive {conf:.3f} of "
                               f"{acc['confident_samples']}, top-5 {acc['top5_overlap']:.3f}")
                rows.append([name, mode, bc, requantize, quality, f"{acc['cosine_mean']:.5f}",
                             f"{fp32_stats.mean_ms:.2f}", f"{q_stats.mean_ms:.2f}",
                             f"{fp32_stats.mean_ms / q_stats.mean_ms:.2f}x"])
                print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    print(f"\nMeasured {datetime.date.today()} on {cpu_name()} ({os.cpu_count()} cores), TVM {tvm.__version__}, "
          "untuned (default schedules), batch 1, weight_scale channel_max\n")
    print("| model | calibrate_mode | bias correction | requantize | int8 accuracy vs fp32 | cosine | fp32 ms "
          "| int8 ms | int8 speed-up |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()

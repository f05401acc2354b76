#!/usr/bin/env python
"""How long a model's int8 build takes with the harness's constant folder against TVM's own
FoldConstant, side by side in one run (harness.build.passes.fold_constant says why they differ).

For each registry model (default: all twelve): load it, calibrate (``max`` on one synthetic sample:
the kernels a build compiles do not depend on the thresholds), then build the int8 module for this
CPU with TVM's FoldConstant and with the harness's, after the fp32 module (built first, for
reference). Counts the kernels compiled to fold constants (calls of the global ``tirx.build``) and
checks that both int8 builds give the same output on one input. Prints a Markdown table.

    .venv/bin/python scripts/bench_build_time.py [--models resnet50_v1,efficientnet_lite0]
"""
import argparse
import datetime
import importlib
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MODELS = ["resnet18_v1", "resnet50_v1", "resnet101_v1", "vgg16", "vgg19", "resnext50_32x4d", "inception_v3",
          "drn_c_26", "dcn_resnet101", "mobilenet1.0", "mobilenetv2_1.0", "efficientnet_lite0"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()

    import tvm
    from tvm import relax

    from harness import bench
    from harness.build import bind_params, compile_module
    from harness.build.passes import fold_constant
    from harness.config import config_from_dict
    from harness.frontends import load_model
    from harness.models import input_data
    from harness.pipeline import calibration_table, int8_module
    from harness.record import cpu_name
    from harness.report import markdown_table
    from harness.targets import resolve_target

    build_module = importlib.import_module("tvm.tirx.build")
    builds = [0]

    def counting(*a, **k):
        builds[0] += 1
        return build_module.build(*a, **k)

    tvm.register_global_func("tirx.build", counting, override=True)
    ours = fold_constant.fold_constant_pass

    def timed(mod, target, fold):
        fold_constant.fold_constant_pass = fold
        builds[0] = 0
        start = time.perf_counter()
        built = compile_module(mod, target)
        return built, time.perf_counter() - start, builds[0]

    rows = []
    for name in args.models.split(","):
        cfg = config_from_dict({"model": {"name": name}, "target": "llvm", "quantize": {
            "calibrate_mode": "max", "weight_scale": "channel_max",
            "calib": {"source": "synthetic", "num_samples": 1, "batch_size": 1}}})
        model = load_model(cfg.model)
        target = resolve_target(cfg.target)
        table = calibration_table(cfg, model, status=lambda m: None)
        qmod = int8_module(cfg, model, table)
        fp32_s = timed(bind_params(model.mod, model.params), target, ours)[1]  # first: warms up LLVM too
        tvm_built, tvm_s, tvm_n = timed(qmod, target, relax.transform.FoldConstant)
        our_built, our_s, our_n = timed(qmod, target, ours)
        x = input_data(model.input_shape, seed=0)
        dev = tvm.cpu()
        outs = [bench.run_once(bench.make_vm(b.executable, dev), dev, [x]) for b in (tvm_built, our_built)]
        same = all(np.array_equal(a, b) for a, b in zip(*[_flat(out) for out in outs]))
        rows.append([name, f"{tvm_s:.1f}", f"{our_s:.1f}", f"{tvm_s / our_s:.2f}x", f"{fp32_s:.1f}",
                     f"{tvm_n} / {our_n}", "yes" if same else "NO"])
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    print(f"\n{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_name()}, "
          f"TVM {tvm.__version__}, target {target}\n")
    print(markdown_table(["model", "int8 build, TVM's FoldConstant (s)", "int8 build, harness fold (s)", "speed-up",
                          "fp32 build (s)", "kernels compiled to fold constants (TVM / harness)",
                          "same int8 output"], rows))


def _flat(out):
    """run_once's output as a list of arrays."""
    return [a for o in out for a in _flat(o)] if isinstance(out, list) else [out]


if __name__ == "__main__":
    main()

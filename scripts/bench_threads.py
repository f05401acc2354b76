#!/usr/bin/env python
"""TVM fp32 and int8 builds of a model on 1, 2, ... CPU threads, in one run: what `target.num_cores`
(the TVM runtime's thread count, set by the harness) is worth on this machine.

TVM's runtime, left alone, runs its CPU kernels on half the logical CPUs on x86 (it assumes two
hyper-threads per core): on a machine whose CPUs are all cores (a cloud guest with one thread per
core) that is half the machine, while the peers (ONNX Runtime, OpenVINO) use all of it. The harness
sets the count (`harness.bench.use_cpu_threads`); this script measures each count side by side,
alternating rounds (ratios are what to read on a shared machine), outputs checked equal across
counts. Prints a Markdown table.

    .venv/bin/python scripts/bench_threads.py [--models resnet50_v1,resnet18_v1] [--threads 1,2]
        [--rounds 3] [--repeat 5] [--mcpu NAME]
"""
import argparse
import datetime
import os
import statistics
import sys

import numpy as np
import tvm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import bench, build  # noqa: E402
from harness.config import load_config  # noqa: E402
from harness.frontends import load_model  # noqa: E402
from harness.models import input_data  # noqa: E402
from harness.pipeline import calibration_table, int8_module  # noqa: E402
from harness.record import cpu_name  # noqa: E402
from harness.report import markdown_table  # noqa: E402
from harness.targets import default_cpu_threads, llvm_target  # noqa: E402


def main():  # pylint: disable=too-many-locals
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50_v1", help="models with a configs/<name>_int8.yaml")
    ap.add_argument("--threads", default=None, help="comma-separated thread counts (default: 1 and all cores)")
    ap.add_argument("--mcpu", default=None, help="the CPU the builds are for (default: this one)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    ap.add_argument("--repeat", type=int, default=5, help="time_evaluator repeats per round")
    args = ap.parse_args()
    cores = default_cpu_threads()
    counts = [int(v) for v in args.threads.split(",")] if args.threads else sorted({1, cores})
    if any(n < 1 for n in counts):
        sys.exit(f"error: --threads {args.threads}: every count must be at least 1")
    target = tvm.target.Target(llvm_target(args.mcpu, max(counts)))
    dev, rows = tvm.cpu(), []
    for name in args.models.split(","):
        path = f"configs/{name}_int8.yaml"
        if not os.path.exists(path):
            sys.exit(f"error: --models {name}: no {path}")
        cfg = load_config(path)
        model = load_model(cfg.model)
        mods = {"fp32": build.bind_params(model.mod, model.params),
                "int8": int8_module(cfg, model, calibration_table(cfg, model, status=lambda m: None))}
        vms = {k: bench.make_vm(build.compile_module(mod, target, schedules=cfg.schedule_options()).executable, dev)
               for k, mod in mods.items()}
        x = input_data(model.input_shape, 0)
        times = {(k, n): [] for k in vms for n in counts}
        outs = {}
        for _ in range(args.rounds):
            for n in counts:
                bench.use_cpu_threads(n)
                for k, vm in vms.items():
                    outs.setdefault(k, {})[n] = np.asarray(bench.run_once(vm, dev, [x]))
                    times[(k, n)].append(bench.time_vm(vm, dev, [x], number=1, repeat=args.repeat,
                                                       min_repeat_ms=0).mean_ms)
        for k in vms:
            same = all(np.array_equal(outs[k][counts[0]], outs[k][n]) for n in counts)
            ms = [statistics.median(times[(k, n)]) for n in counts]
            rows.append([name, k, *[f"{t:.2f}" for t in ms], f"{ms[0] / ms[-1]:.2f}x", "yes" if same else "NO"])
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    print(f"\nMeasured {datetime.date.today()} on {cpu_name()} ({cores} CPUs), target {target}, TVM "
          f"{tvm.__version__}, default schedules (no tuning logs), batch 1, median of {args.rounds} alternating "
          "rounds\n")
    head = ["model", "build", *[f"{n} thread{'s' if n > 1 else ''} ms" for n in counts],
            f"{counts[-1]} vs {counts[0]}", "outputs equal"]
    print(markdown_table(head, rows))


if __name__ == "__main__":
    main()

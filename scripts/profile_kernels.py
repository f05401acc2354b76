#!/usr/bin/env python
"""Where a model's time goes: each kernel of a build, timed inside whole-model runs.

Builds the config's model (fp32, or int8 with the config's quantize: section and calibration) for
this CPU with the databases `harness run` would apply, runs it, then runs it `--runs` more times
with the VM's instrument hook timing every call (the clock read around each call: a few
microseconds per kernel of overhead, so read shares, not sums). Prints a Markdown table, slowest
first: kernel, calls per run, ms per run, share of the run, and where its schedule came from
(database, a default schedule family, TVM).

    .venv/bin/python scripts/profile_kernels.py configs/resnet50_v1_int8.yaml [--variant int8|fp32] [--top 25]
"""
import argparse
import collections
import datetime
import os
import sys
import time

import tvm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import bench, build  # noqa: E402
from harness.config import load_config  # noqa: E402
from harness.frontends import load_model  # noqa: E402
from harness.models import input_data  # noqa: E402
from harness.pipeline import calibration_table, int8_module, run_key, tuning_records  # noqa: E402
from harness.record import cpu_name  # noqa: E402
from harness.report import markdown_table  # noqa: E402
from harness.targets import llvm_target  # noqa: E402


def kernel_times(vm, dev, x, runs: int):
    """({kernel: seconds over all runs}, {kernel: calls over all runs}) from the VM's instrument hook."""
    spent, calls, start = collections.defaultdict(float), collections.Counter(), {}

    def instrument(func, name, before, ret, *args):  # pylint: disable=unused-argument
        if before:
            start[name] = time.perf_counter()
        else:
            spent[name] += time.perf_counter() - start.pop(name)
            calls[name] += 1
        return 0

    vm.set_instrument(instrument)
    for _ in range(runs):
        bench.run_once(vm, dev, [x])
    vm.set_instrument(None)
    return spent, calls


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--variant", choices=("int8", "fp32"), default="int8")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--top", type=int, default=25, help="rows to print (the rest summed in one)")
    args = ap.parse_args()
    cfg = load_config(args.config)
    if args.variant == "int8" and cfg.quantize is None:
        sys.exit(f"error: {args.config} has no quantize: section; valid: --variant fp32, or an int8 config")
    model = load_model(cfg.model)
    x = input_data(model.input_shape, 0)
    if args.variant == "int8":
        mod = int8_module(cfg, model, calibration_table(cfg, model, status=lambda m: None))
    else:
        mod = build.bind_params(model.mod, model.params)
    target = tvm.target.Target(llvm_target())
    records = tuning_records(cfg, target, run_key(cfg.model.name, model.input_shape[0], args.variant))
    built = build.compile_module(mod, target, records=records, schedules=cfg.schedule_options())
    dev = tvm.cpu()
    vm = bench.make_vm(built.executable, dev)
    whole = bench.time_vm(vm, dev, [x], number=1, repeat=args.runs, min_repeat_ms=0).median_ms
    spent, calls = kernel_times(vm, dev, x, args.runs)
    total = sum(spent.values())
    rows = []
    ranked = sorted(spent, key=lambda k: -spent[k])
    for name in ranked[:args.top]:
        rows.append([name, calls[name] // args.runs, f"{spent[name] / args.runs * 1e3:.3f}",
                     f"{100 * spent[name] / total:.1f}%", built.report.kernels.get(name.removesuffix("_prepacked"), "vm")])
    rest = ranked[args.top:]
    if rest:
        rows.append([f"({len(rest)} others)", sum(calls[k] for k in rest) // args.runs,
                     f"{sum(spent[k] for k in rest) / args.runs * 1e3:.3f}",
                     f"{100 * sum(spent[k] for k in rest) / total:.1f}%", ""])
    print(f"\n{cfg.model.name} {args.variant}, batch {model.input_shape[0]}: {whole:.2f} ms per run (median of "
          f"{args.runs}), kernels {total / args.runs * 1e3:.2f} ms per run when timed one by one; measured "
          f"{datetime.date.today()} on {cpu_name()} ({os.cpu_count()} cores), target {target}, TVM {tvm.__version__}; "
          f"schedules: {built.report}\n")
    print(markdown_table(["kernel", "calls", "ms", "share", "schedule"], rows))


if __name__ == "__main__":
    main()

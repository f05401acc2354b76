#!/usr/bin/env python
"""Whole-model int8 on a CUDA GPU with and without the dp4a conv schedule, beside fp32.

For each model: one calibration (on the CPU), then three CUDA builds: fp32, int8 with TVM's own GPU
schedules for the int8 convs (build.schedules.cuda_int8_dp4a off: implicit GEMMs, one byte product per int32
multiply-add), int8 with the harness's dp4a schedule (harness.schedules.cuda). With --tuned, int8 with
the model's CUDA tuning database too. The int8 builds are checked against the same int8 module on
the CPU (integer convs: equal; the fp32 epilogues may round a requantized code differently), then
timed in alternating rounds. Prints a Markdown table; with --out DIR it also writes the table and
the CUDA sources there.

    .venv/bin/python scripts/bench_cuda_int8.py [--models resnet18_v1,resnet50_v1] [--rounds 3] [--tuned]
    .venv/bin/python scripts/bench_cuda_int8.py --compile-only --arch sm_90   # no GPU: build, count kernels

--compile-only needs no GPU: it builds everything for --arch (nvcc) and reports, per build, how
many int8 conv kernels run __dp4a.
"""
import argparse
import datetime
import os
import re
import statistics
import sys

import numpy as np
import tvm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import bench, build  # noqa: E402
from harness.config import TargetConfig, load_config  # noqa: E402
from harness.frontends import load_model  # noqa: E402
from harness.models import input_data  # noqa: E402
from harness.pipeline import calibration_table, int8_module, logs_root, run_key  # noqa: E402
from harness.record import gpu_name  # noqa: E402
from harness.schedules import ScheduleOptions  # noqa: E402
from harness.tune.database import load_records  # noqa: E402
from harness.tune.runners import nvcc_mode  # noqa: E402
from harness.tune.search import tuning_dir  # noqa: E402

CONFIGS = {
    "resnet18_v1": "configs/resnet18_v1_int8.yaml",
    "resnet50_v1": "configs/resnet50_v1_int8.yaml",
    "efficientnet_lite0": "configs/efficientnet_lite0_int8.yaml",
}


def _build(mod, target, dp4a: bool, database=None):
    """Each variant built with its own schedule switches (build.schedules.cuda_int8_dp4a)."""
    records = load_records([(os.path.basename(database), database)], target) if database else None
    with nvcc_mode():
        built = build.compile_module(mod, target, records=records, schedules=ScheduleOptions(cuda_int8_dp4a=dp4a),
                                     fallback=False)
    if database:
        print(f"tuned: {built.report}", file=sys.stderr)
    return built.executable


def _dp4a_kernels(executable) -> str:
    """'M / N': of the N fused functions with an int8 conv (int8 weights), M run __dp4a."""
    source = build.cuda_source(executable)
    convs, dp4a = set(), set()
    for body in re.split(r'(?=extern "C" __global__ void)', source)[1:]:
        name = re.search(r"\) (\w+)\(", body).group(1)
        func = re.sub(r"(_prepacked)?_kernel(_\d+)?$", "", name)
        if "conv2d" in func and "signed char* __restrict__ param" in body.split(")", 2)[1]:
            convs.add(func)
        if "__dp4a(" in body:
            dp4a.add(func)
    return f"{len(dp4a)} / {len(convs | dp4a)}"


def main():  # pylint: disable=too-many-locals
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18_v1,resnet50_v1")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds per build")
    ap.add_argument("--repeat", type=int, default=10, help="time_evaluator repeats per round")
    ap.add_argument("--arch", default=None, help="sm_XX (default: the visible GPU's)")
    ap.add_argument("--compile-only", action="store_true", help="build and count dp4a kernels; no GPU needed")
    ap.add_argument("--tuned", action="store_true", help="also int8 with the model's CUDA tuning database")
    ap.add_argument("--out", default=None, help="folder for the table and the CUDA sources")
    args = ap.parse_args()
    if not args.compile_only and not build.gpu_visible():
        sys.exit("error: no GPU is visible here; pass --compile-only to only build")
    target = build.resolve_target(TargetConfig(kind="cuda", arch=args.arch))
    cpu_target = build.resolve_target(TargetConfig(kind="llvm"))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    rows = []
    for name in args.models.split(","):
        cfg = load_config(CONFIGS[name])
        model = load_model(cfg.model)
        x = input_data(model.input_shape, 0)
        table = calibration_table(cfg, model, status=lambda m: None)
        qmod = int8_module(cfg, model, table)
        exes = {
            "fp32": _build(build.bind_params(model.mod, model.params), target, True),
            "int8 TVM": _build(qmod, target, False),
            "int8 dp4a": _build(qmod, target, True),
        }
        if args.tuned:
            work_dir = tuning_dir(logs_root(cfg), target, run_key(model.name, model.input_shape[0], "int8"))
            if not os.path.isdir(work_dir):
                sys.exit(f"error: no tuning database {work_dir} (run `harness tune {CONFIGS[name]} --target cuda`)")
            exes["int8 tuned"] = _build(qmod, target, True, work_dir)
        counts = {k: _dp4a_kernels(ex) for k, ex in exes.items()}
        if args.out:
            for k, ex in exes.items():
                with open(os.path.join(args.out, f"{name}-{k.replace(' ', '_')}.cu"), "w") as f:
                    f.write(build.cuda_source(ex))
        if args.compile_only:
            rows.append([name, *(str(counts[k]) for k in exes)])
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
            continue
        dev = tvm.cuda(0)
        vms = {k: bench.make_vm(ex, dev) for k, ex in exes.items()}
        ref = np.asarray(bench.run_once(bench.make_vm(build.compile_module(qmod, cpu_target).executable, tvm.cpu()),
                                        tvm.cpu(), [x]))
        outs = {k: np.asarray(bench.run_once(vm, dev, [x])) for k, vm in vms.items()}
        checks = []
        for k in vms:
            if k.startswith("int8"):
                a, b = outs[k].ravel(), ref.ravel()
                cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
                checks.append(f"{float(np.abs(outs[k] - ref).max()):.3g} / {cos:.5f} / "
                              f"{'same' if outs[k].argmax() == ref.argmax() else 'DIFFERENT'}")
        times = {k: [] for k in vms}
        for _ in range(args.rounds):
            for k, vm in vms.items():
                times[k].append(bench.time_vm(vm, dev, [x], number=10, repeat=args.repeat, min_repeat_ms=0).mean_ms)
        ms = {k: statistics.median(v) for k, v in times.items()}
        tuned = [f"{ms['int8 tuned']:.3f}", f"{ms['fp32'] / ms['int8 tuned']:.2f}x"] if args.tuned else []
        rows.append([name, f"{ms['fp32']:.3f}", f"{ms['int8 TVM']:.3f}", f"{ms['int8 dp4a']:.3f}",
                     f"{ms['int8 TVM'] / ms['int8 dp4a']:.2f}x", f"{ms['fp32'] / ms['int8 dp4a']:.2f}x", *tuned,
                     f"{counts['int8 dp4a']}", "; ".join(checks)])
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    if args.compile_only:
        head = ["model", *(f"{k}: int8 convs on dp4a" for k in exes)]
        intro = f"Built {datetime.date.today()} for {target.attrs.get('arch', '?')} (compile only), TVM {tvm.__version__}"
    else:
        head = ["model", "fp32 ms", "int8 TVM ms", "int8 dp4a ms", "dp4a vs TVM", "int8 dp4a vs fp32",
                *(["int8 tuned ms", "tuned int8 vs fp32"] if args.tuned else []), "int8 convs on dp4a",
                "vs CPU int8: max diff / cosine / top-1"]
        intro = (f"Measured {datetime.date.today()} on {gpu_name()} ({target.attrs.get('arch', '?')}), TVM "
                 f"{tvm.__version__}, batch 1, median of {args.rounds} alternating rounds")
    lines = [intro, "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    print("\n" + "\n".join(lines))
    if args.out:
        with open(os.path.join(args.out, "table.md"), "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

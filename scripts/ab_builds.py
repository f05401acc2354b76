#!/usr/bin/env python
"""Two checkouts of the harness side by side: export each one's builds, then time them in one run.

A change to a schedule or a pass is measured by building the same models with the code before
and after it (each checkout exports its libraries, tagged), then loading every library of a model
into one process and timing them in alternating rounds (the ratios are what to read on a shared
machine); the outputs of the builds are compared (`equal` says which are bit-identical).

    git checkout OLD && .venv/bin/python scripts/ab_builds.py export --tag old --models resnet50_v1
    git checkout NEW && .venv/bin/python scripts/ab_builds.py export --tag new --models resnet50_v1 --fp32
    .venv/bin/python scripts/ab_builds.py time --models resnet50_v1 [--rounds 5]

A config key's two values are compared the same way from one checkout: `export --tag nchw --set
build.schedules.cpu_int8_blocked=false`, then `export --tag blocked`, then `time`. `--mcpu znver3`
builds another CPU's code (AVX2 here), which a host whose CPU has its features runs and times: a
stand-in for that CPU's code paths, not for its microarchitecture.

Each model's int8 build uses its int8 config (configs/<model>_int8.yaml: quantize section,
calibration) for this CPU; `--fp32` adds the fp32 build. Libraries go to `--dir`
(default results/ab/<model>_b<batch>_<variant>_<tag>.so); `--batch 16` builds and times batch 16.
"""
import argparse
import dataclasses
import datetime
import glob
import os
import sys

import numpy as np
import tvm
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import bench, build  # noqa: E402
from harness.config import load_config  # noqa: E402
from harness.frontends import load_model, model_input_shape  # noqa: E402
from harness.models import input_data  # noqa: E402
from harness.pipeline import calibration_table, int8_module  # noqa: E402
from harness.record import cpu_name  # noqa: E402
from harness.report import markdown_table  # noqa: E402
from harness.targets import llvm_target  # noqa: E402


def _config(name: str, batch: int):
    path = f"configs/{name}_int8.yaml"
    if not os.path.exists(path):
        sys.exit(f"error: --models {name}: no {path}")
    cfg = load_config(path)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, batch=batch))


def _with_setting(cfg, setting: str):
    """`cfg` with one key changed: "build.schedules.cpu_int8_blocked=false" (the value read as YAML)."""
    key, sep, text = setting.partition("=")
    if not sep:
        sys.exit(f"error: --set {setting}: expected KEY=VALUE, e.g. build.schedules.cpu_int8_blocked=false")

    def replace(obj, names):
        if not dataclasses.is_dataclass(obj) or not any(f.name == names[0] for f in dataclasses.fields(obj)):
            sys.exit(f"error: --set {setting}: no key {names[0]!r} there")
        value = yaml.safe_load(text) if len(names) == 1 else replace(getattr(obj, names[0]), names[1:])
        return dataclasses.replace(obj, **{names[0]: value})

    return replace(cfg, key.split("."))


def export(args) -> None:
    target = tvm.target.Target(llvm_target(args.mcpu))
    os.makedirs(args.dir, exist_ok=True)
    for name in args.models.split(","):
        cfg = _config(name, args.batch)
        for setting in args.set:
            cfg = _with_setting(cfg, setting)
        model = load_model(cfg.model)
        table = calibration_table(cfg, model, status=lambda m: None)
        mods = {"int8": int8_module(cfg, model, table, target=target)}
        if args.fp32:
            mods["fp32"] = build.bind_params(model.mod, model.params)
        for variant, mod in mods.items():
            ex = build.compile_module(mod, target, fallback=False, schedules=cfg.schedule_options(target)).executable
            path = os.path.join(args.dir, f"{name}_b{args.batch}_{variant}_{args.tag}.so")
            ex.export_library(path)
            print(f"exported {path}", file=sys.stderr, flush=True)


def time_all(args) -> None:
    dev, rows = tvm.cpu(), []
    for name in args.models.split(","):
        prefix = f"{name}_b{args.batch}_"
        paths = sorted(glob.glob(os.path.join(args.dir, f"{prefix}*.so")))
        if not paths:
            sys.exit(f"error: no batch-{args.batch} libraries of {name} in {args.dir} (run `export` first)")
        vms = {os.path.basename(p)[len(prefix):-3]: bench.make_vm(tvm.runtime.load_module(p), dev) for p in paths}
        x = input_data(model_input_shape(_config(name, args.batch).model), 0)
        outs = {k: np.asarray(bench.run_once(vm, dev, [x])) for k, vm in vms.items()}
        ms = bench.alternate_vms(vms, dev, [x], rounds=args.rounds, repeat=args.repeat)
        first = next(iter(vms))
        for k in vms:
            equal = [j for j in vms if j != k and np.array_equal(outs[k], outs[j])]
            rows.append([name, k, f"{ms[k]:.2f}", f"{ms[first] / ms[k]:.2f}x", ", ".join(equal) or "-"])
    print(f"\nMeasured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {cpu_name()} "
          f"({os.cpu_count()} cores), TVM {tvm.__version__}, batch {args.batch}, median of {args.rounds} alternating rounds\n")
    print(markdown_table(["model", "build", "ms", "speed vs the first", "same output as"], rows))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    exp = sub.add_parser("export", help="build the models with this checkout and export the libraries")
    exp.add_argument("--tag", required=True, help="names this checkout's libraries (e.g. old, new, a commit)")
    exp.add_argument("--fp32", action="store_true", help="the fp32 build too")
    exp.add_argument("--mcpu", default=None,
                     help="build for this LLVM CPU instead of this machine's (e.g. znver3: AVX2 code timed on an "
                          "AVX-512 host; the quantizer's autos follow it); it must run here")
    exp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="a config key for these builds, e.g. build.schedules.cpu_int8_blocked=false (repeatable)")
    tim = sub.add_parser("time", help="time every exported library of each model, alternating")
    tim.add_argument("--rounds", type=int, default=5)
    tim.add_argument("--repeat", type=int, default=5)
    for p in (exp, tim):
        p.add_argument("--models", default="resnet50_v1")
        p.add_argument("--batch", type=int, default=1)
        p.add_argument("--dir", default=os.path.join("results", "ab"))
    args = ap.parse_args()
    (export if args.cmd == "export" else time_all)(args)


if __name__ == "__main__":
    main()

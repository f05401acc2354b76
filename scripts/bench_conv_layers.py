#!/usr/bin/env python
"""Tuned int8 vs tuned fp32 conv2d latency and GOPS, side by side in one run, with the fraction
of this machine's int8 and fp32 peak.

For each conv2d shape (default: the distinct ones of ResNet-50 v1 at batch 1, or `--shapes`),
both dtypes are tuned with `harness tune-conv`'s path (the conv's kernel as a model build compiles
it: quantized and fused by the real pipeline) to `--trials` search trials into
tuning_logs/<target>/conv/ (records already there count, so with the shipped logs nothing is
re-tuned); then both convs are built as a model build builds them (the conv databases applied by
the conv's anchor block) and their conv kernels re-timed back to back with time_evaluator (the
table's numbers). Prints a Markdown table.

Peak (x86, stated assumptions, `--clock-ghz` overrides the clock read from /proc/cpuinfo), with
W the target's vector width in bits (512 with AVX-512, 256 with AVX2):
  fp32: cores x clock x (2 FMA pipes x W/32 fp32 lanes x 2 flops)    AVX-512: 64 flop/cycle/core
  int8: cores x clock x (I pipes x W/8 u8*s8 products x 2 ops) / k   AVX-512 VNNI: 256 op/cycle/core
  int8 on AMX (a CPU with amx-int8, unless --no-amx): cores x clock x 1024 MACs x 2 ops
k = 1 with VNNI (VPDPBUSD multiplies and accumulates in one instruction), k = 2 without it (VPMADDUBSW
then VPMADDWD: two instructions for the same products; AVX2: 64 op/cycle/core). Zen 5 cores with the
full 512-bit datapath issue two 512-bit FMAs and two VNNI dot products per cycle; other CPUs differ
(pass --fma-pipes, and --int8-pipes for I where it differs: Zen 1 splits a 256-bit instruction into
two 128-bit halves, so --fma-pipes 1 --int8-pipes 0.5, its multiply-adds of 8-bit values issuing on
one pipe). Without VNNI the harness's int8 kernels use the exact VPMADDWD on operands
widened to int16 (VPMADDUBSW saturates), whose own ceiling is printed beside the peak:
  exact: cores x clock x (P pipes x W/16 products x 2 ops)        P = --pmaddwd-pipes (Zen 2: 1)
"""
import argparse
import datetime
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RESNET50_SHAPES = [  # N,C,H,W,K,R,S,stride,pad of resnet50_v1's distinct convs (224x224, batch 1)
    "1,3,224,224,64,7,7,2,3", "1,64,56,56,64,1,1,1,0", "1,64,56,56,64,3,3,1,1", "1,64,56,56,256,1,1,1,0",
    "1,256,56,56,64,1,1,1,0", "1,256,56,56,128,1,1,2,0", "1,128,28,28,128,3,3,1,1", "1,128,28,28,512,1,1,1,0",
    "1,256,56,56,512,1,1,2,0", "1,512,28,28,128,1,1,1,0", "1,512,28,28,256,1,1,2,0", "1,256,14,14,256,3,3,1,1",
    "1,256,14,14,1024,1,1,1,0", "1,512,28,28,1024,1,1,2,0", "1,1024,14,14,256,1,1,1,0",
    "1,1024,14,14,512,1,1,2,0", "1,512,7,7,512,3,3,1,1", "1,512,7,7,2048,1,1,1,0", "1,1024,14,14,2048,1,1,2,0",
    "1,2048,7,7,512,1,1,1,0",
]


def clock_ghz() -> float:
    try:
        with open("/proc/cpuinfo") as f:
            mhz = [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]
        return max(mhz) / 1e3
    except (OSError, ValueError):
        return float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", help="semicolon-separated conv shapes (default: resnet50_v1's)")
    ap.add_argument("--trials", type=int, default=64, help="search trials per shape and dtype")
    ap.add_argument("--logs", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                 "tuning_logs"))
    ap.add_argument("--clock-ghz", type=float, default=None)
    ap.add_argument("--fma-pipes", type=float, default=2, help="W-bit FMAs per cycle and core")
    ap.add_argument("--int8-pipes", type=float, default=None,
                    help="W-bit 8-bit multiply-adds per cycle and core (default: --fma-pipes; Zen 1: 0.5)")
    ap.add_argument("--pmaddwd-pipes", type=float, default=2, help="W-bit VPMADDWD per cycle and core (Zen 2: 1, Zen 1: 0.5)")
    ap.add_argument("--no-amx", action="store_true",
                    help="int8 on the dot product even where the CPU has AMX (build.schedules.cpu_int8_amx off)")
    ap.add_argument("--untuned", action="store_true",
                    help="no search: each conv kernel on its default schedule (what an untuned build runs)")
    ap.add_argument("--no-winograd", action="store_true",
                    help="3x3 stride-1 int8 convs on the dot product even where the CPU has no VNNI "
                         "(build.schedules.cpu_int8_winograd off); with it on (the default), those convs run "
                         "on the integer Winograd kernel, untuned (it has no search space), and their GOPS "
                         "count the direct conv's operations")
    ap.add_argument("--winograd-tile", type=int, choices=(2, 4), default=4,
                    help="outputs per tile side of the Winograd kernel (build.schedules.cpu_int8_winograd_tile)")
    ap.add_argument("--weight-bits", type=int, choices=(7, 8), default=8,
                    help="the int8 weights' bits (7: quantize.reduce_range, vpmaddubsw on CPUs without VNNI)")
    args = ap.parse_args()

    import tvm

    from harness import bench
    from harness.build import compile_module
    from harness.build.pipeline import fuse_and_schedule
    from harness.config import TargetConfig
    from harness.quantize import QConfig
    from harness.record import cpu_name
    from harness.schedules import ScheduleOptions, schedule_family
    from harness.schedules.amx import PEAK_MACS_PER_CYCLE, applies_to as amx_applies
    from harness.targets import resolve_target, target_has_vnni, vector_bits
    from harness.tune import ConvShape, conv_model, conv_work_dir, load_records, tune_conv
    from harness.tune.conv import NoSearchSpace

    def retime(shape, dtype, work_dir):
        """The conv kernel a model build compiles with the database (none: `--untuned`), timed now:
        ms (median of 15 x min 50 ms), on seeded inputs of its (packed-weight) parameter shapes, and
        the kernel's schedule (database or default rule)."""
        mod = conv_model(shape, dtype, qconfig=qconfig)
        records = None if work_dir is None else load_records([("conv", work_dir)], target)
        scheduled_by = {}
        scheduled = fuse_and_schedule(mod, target, schedule_family(target, options), records, scheduled_by)
        [kernel] = [k for k, v in scheduled_by.items() if "conv2d" in k and
                    v.startswith("default:" if work_dir is None else "database:")]
        built = compile_module(mod, target, records=records, schedules=options)
        names = [gv.name_hint for gv in scheduled.functions.keys()]
        name = kernel + "_prepacked" if kernel + "_prepacked" in names else kernel  # (weights packed at build)
        dev = tvm.cpu()
        rng = np.random.RandomState(0)
        args = []
        for param in scheduled[name].params:  # data, (packed) weights, epilogue constants, output
            shp, dt = [int(d) for d in param.shape], str(param.dtype)
            arr = rng.normal(size=shp).astype(dt) if dt.startswith("float") else \
                rng.randint(0 if dt == "uint8" else -8, 8, shp).astype(dt)
            args.append(tvm.runtime.tensor(arr, dev))
        llvm = next(m for m in [built.executable.mod, *built.executable.mod.imports] if m.kind == "llvm")
        bench.use_cpu_threads(cores)  # the kernel on every core, as a model run has it (TVM's default may use fewer)
        timer = llvm.time_evaluator(name, dev, number=1, repeat=15, min_repeat_ms=50)
        return float(np.median(timer(*args).results)) * 1e3, scheduled_by[kernel]

    target = resolve_target(TargetConfig(kind="llvm"))
    options = ScheduleOptions(cpu_int8_amx=not args.no_amx, cpu_int8_winograd=not args.no_winograd,
                              cpu_int8_winograd_tile=args.winograd_tile,
                              int8_weight_bits=args.weight_bits)
    qconfig = QConfig(reduce_range=args.weight_bits == 7)
    amx = amx_applies(target) and not args.no_amx
    cores = int(target.attrs.get("num-cores", os.cpu_count() or 1))
    ghz = args.clock_ghz or clock_ghz()
    bits = vector_bits(target)
    peak_fp32 = cores * ghz * args.fma_pipes * (bits // 32) * 2  # GFLOPS
    int8_pipes = args.fma_pipes if args.int8_pipes is None else args.int8_pipes
    peak_int8 = cores * ghz * int8_pipes * (bits // 8) * 2 / (1 if target_has_vnni(target) else 2)  # GOPS
    exact = "" if target_has_vnni(target) else \
        f" (exact vpmaddwd: {cores * ghz * args.pmaddwd_pipes * (bits // 16) * 2:.0f} GOPS)"
    if amx:  # AMX: one 16x64x16 tdpbusd per 16 cycles, 1024 int8 MACs per cycle and core
        peak_int8 = cores * ghz * PEAK_MACS_PER_CYCLE * 2
        exact = f" (AMX tiles: {PEAK_MACS_PER_CYCLE} int8 MACs/cycle/core; % peak of int8 is of AMX's)"
    shapes = args.shapes.split(";") if args.shapes else RESNET50_SHAPES
    rows = []
    for text in shapes:
        shape = ConvShape.parse(text)
        res = {}
        for dtype in ("int8", "float32"):
            if not args.untuned:
                try:
                    res[dtype] = tune_conv(shape, dtype=dtype, target=target, trials=args.trials, qconfig=qconfig,
                                           work_dir=conv_work_dir(args.logs, target, shape, dtype), options=options)
                except NoSearchSpace:  # integer Winograd: timed on its default schedule
                    res[dtype] = None
        ms_q, how_q = retime(shape, "int8", res["int8"].work_dir if res.get("int8") else None)
        ms_f, _ = retime(shape, "float32", res["float32"].work_dir if res else None)
        how_q = (res["int8"].intrinsic or "none") if res.get("int8") else how_q
        gops_q, gops_f = shape.flops / ms_q / 1e6, shape.flops / ms_f / 1e6
        rows.append([text, f"{ms_f:.3f}", f"{ms_q:.3f}", f"{ms_f / ms_q:.2f}x", f"{gops_f:.0f}", f"{gops_q:.0f}",
                     f"{100 * gops_f / peak_fp32:.0f}%", f"{100 * gops_q / peak_int8:.0f}%", how_q])
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    print(f"\n{datetime.date.today()}, {cpu_name()} ({target.attrs['mcpu']}, {cores} cores, {ghz:.2f} GHz), "
          f"TVM {tvm.__version__}, {bits}-bit vectors{', VNNI' if target_has_vnni(target) else ', no VNNI'}, "
          f"{'untuned (default schedules)' if args.untuned else f'{args.trials} trials per kernel'}, "
          f"{args.weight_bits}-bit int8 weights; peak fp32 {peak_fp32:.0f} GFLOPS, "
          f"int8 {peak_int8:.0f} GOPS{exact}"
          f"{'' if args.no_winograd else f'; 3x3 stride-1 int8 convs on integer Winograd F({args.winograd_tile}x{args.winograd_tile}, 3x3) where the CPU has no VNNI (GOPS: the direct conv operations over the time)'}\n")
    print("| conv N,C,H,W,K,R,S,stride,pad | fp32 ms | int8 ms | int8 speed-up | fp32 GFLOPS | int8 GOPS "
          "| fp32 % peak | int8 % peak | int8 intrinsic (tuned) / schedule (untuned) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    ratios = np.array([float(r[3][:-1]) for r in rows])
    print(f"\nint8/fp32 speed-up: geometric mean {np.exp(np.log(ratios).mean()):.2f}x over {len(rows)} shapes")


if __name__ == "__main__":
    main()

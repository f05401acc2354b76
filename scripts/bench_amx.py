#!/usr/bin/env python
"""AMX tile kernels against the VNNI dot-product kernels, side by side in one run (int8, untuned).

Per conv layer (default: resnet50_v1's distinct convs at batch 1 that AMX runs: 8-bit data, 16k
output and 8k input channels; `--shapes` for others): the conv with the harness's requantize
epilogue (int32 sums -> float scale, bias, ReLU, round, clip -> uint8) is built twice for this
CPU, once with the AMX schedule (harness.schedules.amx) and once without (the VNNI schedule,
harness.schedules.cpu.schedule_int8_dot_conv); both must give the same output; they are timed
in alternating rounds (median). Prints ms, GMAC/s and % of the AMX peak:

    peak = cores x clock x 1024 int8 MACs per cycle (one 16x64x16 tdpbusd per 16 cycles and core)

With `--models resnet50_v1[,resnet18_v1]`: the whole quantized model (its config under configs/),
int8 on AMX against int8 on VNNI, same calibration, alternating rounds, outputs compared; with
`--logs` also int8 on AMX with the tuning records `harness run` applies (the committed
`tuning_logs/<target>/conv` databases: searched AMX tile plans), its output compared too.

With `--emulate` (any x86 CPU): the AMX builds' tile instructions run in the harness's C emulator
(harness.schedules.amx_emulate) and only the outputs are compared, nothing is timed; `--mcpu`
builds for another CPU model with AMX added (e.g. `rocketlake`, the key of the committed AMX logs;
its code must run on this CPU). With `--without-tiles` (any x86 CPU): the AMX builds have no tile
instructions at all (harness.schedules.amx_emulate.without_tiles), and what is left of their
kernels (data packing, epilogue, loops: the part the tiles cannot remove) is timed beside the VNNI
build; outputs are not compared (the sums are never computed).

    .venv/bin/python scripts/bench_amx.py [--shapes N,C,H,W,K,R,S,stride,pad;...] [--models resnet50_v1] [--logs]
                                          [--emulate [--mcpu rocketlake] | --without-tiles]
"""
import argparse
import contextlib
import datetime
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_conv_layers import RESNET50_SHAPES, clock_ghz  # noqa: E402  pylint: disable=wrong-import-position

CONFIGS = {"resnet18_v1": "configs/resnet18_v1_int8.yaml", "resnet50_v1": "configs/resnet50_v1_int8.yaml"}


def conv_module(shape, seed=0):
    """Relax main(x uint8) = requantize(conv2d(x, W int8) -> int32) -> uint8, like realize.py's."""
    import tvm  # noqa: F401
    from tvm import relax

    n, c, h, w, k, r, s, stride, pad = shape
    rng = np.random.RandomState(seed)
    weight = rng.randint(-127, 128, size=(k, c, r, s)).astype("int8")
    scale = rng.uniform(1e-4, 1e-3, size=(1, k, 1, 1)).astype("float32")
    bias = rng.normal(size=(1, k, 1, 1)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((n, c, h, w), "uint8"))
    op = relax.op
    with bb.function("main", [x]):
        with bb.dataflow():
            acc = bb.emit(op.nn.conv2d(x, relax.const(weight), strides=stride, padding=pad, out_dtype="int32"))
            y = bb.emit(op.multiply(bb.emit(op.astype(acc, "float32")), relax.const(scale)))
            y = bb.emit(op.nn.relu(bb.emit(op.add(y, relax.const(bias)))))
            y = bb.emit(op.floor(bb.emit(op.add(bb.emit(op.multiply(y, relax.const(8.0, "float32"))),
                                                relax.const(0.5, "float32")))))
            out = bb.emit_output(op.astype(bb.emit(op.clip(y, 0, 255)), "uint8"))
        bb.emit_func_output(out)
    return bb.get()


def alternate(runs, rounds, repeat):
    """{label: median ms} of `runs` ({label: () -> seconds per call}) timed in alternating rounds."""
    times = {k: [] for k in runs}
    for _ in range(rounds):
        for k, fn in runs.items():
            times[k].append(fn() * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main():  # pylint: disable=too-many-locals
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", help="semicolon-separated conv shapes N,C,H,W,K,R,S,stride,pad (default: resnet50_v1's)")
    ap.add_argument("--models", default="", help="also whole models: resnet50_v1, resnet18_v1")
    ap.add_argument("--logs", action="store_true", help="models: also AMX with the tuning records harness run applies")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=5, help="time_evaluator repeats per round")
    ap.add_argument("--clock-ghz", type=float, default=None)
    ap.add_argument("--emulate", action="store_true",
                    help="AMX tile instructions in the C emulator: outputs compared, nothing timed (any x86 CPU)")
    ap.add_argument("--mcpu", help="with --emulate: the LLVM CPU model to build for (AMX added; default: this CPU's)")
    ap.add_argument("--without-tiles", action="store_true",
                    help="time the AMX kernels without their tile instructions (what is left of them) beside VNNI")
    args = ap.parse_args()
    if args.mcpu and not args.emulate:
        ap.error("--mcpu needs --emulate (an AMX host builds for itself)")
    if args.emulate and args.without_tiles:
        ap.error("--emulate and --without-tiles exclude each other")
    if args.without_tiles and args.models:
        ap.error("--without-tiles times conv layers (--shapes), not models")

    import tvm
    from tvm import relax

    from harness import bench, build
    from harness.record import cpu_name
    from harness.report import markdown_table
    from harness.targets import llvm_target
    from harness.schedules import ScheduleOptions, amx, amx_emulate

    off_host = args.emulate or args.without_tiles
    target = tvm.target.Target(amx_emulate.emulation_target(mcpu=args.mcpu) if off_host else llvm_target())
    if not amx.target_has_amx(target):
        sys.exit(f"error: this CPU's target {target} has no amx-int8; valid: a Sapphire / Emerald / Granite Rapids host")
    cores = int(target.attrs.get("num-cores", os.cpu_count() or 1))
    ghz = args.clock_ghz or clock_ghz()
    peak = cores * ghz * 1e9 * amx.PEAK_MACS_PER_CYCLE
    dev = tvm.cpu()

    emulator = amx_emulate.library() if args.emulate else None

    def tiles():
        """Where AMX builds are made: in the emulator's mode with --emulate, without tiles with --without-tiles."""
        if args.emulate:
            return amx_emulate.emulated()
        return amx_emulate.without_tiles() if args.without_tiles else contextlib.nullcontext()

    def compile_both(mod):
        """Each variant with its own schedule switches (build.schedules.cpu_int8_amx)."""
        with tiles():
            on = build.compile_module(mod, target, fallback=False)
        # (Winograd off: it serves only CPUs without VNNI, e.g. an AVX2 host emulating, and rounds its sums another way)
        off = build.compile_module(mod, target, schedules=ScheduleOptions(cpu_int8_amx=False, cpu_int8_winograd=False),
                                   fallback=False)
        return on, off

    def timed(runs):
        """{label: median ms} (None: emulated, not timed)."""
        return {k: None for k in runs} if args.emulate else alternate(runs, args.rounds, args.repeat)

    def checked():
        """With --emulate: no tile instruction the hardware would have faulted on ran (checked after
        each run: the next emulated build resets the count)."""
        if emulator is not None:
            emulator.check()

    def cell(value, fmt):
        return "emulated" if value is None else fmt.format(value)

    shapes = [tuple(int(v) for v in s.split(",")) for s in (args.shapes.split(";") if args.shapes else RESNET50_SHAPES)]
    rows = []
    for shape in shapes:
        n, c, h, w, k, r, s, stride, pad = shape
        if c % 8 or k % 16:
            continue  # the stem conv (3 channels) has no AMX kernel (and is kept fp32 by the quantizer)
        on, off = compile_both(conv_module(shape))
        if not on.amx_kernels:
            print(f"{shape}: no AMX kernel", file=sys.stderr)
            continue
        x = tvm.runtime.tensor(np.random.RandomState(1).randint(0, 256, size=(n, c, h, w)).astype("uint8"), dev)
        vms = {"amx": relax.VirtualMachine(on.executable, dev), "vnni": relax.VirtualMachine(off.executable, dev)}
        outs = {key: vm["main"](x).numpy() for key, vm in vms.items()}
        checked()
        same = None if args.without_tiles else bool(np.array_equal(outs["amx"], outs["vnni"]))
        runs = {key: (lambda vm=vm: vm.time_evaluator("main", dev, number=10, repeat=args.repeat)(x).median)
                for key, vm in vms.items()}
        ms = timed(runs)
        oh, ow = (h + 2 * pad - r) // stride + 1, (w + 2 * pad - s) // stride + 1
        macs = n * k * oh * ow * c * r * s
        amx_ms, vnni_ms = ms["amx"], ms["vnni"]
        row = [",".join(map(str, shape)), cell(amx_ms, "{:.3f}"), cell(vnni_ms, "{:.3f}"),
               cell(amx_ms and vnni_ms / amx_ms, "{:.2f}x"), cell(amx_ms and macs / amx_ms / 1e6, "{:.0f}"),
               cell(amx_ms and 100 * macs / (amx_ms * 1e-3) / peak, "{:.1f}%"),
               "not compared" if same is None else "yes" if same else "NO"]
        rows.append(row)
        print(" | ".join(row), file=sys.stderr, flush=True)

    model_rows = []
    for name in [m for m in args.models.split(",") if m]:
        from harness.config import load_config
        from harness.frontends import load_model
        from harness.models import input_data
        from harness.pipeline import calibration_table, int8_module, run_key, tuning_records

        cfg = load_config(CONFIGS[name])
        model = load_model(cfg.model)
        x = input_data(model.input_shape, 0)
        qmod = int8_module(cfg, model, calibration_table(cfg, model, status=lambda m: None))
        on, off = compile_both(qmod)
        vms = {"amx": bench.make_vm(on.executable, dev), "vnni": bench.make_vm(off.executable, dev)}
        if args.logs:
            records = tuning_records(cfg, target, run_key(name, model.input_shape[0], "int8"))
            with tiles():
                tuned = build.compile_module(qmod, target, records=records, fallback=False)
            print(f"{name}: {len(tuned.amx_kernels)} AMX kernels with the logs, {len(tuned.report.from_database)} "
                  "kernels from them", file=sys.stderr)
            vms["amx+logs"] = bench.make_vm(tuned.executable, dev)
        outs = {key: np.asarray(bench.run_once(vm, dev, [x])) for key, vm in vms.items()}
        checked()
        same = all(np.array_equal(outs["amx"], out) for out in outs.values())
        runs = {key: (lambda vm=vm: bench.time_vm(vm, dev, [x], number=1, repeat=args.repeat,
                                                    min_repeat_ms=0).median_ms / 1e3)
                for key, vm in vms.items()}
        ms = timed(runs)
        amx_ms, vnni_ms, logs_ms = ms["amx"], ms["vnni"], ms.get("amx+logs")
        tuned_cols = [cell(logs_ms, "{:.2f}"), cell(logs_ms and amx_ms / logs_ms, "{:.2f}x")] if args.logs else []
        model_rows.append([name, str(len(on.amx_kernels)), cell(amx_ms, "{:.2f}"), cell(vnni_ms, "{:.2f}"),
                           cell(amx_ms and vnni_ms / amx_ms, "{:.2f}x"), *tuned_cols, "yes" if same else "NO"])
        print(" | ".join(model_rows[-1]), file=sys.stderr, flush=True)

    if emulator is not None:
        print(f"\nEmulated {datetime.date.today()} on {cpu_name()}: AMX builds for {target.attrs.get('mcpu')} with their "
              f"tile instructions in the C emulator (no fault), outputs "
              f"compared with the VNNI builds; nothing timed\n")
        head = ["conv N,C,H,W,K,R,S,stride,pad", "same output"]
        if rows:
            print(markdown_table(head, [[row[0], row[-1]] for row in rows]))
        if model_rows:
            print("\n" + markdown_table(["model (int8)", "AMX kernels", "same output"],
                                         [[row[0], row[1], row[-1]] for row in model_rows]))
        sys.exit(0 if all(row[-1] == "yes" for row in rows + model_rows) else 1)
    if args.without_tiles:
        print(f"\nMeasured {datetime.date.today()} on {cpu_name()} ({cores} cores), TVM {tvm.__version__}: AMX kernels "
              f"built for {target.attrs.get('mcpu')} without their tile instructions (what is left: data packing, "
              f"epilogue, loops) beside the VNNI kernels, batch 1, median of {args.rounds} alternating rounds\n")
        head = ["conv N,C,H,W,K,R,S,stride,pad", "AMX without tiles ms", "VNNI ms", "without tiles / VNNI"]
        print(markdown_table(head, [[row[0], row[1], row[2], f"{float(row[1]) / float(row[2]):.2f}"] for row in rows]))
        return
    print(f"\nMeasured {datetime.date.today()} on {cpu_name()} ({cores} cores, {ghz:.2f} GHz assumed), TVM {tvm.__version__}, "
          f"default schedules{' (and with the tuning logs: AMX + logs)' if args.logs else ''}, batch 1, median of {args.rounds} alternating rounds; AMX peak "
          f"{peak / 1e12:.2f} TMAC/s ({amx.PEAK_MACS_PER_CYCLE} int8 MACs/cycle/core)\n")
    if rows:
        head = ["conv N,C,H,W,K,R,S,stride,pad", "AMX ms", "VNNI ms", "AMX vs VNNI", "AMX GMAC/s", "AMX % of peak",
                "same output"]
        print(markdown_table(head, rows))
    if model_rows:
        head = ["model (int8)", "AMX kernels", "AMX ms", "VNNI ms", "AMX vs VNNI",
                *(["AMX + logs ms", "logs vs default"] if args.logs else []), "same output"]
        print("\n" + markdown_table(head, model_rows))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""How many multiply(-add)s this CPU core issues per cycle: the pipe counts that
`scripts/bench_conv_layers.py` divides by (`--fma-pipes`, `--int8-pipes`, `--pmaddwd-pipes`), measured.

Compiles a small C program with the system's C compiler (`cc`, or `--cc`) and runs, on one core,
loops of 8 independent register-to-register instructions (no loads, no dependencies between them:
the loop is bound by how often the core issues that instruction) beside a loop of dependent integer
adds (one per cycle on every x86 core: the cycle it measures is the core's clock at that moment,
boost included). Each instruction's loop runs right after its own clock loop, and the rate is their
ratio, so a clock that moves between loops (turbo, a busy neighbour) moves both. Prints a Markdown
table: instruction, width, cycles per instruction, instructions per cycle (the "pipes" of the
benchmark's peak formulas), 8-bit (or fp32) multiply-adds per cycle; and the clock seen.

    .venv/bin/python scripts/issue_rates.py [--repeat 3]

Instructions the CPU lacks (AVX-512, VNNI) are reported as `n/a`; run it on an idle core.
Measured on a 2-core AMD EPYC Zen 1 guest (2026-12-05): `vfmadd231ps` ymm 1 per cycle, `vpmaddubsw`
and `vpmaddwd` ymm each one per 2 cycles and sharing one pipe (alternated: still one per 2 cycles),
at a clock of 1.9-2.4 GHz where /proc/cpuinfo says 2.0.
"""
import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.record import cpu_name  # noqa: E402
from harness.report import markdown_table  # noqa: E402

# (name, register width, ISA feature for __builtin_cpu_supports, multiply-adds per instruction (a pair:
# per instruction of the two), the instruction with {d} its destination; two: alternated)
CASES = [
    ("vfmadd231ps", 256, "fma", 8, ["vfmadd231ps %%ymm15, %%ymm14, {d}"]),
    ("vpmaddubsw", 256, "avx2", 32, ["vpmaddubsw %%ymm15, %%ymm14, {d}"]),
    ("vpmaddwd", 256, "avx2", 16, ["vpmaddwd %%ymm15, %%ymm14, {d}"]),
    ("vpmaddubsw then vpmaddwd (alternated: 32 products per pair)", 256, "avx2", 16,
     ["vpmaddubsw %%ymm15, %%ymm14, {d}", "vpmaddwd %%ymm13, %%ymm12, {d}"]),
    ("vfmadd231ps", 512, "avx512f", 16, ["vfmadd231ps %%zmm15, %%zmm14, {dz}"]),
    ("vpmaddubsw", 512, "avx512bw", 64, ["vpmaddubsw %%zmm15, %%zmm14, {dz}"]),
    ("vpmaddwd", 512, "avx512bw", 32, ["vpmaddwd %%zmm15, %%zmm14, {dz}"]),
    ("vpdpbusd", 512, "avx512vnni", 64, ["vpdpbusd %%zmm15, %%zmm14, {dz}"]),
]
FLAGS = ["-O1", "-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512vnni"]


def c_source(iterations: int) -> str:
    """One function per case: 8 instructions into 8 different registers per loop iteration."""
    parts = ["#include <stdio.h>", "#include <time.h>",
             "static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);"
             " return t.tv_sec + t.tv_nsec * 1e-9; }",
             f"#define N {iterations}L",
             "static double adds(void) { double t = now(); for (long i = 0; i < N; i++) __asm__ volatile("
             + " ".join(['"add $1, %%rax\\n"'] * 8) + ' ::: "rax"); return (now() - t) / N / 8; }']
    for i, (_, bits, feature, _, instrs) in enumerate(CASES):
        body = []
        for r in range(8):
            ins = instrs[r % len(instrs)]
            body.append('"' + ins.format(d=f"%%ymm{r}", dz=f"%%zmm{r}") + '\\n"')
        clobber = ", ".join(f'"xmm{r}"' for r in range(8))
        parts.append(
            f"static void case{i}(void) {{\n"
            f'  if (!__builtin_cpu_supports("{feature}")) {{ printf("{i} n/a\\n"); return; }}\n'
            f"  double cycle = adds(); double t = now();\n"
            f"  for (long i = 0; i < N; i++) __asm__ volatile({' '.join(body)} ::: {clobber});\n"
            f"  t = (now() - t) / N / 8;\n"
            f'  printf("{i} %.6e %.6e\\n", t, cycle);\n}}')
    parts.append("int main(void) {\n" + "".join(f"  case{i}();\n" for i in range(len(CASES))) + "  return 0;\n}")
    return "\n".join(parts) + "\n"


def measure(cc: str, iterations: int, repeat: int) -> list:
    """One {case index: (seconds per instruction, seconds per cycle) or None} per run of the
    program, compiled once and run `repeat` times."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = os.path.join(tmp, "rates.c"), os.path.join(tmp, "rates")
        with open(src, "w") as f:
            f.write(c_source(iterations))
        subprocess.run([cc, *FLAGS, src, "-o", exe], check=True)
        command = ["taskset", "-c", "0", exe] if shutil.which("taskset") else [exe]
        for _ in range(repeat):
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            found = {}
            for line in out.splitlines():
                idx, *vals = line.split()
                found[int(idx)] = None if vals == ["n/a"] else (float(vals[0]), float(vals[1]))
            runs.append(found)
    return runs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs of the whole program; medians are printed")
    ap.add_argument("--iterations", type=int, default=50_000_000, help="loop iterations per measurement")
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"))
    args = ap.parse_args()
    if not shutil.which(args.cc):
        sys.exit(f"error: no C compiler {args.cc!r} on PATH (pass --cc)")
    runs = measure(args.cc, args.iterations, args.repeat)
    rows, clocks = [], []
    for i, (name, bits, _, macs, _) in enumerate(CASES):
        if any(r[i] is None for r in runs):
            rows.append([name, bits, "n/a", "n/a", "n/a"])
            continue
        cycles = statistics.median([t / c for t, c in (r[i] for r in runs)])
        clocks += [1e-9 / c for _, c in (r[i] for r in runs)]
        rows.append([name, bits, f"{cycles:.2f}", f"{1 / cycles:.2f}", f"{macs / cycles:.1f}"])
    print(f"\n{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_name()}, one core, "
          f"medians of {args.repeat} runs; clock seen by the dependent-add loops "
          f"{min(clocks):.2f}-{max(clocks):.2f} GHz\n")
    print(markdown_table(["instruction", "bits", "cycles each", "per cycle (pipes)", "multiply-adds per cycle"], rows))


if __name__ == "__main__":
    main()

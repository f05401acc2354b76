"""How many measured trials a `kill -9` of `harness tune-conv` loses: watch the tuning database
grow while a real (timed) tuning run goes on, and kill it with SIGKILL.

    python scripts/tuning_kill_loss.py [--shape 1,16,10,10,32,3,3,1,1] [--trials 12]
        [--kill-after-lines N] [--logs DIR] [--repo DIR]

It prints every change of the record file's line count with its time (each line is one measured
trial; the first is the conv's default schedule), then, with --kill-after-lines N, kills the run
with SIGKILL (the process group: tuner, builder and runner workers) as soon as N lines are there,
checks that every line left is valid JSON, and re-runs the same command to show what it measures
again. `--repo` runs another checkout of the harness (e.g. an older commit, to compare).
The increments are what a kill can lose: a whole increment (one search batch) where records
are written per batch, one trial where they are written as each is measured.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lines(pattern: str) -> list:
    paths = glob.glob(pattern)
    if not paths:
        return []
    with open(paths[0], encoding="utf-8") as fh:
        return fh.read().splitlines()


def watch(cmd, repo: str, pattern: str, kill_after: int | None, timeout: float) -> tuple:
    env = dict(os.environ, PYTHONPATH=repo)
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    last, steps = 0, []
    try:
        while proc.poll() is None and time.time() - start < timeout:
            n = len(_lines(pattern))
            if n != last:
                steps.append((round(time.time() - start, 1), n))
                print(f"  {steps[-1][0]:8.1f} s: {n} lines (+{n - last})", flush=True)
                last = n
                if kill_after is not None and n >= kill_after:
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
            time.sleep(0.1)
    finally:
        if proc.poll() is None and (kill_after is not None or time.time() - start >= timeout):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    n = len(_lines(pattern))
    if n != last:
        steps.append((round(time.time() - start, 1), n))
        print(f"  {steps[-1][0]:8.1f} s: {n} lines (+{n - last}) [at exit]", flush=True)
    return proc.returncode, steps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="1,16,10,10,32,3,3,1,1")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--kill-after-lines", type=int, default=None)
    ap.add_argument("--logs", default=None, help="tuning log root (default: a new temporary folder)")
    ap.add_argument("--repo", default=HERE, help="checkout of the harness to run (default: this one)")
    ap.add_argument("--timeout", type=float, default=3600)
    args = ap.parse_args()
    logs = args.logs or tempfile.mkdtemp(prefix="tuning-kill-")
    cmd = [sys.executable, "-m", "harness", "tune-conv", "--shape", args.shape, "--trials", str(args.trials),
           "--logs", logs, "--quiet"]
    pattern = os.path.join(logs, "*", "conv", "*", "database_tuning_record.json")
    print(f"run 1: {' '.join(cmd[1:])} (harness from {args.repo})")
    rc, steps = watch(cmd, args.repo, pattern, args.kill_after_lines, args.timeout)
    lines = _lines(pattern)
    valid = sum(1 for line in lines if _is_json(line))
    print(f"run 1 exit status {rc}; {len(lines)} lines, {valid} valid JSON; "
          f"largest step {max((b - a for (_, a), (_, b) in zip([(0, 0)] + steps, steps)), default=0)} lines")
    if args.kill_after_lines is not None:
        print("run 2 (the same command, after the kill):")
        rc, _ = watch(cmd, args.repo, pattern, None, args.timeout)
        lines = _lines(pattern)
        print(f"run 2 exit status {rc}; {len(lines)} lines (wanted {args.trials}), "
              f"{sum(1 for line in lines if _is_json(line))} valid JSON")
    return 0


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


if __name__ == "__main__":
    sys.exit(main())

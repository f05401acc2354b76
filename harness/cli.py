"""Command line: `harness <subcommand> ...` (also `python -m harness`).

User mistakes (HarnessError) print one line `error: ...` and exit 2, without a traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from .errors import HarnessError

log = logging.getLogger("harness")


def _status_printer(quiet: bool):
    def status(msg: str) -> None:
        if not quiet:
            print(f"[harness] {msg}", file=sys.stderr, flush=True)

    return status


def _target_overrides(args) -> dict:
    over = {}
    if getattr(args, "target", None):
        over["target"] = {"kind": args.target}
    return over


# ----------------------------------------------------------------------------- subcommands


def cmd_models(args) -> int:
    from .models import MODELS
    from .report import format_table

    rows = [
        [s.name, "x".join(str(d) for d in s.input_shape(1)[1:]), ",".join(s.frontends), s.weights, s.description]
        for s in MODELS.values()
    ]
    print(format_table(["name", "input", "frontends", "weights", "description"], rows, aligns="lllll"))
    return 0


def cmd_run(args) -> int:
    from .config import load_config
    from .pipeline import run
    from .report import accuracy_table, latency_table

    overrides = _target_overrides(args)
    if args.batch is not None:
        overrides["model"] = {"batch": args.batch}
    cfg = load_config(args.config, overrides)
    record = run(cfg, compile_only=args.compile_only, status=_status_printer(args.quiet),
                 progress=not args.quiet)
    print(latency_table([record]))
    if record.get("accuracy"):
        print(accuracy_table(record))
    if record.get("path"):
        print(f"record: {record['path']}")
    return 0


def cmd_quantize(args) -> int:
    import json

    from .config import QuantizeConfig, load_config
    from .frontends import load_model
    from .pipeline import calibration_table, qconfig_of, sensitivity
    from .quantize import plan, plan_table, save_table
    from .report import format_table

    cfg = load_config(args.config)
    if cfg.quantize is None:
        cfg.quantize = QuantizeConfig()  # relay's defaults
    status = _status_printer(args.quiet)
    model = load_model(cfg.model)
    if args.show_plan:
        ops = plan(model.mod, model.params, qconfig_of(cfg.quantize))
        print(format_table(["tensor", "op", "weight", "as", "why"], plan_table(ops), aligns="lllll"))
        if not (args.table or args.sensitivity):
            return 0
    cfg._recalibrate = True  # `harness quantize` always calibrates
    table = calibration_table(cfg, model, status=status, progress=not args.quiet)
    out = args.table or cfg.quantize.table
    if out:
        save_table(table, out)
        print(f"calibration table: {out} ({sum(t['enabled'] for t in table['tensors'])} tensors)")
    if args.sensitivity:
        result = sensitivity(cfg, model, table, status=status)
        rows = [[r["op"], f"{r['cosine_mean']:.5f}", f"{r['top1_agreement']:.3f}",
                 f"{r.get('top1_int8', float('nan')):.3f}" if "top1_int8" in r else ""] for r in result["layers"]]
        print(f"per-layer sensitivity on {result['dataset']} (only that layer int8):")
        print(format_table(["op", "cosine", "top1 agree", "top1 (labels)"], rows))
        print(f"suggested skip_conv_layers: {result['suggested_skip_conv_layers']}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="harness",
        description="Quantize CNNs to int8, tune and build them with TVM, and benchmark them.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    m = sub.add_parser("models", help="list the model registry", description="List the registry's models.")
    m.set_defaults(func=cmd_models)

    r = sub.add_parser("run", help="build and benchmark the model a config names",
                       description="Load the config's model, build it with TVM and time it with "
                                   "time_evaluator; prints a latency table and writes a JSON record.")
    r.add_argument("config", help="YAML config (see configs/TEMPLATE.yaml)")
    r.add_argument("--target", choices=["auto", "llvm", "cuda"], help="override target.kind")
    r.add_argument("--batch", type=int, help="override model.batch")
    r.add_argument("--compile-only", action="store_true", help="build (and export) only; no timing")
    r.add_argument("--quiet", action="store_true", help="no progress messages")
    r.set_defaults(func=cmd_run)

    q = sub.add_parser("quantize", help="calibrate only: write a calibration table, show the plan, "
                                        "per-layer sensitivity",
                       description="Calibrate the config's model on its `quantize.calib` data and write the "
                                   "calibration table (re-used by `quantize.table:` without data).")
    q.add_argument("config", help="YAML config with a quantize: section (relay's defaults if absent)")
    q.add_argument("--table", help="write the calibration table here (default: quantize.table)")
    q.add_argument("--show-plan", action="store_true", help="list which tensors are quantized and which kept fp32")
    q.add_argument("--sensitivity", action="store_true",
                   help="quantize one layer at a time and report each layer's accuracy cost")
    q.add_argument("--json", help="with --sensitivity: write the per-layer results here")
    q.add_argument("--quiet", action="store_true", help="no progress messages")
    q.set_defaults(func=cmd_quantize)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return args.func(args)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Command line: `harness <subcommand> ...` (also `python -m harness`).

User mistakes (HarnessError) print one line `error: ...` and exit 2, without a traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from typing import List, Optional

from .errors import HarnessError, HarnessWarning

log = logging.getLogger("harness")


def _status_printer(quiet: bool):
    def status(msg: str) -> None:
        if not quiet:
            print(f"[harness] {msg}", file=sys.stderr, flush=True)

    return status


_python_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """The harness's own warnings (something skipped, the rest kept) as one line `warning: ...`."""
    if issubclass(category, HarnessWarning):
        print(f"warning: {message}", file=sys.stderr, flush=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


def _new_file(path: str) -> str:
    """`path`, its folder made (the path was checked with record.check_output_file before any work)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return path


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
    from .report import accuracy_table, accuracy_target_lines, latency_table

    overrides = _target_overrides(args)
    if args.batch is not None:
        overrides["model"] = {"batch": args.batch}
    cfg = load_config(args.config, overrides)
    record = run(cfg, compile_only=args.compile_only, status=_status_printer(args.quiet),
                 progress=not args.quiet)
    print(latency_table([record]))
    if record.get("accuracy_target"):
        print(accuracy_target_lines(record["accuracy_target"]))
    if record.get("accuracy"):
        print(accuracy_table(record))
    if record.get("write_error"):  # measured, shown, kept elsewhere: still the user's folder to fix
        if record.get("path") is None:
            import json

            print(json.dumps({k: v for k, v in record.items() if k not in ("path", "write_error")}, indent=2))
        print(f"error: {record['write_error']}", file=sys.stderr)
        return 2
    if record.get("path"):
        print(f"record: {record['path']}")
    return 0


def cmd_quantize(args) -> int:
    import json

    from .config import QuantizeConfig, load_config
    from .frontends import load_model
    from .pipeline import calibration_table, qconfig_of, sensitivity
    from .quantize import plan, plan_table, save_table
    from .report import accuracy_target_lines, format_table

    from .quantize import check_table_path
    from .record import check_output_file

    cfg = load_config(args.config)
    if cfg.quantize is None:
        cfg.quantize = QuantizeConfig()  # relay's defaults
    out = args.table or cfg.quantize.table
    if out and (args.table or args.sensitivity or not args.show_plan):  # checked before the calibration
        check_table_path(out, key="--table" if args.table else "quantize.table", force=args.force)
    if args.json:
        check_output_file(args.json, "--json", "JSON file")
    status = _status_printer(args.quiet)
    model = load_model(cfg.model)
    if args.show_plan:
        ops = plan(model.mod, model.params, qconfig_of(cfg.quantize))
        print(format_table(["tensor", "op", "weight", "as", "why"], plan_table(ops), aligns="lllll"))
        if not (args.table or args.sensitivity):
            return 0
    # with quantize.accuracy_target the fp32 layers are chosen too, and recorded in the table
    table = calibration_table(cfg, model, status=status, progress=not args.quiet, recalibrate=True)
    out = args.table or cfg.quantize.table
    if table.get("accuracy_target") and cfg.quantize.accuracy_target is not None:
        print(accuracy_target_lines(table["accuracy_target"]))
    if out:
        save_table(table, out)
        print(f"calibration table: {out} ({sum(t['enabled'] for t in table['tensors'])} tensors)")
    if args.sensitivity:
        result = sensitivity(cfg, model, table, status=status, progress=not args.quiet)
        rows = [[r["op"], f"{r['cosine_mean']:.5f}", f"{r['top1_agreement']:.3f}",
                 f"{r.get('top1_int8', float('nan')):.3f}" if "top1_int8" in r else ""] for r in result["layers"]]
        print(f"per-layer sensitivity on {result['dataset']} (only that layer int8):")
        print(format_table(["op", "cosine", "top1 agree", "top1 (labels)"], rows))
        print(f"suggested skip_conv_layers: {result['suggested_skip_conv_layers']}")
        if args.json:
            with open(_new_file(args.json), "w") as f:
                json.dump(result, f, indent=1)
    return 0


def _runner(tcfg, target):
    """`tuning.runner`: local, or TVM's RPC tracker + servers."""
    if tcfg.runner == "local":
        return "local"
    from tvm.s_tir import meta_schedule as ms

    host, port = tcfg.tracker.rsplit(":", 1)
    return ms.runner.RPCRunner(ms.runner.RPCConfig(tracker_host=host, tracker_port=int(port),
                                                   tracker_key=tcfg.key, session_timeout_sec=120))


def _progress_bar(total: int, desc: str, quiet: bool):
    if quiet:
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="trial")

    def report(done, total_, best_ms):
        bar.n = done
        bar.set_postfix_str("best -" if best_ms is None else f"best {best_ms:.4f} ms")
        bar.refresh()

    return report, bar


def cmd_tune(args) -> int:
    from . import build
    from .config import load_config
    from .frontends import load_model
    from .pipeline import logs_root, run_key, variant_modules
    from .tune.search import tunable_tasks, tune_model, tuning_dir

    from .record import check_writable_dir

    cfg = load_config(args.config, _target_overrides(args))
    trials = args.trials if args.trials is not None else cfg.tuning.trials
    if trials < 0:
        raise HarnessError(f"--trials: must be >= 0 (search trials wanted in the database), got {trials}")
    check_writable_dir(logs_root(cfg), "tuning.logs", "tuning databases")  # before minutes of work
    status = _status_printer(args.quiet)
    model = load_model(cfg.model)
    target = build.resolve_target(cfg.target)
    batch = model.input_shape[0]
    for name, dkey, mod, _ in variant_modules(cfg, model, status=status):
        if args.only and dkey != args.only:
            continue
        work_dir = tuning_dir(logs_root(cfg), target, run_key(model.name, batch, dkey))
        options = cfg.schedule_options()
        tasks = tunable_tasks(mod, target, options)
        status(f"{name}: {len(tasks)} conv2d/dense tasks, {trials} trials -> {work_dir}")
        report, bar = _progress_bar(trials, f"tune {name}", args.quiet)
        try:
            done = tune_model(mod, target, work_dir, trials=trials, runner=_runner(cfg.tuning, target),
                              progress=report, options=options)
        finally:
            if bar is not None:
                bar.close()
        seeded = f", + {done.defaults_measured} default schedules measured" if done.defaults_measured else ""
        if trials == 0:
            print(f"{name}: --trials 0: nothing tuned, database {work_dir} left as it was")
        elif done.tasks and not done.trials and done.earlier_trials >= trials > 0:
            print(f"{name}: database {work_dir} already holds {done.earlier_trials} search trials "
                  f"(--trials {trials}); nothing new to measure{seeded}. Pass a larger --trials to search on.")
        else:
            print(f"{name}: database {work_dir}: {done.trials} new search trials, {done.earlier_trials} "
                  f"from before{seeded}")
    return 0


def cmd_tune_conv(args) -> int:
    import os

    from .config import QuantizeConfig, RunConfig, TargetConfig, load_config
    from .pipeline import REPO_ROOT, logs_root
    from .targets import gpu_visible, resolve_target
    from .tune import ConvShape, conv_work_dir, emit_source, tune_conv

    try:
        shape = ConvShape.parse(args.shape)
    except ValueError as e:
        raise HarnessError(f"--shape: {e}") from None
    from .record import check_output_file, check_writable_dir

    if args.trials is not None and args.trials < 0:
        raise HarnessError(f"--trials: must be >= 0 (0: no tuning), got {args.trials}")
    target = resolve_target(TargetConfig(kind=args.target))
    # without a config: the default config's quantizer (reduce_range resolved for the target)
    cfg = load_config(args.config) if args.config else RunConfig(quantize=QuantizeConfig())
    qconfig = cfg.qconfig(target) if args.dtype == "int8" and cfg.quantize is not None else None
    options = cfg.schedule_options(target)
    logs = args.logs or logs_root(cfg)  # the default config's: tuning_logs/ of the repository
    logs = logs if os.path.isabs(logs) else os.path.join(REPO_ROOT, logs)
    work_dir = conv_work_dir(logs, target, shape, args.dtype)
    trials = 32 if args.trials is None else args.trials
    if args.emit_source:
        check_output_file(args.emit_source, "--emit-source", "source file")
    if trials == 0 and not args.emit_source:
        print(f"--trials 0: nothing tuned and nothing emitted (database {work_dir} left as it was); "
              "give --trials N to tune, --emit-source FILE to write the kernel source")
        return 0
    if trials > 0:
        check_writable_dir(work_dir, "--logs", "tuning databases")
        if target.kind.name == "cuda" and not gpu_visible():
            raise HarnessError("target cuda: no GPU is visible here to time candidates; use --trials 0 "
                               "with --emit-source to compile the conv's kernel")
        report, bar = _progress_bar(trials, f"tune {shape}", args.quiet)
        try:
            result = tune_conv(shape, dtype=args.dtype, target=target, trials=trials, work_dir=work_dir,
                               progress=report, qconfig=qconfig, data_dtype=args.data_dtype, options=options)
        finally:
            if bar is not None:
                bar.close()
        print(result.summary())
        print(f"database: {work_dir}")
    if args.emit_source:
        src = emit_source(shape, dtype=args.dtype, target=target,
                          work_dir=work_dir if os.path.isdir(work_dir) else None, data_dtype=args.data_dtype,
                          qconfig=qconfig, options=options)
        with open(_new_file(args.emit_source), "w") as f:
            f.write(src)
        print(f"kernel source: {args.emit_source} ({len(src.splitlines())} lines)")
    return 0


def _csv(text: Optional[str], cast=str):
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [cast(t) for t in items]
    except ValueError:
        raise HarnessError(f"expected a comma-separated list of {cast.__name__}s, got {text!r}") from None


def cmd_suite(args) -> int:
    from . import build
    from .report import suite_table
    from .suite import cells, default_out_dir, load_suite, run_suite

    peers = None if args.peers is None else ([] if args.peers == "none" else _csv(args.peers))
    scfg = load_suite(args.config, models=_csv(args.models), batches=_csv(args.batches, int), peers=peers,
                      target=args.target)
    first = cells(scfg)[0].config
    out = args.out or default_out_dir(first.bench.results_dir, build.target_key(build.resolve_target(first.target)),
                                      scfg.name)
    records = run_suite(scfg, out, status=_status_printer(args.quiet), progress=not args.quiet)
    print(suite_table(records, "text"))
    print(f"results: {out} ({len(records)} records, table.md, table.csv, figure.png)")
    lost = [r["write_error"] for r in records if r.get("write_error")]
    if lost:
        more = f" (and {len(lost) - 1} more record(s) like it)" if len(lost) > 1 else ""
        print(f"error: {lost[0]}{more}", file=sys.stderr)
        return 2
    return 0


def cmd_report(args) -> int:
    from .report import (FORMATS, compare_cells, compare_summary, load_records, parse_fraction, plot_suite,
                         suite_table)

    fail_over = parse_fraction(args.fail_over if args.fail_over is not None else "5%")
    if args.fail_over is not None and not args.compare:
        raise HarnessError("--fail-over needs --compare BASELINE...")
    fmt = args.format
    if fmt is None:  # from --output's extension, else text
        ext = os.path.splitext(args.output or "")[1].lstrip(".").lower()
        fmt = {"md": "md", "markdown": "md", "csv": "csv", "json": "json"}.get(ext, "text")
    assert fmt in FORMATS
    from .record import check_output_file

    if args.output:
        check_output_file(args.output, "--output", "table file")
    if args.plot:
        check_output_file(args.plot, "--plot", "PNG file")
    records = load_records(args.results)
    baseline = load_records(args.compare) if args.compare else None
    table = suite_table(records, fmt)
    if args.output:
        with open(_new_file(args.output), "w", encoding="utf-8", newline="") as f:
            f.write(table if table.endswith("\n") else table + "\n")
        print(f"table: {args.output} ({fmt}, {len(records)} records)")
    else:
        print(table.rstrip("\n"))
    if args.plot:
        plot_suite(records, _new_file(args.plot))
        print(f"figure: {args.plot}")
    if baseline is None:
        return 0
    cells = compare_cells(records, baseline, fail_over)
    print()
    print(f"compared with {len(baseline)} baseline record(s), fail over +{fail_over * 100:g}%:")
    print(compare_summary(cells, fail_over))
    return 1 if any(c.status == "regression" for c in cells) else 0


def cmd_bundle(args) -> int:
    from .bundle.build import REFERENCE_CONFIG, build_bundle, bundle_configs
    from .pipeline import REPO_ROOT

    configs = bundle_configs(args.config, target_kind=args.target, arch=args.arch, batches=_csv(args.batches, int),
                             models=_csv(args.models))
    reference = args.reference or os.path.join(REPO_ROOT, REFERENCE_CONFIG)
    peers = None if args.peers is None else ([] if args.peers == "none" else _csv(args.peers))
    manifest = build_bundle(configs, args.out, variants=_csv(args.variants), peers=peers,
                            reference=None if reference == "none" else reference,
                            status=_status_printer(args.quiet))
    n = sum(len(c["variants"]) for c in manifest["cases"])
    ref = manifest["reference"]
    print(f"bundle: {args.out} ({manifest['target']['key']}, {len(manifest['cases'])} case(s), {n} libraries"
          f"{', reference ' + ref['model'] if ref else ''}; {manifest['bytes'] / 2**20:.1f} MiB)")
    return 0


def cmd_bench_bundle(args) -> int:
    from .bundle.runner import bench_bundle
    from .report import latency_table

    records = bench_bundle(args.bundle, args.out, device=args.device, peers=not args.no_peers,
                           status=_status_printer(args.quiet))
    print(latency_table(records))
    ref = records[0]["bundle"]["reference"] if records else None
    if ref is not None:
        for name, r in ref["variants"].items():
            print(f"reference {ref['model']} {name}: max rel err {r['max_rel_err']:.3g} vs the CPU's int8 output, "
                  f"top-1 agreement {r['top1_agreement']:.3f}: {'passed' if r['passed'] else 'FAILED'}")
    print(f"records: {os.path.dirname(records[0]['path']) if records else '-'} ({len(records)})")
    return 0 if ref is None or ref["passed"] else 1


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
    r.add_argument("--quiet", action="store_true", help="no progress messages or bars")
    r.set_defaults(func=cmd_run)

    q = sub.add_parser("quantize", help="calibrate only: write a calibration table, show the plan, "
                                        "per-layer sensitivity",
                       description="Calibrate the config's model on its `quantize.calib` data and write the "
                                   "calibration table (re-used by `quantize.table:` without data). With "
                                   "`quantize.accuracy_target` it also chooses the fewest layers to keep fp32 "
                                   "that reach the target on the `accuracy:` data, and records them in the table.")
    q.add_argument("config", help="YAML config with a quantize: section (relay's defaults if absent)")
    q.add_argument("--table", help="write the calibration table here (default: quantize.table)")
    q.add_argument("--force", action="store_true",
                   help="overwrite the --table path even if what is there is not a calibration table")
    q.add_argument("--show-plan", action="store_true", help="list which tensors are quantized and which kept fp32")
    q.add_argument("--sensitivity", action="store_true",
                   help="quantize one layer at a time and report each layer's accuracy cost")
    q.add_argument("--json", help="with --sensitivity: write the per-layer results here")
    q.add_argument("--quiet", action="store_true", help="no progress messages or bars")
    q.set_defaults(func=cmd_quantize)

    t = sub.add_parser("tune", help="tune the conv2d/dense kernels of the config's model (fp32 and int8)",
                       description="Extract the conv2d/dense tasks of the fp32 (and, with a quantize: section, "
                                   "the int8) module and tune them with MetaSchedule into "
                                   "tuning_logs/<target key>/<run key>/. Re-running resumes.")
    t.add_argument("config")
    t.add_argument("--trials", type=int, help="search trials over all tasks wanted in the database, those "
                   "already there included (default: tuning.trials)")
    t.add_argument("--target", choices=["auto", "llvm", "cuda"], help="override target.kind")
    t.add_argument("--only", choices=["float32", "int8"], help="tune only this variant")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_tune)

    s = sub.add_parser("suite", help="run a benchmark suite: models x batches x variants, with peers",
                       description="Run every model x batch of a suite file (configs/suites/) as TVM int8 and "
                                   "fp32 plus peer systems, each checked against TVM fp32's output before it is "
                                   "timed; writes the records, table.md, table.csv and figure.png into one folder.")
    s.add_argument("config", help="suite YAML (e.g. configs/suites/tvm_cuda_int8.yaml)")
    s.add_argument("--target", choices=["auto", "llvm", "cuda"], help="override run.target.kind")
    s.add_argument("--models", help="comma-separated subset of models (default: the suite's)")
    s.add_argument("--batches", help="comma-separated batch sizes, e.g. 1,16 (default: the suite's)")
    s.add_argument("--peers", help="comma-separated peers for this run, or 'none' (default: the suite's, "
                                   "per device kind)")
    s.add_argument("--out", help="results folder (default: <bench.results_dir>/<date>-<target key>-<suite name>)")
    s.add_argument("--quiet", action="store_true", help="no progress messages")
    s.set_defaults(func=cmd_suite)

    c = sub.add_parser("tune-conv", help="tune one conv2d shape; print latency and GOPS; emit its source",
                       description="Tune one conv2d as exactly the kernel a model build compiles for it (the conv "
                                   "quantized and fused by the real pipeline) and append the records to "
                                   "tuning_logs/<target key>/conv/<shape>-<dtype>/; `harness run` applies them to "
                                   "every model with that conv, whatever is fused after it.")
    c.add_argument("--shape", required=True, help="N,C,H,W,K,R,S,stride,pad[,dilation,groups]")
    c.add_argument("--dtype", choices=["int8", "float32"], default="int8",
                   help="int8: the kernel the int8 config builds (int8 weights, int32 sums); float32")
    c.add_argument("--data-dtype", choices=["uint8", "int8"], default=None,
                   help="int8 convs: the data type (default uint8: a conv after a ReLU; int8: signed input)")
    c.add_argument("--config", help="take the quantizer settings (quantize:), the schedule families "
                                    "(build.schedules) and tuning.logs from this config")
    c.add_argument("--target", choices=["llvm", "cuda"], default="llvm")
    c.add_argument("--trials", type=int, default=None,
                   help="search trials wanted in the conv's database, those there counted (default 32; its "
                        "default schedule is measured once besides; 0: no tuning)")
    c.add_argument("--emit-source", metavar="FILE",
                   help="write the conv kernel's source as a build compiles it (LLVM assembly, or CUDA C "
                        "compiled by nvcc) with the best record, else its default schedule")
    c.add_argument("--logs", default=None, help="tuning log root (default: tuning_logs, or the config's)")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_tune_conv)

    rp = sub.add_parser("report", help="merge result records into the suite table (text/md/csv/json), "
                                       "a figure, and a regression check",
                        description="Merge result records into the 2019 tvm-cuda-int8 table: one row per model "
                                    "and batch, one column per system (ms/image; the newest record wins where "
                                    "records overlap) and a Relative column (fastest = 1.00). n/a cells are "
                                    "explained under the text/md table. With --compare, every cell is matched "
                                    "to the baseline by model, batch, system and target; exit status 1 if one "
                                    "is slower than the baseline by more than --fail-over, else 0.")
    rp.add_argument("results", nargs="+", metavar="RESULTS",
                    help="record .json files or directories (every *.json below them)")
    rp.add_argument("--format", choices=["text", "md", "csv", "json"],
                    help="table format (default: from --output's extension, else text); csv: ms/image "
                         "unrounded, n/a cells empty, reasons in a 'notes' column")
    rp.add_argument("--output", metavar="FILE", help="write the table here instead of printing it")
    rp.add_argument("--plot", metavar="PNG", help="also draw grouped bars (ms/image, one panel per batch)")
    rp.add_argument("--compare", nargs="+", metavar="BASELINE",
                    help="baseline record files or directories to check the results against "
                         "(give RESULTS first: `report RESULTS... --compare BASELINE...`)")
    rp.add_argument("--fail-over", metavar="AMOUNT",
                    help="with --compare: allowed slow-down, as 5%% or 0.05 (default: 5%%)")
    rp.set_defaults(func=cmd_report)

    b = sub.add_parser("bundle", help="build here, run there: export every variant's library with its weights as "
                                      "parameters, for `bench-bundle` on a machine with only the TVM runtime",
                       description="Compile the models of a run config or suite file (every batch) as TVM int8 with "
                                   "the harness's schedules, int8 with TVM's own GPU schedules (CUDA) and fp32, each "
                                   "with its weights as parameters (their packing runs once at load), plus a small "
                                   "reference case with real weights and the CPU's int8 output. No GPU is needed "
                                   "for --target cuda (nvcc is).")
    b.add_argument("config", help="run config (configs/*.yaml) or suite file (configs/suites/*.yaml)")
    b.add_argument("--target", choices=["cuda", "llvm"], required=True, help="what the libraries are built for")
    b.add_argument("--arch", help="CUDA architecture, e.g. sm_90 (default: target.arch, else sm_90)")
    b.add_argument("--batches", help="comma-separated batch sizes (default: the config's)")
    b.add_argument("--models", help="suite files: comma-separated subset of models")
    b.add_argument("--variants", help="comma-separated subset of tvm-int8, tvm-int8-dlight (CUDA), tvm-fp32 "
                                      "(default: all the target has)")
    b.add_argument("--peers", help="torch peers to carry (torch-fp32, torch-fp16) or 'none' "
                                   "(default: both for cuda, none for llvm)")
    b.add_argument("--reference", metavar="CONFIG", help="the reference case's config, or 'none' "
                                                         "(default: configs/digits_cnn_int8.yaml)")
    b.add_argument("--out", required=True, help="bundle directory (rebuilt whole)")
    b.add_argument("--quiet", action="store_true", help="no progress messages")
    b.set_defaults(func=cmd_bundle)

    bb = sub.add_parser("bench-bundle", help="run a bundle with the TVM runtime alone: check the reference case, "
                                             "time every variant and peer, write result records",
                        description="Needs only the TVM runtime (TVM_USE_RUNTIME_LIB=1 works) and numpy; torch "
                                    "for the torch peers. Records are those of `harness run`: `harness report` "
                                    "merges them. Exit status 1 when the reference case does not match.")
    bb.add_argument("bundle", help="directory made by `harness bundle`")
    bb.add_argument("--out", metavar="RESULTS", help="records folder (default: BUNDLE/results)")
    bb.add_argument("--device", help="cpu or cuda (default: the kind the bundle was built for)")
    bb.add_argument("--no-peers", action="store_true", help="skip the torch peers")
    bb.add_argument("--quiet", action="store_true", help="no progress messages")
    bb.set_defaults(func=cmd_bench_bundle)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    # Gluon warns once per graph it binds that it "Cannot decide type" of `data` (it is float32)
    warnings.filterwarnings("ignore", message="Cannot decide type", category=UserWarning)
    warnings.showwarning = _show_warning
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

"""`harness suite`: every model x batch x variant of a suite, with peers, into one results folder.

A suite file names the models, the batch sizes, the TVM variants, the peers per device kind, and
one run config (the keys of configs/TEMPLATE.yaml) applied to every cell; the runner sets
`model.name` and `model.batch` per cell. Each cell leaves one result record; the folder then gets
`table.md`, `table.csv` and `figure.png`, all made from those records.
"""
from __future__ import annotations

import copy
import datetime as _dt
import logging
import os
import traceback
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from .config import RunConfig, config_from_dict, load_config
from .errors import ConfigError, HarnessError
from .models import MODELS, SUITE_2019

log = logging.getLogger("harness")

VARIANTS = ("tvm-int8", "tvm-fp32")


@dataclass
class PeersConfig:
    """Peer systems per device kind (harness.peers.PEERS)."""

    cpu: list = field(default_factory=lambda: ["mxnet-fp32", "mxnet-int8", "onnxruntime-int8", "torch-fp32"])
    cuda: list = field(default_factory=lambda: ["torch-fp32", "torch-fp16"])


@dataclass
class SuiteConfig:
    name: str = "suite"
    models: list = field(default_factory=lambda: list(SUITE_2019))
    batches: list = field(default_factory=lambda: [1, 16])
    variants: list = field(default_factory=lambda: list(VARIANTS))  # tvm-fp32 is always built (the reference)
    image_size: Optional[int] = None  # square input side for every model (default: each model's own)
    peers: PeersConfig = field(default_factory=PeersConfig)
    run: dict = field(default_factory=dict)  # a run config applied to every cell (configs/TEMPLATE.yaml keys)


@dataclass
class Cell:
    model: str
    batch: int
    config: RunConfig


def load_suite(path: str, *, models: Optional[Sequence[str]] = None, batches: Optional[Sequence[int]] = None,
               peers: Optional[Sequence[str]] = None, target: Optional[str] = None) -> SuiteConfig:
    """Load and check a suite file; command-line choices replace the file's."""
    scfg = load_config(path, cls=SuiteConfig)
    if models is not None:
        scfg.models = list(models)
    if batches is not None:
        scfg.batches = list(batches)
    if target is not None:
        scfg.run = {**scfg.run, "target": {**_as_target(scfg.run.get("target")), "kind": target}}
    if peers is not None:
        scfg.peers = PeersConfig(cpu=list(peers), cuda=list(peers))
    _check(scfg, base_dir=os.path.dirname(os.path.abspath(path)))
    scfg._base_dir = os.path.dirname(os.path.abspath(path))
    return scfg


def _as_target(value) -> dict:
    if value is None:
        return {}
    return dict(value) if isinstance(value, dict) else {"kind": value}


def _check(scfg: SuiteConfig, base_dir: str) -> None:
    from .models import unknown_model_message
    from .peers import PEERS

    if not scfg.models:
        raise ConfigError("models: the suite names no model")
    for m in scfg.models:
        if m not in MODELS:
            raise ConfigError(f"models: {unknown_model_message(m)}")
    if not scfg.batches or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in scfg.batches):
        raise ConfigError(f"batches: expected a list of integers >= 1, got {scfg.batches}")
    for v in scfg.variants:
        if v not in VARIANTS:
            raise ConfigError(f"variants: unknown '{v}'; valid: {', '.join(VARIANTS)}")
    for kind in ("cpu", "cuda"):
        for p in getattr(scfg.peers, kind):
            if p not in PEERS:
                raise ConfigError(f"peers.{kind}: unknown peer '{p}'; valid: {', '.join(PEERS)}")
    if scfg.image_size is not None and scfg.image_size < 1:
        raise ConfigError(f"image_size: must be >= 1, got {scfg.image_size}")
    if not isinstance(scfg.run, dict):
        raise ConfigError(f"run: expected a mapping of run config keys, got {scfg.run!r}")
    if "model" in scfg.run and set(scfg.run["model"] or {}) & {"name", "batch", "input_shape"}:
        raise ConfigError("run.model: name, batch and input_shape are set per cell by `models:` and `batches:`")
    cells(scfg, base_dir)  # every cell's config is checked before anything runs


def cells(scfg: SuiteConfig, base_dir: Optional[str] = None) -> List[Cell]:
    base_dir = base_dir or getattr(scfg, "_base_dir", ".")
    out = []
    for m in scfg.models:
        for b in scfg.batches:
            data = copy.deepcopy(scfg.run)
            data["model"] = {**(data.get("model") or {}), "name": m, "batch": b}
            if scfg.image_size is not None:
                c = MODELS[m].channels
                data["model"]["input_shape"] = [b, c, scfg.image_size, scfg.image_size]
            if "tvm-int8" not in scfg.variants:
                data.pop("quantize", None)
                data.pop("accuracy", None)
            elif data.get("quantize") is None:
                data["quantize"] = {}  # relay's defaults
            try:
                cfg = config_from_dict(data, base_dir=base_dir)
            except ConfigError as e:
                raise ConfigError(f"run: {e}") from None
            out.append(Cell(m, b, cfg))
    return out


def default_out_dir(results_root: str, target_key: str, suite_name: str) -> str:
    """<results>/<date>-<target key>-<suite name>: one folder per suite, machine kind and day."""
    return os.path.join(results_root, f"{_dt.date.today().isoformat()}-{target_key}-{suite_name}")


def run_suite(scfg: SuiteConfig, out_dir: str, *, status: Callable[[str], None] = lambda m: None,
              progress: bool = False) -> List[Dict]:
    """Run every cell; a failing cell becomes a record with the reason, and the suite goes on."""
    from . import build
    from .pipeline import run
    from .report import plot_suite, suite_table

    from .record import check_writable_dir

    check_writable_dir(out_dir, "suite results folder")  # before the first cell, not after the last
    os.makedirs(out_dir, exist_ok=True)
    todo = cells(scfg)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"suite {scfg.name}", unit="cell")
    records = []
    try:
        for cell in todo:
            cfg = cell.config
            cfg.bench.results_dir = out_dir
            target = build.resolve_target(cfg.target)
            peers = scfg.peers.cuda if target.kind.name == "cuda" else scfg.peers.cpu
            if bar is not None:
                bar.set_postfix_str(f"{cell.model} B{cell.batch}")
            status(f"{cell.model} batch {cell.batch}: {', '.join(['tvm-fp32'] + [v for v in scfg.variants if v != 'tvm-fp32'])}"
                   f"{' + ' + ', '.join(peers) if peers else ''}")
            try:
                rec = run(cfg, status=status, peers=peers)
            except Exception as e:  # one broken cell must not lose the others: it is recorded, with why
                log.debug("suite cell %s B%d failed:\n%s", cell.model, cell.batch, traceback.format_exc())
                rec = failed_record(cfg, target, e, scfg.variants, peers)
            records.append(rec)
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    write_outputs(records, out_dir, suite_table=suite_table, plot_suite=plot_suite)
    return records


def failed_record(cfg: RunConfig, target, error: Exception, variants: Sequence[str], peers: Sequence[str]) -> Dict:
    from . import build
    from .pipeline import run_key
    from .record import new_record, write_record_somewhere

    reason = f"failed: {error}" if isinstance(error, HarnessError) else f"failed: {type(error).__name__}: {error}"
    reason = reason.splitlines()[0][:300]
    names = ["tvm-fp32"] + [v for v in variants if v != "tvm-fp32"] + list(peers)
    tkey = build.target_key(target)
    rec = new_record("run", cfg.to_dict(),
                     run_key=run_key(cfg.model.name, cfg.model.batch, "int8" if cfg.quantize else "float32"),
                     model={"name": cfg.model.name, "batch": cfg.model.batch},
                     target={"key": tkey, "target": str(target)},
                     variants=[{"variant": n, "target": tkey, "latency": None, "note": reason} for n in names],
                     accuracy=None, error=reason)
    rec["path"], error = write_record_somewhere(rec, cfg.bench.results_dir, rec["run_key"])
    if error:
        rec["write_error"] = error
    return rec


def write_outputs(records: List[Dict], out_dir: str, *, suite_table, plot_suite) -> Dict[str, str]:
    """table.md, table.csv and figure.png beside the records, made from them."""
    paths = {"md": os.path.join(out_dir, "table.md"), "csv": os.path.join(out_dir, "table.csv"),
             "png": os.path.join(out_dir, "figure.png")}
    for fmt in ("md", "csv"):
        with open(paths[fmt], "w") as f:
            f.write(suite_table(records, fmt))
            f.write("\n")
    plot_suite(records, paths["png"])
    return paths

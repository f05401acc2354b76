"""`harness run`: frontend -> build -> bench -> record, for one config."""
from __future__ import annotations

import logging
from typing import Callable, Dict, Optional

import numpy as np

from . import bench, build
from .errors import HarnessError
from .frontends import load_model
from .models import input_data
from .record import new_record, write_record

log = logging.getLogger("harness")


def run_key(model_name: str, batch: int, variant: str) -> str:
    """Run key in the TLCBench style: `resnet50_v1-B1-int8`."""
    return f"{model_name}-B{batch}-{variant}"


def run(cfg, *, compile_only: bool = False, write: bool = True,
        status: Callable[[str], None] = lambda msg: None) -> Dict:
    """Run the configured model; returns the result record (also written under bench.results_dir)."""
    status(f"loading {cfg.model.name} ({cfg.model.frontend})")
    model = load_model(cfg.model)
    target = build.resolve_target(cfg.target)
    tkey = build.target_key(target)
    batch = model.input_shape[0]
    status(f"compiling for {tkey} at opt_level={cfg.build.opt_level}")
    mod = build.bind_params(model.mod, model.params)
    built = build.compile_module(mod, target, opt_level=cfg.build.opt_level, export=cfg.build.export)
    variant = {
        "variant": "tvm-fp32",
        "target": tkey,
        "compile_seconds": round(built.compile_seconds, 3),
        "export": built.export_path,
    }
    if target.kind.name == "cuda" and not build.gpu_visible() and not compile_only:
        raise HarnessError("target cuda: no GPU is visible on this machine; add --compile-only to only build")
    if compile_only:
        variant["latency"] = None
        variant["note"] = "compile only"
    else:
        dev = build.device_for(target)
        vm = bench.make_vm(built.executable, dev)
        x = input_data(model.input_shape, cfg.model.seed, model.dtype)
        out = bench.run_once(vm, dev, [x])
        first = out if isinstance(out, np.ndarray) else out[0]
        variant["output_shape"] = list(first.shape)
        variant["output_finite"] = bool(np.isfinite(first).all())
        status(f"timing (number={cfg.bench.number}, repeat={cfg.bench.repeat}, "
               f"min_repeat_ms={cfg.bench.min_repeat_ms})")
        stats = bench.time_vm(vm, dev, [x], number=cfg.bench.number, repeat=cfg.bench.repeat,
                              min_repeat_ms=cfg.bench.min_repeat_ms, warmup=cfg.bench.warmup, batch=batch)
        variant["latency"] = stats.to_dict()
    record = new_record(
        "run",
        cfg.to_dict(),
        run_key=run_key(model.name, batch, "float32"),
        model={"name": model.name, "frontend": model.frontend, "source": model.source, "batch": batch,
               "input_shape": list(model.input_shape), "num_params": int(sum(p.size for p in model.params.values()))},
        target={"key": tkey, "target": str(target)},
        variants=[variant],
    )
    if write:
        record["path"] = write_record(record, cfg.bench.results_dir, record["run_key"])
    return record

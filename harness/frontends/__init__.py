"""Model frontends: each turns a model (file, Gluon block, torch module) into a Relax IRModule + params.

`load_model(model_config)` is the one entry the pipeline uses; it dispatches on
`model.frontend` through `FRONTENDS`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import tvm

from ..errors import ConfigError


@dataclass
class LoadedModel:
    name: str
    frontend: str
    mod: tvm.IRModule
    params: Dict[str, np.ndarray]
    input_name: str
    input_shape: Tuple[int, ...]
    dtype: str = "float32"
    source: str = ""  # where it came from (registry / file path)
    extra: dict = field(default_factory=dict)


def model_input_shape(cfg) -> Tuple[int, ...]:
    """The NCHW input shape of the model config `cfg` (its own, or the registry's at its batch),
    without loading the model."""
    from ..models import MODELS

    if cfg.input_shape is not None:
        return tuple(cfg.input_shape)
    spec = MODELS.get(cfg.name)
    if spec is None:
        raise ConfigError(f"model.input_shape: required for '{cfg.name}' (not a registry model)")
    return spec.input_shape(cfg.batch)


def _load_mxnet(cfg) -> LoadedModel:
    from .mxnet import from_mxnet

    shape = model_input_shape(cfg)
    if cfg.symbol is not None:
        mod, params = from_mxnet(cfg.symbol, cfg.params, shape={cfg.input_name: shape}, dtype=cfg.dtype)
        return LoadedModel(cfg.name, "mxnet", mod, params, cfg.input_name, shape, cfg.dtype, cfg.symbol)
    from ..models import gluon_model

    block = gluon_model(cfg.name, seed=cfg.seed)
    mod, params = from_mxnet(block, shape={cfg.input_name: shape}, dtype=cfg.dtype)
    return LoadedModel(cfg.name, "mxnet", mod, params, cfg.input_name, shape, cfg.dtype,
                       f"registry:{cfg.name}", extra={"block": block})


def _detach(mod: tvm.IRModule) -> Tuple[tvm.IRModule, Dict[str, np.ndarray]]:
    """Relax frontends keep weights as trailing function params with values under attr 'params'."""
    from tvm import relax

    mod, param_values = relax.frontend.detach_params(mod)
    func = mod["main"]
    values = param_values.get("main", [])
    n_inputs = len(func.params) - len(values)
    names = [p.name for p in func.params[n_inputs:]]
    params = {n: v.numpy() for n, v in zip(names, values)}
    mod["main"] = func.with_attr("num_input", n_inputs)
    return mod, params


def _load_onnx(cfg) -> LoadedModel:
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    if cfg.onnx is None:
        raise ConfigError("model.onnx: the onnx frontend needs `onnx: path/to/model.onnx`")
    shape = model_input_shape(cfg)
    try:
        proto = onnx.load(cfg.onnx)
    except Exception as e:
        raise ConfigError(f"model.onnx: cannot read {cfg.onnx}: {e}") from None
    graph_inputs = [i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if cfg.input_name not in graph_inputs:
        raise ConfigError(
            f"model.input_name: '{cfg.input_name}' is not an input of {cfg.onnx}; its inputs: {', '.join(graph_inputs)}"
        )
    mod = from_onnx(proto, shape_dict={cfg.input_name: list(shape)}, dtype_dict=cfg.dtype, keep_params_in_input=True)
    mod, params = _detach(mod)
    return LoadedModel(cfg.name, "onnx", mod, params, cfg.input_name, shape, cfg.dtype, cfg.onnx)


def _load_pytorch(cfg) -> LoadedModel:
    import torch
    from tvm.relax.frontend.torch import from_exported_program

    shape = model_input_shape(cfg)
    example = (torch.zeros(shape, dtype=getattr(torch, cfg.dtype)),)
    if cfg.pytorch is not None:
        ep = torch.export.load(cfg.pytorch)
        source = cfg.pytorch
        module = ep.module()
    else:
        from ..models import torch_model

        module = torch_model(cfg.name, seed=cfg.seed)
        source = f"registry:{cfg.name}"
        with torch.no_grad():
            ep = torch.export.export(module, example)
    mod = from_exported_program(ep, keep_params_as_input=True, unwrap_unit_return_tuple=True)
    mod, params = _detach(mod)
    return LoadedModel(cfg.name, "pytorch", mod, params, cfg.input_name, shape, cfg.dtype, source,
                       extra={"torch_module": module})


FRONTENDS: Dict[str, Callable] = {"mxnet": _load_mxnet, "onnx": _load_onnx, "pytorch": _load_pytorch}


def load_model(cfg) -> LoadedModel:
    """Load the model a `ModelConfig` names, through its frontend."""
    try:
        loader = FRONTENDS[cfg.frontend]
    except KeyError:
        raise ConfigError(f"model.frontend: unknown '{cfg.frontend}'; valid: {', '.join(FRONTENDS)}") from None
    return loader(cfg)

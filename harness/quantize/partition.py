"""`partition_conversions`: the int8 module split into conversion and core functions, as relay's
`partition_conversions` did.

    quantize_inputs(inputs...)     the float32 ops from the inputs up to (and with) the casts that
                                   first make 8-bit tensors, e.g. a skipped first conv and its pool
    quantized_main(boundary...)    everything between: the int8 ops and what stays float32 among them
    dequantize_outputs(...)        the float32 ops that only lead to the outputs: the last dequantize
                                   and what follows it (pool, a float32 dense, ...)
    main(inputs...)                the three called in turn (same signature and results as before)

``enabled`` makes the split; ``fully_integral`` also requires the core to be integers only and
otherwise refuses the config, naming the float32 ops left in it (residual adds, pools and the
requantization between them stay float32 here, see requantize.py).
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, List, Set

import tvm
from tvm import relax

from ..errors import ConfigError
from .requantize import _op

_QUANTIZED = ("int8", "uint8", "int32")


def _dtype(var) -> str:
    ty = getattr(var, "ty", None)
    return str(getattr(ty, "dtype", ""))


def _op_name(value) -> str:
    return _op(value) or type(value).__name__


@relax.expr_functor.mutator
class _Copy(relax.PyExprMutator):
    """Rewrites expressions with some variables replaced (set_var_remap)."""


def _split(bindings: List[relax.VarBinding], params: Set, output_vars: Set):
    """(prefix, core, suffix) bindings. Prefix: reads only inputs and prefix results, none of them
    8-bit or int32 (so it ends with the quantizing casts). Suffix: a float result that only the
    suffix or the function's result reads (so it starts at the last dequantizing casts)."""
    prefix: Set = set()
    for b in bindings:
        if all(_dtype(v) not in _QUANTIZED and (v in params or v in prefix)
               for v in relax.analysis.free_vars(b.value)):
            prefix.add(b.var)
    users: Dict = {}
    for b in bindings:
        for v in relax.analysis.free_vars(b.value):
            users.setdefault(v, []).append(b.var)
    suffix: Set = set()
    for b in reversed(bindings):
        if b.var in prefix or _dtype(b.var) in _QUANTIZED:
            continue
        if all(u in suffix for u in users.get(b.var, [])) and (users.get(b.var) or b.var in output_vars):
            suffix.add(b.var)
    pre = [b for b in bindings if b.var in prefix]
    post = [b for b in bindings if b.var in suffix]
    core = [b for b in bindings if b.var not in prefix and b.var not in suffix]
    return pre, core, post


def _float_ops(core: List[relax.VarBinding]) -> Counter:
    """The ops of the core that compute in floating point (their result is a float tensor)."""
    return Counter(_op_name(b.value).replace("relax.", "") for b in core if "float" in _dtype(b.var))


def partition_conversions(mod: tvm.IRModule, fully_integral: bool = False) -> tvm.IRModule:
    """The module with ``main`` split into quantize_inputs / quantized_main / dequantize_outputs."""
    func = mod["main"]
    blocks = list(func.body.blocks)
    if len(blocks) != 1 or not isinstance(blocks[0], relax.DataflowBlock):
        raise ConfigError("quantize.partition_conversions: main must be one dataflow block")
    bindings = list(blocks[0].bindings)
    params = set(func.params)
    result = func.body.body
    output_vars = set(relax.analysis.free_vars(result))
    pre, core, post = _split(bindings, params, output_vars)
    if fully_integral:
        left = _float_ops(core)
        if left:
            listed = ", ".join(f"{n} {op}" for op, n in sorted(left.items(), key=lambda kv: (-kv[1], kv[0])))
            raise ConfigError(
                "quantize.partition_conversions: fully_integral: the quantized core still computes in "
                f"float32: {listed} (use 'enabled' to partition anyway)")
    defined_in = {}
    for part, bs in (("pre", pre), ("core", core), ("post", post)):
        for b in bs:
            defined_in[b.var] = part

    def crossing(src_part, dst_parts):
        """Variables defined in `src_part` (or inputs, for "in") that `dst_parts` read."""
        seen, out = set(), []
        readers = [b.value for b in bindings if defined_in[b.var] in dst_parts]
        if "out" in dst_parts:
            readers.append(result)
        for value in readers:
            for v in relax.analysis.free_vars(value):
                src = "in" if v in params else defined_in.get(v)
                if src == src_part and v not in seen:
                    seen.add(v)
                    out.append(v)
        return out

    # what each part hands on: prefix -> core / suffix / result, core -> suffix / result
    pre_out = crossing("pre", {"core", "post", "out"})
    core_in = crossing("in", {"core"}) + crossing("pre", {"core"})
    core_out = crossing("core", {"post", "out"})
    post_in = crossing("in", {"post", "out"}) + crossing("pre", {"post", "out"}) + core_out

    bb = relax.BlockBuilder()
    new_funcs = {}
    for name, inputs, bs, outputs in (("quantize_inputs", list(func.params), pre, pre_out),
                                      ("quantized_main", core_in, core, core_out),
                                      ("dequantize_outputs", post_in, post, None)):
        copier = _Copy()  # substitutes the part's variables in each value
        fresh = [relax.Var(v.name, v.ty) for v in inputs]
        for old, new in zip(inputs, fresh):
            copier.set_var_remap(old, new)
        part = relax.BlockBuilder()
        with part.function(name, fresh, private=True):
            with part.dataflow():
                for b in bs:
                    copier.set_var_remap(b.var, part.emit(copier.visit_expr(b.value), name_hint=b.var.name))
                value = copier.visit_expr(result) if outputs is None else \
                    relax.Tuple([copier.visit_expr(v) for v in outputs])
                out = part.emit_output(value)
            part.emit_func_output(out)
        new_funcs[name] = part.get()[name]
    gvars = {name: bb.add_func(f, name) for name, f in new_funcs.items()}
    main_params = [relax.Var(v.name, v.ty) for v in func.params]
    env = dict(zip(func.params, main_params))
    attrs = {k: v for k, v in func.attrs.items() if k != "global_symbol"} if func.attrs else None
    with bb.function("main", main_params, attrs=attrs):
        with bb.dataflow():
            pre_res = bb.emit(relax.Call(gvars["quantize_inputs"], main_params))
            for i, v in enumerate(pre_out):
                env[v] = bb.emit(relax.TupleGetItem(pre_res, i))
            core_res = bb.emit(relax.Call(gvars["quantized_main"], [env[v] for v in core_in]))
            for i, v in enumerate(core_out):
                env[v] = bb.emit(relax.TupleGetItem(core_res, i))
            out = bb.emit_output(relax.Call(gvars["dequantize_outputs"], [env[v] for v in post_in]))
        bb.emit_func_output(out)
    out_mod = bb.get()
    for gv, f in mod.functions_items():
        if gv.name_hint != "main" and gv.name_hint not in new_funcs:
            out_mod[gv] = f
    return out_mod


def core_float_ops(mod: tvm.IRModule) -> Counter:
    """For reports: the float32 ops of a partitioned module's quantized core."""
    core = mod["quantized_main"]
    return _float_ops([b for blk in core.body.blocks for b in blk.bindings])

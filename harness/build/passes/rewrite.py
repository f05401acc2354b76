"""One Relax call at a time: the mutator loop the harness's graph passes share."""
from __future__ import annotations

from typing import Callable, Iterable

import tvm


def rewrite_calls(mod: tvm.IRModule, op_names: Iterable[str], rewrite: Callable) -> tvm.IRModule:
    """`mod` with every call of the ops `op_names` in its Relax functions (arguments rewritten
    first) replaced by ``rewrite(builder, call, func)`` -- `func` the function as it was before --
    where that returns an expression; None keeps the call. `builder` emits what the new expression
    needs before it."""
    from tvm import relax  # pylint: disable=import-outside-toplevel

    ops = [tvm.ir.Op.get(name) for name in op_names]

    @relax.expr_functor.mutator
    class _Rewrite(relax.PyExprMutator):  # pylint: disable=abstract-method
        def __init__(self, module, func):
            super().__init__(module)
            self.func = func

        def visit_call_(self, call):  # pylint: disable=arguments-renamed
            call = self.builder_.normalize(super().visit_call_(call))
            if not any(call.op.same_as(op) for op in ops):
                return call
            new = rewrite(self.builder_, call, self.func)
            return call if new is None else new

    for gvar, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            mutator = _Rewrite(mod, func)
            mutator.builder_.update_func(gvar, mutator.visit_expr(func))
            mod = mutator.builder_.get()
    return mod

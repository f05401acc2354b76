"""Graph pass (before legalization): NCHW conv2d and pools whose output width has no divisor near
the vector length are computed a few columns wider and sliced back (see
:func:`harness.schedules.cpu.padded_width`), so that the CPU's default schedules vectorize them."""
from __future__ import annotations

import logging

import tvm

from ...schedules.cpu import padded_width
from ...schedules.analysis import dtype_bits
from ...targets import vector_bits

logger = logging.getLogger(__name__)


def pad_conv_width_pass(target) -> tvm.transform.Pass:
    """Relax pass (before legalization): NCHW conv2d, avg_pool2d and max_pool2d whose output width
    :func:`padded_width` pads are computed wider (more right padding of their input) and then
    sliced back to their width. (Pools in ceil mode are left alone: a wider input could change
    the window count of their last column.)"""
    from tvm import relax

    conv_op = tvm.ir.Op.get("relax.nn.conv2d")
    pool_ops = {name: tvm.ir.Op.get(f"relax.nn.{name}") for name in ("avg_pool2d", "max_pool2d")}
    bits = vector_bits(target)

    def widened_conv(call, padding):
        a = call.attrs
        if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout or a.data_layout)) != ("NCHW", "OIHW", "NCHW"):
            return None
        return relax.op.nn.conv2d(call.args[0], call.args[1], strides=a.strides, padding=padding,
                                  dilation=a.dilation, groups=a.groups, data_layout="NCHW", kernel_layout="OIHW",
                                  out_dtype=str(call.ty.dtype))

    def widened_pool(make):
        def rebuild(call, padding):
            a = call.attrs
            if str(a.layout) != "NCHW" or str(a.out_layout or a.layout) != "NCHW" or bool(a.ceil_mode):
                return None
            return make(call.args[0], pool_size=a.pool_size, strides=a.strides, padding=padding,
                        dilation=a.dilation, ceil_mode=False, count_include_pad=bool(a.count_include_pad),
                        layout="NCHW")
        return rebuild

    rebuilders = [(conv_op, widened_conv),
                  (pool_ops["avg_pool2d"], widened_pool(relax.op.nn.avg_pool2d)),
                  (pool_ops["max_pool2d"], widened_pool(relax.op.nn.max_pool2d))]

    @relax.expr_functor.mutator
    class _Widen(relax.PyExprMutator):  # pylint: disable=abstract-method
        def visit_call_(self, call):  # pylint: disable=arguments-renamed
            call = self.builder_.normalize(super().visit_call_(call))
            rebuild = next((fn for op, fn in rebuilders if call.op.same_as(op)), None)
            if rebuild is None:
                return call
            try:
                width = int(call.ty.shape.values[3])
            except (AttributeError, TypeError):
                return call  # symbolic shape
            wide = padded_width(width, max(1, bits // dtype_bits(str(call.ty.dtype))))
            if wide == width:
                return call
            top, left, bottom, right = (int(v) for v in call.attrs.padding)
            right += (wide - width) * int(call.attrs.strides[1])
            widened = rebuild(call, (top, left, bottom, right))
            if widened is None:
                return call
            logger.debug("cpu default schedule: %s output width %d computed as %d", call.op.name, width, wide)
            return relax.op.strided_slice(self.builder_.normalize(widened), axes=[3], begin=[0], end=[width])

    @tvm.transform.module_pass(opt_level=0, name="HarnessPadConvWidth")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        widen = _Widen(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                widen.builder_.update_func(gvar, widen.visit_expr(func))
        return widen.builder_.get()

    return _pass

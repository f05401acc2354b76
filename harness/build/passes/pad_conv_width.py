"""Graph pass (before legalization): NCHW conv2d and pools whose output width has no divisor near
the vector length are computed a few columns wider and sliced back (see
:func:`harness.schedules.cpu.padded_width`), so that the CPU's default schedules vectorize them."""
from __future__ import annotations

import logging

import tvm

from ...schedules.cpu import padded_width
from ...schedules.intrinsics import fitting_int8_dots
from ...schedules.analysis import dtype_bits
from ...targets import vector_bits
from .packed_int8 import blocks
from .rewrite import rewrite_calls

logger = logging.getLogger(__name__)


def pad_conv_width_pass(target, int8_dot: bool = False, block: int = 0) -> tvm.transform.Pass:
    """Relax pass (before legalization): NCHW conv2d, avg_pool2d and max_pool2d whose output width
    :func:`padded_width` pads are computed wider (more right padding of their input) and then
    sliced back to their width. (Pools in ceil mode are left alone: a wider input could change
    the window count of their last column.) ``int8_dot``: 8-bit ungrouped convs that one of the
    target's dot products takes keep their width (that schedule's vector is output channels, not
    the row, and the slice would keep the requantizing epilogue out of the conv's kernel).
    ``block``: the build's int8 part is channel-blocked (at least `block` channels per block,
    :mod:`harness.build.passes.packed_int8`): pools keep their width, and so do the 8-bit convs
    of any groups whose channels `block` divides. They become ``NCHW{c}c`` after this pass, where
    the vector is the channel block and a wider row only copies the input into a padded one
    (inception_v3's first max pool took 0.38 ms on Zen 5 so), and a sliced conv keeps the int8
    part's layout out of its output (inception's average pools, as depthwise convs by ones under
    ``requantize: integer`` / ``folded``, each got two layout changes and a slice)."""
    from tvm import relax

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

    rebuilders = {"relax.nn.conv2d": widened_conv}
    if not block:
        rebuilders.update({"relax.nn.avg_pool2d": widened_pool(relax.op.nn.avg_pool2d),
                           "relax.nn.max_pool2d": widened_pool(relax.op.nn.max_pool2d)})

    def widen(bb, call, _func):
        try:
            width = int(call.ty.shape.values[3])
        except (AttributeError, TypeError):
            return None  # symbolic shape
        if int8_dot and on_int8_dot(call, target):
            return None
        if block and call.op.name == "relax.nn.conv2d" and blocks(call, block):
            return None
        wide = padded_width(width, max(1, bits // dtype_bits(str(call.ty.dtype))))
        if wide == width:
            return None
        top, left, bottom, right = (int(v) for v in call.attrs.padding)
        stride = int(call.attrs.strides[1])
        right += (wide - width) * stride
        if call.op.name == "relax.nn.conv2d":  # a padded row of whole strides: its reads de-interleave
            right += -(int(call.args[0].ty.shape.values[3]) + left + right) % stride
        widened = rebuilders[call.op.name](call, (top, left, bottom, right))
        if widened is None:
            return None
        logger.debug("cpu default schedule: %s output width %d computed as %d", call.op.name, width, wide)
        return relax.op.strided_slice(bb.normalize(widened), axes=[3], begin=[0], end=[width])

    @tvm.transform.module_pass(opt_level=0, name="HarnessPadConvWidth")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_calls(mod, list(rebuilders), widen)

    return _pass


def on_int8_dot(call, target) -> bool:
    """Whether `call` is an ungrouped conv2d of 8-bit data and int8 weights whose channel counts
    one of `target`'s 8-bit dot products divides (:func:`fitting_int8_dots`)."""
    if call.op.name != "relax.nn.conv2d" or int(call.attrs.groups) != 1:
        return False
    data, weight = (arg.ty for arg in call.args[:2])
    if str(data.dtype) not in ("int8", "uint8") or str(weight.dtype) != "int8":
        return False
    try:
        k, c = (int(v) for v in weight.shape.values[:2])
    except (AttributeError, TypeError):
        return False
    return bool(fitting_int8_dots(target, str(data.dtype), k, c))

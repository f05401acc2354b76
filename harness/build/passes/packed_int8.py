"""Graph pass (before legalization): the 8-bit tensors between int8 convs stored channel-blocked.

TVM's Relax convs are NCHW, so each int8 conv kernel used to repack its input into the layout its
dot product reads (a pass over the input per conv) and write its output NCHW, one channel's row at
a time from accumulators that hold a vector of channels per pixel (a transpose per register
tile). This pass stores the int8 part of the graph as ``NCHW{B}c`` instead -- ``[n, c / B, y, x,
B]``, ``B`` channels of a pixel side by side, ``B`` the number of int32 lanes of the target's
vector (8 with AVX2, 16 with AVX-512 where every blocked conv's channels allow it, else 8): a
dot-product conv's epilogue then writes each pixel's ``B`` channels as one contiguous store of
a whole vector, and the next conv reads the same layout (``B`` is a multiple of every dot
product's group of input channels: 2 for ``vpmaddwd``, 4 for ``vpmaddubsw`` and VNNI). (With 8 on
AVX-512 the epilogue ran at half width: resnet50_v1's 56x56 residual convs 1.4x slower.)

    batch_norm -> elementwise ops; clip(x, lo, hi) -> minimum(maximum(x, lo), hi)
                                            (neither follows a blocked layout: they would hold NCHW)
    conv2d(quantize(pad(x))) -> conv2d(quantize(x)) with the pad in the conv's padding, where the
                                            quantize maps the pad value to 0 (:func:`_pad_folder`)
    ConvertLayout: 8-bit conv2d NCHW -> NCHW{B}c where B divides the input and output channels
                   (the rest stays NCHW); elementwise ops, residual adds, pools and concat follow;
                   layout_transform where a tensor enters or leaves the blocked part
    legalization of the blocked convs (:func:`blocked_conv2d_te`):
        dense and depthwise: a conv block over the blocked data (the block the schedules'
            dot-product and depthwise rules recognise) and one stage that writes the int32 sums
            blocked, which the epilogue then reads in place
        grouped with several channels per group: a conv block with the group as an axis of its
            own (output [n, g, k, y, x], weights reshaped [g, k, c, r, s]), which the dot-product
            rule takes like a dense conv per group (:func:`_grouped_weight` merges groups of fewer
            output channels than a block); the rest (fp32, 16-bit): unblock, TOPI's NCHW conv, block
        3x3 stride-1 dense ones, where the target has no VNNI (`winograd_lanes`): exact integer
            Winograd F(m x m, 3x3), m = `winograd_tile` (:mod:`harness.schedules.winograd`), its
            weights transformed here

The integer sums are the same as NCHW's, so outputs are bit-identical to the NCHW build. Modules
without an 8-bit conv are returned unchanged. ``build.schedules.cpu_int8_blocked: false`` switches
the pass off.
"""
from __future__ import annotations

import math

import tvm

from .rewrite import rewrite_calls

BLOCK = 8  # channels per block: int32 lanes of a 256-bit vector, a multiple of every dot product's group


def blocked_layout(block: int = BLOCK) -> str:
    return f"NCHW{block}c"


def _int8_convs(mod: tvm.IRModule) -> list:
    """The conv2d calls of `mod`'s Relax functions that have 8-bit data."""
    from tvm import relax  # pylint: disable=import-outside-toplevel

    conv_op = tvm.ir.Op.get("relax.nn.conv2d")
    calls = []

    def visit(expr):
        if isinstance(expr, relax.Call) and expr.op.same_as(conv_op):
            ty = getattr(expr.args[0], "ty", None)
            if ty is not None and str(getattr(ty, "dtype", "")) in ("int8", "uint8"):
                calls.append(expr)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return calls


def module_block(convs: list, widest: int) -> int:
    """The channel block of a module whose 8-bit convs are `convs`: `widest` where every conv that
    :data:`BLOCK` blocks, `widest` blocks too, and every grouped one keeps whole groups in it
    (output channels per group a multiple of it: else :func:`_grouped_weight` would merge more
    groups, multiplying more zeros); :data:`BLOCK` otherwise. (One block for the whole module: a
    tensor between two blocks would need a layout change.)"""
    if widest == BLOCK:
        return BLOCK
    for call in convs:
        if not blocks(call, BLOCK):
            continue  # not blocked at all
        if not blocks(call, widest):
            return BLOCK
        groups, (k_out, per_group) = int(call.attrs.groups), (int(v) for v in call.args[1].ty.shape.values[:2])
        if groups > 1 and per_group > 1 and (k_out // groups) % widest:
            return BLOCK
    return widest


def blocked_conv2d_te(data, weight, *, strides, padding, dilation, groups: int, out_dtype: str, block: int,
                      row_bits: int = 0):
    """TE of a conv2d whose data and output are ``NCHW{block}c`` and whose weights are OIHW, or,
    for a grouped conv of 8-bit data, ``[groups, k / groups, c / groups, kh, kw]``. With
    `row_bits` (the target's vector bits), an ungrouped 8-bit conv is computed at
    :func:`harness.schedules.cpu.dense_row_width` columns, a depthwise one at
    :func:`harness.schedules.cpu.depthwise_row_width` (their right padding wider), of which the
    output reads its own: the extra columns stay inside the kernel."""
    from tvm import te, topi  # pylint: disable=import-outside-toplevel

    from ...schedules.int8_conv import GROUPED_CONV  # pylint: disable=import-outside-toplevel

    n, cb, height, width, _ = (int(v) for v in data.shape)
    chans = cb * block
    if len(weight.shape) == 5:
        _, k_group, per_group, kh, kw = (int(v) for v in weight.shape)
        k_out = groups * k_group
    else:
        k_out, per_group, kh, kw = (int(v) for v in weight.shape)
    sh, sw = (int(v) for v in strides)
    dh, dw = (int(v) for v in dilation)
    top, left, bottom, right = (int(v) for v in padding)
    out_h = (height + top + bottom - (kh - 1) * dh - 1) // sh + 1
    out_w = (width + left + right - (kw - 1) * dw - 1) // sw + 1
    eight_bit = str(data.dtype) in ("int8", "uint8") and str(weight.dtype) == "int8"
    dense = groups == 1
    depthwise = groups == chans == k_out and per_group == 1
    wide = out_w
    if eight_bit and dense and row_bits and k_out % (row_bits // 32) == 0:
        from ...schedules.cpu import dense_row_width  # pylint: disable=import-outside-toplevel

        wide = dense_row_width(out_w, k_out // (row_bits // 32), row_bits)
    elif eight_bit and depthwise and row_bits:
        from ...schedules.cpu import depthwise_row_width  # pylint: disable=import-outside-toplevel

        wide = depthwise_row_width(out_w)
    right += (wide - out_w) * sw
    padded = data
    if eight_bit and (top or left or bottom or right):
        padded = topi.nn.pad(data, [0, 0, top, left, 0], [0, 0, bottom, right, 0], name="pad_temp")
    r = te.reduce_axis((0, kh), name="ry")
    s = te.reduce_axis((0, kw), name="rx")

    def window(i, channel, y, x):
        return padded[i, channel // block, y * sh + r * dh, x * sw + s * dw, channel % block].astype(out_dtype)

    if eight_bit and len(weight.shape) == 5:  # grouped, the group an axis of its own
        c = te.reduce_axis((0, per_group), name="rc")
        conv = te.compute(
            (n, groups, k_group, out_h, out_w),
            lambda i, g, k, y, x: te.sum(window(i, g * per_group + c, y, x) * weight[g, k, c, r, s].astype(out_dtype),
                                         axis=[c, r, s]),
            name=GROUPED_CONV)
        if k_group % block == 0:  # each block of output channels in one group
            m = k_group // block
            return te.compute((n, k_out // block, out_h, out_w, block),
                              lambda i, kb, y, x, ki: conv[i, kb // m, (kb % m) * block + ki, y, x],
                              name="T_block")
        return te.compute((n, k_out // block, out_h, out_w, block),
                          lambda i, kb, y, x, ki: conv[i, (kb * block + ki) // k_group, (kb * block + ki) % k_group,
                                                       y, x], name="T_block")
    if eight_bit and (dense or depthwise):
        if dense:  # every input channel c into k
            c = te.reduce_axis((0, chans), name="rc")
            axes, channel, w_channel, name = [c, r, s], lambda k: c, lambda k: c, "conv2d_nchw"
        else:  # input channel k into k
            axes, channel, w_channel, name = [r, s], lambda k: k, lambda k: 0, "depthwise_conv2d_nchw"
        conv = te.compute(
            (n, k_out, out_h, wide),
            lambda i, k, y, x: te.sum(window(i, channel(k), y, x) * weight[k, w_channel(k), r, s].astype(out_dtype),
                                      axis=axes),
            name=name)
    else:
        plain = te.compute((n, chans, height, width),
                           lambda i, c, y, x: data[i, c // block, y, x, c % block], name="T_unblock")
        conv = topi.nn.conv(plain, weight, (sh, sw), (top, left, bottom, right), (dh, dw), groups,
                            "NCHW", "OIHW", out_dtype=out_dtype)
    return te.compute((n, k_out // block, out_h, out_w, block),
                      lambda i, kb, y, x, ki: conv[i, kb * block + ki, y, x], name="T_block")


def blocks(call, block: int) -> bool:
    """Whether the pass blocks the conv2d `call` by `block` channels: an NCHW conv of 8-bit data
    whose input and output channels `block` divides (static shapes)."""
    from tvm import relax  # pylint: disable=import-outside-toplevel

    data, weight = (arg.ty for arg in call.args[:2])
    a = call.attrs
    ok = (str(a.data_layout) == "NCHW" and str(a.kernel_layout) == "OIHW" and str(a.out_layout or "NCHW") == "NCHW"
          and str(data.dtype) in ("int8", "uint8") and isinstance(data.shape, relax.ShapeExpr)
          and isinstance(weight.shape, relax.ShapeExpr)
          and all(isinstance(v, tvm.tirx.IntImm) for v in [*data.shape.values, *weight.shape.values]))
    return ok and int(data.shape.values[1]) % block == 0 and int(weight.shape.values[0]) % block == 0


def _conv_layouts(call, block: int) -> dict:
    """ConvertLayout's desired layouts for one call: ``NCHW{block}c`` for a conv2d :func:`blocks`
    takes, NCHW for other convs (TVM's layout rule checks the input channels only: left to it, a
    conv with 12 output channels would be blocked into nonsense), nothing for other ops (they
    follow their inputs)."""
    if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.nn.conv2d"):
        return {}
    return {"relax.nn.conv2d": [blocked_layout(block) if blocks(call, block) else "NCHW", "OIHW"]}


def _winograd_conv2d(bb, call, block: int, lanes: int, tile: int):
    """The conv as :mod:`harness.schedules.winograd`'s F(tile x tile, 3x3) kernel where it applies
    to it and its weights are a constant (transformed here, once; they decide the chunks of input
    channels the kernel sums exactly), else None."""
    from tvm import relax  # pylint: disable=import-outside-toplevel

    from ...schedules import winograd  # pylint: disable=import-outside-toplevel

    a, (data, weight) = call.attrs, call.args[:2]
    if not (isinstance(weight, tvm.ir.expr.Constant) and str(weight.ty.dtype) == "int8"
            and str(a.out_dtype) == "int32"
            and winograd.applies(str(data.ty.dtype), weight.ty.shape.values, a.strides, a.dilation,
                                 int(a.groups), block, lanes)):
        return None
    values = weight.value.numpy()
    u = winograd.transformed(values, tile)
    chunks = winograd.channel_chunks(values, u, str(data.ty.dtype))
    if not chunks:
        return None
    packed = relax.const(winograd.pack_weights(u, lanes))
    return bb.call_te(winograd.winograd_conv2d_te, data, packed, padding=a.padding, block=block, lanes=lanes,
                      tile=tile, chunks=chunks, primfunc_name_hint=winograd.KERNEL_NAME)


def _legalize_conv2d(bb, call, winograd_lanes: int, winograd_tile: int, row_bits: int):
    a = call.attrs
    layout = str(a.data_layout)
    if not (layout.startswith("NCHW") and layout.endswith("c") and len(layout) > 5) \
            or str(a.kernel_layout) != "OIHW" or str(a.out_layout or layout) != layout:
        return tvm.ir.Op.get("relax.nn.conv2d").get_attr("FLegalize")(bb, call)
    block = int(layout[4:-1])
    if winograd_lanes:
        winograd = _winograd_conv2d(bb, call, block, winograd_lanes, winograd_tile)
        if winograd is not None:
            return winograd
    out_dtype = str(a.out_dtype) if str(a.out_dtype) else str(call.args[0].ty.dtype)
    weight, groups = call.args[1], int(a.groups)
    per_group = int(weight.ty.shape.values[1])
    if groups > 1 and per_group > 1 and str(call.args[0].ty.dtype) in ("int8", "uint8") \
            and str(weight.ty.dtype) == "int8":
        weight, groups = _grouped_weight(bb, weight, groups, block)
    return bb.call_te(blocked_conv2d_te, call.args[0], weight, strides=a.strides, padding=a.padding,
                      dilation=a.dilation, groups=groups, out_dtype=out_dtype, block=block,
                      row_bits=row_bits, primfunc_name_hint="conv2d")


def _grouped_weight(bb, weight, groups: int, block: int):
    """(weights ``[groups, k / groups, c / groups, kh, kw]``, groups) of a grouped conv's OIHW
    weights: a reshape, after merging ``m = block / (k / groups)`` neighbouring groups into one
    where a group has fewer output channels than a block (and the weights are a constant): the
    merged group's weights block-diagonal, zero where an output channel meets another group's
    input channel. The same integer sums (the zeros add nothing), ``m`` times the multiplies, on a
    schedule whose vector of output channels stays in one group."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    from tvm import relax  # pylint: disable=import-outside-toplevel

    k_out, per_group, kh, kw = (int(v) for v in weight.ty.shape.values)
    k_group = k_out // groups
    m = block // k_group if block % k_group == 0 else 1
    if m > 1 and groups % m == 0 and isinstance(weight, tvm.ir.expr.Constant):
        w = weight.value.numpy()
        merged = np.zeros((k_out, m * per_group, kh, kw), w.dtype)
        sub = (np.arange(k_out) % (m * k_group)) // k_group  # each output channel's group within the merged one
        for j in range(m):
            merged[sub == j, j * per_group:(j + 1) * per_group] = w[sub == j]
        weight, groups, k_group, per_group = relax.const(merged), groups // m, m * k_group, m * per_group
    return bb.normalize(relax.op.reshape(weight, (groups, k_group, per_group, kh, kw))), groups


def _clip_as_min_max(bb, call, _func):
    """clip(x, lo, hi) -> minimum(maximum(x, lo), hi)."""
    from tvm import relax  # pylint: disable=import-outside-toplevel

    dtype = str(call.ty.dtype)
    lo, hi = (getattr(arg.value, "value", arg.value) for arg in call.args[1:3])
    return relax.op.minimum(bb.normalize(relax.op.maximum(call.args[0], relax.const(lo, dtype))),
                            relax.const(hi, dtype))


_SCALAR_OPS = {"relax.multiply": lambda v, c: v * c, "relax.add": lambda v, c: v + c,
               "relax.subtract": lambda v, c: v - c, "relax.divide": lambda v, c: v / c,
               "relax.maximum": max, "relax.minimum": min}
_UNARY_OPS = {"relax.floor": math.floor, "relax.round": round, "relax.astype": None}


def _scalar_step(call):
    """``f(v)`` for an elementwise call of one tensor and (for binary ops) a scalar constant,
    applied to a Python number in the call's dtype; None for any other call."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    name = call.op.name if isinstance(call.op, tvm.ir.Op) else ""
    dtype = np.dtype(str(call.ty.dtype))
    if name in _UNARY_OPS:
        fn = _UNARY_OPS[name] or (lambda v: v)
        return lambda v: dtype.type(fn(v))
    if name in _SCALAR_OPS and len(call.args) == 2 and isinstance(call.args[1], tvm.ir.expr.Constant) \
            and hasattr(call.args[1].value, "numpy") and call.args[1].value.numpy().size == 1:
        const = call.args[1].value.numpy().reshape(()).item()
        return lambda v: dtype.type(_SCALAR_OPS[name](v, const))
    return None


def _pad_chain(expr, var2val: dict, uses: dict):
    """(pad call, [elementwise calls from the pad's reader to `expr`]) where `expr` is computed
    from a pad through single-use elementwise steps with scalar constants; else None."""
    from tvm import relax  # pylint: disable=import-outside-toplevel

    pad_op = tvm.ir.Op.get("relax.nn.pad")
    chain = []
    while expr in var2val and uses.get(expr, 0) == 1:
        call = var2val[expr]
        if not isinstance(call, relax.Call):
            return None
        if call.op.same_as(pad_op):
            return call, chain[::-1]
        if _scalar_step(call) is None:
            return None
        chain.append(call)
        expr = call.args[0]
    return None


def _pad_folder():
    """``rewrite_calls`` rewrite: ``conv2d(f(pad(x)))`` -> ``conv2d(f(x))`` with the pad in the
    conv's padding, where the pad is a constant spatial pad of a 4-D NCHW tensor, ``f`` a chain of
    elementwise ops with scalar constants (the quantize between them: multiply, add, floor, clip,
    cast) that maps the pad value to exactly 0 (what the conv pads with), and the pad and the chain
    have no other reader. (Relax has no layout rule for pad: left as it is it would hold the
    tensor in NCHW.)"""
    from tvm import relax  # pylint: disable=import-outside-toplevel

    facts = {}  # function -> (var -> value, var -> readers)

    def fold(bb, call, func):
        if str(call.attrs.data_layout) != "NCHW":
            return None
        if func not in facts:
            facts[func] = (relax.analysis.get_var2val(func), _var_uses(func))
        found = _pad_chain(call.args[0], *facts[func])
        if found is None:
            return None
        pad, chain = found
        width = [int(v) for v in pad.attrs.pad_width]
        if str(pad.attrs.pad_mode) != "constant" or len(width) != 8 or any(width[:4]):
            return None
        value = float(pad.attrs.pad_value)
        for step in chain:
            value = _scalar_step(step)(value)
        if value != 0:
            return None
        data = pad.args[0]
        for step in chain:
            data = bb.emit(relax.Call(step.op, [data, *step.args[1:]], step.attrs))
        c = call.attrs
        top, left, bottom, right = (int(v) for v in c.padding)
        return relax.op.nn.conv2d(data, call.args[1], strides=c.strides,
                                  padding=(top + width[4], left + width[6], bottom + width[5], right + width[7]),
                                  dilation=c.dilation, groups=c.groups, data_layout="NCHW",
                                  kernel_layout=str(c.kernel_layout), out_layout=str(c.out_layout or "NCHW"),
                                  out_dtype=str(call.ty.dtype))

    return fold


def _var_uses(func) -> dict:
    from tvm import relax  # pylint: disable=import-outside-toplevel

    uses = {}

    def visit(expr):
        if isinstance(expr, relax.Call):
            args = expr.args
        elif isinstance(expr, relax.Tuple):
            args = expr.fields
        else:
            return
        for arg in args:
            if isinstance(arg, relax.Var):
                uses[arg] = uses.get(arg, 0) + 1

    relax.analysis.post_order_visit(func, visit)
    return uses


def blocked_int8_pass(block: int = BLOCK, winograd_lanes: int = 0, winograd_tile: int = 4,
                      row_bits: int = 0) -> tvm.transform.Pass:
    """The module pass described above (identity on modules without an 8-bit conv), at `block`
    channels per block where the module's convs allow it (:func:`module_block`); with
    `winograd_lanes` (the int32 lanes of the target's vpmaddwd), the 3x3 stride-1 convs
    :func:`harness.schedules.winograd.applies` to legalized as integer Winograd F(`winograd_tile`
    x `winograd_tile`, 3x3); with `row_bits` (the target's vector bits), the other ungrouped
    8-bit convs computed at the row width their register tile wants (:func:`blocked_conv2d_te`)."""
    from tvm import relax  # pylint: disable=import-outside-toplevel

    @tvm.transform.module_pass(opt_level=0, name="HarnessBlockedInt8")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        convs = _int8_convs(mod)
        if not convs:
            return mod
        chosen = module_block(convs, block)
        mod = relax.transform.DecomposeOpsForInference()(mod)  # batch norm as elementwise ops
        mod = rewrite_calls(mod, ["relax.clip"], _clip_as_min_max)
        mod = rewrite_calls(mod, ["relax.nn.conv2d"], _pad_folder())
        mod = relax.transform.DeadCodeElimination()(relax.transform.Normalize()(mod))
        mod = relax.transform.ConvertLayout({}, layout_cb=lambda call: _conv_layouts(call, chosen))(mod)
        mod = relax.transform.Normalize()(mod)
        return relax.transform.LegalizeOps(
            {"relax.nn.conv2d": lambda bb, call: _legalize_conv2d(bb, call, winograd_lanes, winograd_tile, row_bits)})(mod)

    return _pass

"""The analysis and operand packing that every int8 conv schedule of the harness shares (CPU dot
products, CUDA dp4a): where the loops of a plain 8-bit ``conv2d_nchw`` block are, and how its data
and weights are packed inside the kernel for an instruction that reduces ``red`` input channels."""
from __future__ import annotations

from typing import List, Optional

from tvm import s_tir, tirx

from .analysis import (Block, NotApplicable, const_int, inline_all, is_padding, param_buffers,
                       writes_param)


def var_index(expr, iters) -> Optional[int]:
    """Index into `iters` of the block iter `expr` is (None for a constant, error otherwise)."""
    if isinstance(expr, tirx.IntImm):
        return None
    for i, iv in enumerate(iters):
        if iv.var.same_as(expr):
            return i
    raise NotApplicable(f"index {expr} is not a plain block iter")


class Int8Conv:  # pylint: disable=too-few-public-methods,too-many-instance-attributes
    """Where the loops of a plain 8-bit conv block are: the block-iter indices of the output
    channel (k), input channel (c), output row (y) and column (x) -- and of the group (g, None for
    a dense conv), where k and c count the channels of one group --, their extents, and the data's
    element type."""

    def __init__(self, data_dtype: str, k_i: int, c_i: int, y_i: Optional[int], x_i: int, extents: list,
                 g_i: Optional[int] = None, taps: int = 1):
        self.data_dtype = data_dtype
        self.k_i, self.c_i, self.y_i, self.x_i, self.g_i = k_i, c_i, y_i, x_i, g_i
        self.k_ext, self.c_ext, self.x_ext = extents[k_i], extents[c_i], extents[x_i]
        self.y_ext = 1 if y_i is None else extents[y_i]
        self.taps = taps  # kernel positions (r x s)


# the grouped 8-bit conv over channel-blocked data (harness.build.passes.packed_int8): output
# [n, g, k, y, x], weights [g, k, c, r, s] (k, c: the channels of group g)
GROUPED_CONV = "group_conv2d_blocked"


def int8_conv_iters(sch: s_tir.Schedule, anchor: Block, *, grouped: bool = False) -> Int8Conv:
    """The :class:`Int8Conv` of `anchor`, which must be TOPI's ``conv2d_nchw`` (or, with
    `grouped`, a :data:`GROUPED_CONV`) with 8-bit data, int8 weights that are a parameter of the
    kernel, and an int32 result (NotApplicable else)."""
    block = sch.get(anchor.rv)
    names = ("conv2d_nchw", GROUPED_CONV) if grouped else ("conv2d_nchw",)
    if block.name_hint not in names or len(block.reads) != 2 or len(block.writes) != 1:
        raise NotApplicable(f"not a plain {' or '.join(names)}")
    data_region, weight_region = block.reads
    out_region = block.writes[0]
    data_dtype = str(data_region.source.dtype)
    if data_dtype not in ("int8", "uint8") or str(weight_region.source.dtype) != "int8" \
            or str(out_region.source.dtype) != "int32":
        raise NotApplicable("not an 8-bit x int8 -> int32 conv")
    if not any(weight_region.source.same_as(p) for p in param_buffers(sch)):
        raise NotApplicable("weights are computed in the kernel")
    iters = anchor.iters
    w_idx = [var_index(rng.min, iters) if const_int(rng.extent) == 1 else None for rng in weight_region.region]
    o_idx = [var_index(rng.min, iters) if const_int(rng.extent) == 1 else None for rng in out_region.region]
    g_i = None
    if block.name_hint == GROUPED_CONV:  # [n, g, k, y, x] from [g, k, c, r, s]
        g_i, w_idx = w_idx[0], w_idx[1:]
        if g_i is None or o_idx[1] != g_i:
            raise NotApplicable("unexpected grouped conv indexing")
        o_idx = [o_idx[0], *o_idx[2:]]
    k_i, c_i, x_i = w_idx[0], w_idx[1], o_idx[3]
    if k_i is None or c_i is None or x_i is None or k_i != o_idx[1]:
        raise NotApplicable("unexpected conv2d_nchw indexing")
    extents = [const_int(iv.dom.extent) for iv in iters]
    taps = 1
    for i, iv in enumerate(iters):
        if iv.iter_type == iv.CommReduce and i != c_i:
            taps *= extents[i]
    return Int8Conv(data_dtype, k_i, c_i, o_idx[2], x_i, extents, g_i, taps)


def _data_map(shape, red: int):
    """Index map of the conv's data (of `shape`) to ``[n, c / red, y, x, red]``: from NCHW, or from
    a channel-blocked ``[n, c / b, y, x, b]`` whose blocks `red` does not divide."""
    if len(shape) == 4:
        return lambda n, c, y, x: (n, c // red, y, x, c % red)
    block = const_int(shape[4])
    return lambda n, cb, y, x, ci: (n, (cb * block + ci) // red, y, x, (cb * block + ci) % red)


class PackedConv:  # pylint: disable=too-few-public-methods
    """What :func:`pack_int8_conv` left around the conv block."""

    def __init__(self, prologue: list, rest: list, epilogue, weights):
        self.prologue = prologue  # blocks before the conv that stay (the data packing stage among them)
        self.rest = rest  # blocks after the epilogue that stay
        self.epilogue = epilogue  # the one block reading the accumulator, or None (it is an output)
        self.weights = weights  # the weight layout-rewrite block


def data_block(sch: s_tir.Schedule, anchor: Block, red: int, channels: Optional[int] = None) -> Optional[int]:
    """Channels per block of the conv's data where it is channel-blocked ``[n, c / b, y, x, b]``
    (:mod:`harness.build.passes.packed_int8`) with a multiple of `red` per block, so that a dot
    product of `red` channels reads it as it is; None where it is NCHW, or `red` does not divide
    the block, or the block does not divide the `channels` one output channel reads (a group's)."""
    shape = sch.get(anchor.rv).reads[0].source.shape
    block = const_int(shape[-1]) if len(shape) == 5 else None
    if block is None or block % red or (channels is not None and channels % block):
        return None
    return block


def split_around(sch: s_tir.Schedule, blocks: List[Block], anchor: Block, keep=lambda sch, block_rv: False):
    """Inline what can be inlined around the reduction `anchor` (before it, all but what `keep`
    holds back): (the blocks before it that stay, the blocks after its epilogue that stay, the one
    block reading its accumulator -- None where the anchor writes an output of the kernel);
    NotApplicable where several blocks read the accumulator."""
    params = param_buffers(sch)
    idx = next(i for i, b in enumerate(blocks) if b is anchor)
    prologue = inline_all(sch, blocks[:idx], params, keep=keep)
    rest = inline_all(sch, blocks[idx + 1:], params)
    if writes_param(sch, anchor.rv, params):
        return prologue, rest, None
    consumers = sch.get_consumers(anchor.rv)
    if len(consumers) != 1:
        raise NotApplicable("the accumulator is read by several blocks")
    epilogue = consumers[0]
    return prologue, [b for b in rest if not sch.get(b.rv).same_as(sch.get(epilogue))], epilogue


def pack_weights(sch: s_tir.Schedule, anchor: Block, index_map):
    """The anchor's weights (its second operand, a kernel parameter) read through a layout-rewrite
    block into the layout `index_map` gives: split out of the kernel and folded into the constant
    at build. Returns that block."""
    weights = sch.cache_read(anchor.rv, 1, "global")
    sch.transform_layout(weights, ("write", 0), index_map)
    sch.annotate(weights, "meta_schedule.layout_rewrite_preproc", 1)
    return weights


def pack_int8_conv(sch: s_tir.Schedule, blocks: List[Block], anchor: Block, red: int, weight_map,
                   channels: Optional[int] = None) -> PackedConv:
    """Inline what can be inlined around an 8-bit conv and pack its operands for a dot product of
    `red` input channels: the data becomes ``[n, c / red, y, x, red]`` (written by the padding
    stage, or by a packing stage of its own) -- unless it is channel-blocked already with a
    multiple of `red` channels per block (and per group: `channels`, see :func:`data_block`), which the
    dot product reads as it is --, the weights
    ``weight_map(k, c, r, s)`` in a layout-rewrite block (split out of the kernel and folded into
    the constant at build)."""
    data = sch.get(anchor.rv).reads[0].source
    prologue, rest, epilogue = split_around(sch, blocks, anchor, keep=is_padding)
    producers = [p for p in sch.get_producers(anchor.rv)
                 if any(w.source.same_as(data) for w in sch.get(p).writes)]
    if data_block(sch, anchor, red, channels) is None:
        if producers:
            pack = producers[0]
        else:
            pack = sch.cache_read(anchor.rv, 0, "global")
            prologue.append(Block(pack, [], [], False))
        sch.transform_layout(pack, ("write", 0), _data_map(data.shape, red))
    return PackedConv(prologue, rest, epilogue, pack_weights(sch, anchor, weight_map))

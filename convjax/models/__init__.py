"""convjax.models: networks built from convjax NNX modules, switchable by config.

``build(name, *, num_classes, in_features, padding="zero", pool="max", norm="batch",
conv=None, axis_name=None, dtype=None, rngs, **kwargs)`` looks a model up by name;
``available_models()`` lists the names (VGG-11/16 with CIFAR and ImageNet heads, CIFAR
ResNet-20/56, ImageNet ResNet-18/50, FlexNet-7, a tiny FlexNet, FlexTCN and a small CNN for
8x8 digits). See :mod:`convjax.models.blocks` for the switches and their valid combinations;
``model_info(name)`` says which switches a model honours and which keywords it accepts, and
:class:`convjax.models.spec.ModelSpec` is the checked model part of a run.
"""

from convjax.models.blocks import (
    CONV_TYPES,
    NORM_TYPES,
    PADDING_MODES,
    POOL_TYPES,
    Classifier,
    ConvNorm,
    LayerConfig,
    Pool,
)
from convjax.models.flexnet import FLEXNET7_WIDTHS, FlexBlock, FlexNet
from convjax.models.flextcn import FlexTCN
from convjax.models.registry import (
    SWITCHES,
    ModelInfo,
    available_models,
    build,
    load_model_source,
    model_info,
    model_source,
    register,
)
from convjax.models.resnet import BasicBlock, Bottleneck, CifarResNet, ResNet
from convjax.models.small import SmallCNN
from convjax.models.vgg import VGG, VGG_STAGES

__all__ = [
    "CONV_TYPES",
    "FLEXNET7_WIDTHS",
    "NORM_TYPES",
    "PADDING_MODES",
    "POOL_TYPES",
    "SWITCHES",
    "VGG",
    "VGG_STAGES",
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "Classifier",
    "ConvNorm",
    "FlexBlock",
    "FlexNet",
    "FlexTCN",
    "LayerConfig",
    "ModelInfo",
    "Pool",
    "ResNet",
    "SmallCNN",
    "available_models",
    "build",
    "load_model_source",
    "model_info",
    "model_source",
    "register",
]

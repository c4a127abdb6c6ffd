"""Model registry: look models up by name from a config.

``build(name, *, num_classes, in_features, padding, pool, norm, conv, axis_name, dtype, rngs,
**kwargs)`` resolves the switches into a :class:`convjax.models.blocks.LayerConfig` and calls
the registered constructor. Keyword arguments that are ``LayerConfig`` fields
(``param_dtype``, ``bn_momentum``, ``bn_epsilon``, ``flex_kernel_size``, ``flex_kwargs``,
``deconv_kwargs``) go to the config; the rest go to the model (e.g. ``width_multiplier``,
``widths``, ``head``, ``stem``, ``dropout``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from flax import nnx

from convjax.models.blocks import LayerConfig
from convjax.models.flexnet import FLEXNET7_WIDTHS, FlexNet
from convjax.models.flextcn import FlexTCN
from convjax.models.resnet import CifarResNet, ResNet
from convjax.models.small import SmallCNN
from convjax.models.vgg import VGG, VGG_STAGES

#: ``constructor(*, num_classes, in_features, cfg, rngs, **kwargs) -> nnx.Module``.
ModelConstructor = Callable[..., nnx.Module]

_REGISTRY: dict[str, ModelConstructor] = {}
_DEFAULT_CONV: dict[str, str] = {}
_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(LayerConfig)) - {
    "padding",
    "pool",
    "norm",
    "conv",
    "axis_name",
    "dtype",
}


def register(
    name: str, *, default_conv: str = "standard"
) -> Callable[[ModelConstructor], ModelConstructor]:
    """Decorator registering ``constructor(*, num_classes, in_features, cfg, rngs, **kw)``.

    ``default_conv`` is the ``conv`` switch used when :func:`build` gets ``conv=None``.

    Example:
      >>> @register("my_net")
      ... def my_net(*, num_classes, in_features, cfg, rngs):
      ...     return SmallCNN((8,), num_classes=num_classes, in_features=in_features,
      ...                     cfg=cfg, rngs=rngs)
      >>> "my_net" in available_models()
      True
      >>> del _REGISTRY["my_net"]  # (this example only: keep the registry as shipped)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty string, got {name!r}.")

    def decorator(fn: ModelConstructor) -> ModelConstructor:
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered.")
        _REGISTRY[name] = fn
        _DEFAULT_CONV[name] = default_conv
        return fn

    return decorator


def available_models() -> list[str]:
    """Sorted names accepted by :func:`build`.

    Example:
      >>> "resnet20" in available_models()
      True
    """
    return sorted(_REGISTRY)


def build(
    name: str,
    *,
    num_classes: int,
    in_features: int,
    padding: str = "zero",
    pool: str = "max",
    norm: str = "batch",
    conv: str | None = None,
    axis_name: str | None = None,
    dtype: Any = None,
    rngs: nnx.Rngs,
    **kwargs: Any,
) -> nnx.Module:
    """Build a registered model: ``model(x)`` maps ``(N, H, W, C)`` (``(N, L, C)`` for
    ``flextcn``) to logits ``(N, num_classes)``; ``model.train()``/``model.eval()`` switch
    dropout and norm statistics.

    Args:
      name: one of :func:`available_models`.
      num_classes: number of logits.
      in_features: input channels.
      padding: ``"zero" | "reflect" | "replicate" | "circular" | "partial" | "learned"``.
      pool: ``"max" | "avg" | "soft"``.
      norm: ``"batch" | "deconv" | "none"``.
      conv: ``"standard" | "flex"``; ``None`` = the model's own (``"flex"`` for ``flexnet*``
        and ``flextcn``, ``"standard"`` otherwise).
      axis_name: named axis for cross-device statistics (BatchNorm, deconvolution moments).
      dtype: compute dtype (``None``: the input's); parameters stay ``param_dtype`` (fp32).
      rngs: ``nnx.Rngs`` (``params``; dropout models also draw ``dropout``).
      **kwargs: ``LayerConfig`` fields or model keyword arguments (module docstring).

    Raises:
      ValueError: unknown name or switch value, or a switch combination that cannot work.

    Example:
      >>> import jax.numpy as jnp
      >>> model = build("digits_cnn", num_classes=10, in_features=1, pool="soft",
      ...               rngs=nnx.Rngs(0))
      >>> model(jnp.ones((2, 8, 8, 1))).shape
      (2, 10)
    """
    if name not in _REGISTRY:
        raise ValueError(f"`name` must be one of {available_models()}, got {name!r}.")
    layer_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _CONFIG_FIELDS}
    cfg = LayerConfig(
        padding=padding,
        pool=pool,
        norm=norm,
        conv=_DEFAULT_CONV[name] if conv is None else conv,
        axis_name=axis_name,
        dtype=dtype,
        **layer_kwargs,
    )
    return _REGISTRY[name](
        num_classes=num_classes, in_features=in_features, cfg=cfg, rngs=rngs, **kwargs
    )


def _vgg(stages: str, head: str) -> ModelConstructor:
    def make(**kw: Any) -> nnx.Module:
        kw.setdefault("head", head)
        return VGG(VGG_STAGES[stages], **kw)

    return make


for _depth in (11, 16):
    register(f"vgg{_depth}")(_vgg(f"vgg{_depth}", "cifar"))
    register(f"vgg{_depth}_imagenet")(_vgg(f"vgg{_depth}", "imagenet"))


@register("resnet20")
def resnet20(**kw: Any) -> nnx.Module:
    """CIFAR ResNet-20 (3 stages x 3 basic blocks, widths 16/32/64, ~0.27M parameters)."""
    return CifarResNet(20, **kw)


@register("resnet56")
def resnet56(**kw: Any) -> nnx.Module:
    """CIFAR ResNet-56 (3 stages x 9 basic blocks, widths 16/32/64, ~0.85M parameters)."""
    return CifarResNet(56, **kw)


@register("resnet18")
def resnet18(**kw: Any) -> nnx.Module:
    """ImageNet ResNet-18 (basic blocks [2, 2, 2, 2], 11.7M parameters at 1000 classes)."""
    return ResNet("basic", (2, 2, 2, 2), **kw)


@register("resnet50")
def resnet50(**kw: Any) -> nnx.Module:
    """ImageNet ResNet-50 (bottleneck blocks [3, 4, 6, 3], 25.6M parameters at 1000 classes)."""
    return ResNet("bottleneck", (3, 4, 6, 3), **kw)


@register("flexnet7", default_conv="flex")
def flexnet7(**kw: Any) -> nnx.Module:
    """FlexNet-7 (stem 24, blocks 24,24,36,36,36,48,48; ~0.67M parameters on CIFAR-10)."""
    kw.setdefault("widths", FLEXNET7_WIDTHS)
    return FlexNet(**kw)


@register("flexnet_tiny", default_conv="flex")
def flexnet_tiny(**kw: Any) -> nnx.Module:
    """A CPU-sized FlexNet: stem 8, blocks 8 and 16, one 2x2 pool after the first block."""
    kw.setdefault("widths", (8, 16))
    kw.setdefault("pool_after", (0,))
    kw.setdefault("dropout", 0.1)
    return FlexNet(**kw)


@register("flextcn", default_conv="flex")
def flextcn(**kw: Any) -> nnx.Module:
    """FlexTCN for sequences ``(N, L, C)``: causal FlexConv residual blocks, widths 32 x 4."""
    return FlexTCN(**kw)


@register("digits_cnn")
def digits_cnn(**kw: Any) -> nnx.Module:
    """Small CNN for 8x8 digits (widths 32, 64; ~66k parameters): the trainer's default."""
    return SmallCNN(**kw)


__all__ = ["ModelConstructor", "available_models", "build", "register"]

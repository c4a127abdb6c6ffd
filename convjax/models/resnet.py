"""ResNets (He et al. 2016): CIFAR ResNet-20/56 and ImageNet ResNet-18/50, every switch exposed.

Residual unit: ``y = relu(F(x) + shortcut(x))`` (He et al. 2016, eq. 1), ``F`` built from
:class:`convjax.models.blocks.ConvNorm` blocks (conv -> norm -> ReLU, the last without ReLU).

* CIFAR ResNet-(6n+2) (paper section 4.2): 3x3 stem conv with 16 channels, three stages of
  ``n`` basic blocks with 16/32/64 channels (stride 2 at the start of stages 2 and 3), global
  average pool, linear. Shortcuts are parameter-free (option A: stride-2 subsampling and
  zero-filled extra channels), which gives the published 0.27M (ResNet-20) and 0.85M
  (ResNet-56) parameters. No pooling layers, so the ``pool`` switch has no effect here.
* ImageNet ResNet-18 (basic blocks [2, 2, 2, 2]) and ResNet-50 (bottleneck blocks
  [3, 4, 6, 3], stride on the 3x3 conv, expansion 4), widths 64/128/256/512, projection
  shortcuts (1x1 conv + norm) where the shape changes: 11.69M and 25.56M parameters.
  Stem (``stem="imagenet"``): 7x7 stride-2 conv -> norm -> ReLU -> pool, where the pool is
  3x3 stride 2 (padding 1) for ``pool="max"``/``"avg"`` and 2x2 stride 2 for ``pool="soft"``,
  as in the SoftPool repository. ``stem="cifar"`` uses a 3x3 stride-1 conv and no pool (the
  CIFAR ResNet-18 of the Network Deconvolution paper).
* ``norm="deconv"``: as the reference code, the ImageNet stem's deconvolution gets 15
  Newton-Schulz iterations and the freeze schedule
  (:data:`convjax.models.blocks.DECONV_FIRST_LAYER`); CIFAR stems use the defaults. The
  ImageNet ResNets' deconvolution conv weights start from kaiming fan-out
  ``N(0, 2 / fan_out)`` (the reference ImageNet ResNets' init; their biases and the
  Delinear head keep PyTorch's defaults); ``stem="cifar"`` keeps PyTorch's defaults
  everywhere, as the reference CIFAR models do (:class:`convjax.nnx.DeconvConv`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from convjax._checks import check_choice, check_positive
from convjax.models.blocks import (
    DECONV_FIRST_LAYER,
    Classifier,
    ConvNorm,
    LayerConfig,
    Pool,
    check_model_input,
    global_avg_pool,
)
from convjax.ops.deconv import kaiming_fan_out_init


class BasicBlock(nnx.Module):
    """Two 3x3 ConvNorm layers plus a shortcut: ``relu(BN(conv(relu(BN(conv(x))))) + s(x))``.

    ``shortcut="projection"``: 1x1 strided ConvNorm where the shape changes (option B);
    ``shortcut="zero_pad"``: subsample by ``strides`` and append zero channels (option A,
    parameter-free, the CIFAR ResNets).

    Example:
      >>> blk = BasicBlock(8, 16, strides=2, cfg=LayerConfig(), rngs=nnx.Rngs(0))
      >>> blk(jnp.ones((2, 8, 8, 8))).shape
      (2, 4, 4, 16)
    """

    expansion = 1

    def __init__(
        self,
        in_features: int,
        features: int,
        *,
        strides: int = 1,
        cfg: LayerConfig,
        shortcut: str = "projection",
        rngs: nnx.Rngs,
    ):
        check_choice(shortcut, ("projection", "zero_pad"), "shortcut")
        self.conv1 = ConvNorm(in_features, features, 3, strides=strides, cfg=cfg, rngs=rngs)
        self.conv2 = ConvNorm(features, features, 3, cfg=cfg, act=False, rngs=rngs)
        self.strides = strides
        self.extra_channels = features - in_features
        self.projection = nnx.data(None)
        self.shortcut_type = shortcut
        if shortcut == "projection" and (strides != 1 or in_features != features):
            self.projection = ConvNorm(
                in_features, features, 1, strides=strides, cfg=cfg, act=False, rngs=rngs
            )

    def _shortcut(self, x: jax.Array) -> jax.Array:
        if self.projection is not None:
            return self.projection(x)
        if self.shortcut_type == "zero_pad":
            if self.strides != 1:
                x = x[:, :: self.strides, :: self.strides, :]
            if self.extra_channels > 0:
                x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, self.extra_channels)))
        return x

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv2(self.conv1(x))
        return jax.nn.relu(y + self._shortcut(x).astype(y.dtype))


class Bottleneck(nnx.Module):
    """1x1 reduce -> 3x3 (strided) -> 1x1 expand (x4), plus a projection shortcut (ResNet v1.5).

    Example:
      >>> blk = Bottleneck(16, 8, strides=2, cfg=LayerConfig(), rngs=nnx.Rngs(0))
      >>> blk(jnp.ones((2, 8, 8, 16))).shape
      (2, 4, 4, 32)
    """

    expansion = 4

    def __init__(
        self,
        in_features: int,
        features: int,
        *,
        strides: int = 1,
        cfg: LayerConfig,
        rngs: nnx.Rngs,
    ):
        out = features * self.expansion
        self.conv1 = ConvNorm(in_features, features, 1, cfg=cfg, rngs=rngs)
        self.conv2 = ConvNorm(features, features, 3, strides=strides, cfg=cfg, rngs=rngs)
        self.conv3 = ConvNorm(features, out, 1, cfg=cfg, act=False, rngs=rngs)
        self.projection = nnx.data(None)
        if strides != 1 or in_features != out:
            self.projection = ConvNorm(
                in_features, out, 1, strides=strides, cfg=cfg, act=False, rngs=rngs
            )

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv3(self.conv2(self.conv1(x)))
        s = x if self.projection is None else self.projection(x)
        return jax.nn.relu(y + s.astype(y.dtype))


class CifarResNet(nnx.Module):
    """CIFAR ResNet-(6n+2): ``(N, H, W, in_features) -> (N, num_classes)``.

    Args:
      depth: 6n + 2 (20, 32, 44, 56, 110, ...).
      num_classes, in_features: logits and input channels.
      cfg: the switches.
      widths: the three stage widths (16, 32, 64 in the paper).
      rngs: parameter RNGs.

    Example:
      >>> from convjax.models import build
      >>> model = build("resnet20", num_classes=10, in_features=3, rngs=nnx.Rngs(0))
      >>> model(jnp.ones((2, 32, 32, 3))).shape
      (2, 10)
    """

    def __init__(
        self,
        depth: int,
        *,
        num_classes: int,
        in_features: int,
        cfg: LayerConfig,
        widths: Sequence[int] = (16, 32, 64),
        rngs: nnx.Rngs,
    ):
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"`depth` of a CIFAR ResNet must be 6n + 2 (n >= 1), got {depth}.")
        if len(widths) != 3:
            raise ValueError(f"`widths` must have 3 entries (one per stage), got {widths!r}.")
        check_positive(num_classes, "num_classes")
        n = (depth - 2) // 6
        self.in_features = in_features
        self.stem = ConvNorm(in_features, widths[0], 3, cfg=cfg, rngs=rngs)
        blocks = []
        c_in = widths[0]
        for stage, w in enumerate(widths):
            for i in range(n):
                strides = 2 if stage > 0 and i == 0 else 1
                blocks.append(
                    BasicBlock(c_in, w, strides=strides, cfg=cfg, shortcut="zero_pad", rngs=rngs)
                )
                c_in = w
        self.blocks = nnx.List(blocks)
        self.classifier = Classifier(c_in, num_classes, cfg=cfg, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_model_input(x, self.in_features)
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.classifier(global_avg_pool(x))


class ResNet(nnx.Module):
    """ImageNet-style ResNet: ``(N, H, W, in_features) -> (N, num_classes)``.

    Args:
      block: ``"basic"`` (ResNet-18/34) or ``"bottleneck"`` (ResNet-50/101/152).
      stage_sizes: blocks per stage, e.g. ``(2, 2, 2, 2)``.
      num_classes, in_features: logits and input channels.
      cfg: the switches (``pool`` selects the stem pool; see the module docstring).
      stem: ``"imagenet"`` (7x7/2 conv + pool) or ``"cifar"`` (3x3/1 conv, no pool).
      width_multiplier: scales every width (64, 128, 256, 512), e.g. 1/8 for tests.
      rngs: parameter RNGs.

    Example:
      >>> from convjax.models import build
      >>> model = build("resnet18", num_classes=10, in_features=3, width_multiplier=0.125,
      ...               rngs=nnx.Rngs(0))
      >>> model(jnp.ones((2, 32, 32, 3))).shape
      (2, 10)
    """

    def __init__(
        self,
        block: str,
        stage_sizes: Sequence[int],
        *,
        num_classes: int,
        in_features: int,
        cfg: LayerConfig,
        stem: str = "imagenet",
        width_multiplier: float = 1.0,
        rngs: nnx.Rngs,
    ):
        check_choice(block, ("basic", "bottleneck"), "block")
        check_choice(stem, ("imagenet", "cifar"), "stem")
        check_positive(width_multiplier, "width_multiplier")
        check_positive(num_classes, "num_classes")
        block_cls = BasicBlock if block == "basic" else Bottleneck
        widths = [max(1, round(w * width_multiplier)) for w in (64, 128, 256, 512)]
        self.in_features = in_features
        self.stem_type = stem
        head_cfg = cfg
        if stem == "imagenet" and cfg.norm == "deconv" and "kernel_init" not in cfg.deconv_kwargs:
            # The reference ImageNet ResNets: kaiming fan-out on every FastDeconv weight.
            kwargs = {**cfg.deconv_kwargs, "kernel_init": kaiming_fan_out_init()}
            cfg = dataclasses.replace(cfg, deconv_kwargs=kwargs)
        if stem == "imagenet":
            self.stem = ConvNorm(
                in_features,
                widths[0],
                7,
                strides=2,
                cfg=cfg,
                deconv_overrides=DECONV_FIRST_LAYER,  # the reference ImageNet ResNets' stem
                rngs=rngs,
            )
            if cfg.pool == "soft":
                self.stem_pool = Pool("soft", (2, 2), (2, 2))
            else:
                self.stem_pool = Pool(cfg.pool, (3, 3), (2, 2), ((1, 1), (1, 1)))
        else:
            self.stem = ConvNorm(in_features, widths[0], 3, cfg=cfg, rngs=rngs)
            self.stem_pool = nnx.data(None)
        blocks = []
        c_in = widths[0]
        for stage, (w, size) in enumerate(zip(widths, stage_sizes)):
            for i in range(size):
                strides = 2 if stage > 0 and i == 0 else 1
                blocks.append(block_cls(c_in, w, strides=strides, cfg=cfg, rngs=rngs))
                c_in = w * block_cls.expansion
        self.blocks = nnx.List(blocks)
        self.classifier = Classifier(c_in, num_classes, cfg=head_cfg, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_model_input(x, self.in_features)
        x = self.stem(x)
        if self.stem_pool is not None:
            x = self.stem_pool(x)
        for block in self.blocks:
            x = block(x)
        return self.classifier(global_avg_pool(x))

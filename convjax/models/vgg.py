"""VGG-11/16 (Simonyan & Zisserman 2015) with CIFAR and ImageNet heads, every switch exposed.

Feature extractor: stages of 3x3 ConvNorm blocks (``ConvNorm`` = conv -> norm -> ReLU, see
:mod:`convjax.models.blocks`), each stage closed by a 2x2 stride-2 pool (max/avg/SoftPool by
the ``pool`` switch). Heads:

* ``head="cifar"``: global average pool -> linear (the common CIFAR VGG; on 32x32 inputs the
  last feature map is 1x1, so this is the usual "flatten -> Linear(512, classes)").
* ``head="imagenet"``: adaptive average pool to 7x7 -> FC 4096 -> ReLU -> Dropout(0.5) ->
  FC 4096 -> ReLU -> Dropout(0.5) -> FC classes (torchvision layout). With ``norm="deconv"``
  every FC layer is a ``DeconvDense``, and the first conv gets the reference code's
  first-layer settings (:data:`convjax.models.blocks.DECONV_FIRST_LAYER`: 15 Newton-Schulz
  iterations, freeze schedule) with either head.

Parameter counts (``norm="none"``, i.e. conv with bias, 1000 classes): VGG-16 ImageNet
138,357,544 and VGG-11 132,863,336, the published figures; with ``norm="batch"`` the conv bias
is replaced by BatchNorm's shift, giving the same totals plus one scale per channel.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

from convjax._checks import check_choice, check_positive
from convjax.models.blocks import (
    DECONV_FIRST_LAYER,
    Classifier,
    ConvNorm,
    LayerConfig,
    Pool,
    adaptive_avg_pool,
    check_model_input,
    global_avg_pool,
    make_dropout,
)

#: Channel plan per stage; each stage ends with a 2x2 stride-2 pool.
VGG_STAGES: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
}


class VGG(nnx.Module):
    """VGG network ``(N, H, W, in_features) -> (N, num_classes)`` logits.

    Args:
      stages: channels of the 3x3 convs per stage (see :data:`VGG_STAGES`).
      num_classes: output logits.
      in_features: input channels.
      cfg: the switches (:class:`convjax.models.blocks.LayerConfig`).
      head: ``"cifar"`` or ``"imagenet"`` (module docstring).
      width_multiplier: scales every width (``max(1, round(c * m))``), e.g. 1/16 for tests.
      dropout: dropout rate of the ImageNet head (0.5 as in the paper).
      rngs: parameter and dropout RNGs.

    The input must be at least ``2**len(stages)`` pixels on each side (one pixel left after
    the last pool).

    Example:
      >>> import jax.numpy as jnp
      >>> from convjax.models import build
      >>> model = build("vgg11", num_classes=10, in_features=3, width_multiplier=0.125,
      ...               rngs=nnx.Rngs(0))
      >>> model(jnp.ones((2, 32, 32, 3))).shape
      (2, 10)
    """

    def __init__(
        self,
        stages: Sequence[Sequence[int]],
        *,
        num_classes: int,
        in_features: int,
        cfg: LayerConfig,
        head: str = "cifar",
        width_multiplier: float = 1.0,
        dropout: float = 0.5,
        rngs: nnx.Rngs,
    ):
        check_choice(head, ("cifar", "imagenet"), "head")
        check_positive(width_multiplier, "width_multiplier")
        check_positive(num_classes, "num_classes")
        check_positive(in_features, "in_features")

        def width(c: int) -> int:
            return max(1, round(c * width_multiplier))

        self.in_features = in_features
        self.num_pools = len(stages)
        self.head_type = head
        layers = []
        c_in = in_features
        for stage in stages:
            for c in stage:
                first = not layers  # the reference whitens the first layer fully, frozen
                overrides = DECONV_FIRST_LAYER if first else None
                layers.append(
                    ConvNorm(c_in, width(c), 3, cfg=cfg, deconv_overrides=overrides, rngs=rngs)
                )
                c_in = width(c)
            layers.append(Pool(cfg.pool, (2, 2), (2, 2)))
        self.features = nnx.List(layers)
        if head == "cifar":
            self.fc = nnx.List([])
            self.dropouts = nnx.List([])
            self.classifier = Classifier(c_in, num_classes, cfg=cfg, rngs=rngs)
        else:
            hidden = width(4096)
            self.fc = nnx.List(
                [
                    Classifier(c_in * 49, hidden, cfg=cfg, rngs=rngs),
                    Classifier(hidden, hidden, cfg=cfg, rngs=rngs),
                ]
            )
            self.dropouts = nnx.List([make_dropout(dropout, rngs), make_dropout(dropout, rngs)])
            self.classifier = Classifier(hidden, num_classes, cfg=cfg, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_model_input(x, self.in_features, num_pools=self.num_pools, model="VGG")
        for layer in self.features:
            x = layer(x)
        if self.head_type == "cifar":
            x = global_avg_pool(x)
        else:
            x = adaptive_avg_pool(x, (7, 7)).reshape(x.shape[0], -1)
            for fc, drop in zip(self.fc, self.dropouts):
                x = drop(jax.nn.relu(fc(x)))
        return self.classifier(x)

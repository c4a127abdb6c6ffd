"""A small VGG-style CNN for tiny images (scikit-learn's 8x8 digits, MNIST-sized inputs).

::

    [ConvNorm 3x3 (w0) -> ConvNorm 3x3 (w0) -> pool 2x2]
    [ConvNorm 3x3 (w1) -> ConvNorm 3x3 (w1) -> pool 2x2]  -> global avg pool -> dropout -> linear

Every switch applies (padding, pool, norm, conv). On 8x8 digits the default widths (32, 64)
give ~66k parameters and train to high accuracy in seconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

from convjax._checks import check_positive
from convjax.models.blocks import (
    Classifier,
    ConvNorm,
    LayerConfig,
    Pool,
    check_model_input,
    global_avg_pool,
    make_dropout,
)


class SmallCNN(nnx.Module):
    """Small CNN ``(N, H, W, in_features) -> (N, num_classes)``; H, W >= ``2**len(widths)``.

    Args:
      widths: channels per stage (two 3x3 ConvNorms then a 2x2 pool each).
      num_classes, in_features: logits and input channels.
      cfg: the switches.
      dropout: dropout rate before the classifier.
      rngs: parameter and dropout RNGs.

    Example:
      >>> import jax.numpy as jnp
      >>> from convjax.models import build
      >>> model = build("digits_cnn", num_classes=10, in_features=1, rngs=nnx.Rngs(0))
      >>> model(jnp.ones((2, 8, 8, 1))).shape
      (2, 10)
    """

    def __init__(
        self,
        widths: Sequence[int] = (32, 64),
        *,
        num_classes: int,
        in_features: int,
        cfg: LayerConfig,
        dropout: float = 0.1,
        rngs: nnx.Rngs,
    ):
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) < 1:
            raise ValueError(
                f"`widths` must be a non-empty sequence of positive ints, got {widths}."
            )
        check_positive(num_classes, "num_classes")
        self.in_features = in_features
        self.num_pools = len(widths)
        layers = []
        c_in = in_features
        for w in widths:
            layers.append(ConvNorm(c_in, w, 3, cfg=cfg, rngs=rngs))
            layers.append(ConvNorm(w, w, 3, cfg=cfg, rngs=rngs))
            layers.append(Pool(cfg.pool, (2, 2), (2, 2)))
            c_in = w
        self.features = nnx.List(layers)
        self.dropout = make_dropout(dropout, rngs)
        self.classifier = Classifier(c_in, num_classes, cfg=cfg, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_model_input(x, self.in_features, num_pools=self.num_pools, model="SmallCNN")
        for layer in self.features:
            x = layer(x)
        return self.classifier(self.dropout(global_avg_pool(x)))

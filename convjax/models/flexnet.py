"""FlexNet (Romero et al. 2022, "FlexConv: Continuous Kernel Convolutions with Differentiable
Kernel Sizes"), a residual network of FlexConvs without pooling or striding.

::

    x -> FlexConv -> BN -> ReLU                                  (stem, width widths[0])
      -> [FlexConv -> BN -> ReLU -> Dropout -> FlexConv -> BN] + shortcut -> ReLU  (per width)
      -> global average pool -> linear

The shortcut is the identity, or a 1x1 conv with bias where the width changes (as in the
official code). FlexNet-7 (:data:`FLEXNET7_WIDTHS`) is the paper's CIFAR-10 model: stem width
24 and 7 blocks of widths 24, 24, 36, 36, 36, 48, 48, horizon 33, dropout 0.2, ~0.67M
parameters. With ``conv="standard"`` each FlexConv becomes a fixed ``kernel_size`` conv (the
paper's 3x3 ablation).

``pool_after`` (block indices) inserts a 2x2 stride-2 pool of the ``pool`` switch's type after
those blocks; the paper's FlexNets have none (the default), the ``flexnet_tiny`` preset uses one
to stay cheap on CPU.
"""

from __future__ import annotations

import dataclasses
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

#: Stem width and block widths of FlexNet-7 (paper, CIFAR-10).
FLEXNET7_WIDTHS: tuple[int, ...] = (24, 24, 36, 36, 36, 48, 48)


class FlexBlock(nnx.Module):
    """Residual block ``relu(BN(conv(drop(relu(BN(conv(x)))))) + shortcut(x))``.

    ``conv`` is a FlexConv (``cfg.conv="flex"``) or a fixed ``kernel_size`` conv; ``shortcut``
    is the identity or a 1x1 conv with bias when ``in_features != out_features``.

    Example:
      >>> import jax.numpy as jnp
      >>> blk = FlexBlock(8, 8, cfg=LayerConfig(), dropout=0.1, rngs=nnx.Rngs(0))
      >>> blk(jnp.ones((2, 8, 8, 8))).shape
      (2, 8, 8, 8)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        cfg: LayerConfig,
        dropout: float,
        kernel_size: int = 3,
        num_spatial: int = 2,
        causal: bool = False,
        rngs: nnx.Rngs,
    ):
        kw = dict(cfg=cfg, num_spatial=num_spatial, causal=causal, rngs=rngs)
        self.conv1 = ConvNorm(in_features, out_features, kernel_size, **kw)
        self.dropout = make_dropout(dropout, rngs)
        self.conv2 = ConvNorm(out_features, out_features, kernel_size, act=False, **kw)
        self.shortcut = nnx.data(None)
        if in_features != out_features:
            # A plain 1x1 conv with bias, whatever the norm switch (official FlexNet shortcut).
            plain = dataclasses.replace(cfg, norm="none", conv="standard", padding="zero")
            self.shortcut = ConvNorm(
                in_features,
                out_features,
                1,
                cfg=plain,
                act=False,
                num_spatial=num_spatial,
                rngs=rngs,
            )

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv2(self.dropout(self.conv1(x)))
        s = x if self.shortcut is None else self.shortcut(x)
        return jax.nn.relu(y + s.astype(y.dtype))


class FlexNet(nnx.Module):
    """FlexNet ``(N, *spatial, in_features) -> (N, num_classes)`` (module docstring).

    Args:
      widths: stem width = ``widths[0]``; one residual block per entry.
      num_classes, in_features: logits and input channels.
      cfg: the switches (``conv="flex"`` is the FlexNet proper).
      dropout: dropout rate inside each block (0.2 on CIFAR in the paper).
      kernel_size: kernel size of the standard conv when ``cfg.conv="standard"`` (3).
      pool_after: block indices followed by a 2x2 stride-2 pool (``cfg.pool``).
      num_spatial_dims: 2 for images (1-D and 3-D inputs work with FlexConv as well).
      rngs: parameter and dropout RNGs.

    Example:
      >>> import jax.numpy as jnp
      >>> from convjax.models import build
      >>> model = build("flexnet_tiny", num_classes=10, in_features=1, rngs=nnx.Rngs(0))
      >>> model(jnp.ones((2, 8, 8, 1))).shape
      (2, 10)
    """

    def __init__(
        self,
        widths: Sequence[int],
        *,
        num_classes: int,
        in_features: int,
        cfg: LayerConfig,
        dropout: float = 0.2,
        kernel_size: int = 3,
        pool_after: Sequence[int] = (),
        num_spatial_dims: int = 2,
        rngs: nnx.Rngs,
    ):
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) < 1:
            raise ValueError(
                f"`widths` must be a non-empty sequence of positive ints, got {widths}."
            )
        bad = [i for i in pool_after if not 0 <= i < len(widths)]
        if bad:
            raise ValueError(
                f"`pool_after` entries must be block indices in [0, {len(widths)}), got "
                f"{tuple(pool_after)}."
            )
        check_positive(num_classes, "num_classes")
        self.in_features = in_features
        self.num_spatial_dims = num_spatial_dims
        kw = dict(cfg=cfg, num_spatial=num_spatial_dims, rngs=rngs)
        self.stem = ConvNorm(in_features, widths[0], kernel_size, **kw)
        layers = []
        c_in = widths[0]
        for i, w in enumerate(widths):
            layers.append(FlexBlock(c_in, w, dropout=dropout, kernel_size=kernel_size, **kw))
            if i in pool_after:
                window = (2,) * num_spatial_dims
                layers.append(Pool(cfg.pool, window, window))
            c_in = w
        self.blocks = nnx.List(layers)
        self.classifier = Classifier(c_in, num_classes, cfg=cfg, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_model_input(x, self.in_features, num_spatial_dims=self.num_spatial_dims)
        x = self.stem(x)
        for layer in self.blocks:
            x = layer(x)
        return self.classifier(global_avg_pool(x))

"""FlexTCN: a temporal convolutional network of causal 1-D FlexConv residual blocks
(Romero et al. 2022, sequence experiments; the CKCNN/FlexTCN layout of the official code).

::

    x (N, L, C) -> causal FlexConv -> BN -> ReLU
               -> [causal FlexConv -> BN -> ReLU -> Dropout -> causal FlexConv -> BN]
                  + shortcut -> ReLU                                   (per width)
               -> last time step (N, C') -> linear -> (N, num_classes)

Output ``t`` of every layer depends only on inputs ``<= t`` (the mask of a causal FlexConv is
centred on the newest step), so the logits read at the last step summarise the whole sequence.
Set ``flex_kernel_size`` (the horizon) to the sequence length, e.g. 784 for sMNIST/pMNIST, as
the paper does (its FlexTCN kernels can span the whole sequence): every layer can then see
every step (:meth:`FlexTCN.receptive_field`), the learned mask crops it, and the default
bucket ladder ``5, 9, ..., 513, 784`` reaches it (sizes from 65 on use the FFT path).
Causal convs extend the past with zeros, so ``padding`` must be ``"zero"``; the network has
no pooling, so ``pool`` has no effect. With ``conv="standard"`` the convs are fixed
``kernel_size`` causal convs.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

from convjax._checks import check_positive, check_spatial_rank
from convjax.models.blocks import Classifier, ConvNorm, LayerConfig
from convjax.models.flexnet import FlexBlock


class FlexTCN(nnx.Module):
    """Causal FlexConv residual network ``(N, L, in_features) -> (N, num_classes)``.

    Args:
      widths: stem width ``widths[0]``, one residual block per entry.
      num_classes, in_features: logits and input channels.
      cfg: the switches (``padding`` must be ``"zero"``).
      dropout: dropout rate inside each block.
      kernel_size: kernel of the standard causal conv when ``cfg.conv="standard"``.
      rngs: parameter and dropout RNGs.

    Example:
      >>> import jax.numpy as jnp
      >>> from convjax.models import build
      >>> model = build("flextcn", num_classes=10, in_features=1, rngs=nnx.Rngs(0))
      >>> model(jnp.ones((2, 64, 1))).shape
      (2, 10)
    """

    def __init__(
        self,
        widths: Sequence[int] = (32, 32, 32, 32),
        *,
        num_classes: int,
        in_features: int,
        cfg: LayerConfig,
        dropout: float = 0.1,
        kernel_size: int = 3,
        rngs: nnx.Rngs,
    ):
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) < 1:
            raise ValueError(
                f"`widths` must be a non-empty sequence of positive ints, got {widths}."
            )
        if cfg.padding != "zero":
            raise ValueError(
                f"`padding={cfg.padding!r}` cannot be used with 'flextcn': causal convolutions "
                "extend the past with zeros; use padding='zero'."
            )
        check_positive(num_classes, "num_classes")
        self.in_features = in_features
        # every causal conv on the path input -> last step: the stem and two per block
        horizon = cfg.flex_kernel_size if cfg.conv == "flex" else kernel_size
        self.conv_sizes = (horizon,) * (1 + 2 * len(widths))
        kw = dict(cfg=cfg, num_spatial=1, causal=True, rngs=rngs)
        self.stem = ConvNorm(in_features, widths[0], kernel_size, **kw)
        blocks = []
        c_in = widths[0]
        for w in widths:
            blocks.append(FlexBlock(c_in, w, dropout=dropout, kernel_size=kernel_size, **kw))
            c_in = w
        self.blocks = nnx.List(blocks)
        self.classifier = Classifier(c_in, num_classes, cfg=cfg, rngs=rngs)

    def receptive_field(self) -> int:
        """Steps the last output can see at most: ``1 + sum_layers (horizon - 1)``.

        The bound the horizons allow (reached when the masks open up); at initialisation the
        masks crop each layer to ~8 % of its horizon.

        Example:
          >>> from convjax.models import build
          >>> build("flextcn", num_classes=10, in_features=1, flex_kernel_size=784,
          ...       rngs=nnx.Rngs(0)).receptive_field()
          7048
        """
        return 1 + sum(k - 1 for k in self.conv_sizes)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_spatial_rank(x, "x", min_spatial=1, max_spatial=1)
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"`x` must be (batch, length, {self.in_features}), got shape {x.shape}."
            )
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.classifier(x[:, -1, :])

"""Plain Flax twins of zoo models, written without convjax (for ``convjax.convert``): NNX
(:func:`digits_cnn`, :func:`resnet20`) and Linen (:func:`linen_digits_cnn`).

``python -m convjax.bench.train_step --models digits_cnn,convjax.bench.plain_models:digits_cnn``
times the zoo model against its plain twin converted by :func:`convjax.convert` with the same
switches (``--side-by-side``): the cost of converting instead of building from the zoo (and,
for the Linen twin, of running a Linen model through :class:`convjax.convert.LinenModel`).
Each factory follows the trainer's import-path contract (:mod:`convjax.models.spec`):
``factory(*, num_classes, in_features, rngs, **kwargs) -> nnx.Module | flax.linen.Module``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx


class PlainSmallCNN(nnx.Module):
    """The architecture of the zoo's ``digits_cnn`` (:class:`convjax.models.small.SmallCNN`)
    in plain Flax: per stage two ``nnx.Conv`` 3x3 (bias-free, padding 1) -> ``nnx.BatchNorm``
    -> ReLU, then ``nnx.max_pool`` 2x2 (a function call); global average, dropout, linear.

    ``(N, H, W, in_features) -> (N, num_classes)``.

    Example:
      >>> import jax.numpy as jnp
      >>> digits_cnn(num_classes=10, in_features=1, rngs=nnx.Rngs(0))(
      ...     jnp.ones((2, 8, 8, 1))).shape
      (2, 10)
    """

    def __init__(
        self,
        widths: Sequence[int],
        *,
        num_classes: int,
        in_features: int,
        dropout: float,
        rngs: nnx.Rngs,
    ):
        convs, norms = [], []
        c_in = in_features
        for w in widths:
            for _ in range(2):
                convs.append(
                    nnx.Conv(c_in, w, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, rngs=rngs)
                )
                norms.append(nnx.BatchNorm(w, momentum=0.9, rngs=rngs))
                c_in = w
        self.convs = nnx.List(convs)
        self.norms = nnx.List(norms)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.head = nnx.Linear(c_in, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = nnx.relu(norm(conv(x)))
            if i % 2 == 1:
                x = nnx.max_pool(x, (2, 2), (2, 2))
        return self.head(self.dropout(x.mean(axis=(1, 2))))


def digits_cnn(
    *,
    num_classes: int,
    in_features: int,
    rngs: nnx.Rngs,
    widths: Sequence[int] = (32, 64),
    dropout: float = 0.1,
) -> nnx.Module:
    """A plain twin of the zoo's ``digits_cnn`` (:class:`PlainSmallCNN`)."""
    return PlainSmallCNN(
        tuple(widths), num_classes=num_classes, in_features=in_features, dropout=dropout, rngs=rngs
    )


class LinenSmallCNN(nn.Module):
    """:class:`PlainSmallCNN` written in Linen, ``@nn.compact`` style: per stage two ``nn.Conv``
    3x3 (bias-free, padding 1) -> ``nn.BatchNorm`` -> ReLU, then ``nn.max_pool`` 2x2; global
    average, dropout, ``nn.Dense``. ``train`` switches BatchNorm and dropout.

    Example:
      >>> import jax.numpy as jnp
      >>> model = LinenSmallCNN((4, 8), num_classes=10)
      >>> variables = model.init(jax.random.key(0), jnp.ones((2, 8, 8, 1)), train=False)
      >>> model.apply(variables, jnp.ones((2, 8, 8, 1)), train=False).shape
      (2, 10)
    """

    widths: Sequence[int]
    num_classes: int
    dropout: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        for w in self.widths:
            for _ in range(2):
                x = nn.Conv(w, (3, 3), padding=((1, 1), (1, 1)), use_bias=False)(x)
                x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
            x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.Dropout(self.dropout, deterministic=not train)(x.mean(axis=(1, 2)))
        return nn.Dense(self.num_classes)(x)


def linen_digits_cnn(
    *,
    num_classes: int,
    in_features: int,
    rngs: nnx.Rngs,
    widths: Sequence[int] = (32, 64),
    dropout: float = 0.1,
) -> nn.Module:
    """A plain Linen twin of the zoo's ``digits_cnn`` (:class:`LinenSmallCNN`; the trainer
    initialises it, ``in_features`` and ``rngs`` are not needed here)."""
    del in_features, rngs
    return LinenSmallCNN(tuple(widths), num_classes=num_classes, dropout=dropout)


def _conv_bn(c_in: int, c_out: int, strides: int, rngs: nnx.Rngs) -> tuple[nnx.Conv, nnx.BatchNorm]:
    conv = nnx.Conv(
        c_in, c_out, (3, 3), strides=strides, padding=((1, 1), (1, 1)), use_bias=False, rngs=rngs
    )
    return conv, nnx.BatchNorm(c_out, momentum=0.9, rngs=rngs)


class PlainBasicBlock(nnx.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; the shortcut subsamples and
    zero-pads channels (option A of He et al. 2016, as the CIFAR ResNets)."""

    def __init__(self, c_in: int, c_out: int, strides: int, *, rngs: nnx.Rngs):
        self.conv1, self.bn1 = _conv_bn(c_in, c_out, strides, rngs)
        self.conv2, self.bn2 = _conv_bn(c_out, c_out, 1, rngs)
        self.strides = strides
        self.extra = c_out - c_in

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.bn2(self.conv2(nnx.relu(self.bn1(self.conv1(x)))))
        s = x[:, :: self.strides, :: self.strides, :] if self.strides != 1 else x
        if self.extra > 0:
            s = jnp.pad(s, ((0, 0), (0, 0), (0, 0), (0, self.extra)))
        return nnx.relu(y + s)


class PlainCifarResNet(nnx.Module):
    """The architecture of the zoo's ``resnet20`` (:class:`convjax.models.resnet.CifarResNet`)
    in plain Flax: a 3x3 stem, 3 stages of ``n`` basic blocks (widths 16/32/64, stride 2 at
    the start of stages 2 and 3), global average, linear.

    Example (depth 8: one block per stage; :func:`resnet20` builds depth 20, widths 16/32/64):
      >>> import jax.numpy as jnp
      >>> model = PlainCifarResNet(8, num_classes=10, in_features=3, widths=(4, 8, 16),
      ...                          rngs=nnx.Rngs(0))
      >>> model(jnp.ones((2, 8, 8, 3))).shape
      (2, 10)
    """

    def __init__(
        self,
        depth: int,
        *,
        num_classes: int,
        in_features: int,
        widths: Sequence[int],
        rngs: nnx.Rngs,
    ):
        n = (depth - 2) // 6
        self.stem, self.stem_bn = _conv_bn(in_features, widths[0], 1, rngs)
        blocks, c_in = [], widths[0]
        for stage, w in enumerate(widths):
            for i in range(n):
                blocks.append(PlainBasicBlock(c_in, w, 2 if stage and not i else 1, rngs=rngs))
                c_in = w
        self.blocks = nnx.List(blocks)
        self.head = nnx.Linear(c_in, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.stem_bn(self.stem(x)))
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(axis=(1, 2)))


def resnet20(
    *, num_classes: int, in_features: int, rngs: nnx.Rngs, widths: Sequence[int] = (16, 32, 64)
) -> nnx.Module:
    """A plain twin of the zoo's ``resnet20`` (:class:`PlainCifarResNet`)."""
    return PlainCifarResNet(
        20, num_classes=num_classes, in_features=in_features, widths=tuple(widths), rngs=rngs
    )


__all__ = ["PlainBasicBlock", "PlainCifarResNet", "PlainSmallCNN", "digits_cnn", "resnet20"]

"""Plain Flax NNX twins of zoo models, written without convjax (for ``convjax.convert``).

``python -m convjax.bench.train_step --models digits_cnn,convjax.bench.plain_models:digits_cnn``
times the zoo model against its plain twin converted by :func:`convjax.convert` with the same
switches (``--side-by-side``): the cost of converting instead of building from the zoo. Each
factory follows the trainer's import-path contract (:mod:`convjax.models.spec`):
``factory(*, num_classes, in_features, rngs, **kwargs) -> nnx.Module``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
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


__all__ = ["PlainSmallCNN", "digits_cnn"]

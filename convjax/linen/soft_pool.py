"""Linen SoftPool module: a parameter-free wrapper around :func:`convjax.ops.soft_pool`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax

from convjax.ops.pad import PaddingLike
from convjax.ops.soft_pool import check_layer_input, check_soft_pool_args, soft_pool

__all__ = ["SoftPool"]


class SoftPool(nn.Module):
    """SoftPool layer (Stergiou et al., ICCV 2021) for Linen: softmax-weighted pooling.

    Implements ``out = sum_{i in R} w_i a_i`` with ``w_i = exp(a_i) / sum_{j in R} exp(a_j)``
    (paper Eq. 1-2) with the exact gradient ``w_i (1 + a_i - out)``; max-shifted, so it never
    overflows. No parameters and no collections. Arguments follow ``flax.linen.max_pool``;
    see :func:`convjax.ops.soft_pool`.

    Attributes:
      window_shape: window size, an int or one int per spatial dim (1 to 3 dims).
      strides: step between windows (int or per dim); default 1 per dim, like
        ``flax.linen.max_pool``. Use ``strides=window_shape`` to downsample.
      padding: ``"VALID"``, ``"SAME"``, an int or ``(lo, hi)`` pairs; padded positions get
        zero weight.
      dtype: compute dtype the input is cast to (None = the input's dtype).

    Shapes: ``(N, *spatial, C) -> (N, *out_spatial, C)``,
    ``out = (size + lo + hi - window) // stride + 1`` per spatial dim.

    Example:
      >>> import jax.numpy as jnp
      >>> pool = SoftPool((2, 2), strides=(2, 2))
      >>> y = pool.apply({}, jnp.ones((8, 32, 32, 16)))
      >>> y.shape
      (8, 16, 16, 16)
    """

    window_shape: int | Sequence[int]
    strides: int | Sequence[int] | None = None
    padding: PaddingLike = "VALID"
    dtype: Any | None = None

    def __post_init__(self) -> None:
        args = check_soft_pool_args(self.window_shape, self.strides, self.padding)
        # Lists -> tuples, so the (frozen) module stays hashable under Linen transforms.
        for name, value in zip(("window_shape", "strides", "padding"), args):
            object.__setattr__(self, name, value)
        super().__post_init__()

    def __call__(self, x: jax.Array) -> jax.Array:
        """Pool ``x`` of shape ``(N, *spatial, C)``; see the class docstring."""
        if self.dtype is not None:
            x = x.astype(self.dtype)
        check_layer_input(x, self.window_shape)
        return soft_pool(x, self.window_shape, self.strides, self.padding)

"""NNX SoftPool module: a parameter-free wrapper around :func:`convjax.ops.soft_pool`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx

from convjax._checks import check_choice
from convjax.ops.pad import PaddingLike
from convjax.ops.soft_pool import check_layer_input, check_soft_pool_args, soft_pool
from convjax.switches import POOL_TYPES

__all__ = ["Pool", "SoftPool"]


class SoftPool(nnx.Module):
    """SoftPool layer (Stergiou et al., ICCV 2021): softmax-weighted pooling of each window.

    Implements ``out = sum_{i in R} w_i a_i`` with ``w_i = exp(a_i) / sum_{j in R} exp(a_j)``
    (paper Eq. 1-2) with the exact gradient ``w_i (1 + a_i - out)``; max-shifted, so it never
    overflows. Arguments follow ``flax.linen.max_pool``; see :func:`convjax.ops.soft_pool`.

    The layer has no parameters and no state, so ``train()`` / ``eval()`` do not change it.

    Args:
      window_shape: window size, an int or one int per spatial dim (1 to 3 dims).
      strides: step between windows (int or per dim); default 1 per dim, like
        ``flax.linen.max_pool``. Use ``strides=window_shape`` to downsample.
      padding: ``"VALID"``, ``"SAME"``, an int or ``(lo, hi)`` pairs; padded positions get
        zero weight.
      dtype: compute dtype the input is cast to (None = the input's dtype). fp16/bf16 are
        still reduced in float32 internally; the output has this dtype.

    Shapes: ``(N, *spatial, C) -> (N, *out_spatial, C)``,
    ``out = (size + lo + hi - window) // stride + 1`` per spatial dim.

    Example:
      >>> import jax.numpy as jnp
      >>> pool = SoftPool((2, 2), strides=(2, 2))
      >>> pool(jnp.ones((8, 32, 32, 16))).shape
      (8, 16, 16, 16)
    """

    def __init__(
        self,
        window_shape: int | Sequence[int],
        strides: int | Sequence[int] | None = None,
        padding: PaddingLike = "VALID",
        *,
        dtype: Any | None = None,
    ) -> None:
        self.window_shape, self.strides, self.padding = check_soft_pool_args(
            window_shape, strides, padding
        )
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        """Pool ``x`` of shape ``(N, *spatial, C)``; see the class docstring."""
        if self.dtype is not None:
            x = x.astype(self.dtype)
        check_layer_input(x, self.window_shape)
        return soft_pool(x, self.window_shape, self.strides, self.padding)


class Pool(nnx.Module):
    """Switchable downsampling pool: max, average or SoftPool.

    ``(N, *spatial, C) -> (N, *pooled, C)`` with ``flax.linen.max_pool`` conventions for
    ``window_shape``, ``strides`` and ``padding``. SoftPool computes
    ``out = sum_{i in R} softmax(a_R)_i a_i`` (Stergiou et al. 2021, eq. 1-2) in a
    max-shifted, overflow-free form.

    Example:
      >>> import jax.numpy as jnp
      >>> Pool("soft", (2, 2))(jnp.ones((1, 4, 4, 3))).shape
      (1, 2, 2, 3)
    """

    def __init__(
        self,
        kind: str,
        window_shape: Sequence[int],
        strides: Sequence[int] | None = None,
        padding: str | Sequence[tuple[int, int]] = "VALID",
    ):
        check_choice(kind, POOL_TYPES, "pool")
        self.kind = kind
        self.window_shape = tuple(window_shape)
        self.strides = tuple(strides) if strides is not None else self.window_shape
        self.padding = padding if isinstance(padding, str) else tuple(map(tuple, padding))
        self.soft = (
            SoftPool(self.window_shape, self.strides, self.padding)
            if kind == "soft"
            else nnx.data(None)
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.soft is not None:
            return self.soft(x)
        if self.kind == "max":
            return nnx.max_pool(x, self.window_shape, self.strides, self.padding)
        return nnx.avg_pool(x, self.window_shape, self.strides, self.padding)

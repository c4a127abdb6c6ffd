"""Linen convolution with "SAME" output size for every padding mode (``padding_mode``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from convjax._checks import (
    cast_to,
    check_floating,
    check_positive,
    check_spatial_rank,
    normalize_tuple,
)
from convjax.linen.padding import learned_padding_module, pad_op_kwargs
from convjax.ops.conv import conv_options, padded_conv
from convjax.ops.pad import PaddingLike


class Conv(nn.Module):
    """N-d convolution, border kind set by ``padding_mode``, amount by ``padding``.

    Same maths as :class:`convjax.nnx.Conv` (both call :func:`convjax.ops.padded_conv`):
    symmetric ``k // 2`` padding by default (``padding="SAME"`` for XLA's split);
    ``"partial"`` re-weights by ``sum(1)/sum(M)`` (Liu et al. 2018); ``"learned"`` pads with a
    :class:`PaddingModule` (submodule ``"pad"``) whose filter is in the ``"padding"``
    collection and whose loss is sown into ``"losses"``. Input features are inferred (Linen
    convention).

    Attributes:
      features: output channels.
      kernel_size: int (``num_spatial_dims`` dims, default 2) or one int per spatial dim.
      strides, kernel_dilation, feature_group_count, use_bias: as ``flax.linen.Conv``.
      padding: the amount: ``None`` (default, symmetric ``dilation * (k // 2)``), ``"SAME"``,
        ``"VALID"``, an int or ``(lo, hi)`` pairs (:func:`convjax.ops.conv_padding`).
      padding_mode: the kind, one of :data:`convjax.ops.pad.PADDING_MODES`.
      padding_kwargs: learned-padding options (``depth``, ``width``, ``mixing``, ...).
      dtype: compute dtype (None = input dtype). param_dtype: float32.

    Shapes: ``(N, *S, C_in) -> (N, *ceil(S / strides), features)`` for odd kernels.

    Example:
      >>> conv = Conv(16, 3, padding_mode="learned")
      >>> variables = conv.init(jax.random.key(0), jnp.ones((2, 32, 32, 3)))
      >>> sorted(variables)
      ['losses', 'padding', 'params']
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] = 1
    padding: PaddingLike | None = None
    padding_mode: str = "zero"
    use_bias: bool = True
    feature_group_count: int = 1
    kernel_dilation: int | Sequence[int] = 1
    num_spatial_dims: int | None = None
    padding_kwargs: Mapping[str, Any] | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool | None = None) -> jax.Array:
        pad_module = learned_padding_module(self.padding_mode, self.padding_kwargs)
        check_positive(self.features, "features")
        if isinstance(self.kernel_size, int):
            n = 2 if self.num_spatial_dims is None else int(self.num_spatial_dims)
        else:
            n = len(tuple(self.kernel_size))
        check_spatial_rank(x, "x", min_spatial=n, max_spatial=n)
        check_floating(x, "x")
        window = normalize_tuple(self.kernel_size, n, "kernel_size")
        in_features = x.shape[-1]
        groups = self.feature_group_count
        if in_features % groups or self.features % groups:
            raise ValueError(
                f"input features ({in_features}) and `features` ({self.features}) must be "
                f"divisible by `feature_group_count` ({groups})."
            )
        kernel = self.param(
            "kernel",
            self.kernel_init,
            (*window, in_features // groups, self.features),
            self.param_dtype,
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        x, kernel, bias = cast_to(self.dtype, x, kernel, bias)
        pad_kwargs = pad_op_kwargs(pad_module, in_features, n, deterministic)
        y, loss = padded_conv(x, kernel, bias, **conv_options(self), **pad_kwargs)
        if pad_module is not None:
            pad_module.record_loss(loss)
        return y

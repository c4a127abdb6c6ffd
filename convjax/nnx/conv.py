"""A standard convolution whose border handling is a config switch (``padding_mode``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from convjax._checks import (
    cast_to,
    check_floating,
    check_positive,
    check_spatial_rank,
    normalize_tuple,
)
from convjax.nnx.padding import learned_padding_module, pad_op_kwargs
from convjax.ops.conv import conv_options, conv_padding, padded_conv
from convjax.ops.pad import PaddingLike

_DEFAULT_KERNEL_INIT = nnx.initializers.lecun_normal()
_DEFAULT_BIAS_INIT = nnx.initializers.zeros_init()


class Conv(nnx.Module):
    """N-d convolution whose border handling is ``padding_mode`` and whose amount is ``padding``.

    Owns its parameters and calls :func:`convjax.ops.padded_conv`. By default it pads
    symmetric ``k // 2`` on every side (PyTorch geometry, as the papers' networks; output
    ``ceil(size / stride)`` for odd kernels); ``padding="SAME"`` gives XLA's split instead.

      * ``"zero" | "reflect" | "replicate" | "circular"``: ``y = W * pad(x) + b``.
      * ``"learned"``: ``y = W * learned_pad(stop_gradient(P), x) + b`` with a
        :class:`PaddingModule` (``conv.pad``) that records its loss
        ``padding_loss(P, stop_gradient(x))``; add :func:`pop_padding_losses` to the loss.
      * ``"partial"`` (Liu et al. 2018): ``y = (W * zeropad(x)) * sum(1)/sum(M) + b``, the
        output re-weighted by window area over the number of real pixels in the window.

    Args:
      in_features, out_features: channels in and out.
      kernel_size: int or one int per spatial dim. An int means ``num_spatial_dims`` dims
        (default 2, i.e. images); a tuple fixes the spatial rank (1-D, 2-D or 3-D).
      strides: int or per-dim strides.
      padding: the amount: ``None`` (default, symmetric ``dilation * (k // 2)``), ``"SAME"``,
        ``"VALID"``, an int or ``(lo, hi)`` pairs (:func:`convjax.ops.conv_padding`).
      padding_mode: the kind, one of :data:`convjax.ops.pad.PADDING_MODES`.
      use_bias: add a bias (initialised to zero).
      feature_group_count: grouped conv (``in_features`` and ``out_features`` divisible).
      kernel_dilation: per-dim dilation.
      num_spatial_dims: spatial rank when ``kernel_size`` is an int (default 2).
      padding_kwargs: options of the learned :class:`PaddingModule` (``depth``, ``width``,
        ``mixing``, ``shared``, ``filter_init``, ...); only with ``padding_mode="learned"``.
      dtype: compute dtype (None = the input's dtype). param_dtype: parameter dtype (fp32).
      kernel_init, bias_init: Flax initialisers (defaults: LeCun normal, zeros).
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Shapes: ``(N, *S, in_features) -> (N, *ceil(S / strides), out_features)`` for odd kernels
    (default padding or ``"SAME"``).

    Example:
      >>> conv = Conv(3, 16, 3, padding_mode="reflect", rngs=nnx.Rngs(0))
      >>> conv(jnp.ones((2, 32, 32, 3))).shape
      (2, 32, 32, 16)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        *,
        strides: int | Sequence[int] = 1,
        padding: PaddingLike | None = None,
        padding_mode: str = "zero",
        use_bias: bool = True,
        feature_group_count: int = 1,
        kernel_dilation: int | Sequence[int] = 1,
        num_spatial_dims: int | None = None,
        padding_kwargs: Mapping[str, Any] | None = None,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        kernel_init: nnx.Initializer = _DEFAULT_KERNEL_INIT,
        bias_init: nnx.Initializer = _DEFAULT_BIAS_INIT,
        rngs: nnx.Rngs,
    ) -> None:
        check_positive(in_features, "in_features")
        check_positive(out_features, "out_features")
        check_positive(feature_group_count, "feature_group_count")
        if in_features % feature_group_count or out_features % feature_group_count:
            raise ValueError(
                f"`in_features` ({in_features}) and `out_features` ({out_features}) must be "
                f"divisible by `feature_group_count` ({feature_group_count})."
            )
        if isinstance(kernel_size, int):
            n = 2 if num_spatial_dims is None else int(num_spatial_dims)
        else:
            n = len(tuple(kernel_size))
        if not 1 <= n <= 3:
            raise ValueError(f"convjax Conv supports 1 to 3 spatial dims, got {n}.")
        self.kernel_size = normalize_tuple(kernel_size, n, "kernel_size")
        self.strides = normalize_tuple(strides, n, "strides")
        self.kernel_dilation = normalize_tuple(kernel_dilation, n, "kernel_dilation")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.feature_group_count = int(feature_group_count)
        self.padding_mode = padding_mode
        self.use_bias = use_bias
        self.dtype = dtype
        self.param_dtype = param_dtype
        shape = (*self.kernel_size, in_features // feature_group_count, out_features)
        self.kernel = nnx.Param(kernel_init(rngs.params(), shape, param_dtype))
        self.bias = (
            nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype)) if use_bias else None
        )
        # validated now (a bad amount fails at construction); explicit pairs kept as tuples
        pads = conv_padding((1,) * n, self.kernel_size, self.strides, padding, self.kernel_dilation)
        self.padding = padding if padding is None or isinstance(padding, str) else pads
        self.pad = learned_padding_module(in_features, n, padding_mode, padding_kwargs, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        n = len(self.kernel_size)
        check_spatial_rank(x, "x", min_spatial=n, max_spatial=n)
        check_floating(x, "x")
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"`x` must have {self.in_features} features (last dim), got shape {tuple(x.shape)}."
            )
        bias = None if self.bias is None else self.bias[...]
        x, kernel, bias = cast_to(self.dtype, x, self.kernel[...], bias)
        y, loss = padded_conv(x, kernel, bias, **conv_options(self), **pad_op_kwargs(self.pad))
        if self.pad is not None:
            self.pad.record_loss(loss)
        return y

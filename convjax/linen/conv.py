"""Linen convolution with "SAME" output size for every padding mode (``padding_mode``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from convjax.linen.padding import PADDING_MODES, Pad
from convjax.ops.partial_pad import partial_conv_scale
from convjax.ops.validation import (
    check_choice,
    check_floating,
    check_positive,
    check_spatial_rank,
    normalize_tuple,
    same_pads,
)


class Conv(nn.Module):
    """N-d convolution, output ``ceil(size / stride)``, border handling set by ``padding_mode``.

    Same maths as :class:`convjax.nnx.Conv`: zero/partial padding inside the conv op, other
    modes explicit padding with :class:`Pad` then "VALID" windows; ``"partial"`` re-weights by
    ``sum(1)/sum(M)`` (Liu et al. 2018); ``"learned"`` pads with a :class:`PaddingModule`
    whose filter is in the ``"padding"`` collection and whose
    loss is sown into ``"losses"``. Input features are inferred (Linen convention).

    Attributes:
      features: output channels.
      kernel_size: int (``num_spatial_dims`` dims, default 2) or one int per spatial dim.
      strides, kernel_dilation, feature_group_count, use_bias: as ``flax.linen.Conv``.
      padding_mode: one of :data:`convjax.linen.padding.PADDING_MODES`.
      padding_kwargs: learned-padding options (``depth``, ``width``, ``mixing``, ...).
      dtype: compute dtype (None = input dtype). param_dtype: float32.

    Shapes: ``(N, *S, C_in) -> (N, *ceil(S / strides), features)``.

    Example:
      >>> conv = Conv(16, 3, padding_mode="learned")
      >>> variables = conv.init(jax.random.key(0), jnp.ones((2, 32, 32, 3)))
      >>> sorted(variables)
      ['losses', 'padding', 'params']
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] = 1
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
        check_choice(self.padding_mode, PADDING_MODES, "padding_mode")
        if self.padding_kwargs and self.padding_mode != "learned":
            raise ValueError(
                f"`padding_kwargs` only apply to padding_mode 'learned', got "
                f"{self.padding_mode!r} with {dict(self.padding_kwargs)!r}."
            )
        check_positive(self.features, "features")
        if isinstance(self.kernel_size, int):
            n = 2 if self.num_spatial_dims is None else int(self.num_spatial_dims)
        else:
            n = len(tuple(self.kernel_size))
        check_spatial_rank(x, "x", min_spatial=n, max_spatial=n)
        check_floating(x, "x")
        window = normalize_tuple(self.kernel_size, n, "kernel_size")
        strides = normalize_tuple(self.strides, n, "strides")
        dilation = normalize_tuple(self.kernel_dilation, n, "kernel_dilation")
        in_features = x.shape[-1]
        groups = self.feature_group_count
        if in_features % groups or self.features % groups:
            raise ValueError(
                f"input features ({in_features}) and `features` ({self.features}) must be "
                f"divisible by `feature_group_count` ({groups})."
            )
        dtype = x.dtype if self.dtype is None else self.dtype
        spatial = x.shape[1:-1]
        pads = tuple(
            same_pads(s, k, st, d) for s, k, st, d in zip(spatial, window, strides, dilation)
        )
        if self.padding_mode in ("zero", "partial"):
            # zero padding inside the conv op (XLA's native path, as flax.linen.Conv does)
            xp, conv_pads = x.astype(dtype), pads
        else:
            xp = Pad(
                pad_width=pads,
                mode=self.padding_mode,
                padding_kwargs=self.padding_kwargs,
                name="pad",
            )(x.astype(dtype), pads, deterministic)
            conv_pads = "VALID"
        kernel = self.param(
            "kernel",
            self.kernel_init,
            (*window, in_features // groups, self.features),
            self.param_dtype,
        )
        spec = "DHW"[3 - n :]
        y = jax.lax.conv_general_dilated(
            xp,
            kernel.astype(dtype),
            window_strides=strides,
            padding=conv_pads,
            rhs_dilation=dilation,
            dimension_numbers=("N" + spec + "C", spec + "IO", "N" + spec + "C"),
            feature_group_count=groups,
        )
        bias = None
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            bias = bias.astype(dtype)
        if self.padding_mode == "partial":
            scale = partial_conv_scale(spatial, window, strides, pads, dilation)
            y = y * jnp.asarray(scale, dtype)
            if bias is not None:
                y = y + bias * jnp.asarray(scale > 0, dtype)
        elif bias is not None:
            y = y + bias
        return y

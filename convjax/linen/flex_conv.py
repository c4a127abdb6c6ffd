"""FlexConv and CKConv as Flax Linen modules.

Romero et al., FlexConv (ICLR 2022, arXiv 2110.08059); the math is
:func:`convjax.ops.flex_conv.flex_conv` (see there for the bucket ladder under ``jit``).

Variables (collection ``params``): ``kernel_net`` (the MAGNet/SIREN pytree), ``mask``
(``{"mu", "sigma"}``, sigma itself as in the reference, FlexConv only -- label the ``mask``
subtree for its own learning rate, 0.1x in the paper) and ``bias``. With ``losses`` mutable
in ``apply``, FlexConv sows its anti-aliasing penalty there as ``aliasing_penalty`` (add it
to the task loss).
The spatial rank comes from the input (``(N, *S, C)``); ``causal=True`` needs 1-D input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from convjax._checks import check_floating, check_spatial_rank
from convjax.ops.flex_conv import (
    flex_conv,
    flex_conv_aliasing_penalty,
    flex_conv_init,
    init_mask,
    resolution_change,
)


class FlexConv(nn.Module):
    """FlexConv: MAGNet kernel x learned Gaussian mask, cropped to a bucket of its size.

    Attributes:
      features: output channels.
      kernel_size: horizon (odd maximum size; 33 CIFAR, 29 MNIST).
      strides, mask_threshold (0.1), mask_init_sigma (0.075), hidden_features (32),
      num_layers (3), causal, padding_mode ("zero" | "reflect" | "replicate" | "circular"),
      kernel_net ("magnet" | "siren"), input_scale (25.6), omega_0 (30), use_bias,
      conv_method ("auto" | "spatial" | "fft"), fft_threshold, buckets, aliasing_weight (0.1),
      aliasing_stddevs (2), aliasing_target ("gabor"), aliasing_rule ("reference"),
      init_unit_energy (True), gabor_centre ("mask"):
        as in :class:`convjax.nnx.FlexConv`.
      resolution_factor: run at this multiple of the training resolution (the kernel is
        re-sampled on a grid ``factor`` times finer and scaled by ``factor^-d``).
      use_mask: ``False`` gives CKConv (full horizon, no mask).
      dtype: compute dtype (default: the input's). param_dtype: float32.

    Example:
      >>> layer = FlexConv(8, 33)
      >>> variables = layer.init(jax.random.key(0), jnp.ones((1, 32, 32, 3)))
      >>> sorted(variables["params"])
      ['bias', 'kernel_net', 'mask']
    """

    features: int
    kernel_size: int = 33
    strides: int | Sequence[int] = 1
    mask_threshold: float = 0.1
    mask_init_sigma: float = 0.075
    hidden_features: int = 32
    num_layers: int = 3
    causal: bool = False
    padding_mode: str = "zero"
    kernel_net: str = "magnet"
    input_scale: float = 25.6
    omega_0: float = 30.0
    use_bias: bool = True
    conv_method: str = "auto"
    fft_threshold: int | None = None
    buckets: Sequence[int] | None = None
    aliasing_weight: float = 0.1
    aliasing_stddevs: float = 2.0
    aliasing_target: str = "gabor"
    aliasing_rule: str = "reference"
    init_unit_energy: bool = True
    gabor_centre: str = "mask"
    resolution_factor: float = 1.0
    use_mask: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``(N, *S, C_in)`` -> ``(N, *ceil(S / strides), features)``."""
        check_floating(x, "x")
        d = check_spatial_rank(x, "x")
        in_features = x.shape[-1]

        def full_init(key: jax.Array) -> dict[str, Any]:
            return flex_conv_init(
                key,
                d,
                in_features,
                self.features,
                kernel_size=self.kernel_size,
                kernel_net=self.kernel_net,
                use_mask=self.use_mask,
                mask_init_sigma=self.mask_init_sigma,
                causal=self.causal,
                use_bias=False,
                hidden_features=self.hidden_features,
                num_layers=self.num_layers,
                input_scale=self.input_scale,
                omega_0=self.omega_0,
                init_unit_energy=self.init_unit_energy,
                gabor_centre=self.gabor_centre,
            )

        cast = lambda tree: jax.tree.map(lambda a: a.astype(self.param_dtype), tree)
        params: dict[str, Any] = {
            "kernel_net": self.param("kernel_net", lambda key: cast(full_init(key)["kernel_net"]))
        }
        if self.use_mask:
            params["mask"] = self.param(
                "mask",
                lambda key: cast(init_mask(d, self.mask_init_sigma, causal=self.causal)),
            )
        if self.use_bias:
            params["bias"] = self.param(
                "bias", nn.initializers.zeros, (self.features,), self.param_dtype
            )
        horizon, scale, buckets = self.kernel_size, 1.0, self.buckets
        if self.resolution_factor != 1.0:
            horizon, scale = resolution_change(self.kernel_size, d, self.resolution_factor)
            buckets = None
        if self.is_mutable_collection("losses") and not self.is_initializing():
            penalty = flex_conv_aliasing_penalty(
                params,
                self.kernel_size,
                self.aliasing_weight,
                self.kernel_net,
                self.aliasing_stddevs,
                target=self.aliasing_target,
                rule=self.aliasing_rule,
            )
            self.sow("losses", "aliasing_penalty", penalty)
        return flex_conv(
            params,
            x,
            kernel_size=horizon,
            kernel_net=self.kernel_net,
            omega_0=self.omega_0,
            threshold=self.mask_threshold,
            causal=self.causal,
            strides=self.strides,
            padding_mode=self.padding_mode,
            buckets=buckets,
            conv_method=self.conv_method,
            fft_threshold=self.fft_threshold,
            kernel_scale=scale,
            dtype=self.dtype,
        )


class CKConv(FlexConv):
    """CKConv: a SIREN continuous kernel on the full horizon (no mask, no crop).

    Same attributes as :class:`FlexConv`, with ``use_mask=False`` and ``kernel_net="siren"``.

    Example:
      >>> layer = CKConv(4, 9, causal=True)
      >>> y, _ = layer.init_with_output(jax.random.key(0), jnp.ones((1, 20, 2)))
      >>> y.shape
      (1, 20, 4)
    """

    kernel_net: str = "siren"
    use_mask: bool = False

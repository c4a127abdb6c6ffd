"""FlexConv and CKConv as Flax NNX modules.

Romero et al., FlexConv (ICLR 2022, arXiv 2110.08059); CKConv (ICLR 2022, arXiv 2102.02611).
The math lives in :func:`convjax.ops.flex_conv.flex_conv`; these modules own the parameters.

* Mask parameters (``mask_mu``, ``mask_sigma``) are :class:`MaskParam`, a subclass of
  ``nnx.Param``: ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` trains them with everything else,
  and a trainer can give them their own learning rate (0.1x in the paper) by labelling
  ``MaskParam`` leaves, e.g. ``nnx.state(model, MaskParam)`` / ``optax.multi_transform``
  (:func:`convjax.train.optim.make_task_optimizer` does, with ``mask_lr_factor=0.1``).
  ``mask_sigma`` holds sigma itself, initialised at 0.075 as in the reference, so Adam moves
  it by the reference's step; positivity is enforced where it is used
  (:func:`convjax.ops.gaussian_mask.positive_sigma`), without clipping.
* The crop is chosen on device by ``lax.switch`` over a bucket ladder (see
  :mod:`convjax.ops.flex_conv`), so a jitted/pmapped/shard_mapped train step needs no host-side
  logic, and the compiled step is reused when the learned size changes bucket.
* :func:`total_aliasing_penalty` sums the anti-aliasing penalty of every FlexConv in a model.
* :func:`change_resolution` returns a copy of a model whose FlexConv/CKConv layers sample their
  kernels for inputs ``factor`` times the training resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from convjax._checks import check_choice
from convjax.ops.flex_conv import (
    ALIASING_RULES,
    ALIASING_TARGETS,
    active_bucket,
    flex_conv,
    flex_conv_aliasing_penalty,
    flex_conv_init,
    mask_sigma,
    resolution_change,
    sample_kernel,
)
from convjax.ops.gaussian_mask import check_buckets, default_buckets


class MaskParam(nnx.Param):
    """A FlexConv mask parameter (mu or raw sigma): an ``nnx.Param`` a trainer can single out."""


def _is_var(v: Any) -> bool:
    return isinstance(v, nnx.Variable)


class _ContinuousConv(nnx.Module):
    """Shared implementation of :class:`FlexConv` (masked MAGNet) and :class:`CKConv`."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int,
        *,
        use_mask: bool,
        kernel_net: str,
        strides: int | Sequence[int],
        mask_threshold: float,
        mask_init_sigma: float,
        hidden_features: int,
        num_layers: int,
        causal: bool,
        padding_mode: str,
        num_spatial_dims: int | None,
        input_scale: float,
        omega_0: float,
        use_bias: bool,
        conv_method: str,
        fft_threshold: int | None,
        buckets: Sequence[int] | None,
        aliasing_weight: float,
        aliasing_stddevs: float,
        aliasing_target: str,
        aliasing_rule: str,
        init_unit_energy: bool,
        gabor_centre: str,
        dtype: Any,
        param_dtype: Any,
        rngs: nnx.Rngs,
    ):
        if num_spatial_dims is None:
            num_spatial_dims = 1 if causal else 2
        check_choice(num_spatial_dims, (1, 2, 3), "num_spatial_dims")
        check_choice(aliasing_target, ALIASING_TARGETS, "aliasing_target")
        check_choice(aliasing_rule, ALIASING_RULES, "aliasing_rule")
        params = flex_conv_init(
            rngs.params(),
            num_spatial_dims,
            in_features,
            out_features,
            kernel_size=kernel_size,
            kernel_net=kernel_net,
            use_mask=use_mask,
            mask_init_sigma=mask_init_sigma,
            causal=causal,
            use_bias=use_bias,
            hidden_features=hidden_features,
            num_layers=num_layers,
            input_scale=input_scale,
            omega_0=omega_0,
            init_unit_energy=init_unit_energy,
            gabor_centre=gabor_centre,
        )
        if buckets is not None:
            buckets = check_buckets(tuple(buckets), kernel_size, causal)
        self.in_features = in_features
        self.out_features = out_features
        self.kernel_size = kernel_size
        self.num_spatial_dims = num_spatial_dims
        self.kernel_net_type = kernel_net
        self.strides = strides
        self.mask_threshold = mask_threshold
        self.causal = causal
        self.padding_mode = padding_mode
        self.omega_0 = omega_0
        self.conv_method = conv_method
        self.fft_threshold = fft_threshold
        self.buckets = buckets
        self.aliasing_weight = aliasing_weight
        self.aliasing_stddevs = aliasing_stddevs
        self.aliasing_target = aliasing_target
        self.aliasing_rule = aliasing_rule
        self.resolution_factor = 1.0
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.kernel_net = nnx.data(
            jax.tree.map(lambda a: nnx.Param(a.astype(param_dtype)), params["kernel_net"])
        )
        if use_mask:
            self.mask_mu = MaskParam(params["mask"]["mu"].astype(param_dtype))
            self.mask_sigma = MaskParam(params["mask"]["sigma"].astype(param_dtype))
        else:
            self.mask_mu = None
            self.mask_sigma = None
        self.bias = nnx.Param(params["bias"].astype(param_dtype)) if use_bias else None

    # ------------------------------------------------------------------ parameters & config
    def op_params(self) -> dict[str, Any]:
        """The parameters as the plain pytree :func:`convjax.ops.flex_conv.flex_conv` takes."""
        out: dict[str, Any] = {
            "kernel_net": jax.tree.map(lambda v: v[...], self.kernel_net, is_leaf=_is_var)
        }
        if self.mask_mu is not None:
            out["mask"] = {"mu": self.mask_mu[...], "sigma": self.mask_sigma[...]}
        if self.bias is not None:
            out["bias"] = self.bias[...]
        return out

    def _grid(self) -> tuple[int, float, tuple[int, ...] | None]:
        """(horizon, kernel scale, bucket ladder) at the current resolution factor."""
        if self.resolution_factor == 1.0:
            return self.kernel_size, 1.0, self.buckets
        horizon, scale = resolution_change(
            self.kernel_size, self.num_spatial_dims, self.resolution_factor
        )
        return horizon, scale, None

    @property
    def sigma(self) -> jax.Array | None:
        """Current mask widths ``(d,)`` as used (``positive_sigma``; ``None`` for CKConv)."""
        return None if self.mask_mu is None else mask_sigma(self.op_params())

    def bucket_sizes(self) -> tuple[int, ...]:
        """The crop ladder in use (the horizon only, for CKConv)."""
        horizon, _, buckets = self._grid()
        if self.mask_mu is None:
            return (horizon,)
        return tuple(buckets) if buckets is not None else default_buckets(horizon)

    def active_kernel_size(self) -> jax.Array:
        """The cropped kernel size the next call uses (int32 scalar, traceable)."""
        horizon, _, buckets = self._grid()
        ladder = self.bucket_sizes()
        index = active_bucket(
            self.op_params(),
            kernel_size=horizon,
            threshold=self.mask_threshold,
            causal=self.causal,
            buckets=buckets,
        )
        return jnp.asarray(ladder, jnp.int32)[index]

    def kernel(self, size: int | None = None) -> jax.Array:
        """The sampled kernel ``(*(size,) * d, C_in, C_out)`` (default: the whole horizon).

        Cropped as the layer computes it: taps outside the mask's crop are zero.
        """
        horizon, scale, _ = self._grid()
        return sample_kernel(
            self.op_params(),
            self.in_features,
            kernel_size=horizon,
            size=size,
            causal=self.causal,
            kernel_net=self.kernel_net_type,
            omega_0=self.omega_0,
            kernel_scale=scale,
            threshold=self.mask_threshold,
        )

    def aliasing_penalty(self, target: str | None = None, rule: str | None = None) -> jax.Array:
        """FlexConv's anti-aliasing penalty at the *training* horizon (0.0 for SIREN nets).

        :func:`convjax.ops.flex_conv.flex_conv_aliasing_penalty` with ``aliasing_weight``,
        ``s = aliasing_stddevs`` and ``target`` / ``rule`` (default: the layer's
        ``aliasing_target`` / ``aliasing_rule``).
        """
        return flex_conv_aliasing_penalty(
            self.op_params(),
            self.kernel_size,
            self.aliasing_weight,
            self.kernel_net_type,
            self.aliasing_stddevs,
            target=self.aliasing_target if target is None else target,
            rule=self.aliasing_rule if rule is None else rule,
        )

    # ------------------------------------------------------------------ forward
    def __call__(self, x: jax.Array) -> jax.Array:
        """``(N, *S, C_in)`` -> ``(N, *ceil(S / strides), C_out)``; see the class docstring."""
        if x.ndim != self.num_spatial_dims + 2:
            raise ValueError(
                f"`x` must be (N, *spatial, {self.in_features}) with {self.num_spatial_dims} "
                f"spatial dims for this layer, got shape {tuple(getattr(x, 'shape', ()))}."
            )
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"`x` must have in_features={self.in_features} features, got {x.shape[-1]}."
            )
        horizon, scale, buckets = self._grid()
        return flex_conv(
            self.op_params(),
            x,
            kernel_size=horizon,
            kernel_net=self.kernel_net_type,
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


class FlexConv(_ContinuousConv):
    """FlexConv: a MAGNet continuous kernel times a learned Gaussian mask, cropped to its size.

    ``K(x) = MAGNet(x) * prod_d exp(-1/2 ((x_d - mu_d) / sigma_d)^2)`` on the grid
    ``linspace(-1, 1, kernel_size)^d`` (FlexConv eqs. 3-4), cropped per dim as the authors'
    dynamic crop does (taps outside are zero), computed in the smallest bucket of a ladder
    (5, 9, 17, 33 by default) that holds the crop, picked on device by ``lax.switch``.
    Output has "SAME" size ``ceil(S / strides)``.

    Args:
      in_features, out_features: channels.
      kernel_size: horizon (odd maximum size; 33 for CIFAR, 29 for MNIST; a causal kernel may
        be even, e.g. 784 = a whole sMNIST sequence).
      strides: int or per dim.
      mask_threshold: crop threshold T (0.1). mask_init_sigma: initial sigma (0.075 -> 5x5).
      hidden_features, num_layers: MAGNet width and depth (32 x 3).
      causal: 1-D causal conv for sequences (mask ``mu = 1`` = the newest step).
      padding_mode: "zero", "reflect", "replicate" or "circular".
      num_spatial_dims: 1, 2 or 3 (default 2, or 1 if causal).
      kernel_net: "magnet" (default) or "siren". input_scale / omega_0: their frequency scales.
      conv_method: "auto" (spatial below ``fft_threshold``, FFT above), "spatial" or "fft".
      buckets: custom crop ladder (ascending, ending at ``kernel_size``).
      aliasing_weight: weight of :meth:`aliasing_penalty` (0.1).
      aliasing_stddevs: ``s`` of the penalty, envelope widths counted as frequencies (2).
      aliasing_target: ``"gabor"`` (default, the mask left out, as most reference runs) or
        ``"gabor+mask"``. aliasing_rule: ``"reference"`` (default, ``max|W| + s max|gamma|``
        per Gabor layer, the authors' code) or ``"per_entry"`` (``max(|W| + s|gamma|)``, the
        paper's stated intent); see :func:`convjax.ops.flex_conv.flex_conv_aliasing_penalty`.
      init_unit_energy, gabor_centre: initialisation switches, see
        :func:`convjax.ops.flex_conv.flex_conv_init` (``False`` / ``"origin"`` = the
        authors' code).
      dtype: compute dtype (default: the input's). param_dtype: float32.
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Example:
      >>> layer = FlexConv(3, 8, 33, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 32, 32, 3))).shape, int(layer.active_kernel_size())
      ((2, 32, 32, 8), 5)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int = 33,
        *,
        strides: int | Sequence[int] = 1,
        mask_threshold: float = 0.1,
        mask_init_sigma: float = 0.075,
        hidden_features: int = 32,
        num_layers: int = 3,
        causal: bool = False,
        padding_mode: str = "zero",
        num_spatial_dims: int | None = None,
        kernel_net: str = "magnet",
        input_scale: float = 25.6,
        omega_0: float = 30.0,
        use_bias: bool = True,
        conv_method: str = "auto",
        fft_threshold: int | None = None,
        buckets: Sequence[int] | None = None,
        aliasing_weight: float = 0.1,
        aliasing_stddevs: float = 2.0,
        aliasing_target: str = "gabor",
        aliasing_rule: str = "reference",
        init_unit_energy: bool = True,
        gabor_centre: str = "mask",
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            in_features,
            out_features,
            kernel_size,
            use_mask=True,
            kernel_net=kernel_net,
            strides=strides,
            mask_threshold=mask_threshold,
            mask_init_sigma=mask_init_sigma,
            hidden_features=hidden_features,
            num_layers=num_layers,
            causal=causal,
            padding_mode=padding_mode,
            num_spatial_dims=num_spatial_dims,
            input_scale=input_scale,
            omega_0=omega_0,
            use_bias=use_bias,
            conv_method=conv_method,
            fft_threshold=fft_threshold,
            buckets=buckets,
            aliasing_weight=aliasing_weight,
            aliasing_stddevs=aliasing_stddevs,
            aliasing_target=aliasing_target,
            aliasing_rule=aliasing_rule,
            init_unit_energy=init_unit_energy,
            gabor_centre=gabor_centre,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )


class CKConv(_ContinuousConv):
    """CKConv: a continuous (SIREN by default) kernel on the full horizon, no mask, no crop.

    ``K(x) = SIREN(x)`` on ``linspace(-1, 1, kernel_size)^d``; otherwise as :class:`FlexConv`
    (same arguments minus the mask ones).

    Example:
      >>> layer = CKConv(2, 4, 9, causal=True, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((1, 20, 2))).shape
      (1, 20, 4)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int = 33,
        *,
        strides: int | Sequence[int] = 1,
        hidden_features: int = 32,
        num_layers: int = 3,
        causal: bool = False,
        padding_mode: str = "zero",
        num_spatial_dims: int | None = None,
        kernel_net: str = "siren",
        input_scale: float = 25.6,
        omega_0: float = 30.0,
        use_bias: bool = True,
        conv_method: str = "auto",
        fft_threshold: int | None = None,
        aliasing_weight: float = 0.1,
        aliasing_stddevs: float = 2.0,
        aliasing_target: str = "gabor",
        aliasing_rule: str = "reference",
        init_unit_energy: bool = True,
        gabor_centre: str = "mask",
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            in_features,
            out_features,
            kernel_size,
            use_mask=False,
            kernel_net=kernel_net,
            strides=strides,
            mask_threshold=0.1,
            mask_init_sigma=0.075,
            hidden_features=hidden_features,
            num_layers=num_layers,
            causal=causal,
            padding_mode=padding_mode,
            num_spatial_dims=num_spatial_dims,
            input_scale=input_scale,
            omega_0=omega_0,
            use_bias=use_bias,
            conv_method=conv_method,
            fft_threshold=fft_threshold,
            buckets=None,
            aliasing_weight=aliasing_weight,
            aliasing_stddevs=aliasing_stddevs,
            aliasing_target=aliasing_target,
            aliasing_rule=aliasing_rule,
            init_unit_energy=init_unit_energy,
            gabor_centre=gabor_centre,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )


def _continuous_layers(model: nnx.Module):
    for _, node in nnx.iter_graph(model):
        if isinstance(node, _ContinuousConv):
            yield node


def total_aliasing_penalty(
    model: nnx.Module, *, target: str | None = None, rule: str | None = None
) -> jax.Array:
    """Sum of :meth:`FlexConv.aliasing_penalty` over every FlexConv/CKConv in ``model``.

    A float32 scalar (0.0 if the model has none; SIREN kernels contribute 0). Add it to the
    task loss inside the train step: ``loss = task_loss + total_aliasing_penalty(model)``.
    ``target`` / ``rule`` override every layer's ``aliasing_target`` / ``aliasing_rule``
    (``None``: each layer's own).

    Example:
      >>> total_aliasing_penalty(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
      Array(0., dtype=float32)
    """
    total = jnp.zeros((), jnp.float32)
    for layer in _continuous_layers(model):
        total = total + layer.aliasing_penalty(target, rule)
    return total


def change_resolution(model: nnx.Module, factor: float) -> nnx.Module:
    """A copy of ``model`` whose FlexConv/CKConv layers expect ``factor`` x the training resolution.

    Each layer samples the same continuous kernel on a grid ``factor`` times finer (horizon
    ``factor (k - 1) + 1``, the default bucket ladder for it) and scales it by ``factor^-d``
    (FlexConv Sec. 4.2). ``factor`` is absolute (relative to training), so ``1.0`` restores
    the original; ``factor (k - 1)`` must be an even integer. Parameters are copied, not shared.

    Example:
      >>> layer = FlexConv(1, 1, 17, rngs=nnx.Rngs(0))
      >>> hi = change_resolution(layer, 2)
      >>> hi(jnp.ones((1, 32, 32, 1))).shape, hi.bucket_sizes()
      ((1, 32, 32, 1), (5, 9, 17, 33))
    """
    new = nnx.clone(model)
    for layer in _continuous_layers(new):
        resolution_change(layer.kernel_size, layer.num_spatial_dims, factor)  # validates
        layer.resolution_factor = float(factor)
    return new

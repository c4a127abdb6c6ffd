"""Switchable building blocks shared by every convjax model.

Every model is written against four switches, resolved here and nowhere else:

* ``padding`` — how convolutions extend the border: ``"zero"``, ``"reflect"``,
  ``"replicate"``, ``"circular"`` (:func:`convjax.ops.pad`), ``"partial"`` (partial-convolution
  re-weighting, Liu et al. 2018) or ``"learned"`` (the Padding Module, Alrasheedi et al. 2023).
* ``pool`` — the downsampling pool: ``"max"``, ``"avg"`` or ``"soft"`` (SoftPool,
  Stergiou et al. 2021: ``out = sum_i softmax(a)_i a_i`` over each window).
* ``norm`` — ``"batch"`` (``nnx.BatchNorm`` after each conv, statistics averaged over
  ``axis_name``), ``"deconv"`` (Network Deconvolution, Ye et al. 2020: each Conv+BN becomes one
  :class:`convjax.nnx.DeconvConv` with bias and the classifier a
  :class:`convjax.nnx.DeconvDense`) or ``"none"`` (conv with bias, no normalisation).
* ``conv`` — ``"standard"`` (a fixed-size kernel) or ``"flex"`` (FlexConv, Romero et al. 2022:
  a continuous kernel times a learned Gaussian mask, cropped to the mask's support). Only
  spatial kernels (size > 1) become FlexConvs; 1x1 projections stay standard.

Switch combinations that cannot work raise ``ValueError`` when the config is built
(:class:`LayerConfig`):

* ``norm="deconv"`` with ``conv="flex"``: Network Deconvolution folds the whitening matrix into
  a fixed weight tensor; a FlexConv kernel is generated per step by a kernel network and
  cropped, so there is no deconvolution-FlexConv layer.
* ``norm="deconv"`` with ``padding="partial"``: partial convolution re-weights the raw window
  sum by ``window area / valid area``; the deconvolved conv subtracts the patch mean inside the
  window (``(X - mu) D w``), so zero-filled taps are not "missing" and the re-weighting has no
  meaning there.
* ``conv="flex"`` with a padding mode that :class:`convjax.nnx.FlexConv` does not offer (see
  :data:`FLEX_PADDING_MODES`). FlexConv pads by its full horizon, so ``"reflect"`` and
  ``"circular"`` also need feature maps larger than ``flex_kernel_size // 2``; FlexConv raises
  a ``ValueError`` naming the sizes otherwise (use ``"zero"``/``"replicate"`` or a smaller
  horizon on small maps).

Layout is channels-last ``(batch, *spatial, features)`` throughout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import convjax.nnx as cnn
from convjax._checks import (
    check_choice,
    check_positive,
    check_spatial_rank,
    normalize_tuple,
)
from convjax.nnx.soft_pool import Pool as Pool  # re-exported: the models' switchable pool
from convjax.ops.pad import FLEX_PADDING_MODES, PADDING_MODES, check_deconv_padding_mode
from convjax.switches import CONV_TYPES, NORM_TYPES, POOL_TYPES  # re-exported

#: The reference code's first deconvolution layer of its VGGs (CIFAR and ImageNet) and ImageNet
#: ResNets: 15 Newton-Schulz iterations (near-full whitening of the ``k*k*3`` patch) and the
#: freeze schedule (:func:`convjax.ops.deconv_freeze_schedule`). Its CIFAR ResNets use defaults.
DECONV_FIRST_LAYER: Mapping[str, Any] = {"num_iters": 15, "freeze": True}

Dtype = Any


@dataclasses.dataclass(frozen=True)
class LayerConfig:
    """The switches and layer hyper-parameters every model block is built from.

    Attributes:
      padding: one of :data:`PADDING_MODES`.
      pool: one of :data:`POOL_TYPES`.
      norm: one of :data:`NORM_TYPES`.
      conv: one of :data:`CONV_TYPES`.
      axis_name: named axis over which cross-batch statistics (BatchNorm statistics,
        deconvolution moments) are averaged under ``pmap``/``shard_map``; ``None`` = no sync.
      dtype: compute dtype (``None``: the input's dtype).
      param_dtype: parameter dtype (float32).
      bn_momentum: BatchNorm running-average decay (Flax convention; 0.9 = PyTorch's 0.1).
      bn_epsilon: BatchNorm epsilon.
      flex_kernel_size: FlexConv horizon (largest kernel; 33 on CIFAR as in the paper; odd,
        except for causal sequence models, whose horizon is the sequence length, e.g. 784).
      flex_kwargs: extra keyword arguments for every ``FlexConv`` (e.g. ``mask_threshold``).
      deconv_kwargs: extra keyword arguments for every ``DeconvConv``/``DeconvDense``
        (e.g. ``block``, ``num_iters``, ``sampling_stride``, ``momentum``, ``eps``).

    Raises:
      ValueError: an unknown switch value, or a combination that cannot work (module docstring).

    Example:
      >>> cfg = LayerConfig(padding="reflect", pool="soft", norm="batch")
      >>> cfg.pool
      'soft'
    """

    padding: str = "zero"
    pool: str = "max"
    norm: str = "batch"
    conv: str = "standard"
    axis_name: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    flex_kernel_size: int = 33
    flex_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    deconv_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice(self.padding, PADDING_MODES, "padding")
        check_choice(self.pool, POOL_TYPES, "pool")
        check_choice(self.norm, NORM_TYPES, "norm")
        check_choice(self.conv, CONV_TYPES, "conv")
        if self.norm == "deconv" and self.conv == "flex":
            raise ValueError(
                "`norm='deconv'` cannot be combined with `conv='flex'`: Network Deconvolution "
                "folds its whitening matrix into a fixed conv kernel, and FlexConv kernels are "
                "generated and cropped per step. Use norm='batch' or norm='none' with conv='flex'."
            )
        if self.norm == "deconv":
            check_deconv_padding_mode(self.padding, "padding")
        if self.conv == "flex" and self.padding not in FLEX_PADDING_MODES:
            raise ValueError(
                f"`padding={self.padding!r}` cannot be combined with `conv='flex'`: FlexConv "
                f"supports padding modes {list(FLEX_PADDING_MODES)}."
            )
        if (
            not isinstance(self.flex_kernel_size, int)
            or isinstance(self.flex_kernel_size, bool)
            or self.flex_kernel_size < 1
        ):
            raise ValueError(
                f"`flex_kernel_size` must be an int >= 1 (odd unless the FlexConvs are causal), "
                f"got {self.flex_kernel_size!r}."
            )
        check_positive(self.bn_epsilon, "bn_epsilon")
        if not 0.0 <= self.bn_momentum < 1.0:
            raise ValueError(f"`bn_momentum` must be in [0, 1), got {self.bn_momentum!r}.")


def _relu(x: jax.Array) -> jax.Array:
    return jax.nn.relu(x)


class ConvNorm(nnx.Module):
    """Convolution -> normalisation -> (optional) ReLU, with every switch resolved.

    ``(N, *spatial, in_features) -> (N, *ceil(spatial / strides), out_features)`` for every
    padding mode (the "SAME" output size).

    * ``norm="batch"``: ``relu(BN(conv(x)))`` with a bias-free conv (BN supplies the shift).
    * ``norm="none"``: ``relu(conv(x) + b)``.
    * ``norm="deconv"``: ``relu(DeconvConv(x))`` = ``relu(((X - mu) D) w + b)`` on im2col
      patches ``X`` of the padded input (Ye et al. 2020, eq. for the deconvolved conv with
      fused bias); the layer pads with ``padding_mode`` exactly as :class:`convjax.nnx.Conv`.

    Every conv pads symmetric ``k // 2`` (PyTorch geometry, :func:`convjax.ops.conv_padding`),
    so a stride-2 conv pads all four sides, as in the papers' networks.
    * ``conv="flex"`` with a kernel larger than 1: the conv is a :class:`convjax.nnx.FlexConv`
      with horizon ``cfg.flex_kernel_size`` (kernel = MAGNet(grid) * Gaussian mask).

    Args:
      in_features: input channels.
      out_features: output channels.
      kernel_size: int or one int per spatial dim (odd sizes keep "SAME" symmetric).
      cfg: the model's :class:`LayerConfig`.
      strides: int or per-dim strides.
      act: apply ReLU at the end.
      num_spatial: spatial rank (2 for images, 1 for sequences) when ``kernel_size`` is an int.
      causal: 1-D causal conv (output ``t`` sees inputs ``<= t``; zero history). Needs
        ``padding="zero"`` and stride 1.
      deconv_overrides: ``DeconvConv`` keyword arguments that take precedence over
        ``cfg.deconv_kwargs`` for this layer (e.g. :data:`DECONV_FIRST_LAYER`); ignored unless
        ``cfg.norm == "deconv"``.
      rngs: parameter RNGs.

    Example:
      >>> block = ConvNorm(3, 8, 3, cfg=LayerConfig(), rngs=nnx.Rngs(0))
      >>> block(jnp.ones((2, 8, 8, 3))).shape
      (2, 8, 8, 8)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        *,
        cfg: LayerConfig,
        strides: int | Sequence[int] = 1,
        act: bool = True,
        num_spatial: int = 2,
        causal: bool = False,
        deconv_overrides: Mapping[str, Any] | None = None,
        rngs: nnx.Rngs,
    ):
        kernel = normalize_tuple(kernel_size, num_spatial, "kernel_size")
        deconv_kwargs = {**cfg.deconv_kwargs, **(deconv_overrides or {})}
        stride = normalize_tuple(strides, num_spatial, "strides")
        self.act = act
        self.kernel_size = kernel
        self.strides = stride
        self.norm: nnx.BatchNorm | None = nnx.data(None)
        use_flex = cfg.conv == "flex" and max(kernel) > 1
        common = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
        if causal and (num_spatial != 1 or cfg.padding != "zero" or max(stride) != 1):
            raise ValueError(
                "A causal ConvNorm needs 1 spatial dim, `padding='zero'` (the past is "
                f"zero-extended) and stride 1; got num_spatial={num_spatial}, "
                f"padding={cfg.padding!r}, strides={stride}."
            )
        causal_pads = tuple((k - 1, 0) for k in kernel)
        if cfg.norm == "deconv" and causal:
            self.conv = cnn.DeconvConv(
                in_features,
                out_features,
                kernel,
                strides=stride,
                padding=causal_pads,
                use_bias=True,
                axis_name=cfg.axis_name,
                **deconv_kwargs,
                **common,
            )
        elif causal and not use_flex:
            self.conv = nnx.Conv(
                in_features,
                out_features,
                kernel,
                strides=stride,
                padding=causal_pads,
                use_bias=cfg.norm == "none",
                **common,
            )
        elif cfg.norm == "deconv":
            self.conv = cnn.DeconvConv(
                in_features,
                out_features,
                kernel,
                strides=stride,
                # A 1x1 window never reads the border: no padding (and no padding parameters).
                padding_mode=cfg.padding if max(kernel) > 1 else "zero",
                use_bias=True,
                axis_name=cfg.axis_name,
                **deconv_kwargs,
                **common,
            )
        elif use_flex:
            if not causal and cfg.flex_kernel_size % 2 == 0:
                raise ValueError(
                    f"`flex_kernel_size` must be odd for a non-causal FlexConv (a centred "
                    f"kernel), got {cfg.flex_kernel_size!r}."
                )
            self.conv = cnn.FlexConv(
                in_features,
                out_features,
                cfg.flex_kernel_size,
                strides=stride,
                padding_mode=cfg.padding,
                causal=causal,
                num_spatial_dims=num_spatial,
                use_bias=cfg.norm == "none",
                **dict(cfg.flex_kwargs),
                **common,
            )
        else:
            self.conv = cnn.Conv(
                in_features,
                out_features,
                kernel,
                strides=stride,
                # A 1x1 window never reads the border: no padding (and no padding parameters).
                padding_mode=cfg.padding if max(kernel) > 1 else "zero",
                use_bias=cfg.norm == "none",
                **common,
            )
        if cfg.norm == "batch":
            self.norm = nnx.BatchNorm(
                out_features,
                momentum=cfg.bn_momentum,
                epsilon=cfg.bn_epsilon,
                axis_name=cfg.axis_name,
                **common,
            )

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv(x)
        if self.norm is not None:
            y = self.norm(y)
        return _relu(y) if self.act else y


class Classifier(nnx.Module):
    """The linear head ``(N, F) -> (N, num_classes)``; a ``DeconvDense`` when ``norm="deconv"``.

    ``logits = x W + b`` (or ``(x - mu) D W + b`` for the deconvolved "Delinear" head of
    Ye et al. 2020).

    Example:
      >>> Classifier(16, 10, cfg=LayerConfig(), rngs=nnx.Rngs(0))(jnp.ones((2, 16))).shape
      (2, 10)
    """

    def __init__(self, in_features: int, num_classes: int, *, cfg: LayerConfig, rngs: nnx.Rngs):
        common = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
        if cfg.norm == "deconv":
            # Conv-only options (patch sampling, groups, the freeze schedule) do not apply to
            # the dense layer (the reference dense layer has no freeze schedule).
            dense_kwargs = {
                k: v
                for k, v in cfg.deconv_kwargs.items()
                if k not in ("sampling_stride", "feature_group_count", "freeze", "freeze_iter")
            }
            self.linear = cnn.DeconvDense(
                in_features, num_classes, axis_name=cfg.axis_name, **dense_kwargs, **common
            )
        else:
            self.linear = nnx.Linear(in_features, num_classes, **common)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear(x)


def check_model_input(
    x: jax.Array,
    in_features: int,
    *,
    num_spatial_dims: int = 2,
    num_pools: int = 0,
    model: str = "model",
) -> None:
    """Check a model input: ``(N, *spatial, in_features)`` with ``num_spatial_dims`` spatial
    dims, each at least ``2**num_pools`` so every 2x2 stride-2 pool has input left.

    Example:
      >>> check_model_input(jnp.ones((2, 8, 8, 1)), 1, num_pools=2, model="VGG")
    """
    check_spatial_rank(x, "x", min_spatial=num_spatial_dims, max_spatial=num_spatial_dims)
    if x.shape[-1] != in_features:
        raise ValueError(f"`x` must have {in_features} channels (last dim), got shape {x.shape}.")
    min_size = 2**num_pools
    if min(x.shape[1:-1]) < min_size:
        raise ValueError(
            f"{model} with {num_pools} pooling stages needs inputs of at least "
            f"{min_size}x{min_size}, got `x` of shape {x.shape}."
        )


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Mean over all spatial dims: ``(N, *spatial, C) -> (N, C)``.

    Example:
      >>> global_avg_pool(jnp.ones((2, 4, 4, 3))).shape
      (2, 3)
    """
    return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


def adaptive_avg_pool(x: jax.Array, output_size: Sequence[int]) -> jax.Array:
    """Adaptive average pooling (PyTorch semantics) ``(N, *spatial, C) -> (N, *output_size, C)``.

    Output cell ``i`` of a dim of size ``S`` averages input rows
    ``floor(i S / n) .. ceil((i + 1) S / n) - 1``; written as one averaging matrix per dim, so
    it is exact, differentiable, and also upsamples (repeats) when ``n > S``.

    Example:
      >>> adaptive_avg_pool(jnp.ones((1, 14, 14, 2)), (7, 7)).shape
      (1, 7, 7, 2)
    """
    spatial = x.shape[1:-1]
    if len(output_size) != len(spatial):
        raise ValueError(
            f"`output_size` must have one entry per spatial dim ({len(spatial)}), "
            f"got {tuple(output_size)}."
        )
    for axis, (size, n) in enumerate(zip(spatial, output_size), start=1):
        mat = np.zeros((n, size), np.float32)
        for i in range(n):
            lo, hi = (i * size) // n, -(-((i + 1) * size) // n)
            mat[i, lo:hi] = 1.0 / (hi - lo)
        x = jnp.moveaxis(jnp.tensordot(jnp.asarray(mat, x.dtype), x, axes=((1,), (axis,))), 0, axis)
    return x


def make_dropout(rate: float, rngs: nnx.Rngs) -> nnx.Dropout:
    """``nnx.Dropout`` with ``rate`` checked (``0 <= rate < 1``); ``train()``/``eval()`` toggle it.

    Example:
      >>> make_dropout(0.1, nnx.Rngs(0)).rate
      0.1
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1), got {rate!r}.")
    return nnx.Dropout(rate, rngs=rngs)

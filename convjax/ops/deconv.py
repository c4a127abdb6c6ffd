"""Network Deconvolution (Ye et al., ICLR 2020): whitened convolution that replaces BatchNorm.

Before a convolution, the im2col patches of its input are decorrelated (pixel-wise and
channel-wise) with the inverse square root of their covariance. Everything here follows the
paper's §3 and, where the paper leaves it open, the authors' reference code (FastDeconv):

- ``X``: im2col patches, one row per (sampled) output position, of a ``k x k`` window over
  ``C`` input channels (``C / groups`` per group of a grouped conv). Channels come in blocks of
  ``b = min(block, C / groups)`` (``gcd`` rule when ``block`` does not divide), ``F = k*k*b``.
- Two groupings of the ``C*k*k`` patch columns into rows of length ``F``
  (``grouping=``, see :func:`deconv_patches`):

  * ``"shared"`` (default, the reference code's): columns in channel-major order
    ``j = c*k*k + t``; each patch row is viewed as ``(F, G)``, ``G = C / b``, and transposed,
    so group ``g`` holds the columns ``{j : j mod G = g}`` and the ``G`` groups are stacked as
    extra samples. One mean ``mu`` (``F``) and one ``D`` (``F x F``) are shared by every group:
    ``y = sum_g (X_g - mu) D W_g + b``, ``mu = E_{m,g}[X_g]``,
    ``Cov = E_{m,g}[(X_g - mu)^T (X_g - mu)] + eps I``. (1x1 convs: ``X`` is every
    ``(s * stride)^2``-th pixel, ``g`` = channels ``{g, g + G, ...}``; dense: contiguous
    blocks of ``b`` features.)
  * ``"per_block"``: contiguous channel blocks, each with its own mean and covariance over
    its ``(taps..., channel)`` patch (a block-diagonal whitening that whitens every block).
    ``y = sum_j (X_j - mu_j) D_j W_j + b``.

- ``D = Cov^(-1/2)`` by the coupled Newton--Schulz iteration (:func:`isqrt_newton_schulz`),
  differentiated through the unrolled iterations.
- Fusion (exact): ``(X - mu) D W = X (D W) - mu^T D W``: the deconv matrix is folded into the
  kernel and the mean into the bias, so one ordinary convolution runs on the raw input.
- Patches for the statistics are sampled every ``sampling_stride * stride`` pixels.
- With ``axis_name`` (inside ``pmap`` / ``shard_map``) the first moment ``E[x]`` of the stacked
  rows is averaged across devices, then the second moment about that global mean
  ``E[(x - mu)(x - mu)^T]`` (equal to ``E[x x^T] - mu mu^T`` without its cancellation), so every
  device gets the deconv matrix of the whole global batch (the reference code whitens each
  device alone).
- Freezing (reference FastDeconv, first layers): :func:`deconv_freeze_schedule` and
  :func:`deconv_conv_train`.

Statistics are computed in float32 (float64 for float64 inputs) whatever the compute dtype.
Patches are divided by a global scale ``s = max(1, max|X|)`` (no gradient, identical across
devices) before the moments are formed, and ``eps`` becomes ``eps / s^2`` accordingly; the
result is mathematically unchanged, but inputs of any magnitude give finite statistics.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from convjax._checks import (
    check_choice,
    check_floating,
    check_positive,
    check_spatial_rank,
    check_unit_interval,
    check_window_fits,
    normalize_padding,
    normalize_tuple,
)
from convjax.ops.conv import symmetric_pads
from convjax.ops.layout import conv_dimension_numbers
from convjax.ops.pad import PaddingLike

__all__ = [
    "GROUPINGS",
    "DeconvStats",
    "pytorch_kernel_init",
    "pytorch_bias_init",
    "kaiming_fan_out_init",
    "update_running_stats",
    "deconv_freeze_schedule",
    "deconv_conv_train",
    "isqrt_newton_schulz",
    "deconv_block_size",
    "init_deconv_stats",
    "deconv_patches",
    "deconv_statistics",
    "fold_deconv",
    "deconv_conv",
    "deconv_conv_eval",
    "deconv_dense",
    "deconv_dense_eval",
]

_HIGHEST = lax.Precision.HIGHEST

#: Channel groupings of the whitening (module docstring): the reference code's ``"shared"``
#: (one ``D`` per layer, or per group of a grouped conv) and ``"per_block"``.
GROUPINGS: tuple[str, ...] = ("shared", "per_block")


def pytorch_kernel_init() -> jax.nn.initializers.Initializer:
    """PyTorch's default conv / linear weight init, as the reference FastDeconv and Delinear use.

    ``kaiming_uniform_(a=sqrt(5))``: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, variance
    ``1 / (3 fan_in)``; ``fan_in = prod(shape[:-1])`` for a ``(*window, C_in / groups, C_out)``
    or ``(C_in, C_out)`` kernel (Flax's fan-in of the same shape).

    Example:
      >>> w = pytorch_kernel_init()(jax.random.key(0), (3, 3, 16, 32))
      >>> bool(jnp.max(jnp.abs(w)) <= 1 / 12)  # fan_in = 144
      True
    """
    return jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def pytorch_bias_init(fan_in: int) -> jax.nn.initializers.Initializer:
    """PyTorch's default bias init for a layer with ``fan_in`` inputs: ``U(+-1/sqrt(fan_in))``.

    Example:
      >>> b = pytorch_bias_init(144)(jax.random.key(0), (32,))
      >>> bool(jnp.max(jnp.abs(b)) <= 1 / 12)
      True
    """
    if not isinstance(fan_in, int) or isinstance(fan_in, bool) or fan_in < 1:
        raise ValueError(f"`fan_in` must be an int >= 1, got {fan_in!r}.")
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: Sequence[int], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def kaiming_fan_out_init() -> jax.nn.initializers.Initializer:
    """``kaiming_normal_(mode='fan_out', nonlinearity='relu')``: ``N(0, 2 / fan_out)``.

    The reference ImageNet ResNets initialise their conv and FastDeconv weights so;
    ``fan_out = prod(window) * C_out`` (untruncated normal, as PyTorch).

    Example:
      >>> kaiming_fan_out_init()(jax.random.key(0), (3, 3, 16, 32)).shape
      (3, 3, 16, 32)
    """
    return jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class DeconvStats(NamedTuple):
    """Batch statistics of a deconvolution layer (a pytree).

    Attributes:
      mean: ``(nd, F)`` mean rows ``mu``, ``F = prod(window) * b``; ``nd`` is the number of
        deconvolution matrices: ``feature_group_count`` (1 for a dense or ordinary conv) with
        ``grouping="shared"``, ``C_in / b`` with ``"per_block"``.
      deconv: ``(nd, F, F)`` deconvolution matrices ``D = (Cov + eps I)^(-1/2)``.
    """

    mean: jax.Array
    deconv: jax.Array


def update_running_stats(
    running: DeconvStats, batch: DeconvStats, momentum: float = 0.1
) -> DeconvStats:
    """Exponential running averages ``r <- (1 - momentum) r + momentum * batch`` (PyTorch's
    convention, as the official code), without gradient and in the running statistics' dtype.

    Example:
      >>> r = DeconvStats(jnp.zeros((1, 2)), jnp.eye(2)[None])
      >>> update_running_stats(r, DeconvStats(jnp.ones((1, 2)), jnp.eye(2)[None])).mean
      Array([[0.1, 0.1]], dtype=float32)
    """
    check_unit_interval(momentum, "momentum")
    return DeconvStats(
        *(
            jax.lax.stop_gradient((1.0 - momentum) * r + momentum * b.astype(r.dtype)).astype(
                r.dtype
            )
            for r, b in zip(running, batch)
        )
    )


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    return int(value)


def _check_has_samples(x: jax.Array, what: str) -> None:
    """Training-mode statistics need samples: refuse an empty batch (or empty spatial dims)."""
    if x.size == 0 and x.shape[-1] != 0:
        why = f"batch {x.shape[0]}" if x.shape[0] == 0 else "an empty dimension"
        raise ValueError(
            f"`x` of shape {tuple(x.shape)} has no {what} to compute deconvolution statistics "
            f"from ({why}); training mode needs at least 1 example (eval mode, with stored "
            f"statistics, accepts an empty batch)."
        )


def _stat_dtype(*dtypes: jnp.dtype) -> jnp.dtype:
    """float32, or float64 when an input is float64: statistics are never below fp32."""
    return jnp.promote_types(jnp.result_type(*dtypes), jnp.float32)


# ---------------------------------------------------------------------------------------------
# Newton--Schulz inverse square root
# ---------------------------------------------------------------------------------------------


def isqrt_newton_schulz(a: jax.Array, num_iters: int = 5) -> jax.Array:
    """Inverse square root of symmetric positive-definite matrices by coupled Newton--Schulz.

    Implements (Ye et al., "Network Deconvolution", ICLR 2020, §3): ``Y0 = A / ||A||_F``,
    ``Z0 = I``; ``num_iters`` times ``T = (3 I - Z Y) / 2``, ``Y <- Y T``, ``Z <- T Z``; returns
    ``Z / sqrt(||A||_F)``.
    Every eigenvalue ``lam`` of ``A`` maps to ``s_k = lam_hat * z_k^2`` (``lam_hat = lam /
    ||A||_F`` in ``(0, 1]``) with ``s_{k+1} = s_k (3 - s_k)^2 / 4``: ``s`` rises monotonically
    to 1, fast for large eigenvalues and slowly for small ones, so few iterations only partly
    whiten small eigen-directions (the regulariser of Network Deconvolution), and an
    ill-conditioned input never produces NaN/inf. Gradients flow through the unrolled
    iterations. Computed in float32 (float64 for float64 input) with highest matmul precision.

    Args:
      a: ``(..., n, n)`` symmetric positive-(semi)definite matrices, floating dtype.
      num_iters: number of iterations (``>= 1``); 5 partly whitens, 10--15 nearly fully.

    Returns:
      ``(..., n, n)`` approximation of ``a^(-1/2)`` in the statistics dtype.

    Example:
      >>> a = jnp.array([[4.0, 0.0], [0.0, 1.0]])
      >>> isqrt_newton_schulz(a, num_iters=20).round(3)
      Array([[0.5, 0. ],
             [0. , 1. ]], dtype=float32)
    """
    check_floating(a, "a")
    num_iters = _check_int(num_iters, "num_iters", 1)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"`a` must have shape (..., n, n), got {tuple(a.shape)}.")
    dtype = _stat_dtype(a.dtype)
    a = a.astype(dtype)
    n = a.shape[-1]
    tiny = jnp.finfo(dtype).tiny
    # ||A||_F computed as m * ||A / m||_F with m = max|A| so the sum of squares cannot
    # overflow; the value is the same for any m, so m carries no gradient.
    m = lax.stop_gradient(jnp.max(jnp.abs(a), axis=(-2, -1), keepdims=True))
    m = jnp.where(m > 0, m, jnp.ones_like(m))
    sq = jnp.sum(jnp.square(a / m), axis=(-2, -1), keepdims=True)
    positive = sq > 0
    norm = jnp.where(positive, m * jnp.sqrt(jnp.where(positive, sq, 1.0)), tiny)
    eye = jnp.eye(n, dtype=dtype)
    y = a / norm
    # First iteration with Z0 = I needs one matmul (T = (3I - Y)/2, Z1 = T); the last one
    # skips the unused Y update: 3 * num_iters - 3 matmuls instead of 3 * num_iters.
    t = 0.5 * (3.0 * eye - y)
    z = t
    if num_iters > 1:
        y = jnp.matmul(y, t, precision=_HIGHEST)
        for _ in range(num_iters - 2):  # unrolled: compiles faster than a loop for n <~ 20
            t = 0.5 * (3.0 * eye - jnp.matmul(z, y, precision=_HIGHEST))
            y, z = jnp.matmul(y, t, precision=_HIGHEST), jnp.matmul(t, z, precision=_HIGHEST)
        t = 0.5 * (3.0 * eye - jnp.matmul(z, y, precision=_HIGHEST))
        z = jnp.matmul(t, z, precision=_HIGHEST)
    return z / jnp.sqrt(norm)


# ---------------------------------------------------------------------------------------------
# Blocks, patches, statistics
# ---------------------------------------------------------------------------------------------


def deconv_block_size(in_features: int, block: int, feature_group_count: int = 1) -> int:
    """Channels per whitening block: ``min(block, C_in / groups)``, ``gcd`` if not dividing.

    Blocks never straddle two groups of a grouped conv (depthwise: 1 channel per block, so
    each channel's ``k x k`` patch is whitened on its own). The first layer of an image
    network (``C_in = 3 < block``) gets one block: the whole ``k*k*3`` patch is whitened.

    Example:
      >>> deconv_block_size(96, 64), deconv_block_size(3, 64), deconv_block_size(32, 64, 32)
      (32, 3, 1)
    """
    in_features = _check_int(in_features, "in_features", 1)
    block = _check_int(block, "block", 1)
    groups = _check_int(feature_group_count, "feature_group_count", 1)
    if in_features % groups:
        raise ValueError(
            f"`in_features` ({in_features}) must be divisible by `feature_group_count` ({groups})."
        )
    group_in = in_features // groups
    b = min(block, group_in)
    if group_in % b:
        b = math.gcd(b, group_in)
    return b


def _check_grouping(grouping: str) -> str:
    check_choice(grouping, GROUPINGS, "grouping")
    return grouping


def init_deconv_stats(
    in_features: int,
    window_shape: Sequence[int] = (),
    block: int = 64,
    feature_group_count: int = 1,
    dtype: jnp.dtype = jnp.float32,
    grouping: str = "shared",
) -> DeconvStats:
    """Initial running statistics: zero mean and identity deconv matrices.

    Args:
      in_features: input channels ``C_in``.
      window_shape: the kernel's spatial shape, ``()`` for the dense variant.
      block, feature_group_count, grouping: as in :func:`deconv_conv`.

    Returns:
      :class:`DeconvStats` with ``mean (nd, F)`` zeros and ``deconv (nd, F, F)`` identities,
      ``F = prod(window_shape) * b``; ``nd = feature_group_count`` for ``"shared"``,
      ``C_in / b`` for ``"per_block"``.

    Example:
      >>> s = init_deconv_stats(8, (3, 3), block=4)
      >>> s.mean.shape, s.deconv.shape
      ((1, 36), (1, 36, 36))
      >>> init_deconv_stats(8, (3, 3), block=4, grouping="per_block").deconv.shape
      (2, 36, 36)
    """
    _check_grouping(grouping)
    b = deconv_block_size(in_features, block, feature_group_count)
    f = int(np.prod(window_shape, dtype=np.int64)) * b
    nd = feature_group_count if grouping == "shared" else in_features // b
    return DeconvStats(
        jnp.zeros((nd, f), dtype), jnp.broadcast_to(jnp.eye(f, dtype=dtype), (nd, f, f))
    )


def _conv_geometry(
    x: jax.Array,
    window: Sequence[int],
    strides: int | Sequence[int],
    padding: PaddingLike | None,
) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    n = len(window)
    strides_t = normalize_tuple(strides, n, "strides")
    if padding is None:
        pads = symmetric_pads(window)
    else:
        pads = normalize_padding(padding, x.shape[1:-1], window, strides_t)
    check_window_fits(x.shape[1:-1], window, pads, name="kernel spatial shape")
    return strides_t, pads


def _sampled_patches(
    x: jax.Array,
    window: tuple[int, ...],
    step: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    channel_major: bool,
) -> jax.Array:
    """Patches of the zero-padded ``x`` at every ``step``-th position, exact copies.

    Returns ``(N, *counts, C, *window)`` (``channel_major``) or ``(N, *counts, *window, C)``.
    When every ``step >= window`` (the default sampling, ``3 * stride`` for 3x3 kernels) the
    patches do not overlap: the padded input is cut into ``step``-sized tiles by one reshape and
    the first ``window`` pixels of each tile are kept (one pad, one slice, one transpose; the
    backward pass is one pad). Otherwise one strided slice per kernel tap.
    """
    n = len(window)
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    padded, c = xp.shape[1:-1], x.shape[-1]
    counts = tuple((p - k) // st + 1 for p, k, st in zip(padded, window, step))
    if all(st >= k for st, k in zip(step, window)):
        ends = tuple(m * st for m, st in zip(counts, step))
        # crop (or zero-extend: the extension is never inside a kept tile prefix) to whole tiles
        xp = xp[(slice(None), *(slice(0, min(e, p)) for e, p in zip(ends, padded)))]
        extra = tuple((0, max(0, e - p)) for e, p in zip(ends, padded))
        xp = jnp.pad(xp, ((0, 0), *extra, (0, 0)))
        tiles = xp.reshape(xp.shape[0], *itertools.chain(*zip(counts, step)), c)
        tiles = tiles[
            (slice(None), *itertools.chain(*((slice(None), slice(0, k)) for k in window)))
        ]
        count_axes = tuple(1 + 2 * i for i in range(n))
        tap_axes = tuple(2 + 2 * i for i in range(n))
        if channel_major:
            return tiles.transpose(0, *count_axes, 2 * n + 1, *tap_axes)
        return tiles.transpose(0, *count_axes, *tap_axes, 2 * n + 1)
    taps = []
    for offset in itertools.product(*(range(k) for k in window)):
        start = (0, *offset, 0)
        stop = (xp.shape[0], *(o + (m - 1) * st + 1 for o, m, st in zip(offset, counts, step)))
        taps.append(lax.slice(xp, start, (*stop, c), (1, *step, 1)))
    if channel_major:
        return jnp.stack(taps, axis=-1).reshape(xp.shape[0], *counts, c, *window)
    return jnp.stack(taps, axis=-2).reshape(xp.shape[0], *counts, *window, c)


def deconv_patches(
    x: jax.Array,
    window_shape: int | Sequence[int],
    *,
    strides: int | Sequence[int] = 1,
    padding: PaddingLike | None = None,
    sampling_stride: int = 3,
    block: int = 64,
    feature_group_count: int = 1,
    grouping: str = "shared",
) -> jax.Array:
    """im2col patches of ``x`` used for the statistics, grouped into rows of length ``F``.

    Patches are taken at every ``sampling_stride``-th output position of the convolution
    (``sampling_stride * stride`` input pixels apart) from the zero-padded input, by strided
    slicing of the padded input, one slice per kernel tap (exact copies, no arithmetic and no
    patch convolution).

    ``grouping="shared"`` (the reference code's): each patch, flattened channel-major
    (``j = c * K + t``, ``K = prod(window)``, per group of a grouped conv), is viewed as
    ``(F, G)`` and transposed: row ``g`` holds the columns ``{j : j mod G = g}``, ``G = C_in /
    (groups * b)``, and the ``G`` rows of every patch are stacked as samples. A 1x1 window
    takes every ``prod(sampling_stride * stride)``-th pixel of ``x`` in row-major order (the
    reference code's ``x[::s*s]``, padding ignored), so group ``g`` = channels ``{g, g + G, ...}``.
    ``grouping="per_block"``: one set of rows per contiguous block of ``b`` channels, columns
    ordered ``(taps..., channel)`` like a HWIO kernel's rows. Grouped convs get one set of rows
    (one ``D``) per conv group with either grouping; the reference code always uses ``b = C_in /
    groups`` there, this uses ``b = min(block, C_in / groups)`` as for ordinary convs (pass
    ``block >= C_in / groups`` to match the reference).

    Args:
      x: ``(N, *spatial, C_in)``, 1 to 3 spatial dims.
      window_shape: the kernel's spatial shape (int: same for every dim).
      strides, padding, feature_group_count: those of the convolution.
      sampling_stride: subsampling of output positions (1 = every position).
      block: requested channels per block (see :func:`deconv_block_size`).
      grouping: ``"shared"`` or ``"per_block"`` (module docstring).

    Returns:
      ``(nd, R, F)`` in ``x.dtype``, ``F = prod(window) * b``. ``"shared"``: ``nd =
      feature_group_count``, ``R = M * G`` for ``M`` sampled positions; ``"per_block"``:
      ``nd = C_in / b``, ``R = M``.

    Example:
      >>> deconv_patches(jnp.ones((2, 6, 6, 4)), 3, sampling_stride=3, block=2).shape
      (1, 16, 18)
      >>> deconv_patches(jnp.ones((2, 6, 6, 4)), 3, block=2, grouping="per_block").shape
      (2, 8, 18)
    """
    check_floating(x, "x")
    _check_grouping(grouping)
    n = check_spatial_rank(x, "x")
    _check_has_samples(x, "patches")
    window = normalize_tuple(window_shape, n, "window_shape")
    sampling_stride = _check_int(sampling_stride, "sampling_stride", 1)
    strides_t, pads = _conv_geometry(x, window, strides, padding)
    c = x.shape[-1]
    b = deconv_block_size(c, block, feature_group_count)
    groups = feature_group_count
    step = tuple(sampling_stride * s for s in strides_t)
    kk = int(np.prod(window, dtype=np.int64))
    if grouping == "shared" and kk == 1:
        cm = x.reshape(-1, c)[:: int(np.prod(step, dtype=np.int64))]  # (M, C)
    else:
        patches = _sampled_patches(x, window, step, pads, channel_major=grouping == "shared")
        if grouping == "per_block":
            rows = patches.reshape(-1, kk, c // b, b)  # (M, K, nb, b)
            return rows.transpose(2, 0, 1, 3).reshape(c // b, -1, kk * b)
        cm = patches.reshape(-1, c * kk)  # (M, C*K), channel-major
    g = c // (groups * b)
    rows = cm.reshape(-1, groups, kk * b, g).transpose(1, 0, 3, 2)  # (groups, M, G, F)
    return rows.reshape(groups, -1, kk * b)


def deconv_statistics(
    rows: jax.Array,
    *,
    eps: float = 1e-5,
    num_iters: int = 5,
    axis_name: str | None = None,
) -> DeconvStats:
    """Mean row and deconv matrix ``(Cov + eps I)^(-1/2)`` of each set of rows.

    With ``axis_name`` the mean is ``pmean``-ed first, then the second moment about that global
    mean, so every device gets the statistics of the concatenated batch (all devices must hold
    the same number of rows, as under ``pmap``).

    Args:
      rows: ``(nd, R, F)``: ``nd`` independent sets of ``R`` samples of length ``F`` (e.g.
        from :func:`deconv_patches`), any float dtype.
      eps: ridge added to the covariance (``> 0``).
      num_iters: Newton--Schulz iterations.
      axis_name: mapped axis to average the moments over, or ``None``.

    Returns:
      :class:`DeconvStats` in float32 (float64 for float64 rows); differentiable w.r.t. rows.

    Example:
      >>> rows = jax.random.normal(jax.random.key(0), (1, 500, 4))
      >>> deconv_statistics(rows, num_iters=15).deconv.shape
      (1, 4, 4)
    """
    check_floating(rows, "rows")
    if rows.ndim != 3:
        raise ValueError(f"`rows` must have shape (nd, R, F), got {tuple(rows.shape)}.")
    if rows.shape[1] == 0:
        raise ValueError(
            f"`rows` of shape {tuple(rows.shape)} holds no samples (R = 0): statistics need at "
            f"least 1 row."
        )
    check_positive(eps, "eps")
    dtype = _stat_dtype(rows.dtype)
    rows = rows.astype(dtype)
    # Global scale so no moment can overflow; it cancels exactly (eps scales with it).
    scale = lax.stop_gradient(jnp.max(jnp.abs(rows)))
    if axis_name is not None:
        scale = lax.pmax(scale, axis_name)
    scale = jnp.maximum(scale, jnp.ones((), dtype))
    xs = rows / scale
    mean = jnp.mean(xs, axis=1)
    if axis_name is not None:
        mean = lax.pmean(mean, axis_name)
    xc = xs - mean[:, None, :]
    cov = jnp.einsum("nmf,nmg->nfg", xc, xc, precision=_HIGHEST) / rows.shape[1]
    if axis_name is not None:
        cov = lax.pmean(cov, axis_name)
    f = rows.shape[-1]
    cov = cov + (eps / jnp.square(scale)) * jnp.eye(f, dtype=dtype)
    deconv = isqrt_newton_schulz(cov, num_iters) / scale
    return DeconvStats(mean * scale, deconv)


# ---------------------------------------------------------------------------------------------
# Folding and the fused ops
# ---------------------------------------------------------------------------------------------


def _fold_rows(w: jax.Array, mean: jax.Array, deconv: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``W' = D W`` and ``mu^T W'``: w ``(nd, F, R)``, mean ``(nd, F)``, deconv ``(nd, F, F)``."""
    w = jnp.einsum("nfe,ner->nfr", deconv.astype(w.dtype), w, precision=_HIGHEST)
    shift = jnp.einsum("nf,nfr->nr", mean.astype(w.dtype), w, precision=_HIGHEST)
    return w, shift


def fold_deconv(
    kernel: jax.Array,
    bias: jax.Array | None,
    stats: DeconvStats,
    feature_group_count: int = 1,
    grouping: str = "shared",
) -> tuple[jax.Array, jax.Array]:
    """Fold deconv statistics into a kernel and bias: ``W' = D W``, ``b' = b - mu^T D W``.

    Then ``conv(x, W') + b'`` equals ``conv`` of the whitened patches ``(X - mu) D`` with ``W``
    plus ``b`` exactly (paper §3, "Fusion"). ``"shared"``: the kernel's rows (channel-major,
    per conv group) are viewed as ``(F, G)`` like the patches (:func:`deconv_patches`), so
    ``W'_g = D W_g`` for every group ``g`` and ``b' = b - sum_g mu^T D W_g``; a dense kernel
    ``(C_in, C_out)`` is split into contiguous blocks of ``b`` rows. ``"per_block"``:
    ``W'_j = D_j W_j`` per contiguous channel block ``j``, ``b' = b - sum_j mu_j^T D_j W_j``.

    Args:
      kernel: ``(*window, C_in / groups, C_out)`` (HWIO), or ``(C_in, C_out)`` for dense.
      bias: ``(C_out,)`` or ``None`` (zero).
      stats: :class:`DeconvStats` matching the kernel and grouping (``F = prod(window) * b``).
      feature_group_count: groups of the convolution.
      grouping: ``"shared"`` or ``"per_block"``, as the statistics were computed.

    Returns:
      ``(kernel', bias')`` in the statistics dtype (float32 or float64).

    Example:
      >>> k = jnp.ones((3, 3, 4, 8)); s = init_deconv_stats(4, (3, 3))
      >>> bool(jnp.allclose(fold_deconv(k, None, s)[0], k))
      True
    """
    check_floating(kernel, "kernel")
    _check_grouping(grouping)
    groups = _check_int(feature_group_count, "feature_group_count", 1)
    *window, group_in, c_out = kernel.shape
    if c_out % groups:
        raise ValueError(
            f"kernel output features ({c_out}) must be divisible by `feature_group_count` "
            f"({groups})."
        )
    mean, deconv = stats
    if mean.ndim != 2 or deconv.ndim != 3 or deconv.shape != (*mean.shape, mean.shape[-1]):
        raise ValueError(
            f"`stats` must be mean (nd, F) and deconv (nd, F, F), got shapes "
            f"{tuple(mean.shape)} and {tuple(deconv.shape)}."
        )
    kp = int(np.prod(window, dtype=np.int64))
    nd, f = mean.shape
    b = f // kp
    c_in = group_in * groups
    if grouping == "shared":
        ok = f % kp == 0 and b > 0 and group_in % b == 0 and nd == groups
        need = f"num_matrices = feature_group_count = {groups}"
    else:
        ok = f % kp == 0 and b > 0 and group_in % b == 0 and nd * b == c_in
        need = f"num_matrices * b = C_in = {c_in}"
    if not ok:
        raise ValueError(
            f"`stats` with {nd} matrices of F={f} do not match a kernel of shape "
            f"{tuple(kernel.shape)} with feature_group_count={groups} and grouping="
            f"{grouping!r}: need F = {kp} taps x b channels (b dividing {group_in}) and {need}."
        )
    og = c_out // groups
    dtype = _stat_dtype(kernel.dtype, mean.dtype)
    if grouping == "shared" and not window:  # dense: contiguous blocks of b features
        g = c_in // b
        w = kernel.astype(dtype).reshape(g, b, c_out).transpose(1, 0, 2).reshape(1, b, -1)
        w, shift = _fold_rows(w, mean, deconv)
        shift = shift.reshape(g, c_out).sum(axis=0)
        new_kernel = w.reshape(b, g, c_out).transpose(1, 0, 2)
    elif grouping == "shared":
        g = group_in // b
        w = kernel.astype(dtype).reshape(kp, group_in, groups, og)
        w = w.transpose(2, 1, 0, 3).reshape(groups, f, g * og)  # rows j = c*K + t = f*G + g
        w, shift = _fold_rows(w, mean, deconv)
        shift = shift.reshape(groups, g, og).sum(axis=1).reshape(c_out)
        new_kernel = w.reshape(groups, group_in, kp, og).transpose(2, 1, 0, 3)
    else:
        nbl = group_in // b
        w = kernel.astype(dtype).reshape(kp, nbl, b, groups, og)
        w = w.transpose(3, 1, 0, 2, 4).reshape(nd, f, og)
        w, shift = _fold_rows(w, mean, deconv)
        shift = shift.reshape(groups, nbl, og).sum(axis=1).reshape(c_out)
        new_kernel = w.reshape(groups, nbl, kp, b, og).transpose(2, 1, 3, 0, 4)
    new_bias = -shift if bias is None else bias.astype(dtype) - shift
    return new_kernel.reshape(kernel.shape), new_bias


def _conv(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array,
    strides: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    groups: int,
    dtype: jnp.dtype,
) -> jax.Array:
    """One convolution in ``dtype``, accumulated in >= fp32, bias added before the final cast."""
    acc = _stat_dtype(dtype)
    y = lax.conv_general_dilated(
        x.astype(dtype),
        kernel.astype(dtype),
        window_strides=strides,
        padding=pads,
        dimension_numbers=conv_dimension_numbers(len(strides)),
        feature_group_count=groups,
        preferred_element_type=acc,
    )
    return (y + bias.astype(acc)).astype(dtype)


def _check_conv_args(
    x: jax.Array, kernel: jax.Array, bias: jax.Array | None, groups: int
) -> tuple[int, tuple[int, ...]]:
    check_floating(x, "x")
    check_floating(kernel, "kernel")
    n = check_spatial_rank(x, "x")
    groups = _check_int(groups, "feature_group_count", 1)
    if kernel.ndim != n + 2:
        raise ValueError(
            f"`kernel` must have shape (*window, C_in / groups, C_out) with {n} spatial dims "
            f"like `x` {tuple(x.shape)}, got {tuple(kernel.shape)}."
        )
    c_in = x.shape[-1]
    if c_in % groups or kernel.shape[-2] != c_in // groups:
        raise ValueError(
            f"`kernel` input features {kernel.shape[-2]} must equal C_in / feature_group_count "
            f"= {c_in} / {groups} for `x` of shape {tuple(x.shape)}."
        )
    if kernel.shape[-1] % groups:
        raise ValueError(
            f"`kernel` output features {kernel.shape[-1]} must be divisible by "
            f"feature_group_count={groups}."
        )
    if bias is not None:
        check_floating(bias, "bias")
        if bias.shape != (kernel.shape[-1],):
            raise ValueError(
                f"`bias` must have shape ({kernel.shape[-1]},), got {tuple(bias.shape)}."
            )
    return n, tuple(kernel.shape[:-2])


def deconv_conv(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None = None,
    *,
    strides: int | Sequence[int] = 1,
    padding: PaddingLike | None = None,
    block: int = 64,
    eps: float = 1e-5,
    num_iters: int = 5,
    sampling_stride: int = 3,
    axis_name: str | None = None,
    feature_group_count: int = 1,
    grouping: str = "shared",
) -> tuple[jax.Array, DeconvStats]:
    """Training-mode network deconvolution fused into one convolution.

    Computes ``y = (X - mu) D W + b`` for the im2col patches ``X`` of ``x`` (paper §3):
    statistics ``mu``, ``D = (Cov + eps I)^(-1/2)`` from patches sampled every
    ``sampling_stride * stride`` pixels, grouped as ``grouping`` says (``"shared"``, the
    reference code's: ``y = sum_g (X_g - mu) D W_g + b`` with one ``mu``, ``D`` for the strided
    channel groups ``g``; ``"per_block"``: ``y = sum_j (X_j - mu_j) D_j W_j + b`` per contiguous
    channel block; see :func:`deconv_patches`), folded into the kernel and bias
    (:func:`fold_deconv`) so one convolution runs on the raw input. Gradients flow through the
    statistics (and the Newton--Schulz iterations) into ``x``, as in the paper.

    Args:
      x: ``(N, *spatial, C_in)``, 1 to 3 spatial dims, any float dtype (the compute dtype is
        the promotion of ``x`` and ``kernel``; statistics are always float32 or wider).
      kernel: ``(*window, C_in / feature_group_count, C_out)`` (Flax HWIO layout).
      bias: ``(C_out,)`` or ``None``.
      strides: conv strides (int or one per spatial dim).
      padding: ``None`` (default: symmetric ``k // 2`` on both sides, PyTorch's geometry and
        every convjax layer's), ``"SAME"``, ``"VALID"``, an int or ``(lo, hi)`` pairs; zero
        padding (the padded zeros are part of the patches, as in the conv).
      block: channels per whitening block (default 64; ``C_in`` if smaller; ``gcd`` rule).
      eps: covariance ridge; num_iters: Newton--Schulz iterations (5 default; 10--15 for the
        first layer whitens almost fully).
      sampling_stride: sample every ``sampling_stride``-th output position for the statistics.
      axis_name: inside ``pmap``/``shard_map``, average moments over this axis so all devices
        whiten like one device with the global batch.
      feature_group_count: grouped / depthwise convolution (one ``D`` per group).
      grouping: ``"shared"`` (default, the reference code's) or ``"per_block"``.

    Returns:
      ``(y, stats)``: ``y`` of shape ``(N, *ceil-or-valid output, C_out)`` in the compute
      dtype, and the batch :class:`DeconvStats` (keep running averages of them for eval).

    Example:
      >>> x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
      >>> k = jax.random.normal(jax.random.key(1), (3, 3, 3, 16)) / 5
      >>> y, stats = deconv_conv(x, k)
      >>> y.shape, stats.deconv.shape
      ((2, 8, 8, 16), (1, 27, 27))
      >>> x = jnp.ones((2, 8, 8, 128)); k = jnp.ones((3, 3, 128, 8))
      >>> deconv_conv(x, k, grouping="per_block")[1].deconv.shape  # two blocks of 64
      (2, 576, 576)
      >>> deconv_conv(x, k)[1].deconv.shape  # one shared D
      (1, 576, 576)
    """
    n, window = _check_conv_args(x, kernel, bias, feature_group_count)
    _check_has_samples(x, "patches")
    strides_t, pads = _conv_geometry(x, window, strides, padding)
    _check_grouping(grouping)
    kk = int(np.prod(window, dtype=np.int64))
    bs = deconv_block_size(x.shape[-1], block, feature_group_count)
    # One block per conv group (C_in / groups <= block): the shared rows are the per-block rows
    # with their F columns in channel-major instead of tap-major order. Their statistics are
    # computed and folded in the cheaper tap-major layout (channels minor), and the returned
    # F-vector / F x F statistics permuted to the reference's order (Newton-Schulz commutes with
    # a permutation), so this case costs exactly what "per_block" costs.
    tap_major = grouping == "shared" and kk > 1 and bs * feature_group_count == x.shape[-1]
    rows = deconv_patches(
        x,
        window,
        strides=strides_t,
        padding=pads,
        sampling_stride=sampling_stride,
        block=block,
        feature_group_count=feature_group_count,
        grouping="per_block" if tap_major else grouping,
    )
    stats = deconv_statistics(rows, eps=eps, num_iters=num_iters, axis_name=axis_name)
    if tap_major:  # fold in the tap-major layout, return the statistics in the reference's
        w, b = fold_deconv(kernel, bias, stats, feature_group_count, "per_block")
        nd = stats.mean.shape[0]
        mean = stats.mean.reshape(nd, kk, bs).transpose(0, 2, 1).reshape(nd, -1)
        dec = stats.deconv.reshape(nd, kk, bs, kk, bs).transpose(0, 2, 1, 4, 3)
        stats = DeconvStats(mean, dec.reshape(nd, kk * bs, kk * bs))
    else:
        w, b = fold_deconv(kernel, bias, stats, feature_group_count, grouping)
    dtype = jnp.result_type(x.dtype, kernel.dtype)
    y = _conv(x, w, b, strides_t, pads, feature_group_count, dtype)
    return y, stats


def deconv_conv_eval(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None,
    stats: DeconvStats,
    *,
    strides: int | Sequence[int] = 1,
    padding: PaddingLike | None = None,
    feature_group_count: int = 1,
    grouping: str = "shared",
) -> jax.Array:
    """Eval-mode deconvolution: the given statistics folded into one plain convolution.

    ``y = conv(x, D W) + b - mu^T D W`` with stored (running) ``stats`` (paper §3, "Fusion");
    the block size is read from the statistics' shapes. Cost: one convolution plus a tiny
    ``(F x F) @ (F x G*C_out)`` fold (hoist :func:`fold_deconv` out of the loop to drop even that).

    Args:
      x, kernel, bias, strides, padding, feature_group_count, grouping: as in
        :func:`deconv_conv`.
      stats: :class:`DeconvStats` (e.g. running averages from training).

    Returns:
      ``(N, *out_spatial, C_out)`` in the promotion of ``x`` and ``kernel`` dtypes.

    Example:
      >>> x = jnp.ones((1, 5, 5, 4)); k = jnp.ones((3, 3, 4, 2))
      >>> deconv_conv_eval(x, k, None, init_deconv_stats(4, (3, 3))).shape
      (1, 5, 5, 2)
    """
    _, window = _check_conv_args(x, kernel, bias, feature_group_count)
    strides_t, pads = _conv_geometry(x, window, strides, padding)
    w, b = fold_deconv(kernel, bias, stats, feature_group_count, grouping)
    dtype = jnp.result_type(x.dtype, kernel.dtype)
    return _conv(x, w, b, strides_t, pads, feature_group_count, dtype)


def _check_dense_args(x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> None:
    check_floating(x, "x")
    check_floating(kernel, "kernel")
    if x.ndim < 1:
        raise ValueError(f"`x` must have shape (..., C_in), got a scalar {tuple(x.shape)}.")
    if kernel.ndim != 2 or kernel.shape[0] != x.shape[-1]:
        raise ValueError(
            f"`kernel` must have shape (C_in, C_out) with C_in = {x.shape[-1]} (from `x` "
            f"{tuple(x.shape)}), got {tuple(kernel.shape)}."
        )
    if bias is not None:
        check_floating(bias, "bias")
        if bias.shape != (kernel.shape[1],):
            raise ValueError(f"`bias` must have shape ({kernel.shape[1]},), got {bias.shape}.")


def _dense(x: jax.Array, kernel: jax.Array, bias: jax.Array, dtype: jnp.dtype) -> jax.Array:
    acc = _stat_dtype(dtype)
    y = lax.dot_general(
        x.astype(dtype),
        kernel.astype(dtype),
        (((x.ndim - 1,), (0,)), ((), ())),
        preferred_element_type=acc,
    )
    return (y + bias.astype(acc)).astype(dtype)


def deconv_dense(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None = None,
    *,
    block: int = 512,
    eps: float = 1e-5,
    num_iters: int = 5,
    axis_name: str | None = None,
    grouping: str = "shared",
) -> tuple[jax.Array, DeconvStats]:
    """Training-mode "Delinear": a dense layer on decorrelated inputs, fused into one matmul.

    ``y = sum_g (x_g - mu) D W_g + b`` over the contiguous blocks ``x_g`` of ``b`` input
    features (paper §3, "Delinear"; default block 512 as for CIFAR classifier heads). Every
    leading dim of ``x`` is a sample; ``"shared"`` (the reference code's ``x.view(-1, b)``)
    stacks the blocks as extra samples of one mean and one ``D``, ``"per_block"`` gives every
    block its own ``mu_g``, ``D_g``.

    Args:
      x: ``(..., C_in)`` float.
      kernel: ``(C_in, C_out)``; bias: ``(C_out,)`` or ``None``.
      block, eps, num_iters, axis_name, grouping: as in :func:`deconv_conv`.

    Returns:
      ``(y, stats)`` with ``y`` of shape ``(..., C_out)`` and :class:`DeconvStats` of shapes
      ``(nd, b)`` and ``(nd, b, b)`` (``nd = 1`` shared, ``C_in / b`` per block).

    Example:
      >>> x = jax.random.normal(jax.random.key(0), (32, 16))
      >>> y, stats = deconv_dense(x, jnp.ones((16, 10)), block=8)
      >>> y.shape, stats.deconv.shape
      ((32, 10), (1, 8, 8))
    """
    _check_dense_args(x, kernel, bias)
    _check_has_samples(x, "rows")
    _check_grouping(grouping)
    c = x.shape[-1]
    b = deconv_block_size(c, block)
    if grouping == "shared":
        rows = x.reshape(1, -1, b)
    else:
        rows = x.reshape(-1, c // b, b).transpose(1, 0, 2)
    stats = deconv_statistics(rows, eps=eps, num_iters=num_iters, axis_name=axis_name)
    w, bb = fold_deconv(kernel, bias, stats, grouping=grouping)
    return _dense(x, w, bb, jnp.result_type(x.dtype, kernel.dtype)), stats


def deconv_dense_eval(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None,
    stats: DeconvStats,
    grouping: str = "shared",
) -> jax.Array:
    """Eval-mode "Delinear": stored statistics folded into one matmul, ``x (D W) + b'``.

    Example:
      >>> deconv_dense_eval(jnp.ones((4, 8)), jnp.ones((8, 3)), None, init_deconv_stats(8)).shape
      (4, 3)
    """
    _check_dense_args(x, kernel, bias)
    w, bb = fold_deconv(kernel, bias, stats, grouping=grouping)
    return _dense(x, w, bb, jnp.result_type(x.dtype, kernel.dtype))


# ---------------------------------------------------------------------------------------------
# Reference freeze schedule (first layers)
# ---------------------------------------------------------------------------------------------


def deconv_freeze_schedule(
    counter: jax.Array, freeze_iter: int = 100
) -> tuple[jax.Array, jax.Array]:
    """The reference code's freeze schedule: ``(recompute, next counter)``.

    An iteration counter runs modulo ``10 * freeze_iter``; while ``counter <= freeze_iter``
    the statistics are recomputed from the batch (with gradient), otherwise the running
    statistics are used as constants. With the default 100, every 1000 training steps the
    first 101 recompute and the next 899 are frozen.

    Args:
      counter: int scalar, the count of training calls so far (modulo ``10 * freeze_iter``).
      freeze_iter: ``>= 1``.

    Returns:
      ``(counter <= freeze_iter, (counter + 1) % (10 * freeze_iter))`` as JAX scalars.

    Example:
      >>> [bool(deconv_freeze_schedule(jnp.int32(c), 2)[0]) for c in (0, 2, 3, 19)]
      [True, True, False, False]
      >>> int(deconv_freeze_schedule(jnp.int32(19), 2)[1])
      0
    """
    freeze_iter = _check_int(freeze_iter, "freeze_iter", 1)
    counter = jnp.asarray(counter)
    if counter.ndim != 0 or not jnp.issubdtype(counter.dtype, jnp.integer):
        raise TypeError(f"`counter` must be an integer scalar, got {counter.dtype}{counter.shape}.")
    return counter <= freeze_iter, (counter + 1) % (10 * freeze_iter)


def deconv_conv_train(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None,
    running: DeconvStats,
    counter: jax.Array | None = None,
    *,
    momentum: float = 0.1,
    freeze_iter: int = 100,
    **conv_kwargs: object,
) -> tuple[jax.Array, DeconvStats, jax.Array | None]:
    """One training call of a deconvolution layer: output, new running stats, new counter.

    Without ``counter``: :func:`deconv_conv` with batch statistics, and the running statistics
    updated by :func:`update_running_stats`. With ``counter`` (the reference code's
    ``freeze=True``, :func:`deconv_freeze_schedule`): while recomputing, exactly that; when
    frozen, :func:`deconv_conv_eval` with the running statistics as constants (no gradient into
    them, and they are left unchanged). The branch is a ``lax.cond``: a frozen step does not
    compute the statistics.

    Args:
      x, kernel, bias: as in :func:`deconv_conv`.
      running: the running :class:`DeconvStats` (the layer's state).
      counter: int32 scalar iteration counter, or ``None`` (never frozen).
      momentum: running-average rate; freeze_iter: as in :func:`deconv_freeze_schedule`.
      **conv_kwargs: the keyword arguments of :func:`deconv_conv` (``strides``, ``padding``,
        ``block``, ``eps``, ``num_iters``, ``sampling_stride``, ``axis_name``,
        ``feature_group_count``, ``grouping``).

    Returns:
      ``(y, new_running, new_counter)`` (``new_counter`` is ``None`` without ``counter``).

    Example:
      >>> x = jnp.ones((2, 6, 6, 3)); k = jnp.ones((3, 3, 3, 4)) / 27
      >>> run = init_deconv_stats(3, (3, 3))
      >>> y, run, c = deconv_conv_train(x, k, None, run, jnp.int32(0), freeze_iter=1)
      >>> y.shape, int(c)
      ((2, 6, 6, 4), 1)
    """
    if counter is None:
        y, stats = deconv_conv(x, kernel, bias, **conv_kwargs)
        return y, update_running_stats(running, stats, momentum), None
    recompute, next_counter = deconv_freeze_schedule(counter, freeze_iter)
    eval_kwargs = {
        k: v
        for k, v in conv_kwargs.items()
        if k in ("strides", "padding", "feature_group_count", "grouping")
    }
    frozen_stats = DeconvStats(*(lax.stop_gradient(r) for r in running))

    def batch_branch() -> tuple[jax.Array, DeconvStats]:
        y, stats = deconv_conv(x, kernel, bias, **conv_kwargs)
        return y, update_running_stats(running, stats, momentum)

    def frozen_branch() -> tuple[jax.Array, DeconvStats]:
        y = deconv_conv_eval(x, kernel, bias, frozen_stats, **eval_kwargs)
        return y, frozen_stats

    y, new_running = lax.cond(recompute, batch_branch, frozen_branch)
    return y, new_running, next_counter

"""Network Deconvolution (Ye et al., ICLR 2020): whitened convolution that replaces BatchNorm.

Before a convolution, the im2col patches of its input are decorrelated (pixel-wise and
channel-wise) with the inverse square root of their covariance. Everything here follows
``/shared/papers.md`` §3:

- ``X``: im2col patches, one row per (sampled) output position, columns ``(taps..., channel)``
  of one block of ``b`` input channels (the kernel's HWIO order). Channels are split into
  contiguous blocks of ``b = min(block, C_in / groups)`` channels (``gcd`` rule when ``block``
  does not divide), never across a group of a grouped / depthwise conv. Each block gets its
  own covariance (a block-diagonal whitening); the reference code instead stacks the blocks
  as extra samples of one shared covariance, which does not whiten any single block.
- ``mu = mean(X)``, ``Cov = (X - mu)^T (X - mu) / M + eps I``, ``D = Cov^(-1/2)`` by the
  coupled Newton--Schulz iteration (:func:`isqrt_newton_schulz`), differentiated through the
  unrolled iterations.
- Fusion (exact): ``(X - mu) D W = X (D W) - mu^T D W``: the deconv matrix is folded into the
  kernel and the mean into the bias, so one ordinary convolution runs on the raw input.
- Patches for the statistics are sampled every ``sampling_stride * stride`` pixels.
- With ``axis_name`` (inside ``pmap`` / ``shard_map``) the first moment ``E[x]`` is averaged
  across devices, then the second moment about that global mean ``E[(x - mu)(x - mu)^T]``
  (equal to ``E[x x^T] - mu mu^T`` without its cancellation), so every device gets the deconv
  matrix of the whole global batch (the reference code whitens each device alone).

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
    check_floating,
    check_positive,
    check_spatial_rank,
    check_unit_interval,
    check_window_fits,
    normalize_padding,
    normalize_tuple,
)
from convjax.ops.layout import conv_dimension_numbers
from convjax.ops.pad import PaddingLike

__all__ = [
    "DeconvStats",
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


class DeconvStats(NamedTuple):
    """Batch statistics of a deconvolution layer (a pytree).

    Attributes:
      mean: ``(num_blocks, F)`` mean patch ``mu`` per channel block, ``F = prod(window) * b``.
      deconv: ``(num_blocks, F, F)`` deconvolution matrices ``D = (Cov + eps I)^(-1/2)``.
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


def _stat_dtype(*dtypes: jnp.dtype) -> jnp.dtype:
    """float32, or float64 when an input is float64: statistics are never below fp32."""
    return jnp.promote_types(jnp.result_type(*dtypes), jnp.float32)


# ---------------------------------------------------------------------------------------------
# Newton--Schulz inverse square root
# ---------------------------------------------------------------------------------------------


def isqrt_newton_schulz(a: jax.Array, num_iters: int = 5) -> jax.Array:
    """Inverse square root of symmetric positive-definite matrices by coupled Newton--Schulz.

    Implements (papers.md §3): ``Y0 = A / ||A||_F``, ``Z0 = I``; ``num_iters`` times
    ``T = (3 I - Z Y) / 2``, ``Y <- Y T``, ``Z <- T Z``; returns ``Z / sqrt(||A||_F)``.
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


def init_deconv_stats(
    in_features: int,
    window_shape: Sequence[int] = (),
    block: int = 64,
    feature_group_count: int = 1,
    dtype: jnp.dtype = jnp.float32,
) -> DeconvStats:
    """Initial running statistics: zero mean and identity deconv matrices.

    Args:
      in_features: input channels ``C_in``.
      window_shape: the kernel's spatial shape, ``()`` for the dense variant.
      block, feature_group_count: as in :func:`deconv_conv`.

    Returns:
      :class:`DeconvStats` with ``mean (nb, F)`` zeros and ``deconv (nb, F, F)`` identities,
      ``nb = C_in / b``, ``F = prod(window_shape) * b``.

    Example:
      >>> s = init_deconv_stats(8, (3, 3), block=4)
      >>> s.mean.shape, s.deconv.shape
      ((2, 36), (2, 36, 36))
    """
    b = deconv_block_size(in_features, block, feature_group_count)
    f = int(np.prod(window_shape, dtype=np.int64)) * b
    nb = in_features // b
    return DeconvStats(
        jnp.zeros((nb, f), dtype), jnp.broadcast_to(jnp.eye(f, dtype=dtype), (nb, f, f))
    )


def _conv_geometry(
    x: jax.Array,
    window: Sequence[int],
    strides: int | Sequence[int],
    padding: PaddingLike,
) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    n = len(window)
    strides_t = normalize_tuple(strides, n, "strides")
    pads = normalize_padding(padding, x.shape[1:-1], window, strides_t)
    check_window_fits(x.shape[1:-1], window, pads, name="kernel spatial shape")
    return strides_t, pads


def deconv_patches(
    x: jax.Array,
    window_shape: int | Sequence[int],
    *,
    strides: int | Sequence[int] = 1,
    padding: PaddingLike = "SAME",
    sampling_stride: int = 3,
    block: int = 64,
    feature_group_count: int = 1,
) -> jax.Array:
    """im2col patches of ``x`` used for the statistics, split into channel blocks.

    Patches are taken at every ``sampling_stride``-th output position of the convolution
    (``sampling_stride * stride`` input pixels apart) from the zero-padded input, by strided
    slicing (exact copies, no arithmetic).

    Args:
      x: ``(N, *spatial, C_in)``, 1 to 3 spatial dims.
      window_shape: the kernel's spatial shape (int: same for every dim).
      strides, padding, feature_group_count: those of the convolution.
      sampling_stride: subsampling of output positions (1 = every position).
      block: requested channels per block (see :func:`deconv_block_size`).

    Returns:
      ``(nb, M, F)`` in ``x.dtype``: ``nb = C_in / b`` blocks, ``M`` sampled positions
      (``N * prod(P)``), ``F = prod(window) * b`` columns ordered ``(taps..., channel)`` like a
      HWIO kernel's rows.

    Example:
      >>> deconv_patches(jnp.ones((2, 6, 6, 4)), 3, sampling_stride=3, block=2).shape
      (2, 8, 18)
    """
    check_floating(x, "x")
    n = check_spatial_rank(x, "x")
    window = normalize_tuple(window_shape, n, "window_shape")
    sampling_stride = _check_int(sampling_stride, "sampling_stride", 1)
    strides_t, pads = _conv_geometry(x, window, strides, padding)
    c = x.shape[-1]
    b = deconv_block_size(c, block, feature_group_count)
    step = tuple(sampling_stride * s for s in strides_t)
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    padded = xp.shape[1:-1]
    counts = tuple((p - k) // st + 1 for p, k, st in zip(padded, window, step))
    taps = []
    for offset in itertools.product(*(range(k) for k in window)):
        start = (0, *offset, 0)
        limit = (xp.shape[0], *(o + (cnt - 1) * st + 1 for o, cnt, st in zip(offset, counts, step)))
        taps.append(lax.slice(xp, start, (*limit, c), (1, *step, 1)))
    patches = jnp.stack(taps, axis=-2)  # (N, *counts, K, C)
    kk = len(taps)
    rows = patches.reshape(-1, kk, c // b, b)  # (M, K, nb, b)
    return rows.transpose(2, 0, 1, 3).reshape(c // b, -1, kk * b)


def deconv_statistics(
    rows: jax.Array,
    *,
    eps: float = 1e-5,
    num_iters: int = 5,
    axis_name: str | None = None,
) -> DeconvStats:
    """Patch mean and deconv matrix ``(Cov + eps I)^(-1/2)`` of each block of rows.

    With ``axis_name`` the mean is ``pmean``-ed first, then the second moment about that global
    mean, so every device gets the statistics of the concatenated batch (all devices must hold
    the same number of rows, as under ``pmap``).

    Args:
      rows: ``(nb, M, F)`` samples (e.g. from :func:`deconv_patches`), any float dtype.
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
        raise ValueError(f"`rows` must have shape (num_blocks, M, F), got {tuple(rows.shape)}.")
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


def fold_deconv(
    kernel: jax.Array,
    bias: jax.Array | None,
    stats: DeconvStats,
    feature_group_count: int = 1,
) -> tuple[jax.Array, jax.Array]:
    """Fold deconv statistics into a kernel and bias: ``W' = D W``, ``b' = b - mu^T D W``.

    Then ``conv(x, W') + b'`` equals ``conv`` of the whitened patches ``(X - mu) D`` with ``W``
    plus ``b`` exactly (papers.md §3, "Fusion").

    Args:
      kernel: ``(*window, C_in / groups, C_out)`` (HWIO), or ``(C_in, C_out)`` for dense.
      bias: ``(C_out,)`` or ``None`` (zero).
      stats: :class:`DeconvStats` matching the kernel (``F = prod(window) * b``).
      feature_group_count: groups of the convolution.

    Returns:
      ``(kernel', bias')`` in the statistics dtype (float32 or float64).

    Example:
      >>> k = jnp.ones((3, 3, 4, 8)); s = init_deconv_stats(4, (3, 3))
      >>> bool(jnp.allclose(fold_deconv(k, None, s)[0], k))
      True
    """
    check_floating(kernel, "kernel")
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
            f"`stats` must be mean (nb, F) and deconv (nb, F, F), got shapes "
            f"{tuple(mean.shape)} and {tuple(deconv.shape)}."
        )
    kp = int(np.prod(window, dtype=np.int64))
    nb, f = mean.shape
    if f % kp or (f // kp) == 0 or group_in % (f // kp) or nb * (f // kp) != group_in * groups:
        raise ValueError(
            f"`stats` with {nb} blocks of F={f} do not match a kernel of shape "
            f"{tuple(kernel.shape)} with feature_group_count={groups}: need F = "
            f"{kp} taps x b channels and num_blocks * b = C_in = {group_in * groups}."
        )
    b = f // kp
    nbl = group_in // b
    og = c_out // groups
    dtype = _stat_dtype(kernel.dtype, mean.dtype)
    w = kernel.astype(dtype).reshape(kp, nbl, b, groups, og)
    w = w.transpose(3, 1, 0, 2, 4).reshape(nb, f, og)
    w = jnp.einsum("nfe,neo->nfo", deconv.astype(dtype), w, precision=_HIGHEST)
    shift = jnp.einsum("nf,nfo->no", mean.astype(dtype), w, precision=_HIGHEST)
    shift = shift.reshape(groups, nbl, og).sum(axis=1).reshape(c_out)
    new_bias = -shift if bias is None else bias.astype(dtype) - shift
    new_kernel = w.reshape(groups, nbl, kp, b, og).transpose(2, 1, 3, 0, 4)
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
    padding: PaddingLike = "SAME",
    block: int = 64,
    eps: float = 1e-5,
    num_iters: int = 5,
    sampling_stride: int = 3,
    axis_name: str | None = None,
    feature_group_count: int = 1,
) -> tuple[jax.Array, DeconvStats]:
    """Training-mode network deconvolution fused into one convolution.

    Computes ``y = (X - mu) D W + b`` for the im2col patches ``X`` of ``x`` (papers.md §3):
    statistics ``mu``, ``D = (Cov + eps I)^(-1/2)`` from patches sampled every
    ``sampling_stride * stride`` pixels (per channel block, see :func:`deconv_block_size`),
    folded into the kernel and bias (:func:`fold_deconv`) so one convolution runs on the raw
    input. Gradients flow through the statistics (and the Newton--Schulz iterations) into
    ``x``, as in the paper.

    Args:
      x: ``(N, *spatial, C_in)``, 1 to 3 spatial dims, any float dtype (the compute dtype is
        the promotion of ``x`` and ``kernel``; statistics are always float32 or wider).
      kernel: ``(*window, C_in / feature_group_count, C_out)`` (Flax HWIO layout).
      bias: ``(C_out,)`` or ``None``.
      strides: conv strides (int or one per spatial dim).
      padding: ``"SAME"``, ``"VALID"``, an int or ``(lo, hi)`` pairs; zero padding (the
        padded zeros are part of the patches, as in the conv).
      block: channels per whitening block (default 64; ``C_in`` if smaller; ``gcd`` rule).
      eps: covariance ridge; num_iters: Newton--Schulz iterations (5 default; 10--15 for the
        first layer whitens almost fully).
      sampling_stride: sample every ``sampling_stride``-th output position for the statistics.
      axis_name: inside ``pmap``/``shard_map``, average moments over this axis so all devices
        whiten like one device with the global batch.
      feature_group_count: grouped / depthwise convolution.

    Returns:
      ``(y, stats)``: ``y`` of shape ``(N, *ceil-or-valid output, C_out)`` in the compute
      dtype, and the batch :class:`DeconvStats` (keep running averages of them for eval).

    Example:
      >>> x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
      >>> k = jax.random.normal(jax.random.key(1), (3, 3, 3, 16)) / 5
      >>> y, stats = deconv_conv(x, k)
      >>> y.shape, stats.deconv.shape
      ((2, 8, 8, 16), (1, 27, 27))
    """
    n, window = _check_conv_args(x, kernel, bias, feature_group_count)
    strides_t, pads = _conv_geometry(x, window, strides, padding)
    rows = deconv_patches(
        x,
        window,
        strides=strides_t,
        padding=pads,
        sampling_stride=sampling_stride,
        block=block,
        feature_group_count=feature_group_count,
    )
    stats = deconv_statistics(rows, eps=eps, num_iters=num_iters, axis_name=axis_name)
    w, b = fold_deconv(kernel, bias, stats, feature_group_count)
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
    padding: PaddingLike = "SAME",
    feature_group_count: int = 1,
) -> jax.Array:
    """Eval-mode deconvolution: the given statistics folded into one plain convolution.

    ``y = conv(x, D W) + b - mu^T D W`` with stored (running) ``stats``; the block size is read
    from the statistics' shapes. Cost: one convolution plus a tiny ``(F x F) @ (F x C_out)``
    fold per block (hoist :func:`fold_deconv` out of the loop to drop even that).

    Args:
      x, kernel, bias, strides, padding, feature_group_count: as in :func:`deconv_conv`.
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
    w, b = fold_deconv(kernel, bias, stats, feature_group_count)
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
) -> tuple[jax.Array, DeconvStats]:
    """Training-mode "Delinear": a dense layer on decorrelated inputs, fused into one matmul.

    ``y = (x - mu) D W + b`` with ``mu``, ``D = (Cov + eps I)^(-1/2)`` over all rows of ``x``
    (every leading dim is a sample), per block of ``b`` input features (papers.md §3,
    "Delinear"; default block 512 as for CIFAR classifier heads).

    Args:
      x: ``(..., C_in)`` float.
      kernel: ``(C_in, C_out)``; bias: ``(C_out,)`` or ``None``.
      block, eps, num_iters, axis_name: as in :func:`deconv_conv`.

    Returns:
      ``(y, stats)`` with ``y`` of shape ``(..., C_out)`` and :class:`DeconvStats` of shapes
      ``(nb, b)`` and ``(nb, b, b)``.

    Example:
      >>> x = jax.random.normal(jax.random.key(0), (32, 16))
      >>> y, stats = deconv_dense(x, jnp.ones((16, 10)))
      >>> y.shape, stats.deconv.shape
      ((32, 10), (1, 16, 16))
    """
    _check_dense_args(x, kernel, bias)
    c = x.shape[-1]
    b = deconv_block_size(c, block)
    rows = x.reshape(-1, c // b, b).transpose(1, 0, 2)
    stats = deconv_statistics(rows, eps=eps, num_iters=num_iters, axis_name=axis_name)
    w, bb = fold_deconv(kernel, bias, stats)
    return _dense(x, w, bb, jnp.result_type(x.dtype, kernel.dtype)), stats


def deconv_dense_eval(
    x: jax.Array, kernel: jax.Array, bias: jax.Array | None, stats: DeconvStats
) -> jax.Array:
    """Eval-mode "Delinear": stored statistics folded into one matmul, ``x (D W) + b'``.

    Example:
      >>> deconv_dense_eval(jnp.ones((4, 8)), jnp.ones((8, 3)), None, init_deconv_stats(8)).shape
      (4, 3)
    """
    _check_dense_args(x, kernel, bias)
    w, bb = fold_deconv(kernel, bias, stats)
    return _dense(x, w, bb, jnp.result_type(x.dtype, kernel.dtype))

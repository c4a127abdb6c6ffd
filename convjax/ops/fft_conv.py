"""Convolution backends for long kernels: spatial, FFT, causal 1-D, and automatic choice.

All functions compute the "VALID" cross-correlation that ``lax.conv_general_dilated`` (and
``flax.linen.Conv``) computes, channels-last:

    y[n, p, o] = sum_{q, i} k[q, i, o] x[n, p * s + q, i]      p = 0 .. (S - K) // s

FFT form (convolution theorem for correlation, real kernel):

    y = IDFT( DFT(x) * conj(DFT(k)) )  restricted to the valid positions,

with DFT length ``L >= S`` per dim (a 5-smooth size); positions ``p <= S - K`` never wrap, so
padding to ``S + K - 1`` is unnecessary. The FFT runs in float32 (or the input's wider float).

``conv_valid(..., method="auto")`` picks FFT when the kernel size (largest dim) is at least
``DEFAULT_FFT_THRESHOLD[d]``; those defaults were measured on CPU with
``python -m convjax.bench.flexconv`` (see that module), and can be overridden per call.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from convjax.ops.pad import pad
from convjax.ops.validation import (
    check_choice,
    check_floating,
    check_spatial_rank,
    check_window_fits,
    normalize_tuple,
)

#: Smallest kernel size (per dim) at which ``method="auto"`` switches to FFT, by spatial rank.
#: Measured on a 2-core CPU (XLA:CPU, jax 0.12) for fwd+bwd of a 24->24-channel layer, see
#: ``convjax.bench.flexconv``. GPUs (cuDNN) favour the spatial path up to larger sizes.
DEFAULT_FFT_THRESHOLD: dict[int, int] = {1: 33, 2: 17, 3: 9}

CONV_METHODS = ("auto", "spatial", "fft")

_DIMENSION_NUMBERS = {
    1: ("NWC", "WIO", "NWC"),
    2: ("NHWC", "HWIO", "NHWC"),
    3: ("NDHWC", "DHWIO", "NDHWC"),
}


def _check_conv_args(x: jax.Array, kernel: jax.Array, strides) -> tuple[int, tuple[int, ...]]:
    check_floating(x, "x")
    check_floating(kernel, "kernel")
    n = check_spatial_rank(x, "x")
    if kernel.ndim != n + 2:
        raise ValueError(
            f"`kernel` must have shape (*window, in_features, out_features) with {n} spatial "
            f"dims to match `x` {tuple(x.shape)}, got {tuple(kernel.shape)}."
        )
    if kernel.shape[-2] != x.shape[-1]:
        raise ValueError(
            f"`kernel` in_features {kernel.shape[-2]} must equal `x` features {x.shape[-1]}."
        )
    strides_t = normalize_tuple(strides, n, "strides")
    check_window_fits(x.shape[1:-1], kernel.shape[:-2], ((0, 0),) * n, name="kernel")
    return n, strides_t


def spatial_conv(x: jax.Array, kernel: jax.Array, strides: int | Sequence[int] = 1) -> jax.Array:
    """VALID cross-correlation with ``lax.conv_general_dilated`` (direct/im2col by XLA).

    Args:
      x: ``(N, *S, C_in)``; kernel: ``(*K, C_in, C_out)``; strides: int or per dim.

    Returns:
      ``(N, *((S - K) // s + 1), C_out)`` in the promoted dtype of ``x`` and ``kernel``.

    Example:
      >>> spatial_conv(jnp.ones((1, 8, 8, 2)), jnp.ones((3, 3, 2, 4))).shape
      (1, 6, 6, 4)
    """
    n, strides_t = _check_conv_args(x, kernel, strides)
    dtype = jnp.promote_types(x.dtype, kernel.dtype)
    return jax.lax.conv_general_dilated(
        x.astype(dtype),
        kernel.astype(dtype),
        window_strides=strides_t,
        padding="VALID",
        dimension_numbers=_DIMENSION_NUMBERS[n],
    )


def next_fast_len(n: int) -> int:
    """Smallest integer ``>= n`` whose prime factors are 2, 3 and 5 (fast FFT sizes).

    Example:
      >>> next_fast_len(37), next_fast_len(64)
      (40, 64)
    """
    if n <= 1:
        return 1
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def fft_conv(x: jax.Array, kernel: jax.Array, strides: int | Sequence[int] = 1) -> jax.Array:
    """VALID cross-correlation through the FFT; equals :func:`spatial_conv` up to rounding.

    Cost ``O(N C_in L log L + N L C_in C_out)`` with ``L`` the padded input size, independent
    of the kernel size, so it wins for large kernels. Computes in float32 (complex64) unless
    the inputs are float64; returns the promoted input dtype.

    Example:
      >>> x, k = jnp.ones((1, 16, 2)), jnp.ones((9, 2, 3))
      >>> bool(jnp.allclose(fft_conv(x, k), spatial_conv(x, k), atol=1e-4))
      True
    """
    n, strides_t = _check_conv_args(x, kernel, strides)
    out_dtype = jnp.promote_types(x.dtype, kernel.dtype)
    work = jnp.promote_types(out_dtype, jnp.float32)
    spatial = x.shape[1:-1]
    window = kernel.shape[:-2]
    lengths = tuple(next_fast_len(s) for s in spatial)
    x_axes = tuple(range(1, n + 1))
    k_axes = tuple(range(n))
    xf = jnp.fft.rfftn(x.astype(work), s=lengths, axes=x_axes)
    kf = jnp.fft.rfftn(kernel.astype(work), s=lengths, axes=k_axes)
    yf = jnp.einsum("n...i,...io->n...o", xf, jnp.conj(kf))
    y = jnp.fft.irfftn(yf, s=lengths, axes=x_axes)
    index = (slice(None),)
    for s, k, st in zip(spatial, window, strides_t):
        index += (slice(0, s - k + 1, st),)
    return y[index].astype(out_dtype)


def use_fft(window: Sequence[int], method: str = "auto", threshold: int | None = None) -> bool:
    """Whether :func:`conv_valid` takes the FFT path for a kernel of spatial shape ``window``."""
    check_choice(method, CONV_METHODS, "method")
    if method != "auto":
        return method == "fft"
    n = len(window)
    threshold = DEFAULT_FFT_THRESHOLD[n] if threshold is None else threshold
    if not isinstance(threshold, int) or threshold < 1:
        raise ValueError(f"`fft_threshold` must be an int >= 1, got {threshold!r}.")
    return max(window) >= threshold


def conv_valid(
    x: jax.Array,
    kernel: jax.Array,
    strides: int | Sequence[int] = 1,
    *,
    method: str = "auto",
    fft_threshold: int | None = None,
) -> jax.Array:
    """VALID cross-correlation by ``method``: ``"spatial"``, ``"fft"`` or ``"auto"`` (by size).

    Example:
      >>> conv_valid(jnp.ones((2, 40, 1)), jnp.ones((33, 1, 1)), method="auto").shape
      (2, 8, 1)
    """
    fn = fft_conv if use_fft(kernel.shape[:-2], method, fft_threshold) else spatial_conv
    return fn(x, kernel, strides)


def causal_conv1d(
    x: jax.Array,
    kernel: jax.Array,
    *,
    method: str = "auto",
    fft_threshold: int | None = None,
    padding_mode: str = "zero",
) -> jax.Array:
    """Causal 1-D convolution: ``y[t] = sum_q k[q] x[t - (K - 1 - q)]`` (no future input).

    The last kernel tap ``k[K-1]`` multiplies the current step. ``x`` is padded by ``K - 1``
    steps on the left only (``padding_mode`` as in :func:`convjax.ops.pad`).

    Args:
      x: ``(N, T, C_in)``; kernel: ``(K, C_in, C_out)``.

    Returns:
      ``(N, T, C_out)``.

    Example:
      >>> x = jnp.arange(5.0).reshape(1, 5, 1)
      >>> causal_conv1d(x, jnp.array([1.0, 0.0]).reshape(2, 1, 1))[0, :, 0]  # y[t] = x[t-1]
      Array([0., 0., 1., 2., 3.], dtype=float32)
    """
    check_spatial_rank(x, "x", min_spatial=1, max_spatial=1)
    check_floating(kernel, "kernel")
    if kernel.ndim != 3:
        raise ValueError(
            f"`kernel` must be (K, C_in, C_out) for a causal 1-D conv, got {kernel.shape}."
        )
    xp = pad(x, ((kernel.shape[0] - 1, 0),), padding_mode)
    return conv_valid(xp, kernel, 1, method=method, fft_threshold=fft_threshold)

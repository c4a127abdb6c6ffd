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
from functools import partial

import jax
import jax.numpy as jnp

from convjax._checks import (
    check_choice,
    check_floating,
    check_spatial_rank,
    check_window_fits,
    normalize_tuple,
)
from convjax.ops.layout import conv_dimension_numbers
from convjax.ops.pad import pad

#: Smallest kernel size (per dim) at which ``method="auto"`` switches to FFT, by spatial rank.
#: Measured with ``python -m convjax.bench.flexconv --quick`` on an otherwise idle 2-core CPU
#: (XLA:CPU, jax 0.12, fwd+bwd, 16 -> 16 channels, "SAME"): 1-D length 1024 FFT wins from
#: k = 65 (k = 33 about even), 2-D 32x32 from k = 17 (k = 9 even), 3-D 16^3 from k = 5.
#: GPUs (cuDNN) favour the spatial path up to larger sizes; override with ``fft_threshold``.
DEFAULT_FFT_THRESHOLD: dict[int, int] = {1: 65, 2: 17, 3: 5}

CONV_METHODS = ("auto", "spatial", "fft")


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


def _conv(
    x: jax.Array, kernel: jax.Array, strides, lhs_dilation=None, rhs_dilation=None, pads=None
):
    n = x.ndim - 2
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=strides,
        padding=pads if pads is not None else "VALID",
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=conv_dimension_numbers(n),
    )


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _valid_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, ...]) -> jax.Array:
    return _conv(x, kernel, strides)


def _valid_conv_fwd(x, kernel, strides):
    return _conv(x, kernel, strides), (x, kernel)


def _valid_conv_bwd(strides, res, g):
    """Both gradients as ordinary channels-last convolutions (see :func:`spatial_conv`)."""
    x, kernel = res
    n = x.ndim - 2
    spatial, window, out = x.shape[1:-1], kernel.shape[:n], g.shape[1:-1]
    # dx[r] = sum_{p s + q = r} g[p] k[q]: dilate g by s, pad by k - 1, correlate with the
    # flipped kernel (in/out swapped). Trailing positions no window reads get zeros.
    pads = [
        (k - 1, k - 1 + s_in - ((o - 1) * st + k))
        for s_in, k, o, st in zip(spatial, window, out, strides)
    ]
    flipped = jnp.flip(kernel, axis=tuple(range(n))).swapaxes(-1, -2)
    dx = _conv(g, flipped, (1,) * n, lhs_dilation=strides, pads=pads)
    # dk[q] = sum_{n, p} x[n, p s + q] g[n, p]: batch <-> features swapped, g as the window.
    perm_x = (n + 1, *range(1, n + 1), 0)
    perm_g = (*range(1, n + 1), 0, n + 1)
    dk = _conv(x.transpose(perm_x), g.transpose(perm_g), (1,) * n, rhs_dilation=strides)
    dk = dk[(slice(None), *(slice(0, k) for k in window))]
    dk = dk.transpose(*range(1, n + 1), 0, n + 1)
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


_valid_conv.defvjp(_valid_conv_fwd, _valid_conv_bwd)


def spatial_conv(x: jax.Array, kernel: jax.Array, strides: int | Sequence[int] = 1) -> jax.Array:
    """VALID cross-correlation with ``lax.conv_general_dilated`` (direct/im2col by XLA).

    The backward pass is a custom VJP that writes both gradients as ordinary channels-last
    convolutions (``dx``: the flipped kernel over the stride-dilated cotangent; ``dk``: the
    input correlated with the cotangent, batch and feature axes swapped). It equals JAX's own
    transpose rule, but XLA:CPU runs the layouts of JAX's rule ~20x slower when the conv sits
    inside a ``lax.switch`` branch (as in FlexConv's bucket ladder); this form is fast there.

    Args:
      x: ``(N, *S, C_in)``; kernel: ``(*K, C_in, C_out)``; strides: int or per dim.

    Returns:
      ``(N, *((S - K) // s + 1), C_out)`` in the promoted dtype of ``x`` and ``kernel``.

    Example:
      >>> spatial_conv(jnp.ones((1, 8, 8, 2)), jnp.ones((3, 3, 2, 4))).shape
      (1, 6, 6, 4)
    """
    _, strides_t = _check_conv_args(x, kernel, strides)
    dtype = jnp.promote_types(x.dtype, kernel.dtype)
    return _valid_conv(x.astype(dtype), kernel.astype(dtype), strides_t)


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

"""Partial-convolution padding (Liu et al. 2018, "Partial Convolution based Padding").

A convolution over a zero-padded input sees fewer real pixels near the border. Partial
convolution treats the padding as missing data and re-weights each output by the fraction of
its window that is real:

    y = W^T (X * M) * (sum(1) / sum(M)) + b      if sum(M) > 0,   else 0,

where ``M`` is 1 on real pixels and 0 on padding, and ``sum(1)`` is the window area. With
zero padding, ``X * M`` is just the zero-padded input, so the only new ingredient is the
per-output-position ratio ``sum(1) / sum(M)``. It depends on shapes alone, so it is computed
here with NumPy at trace time and enters the graph as a constant.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from convjax._checks import normalize_padding, normalize_tuple
from convjax.ops.pad import PaddingLike


def _valid_counts_1d(size: int, window: int, stride: int, lo: int, hi: int, dilation: int):
    """Number of real (non-padding) taps of each output window along one dim."""
    eff = (window - 1) * dilation + 1
    out = (size + lo + hi - eff) // stride + 1
    if out <= 0:
        return np.zeros((0,), np.int64)
    starts = np.arange(out) * stride - lo  # first tap, in unpadded coordinates
    taps = starts[:, None] + np.arange(window)[None, :] * dilation
    return ((taps >= 0) & (taps < size)).sum(axis=1)


def partial_conv_scale(
    spatial_shape: Sequence[int],
    kernel_size: int | Sequence[int],
    strides: int | Sequence[int] = 1,
    padding: PaddingLike = "SAME",
    dilation: int | Sequence[int] = 1,
) -> np.ndarray:
    """Liu et al. re-weighting ``sum(1) / sum(M)`` for every output position of a conv.

    Args:
      spatial_shape: the unpadded input's spatial shape ``(*spatial,)``.
      kernel_size: window per spatial dim (int = same for all).
      strides: stride per spatial dim.
      padding: ``"SAME"``, ``"VALID"``, an int or ``(lo, hi)`` pairs, as for ``lax.conv``.
      dilation: kernel dilation per spatial dim.

    Returns:
      float32 NumPy array ``(1, *out_spatial, 1)``, broadcastable against the conv output
      ``(batch, *out_spatial, features)``: ``window_area / real_taps`` (>= 1), and 0 where a
      window holds no real pixel (Liu et al. output 0 there, bias included).

    Example:
      >>> partial_conv_scale((4,), 3)[0, :, 0]
      array([1.5, 1. , 1. , 1.5], dtype=float32)
    """
    spatial_shape = tuple(int(s) for s in spatial_shape)
    n = len(spatial_shape)
    window = normalize_tuple(kernel_size, n, "kernel_size")
    stride = normalize_tuple(strides, n, "strides")
    dil = normalize_tuple(dilation, n, "dilation")
    pads = normalize_padding(padding, spatial_shape, window, stride, dilation=dil)
    counts = np.ones((), np.int64)
    for d, (s, k, st, (lo, hi), dl) in enumerate(zip(spatial_shape, window, stride, pads, dil)):
        c = _valid_counts_1d(s, k, st, lo, hi, dl)
        counts = counts[..., None] * c.reshape((1,) * d + (-1,))
    area = float(np.prod(window))
    scale = np.where(counts > 0, area / np.maximum(counts, 1), 0.0)
    return scale.astype(np.float32)[None, ..., None]

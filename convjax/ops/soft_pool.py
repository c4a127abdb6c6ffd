"""SoftPool: exponentially weighted pooling (Stergiou, Poppe & Kalliatakis, ICCV 2021).

Over every pooling window ``R`` (Eq. 1-2 of the paper)::

    w_i = exp(a_i) / sum_{j in R} exp(a_j)          out = sum_{i in R} w_i a_i

with the exact gradient (Eq. 2 differentiated through the weights as well)::

    d out / d a_i = w_i (1 + a_i - out)

The weights are a softmax over the window, so shifting every ``a_j`` of a window by the same
constant leaves them unchanged. This implementation shifts each window by its own maximum
``m``, which makes it overflow-proof for inputs of any finite magnitude and *exact* (no
clipping, no ``nan_to_num``)::

    d_i = a_i - m <= 0,   e_i = exp(d_i) in (0, 1],   s = sum e_i in [1, |R|]
    out = m + r,          r = sum e_i d_i / s  in  [min d, 0]

fp16/bf16 inputs are computed in float32 and the result is cast back to the input dtype.

Memory and speed: a custom VJP keeps the input ``x`` and three output-sized arrays (``m``,
``s``, ``r``, float32 or wider) for the backward pass, which recomputes the weights; no
per-window weight array is kept. Three code paths, all exact:

- inference (not differentiated): one strided slice per window offset; XLA fuses them into one
  pass for the window max and one for the exponentials;
- training with window == stride (the usual ``2x2 / 2``): the input is viewed as
  ``(N, H', k, W', k, C)`` and reduced over the ``k`` axes; the backward pass is a single
  elementwise loop over that view, so forward + backward need no ``(N, H', W', k*k)``
  temporary at all;
- training with other windows/strides (overlap, gaps): strided slices forward; the backward
  pass is polyphase (each input residue class modulo the stride sums shifted output-sized
  terms, then one interleaving reshape). XLA may keep the ``prod(window)`` exponentials as
  temporaries inside a fused forward+backward program.

Padding: ``"VALID"``, ``"SAME"`` or explicit ``(lo, hi)`` pairs, as in ``flax.linen.max_pool``.
Padded positions are excluded from the window (they get exactly zero weight; they are not
zeros that take part in the softmax): they hold ``-inf`` internally, and ``d`` is clamped at a
finite floor where ``exp`` is exactly 0, so no mask and no ``inf``/``nan`` arithmetic.
Every window must contain at least one real element.

Differentiation: reverse mode of any order (``grad``, ``grad(grad)``, ``jacrev``). Forward
mode (``jvp``, ``jacfwd``) is not available because the op is a ``jax.custom_vjp``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from convjax._checks import (
    check_floating,
    check_spatial_rank,
    check_window_fits,
    normalize_padding,
    normalize_tuple,
)
from convjax.ops.pad import PaddingLike

__all__ = ["soft_pool", "soft_pool_output_shape", "check_soft_pool_args", "check_layer_input"]


class _Config(NamedTuple):
    """Static (hashable) description of one pooling problem."""

    window: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    in_spatial: tuple[int, ...]
    out_spatial: tuple[int, ...]


def _window_dims(window_shape: Sequence[int]) -> int:
    """Number of spatial dims a window tuple/list names (1 to 3, else ``ValueError``)."""
    if not 1 <= len(window_shape) <= 3:
        raise ValueError(
            f"`window_shape` must have 1 to 3 entries (one per spatial dim), got {window_shape!r}."
        )
    return len(window_shape)


def _resolve(
    x: jax.Array,
    window_shape: int | Sequence[int],
    strides: int | Sequence[int] | None,
    padding: PaddingLike,
) -> _Config:
    """Validate the arguments (trace-time only) and build the static configuration."""
    check_floating(x, "x")
    if isinstance(window_shape, (tuple, list)):
        _window_dims(window_shape)
    n = check_spatial_rank(x, "x")
    if isinstance(window_shape, (tuple, list)) and len(window_shape) != n:
        # The window names the wrong number of dims: blame the window, not ``x``.
        raise ValueError(
            f"`window_shape` must have length {n} (one entry per spatial dim of `x` with "
            f"shape {tuple(x.shape)}), got {tuple(window_shape)!r} (length {len(window_shape)})."
        )
    window = normalize_tuple(window_shape, n, "window_shape")
    stride = normalize_tuple(strides, n, "strides", default=(1,) * n)
    spatial = tuple(int(s) for s in x.shape[1:-1])
    pads = normalize_padding(padding, spatial, window, stride, "padding")
    check_window_fits(spatial, window, pads, "window_shape")
    out = tuple(
        (s + lo + hi - k) // st + 1 for s, k, st, (lo, hi) in zip(spatial, window, stride, pads)
    )
    for d, (s, k, st, (lo, _), o) in enumerate(zip(spatial, window, stride, pads, out)):
        # The first window starts at -lo, the last at (o - 1) * st - lo (input coordinates).
        if lo >= k or (o - 1) * st - lo >= s:
            raise ValueError(
                f"`padding` {pads!r} leaves a window made only of padding along spatial dim {d} "
                f"(size {s}, window {k}, stride {st}); SoftPool needs at least one real element "
                f"per window. Use less padding."
            )
    return _Config(window, stride, pads, spatial, out)


def check_layer_input(x: jax.Array, window_shape: int | Sequence[int]) -> None:
    """A pooling *layer*'s input check: its window is fixed, so a rank mismatch is the input's.

    :func:`soft_pool` itself blames ``window_shape`` when the two disagree (the window is the
    argument given with ``x``); a layer built with a ``k``-D window blames ``x`` instead.

    Example:
      >>> check_layer_input(jnp.zeros((2, 6, 3)), (2, 2))
      Traceback (most recent call last):
      ValueError: `x` must have shape (batch, *spatial, features) with 2 spatial dims ...
    """
    if isinstance(window_shape, (tuple, list)):
        n = len(window_shape)
        check_spatial_rank(x, "x", min_spatial=n, max_spatial=n)


def check_soft_pool_args(
    window_shape: int | Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
) -> tuple[Any, Any, Any]:
    """Check pooling arguments that do not depend on the input (for module constructors).

    Raises the same ``ValueError``/``TypeError`` as :func:`soft_pool` would for a bad
    window, stride or padding, before any input is seen. Input-dependent checks (rank, dtype,
    window larger than the input) still happen at call time.

    Returns:
      ``(window_shape, strides, padding)`` unchanged except that lists become tuples, so a
      module can store them as hashable static attributes.

    Example:
      >>> check_soft_pool_args([2, 2], None, [(0, 1), (0, 1)])
      ((2, 2), None, ((0, 1), (0, 1)))
    """
    if isinstance(window_shape, (tuple, list)):
        n = _window_dims(window_shape)
    elif isinstance(strides, (tuple, list)):
        n = len(strides)
    elif not isinstance(padding, str) and isinstance(padding, (tuple, list)):
        n = len(padding)
    else:
        n = 1
    window = normalize_tuple(window_shape, n, "window_shape")
    normalize_tuple(strides, n, "strides", default=(1,) * n)
    normalize_padding(padding, (max(window),) * n, window, (1,) * n, "padding")
    return _hashable(window_shape), _hashable(strides), _hashable(padding)


def _hashable(value: Any) -> Any:
    """Nested lists -> nested tuples; anything else unchanged."""
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value


def soft_pool_output_shape(
    input_shape: Sequence[int],
    window_shape: int | Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
) -> tuple[int, ...]:
    """Output shape of :func:`soft_pool` for an input of shape ``(batch, *spatial, features)``.

    Per spatial dim: ``(size + lo + hi - window) // stride + 1``; ``"SAME"`` gives
    ``ceil(size / stride)``.

    Example:
      >>> soft_pool_output_shape((8, 32, 32, 16), (2, 2), (2, 2))
      (8, 16, 16, 16)
    """
    cfg = _resolve(
        jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32), window_shape, strides, padding
    )
    return (int(input_shape[0]), *cfg.out_spatial, int(input_shape[-1]))


def _compute_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """At least float32 internally (fp16/bf16 -> fp32; fp64 stays fp64)."""
    return jnp.promote_types(dtype, jnp.float32)


def _d_floor(dtype: jnp.dtype) -> float:
    """A value below which ``exp`` is exactly 0 in ``dtype``; clamping ``d`` there is exact.

    Guards ``a - m`` against overflowing to ``-inf`` (e.g. ``-3e38 - 3e38`` in fp32, or the
    ``-inf`` that marks padded positions), which would give ``0 * -inf = nan`` in
    ``sum e_i d_i``; with the clamp those terms are ``0 * floor = 0``.
    """
    return float(np.log(np.finfo(dtype).smallest_subnormal)) - 16.0


def _is_block(cfg: _Config) -> bool:
    """Window == stride along every dim: disjoint windows that tile the (cropped) input."""
    return cfg.window == cfg.strides


def _has_padding(cfg: _Config) -> bool:
    return any(lo or hi for lo, hi in cfg.pads)


def _pad_input(x: jax.Array, cfg: _Config) -> jax.Array:
    """Pad the spatial dims with ``-inf``: padded positions never get weight (see `_shifted`)."""
    if not _has_padding(cfg):
        return x
    return lax.pad(
        x,
        jnp.array(-jnp.inf, x.dtype),
        [(0, 0, 0), *((lo, hi, 0) for lo, hi in cfg.pads), (0, 0, 0)],
    )


def _unpad(gp: jax.Array, cfg: _Config) -> jax.Array:
    """Inverse of :func:`_pad_input` for gradients: keep the real positions only."""
    if not _has_padding(cfg):
        return gp
    start = (0, *(lo for lo, _ in cfg.pads), 0)
    limit = (gp.shape[0], *(lo + s for (lo, _), s in zip(cfg.pads, cfg.in_spatial)), gp.shape[-1])
    return lax.slice(gp, start, limit)


def _shifted(xs: jax.Array, m: jax.Array, floor: float) -> jax.Array:
    """``d = a - m`` clamped at ``floor`` (exact: ``exp(floor) == 0``).

    Padded positions hold ``-inf``, so they get ``d = floor`` and exactly zero weight, and
    ``e * d = 0 * floor = 0``: no mask, no ``inf`` or ``nan`` anywhere, even in derivatives.
    """
    return jnp.maximum(xs - m, floor)


# ----------------------------------------------------------------------------------------------
# Block path (window == stride): view (N, o1*k1, ..., C) as (N, o1, k1, ..., C), reduce the k axes.
# ----------------------------------------------------------------------------------------------


def _block_axes(cfg: _Config) -> tuple[int, ...]:
    return tuple(2 + 2 * d for d in range(len(cfg.window)))


def _block_view(xp: jax.Array, cfg: _Config) -> jax.Array:
    crop = tuple(o * k for o, k in zip(cfg.out_spatial, cfg.window))
    if crop != xp.shape[1:-1]:  # VALID: the remainder no window reaches
        xp = lax.slice(xp, (0,) * xp.ndim, (xp.shape[0], *crop, xp.shape[-1]))
    shape = [xp.shape[0]]
    for o, k in zip(cfg.out_spatial, cfg.window):
        shape += [o, k]
    return xp.reshape(*shape, xp.shape[-1])


def _block_stats(x: jax.Array, cfg: _Config):
    """``(m, s, r)`` per window, each ``(N, *out, C)`` in the compute dtype."""
    ct = _compute_dtype(x.dtype)
    xv = _block_view(_pad_input(x.astype(ct), cfg), cfg)
    axes = _block_axes(cfg)
    m = jnp.max(xv, axis=axes, keepdims=True)
    d = _shifted(xv, m, _d_floor(ct))
    e = jnp.exp(d)
    s = jnp.sum(e, axis=axes)
    r = jnp.sum(e * d, axis=axes) / s
    return jnp.squeeze(m, axis=axes), s, r


def _block_backward(x: jax.Array, cfg: _Config, m, s, r, g: jax.Array) -> jax.Array:
    ct = _compute_dtype(x.dtype)
    xp = _pad_input(x.astype(ct), cfg)
    xv = _block_view(xp, cfg)
    axes = _block_axes(cfg)
    scale, m, r = (jnp.expand_dims(a, axes) for a in (g.astype(ct) / s, m, r))
    d = _shifted(xv, m, _d_floor(ct))
    # w_i (1 + a_i - out) with w_i = e_i / s and a_i - out = d_i - r.
    gx = scale * jnp.exp(d) * (1.0 + d - r)
    gx = gx.reshape(xv.shape[0], *(o * k for o, k in zip(cfg.out_spatial, cfg.window)), -1)
    # Zero gradient for the VALID remainder no window reached, then drop the padding.
    tail = [(0, p - c, 0) for p, c in zip(xp.shape[1:-1], gx.shape[1:-1])]
    if any(hi for _, hi, _ in tail):
        gx = lax.pad(gx, jnp.zeros((), ct), [(0, 0, 0), *tail, (0, 0, 0)])
    return _unpad(gx, cfg).astype(x.dtype)


# ----------------------------------------------------------------------------------------------
# General path: any window/stride. One strided slice per window offset, fused by XLA.
# ----------------------------------------------------------------------------------------------


def _offsets(cfg: _Config) -> list[tuple[int, ...]]:
    return list(itertools.product(*(range(k) for k in cfg.window)))


def _offset_slice(xp: jax.Array, cfg: _Config, off: tuple[int, ...]) -> jax.Array:
    """Element ``off`` of every window: ``xp[:, off + j * stride, :]`` for all outputs ``j``."""
    ends = (o_ + (o - 1) * st + 1 for o_, o, st in zip(off, cfg.out_spatial, cfg.strides))
    limit = (xp.shape[0], *ends, xp.shape[-1])
    return lax.slice(xp, (0, *off, 0), limit, (1, *cfg.strides, 1))


def _general_stats(x: jax.Array, cfg: _Config):
    """``(m, s, r)`` per window, each ``(N, *out, C)`` in the compute dtype."""
    ct = _compute_dtype(x.dtype)
    xp = _pad_input(x.astype(ct), cfg)
    floor = _d_floor(ct)
    offs = _offsets(cfg)
    slices = [_offset_slice(xp, cfg, off) for off in offs]
    m = functools.reduce(jnp.maximum, slices)
    # Materialise the window max once: otherwise XLA re-computes the prod(window)-way max
    # inside every consumer fusion, reading the input prod(window)^2 times.
    m = lax.optimization_barrier(m)
    s = jnp.zeros_like(m)
    q = jnp.zeros_like(m)
    for xs in slices:
        d = _shifted(xs, m, floor)
        e = jnp.exp(d)
        s = s + e
        q = q + e * d
    return m, s, q / s


def _general_backward(x: jax.Array, cfg: _Config, m, s, r, g: jax.Array) -> jax.Array:
    """Scatter each offset's contribution ``g / s * e_i (1 + d_i - r)`` back to the input.

    Polyphase form (no interior padding, no input-sized term per offset): the padded position
    ``p = q * stride + rho`` (``0 <= rho < stride`` per dim) receives from the window offsets
    ``off = rho + t * stride < window``, from output ``j = q - t``. So each residue class
    ``rho`` is a sum of output-sized arrays shifted by ``t``; the classes are then interleaved
    with one reshape.
    """
    ct = _compute_dtype(x.dtype)
    xp = _pad_input(x.astype(ct), cfg)
    floor = _d_floor(ct)
    scale = g.astype(ct) / s
    zero = jnp.zeros((), ct)
    padded = xp.shape[1:-1]
    classes = tuple(-(-p // st) for p, st in zip(padded, cfg.strides))  # Q = ceil(P / stride)
    batch, feat = xp.shape[0], xp.shape[-1]
    phase_sums = {}
    for off in _offsets(cfg):
        d = _shifted(_offset_slice(xp, cfg, off), m, floor)
        c = scale * jnp.exp(d) * (1.0 + d - r)
        rho = tuple(o_ % st for o_, st in zip(off, cfg.strides))
        # Class array index q = j + t: shift by t = off // stride, fill to Q (crop if negative).
        config = [(0, 0, 0)]
        for o_, o, st, q in zip(off, cfg.out_spatial, cfg.strides, classes):
            t = o_ // st
            config.append((t, q - o - t, 0))
        config.append((0, 0, 0))
        term = lax.pad(c, zero, config)
        phase_sums[rho] = term if rho not in phase_sums else phase_sums[rho] + term
    empty = jnp.zeros((batch, *classes, feat), ct)
    # Interleave: (N, Q1, s1, Q2, s2, ..., C) -> (N, Q1 * s1, Q2 * s2, ..., C).
    n = len(cfg.window)
    stacked = jnp.stack(
        [
            phase_sums.get(rho, empty)
            for rho in itertools.product(*(range(st) for st in cfg.strides))
        ],
        axis=-2,
    ).reshape(batch, *classes, *cfg.strides, feat)
    perm = [0]
    for d in range(n):
        perm += [1 + d, 1 + n + d]
    perm.append(2 * n + 1)
    gp = stacked.transpose(perm).reshape(
        batch, *(q * st for q, st in zip(classes, cfg.strides)), feat
    )
    if gp.shape[1:-1] != padded:
        gp = lax.slice(gp, (0,) * gp.ndim, (batch, *padded, feat))
    return _unpad(gp, cfg).astype(x.dtype)


# ----------------------------------------------------------------------------------------------
# Dispatch and custom VJP
# ----------------------------------------------------------------------------------------------

#: Block pooling with more window offsets than this reduces a reshaped view instead of
#: unrolling one strided slice per offset (keeps the traced program small for big windows).
_MAX_UNROLLED_OFFSETS = 64


def _primal_stats(x: jax.Array, cfg: _Config):
    """Inference path: strided slices (XLA fuses them into two passes over ``x``)."""
    if _is_block(cfg) and int(np.prod(cfg.window)) > _MAX_UNROLLED_OFFSETS:
        return _block_stats(x, cfg)
    return _general_stats(x, cfg)


def _training_stats(x: jax.Array, cfg: _Config):
    """Differentiated path: for block pooling the reshaped view, which lets XLA fuse forward
    and backward without materialising the per-offset exponentials."""
    return _block_stats(x, cfg) if _is_block(cfg) else _general_stats(x, cfg)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _soft_pool(x: jax.Array, cfg: _Config) -> jax.Array:
    m, _, r = _primal_stats(x, cfg)
    return (m + r).astype(x.dtype)


def _soft_pool_fwd(x: jax.Array, cfg: _Config):
    m, s, r = _training_stats(x, cfg)
    return (m + r).astype(x.dtype), (x, m, s, r)


def _soft_pool_bwd(cfg: _Config, res, g: jax.Array):
    x, m, s, r = res
    backward = _block_backward if _is_block(cfg) else _general_backward
    return (backward(x, cfg, m, s, r, g),)


_soft_pool.defvjp(_soft_pool_fwd, _soft_pool_bwd)


def soft_pool(
    x: jax.Array,
    window_shape: int | Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
) -> jax.Array:
    """SoftPool: softmax-weighted average of each pooling window (paper Eq. 1-2).

    ``out = sum_{i in R} w_i a_i`` with ``w_i = exp(a_i) / sum_{j in R} exp(a_j)``, computed
    with a per-window max shift (exact and overflow-free for any finite input). The gradient is
    exact: ``d out / d a_i = w_i (1 + a_i - out)`` (a custom VJP that stores no per-window
    weights; see the module docstring). Same calling convention as ``flax.linen.max_pool``.

    Args:
      x: ``(batch, *spatial, features)`` with 1, 2 or 3 spatial dims; float16, bfloat16,
        float32 or float64.
      window_shape: window size, an int or one int per spatial dim.
      strides: step between windows, an int or one int per spatial dim; default ``1`` per dim
        (as ``flax.linen.max_pool``; pass ``strides=window_shape`` for non-overlapping pooling).
      padding: ``"VALID"`` (default), ``"SAME"`` (output ``ceil(size / stride)``), an int, or
        ``(lo, hi)`` pairs per spatial dim. Padded positions get zero weight.

    Returns:
      ``(batch, *out_spatial, features)`` with ``out = (size + lo + hi - window) // stride + 1``
      per spatial dim, same dtype as ``x`` (fp16/bf16 are computed in float32 internally).

    Raises:
      TypeError: ``x`` is not a floating array.
      ValueError: wrong rank, bad window/stride/padding, window larger than the padded input,
        or a window that would contain only padding.

    Example:
      >>> x = jnp.array([[[0.0], [1.0], [2.0], [3.0]]])  # (1, 4, 1)
      >>> soft_pool(x, (2,), strides=(2,))[0, :, 0]  # e.g. (0 + e) / (1 + e) = 0.731
      Array([0.7310586, 2.7310586], dtype=float32)
    """
    cfg = _resolve(x, window_shape, strides, padding)
    return _soft_pool(x, cfg)

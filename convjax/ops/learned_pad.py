"""Learned padding: the Padding Module of Alrasheedi, Zhong & Huang (2023), as pure functions.

A small linear filter (with bias) predicts a border line of a feature map from the ``depth``
lines just inside it, over a window of ``width`` positions along the edge ("multi-channel
linear prediction of edge pixels"). It is trained with a local self-supervised loss and then
applied one step further out to pad.

Notation for one side (after orienting the map so the side is "row 0", see below): ``l_0`` is
the line to predict, ``l_1 .. l_depth`` the lines inside it, ``j`` the position along the edge
and ``o`` the offset within the along-edge window (replicate-extended at the edge ends)::

    l_0[j, c] = b[c] + sum_{k=1..depth} sum_o  w[k-1, o, c]        * l_k[j + o, c]   (depthwise)
    l_0[j, d] = b[d] + sum_{k=1..depth} sum_o  sum_c w[k-1, o, c, d] * l_k[j + o, c]  (full)

* :func:`padding_loss` -- mean squared error between that prediction and the true outermost
  ring of ``x`` (row 0, row H-1, column 0, column W-1, ...): the ground truth and the predictor
  input are both taken from ``x`` itself.
* :func:`learned_pad` -- applies the same prediction outside the map: the new line is predicted
  from the current outermost ``depth`` lines, prepended, and becomes context for the next one
  (repeatedly for ``pad > 1``).
* :func:`learned_pad_and_loss` -- both at once with the separation of the paper built in:
  padding uses ``stop_gradient(params)`` (the task loss never moves them, gradients still flow
  into ``x``), the loss uses ``stop_gradient(x)`` (it never moves anything before the module).

Orientation. A side is brought to "row 0" (the low end of the first spatial axis, with the
inward direction along +axis) by a rotation in the plane of the first spatial axis and its own
axis: identity for the low side of axis 0, 180 degrees for its high side, and -90 / +90 degrees
(``jnp.rot90`` with ``k=-1`` / ``k=1``) for the low / high side of axis ``d > 0``. With
``shared=True`` one filter serves all ``2 * n`` sides (the paper's "rotate the map" default);
with ``shared=False`` each side has its own (index ``2 * d`` low, ``2 * d + 1`` high). In 1-D
the high side is a flip.

Corners (and edges in 3-D). Spatial dims are padded in order, 0 first; the two sides of a
dim are predicted from the map as it was before that dim was padded. While padding dim
``d`` the context lines already contain the padding of dims ``< d``, so each corner value is
predicted from already padded lines. With the replicate initialisation the module therefore
reproduces ``numpy.pad(mode="edge")`` exactly, corners included; with the linear extrapolation
filter ``2 l_1 - l_2`` it extends any affine function exactly, corners included.

Small maps. Only as many context lines as exist are used (the first kernel lines): a map with
``s`` lines along a dim pads with ``min(depth, s)`` lines of context and contributes to the loss
with ``min(depth, s - 1)`` lines (nothing when ``s == 1``).

Parameters are a dict ``{"kernel", "bias"}``:
  kernel ``(sides, depth, *(width,) * (n - 1), C)`` (depthwise) or
  ``(sides, depth, *(width,) * (n - 1), C, C)`` (full), bias ``(sides, C)``, with
  ``sides = 1`` if shared else ``2 * n``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from convjax._checks import (
    check_choice,
    check_floating,
    check_positive,
    check_spatial_rank,
    normalize_pad_width,
)
from convjax.ops.layout import conv_dimension_numbers
from convjax.ops.pad import PadWidth

PadParams = dict[str, jax.Array]

#: Channel mixing of the padding filter.
MIXINGS = ("depthwise", "full")
#: Initial filters: ``"replicate"`` copies the nearest line (starts as replicate padding),
#: ``"zero"`` predicts 0 (starts as zero padding), ``"linear"`` is the exact linear
#: extrapolation ``2 l_1 - l_2`` (needs ``depth >= 2``).
PAD_INITS = ("replicate", "zero", "linear")


def init_padding_params(
    features: int,
    num_spatial_dims: int = 2,
    *,
    depth: int = 2,
    width: int = 3,
    mixing: str = "depthwise",
    shared: bool = True,
    init: str = "replicate",
    dtype: jnp.dtype = jnp.float32,
) -> PadParams:
    """Create the padding filter parameters (deterministic; no key needed).

    Args:
      features: channels ``C`` of the maps to pad.
      num_spatial_dims: 1, 2 or 3.
      depth: context lines used to predict a border line (>= 1).
      width: window along the edge (>= 1; odd keeps it centred).
      mixing: ``"depthwise"`` (per channel) or ``"full"`` (all channels -> each channel).
      shared: one filter for all sides (by rotation) or one per side.
      init: one of :data:`PAD_INITS`.
      dtype: parameter dtype (float32 by default).

    Returns:
      ``{"kernel": (sides, depth, *(width,)*(n-1), C[, C]), "bias": (sides, C)}``.

    Example:
      >>> p = init_padding_params(3, 2)
      >>> p["kernel"].shape, p["bias"].shape
      ((1, 2, 3, 3), (1, 3))
    """
    check_positive(features, "features")
    check_positive(depth, "depth")
    check_positive(width, "width")
    check_choice(num_spatial_dims, (1, 2, 3), "num_spatial_dims")
    check_choice(mixing, MIXINGS, "mixing")
    check_choice(init, PAD_INITS, "init")
    if init == "linear" and depth < 2:
        raise ValueError(f"`init`='linear' needs `depth` >= 2, got depth={depth}.")
    n = num_spatial_dims
    sides = 1 if shared else 2 * n
    window = (width,) * (n - 1)
    centre = tuple(w // 2 for w in window)
    taps = np.zeros((depth, *window), np.float32)
    if init == "replicate":
        taps[(0, *centre)] = 1.0
    elif init == "linear":
        taps[(0, *centre)] = 2.0
        taps[(1, *centre)] = -1.0
    if mixing == "depthwise":
        kernel = np.broadcast_to(taps[..., None], (*taps.shape, features))
    else:
        kernel = taps[..., None, None] * np.eye(features, dtype=np.float32)
    kernel = np.broadcast_to(kernel[None], (sides, *kernel.shape))
    return {
        "kernel": jnp.asarray(kernel, dtype),
        "bias": jnp.zeros((sides, features), dtype),
    }


def _check_params(params: PadParams, x: jax.Array, name: str = "params") -> tuple[str, int]:
    """Validate ``params`` against ``x``; return ``(mixing, width)``."""
    n = x.ndim - 2
    c = x.shape[-1]
    if not isinstance(params, Mapping) or set(params) != {"kernel", "bias"}:
        raise TypeError(
            f"`{name}` must be a dict with keys 'kernel' and 'bias' (see init_padding_params), "
            f"got {type(params).__name__}"
            + (f" with keys {sorted(params)}" if isinstance(params, Mapping) else "")
            + "."
        )
    kernel, bias = params["kernel"], params["bias"]
    k_rank = kernel.ndim
    if k_rank == n + 2:
        mixing = "depthwise"
        ok = kernel.shape[-1] == c
    elif k_rank == n + 3:
        mixing = "full"
        ok = kernel.shape[-2:] == (c, c)
    else:
        mixing, ok = "", False
    sides = kernel.shape[0] if k_rank else 0
    ok = ok and sides in (1, 2 * n) and bias.shape == (sides, c)
    window = kernel.shape[2 : 2 + n - 1] if ok else ()
    if ok and len(set(window)) > 1:
        ok = False
    if not ok:
        raise ValueError(
            f"`{name}` do not fit x of shape {tuple(x.shape)} ({n} spatial dims, {c} "
            f"features): expected kernel (1 or {2 * n}, depth, *(width,)*{n - 1}, {c}[, {c}]) "
            f"and bias (sides, {c}), got kernel {tuple(kernel.shape)} and bias "
            f"{tuple(bias.shape)}."
        )
    return mixing, (window[0] if window else 1)


def _rotation(n: int, d: int, high: bool) -> tuple[int, tuple[int, int]] | None:
    """(k, axes) of the rot90 bringing side (d, high) to row 0; None = identity / 1-D flip."""
    if d == 0:
        if not high:
            return None
        return (2, (1, 2)) if n >= 2 else None
    return (1 if high else -1), (1, 1 + d)


def _orient(x: jax.Array, d: int, high: bool) -> jax.Array:
    n = x.ndim - 2
    if n == 1:
        return jnp.flip(x, 1) if high else x
    rot = _rotation(n, d, high)
    return x if rot is None else jnp.rot90(x, k=rot[0], axes=rot[1])


def _unorient(x: jax.Array, d: int, high: bool) -> jax.Array:
    n = x.ndim - 2
    if n == 1:
        return jnp.flip(x, 1) if high else x
    rot = _rotation(n, d, high)
    return x if rot is None else jnp.rot90(x, k=-rot[0], axes=rot[1])


def _band(x: jax.Array, d: int, high: bool, lines: int) -> jax.Array:
    """The (at most) ``lines`` outermost lines of ``x`` on side ``(d, high)``, unoriented.

    Orienting only this thin band (not the whole map) keeps padding cheap: no full-map
    transposes, just the border slabs.
    """
    size = x.shape[1 + d]
    lines = min(lines, size)
    start = size - lines if high else 0
    return jax.lax.slice_in_dim(x, start, start + lines, axis=1 + d)


def _front(x: jax.Array, d: int, high: bool, lines: int) -> jax.Array:
    """The outermost ``lines`` lines of side ``(d, high)``, oriented (border line first)."""
    return _orient(_band(x, d, high, lines), d, high)


def _can_stack_sides(params: PadParams, mixing: str) -> bool:
    # A batched (per-side) full-mixing kernel would turn the edge conv into a grouped conv,
    # which XLA:CPU runs slowly; those sides are computed one by one instead.
    return params["kernel"].shape[0] == 1 or mixing == "depthwise"


def _vmap_sides(params: PadParams, d: int, fn):
    """``fn(kernel, bias, stacked, *static)`` mapped over the two sides (low, high) of dim d."""
    kernel, bias = params["kernel"], params["bias"]

    def run(stacked: jax.Array, *static) -> jax.Array:
        bound = lambda k, b, x: fn(k, b, x, *static)
        if kernel.shape[0] == 1:
            return jax.vmap(bound, in_axes=(None, None, 0))(kernel[0], bias[0], stacked)
        pair = slice(2 * d, 2 * d + 2)
        return jax.vmap(bound)(kernel[pair], bias[pair], stacked)

    return run


def _extrapolate(
    kernel: jax.Array,
    bias: jax.Array,
    front: jax.Array,
    amount: int,
    mixing: str,
    width: int,
    depth: int,
) -> jax.Array:
    """``amount`` new lines before the oriented ``front``; returned outermost first."""
    new_lines = []
    for _ in range(amount):
        line = _predict_line(kernel, bias, front, mixing, width)[:, None]
        new_lines.append(line)
        front = jnp.concatenate([line, front], axis=1)[:, :depth]
    return jnp.concatenate(new_lines[::-1], axis=1)


def _ring_sq_error(
    kernel: jax.Array, bias: jax.Array, band: jax.Array, mixing: str, width: int
) -> jax.Array:
    """Sum of squared errors predicting line 0 of the oriented ``band`` from lines 1.."""
    pred = _predict_line(kernel, bias, band[:, 1:], mixing, width)
    err = pred - band[:, 0]
    return jnp.sum(err * err)


def _side_params(params: PadParams, side: int) -> tuple[jax.Array, jax.Array]:
    kernel, bias = params["kernel"], params["bias"]
    s = 0 if kernel.shape[0] == 1 else side
    return kernel[s], bias[s]


def _predict_line(
    kernel: jax.Array, bias: jax.Array, context: jax.Array, mixing: str, width: int
) -> jax.Array:
    """Predict the line before ``context[:, 0]``.

    ``context``: ``(N, k, *edge, C)``, line 0 nearest to the predicted line, ``k <= depth``.
    Returns ``(N, *edge, C_out)``.
    """
    k = context.shape[1]
    edge_rank = context.ndim - 3
    kernel = kernel[:k].astype(context.dtype)
    bias = bias.astype(context.dtype)
    lo = (width - 1) // 2
    hi = width - 1 - lo
    if edge_rank and width > 1:
        context = jnp.pad(context, ((0, 0), (0, 0), *((lo, hi),) * edge_rank, (0, 0)), mode="edge")
    if edge_rank == 0:  # 1-D maps: the edge is a single point
        eq = "nkc,kc->nc" if mixing == "depthwise" else "nkc,kcd->nd"
        return jnp.einsum(eq, context, kernel) + bias
    if mixing == "depthwise":
        # per-channel multiply-adds of shifted lines: one fused elementwise loop (a grouped
        # conv with feature_group_count=C is far slower, especially its backward on CPU)
        edge = tuple(context.shape[2 + i] - (width - 1) for i in range(edge_rank))
        shifted = [
            context[(slice(None), slice(None), *(slice(o, o + e) for o, e in zip(off, edge)))]
            for off in itertools.product(range(width), repeat=edge_rank)
        ]
        patches = jnp.stack(shifted, axis=2)  # (N, k, P, *edge, C)
        w = kernel.reshape(k, len(shifted), *(1,) * edge_rank, kernel.shape[-1])
        out = jnp.sum(patches * w, axis=(1, 2))
        return out + bias
    # full mixing: a "VALID" conv along the edge, the k context lines stacked as channels
    c = context.shape[-1]
    dims = conv_dimension_numbers(edge_rank)
    perm = (0, *range(2, 2 + edge_rank))
    lhs = context.transpose(*perm, 1, 2 + edge_rank)  # (N, *edge, k, C)
    lhs = lhs.reshape(*lhs.shape[:-2], k * c)
    rhs = jnp.moveaxis(kernel, 0, -3)  # (*win, k, C, D)
    rhs = rhs.reshape(*rhs.shape[:-3], k * c, rhs.shape[-1])
    out = jax.lax.conv_general_dilated(lhs, rhs, (1,) * edge_rank, "VALID", dimension_numbers=dims)
    return out + bias


def learned_pad(params: PadParams, x: jax.Array, pad: PadWidth) -> jax.Array:
    """Pad the spatial dims of ``x`` with content predicted outward by the padding filter.

    Gradients flow into both ``params`` and ``x``; the modules call it with
    ``stop_gradient(params)`` (see :func:`learned_pad_and_loss`).

    Args:
      params: from :func:`init_padding_params` (or trained), matching ``x``'s features/rank.
      x: ``(N, *spatial, C)`` float, 1 to 3 spatial dims.
      pad: int, one int per spatial dim, or ``(lo, hi)`` per spatial dim; any size (each new
        line becomes context for the next).

    Returns:
      ``(N, *(s + lo + hi), C)`` in ``x``'s dtype; the interior equals ``x`` exactly.

    Example:
      >>> x = jnp.arange(5.0).reshape(1, 5, 1)
      >>> p = init_padding_params(1, 1, init="linear")
      >>> learned_pad(p, x, 2)[0, :, 0]
      Array([-2., -1.,  0.,  1.,  2.,  3.,  4.,  5.,  6.], dtype=float32)
    """
    n = check_spatial_rank(x, "x")
    check_floating(x, "x")
    mixing, width = _check_params(params, x)
    pairs = normalize_pad_width(pad, n, "pad")
    for d, (size, (lo, hi)) in enumerate(zip(x.shape[1:-1], pairs)):
        if (lo or hi) and size < 1:
            raise ValueError(f"cannot learn-pad the empty spatial dim {d} of x {tuple(x.shape)}.")
    depth = params["kernel"].shape[1]
    out = x
    for d, (lo, hi) in enumerate(pairs):
        if lo == 0 and hi == 0:
            continue
        if lo == hi and _can_stack_sides(params, mixing):
            # both sides of the dim in one batched computation (fewer ops to compile and run)
            fronts = jnp.stack([_front(out, d, False, depth), _front(out, d, True, depth)])
            blocks = _vmap_sides(params, d, _extrapolate)(fronts, lo, mixing, width, depth)
            block_lo, block_hi = blocks[0], blocks[1]
        else:
            block_lo = block_hi = None
            for high, amount in ((False, lo), (True, hi)):
                if amount:
                    kernel, bias = _side_params(params, 2 * d + int(high))
                    front = _front(out, d, high, depth)
                    block = _extrapolate(kernel, bias, front, amount, mixing, width, depth)
                    block_lo, block_hi = (block_lo, block) if high else (block, block_hi)
        parts = []
        if block_lo is not None:
            parts.append(_unorient(block_lo, d, False))
        parts.append(out)
        if block_hi is not None:
            parts.append(_unorient(block_hi, d, True))
        out = jnp.concatenate(parts, axis=1 + d)
    return out


def padding_loss(params: PadParams, x: jax.Array) -> jax.Array:
    """Self-supervised padding loss: MSE of predicting the outermost ring of ``x`` from inside.

    For every side of every spatial dim, the border line (``x[:, 0]``, ``x[:, -1]``, ...) is the
    ground truth and the ``depth`` lines inside it are the predictor input (:func:`learned_pad`
    uses the same prediction one step further out). The loss is the sum of squared errors
    over all predicted ring elements divided by their count (corner elements belong to two
    rings). Computed in float32 whatever ``x``'s dtype. ``x`` is NOT stop-gradient-ed here; use
    :func:`learned_pad_and_loss` (or pass ``stop_gradient(x)``) inside a network.

    Args:
      params: padding parameters matching ``x``.
      x: ``(N, *spatial, C)`` float.

    Returns:
      float32 scalar (0.0 when every spatial dim has a single line, so nothing to predict).

    Example:
      >>> x = jnp.broadcast_to(jnp.arange(6.0)[:, None], (6, 4))[None, ..., None]
      >>> float(padding_loss(init_padding_params(1, 2, init="linear"), x))
      0.0
    """
    n = check_spatial_rank(x, "x")
    check_floating(x, "x")
    mixing, width = _check_params(params, x)
    depth = params["kernel"].shape[1]
    xf = x.astype(jnp.float32)
    pf = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    total = jnp.zeros((), jnp.float32)
    count = 0
    # Every side whose oriented band has the same shape (all four sides of a square map) is
    # predicted in ONE batched computation: fewer, larger kernels in the forward and backward
    # pass than one computation per dim (the Padding Module's loss runs after every conv).
    groups: dict[tuple[int, ...], list[tuple[int, jax.Array]]] = {}
    for d in range(n):
        k = min(depth, x.shape[1 + d] - 1)
        if k < 1:
            continue
        for high in (False, True):
            band = _front(xf, d, high, k + 1)
            groups.setdefault(band.shape, []).append((2 * d + int(high), band))
    stack = _can_stack_sides(pf, mixing)
    for shape, members in groups.items():
        count += len(members) * int(np.prod(shape)) // shape[1]
        if not stack:
            for side, band in members:
                kernel, bias = _side_params(pf, side)
                total = total + _ring_sq_error(kernel, bias, band, mixing, width)
            continue
        bands = jnp.stack([band for _, band in members])
        fn = lambda kern, b, band: _ring_sq_error(kern, b, band, mixing, width)
        if pf["kernel"].shape[0] == 1:
            sq = jax.vmap(fn, in_axes=(None, None, 0))(pf["kernel"][0], pf["bias"][0], bands)
        else:
            sides = np.asarray([side for side, _ in members])
            sq = jax.vmap(fn)(pf["kernel"][sides], pf["bias"][sides], bands)
        total = total + jnp.sum(sq)
    if count == 0:
        return total
    return total / count


def learned_pad_and_loss(
    params: PadParams, x: jax.Array, pad: PadWidth
) -> tuple[jax.Array, jax.Array]:
    """Pad for the task and compute the padding loss, separated by construction.

    ``padded = learned_pad(stop_gradient(params), x, pad)`` -- the task loss never moves the
    padding parameters but its gradient flows through the padded values into ``x``;
    ``loss = padding_loss(params, stop_gradient(x))`` -- the padding loss moves only
    ``params``. So ``grad(task(padded) + loss)`` splits exactly into the two.

    Returns:
      ``(padded, loss)``: ``(N, *(s + lo + hi), C)`` in ``x``'s dtype and a float32 scalar.

    Example:
      >>> p = init_padding_params(3, 2)
      >>> y, loss = learned_pad_and_loss(p, jnp.ones((2, 8, 8, 3)), 1)
      >>> y.shape, loss.shape
      ((2, 10, 10, 3), ())
    """
    padded = learned_pad(jax.lax.stop_gradient(params), x, pad)
    loss = padding_loss(params, jax.lax.stop_gradient(x))
    return padded, loss

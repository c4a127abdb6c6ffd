"""Argument checks shared by every convjax layer: the package's ground floor (private).

Used by ``ops``, ``nnx``, ``linen``, ``models``, ``train`` and ``data`` alike; it imports
nothing from convjax (the padding type aliases :data:`PadWidth` and :data:`PaddingLike` are
defined here and re-exported by :mod:`convjax.ops.pad`), so every layer may import it.

All checks run on static information (shapes, dtypes, Python values), so under ``jax.jit``
they run once at trace time and cost nothing per step. Each failure is a ``ValueError`` or
``TypeError`` whose message names the argument, the value received and what was expected.

Conventions (channels-last, as Flax):
  arrays are ``(batch, *spatial, features)``; window/stride arguments are an int (same for
  every spatial dim) or a tuple with one entry per spatial dim; padding is ``"VALID"``,
  ``"SAME"`` or explicit ``((lo, hi), ...)`` pairs per spatial dim, as in
  ``flax.linen.max_pool``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

#: A padding amount: an int (every side), one int per spatial dim, or ``(lo, hi)`` per dim.
PadWidth = int | Sequence[int] | Sequence[tuple[int, int]]
#: A conv/pool padding argument: ``"SAME"``, ``"VALID"`` or a :data:`PadWidth`.
PaddingLike = str | PadWidth


def check_floating(x: Any, name: str = "x") -> None:
    """Raise ``TypeError`` unless ``x`` has a floating dtype (fp16/bf16/fp32/fp64).

    Example:
      >>> check_floating(jnp.zeros((1, 4, 4, 1)))
    """
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        raise TypeError(f"`{name}` must be an array with a floating dtype, got {type(x).__name__}.")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"`{name}` must have a floating dtype (float16, bfloat16, float32, float64), "
            f"got {dtype}. Cast it first, e.g. `{name}.astype(jnp.float32)`."
        )


def check_spatial_rank(
    x: Any, name: str = "x", *, min_spatial: int = 1, max_spatial: int = 3
) -> int:
    """Check ``x`` is ``(batch, *spatial, features)`` and return the number of spatial dims.

    Example:
      >>> check_spatial_rank(jnp.zeros((2, 8, 8, 3)))
      2
    """
    ndim = getattr(x, "ndim", None)
    if ndim is None:
        raise TypeError(f"`{name}` must be an array, got {type(x).__name__}.")
    n = ndim - 2
    if not min_spatial <= n <= max_spatial:
        dims = f"{min_spatial}" if min_spatial == max_spatial else f"{min_spatial} to {max_spatial}"
        raise ValueError(
            f"`{name}` must have shape (batch, *spatial, features) with {dims} spatial dims "
            f"(rank {min_spatial + 2}"
            + ("" if min_spatial == max_spatial else f"-{max_spatial + 2}")
            + f"), got shape {tuple(x.shape)} (rank {ndim})."
        )
    return n


def normalize_tuple(
    value: int | Sequence[int] | None,
    n: int,
    name: str,
    *,
    minimum: int = 1,
    default: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """Turn an int or a length-``n`` sequence of ints into a tuple, each ``>= minimum``.

    ``None`` returns ``default`` (which must then be given).

    Example:
      >>> normalize_tuple(3, 2, "window_shape")
      (3, 3)
    """
    if value is None:
        if default is None:
            raise ValueError(f"`{name}` must be given.")
        value = default
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        out = (int(value),) * n
    else:
        try:
            out = tuple(value)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"`{name}` must be an int or a sequence of {n} ints, got {value!r}."
            ) from None
        if len(out) != n or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in out
        ):
            raise ValueError(
                f"`{name}` must be an int or a sequence of {n} ints (one per spatial dim), "
                f"got {value!r}."
            )
        out = tuple(int(v) for v in out)
    if any(v < minimum for v in out):
        raise ValueError(f"`{name}` entries must be >= {minimum}, got {value!r}.")
    return out


def same_pads(size: int, window: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """XLA/TensorFlow ``"SAME"`` padding for one dim: output size ``ceil(size / stride)``."""
    eff = (window - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


def normalize_padding(
    padding: PaddingLike,
    spatial_shape: Sequence[int],
    window: Sequence[int],
    strides: Sequence[int],
    name: str = "padding",
    dilation: Sequence[int] | None = None,
) -> tuple[tuple[int, int], ...]:
    """Resolve ``"VALID"``, ``"SAME"``, an int, per-dim ints or per-dim pairs to explicit pairs.

    Example:
      >>> normalize_padding("SAME", (5, 5), (3, 3), (1, 1))
      ((1, 1), (1, 1))
    """
    n = len(spatial_shape)
    dilation = tuple(dilation) if dilation is not None else (1,) * n
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return ((0, 0),) * n
        if mode == "SAME":
            return tuple(
                same_pads(s, k, st, d)
                for s, k, st, d in zip(spatial_shape, window, strides, dilation)
            )
        raise ValueError(
            f"`{name}` must be 'VALID', 'SAME', an int or (lo, hi) pairs, got {padding!r}."
        )
    return normalize_pad_width(padding, n, name)  # type: ignore[arg-type]


def normalize_pad_width(
    pad_width: PadWidth, n: int, name: str = "pad_width"
) -> tuple[tuple[int, int], ...]:
    """``int`` | one int per spatial dim | ``(lo, hi)`` per spatial dim -> ``((lo, hi), ...)``.

    Example:
      >>> normalize_pad_width(1, 2)
      ((1, 1), (1, 1))
    """
    if isinstance(pad_width, (int, np.integer)) and not isinstance(pad_width, bool):
        pairs = ((int(pad_width), int(pad_width)),) * n
    else:
        try:
            items = list(pad_width)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"`{name}` must be an int, {n} ints or {n} (lo, hi) pairs, got {pad_width!r}."
            ) from None
        if len(items) != n:
            raise ValueError(
                f"`{name}` must have one entry per spatial dim ({n}), got {pad_width!r}."
            )
        out = []
        for item in items:
            if isinstance(item, (int, np.integer)):
                out.append((int(item), int(item)))
            else:
                pair = tuple(item)
                if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair):
                    raise ValueError(
                        f"`{name}` entries must be ints or (lo, hi) int pairs, got {pad_width!r}."
                    )
                out.append((int(pair[0]), int(pair[1])))
        pairs = tuple(out)
    if any(lo < 0 or hi < 0 for lo, hi in pairs):
        raise ValueError(f"`{name}` must be non-negative, got {pad_width!r}.")
    return pairs


def check_window_fits(
    spatial_shape: Sequence[int],
    window: Sequence[int],
    pads: Sequence[tuple[int, int]],
    name: str = "window_shape",
    dilation: Sequence[int] | None = None,
) -> None:
    """Raise ``ValueError`` if a window is larger than the (padded) input along any dim."""
    dilation = tuple(dilation) if dilation is not None else (1,) * len(window)
    for d, (s, k, (lo, hi), dl) in enumerate(zip(spatial_shape, window, pads, dilation)):
        eff = (k - 1) * dl + 1
        if eff > s + lo + hi:
            raise ValueError(
                f"`{name}` {tuple(window)} is larger than the padded input along spatial dim "
                f"{d}: window {eff} > size {s} + padding {lo + hi}. Use a smaller window or "
                f"more padding."
            )


def check_choice(value: Any, choices: Sequence[Any], name: str) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}.")


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` unless ``value > 0`` (or ``>= 0`` with ``allow_zero``)."""
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        cmp = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be {cmp}, got {value!r}.")


def check_unit_interval(value: float, name: str) -> None:
    """Raise ``ValueError`` unless ``0 <= value <= 1`` (momenta, rates, fractions)."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be in [0, 1], got {value!r}.")


def cast_to(dtype: Any, *arrays: Any) -> tuple[Any, ...]:
    """Cast each array (``None`` passes through) to ``dtype``; ``dtype=None`` casts nothing.

    The compute-dtype rule of every convjax module (``dtype=None``: keep the input's dtype).

    Example:
      >>> x, b = cast_to(jnp.bfloat16, jnp.ones(2), None)
      >>> x.dtype, b
      (dtype(bfloat16), None)
    """
    if dtype is None:
        return arrays
    return tuple(None if a is None else jnp.asarray(a, dtype) for a in arrays)

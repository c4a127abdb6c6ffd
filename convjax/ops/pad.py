"""Classic padding of the spatial dims of a channels-last array.

These are the baselines the learned Padding Module is compared against.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from convjax.ops.validation import check_choice, check_spatial_rank, normalize_pad_width

PAD_MODES = ("zero", "reflect", "replicate", "circular")
_JNP_MODE = {"zero": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def pad(
    x: jax.Array,
    pad_width: int | Sequence[int] | Sequence[tuple[int, int]],
    mode: str = "zero",
) -> jax.Array:
    """Pad the spatial dims of ``x`` with a classic rule.

    Args:
      x: ``(batch, *spatial, features)`` with 1 to 3 spatial dims, any dtype.
      pad_width: an int (all sides), one int per spatial dim, or ``(lo, hi)`` per spatial dim.
      mode: ``"zero"`` (constant 0), ``"reflect"`` (mirror without repeating the edge, like
        ``numpy.pad(mode="reflect")``; needs ``pad < size`` on each side), ``"replicate"``
        (repeat the edge value, ``numpy`` "edge") or ``"circular"`` (wrap around, ``numpy``
        "wrap"; needs ``pad <= size``).

    Returns:
      ``(batch, *(s + lo + hi for each spatial dim), features)``, same dtype as ``x``.
      Batch and feature dims are never padded. Gradients flow to ``x`` in every mode.

    Example:
      >>> x = jnp.arange(4.0).reshape(1, 4, 1)
      >>> pad(x, 1, "reflect")[0, :, 0]
      Array([1., 0., 1., 2., 3., 2.], dtype=float32)
    """
    check_choice(mode, PAD_MODES, "mode")
    n = check_spatial_rank(x, "x")
    pairs = normalize_pad_width(pad_width, n)
    spatial = x.shape[1:-1]
    for d, (s, (lo, hi)) in enumerate(zip(spatial, pairs)):
        if mode == "reflect" and max(lo, hi) >= s:
            raise ValueError(
                f"`pad_width` {max(lo, hi)} must be < the input size {s} along spatial dim {d} "
                f"for mode 'reflect'."
            )
        if mode == "circular" and max(lo, hi) > s:
            raise ValueError(
                f"`pad_width` {max(lo, hi)} must be <= the input size {s} along spatial dim {d} "
                f"for mode 'circular'."
            )
        if mode == "replicate" and s == 0 and (lo or hi):
            raise ValueError(f"cannot replicate-pad an empty spatial dim {d}.")
    full = ((0, 0), *pairs, (0, 0))
    if all(lo == 0 and hi == 0 for lo, hi in pairs):
        return x
    return jnp.pad(x, full, mode=_JNP_MODE[mode])

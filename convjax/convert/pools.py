"""Pooling conversion below the module level: intercept ``flax.linen.pooling.pool``.

Every Flax pooling function (``nn.max_pool``, ``nn.avg_pool``, ``nn.min_pool``; ``nnx.max_pool``
and ``nnx.avg_pool`` are the same functions) calls the module-level helper
``flax.linen.pooling.pool`` by its global name. Replacing that one global while a converted
model runs catches every pooling call, including ``functools.partial(nn.max_pool, ...)`` held
by a ``Sequential`` and convjax's own ``Pool`` block. The caller is identified from its code
object (never from names), so the window, strides and padding of the original call are kept.

``nn.avg_pool`` divides the pooled sum after ``pool`` returns (by the window size, or by a
second ``pool`` call on ones for ``count_include_pad=False``); a replacement returned in its
place is pre-multiplied by that divisor, so the result is the replacement up to one rounding
(exact for power-of-two windows). ``max -> max`` and ``avg -> avg`` call the original unchanged.

Pooling written with ``jax.lax.reduce_window`` directly (not through Flax's functions) cannot be
converted safely (a reduction over windows is not always a pooling). While a block is open,
``jax.lax.reduce_window`` is watched too, so such calls are reported (kind ``"lax"``, kept) and
never skipped silently; calls from Flax's ``pool`` and from convjax itself are not reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence

import flax.linen.pooling as flax_pooling
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from convjax.ops.soft_pool import soft_pool

_ORIGINAL_POOL = flax_pooling.pool
_MAX_CODE = flax_pooling.max_pool.__code__
_AVG_CODE = flax_pooling.avg_pool.__code__
_MIN_CODE = flax_pooling.min_pool.__code__
_ORIGINAL_REDUCE_WINDOW = jax.lax.reduce_window
_REDUCE_WINDOW_SIGNATURE = inspect.signature(_ORIGINAL_REDUCE_WINDOW)
_CONVJAX_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_LOCK = threading.RLock()
_STACK: list[Callable] = []


@dataclasses.dataclass(frozen=True)
class PoolCall:
    """One pooling call seen while a converted model ran."""

    kind: str  # "max", "avg", "min", "custom" (a direct ``pool`` call) or "lax" (reduce_window)
    window: tuple[int, ...]
    strides: tuple[int, ...]
    padding: object
    site: str  # "file.py:LINE" of the code that called the pooling function

    def describe(self) -> str:
        name = {"custom": "pool", "lax": "lax.reduce_window"}.get(self.kind, f"{self.kind}_pool")
        pad = self.padding if isinstance(self.padding, str) else tuple(map(tuple, self.padding))
        return f"{name}(window={self.window}, strides={self.strides}, padding={pad})"


def pool_by_kind(kind: str, x, window, strides, padding):
    """Pool ``x`` ``(N, *spatial, C)`` with ``kind`` ("max", "avg" or "soft").

    Window, strides (``None``: 1 per dim, as Flax) and padding as ``flax.linen.max_pool``.
    ``"avg"`` counts padded positions (``nn.avg_pool``'s default ``count_include_pad=True``);
    ``"soft"`` is SoftPool (Stergiou et al. 2021, eq. 1-2), padded positions get zero weight.
    """
    window = tuple(window)
    strides = tuple(strides) if strides else (1,) * len(window)
    if kind == "max":
        return _ORIGINAL_POOL(x, -jnp.inf, lax.max, window, strides, padding)
    if kind == "avg":
        return _ORIGINAL_POOL(x, 0.0, lax.add, window, strides, padding) / np.prod(window)
    if kind == "soft":
        return soft_pool(x, window, strides, padding)
    raise ValueError(f"`pool` must be one of ['max', 'avg', 'soft'], got {kind!r}.")


def pool_changes(calls: Sequence[PoolCall], pool: str | None) -> list[tuple[str, str, str]]:
    """``(path, before, after)`` report lines of the pooling calls of one traced pass, for the
    switch ``pool``: max and average pools become ``pool``; the others are kept, with the reason.
    Warns (``UserWarning``) when ``pool`` is set and a ``lax.reduce_window`` call was kept.

    Example:
      >>> pool_changes([PoolCall("max", (2, 2), (2, 2), "VALID", "net.py:9")], "soft")
      [('pool[0] in net.py:9', 'max_pool(window=(2, 2), strides=(2, 2), padding=VALID)', 'soft')]
    """
    lines, direct = [], []
    for i, call in enumerate(calls):
        if call.kind in ("max", "avg"):
            after = str(pool)
        elif call.kind == "lax":
            after = "kept: lax.reduce_window called directly (write it with nn.max_pool/avg_pool)"
            direct.append(call.site)
        else:
            after = f"kept: {call.kind} pooling"
        lines.append((f"pool[{i}] in {call.site}", call.describe(), after))
    if direct and pool is not None:
        warnings.warn(
            f"convert(pool={pool!r}) keeps {len(direct)} lax.reduce_window call(s) made outside "
            f"Flax's pooling functions, at {', '.join(direct)}: write them with nn.max_pool / "
            "nn.avg_pool to convert them.",
            UserWarning,
            stacklevel=3,
        )
    return lines


def _site(frame) -> str:
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


def _hook(inputs, init, reduce_fn, window_shape, strides, padding):
    handler = _STACK[-1] if _STACK else None
    if handler is None:
        return _ORIGINAL_POOL(inputs, init, reduce_fn, window_shape, strides, padding)
    caller = sys._getframe(1)
    code = caller.f_code
    window = tuple(window_shape)
    stride = tuple(strides) if strides else (1,) * len(window)
    if code is _AVG_CODE:
        if inputs is not caller.f_locals.get("inputs"):  # the count_include_pad=False divisor
            return _ORIGINAL_POOL(inputs, init, reduce_fn, window_shape, strides, padding)
        kind, user = "avg", caller.f_back
    elif code is _MAX_CODE:
        kind, user = "max", caller.f_back
    elif code is _MIN_CODE:
        kind, user = "min", caller.f_back
    else:
        kind, user = "custom", caller
    call = PoolCall(kind, window, stride, padding, _site(user))
    target = handler(call)
    if target is None or target == kind:
        return _ORIGINAL_POOL(inputs, init, reduce_fn, window_shape, strides, padding)
    new = pool_by_kind(target, inputs, window, strides, padding)
    if kind == "avg":  # flax's avg_pool divides what we return: pre-multiply by its divisor
        if caller.f_locals.get("count_include_pad", True):
            return new * np.prod(window)
        div_shape = inputs.shape[:-1] + (1,)
        if len(div_shape) - 2 == len(window):
            div_shape = (1,) + div_shape[1:]
        return new * _ORIGINAL_POOL(jnp.ones(div_shape), 0.0, lax.add, window, strides, padding)
    return new


def _reduce_window_hook(*args, **kwargs):
    handler = _STACK[-1] if _STACK else None
    caller = sys._getframe(1)
    code = caller.f_code
    if (
        handler is not None
        and code is not _ORIGINAL_POOL.__code__
        and not code.co_filename.startswith(_CONVJAX_DIR)
    ):
        a = _REDUCE_WINDOW_SIGNATURE.bind(*args, **kwargs).arguments
        window, strides = tuple(a["window_dimensions"]), tuple(a["window_strides"])
        handler(PoolCall("lax", window, strides, a["padding"], _site(caller)))
    return _ORIGINAL_REDUCE_WINDOW(*args, **kwargs)


@contextlib.contextmanager
def intercept_pools(handler: Callable[[PoolCall], str | None]) -> Iterator[None]:
    """Within the block, every Flax pooling call asks ``handler(call)`` for its kind.

    ``handler`` returns ``"max"``, ``"avg"``, ``"soft"`` (the pool to compute instead) or
    ``None`` / the call's own kind (keep the original). Nested blocks use the innermost
    handler; the patch is process-wide while any block is open (not thread-safe by design:
    tracing a model is single-threaded).

    Example:
      >>> import flax.linen as nn
      >>> import jax.numpy as jnp
      >>> from convjax.ops import soft_pool
      >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
      >>> with intercept_pools(lambda call: "soft"):
      ...     y = nn.max_pool(x, (2, 2), (2, 2))    # SoftPool 2x2/2
      >>> bool(jnp.allclose(y, soft_pool(x, (2, 2), (2, 2))))
      True
      >>> nn.max_pool(x, (2, 2), (2, 2))[0, :, :, 0]   # outside the block: max again
      Array([[ 5.,  7.],
             [13., 15.]], dtype=float32)
    """
    with _LOCK:
        _STACK.append(handler)
        flax_pooling.pool = _hook
        jax.lax.reduce_window = _reduce_window_hook
    try:
        yield
    finally:
        with _LOCK:
            _STACK.pop()
            if not _STACK:
                flax_pooling.pool = _ORIGINAL_POOL
                jax.lax.reduce_window = _ORIGINAL_REDUCE_WINDOW

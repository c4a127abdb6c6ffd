"""Shared timing and memory helpers for ``convjax.bench`` benchmarks.

Every benchmark times compiled functions after warm-up and reports medians, always measuring
its baseline in the same process. These helpers make that uniform:

- :func:`time_fn` -- median wall time of a jitted call, synchronised with ``block_until_ready``;
- :func:`time_interleaved` -- wall times of several calls run round-robin, so a variant and
  its baseline see the same machine load;
- :func:`peak_memory_bytes` -- XLA's compile-time estimate of the memory a program allocates
  beyond its arguments (temporaries + outputs);
- :func:`residual_bytes` -- bytes that reverse-mode autodiff keeps alive between the forward
  and the backward pass;
- :func:`environment_header` -- device and library versions to print above the figures.

Example:
  >>> import jax.numpy as jnp
  >>> seconds = time_fn(lambda x: x * 2, jnp.ones((8, 8)))
  >>> print(environment_header())  # doctest: +SKIP
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

__all__ = [
    "time_fn",
    "time_interleaved",
    "peak_memory_bytes",
    "memory_stats",
    "residual_bytes",
    "environment_header",
    "format_bytes",
]


def _block(tree: Any) -> Any:
    return jax.block_until_ready(tree)


def require_bench_extra(module: str = "skimage", package: str = "scikit-image") -> None:
    """Stop at once, with the exact ``pip install`` line, when a benchmark's optional
    dependency (the ``bench`` extra) is missing, instead of failing after minutes of work.

    Example:
      >>> require_bench_extra("numpy", "numpy")  # installed: returns None
    """
    import importlib.util
    import sys

    if importlib.util.find_spec(module) is None:
        sys.exit(
            f'convjax: error: this benchmark needs {package}: run `pip install -e ".[bench]"` '
            f"in a convjax clone (or `pip install {package}`)"
        )


def time_fn(fn: Callable[..., Any], *args: Any, warmup: int = 2, repeats: int = 7) -> float:
    """Median wall-clock seconds of one call of ``jax.jit(fn)(*args)``.

    ``fn`` is jitted here (jitting an already jitted function is free), called ``warmup`` times
    so compilation and first-run effects are excluded, then timed ``repeats`` times; each call
    is synchronised with ``jax.block_until_ready`` on its whole output tree.

    Args:
      fn: a JAX-traceable function of ``args``.
      *args: arrays (or pytrees of arrays) passed positionally.
      warmup: untimed calls before timing (``>= 1`` so compilation is never timed).
      repeats: timed calls; the median is returned.

    Returns:
      The median duration in seconds (float).

    Example:
      >>> import jax.numpy as jnp
      >>> time_fn(jnp.sin, jnp.ones(16), warmup=1, repeats=3) > 0
      True
    """
    if warmup < 1:
        raise ValueError(f"`warmup` must be >= 1 so compilation is not timed, got {warmup!r}.")
    if repeats < 1:
        raise ValueError(f"`repeats` must be >= 1, got {repeats!r}.")
    jitted = jax.jit(fn)
    for _ in range(warmup):
        _block(jitted(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _block(jitted(*args))
        times.append(time.perf_counter() - start)
    return float(statistics.median(times))


def time_interleaved(
    calls: Mapping[str, Callable[[], Any]],
    *,
    warmup: int = 1,
    repeats: int = 5,
    cpu_times: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Wall-clock seconds of every call of each of ``calls``, run round-robin.

    Each callable takes no argument and returns a pytree of arrays (it may carry state
    between calls itself, e.g. a train step that feeds its new state to the next call). Every
    call is synchronised with ``jax.block_until_ready`` on its output. All callables are
    first run ``warmup`` times each (untimed), then ``repeats`` rounds each call every
    callable once in the given order, so a variant and its baseline are timed under the same
    load (important on a shared machine); take the median of each list.

    Args:
      calls: name -> zero-argument callable (already compiled: compilation is never timed
        as long as ``warmup >= 1``).
      warmup: untimed rounds before timing (``>= 1``).
      repeats: timed rounds (``>= 1``).
      cpu_times: if given, filled with name -> the CPU seconds of this process during each
        timed call (``time.process_time``; on a CPU backend that is the compute itself, far
        less sensitive than wall time to other jobs competing for the cores).

    Returns:
      name -> list of ``repeats`` wall-clock durations in seconds, in round order.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.ones(16)
      >>> t = time_interleaved({"sin": lambda: jnp.sin(x), "cos": lambda: jnp.cos(x)})
      >>> sorted(t), len(t["sin"])
      (['cos', 'sin'], 5)
    """
    if warmup < 1:
        raise ValueError(f"`warmup` must be >= 1 so compilation is not timed, got {warmup!r}.")
    if repeats < 1:
        raise ValueError(f"`repeats` must be >= 1, got {repeats!r}.")
    for _ in range(warmup):
        for call in calls.values():
            _block(call())
    times: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            _block(call())
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - cpu_start)
    if cpu_times is not None:
        cpu_times.update(cpu)
    return times


def memory_stats(fn: Callable[..., Any], *args: Any) -> dict[str, int]:
    """XLA's compile-time memory analysis of ``jax.jit(fn)(*args)``, as a dict of byte counts.

    Keys: ``argument``, ``output``, ``alias`` (outputs sharing an argument's buffer), ``temp``
    (scratch buffers live at some point during the program). Values are ``-1`` where the
    backend gives no analysis.

    Example:
      >>> import jax.numpy as jnp
      >>> memory_stats(lambda x: x * 2, jnp.ones((4, 4)))["output"]
      64
    """
    compiled = jax.jit(fn).lower(*args).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
        return {"argument": -1, "output": -1, "alias": -1, "temp": -1}
    return {
        "argument": int(analysis.argument_size_in_bytes),
        "output": int(analysis.output_size_in_bytes),
        "alias": int(analysis.alias_size_in_bytes),
        "temp": int(analysis.temp_size_in_bytes),
    }


def peak_memory_bytes(fn: Callable[..., Any], *args: Any) -> int:
    """Bytes the compiled ``jax.jit(fn)(*args)`` allocates beyond its inputs.

    What exactly this measures: ``temp_size_in_bytes + output_size_in_bytes -
    alias_size_in_bytes`` from ``jax.jit(fn).lower(*args).compile().memory_analysis()``, i.e.
    XLA's buffer-assignment total for scratch buffers plus freshly allocated outputs. It is a
    compile-time figure (nothing is run), it excludes the arguments (identical for every method
    compared on the same inputs), and ``temp`` is the size of XLA's temporary allocation, which
    is an upper bound on the scratch memory live at any one time (buffers with disjoint
    lifetimes may share it). Returns ``-1`` when the backend provides no analysis.

    Example:
      >>> import jax.numpy as jnp
      >>> peak_memory_bytes(lambda x: x * 2, jnp.ones((4, 4)))
      64
    """
    stats = memory_stats(fn, *args)
    if stats["temp"] < 0:
        return -1
    return stats["temp"] + stats["output"] - stats["alias"]


def residual_bytes(fn: Callable[..., Any], *args: Any) -> int:
    """Bytes reverse-mode autodiff keeps from the forward pass of ``fn`` for its backward pass.

    Sums the sizes of the leaves of the VJP closure returned by ``jax.vjp(fn, *args)``
    (computed abstractly with ``jax.eval_shape``; nothing runs). This counts every residual,
    including inputs the backward pass re-reads (those are alive anyway, but are counted here).
    This is the memory a training step holds per layer between forward and backward; under
    ``jit`` XLA may still fuse or rematerialise, so it is the autodiff-level figure.

    Example:
      >>> import jax.numpy as jnp
      >>> residual_bytes(lambda x: jnp.sum(x * x), jnp.ones((4, 4)))
      64
    """

    def residuals(*a: Any) -> list[Any]:
        _, vjp_fn = jax.vjp(fn, *a)
        return jax.tree_util.tree_leaves(vjp_fn)

    shapes = jax.eval_shape(residuals, *args)
    return int(sum(int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize for s in shapes))


def format_bytes(n: int) -> str:
    """Human-readable byte count, e.g. ``format_bytes(3 * 2**20) == '3.00 MiB'``."""
    if n < 0:
        return "n/a"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"


def environment_header() -> str:
    """One block of text naming the device and library versions, to print above results.

    Example:
      >>> "jax" in environment_header()
      True
    """
    import flax
    import jaxlib

    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    lines = [
        f"device: {jax.default_backend()} x{len(devices)} ({', '.join(kinds)}), "
        f"host: {platform.machine()} {os.cpu_count()} cpu cores",
        f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, flax {flax.__version__}, "
        f"numpy {np.__version__}, python {platform.python_version()}",
    ]
    return "\n".join(lines)

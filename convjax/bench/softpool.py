"""Speed and memory of SoftPool against max-pool, avg-pool and the naive SoftPool formula.

Run ``python -m convjax.bench.softpool`` (``--quick`` for smaller shapes). For each shape it
measures, in the same process and on the same input:

- ``fwd``: the jitted forward pass; ``fwd+bwd``: ``jax.grad`` of ``sum(pool(x))`` (forward and
  backward in one compiled program); wall time after warm-up
  (:func:`convjax.bench.timing.time_fn`), methods interleaved round by round, median over
  rounds (robust to the load of a shared machine changing over time);
- ``mem``: :func:`convjax.bench.timing.peak_memory_bytes` of the fwd+bwd program (XLA's
  compile-time temporaries + outputs, arguments excluded);
- ``res``: :func:`convjax.bench.timing.residual_bytes`, what autodiff keeps from the forward
  pass for the backward pass (input included).

Methods: ``soft`` = :func:`convjax.ops.soft_pool`; ``max``/``avg`` = ``flax.linen.max_pool`` /
``avg_pool``; ``naive`` = ``avg_pool(x * exp(x)) / avg_pool(exp(x))`` written in JAX (the
official code's formula: it overflows above ~88 in fp32, which is checked and printed).

Ratios are printed first (soft time / baseline time; < 1 means SoftPool is faster), then the
absolute figures and the environment. A bar plot of the fwd+bwd times goes to ``--out``.
The benchmark never asserts.
"""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from convjax.bench.timing import (
    environment_header,
    format_bytes,
    peak_memory_bytes,
    residual_bytes,
    time_fn,
)
from convjax.ops.soft_pool import soft_pool

METHODS = ("soft", "max", "avg", "naive")

#: (label, input shape, window, strides, padding)
FULL_CASES = [
    ("2d 64x56x56x64 k2s2", (64, 56, 56, 64), (2, 2), (2, 2), "VALID"),
    ("2d 128x32x32x128 k2s2", (128, 32, 32, 128), (2, 2), (2, 2), "VALID"),
    ("2d 64x56x56x64 k3s2 SAME", (64, 56, 56, 64), (3, 3), (2, 2), "SAME"),
    ("3d 8x16x56x56x32 k2s2", (8, 16, 56, 56, 32), (2, 2, 2), (2, 2, 2), "VALID"),
]
QUICK_CASES = [
    ("2d 16x56x56x64 k2s2", (16, 56, 56, 64), (2, 2), (2, 2), "VALID"),
    ("2d 32x32x32x128 k2s2", (32, 32, 32, 128), (2, 2), (2, 2), "VALID"),
    ("2d 16x56x56x64 k3s2 SAME", (16, 56, 56, 64), (3, 3), (2, 2), "SAME"),
    ("3d 4x8x28x28x32 k2s2", (4, 8, 28, 28, 32), (2, 2, 2), (2, 2, 2), "VALID"),
]


def make_pool(method: str, window, strides, padding) -> Callable[[jax.Array], jax.Array]:
    """The pooling function ``x -> y`` for one method and configuration."""
    if method == "soft":
        return lambda x: soft_pool(x, window, strides, padding)
    if method == "max":
        return lambda x: nn.max_pool(x, window, strides, padding)
    if method == "avg":
        return lambda x: nn.avg_pool(x, window, strides, padding)
    if method == "naive":

        def naive(x):
            e = jnp.exp(x)
            return nn.avg_pool(x * e, window, strides, padding) / nn.avg_pool(
                e, window, strides, padding
            )

        return naive
    raise ValueError(f"`method` must be one of {list(METHODS)}, got {method!r}.")


def fwd_bwd(pool: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
    """Gradient of ``sum(pool(x))``: the forward and backward pass in one program."""
    return jax.grad(lambda x: jnp.sum(pool(x).astype(jnp.float32)))


def run_case(case, dtype, rounds: int, repeats: int) -> dict[str, dict[str, float]]:
    """Time every method on one shape, interleaving the methods round by round.

    Each round times every method (``time_fn``: 1 warm-up call, median of ``repeats`` calls);
    the figure reported is the median over ``rounds`` rounds. Interleaving makes the ratios
    robust to load that changes over time on a shared machine.
    """
    label, shape, window, strides, padding = case
    x = jax.random.normal(jax.random.key(0), shape, dtype)
    pools = {m: make_pool(m, window, strides, padding) for m in METHODS}
    grads = {m: fwd_bwd(p) for m, p in pools.items()}
    fwd = {m: [] for m in METHODS}
    fb = {m: [] for m in METHODS}
    for m in METHODS:  # compile everything before timing anything
        jax.block_until_ready(jax.jit(pools[m])(x))
        jax.block_until_ready(jax.jit(grads[m])(x))
    for _ in range(rounds):
        for m in METHODS:
            fwd[m].append(time_fn(pools[m], x, warmup=1, repeats=repeats))
            fb[m].append(time_fn(grads[m], x, warmup=1, repeats=repeats))
    return {
        m: {
            "fwd": float(np.median(fwd[m])),
            "fwd_bwd": float(np.median(fb[m])),
            "mem": peak_memory_bytes(grads[m], x),
            "res": residual_bytes(pools[m], x),
        }
        for m in METHODS
    }


def overflow_check(dtype) -> str:
    """Count non-finite outputs of the naive formula vs soft_pool for inputs up to +-100."""
    x = jnp.linspace(-100.0, 100.0, 2 * 16 * 16 * 4, dtype=jnp.float32)
    x = x.reshape(2, 16, 16, 4).astype(dtype)
    counts = {}
    for method in ("naive", "soft"):
        y = jax.jit(make_pool(method, (2, 2), (2, 2), "VALID"))(x)
        counts[method] = int(np.sum(~np.isfinite(np.asarray(y, np.float32))))
    return (
        f"overflow check ({jnp.dtype(dtype).name}, inputs in [-100, 100]): non-finite outputs: "
        f"naive {counts['naive']} / {x.size // 4}, soft {counts['soft']} / {x.size // 4}"
    )


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 and a >= 0 else "n/a"


def plot(all_results, out: pathlib.Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label for label, _ in all_results]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.2
    for ax, key, name in [(axes[0], "fwd", "forward"), (axes[1], "fwd_bwd", "forward+backward")]:
        for i, method in enumerate(METHODS):
            vals = [res[method][key] * 1e3 for _, res in all_results]
            ax.bar(np.arange(len(labels)) + (i - 1.5) * width, vals, width, label=method)
        ax.set_xticks(np.arange(len(labels)), labels, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("median time (ms)")
        ax.set_title(name)
        ax.set_yscale("log")
    axes[0].legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller shapes (CPU-friendly)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per shape")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per round")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/bench_softpool.png"))
    args = parser.parse_args(argv)
    dtype = jnp.dtype(args.dtype)
    cases = QUICK_CASES if args.quick else FULL_CASES

    all_results = []
    for case in cases:
        all_results.append((case[0], run_case(case, dtype, args.rounds, args.repeats)))

    print(f"SoftPool benchmark ({'quick' if args.quick else 'full'} sizes, {dtype.name})")
    print("ratios = soft / baseline (time: < 1 is faster; memory: < 1 is smaller)")
    head = f"{'case':28s} {'baseline':8s} {'fwd':>8s} {'fwd+bwd':>8s} {'mem':>8s} {'res':>8s}"
    print(head)
    for label, res in all_results:
        soft = res["soft"]
        for base in ("max", "avg", "naive"):
            b = res[base]
            ratios = [
                _ratio(soft["fwd"], b["fwd"]),
                _ratio(soft["fwd_bwd"], b["fwd_bwd"]),
                _ratio(soft["mem"], b["mem"]),
                # avg-pool is linear: autodiff keeps (almost) nothing, so no meaningful ratio.
                _ratio(soft["res"], b["res"]) if b["res"] >= 1024 else "n/a",
            ]
            print(f"{label:28s} {base:8s} " + " ".join(f"{r:>8s}" for r in ratios))
    print()
    print(
        f"absolute figures (ms: median of {args.rounds} interleaved rounds x {args.repeats} "
        "calls; mem = fwd+bwd temp+output; res = autodiff residuals)"
    )
    print(
        f"{'case':28s} {'method':8s} {'fwd ms':>9s} {'fwd+bwd ms':>11s} {'mem':>11s} {'res':>11s}"
    )
    for label, res in all_results:
        for method in METHODS:
            r = res[method]
            print(
                f"{label:28s} {method:8s} {r['fwd'] * 1e3:9.2f} {r['fwd_bwd'] * 1e3:11.2f} "
                f"{format_bytes(int(r['mem'])):>11s} {format_bytes(int(r['res'])):>11s}"
            )
    print()
    print(overflow_check(dtype))
    print()
    print(environment_header())
    plot(
        all_results,
        args.out,
        f"SoftPool vs max/avg/naive ({dtype.name}); " + jax.devices()[0].device_kind,
    )
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()

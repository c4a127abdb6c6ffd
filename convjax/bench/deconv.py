"""Network Deconvolution speed: deconv_conv vs conv + BatchNorm (train) and vs conv (eval).

Run ``python -m convjax.bench.deconv`` (ResNet-style layer 128x32x32x64, 3x3, 64->64; the
second layer of the issue's table is ``--batch 256 --size 16 --channels 128``) or ``--quick``
(batch 32, for a shared CPU). Everything is measured in the same process, and the method and
its baseline are timed interleaved (call A, call B, call A, ...; medians of ``--repeats``), so
load changes hit both alike. Printed, ratios first:

- train step (forward + backward w.r.t. input and parameters, batch statistics recomputed and
  differentiated) of the deconv layer vs conv + BatchNorm, for ``grouping="shared"`` (the
  reference code's, default) and ``"per_block"`` (one Newton--Schulz per 64-channel block);
- eval (stored statistics folded into one convolution) vs a plain conv + bias;
- compile time (process CPU seconds of ``jax.jit(grad).lower().compile()``) of the layer's
  train step vs a plain conv's and conv + BN's;
- HLO facts that predict accelerator cost: number and shapes of the ``convolution`` ops and
  number of ``dot`` ops in the compiled train step, per grouping;
- accuracy of the float32 Newton--Schulz iteration (the precision used, ``HIGHEST``) against the
  float64 iteration and against the exact ``Cov^(-1/2)`` from ``eigh``, on the layer's batch
  covariance;
- the cost split of a forward deconv pass and XLA's memory estimate; device and versions.

Targets (issue #11): train step <= 2x conv + BN on GPU and <= 1.5x on CPU; eval <= 1.05x a
plain conv. A bar chart is written to ``--out``. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from convjax.bench.timing import (
    environment_header,
    format_bytes,
    peak_memory_bytes,
    time_fn,
    time_interleaved,
)
from convjax.bench.train_step import conv_signature, hlo_convolutions
from convjax.ops.deconv import (
    deconv_conv,
    deconv_conv_eval,
    deconv_patches,
    deconv_statistics,
    fold_deconv,
    isqrt_newton_schulz,
)

_DN = ("NHWC", "HWIO", "NHWC")


def conv_bn(x: jax.Array, kernel: jax.Array, scale: jax.Array, shift: jax.Array) -> jax.Array:
    """Baseline training forward: SAME conv (no bias) then BatchNorm with batch statistics."""
    y = lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DN)
    mean = jnp.mean(y, axis=(0, 1, 2))
    var = jnp.mean(jnp.square(y), axis=(0, 1, 2)) - jnp.square(mean)
    return (y - mean) * lax.rsqrt(var + 1e-5) * scale + shift


def conv_bias(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """Baseline eval forward: plain SAME conv plus bias (BatchNorm folded away)."""
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DN) + bias


def _train_step(forward: Callable[..., jax.Array]) -> Callable[..., tuple]:
    """Forward + backward of ``sum(forward(*args) * cotangent)`` w.r.t. every array argument."""

    def step(cot: jax.Array, *args: jax.Array) -> tuple:
        def loss(*a: jax.Array) -> jax.Array:
            return jnp.sum(forward(*a) * cot)

        return jax.value_and_grad(loss, argnums=tuple(range(len(args))))(*args)

    return step


def _interleaved(
    fns: dict[str, tuple[Callable[..., object], tuple]], repeats: int
) -> dict[str, float]:
    """Median seconds of each jitted ``fn(*args)``, timed round-robin (:func:`time_interleaved`)."""
    calls = {}
    for name, (fn, args) in fns.items():
        jitted = jax.jit(fn)
        calls[name] = lambda jitted=jitted, args=args: jitted(*args)
    times = time_interleaved(calls, warmup=2, repeats=repeats)
    return {k: float(statistics.median(v)) for k, v in times.items()}


def compile_seconds(fn: Callable[..., object], *args: object) -> tuple[float, str]:
    """Process CPU seconds to lower + compile ``jax.jit(fn)`` (nothing cached; CPU time rather
    than wall time, so other jobs on a shared machine do not inflate it) and the HLO text."""
    start = time.process_time()
    compiled = jax.jit(fn).lower(*args).compile()
    return time.process_time() - start, compiled.as_text()


def hlo_facts(hlo_text: str) -> dict[str, object]:
    """Convolution ops (:func:`convjax.bench.train_step.hlo_convolutions`) and dot ops in HLO text.

    Example:
      >>> f = lambda x, k: lax.conv_general_dilated(x, k, (1, 1), "SAME")
      >>> x, k = jnp.ones((1, 2, 5, 5)), jnp.ones((3, 2, 3, 3))
      >>> hlo_facts(jax.jit(f).lower(x, k).compile().as_text())["num_convolutions"]
      1
    """
    convs = [conv_signature(c) for c in hlo_convolutions(hlo_text)]
    dots = len(re.findall(r"= \S+ dot\(", hlo_text))
    return {"num_convolutions": len(convs), "convolutions": convs, "num_dots": dots}


def newton_schulz_accuracy(cov: np.ndarray, iters: tuple[int, ...] = (5, 15)) -> list[str]:
    """Relative errors (max abs / max abs of the reference) of float32 Newton--Schulz."""
    cov64 = np.asarray(cov, np.float64)
    w, v = np.linalg.eigh(cov64)
    exact = (v / np.sqrt(np.maximum(w, 1e-300))) @ v.T
    lines = [f"    covariance F={cov64.shape[0]}, eigenvalues {w.min():.2e} .. {w.max():.2e}"]
    for n in iters:
        d32 = np.asarray(jax.jit(isqrt_newton_schulz, static_argnums=1)(jnp.asarray(cov), n))
        with jax.enable_x64(True):
            d64 = np.asarray(isqrt_newton_schulz(jnp.asarray(cov64), n))
        e_iter = np.abs(d32 - d64).max() / np.abs(d64).max()
        e_eigh = np.abs(d32 - exact).max() / np.abs(exact).max()
        whitened = np.linalg.eigvalsh(d32 @ cov64 @ d32)
        lines.append(
            f"    num_iters {n:2d}: fp32 vs fp64 iteration {e_iter:.1e}; vs eigh isqrt "
            f"{e_eigh:.1e}; eigenvalues of D Cov D {whitened.min():.3f} .. {whitened.max():.3f}"
        )
    return lines


def run(
    batch: int, size: int, channels: int, repeats: int, num_iters: int, block: int
) -> tuple[dict, dict]:
    """Time every variant; returns (figures in seconds / bytes, text facts)."""
    keys = jax.random.split(jax.random.key(0), 4)
    x = jax.nn.relu(jax.random.normal(keys[0], (batch, size, size, channels), jnp.float32))
    kernel = jax.random.normal(keys[1], (3, 3, channels, channels)) / (3.0 * channels**0.5)
    bias = jnp.zeros((channels,))
    scale, shift = jnp.ones((channels,)), jnp.zeros((channels,))
    cot = jax.random.normal(keys[2], (batch, size, size, channels))
    groupings = ("shared", "per_block")

    def fwd(grouping: str) -> Callable[..., jax.Array]:
        def deconv_fwd(x: jax.Array, k: jax.Array, b: jax.Array) -> jax.Array:
            return deconv_conv(x, k, b, block=block, num_iters=num_iters, grouping=grouping)[0]

        return deconv_fwd

    _, stats = jax.jit(lambda x, k, b: deconv_conv(x, k, b, block=block, num_iters=num_iters))(
        x, kernel, bias
    )
    t: dict = {}
    facts: dict = {}
    t.update(
        _interleaved(
            {
                "train_conv_bn": (_train_step(conv_bn), (cot, x, kernel, scale, shift)),
                **{
                    f"train_deconv_{g}": (_train_step(fwd(g)), (cot, x, kernel, bias))
                    for g in groupings
                },
            },
            repeats,
        )
    )
    t.update(
        _interleaved(
            {
                "eval_conv": (conv_bias, (x, kernel, bias)),
                "eval_deconv": (
                    lambda x, k, b, s: deconv_conv_eval(x, k, b, s),
                    (x, kernel, bias, stats),
                ),
            },
            repeats,
        )
    )
    t.update(
        _interleaved(
            {
                "fwd_conv_bn": (conv_bn, (x, kernel, scale, shift)),
                "fwd_deconv": (fwd("shared"), (x, kernel, bias)),
            },
            repeats,
        )
    )

    # compile times of jit(grad) and the HLO of the compiled train steps
    def plain_conv(x: jax.Array, k: jax.Array, b: jax.Array) -> jax.Array:
        return conv_bias(x, k, b)

    t["compile_conv"], _ = compile_seconds(_train_step(plain_conv), cot, x, kernel, bias)
    t["compile_conv_bn"], hlo = compile_seconds(_train_step(conv_bn), cot, x, kernel, scale, shift)
    facts["hlo_conv_bn"] = hlo_facts(hlo)
    for g in groupings:
        t[f"compile_deconv_{g}"], hlo = compile_seconds(_train_step(fwd(g)), cot, x, kernel, bias)
        facts[f"hlo_deconv_{g}"] = hlo_facts(hlo)

    # cost split of one forward deconv pass
    def moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        rows = deconv_patches(x, 3, block=block).astype(jnp.float32)
        mean = jnp.mean(rows, axis=1)
        xc = rows - mean[:, None]
        cov = jnp.einsum("nmf,nmg->nfg", xc, xc, precision=lax.Precision.HIGHEST)
        return mean, cov / rows.shape[1]

    _, cov = jax.jit(moments)(x)
    cov = cov + 1e-5 * jnp.eye(cov.shape[-1])
    facts["ns_accuracy"] = newton_schulz_accuracy(np.asarray(cov[0]), (num_iters, 15))
    t["split_im2col_cov"] = time_fn(moments, x, repeats=repeats)
    t["split_newton_schulz"] = time_fn(
        lambda c: isqrt_newton_schulz(c, num_iters), cov, repeats=repeats
    )
    t["split_fold_conv"] = time_fn(
        lambda x, k, b, s: deconv_conv_eval(x, k, b, s), x, kernel, bias, stats, repeats=repeats
    )
    t["split_statistics_total"] = time_fn(
        lambda x: deconv_statistics(deconv_patches(x, 3, block=block), num_iters=num_iters),
        x,
        repeats=repeats,
    )
    t["fold_only"] = time_fn(lambda k, b, s: fold_deconv(k, b, s), kernel, bias, stats)
    t["mem_train_deconv"] = peak_memory_bytes(_train_step(fwd("shared")), cot, x, kernel, bias)
    t["mem_train_conv_bn"] = peak_memory_bytes(_train_step(conv_bn), cot, x, kernel, scale, shift)
    return t, facts


def _plot(t: dict, title: str, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = ["train\ndeconv", "train\nconv+BN", "eval\ndeconv", "eval\nconv"]
    vals = [t["train_deconv_shared"], t["train_conv_bn"], t["eval_deconv"], t["eval_conv"]]
    axes[0].bar(names, [v * 1e3 for v in vals], color=["C0", "C1", "C0", "C1"])
    axes[0].set_ylabel("ms (median)")
    axes[0].set_title("deconv vs baseline")
    split = ["split_im2col_cov", "split_newton_schulz", "split_fold_conv"]
    axes[1].bar(
        ["im2col+cov", "Newton-Schulz", "fold+conv"], [t[k] * 1e3 for k in split], color="C2"
    )
    axes[1].set_ylabel("ms (median)")
    axes[1].set_title("forward deconv cost split")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 32 instead of 128 (CPU)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--size", type=int, default=32, help="spatial size H = W")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--num-iters", type=int, default=5)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="runs/deconv_bench.png", help="plot path (PNG)")
    args = parser.parse_args(argv)
    batch = args.batch or (32 if args.quick else 128)
    shape = f"{batch}x{args.size}x{args.size}x{args.channels}, 3x3, {args.channels}->"
    shape += f"{args.channels}, block {args.block}, num_iters {args.num_iters}, float32"
    t, facts = run(batch, args.size, args.channels, args.repeats, args.num_iters, args.block)
    gpu = jax.default_backend() != "cpu"
    target = "<= 2x on GPU" if gpu else "<= 1.5x on CPU"

    print(f"Network Deconvolution benchmark: {shape}")
    print("ratios (median times, same process, interleaved):")
    for g in ("shared", "per_block"):
        ratio = t[f"train_deconv_{g}"] / t["train_conv_bn"]
        print(f"  train step deconv[{g:9s}] / conv+BN  : {ratio:5.2f}x   (target {target})")
    print(f"  eval       deconv / conv+bias          : {t['eval_deconv'] / t['eval_conv']:5.2f}x"
          "   (target <= 1.05x)")  # fmt: skip
    print(f"  forward    deconv / conv+BN            : {t['fwd_deconv'] / t['fwd_conv_bn']:5.2f}x")
    print("compile (jit of value_and_grad: lower + compile, process CPU s):")
    print(f"  plain conv {t['compile_conv']:.2f}, conv+BN {t['compile_conv_bn']:.2f}")
    for g in ("shared", "per_block"):
        c = t[f"compile_deconv_{g}"]
        print(f"  deconv[{g}] {c:.2f} = {c / t['compile_conv']:.1f}x plain conv")
    print("HLO of the compiled train step (convolution ops: output shape, window):")
    for key in ("hlo_conv_bn", "hlo_deconv_shared", "hlo_deconv_per_block"):
        f = facts[key]
        print(f"  {key[4:]:18s}: {f['num_convolutions']} convolutions, {f['num_dots']} dots")
        for c in f["convolutions"]:
            print(f"      {c}")
    print("Newton-Schulz accuracy (float32, Precision.HIGHEST) on this layer's covariance:")
    print("\n".join(facts["ns_accuracy"]))
    total = t["split_im2col_cov"] + t["split_newton_schulz"] + t["split_fold_conv"]
    print("forward cost split (share of the three parts):")
    for key, label in [
        ("split_im2col_cov", "im2col + covariance"),
        ("split_newton_schulz", "Newton-Schulz"),
        ("split_fold_conv", "fold + conv"),
    ]:
        print(f"    {label:22s}: {t[key] / total:6.1%}")
    print("absolute (median ms):")
    for key in [
        "train_deconv_shared",
        "train_deconv_per_block",
        "train_conv_bn",
        "fwd_deconv",
        "fwd_conv_bn",
        "eval_deconv",
        "eval_conv",
        "split_im2col_cov",
        "split_newton_schulz",
        "split_fold_conv",
        "split_statistics_total",
        "fold_only",
    ]:
        print(f"  {key:24s} {t[key] * 1e3:10.3f}")
    print("XLA memory estimate of the train step (temp + outputs):")
    print(f"  deconv  {format_bytes(t['mem_train_deconv'])}")
    print(f"  conv+BN {format_bytes(t['mem_train_conv_bn'])}")
    print(environment_header())
    _plot(t, shape, args.out)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()

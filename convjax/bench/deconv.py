"""Network Deconvolution speed: deconv_conv vs conv + BatchNorm (train) and vs conv (eval).

Run ``python -m convjax.bench.deconv`` (ResNet-style layer 128x32x32x64, 3x3, 64->64) or
``--quick`` (batch 32, for a shared CPU). All methods are timed in the same process: each
is a jitted function timed after warm-up (median of ``--repeats`` runs, see
:mod:`convjax.bench.timing`). Printed: ratios first, then absolute times, the cost split of a
forward deconv pass (im2col + covariance, Newton--Schulz, fold + conv), XLA's memory estimate,
then device and versions. A bar chart is written to ``--out`` (default
``runs/deconv_bench.png``). Nothing is asserted.

Training step = forward + backward w.r.t. the input and all parameters, with the batch
statistics recomputed (deconv: patch covariance + Newton--Schulz, differentiated; BN: mean and
variance over N, H, W). Eval = deconv with stored statistics (fold + one conv) vs conv + bias.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from convjax.bench.timing import environment_header, format_bytes, peak_memory_bytes, time_fn
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


def run(batch: int, size: int, channels: int, repeats: int, num_iters: int, block: int) -> dict:
    """Time every variant; returns a dict of seconds and bytes."""
    keys = jax.random.split(jax.random.key(0), 4)
    x = jax.nn.relu(jax.random.normal(keys[0], (batch, size, size, channels), jnp.float32))
    kernel = jax.random.normal(keys[1], (3, 3, channels, channels)) / (3.0 * channels**0.5)
    bias = jnp.zeros((channels,))
    scale, shift = jnp.ones((channels,)), jnp.zeros((channels,))
    cot = jax.random.normal(keys[2], (batch, size, size, channels))
    kw = dict(block=block, num_iters=num_iters)

    def deconv_fwd(x: jax.Array, k: jax.Array, b: jax.Array) -> jax.Array:
        return deconv_conv(x, k, b, **kw)[0]

    _, stats = jax.jit(lambda x, k, b: deconv_conv(x, k, b, **kw))(x, kernel, bias)
    t = {}
    t["train_deconv"] = time_fn(_train_step(deconv_fwd), cot, x, kernel, bias, repeats=repeats)
    t["train_conv_bn"] = time_fn(
        _train_step(conv_bn), cot, x, kernel, scale, shift, repeats=repeats
    )
    t["eval_deconv"] = time_fn(
        lambda x, k, b, s: deconv_conv_eval(x, k, b, s), x, kernel, bias, stats, repeats=repeats
    )
    t["eval_conv"] = time_fn(conv_bias, x, kernel, bias, repeats=repeats)
    t["fwd_deconv"] = time_fn(deconv_fwd, x, kernel, bias, repeats=repeats)
    t["fwd_conv_bn"] = time_fn(conv_bn, x, kernel, scale, shift, repeats=repeats)

    # cost split of one forward deconv pass
    def moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        rows = deconv_patches(x, 3, block=block).astype(jnp.float32)
        mean = jnp.mean(rows, axis=1)
        xc = rows - mean[:, None]
        return mean, jnp.einsum("nmf,nmg->nfg", xc, xc, precision=lax.Precision.HIGHEST)

    _, cov = jax.jit(moments)(x)
    cov = cov / cov.shape[-1] + 1e-5 * jnp.eye(cov.shape[-1])
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
    t["mem_train_deconv"] = peak_memory_bytes(_train_step(deconv_fwd), cot, x, kernel, bias)
    t["mem_train_conv_bn"] = peak_memory_bytes(_train_step(conv_bn), cot, x, kernel, scale, shift)
    return t


def _plot(t: dict, title: str, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = ["train\ndeconv", "train\nconv+BN", "eval\ndeconv", "eval\nconv"]
    vals = [t["train_deconv"], t["train_conv_bn"], t["eval_deconv"], t["eval_conv"]]
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
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="runs/deconv_bench.png", help="plot path (PNG)")
    args = parser.parse_args(argv)
    batch = args.batch or (32 if args.quick else 128)
    shape = f"{batch}x{args.size}x{args.size}x{args.channels}, 3x3, {args.channels}->"
    shape += f"{args.channels}, block {args.block}, num_iters {args.num_iters}, float32"
    t = run(batch, args.size, args.channels, args.repeats, args.num_iters, args.block)

    print(f"Network Deconvolution benchmark: {shape}")
    print("ratios (median times, same process):")
    print(f"  train step deconv / conv+BN     : {t['train_deconv'] / t['train_conv_bn']:.2f}x")
    print(f"  forward    deconv / conv+BN     : {t['fwd_deconv'] / t['fwd_conv_bn']:.2f}x")
    print(f"  eval       deconv / conv+bias   : {t['eval_deconv'] / t['eval_conv']:.2f}x")
    total = t["split_im2col_cov"] + t["split_newton_schulz"] + t["split_fold_conv"]
    print("  forward cost split (share of the three parts):")
    for key, label in [
        ("split_im2col_cov", "im2col + covariance"),
        ("split_newton_schulz", "Newton-Schulz"),
        ("split_fold_conv", "fold + conv"),
    ]:
        print(f"    {label:22s}: {t[key] / total:6.1%}")
    print("absolute (median ms):")
    for key in [
        "train_deconv",
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

"""FlexConv speed: cost vs learned size, kernel-generation share, spatial-vs-FFT crossover.

Run ``python -m convjax.bench.flexconv [--quick] [--out runs/flexconv.png]``. In one process it
measures (forward + backward, compiled, median of several runs after warm-up):

1. Spatial vs FFT "SAME" convolution for kernel sizes 3..33 (1-D up to 129) per spatial rank,
   and the crossover size where FFT becomes faster, next to the default threshold that
   ``conv_method="auto"`` uses (:data:`convjax.ops.fft_conv.DEFAULT_FFT_THRESHOLD`).
2. A 2-D FlexConv layer (horizon 33, MAGNet 32 x 3) at learned sizes 5, 9, 17, 33 (sigma set
   so the crop is exactly that size) against a plain conv layer of the same size, and the
   share of the FlexConv time spent generating the kernel (MAGNet + mask, fwd + bwd).

With ``--sequence`` it instead times one FlexTCN gradient step on sMNIST-shaped input
(784 steps, the ``smnist_flextcn`` widths): horizon 784 (the preset) with the masks at
initialisation and opened to the whole sequence (same compiled step), against horizon 33.

Ratios are printed first, then absolute times, then device and versions. It never asserts.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from convjax.bench.timing import environment_header, time_fn
from convjax.configs.smnist_flextcn import SEQUENCE_LENGTH
from convjax.models import build
from convjax.nnx import FlexConv
from convjax.ops.fft_conv import DEFAULT_FFT_THRESHOLD, fft_conv, spatial_conv
from convjax.ops.flex_conv import active_bucket, flex_conv, flex_conv_init, sample_kernel
from convjax.ops.gaussian_mask import default_buckets, threshold_radius
from convjax.ops.pad import pad


def _fwd_bwd(apply, params, x, cot):
    """Function returning d/d(params, x) of <apply(params, x), cot>: one forward + backward."""

    def loss(p, xin):
        return jnp.vdot(apply(p, xin), cot)

    return jax.grad(loss, argnums=(0, 1))


def crossover(
    num_dims: int, batch: int, size: int, channels: int, kernels: list[int], repeats: int
) -> tuple[list[float], list[float]]:
    """Times of spatial and FFT 'SAME' conv (fwd+bwd) for each kernel size."""
    key = jax.random.key(0)
    x = jax.random.normal(key, (batch, *(size,) * num_dims, channels), jnp.float32)
    t_sp, t_fft = [], []
    for k in kernels:
        w = jax.random.normal(
            jax.random.key(k), (*(k,) * num_dims, channels, channels)
        ) / math.sqrt(channels * k**num_dims)
        cot = jnp.ones_like(x[..., :channels])
        half = (k - 1) // 2
        for conv, out in ((spatial_conv, t_sp), (fft_conv, t_fft)):
            apply = lambda p, xin, conv=conv, half=half: conv(pad(xin, half, "zero"), p)
            out.append(time_fn(_fwd_bwd(apply, w, x, cot), w, x, repeats=repeats))
    return t_sp, t_fft


def first_faster(kernels: list[int], t_sp: list[float], t_fft: list[float]) -> int | None:
    """Smallest kernel size from which FFT is faster for every larger size measured."""
    best = None
    for k, a, b in reversed(list(zip(kernels, t_sp, t_fft))):
        if b < a:
            best = k
        else:
            break
    return best


def sigma_for_bucket(size: int, horizon: int, threshold: float = 0.1) -> float:
    """A mask sigma whose (reference, centred) crop is exactly ``size`` grid points."""
    step = 2.0 / (horizon - 1)
    half = (size - 1) // 2
    return (half + 0.5) * step / threshold_radius(threshold)


def flex_vs_plain(
    batch: int, size: int, channels: int, horizon: int, repeats: int
) -> list[tuple[int, float, float, float]]:
    """(learned size, FlexConv time, plain conv time, kernel-generation time) per bucket."""
    x = jax.random.normal(jax.random.key(1), (batch, size, size, channels), jnp.float32)
    cot = jax.random.normal(jax.random.key(2), x.shape[:-1] + (channels,), jnp.float32)
    rows = []
    for learned in default_buckets(horizon):
        params = flex_conv_init(jax.random.key(3), 2, channels, channels, kernel_size=horizon)
        sigma = sigma_for_bucket(learned, horizon)
        params["mask"]["sigma"] = jnp.full((2,), sigma, jnp.float32)
        bucket = int(active_bucket(params, kernel_size=horizon))
        if default_buckets(horizon)[bucket] != learned:
            raise RuntimeError(f"set-up error: sigma for size {learned} gave bucket {bucket}")
        flex = lambda p, xin: flex_conv(p, xin, kernel_size=horizon)
        t_flex = time_fn(_fwd_bwd(flex, params, x, cot), params, x, repeats=repeats)

        gen = lambda p, xin, learned=learned: sample_kernel(
            p, channels, kernel_size=horizon, size=learned
        )
        kcot = jnp.ones((learned, learned, channels, channels), jnp.float32)
        t_gen = time_fn(_fwd_bwd(gen, params, x, kcot), params, x, repeats=repeats)

        plain_params = {
            "w": jax.random.normal(jax.random.key(4), (learned, learned, channels, channels))
            / math.sqrt(channels * learned * learned),
            "b": jnp.zeros((channels,)),
        }
        half = (learned - 1) // 2

        def plain(p, xin, half=half):
            return (
                jax.lax.conv_general_dilated(
                    xin,
                    p["w"],
                    (1, 1),
                    ((half, half), (half, half)),
                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                )
                + p["b"]
            )

        t_plain = time_fn(_fwd_bwd(plain, plain_params, x, cot), plain_params, x, repeats=repeats)
        rows.append((learned, t_flex, t_plain, t_gen))
    return rows


def sequence_steps(batch: int, length: int, repeats: int) -> list[tuple[str, int, float]]:
    """(setting, active kernel size, seconds) of one FlexTCN gradient step per setting.

    Settings: horizon 784 with the masks at initialisation and opened to the whole sequence
    (one compiled step: the bucket is picked on device), and horizon 33 at initialisation
    (the baseline). After warm-up the settings are timed interleaved, one call each per
    round, and the median per setting is returned.
    """
    x = jax.random.normal(jax.random.key(0), (batch, length, 1), jnp.float32)
    labels = jnp.arange(batch) % 10
    cases = []  # (name, size, jitted grad, params)
    for horizon in (SEQUENCE_LENGTH, 33):
        model = build(
            "flextcn", num_classes=10, in_features=1, flex_kernel_size=horizon, rngs=nnx.Rngs(0)
        )
        model.eval()  # fixed BN statistics and no dropout: the conv cost is what is measured
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def loss(p, xin, graphdef=graphdef, rest=rest):
            logits = nnx.merge(graphdef, p, rest)(xin)
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

        grad = jax.jit(jax.grad(loss))
        layers = [m for _, m in nnx.iter_graph(model) if isinstance(m, FlexConv)]
        settings = [("init masks", None)] + ([("masks open", 2.0)] if horizon > 33 else [])
        for name, sigma in settings:
            if sigma is not None:
                for layer in layers:
                    layer.mask_sigma[...] = jnp.full((1,), sigma)
            params = nnx.state(model, nnx.Param)
            size = int(layers[0].active_kernel_size())
            for _ in range(2):  # compile + warm-up
                jax.block_until_ready(grad(params, x))
            cases.append((f"horizon {horizon}, {name}", size, grad, params))
    times: list[list[float]] = [[] for _ in cases]
    for _ in range(repeats):
        for i, (_, _, grad, params) in enumerate(cases):
            t0 = time.perf_counter()
            jax.block_until_ready(grad(params, x))
            times[i].append(time.perf_counter() - t0)
    return [(name, size, float(np.median(t))) for (name, size, _, _), t in zip(cases, times)]


def main_sequence(batch: int, repeats: int) -> None:
    """Print the ``--sequence`` benchmark: ratios first, absolute times, environment."""
    rows = sequence_steps(batch, 784, repeats)
    base = rows[-1][2]
    print(
        f"FlexTCN gradient step (sMNIST shape: {batch} x 784 x 1, widths 32 x 4, 9 FlexConvs), "
        f"median of {repeats} compiled runs, interleaved"
    )
    print("\n== ratios (vs horizon 33 at init) ==")
    for name, size, t in rows:
        print(f"  {name:28s} (active kernel {size:3d}): {t / base:6.2f}x")
    print("\n== absolute times (ms) ==")
    for name, _size, t in rows:
        print(f"  {name:28s}: {1e3 * t:9.1f}")
    print("\n" + environment_header())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a few minutes on 2 CPUs)")
    ap.add_argument("--out", default="runs/flexconv.png", help="plot path (PNG)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--sequence", action="store_true", help="time a FlexTCN step at 784 steps")
    args = ap.parse_args(argv)
    if args.sequence:
        main_sequence(4 if args.quick else 64, args.repeats or (3 if args.quick else 5))
        return
    if args.quick:
        batch, size, channels, repeats, ranks = 4, 32, 16, 5, (1, 2, 3)
    else:
        batch, size, channels, repeats, ranks = 16, 32, 24, 7, (1, 2, 3)
    repeats = args.repeats or repeats
    horizon = 33

    rows = flex_vs_plain(batch, size, channels, horizon, repeats)
    cross = {}
    for d in ranks:
        kernels = [3, 5, 9, 17, 33] + ([65, 129] if d == 1 else [])
        s = {1: size * size, 2: size, 3: 16}[d]
        kernels = [k for k in kernels if k <= s]
        b = batch if d < 3 else max(1, batch // 4)
        t_sp, t_fft = crossover(d, b, s, channels, kernels, repeats)
        cross[d] = (s, kernels, t_sp, t_fft)

    print(
        f"FlexConv benchmark ({'quick' if args.quick else 'full'}), forward+backward, "
        f"median of {repeats} compiled runs"
    )
    print("\n== ratios ==")
    print(
        f"FlexConv (horizon {horizon}, 2-D, {batch}x{size}x{size}x{channels} -> {channels}) "
        "vs a plain conv of the learned size:"
    )
    for learned, t_flex, t_plain, t_gen in rows:
        print(
            f"  learned {learned:2d}x{learned:<2d}: FlexConv / plain = {t_flex / t_plain:6.2f}x"
            f"   kernel generation = {100 * t_gen / t_flex:5.1f}% of FlexConv time"
        )
    print("Spatial vs FFT conv (FFT time / spatial time; < 1 means FFT is faster):")
    for d, (s, kernels, t_sp, t_fft) in cross.items():
        ratios = "  ".join(f"k={k}: {b / a:.2f}" for k, a, b in zip(kernels, t_sp, t_fft))
        k0 = first_faster(kernels, t_sp, t_fft)
        print(f"  {d}-D (size {s}): {ratios}")
        print(
            f"       measured crossover: FFT faster from k = {k0}; "
            f"default auto threshold: k >= {DEFAULT_FFT_THRESHOLD[d]}"
        )

    print("\n== absolute times (ms) ==")
    for learned, t_flex, t_plain, t_gen in rows:
        print(
            f"  learned {learned:2d}: FlexConv {1e3 * t_flex:8.2f}  plain {1e3 * t_plain:8.2f}"
            f"  kernel gen {1e3 * t_gen:7.2f}"
        )
    for d, (_s, kernels, t_sp, t_fft) in cross.items():
        for k, a, b in zip(kernels, t_sp, t_fft):
            print(f"  {d}-D k={k:3d}: spatial {1e3 * a:9.2f}  fft {1e3 * b:9.2f}")
    print("\n" + environment_header())

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    sizes = [r[0] for r in rows]
    axes[0].plot(sizes, [1e3 * r[1] for r in rows], "o-", label="FlexConv (fwd+bwd)")
    axes[0].plot(sizes, [1e3 * r[2] for r in rows], "s-", label="plain conv, same size")
    axes[0].plot(sizes, [1e3 * r[3] for r in rows], "^--", label="kernel generation")
    axes[0].set(
        xlabel="learned kernel size",
        ylabel="ms",
        title="FlexConv vs plain conv",
        xscale="log",
        yscale="log",
    )
    axes[0].set_xticks(sizes, [str(s) for s in sizes])
    axes[0].minorticks_off()
    axes[0].legend()
    for d, (_s, kernels, t_sp, t_fft) in cross.items():
        (line,) = axes[1].plot(kernels, [1e3 * t for t in t_sp], "o-", label=f"{d}-D spatial")
        axes[1].plot(
            kernels, [1e3 * t for t in t_fft], "x--", color=line.get_color(), label=f"{d}-D FFT"
        )
    axes[1].set(
        xlabel="kernel size", ylabel="ms", title="spatial vs FFT conv", xscale="log", yscale="log"
    )
    axes[1].legend(fontsize=8)
    fig.suptitle(f"convjax FlexConv, {jax.default_backend()}")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()

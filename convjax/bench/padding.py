"""Learned padding: realistic border extension on real photographs, and its cost in VGG16.

Run ``python -m convjax.bench.padding`` (``--quick`` for a short run). Two measurements, in one
process:

1. Quality ("realistic extension", Alrasheedi et al. 2023 claim measured). Real photographs
   bundled with scikit-image / scikit-learn are split into a left half (training crops) and a
   right half (evaluation crops). A Padding Module (:mod:`convjax.ops.learned_pad`) is trained
   with its self-supervised loss only (Adam, ``--steps``) on ``S x S`` training crops. Then
   ``k in {1, 2, 4}`` pixels are cropped off ``S x S`` evaluation windows and padded back with
   zero / reflect / replicate / circular / learned; the MSE and PSNR (peak 1.0) on the
   cropped-away border ring are reported. Two learned variants: the default (depthwise, one
   filter shared by rotation, depth 2, width 3) and "learned-full" (full channel mixing, one
   filter per side, depth 3, width 5).
2. Cost: median wall time (timed calls alternating between the two modes) of a jitted
   forward + backward step (task loss + padding losses,
   gradients w.r.t. ``nnx.Param`` and ``PadParam``) of ``convjax.models.build("vgg16", ...)``
   with ``padding="learned"`` against ``padding="zero"`` (target ratio <= 1.25x).

Ratios are printed first (MSE relative to zero padding; learned/zero time), then absolute
figures and the environment. A figure (PSNR vs k, training loss, example borders, timing)
goes to ``--out``. The benchmark never asserts.
"""

from __future__ import annotations

import argparse
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from convjax.bench.timing import environment_header, require_bench_extra
from convjax.models import build
from convjax.nnx import PadParam, pop_padding_losses
from convjax.ops.learned_pad import init_padding_params, learned_pad, padding_loss
from convjax.ops.pad import pad

CROP_KS = (1, 2, 4)
CLASSIC = ("zero", "reflect", "replicate", "circular")
LEARNED_VARIANTS = {
    "learned": dict(depth=2, width=3, mixing="depthwise", shared=True),
    "learned-full": dict(depth=3, width=5, mixing="full", shared=False),
}


def load_images() -> list[tuple[str, np.ndarray]]:
    """Real RGB photographs shipped with scikit-image and scikit-learn, float32 in [0, 1]."""
    images = []
    try:
        import skimage.data as sd

        for name in ("astronaut", "coffee", "chelsea", "rocket"):
            images.append((name, getattr(sd, name)()))
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_images

        data = load_sample_images()
        for fname, img in zip(data.filenames, data.images):
            images.append((pathlib.Path(fname).stem, img))
    except ImportError:
        pass
    if not images:
        raise RuntimeError("needs scikit-image or scikit-learn for real photographs")
    return [(n, np.asarray(im, np.float32)[..., :3] / 255.0) for n, im in images]


def sample_crops(
    images: list[np.ndarray], size: int, count: int, half: str, rng: np.random.Generator
) -> np.ndarray:
    """``count`` random ``size x size`` crops from the left or right half of every image."""
    crops = []
    for i in range(count):
        img = images[i % len(images)]
        h, w = img.shape[:2]
        lo, hi = (0, w // 2) if half == "left" else (w // 2, w)
        y = rng.integers(0, h - size + 1)
        x = rng.integers(lo, hi - size + 1)
        crops.append(img[y : y + size, x : x + size])
    return np.stack(crops)


def train_padding(
    train: np.ndarray, variant: dict[str, Any], steps: int, batch: int, lr: float
) -> tuple[dict[str, jax.Array], np.ndarray]:
    """Adam on the self-supervised padding loss only; returns params and the loss curve."""
    params = init_padding_params(train.shape[-1], 2, **variant)
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps))
    data = jnp.asarray(train)

    def step(carry, key):
        p, s = carry
        idx = jax.random.randint(key, (batch,), 0, data.shape[0])
        loss, g = jax.value_and_grad(padding_loss)(p, data[idx])
        updates, s = opt.update(g, s, p)
        return (optax.apply_updates(p, updates), s), loss

    keys = jax.random.split(jax.random.key(0), steps)
    run = jax.jit(lambda p: jax.lax.scan(step, (p, opt.init(p)), keys))
    (params, _), losses = run(params)
    return params, np.asarray(losses)


def border_errors(
    truth: np.ndarray, pad_fn, k: int, margin: int
) -> tuple[float, float, np.ndarray]:
    """MSE / PSNR on the ring of width ``k`` that was cropped off and padded back."""
    size = truth.shape[1] - 2 * margin
    inner = truth[:, margin : margin + size, margin : margin + size]
    target = truth[:, margin - k : margin + size + k, margin - k : margin + size + k]
    padded = np.asarray(pad_fn(jnp.asarray(inner), k))
    ring = np.ones(target.shape[1:3], bool)
    ring[k:-k, k:-k] = False
    err = (padded - target)[:, ring]
    mse = float(np.mean(err.astype(np.float64) ** 2))
    return mse, 10.0 * np.log10(1.0 / max(mse, 1e-20)), padded


def vgg_overhead(width: float, batch: int, size: int, repeats: int) -> dict[str, float]:
    """Median fwd+bwd seconds of VGG16 with ``padding="zero"`` and ``padding="learned"``.

    Both programs are compiled and warmed up first; the timed calls then alternate between the
    two modes (zero, learned, zero, ...) so that load changes on a shared machine hit both
    alike. Each call is synchronised with ``block_until_ready``.
    """
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, size, size, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, size=(batch,)), jnp.int32)
    calls = {}
    for mode in ("zero", "learned"):
        model = build(
            "vgg16",
            num_classes=10,
            in_features=3,
            padding=mode,
            width_multiplier=width,
            rngs=nnx.Rngs(0),
        )
        model.train()
        graphdef, diff, rest = nnx.split(model, (nnx.Param, PadParam), ...)

        @jax.jit
        def fwd_bwd(diff, rest, x, y, graphdef=graphdef):
            def loss_fn(m):
                logits = m(x)
                task = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
                return task + pop_padding_losses(m)

            model = nnx.merge(graphdef, diff, rest)
            wrt = nnx.DiffState(0, (nnx.Param, PadParam))
            return nnx.grad(loss_fn, argnums=wrt)(model)

        calls[mode] = (fwd_bwd, (diff, rest, x, y))
        for _ in range(2):  # compile + warm-up, untimed
            jax.block_until_ready(fwd_bwd(diff, rest, x, y))
    samples: dict[str, list[float]] = {mode: [] for mode in calls}
    for _ in range(repeats):
        for mode, (fn, args) in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            samples[mode].append(time.perf_counter() - start)
    return {mode: float(np.median(t)) for mode, t in samples.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, short training")
    parser.add_argument("--crop", type=int, default=None, help="evaluation crop size S")
    parser.add_argument("--steps", type=int, default=None, help="padding-module Adam steps")
    parser.add_argument("--vgg-width", type=float, default=None, help="VGG16 width multiplier")
    parser.add_argument("--vgg-batch", type=int, default=None)
    parser.add_argument("--vgg-size", type=int, default=32, help="VGG16 input size (CIFAR 32)")
    parser.add_argument("--repeats", type=int, default=7, help="timed VGG16 calls per mode")
    parser.add_argument("--out", default="runs/bench_padding.png")
    args = parser.parse_args(argv)
    require_bench_extra()  # 4 of its 6 photographs come from scikit-image
    size = args.crop or (32 if args.quick else 64)
    steps = args.steps or (300 if args.quick else 1500)
    vgg_width = args.vgg_width or (0.25 if args.quick else 1.0)
    vgg_batch = args.vgg_batch or (8 if args.quick else 32)
    n_train, n_eval = (1024, 128) if args.quick else (4096, 512)
    margin = max(CROP_KS)

    rng = np.random.default_rng(0)
    named = load_images()
    images = [im for _, im in named]
    train = sample_crops(images, size, n_train, "left", rng)
    truth = sample_crops(images, size + 2 * margin, n_eval, "right", rng)

    t0 = time.perf_counter()
    learned = {}
    curves = {}
    for name, variant in LEARNED_VARIANTS.items():
        learned[name], curves[name] = train_padding(train, variant, steps, 32, 0.01)
    train_s = time.perf_counter() - t0

    pad_fns = {m: (lambda a, k, m=m: pad(a, k, m)) for m in CLASSIC}
    for name, params in learned.items():
        pad_fns[name] = jax.jit(lambda a, k, p=params: learned_pad(p, a, k), static_argnums=1)
    example = int(np.argmax(truth.reshape(len(truth), -1).std(axis=1)))  # a textured crop
    results: dict[str, dict[int, tuple[float, float]]] = {}
    examples = {}
    for mode, fn in pad_fns.items():
        results[mode] = {}
        for k in CROP_KS:
            mse, psnr, padded = border_errors(truth, fn, k, margin)
            results[mode][k] = (mse, psnr)
            if k == max(CROP_KS):
                examples[mode] = padded[example]

    times = vgg_overhead(vgg_width, vgg_batch, args.vgg_size, repeats=args.repeats)

    print("== learned padding benchmark ==")
    print(
        f"images: {', '.join(n for n, _ in named)}; train crops {n_train} (left halves), "
        f"eval crops {n_eval} (right halves), S={size}, {steps} Adam steps"
    )
    print("\n-- ratios --")
    print("border MSE relative to zero padding (lower is better):")
    print(f"{'mode':<14}" + "".join(f"{'k=' + str(k):>10}" for k in CROP_KS))
    for mode in results:
        ratios = [results[mode][k][0] / results["zero"][k][0] for k in CROP_KS]
        print(f"{mode:<14}" + "".join(f"{r:>10.4f}" for r in ratios))
    print("border MSE relative to replicate padding:")
    for mode in ("reflect", *LEARNED_VARIANTS):
        ratios = [results[mode][k][0] / results["replicate"][k][0] for k in CROP_KS]
        print(f"{mode:<14}" + "".join(f"{r:>10.4f}" for r in ratios))
    ratio = times["learned"] / times["zero"]
    print(
        f"VGG16 fwd+bwd time learned/zero: {ratio:.3f}x (target <= 1.25x) "
        f"[width x{vgg_width}, batch {vgg_batch}, {args.vgg_size}x{args.vgg_size}]"
    )
    print("\n-- absolute --")
    print(f"{'mode':<14}" + "".join(f"{'MSE k=' + str(k):>12}{'PSNR':>8}" for k in CROP_KS))
    for mode in results:
        row = "".join(f"{results[mode][k][0]:>12.6f}{results[mode][k][1]:>8.2f}" for k in CROP_KS)
        print(f"{mode:<14}{row}")
    eval_inner = jnp.asarray(truth[:, margin:-margin, margin:-margin])
    base = float(padding_loss(init_padding_params(3, 2), eval_inner))
    print(f"padding loss on the evaluation crops: replicate filter (init) {base:.6f}")
    for name, curve in curves.items():
        val = float(padding_loss(learned[name], eval_inner))
        print(
            f"  {name}: {val:.6f} ({val / base:.3f}x); training batches: mean of first 50 "
            f"steps {curve[:50].mean():.6f}, last 50 {curve[-50:].mean():.6f}"
        )
    print(f"padding-module training: {train_s:.1f} s (both variants, incl. compile)")
    for mode, t in times.items():
        print(
            f"VGG16 fwd+bwd padding={mode}: {t * 1e3:.1f} ms "
            f"(median of {args.repeats}, calls alternating between modes)"
        )
    print("\n" + environment_header())
    plot(results, curves, examples, truth[example], times, args.out)


def plot(results, curves, examples, truth, times, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = pathlib.Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plt.figure(figsize=(14, 6.5))
    ax = fig.add_subplot(2, 3, 1)
    for mode, res in results.items():
        ax.plot(CROP_KS, [res[k][1] for k in CROP_KS], "o-", label=mode)
    ax.set(xlabel="pixels cropped and padded back (k)", ylabel="border PSNR (dB)")
    ax.set_xticks(CROP_KS)
    ax.legend(fontsize=8)
    ax = fig.add_subplot(2, 3, 2)
    for name, curve in curves.items():
        window = max(1, min(50, len(curve) // 10))
        ax.semilogy(np.convolve(curve, np.ones(window) / window, mode="valid"), label=name)
    ax.set(
        xlabel="Adam step",
        ylabel="padding loss (running mean)",
        title="self-supervised training",
    )
    ax.legend(fontsize=8)
    ax = fig.add_subplot(2, 3, 3)
    ax.bar(list(times), [t * 1e3 for t in times.values()], color=["gray", "tab:orange"])
    ax.set(ylabel="ms", title="VGG16 fwd+bwd step")
    show = ["zero", "reflect", "replicate", "learned", "learned-full"]
    k = max(CROP_KS)
    for i, mode in enumerate(["truth", *show]):
        ax = fig.add_subplot(2, 6, 7 + i)
        img = truth if mode == "truth" else examples[mode]
        ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
        inner = img.shape[0] - 2 * k
        ax.add_patch(plt.Rectangle((k - 0.5, k - 0.5), inner, inner, fill=False, ec="w", lw=0.8))
        ax.set_title(mode, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"figure: {path}")


if __name__ == "__main__":
    main()

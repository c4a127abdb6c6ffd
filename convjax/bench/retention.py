"""Information retention of max, avg and soft pooling on real photographs (SoftPool paper).

Run ``python -m convjax.bench.retention``. Each image is downsampled by 2x and 4x with
``window = stride = factor`` pooling, upsampled back to full size with bilinear interpolation
(``jax.image.resize(method="linear")``), and compared with the original: PSNR (dB) and SSIM
(``skimage.metrics.structural_similarity``, data range 1, channels averaged). Higher is better.

Images: the real photographs shipped inside installed packages -- scikit-learn's
``load_sample_images()`` (china, flower) and, when scikit-image is installed, its bundled
``astronaut``, ``coffee``, ``chelsea`` and ``rocket`` -- cropped to a multiple of 4.

SoftPool is not scale invariant (``w_i ~ exp(a_i)``), so it is evaluated with the pixels in
two units: ``soft@1`` pools intensities in ``[0, 1]`` (weights close to uniform, near avg-pool)
and ``soft@255`` pools ``[0, 255]`` (weights concentrate on the maximum, near max-pool); the
result is divided back by the scale before comparing. Ratios against the baselines are printed
first, then absolute figures per image and the environment. A plot goes to ``--out``.
The benchmark never asserts.
"""

from __future__ import annotations

import argparse
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from convjax.bench.timing import environment_header, require_bench_extra
from convjax.ops.soft_pool import soft_pool

FACTORS = (2, 4)
METHODS = ("max", "avg", "soft@1", "soft@255")


def load_images(max_images: int | None = None) -> dict[str, np.ndarray]:
    """Real photographs from installed packages as float32 ``(H, W, 3)`` in ``[0, 1]``."""
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    images = {pathlib.Path(name).stem: img for name, img in zip(sample.filenames, sample.images)}
    try:
        import skimage.data

        for name in ("astronaut", "coffee", "chelsea", "rocket"):
            images[name] = getattr(skimage.data, name)()
    except ImportError:  # scikit-image is optional (the "bench" extra)
        pass
    out = {}
    for name, img in list(images.items())[:max_images]:
        h, w = (img.shape[0] // 4) * 4, (img.shape[1] // 4) * 4
        out[name] = np.asarray(img[:h, :w, :3], np.float32) / 255.0
    return out


def down_up(image: np.ndarray, method: str, factor: int) -> np.ndarray:
    """Pool ``(H, W, 3)`` by ``factor`` with ``method`` and resize back bilinearly."""
    x = jnp.asarray(image)[None]
    k = (factor, factor)
    if method == "max":
        y = nn.max_pool(x, k, k)
    elif method == "avg":
        y = nn.avg_pool(x, k, k)
    elif method.startswith("soft@"):
        scale = float(method.split("@")[1])
        y = soft_pool(x * scale, k, k) / scale
    else:
        raise ValueError(f"`method` must be one of {list(METHODS)}, got {method!r}.")
    up = jax.image.resize(y, x.shape, method="linear")
    return np.clip(np.asarray(up[0]), 0.0, 1.0)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for images in ``[0, 1]``."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity (Wang et al. 2004) via scikit-image, channels averaged."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=-1, data_range=1.0))


def evaluate(images: dict[str, np.ndarray]) -> dict[tuple[str, str, int], tuple[float, float]]:
    results = {}
    for name, img in images.items():
        for factor in FACTORS:
            for method in METHODS:
                rec = down_up(img, method, factor)
                results[(name, method, factor)] = (psnr(img, rec), ssim(img, rec))
    return results


def plot(means, out: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.2
    for ax, idx, name in [(axes[0], 0, "PSNR (dB)"), (axes[1], 1, "SSIM")]:
        for i, method in enumerate(METHODS):
            vals = [means[(method, f)][idx] for f in FACTORS]
            ax.bar(np.arange(len(FACTORS)) + (i - 1.5) * width, vals, width, label=method)
        ax.set_xticks(np.arange(len(FACTORS)), [f"{f}x down/up" for f in FACTORS])
        ax.set_ylabel(name)
        lo = min(means[(m, f)][idx] for m in METHODS for f in FACTORS)
        hi = max(means[(m, f)][idx] for m in METHODS for f in FACTORS)
        ax.set_ylim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9))
    axes[0].legend(fontsize=8)
    fig.suptitle("Information retention: pool by k=s, bilinear upsample, compare (mean of images)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-images", type=int, default=None, help="use only the first N")
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("runs/bench_retention.png")
    )
    args = parser.parse_args(argv)
    require_bench_extra()  # its 4 photographs and SSIM come from scikit-image
    images = load_images(args.max_images)
    results = evaluate(images)
    means = {
        (method, factor): tuple(
            float(np.mean([results[(n, method, factor)][i] for n in images])) for i in range(2)
        )
        for method in METHODS
        for factor in FACTORS
    }

    print(f"Information retention on {len(images)} real photographs: {', '.join(images)}")
    print("mean over images; differences = soft - baseline (> 0: soft retains more)")
    print(f"{'factor':>6s} {'soft':9s} {'baseline':8s} {'dPSNR dB':>9s} {'dSSIM':>8s}")
    for factor in FACTORS:
        for soft in ("soft@1", "soft@255"):
            for base in ("max", "avg"):
                dp = means[(soft, factor)][0] - means[(base, factor)][0]
                ds = means[(soft, factor)][1] - means[(base, factor)][1]
                print(f"{factor:>5d}x {soft:9s} {base:8s} {dp:+9.3f} {ds:+8.4f}")
    print()
    print("absolute figures: PSNR dB / SSIM")
    print(f"{'image':12s} {'factor':>6s} " + " ".join(f"{m:>16s}" for m in METHODS))
    for name in [*images, "MEAN"]:
        for factor in FACTORS:
            cells = []
            for method in METHODS:
                p, s = (
                    means[(method, factor)] if name == "MEAN" else results[(name, method, factor)]
                )
                cells.append(f"{p:7.2f} / {s:6.4f}")
            print(f"{name:12s} {factor:>5d}x " + " ".join(f"{c:>16s}" for c in cells))
    print()
    print(environment_header())
    plot(means, args.out)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()

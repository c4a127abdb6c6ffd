"""Per-example image augmentation and normalisation (NumPy, run inside grain pipelines).

Crop/flip work on whole batches ``(B, H, W, C)`` (vectorised: the pipeline augments a batch at
a time); resizing works on one image ``(H, W, C)`` (datasets of varying image size). Random
functions take an explicit ``numpy.random.Generator``, so the pipeline controls every draw
(exact resume, streams independent of the process layout). Images stay uint8 until
:func:`normalize`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "augment_batch",
    "center_crop",
    "crop_with_padding",
    "flip_left_right",
    "normalize",
    "random_crop",
    "random_flip",
    "random_resized_crop",
    "resize",
    "resize_shorter_side",
]


def _check_image(image: np.ndarray, fn: str) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"{fn}: image must be an array of shape (H, W, C), got shape {shape}")


def _check_batch(images: np.ndarray, fn: str) -> None:
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        shape = getattr(images, "shape", None)
        raise ValueError(f"{fn}: images must be an array of shape (B, H, W, C), got shape {shape}")


def crop_with_padding(images: np.ndarray, offsets: np.ndarray, padding: int) -> np.ndarray:
    """Zero-pad every image by ``padding`` on each side and cut the ``(H, W)`` window at
    ``offsets`` (deterministic part of :func:`random_crop`).

    ``out[b, i, j] = images[b, i + dy - padding, j + dx - padding]`` where that index is
    inside the image, else 0, with ``(dy, dx) = offsets[b]`` in ``[0, 2 * padding]``.

    Args:
      images: ``(B, H, W, C)``.
      offsets: int ``(B, 2)``, each in ``[0, 2 * padding]``.
      padding: non-negative int.

    Returns:
      ``(B, H, W, C)`` array of the input dtype.

    Example:
      >>> x = np.arange(1, 5, dtype=np.uint8).reshape(1, 2, 2, 1)
      >>> crop_with_padding(x, np.array([[0, 0]]), 1)[0, :, :, 0].tolist()
      [[0, 0], [0, 1]]
    """
    _check_batch(images, "crop_with_padding")
    if not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ValueError(f"crop_with_padding: padding must be a non-negative int, got {padding!r}")
    offsets = np.asarray(offsets)
    b, h, w, _ = images.shape
    if offsets.shape != (b, 2) or np.any(offsets < 0) or np.any(offsets > 2 * padding):
        raise ValueError(
            f"crop_with_padding: offsets must be ints of shape ({b}, 2) in [0, {2 * padding}], "
            f"got shape {offsets.shape}"
        )
    if padding == 0:
        return images
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    rows = offsets[:, 0, None] + np.arange(h)  # (B, H)
    cols = offsets[:, 1, None] + np.arange(w)  # (B, W)
    return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def random_crop(images: np.ndarray, padding: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-pad ``padding`` pixels on every side, then crop a random ``(H, W)`` window per
    image: the standard CIFAR augmentation (padding 4 on 32x32).

    Every output pixel is the input pixel shifted by ``(dy, dx)``, ``|dy|, |dx| <= padding``,
    or zero where the shift leaves the image.

    Args:
      images: ``(B, H, W, C)``.
      padding: non-negative int; 0 returns the images unchanged (no random draw).
      rng: random generator.

    Example:
      >>> x = np.zeros((2, 4, 4, 1), np.uint8)
      >>> random_crop(x, 1, np.random.default_rng(0)).shape
      (2, 4, 4, 1)
    """
    _check_batch(images, "random_crop")
    if padding == 0:
        return images
    offsets = rng.integers(0, 2 * padding + 1, size=(images.shape[0], 2))
    return crop_with_padding(images, offsets, padding)


def flip_left_right(images: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Mirror the W axis of the images whose ``flags`` entry is True.

    Example:
      >>> x = np.arange(2, dtype=np.uint8).reshape(1, 1, 2, 1)
      >>> flip_left_right(x, np.array([True]))[0, 0, :, 0].tolist()
      [1, 0]
    """
    _check_batch(images, "flip_left_right")
    flags = np.asarray(flags, bool)
    if flags.shape != images.shape[:1]:
        raise ValueError(
            f"flip_left_right: flags must have shape ({images.shape[0]},), got {flags.shape}"
        )
    return np.where(flags[:, None, None, None], images[:, :, ::-1], images)


def random_flip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flip each image left-right (the W axis) with probability 1/2.

    Example:
      >>> x = np.arange(4, dtype=np.uint8).reshape(1, 1, 4, 1)
      >>> random_flip(x, np.random.default_rng(1)).ravel().tolist() in ([0, 1, 2, 3], [3, 2, 1, 0])
      True
    """
    _check_batch(images, "random_flip")
    return flip_left_right(images, rng.random(images.shape[0]) < 0.5)


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(image / 255 - mean) / std`` per channel, as float32.

    Args:
      image: uint8 ``(..., C)``.
      mean: C per-channel means of ``image / 255``.
      std: C positive per-channel standard deviations.

    Example:
      >>> normalize(np.full((1, 1, 1), 255, np.uint8), [0.5], [0.5]).item()
      1.0
    """
    mean_a = np.asarray(mean, np.float32)
    std_a = np.asarray(std, np.float32)
    if mean_a.shape != (image.shape[-1],) or std_a.shape != (image.shape[-1],):
        raise ValueError(
            f"normalize: mean {tuple(mean)} and std {tuple(std)} must have one entry per channel "
            f"({image.shape[-1]})"
        )
    if np.any(std_a <= 0):
        raise ValueError(f"normalize: std must be positive, got {tuple(std)}")
    scale = 1.0 / (255.0 * std_a)
    return image.astype(np.float32) * scale - mean_a / std_a


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear (antialiased) resize of a uint8 ``(H, W, C)`` image to ``(height, width, C)``
    with Pillow (imported on first use).

    Example:
      >>> resize(np.zeros((4, 6, 2), np.uint8), 8, 3).shape
      (8, 3, 2)
    """
    _check_image(image, "resize")
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - pillow ships with the bench/test extras
        raise ImportError(
            "resizing images (image_size for datasets of varying image size) needs Pillow: "
            "pip install pillow"
        ) from e
    channels = image.shape[-1]
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c])).resize(
                (width, height), Image.Resampling.BILINEAR
            )
        )
        for c in range(channels)
    ]
    return np.stack(planes, axis=-1)


def resize_shorter_side(image: np.ndarray, size: int) -> np.ndarray:
    """Resize so that ``min(H, W) == size``, keeping the aspect ratio (bilinear).

    Example:
      >>> resize_shorter_side(np.zeros((10, 20, 3), np.uint8), 5).shape
      (5, 10, 3)
    """
    _check_image(image, "resize_shorter_side")
    h, w = image.shape[:2]
    scale = size / min(h, w)
    return resize(image, max(size, round(h * scale)), max(size, round(w * scale)))


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``(size, size)`` window (the image must be at least that large).

    Example:
      >>> center_crop(np.zeros((6, 8, 1), np.uint8), 4).shape
      (4, 4, 1)
    """
    _check_image(image, "center_crop")
    h, w = image.shape[:2]
    if h < size or w < size:
        raise ValueError(f"center_crop: image {image.shape} is smaller than size {size}")
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


def random_resized_crop(
    image: np.ndarray,
    size: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
    """Inception-style crop: a random window of random area fraction in ``scale`` and aspect
    ratio in ``ratio`` (log-uniform), resized to ``(size, size)``; falls back to the central
    square after 10 failed draws. Used for datasets of varying image size (ImageNet).

    Example:
      >>> random_resized_crop(np.zeros((40, 50, 3), np.uint8), 16, np.random.default_rng(0)).shape
      (16, 16, 3)
    """
    _check_image(image, "random_resized_crop")
    h, w = image.shape[:2]
    area = h * w
    log_ratio = np.log(ratio)
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = float(np.exp(rng.uniform(*log_ratio)))
        cw = round((target * aspect) ** 0.5)
        ch = round((target / aspect) ** 0.5)
        if 0 < cw <= w and 0 < ch <= h:
            top = int(rng.integers(0, h - ch + 1))
            left = int(rng.integers(0, w - cw + 1))
            return resize(image[top : top + ch, left : left + cw], size, size)
    side = min(h, w)
    return resize(center_crop(image, side), size, size)


def augment_batch(
    images: np.ndarray,
    rng: np.random.Generator,
    *,
    crop_padding: int,
    flip: bool,
    total: int | None = None,
    start: int = 0,
) -> np.ndarray:
    """The standard training augmentation: random crop with zero padding, then (optionally) a
    random left-right flip, drawn for a batch of ``total`` images of which these are
    ``[start, start + B)``.

    Drawing for the whole (global) batch and slicing makes the augmentation of an example
    independent of how the global batch is split over processes.

    Args:
      images: uint8 ``(B, H, W, C)``.
      rng: random generator (one per global batch).
      crop_padding: zero padding of the random crop (0 = no crop).
      flip: whether to flip left-right with probability 1/2.
      total: size of the batch the draws are made for (default ``B``).
      start: offset of these images within that batch.

    Example:
      >>> x = np.zeros((4, 8, 8, 1), np.uint8)
      >>> augment_batch(x, np.random.default_rng(0), crop_padding=1, flip=True).shape
      (4, 8, 8, 1)
    """
    _check_batch(images, "augment_batch")
    b = images.shape[0]
    total = b if total is None else total
    if not 0 <= start <= total - b:
        raise ValueError(
            f"augment_batch: need 0 <= start <= total - B, got {start=}, {total=}, B={b}"
        )
    offsets = rng.integers(0, 2 * crop_padding + 1, size=(total, 2))[start : start + b]
    flags = rng.random(total)[start : start + b] < 0.5
    images = crop_with_padding(images, offsets, crop_padding)
    if flip:
        images = flip_left_right(images, flags)
    return images

"""Sequential variants of image datasets for sequence models (FlexTCN, CKCNN).

* ``"flatten"`` (sMNIST / sCIFAR style): an image ``(H, W, C)`` becomes the sequence
  ``(H * W, C)`` of its pixels in row-major (raster) order.
* ``"permute"`` (pMNIST style): the flattened sequence is reordered by one fixed random
  permutation of the ``H * W`` positions, drawn from ``permutation_seed`` (the same for every
  example, every epoch and every process: it defines the task, it is not an augmentation).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SEQUENCE_MODES", "pixel_permutation", "sequence_shape", "to_sequence"]

#: Accepted values of the ``sequence`` option.
SEQUENCE_MODES = ("none", "flatten", "permute")


def pixel_permutation(length: int, seed: int = 0) -> np.ndarray:
    """The fixed pMNIST permutation of ``length`` positions drawn from ``seed``.

    Example:
      >>> sorted(pixel_permutation(5, seed=3).tolist())
      [0, 1, 2, 3, 4]
    """
    if not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(f"pixel_permutation: length must be a positive int, got {length!r}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), 0x704D4E])).permutation(
        int(length)
    )


def to_sequence(images: np.ndarray, permutation: np.ndarray | None = None) -> np.ndarray:
    """Flatten ``(..., H, W, C)`` to ``(..., H * W, C)`` in raster order, then apply
    ``permutation`` to the sequence axis.

    Args:
      images: ``(..., H, W, C)`` array (the pipeline passes normalised float32 batches).
      permutation: optional int array of length ``H * W``; output step ``t`` is input pixel
        ``permutation[t]`` (raster index ``i * W + j``).

    Returns:
      ``(..., H * W, C)`` array.

    Example:
      >>> x = np.arange(4.0).reshape(2, 2, 1)
      >>> to_sequence(x, np.array([3, 2, 1, 0]))[:, 0].tolist()
      [3.0, 2.0, 1.0, 0.0]
    """
    if images.ndim < 3:
        raise ValueError(f"to_sequence: images must have shape (..., H, W, C), got {images.shape}")
    *lead, h, w, c = images.shape
    seq = images.reshape(*lead, h * w, c)
    if permutation is None:
        return seq
    permutation = np.asarray(permutation)
    if permutation.shape != (h * w,):
        raise ValueError(
            f"to_sequence: permutation must have shape ({h * w},), got {permutation.shape}"
        )
    return np.take(seq, permutation, axis=-2)


def sequence_shape(image_shape: tuple[int, ...], mode: str) -> tuple[int, ...]:
    """Per-example model input shape for a sequence ``mode`` (``(H, W, C)`` for ``"none"``).

    Example:
      >>> sequence_shape((28, 28, 1), "permute")
      (784, 1)
    """
    if mode not in SEQUENCE_MODES:
        raise ValueError(f"sequence must be one of {SEQUENCE_MODES}, got {mode!r}")
    if mode == "none":
        return tuple(image_shape)
    h, w, c = image_shape
    return (h * w, c)

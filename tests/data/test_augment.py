"""Augmentation and normalisation: NumPy-loop references and properties."""

import numpy as np
import pytest

from convjax.data import (
    augment_batch,
    center_crop,
    crop_with_padding,
    flip_left_right,
    normalize,
    random_crop,
    random_flip,
    random_resized_crop,
    resize,
    resize_shorter_side,
)


def _crop_reference(images, offsets, padding):
    b, h, w, c = images.shape
    out = np.zeros_like(images)
    for n in range(b):
        dy, dx = offsets[n]
        for i in range(h):
            for j in range(w):
                si, sj = i + dy - padding, j + dx - padding
                if 0 <= si < h and 0 <= sj < w:
                    out[n, i, j] = images[n, si, sj]
    return out


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(1, 256, (6, 5, 7, 2), dtype=np.uint8)


def test_crop_with_padding_matches_loop_reference(images):
    offsets = np.array([[0, 0], [4, 4], [2, 2], [0, 3], [1, 4], [3, 0]])
    got = crop_with_padding(images, offsets, 2)
    np.testing.assert_array_equal(got, _crop_reference(images, offsets, 2))
    np.testing.assert_array_equal(got[2], images[2])  # centre offset = identity
    assert crop_with_padding(images, np.zeros((6, 2), int), 0) is images


def test_random_crop_is_a_bounded_shift(images):
    padding = 2
    out = random_crop(images, padding, np.random.default_rng(1))
    assert out.shape == images.shape and out.dtype == images.dtype
    for n in range(len(images)):
        matches = [
            (dy, dx)
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
            if np.array_equal(out[n], _crop_reference(images[n : n + 1], [(dy, dx)], padding)[0])
        ]
        assert matches, f"image {n} is not a shifted crop"


def test_flips(images):
    flags = np.array([True, False, True, False, False, True])
    out = flip_left_right(images, flags)
    for n in range(6):
        want = images[n, :, ::-1] if flags[n] else images[n]
        np.testing.assert_array_equal(out[n], want)
    np.testing.assert_array_equal(flip_left_right(out, flags), images)  # involution
    many = np.repeat(images[:1], 400, axis=0)
    flipped = random_flip(many, np.random.default_rng(2))
    is_flipped = np.all(flipped == images[0, :, ::-1], axis=(1, 2, 3))
    is_same = np.all(flipped == images[0], axis=(1, 2, 3))
    assert np.all(is_flipped ^ is_same)
    assert 150 < is_flipped.sum() < 250


def test_augment_batch_slices_are_independent_of_the_split(images):
    whole = augment_batch(images, np.random.default_rng(5), crop_padding=1, flip=True)
    for start, stop in ((0, 2), (2, 6), (3, 4)):
        part = augment_batch(
            images[start:stop],
            np.random.default_rng(5),
            crop_padding=1,
            flip=True,
            total=6,
            start=start,
        )
        np.testing.assert_array_equal(part, whole[start:stop])
    no_flip = augment_batch(images, np.random.default_rng(5), crop_padding=0, flip=False)
    np.testing.assert_array_equal(no_flip, images)
    with pytest.raises(ValueError, match="start"):
        augment_batch(images, np.random.default_rng(0), crop_padding=1, flip=True, total=4)


def test_normalize_matches_reference_and_stays_finite():
    x = np.random.default_rng(3).integers(0, 256, (2, 3, 3, 3), dtype=np.uint8)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 1e-3)
    got = normalize(x, mean, std)
    assert got.dtype == np.float32
    want = (x.astype(np.float64) / 255 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)
    assert np.all(np.isfinite(got))
    with pytest.raises(ValueError, match="one entry per channel"):
        normalize(x, (0.5,), (0.5,))
    with pytest.raises(ValueError, match="std must be positive"):
        normalize(x, mean, (0.2, 0.0, 0.1))


def test_resizing_helpers():
    flat = np.full((10, 16, 3), 77, np.uint8)
    assert resize(flat, 4, 5).shape == (4, 5, 3)
    assert np.all(resize(flat, 4, 5) == 77)  # a constant image stays constant
    assert resize_shorter_side(flat, 5).shape == (5, 8, 3)
    x = np.arange(6 * 8, dtype=np.uint8).reshape(6, 8, 1)
    np.testing.assert_array_equal(center_crop(x, 4), x[1:5, 2:6])
    out = random_resized_crop(flat, 6, np.random.default_rng(0))
    assert out.shape == (6, 6, 3) and np.all(out == 77)


def test_bad_arguments():
    x = np.zeros((2, 4, 4, 1), np.uint8)
    with pytest.raises(ValueError, match=r"images must be an array of shape \(B, H, W, C\)"):
        random_crop(x[0], 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="padding must be a non-negative int"):
        crop_with_padding(x, np.zeros((2, 2), int), -1)
    with pytest.raises(ValueError, match="offsets must be ints of shape"):
        crop_with_padding(x, np.full((2, 2), 3), 1)
    with pytest.raises(ValueError, match="flags must have shape"):
        flip_left_right(x, np.array([True]))
    with pytest.raises(ValueError, match=r"image must be an array of shape \(H, W, C\)"):
        center_crop(x, 2)
    with pytest.raises(ValueError, match="smaller than size"):
        center_crop(x[0], 5)

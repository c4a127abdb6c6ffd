"""Sequential (sMNIST / pMNIST) variants."""

import numpy as np
import pytest

from convjax.data import SEQUENCE_MODES, pixel_permutation, sequence_shape, to_sequence


def test_flatten_is_raster_order():
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 2))
    seq = to_sequence(x)
    assert seq.shape == (2, 12, 2)
    for b in range(2):
        for i in range(3):
            for j in range(4):
                np.testing.assert_array_equal(seq[b, i * 4 + j], x[b, i, j])


def test_permutation_is_fixed_seeded_and_applied_to_positions():
    p = pixel_permutation(784, seed=0)
    assert sorted(p.tolist()) == list(range(784))
    np.testing.assert_array_equal(p, pixel_permutation(784, seed=0))
    assert not np.array_equal(p, pixel_permutation(784, seed=1))
    assert not np.array_equal(p, np.arange(784))
    x = np.random.default_rng(1).normal(size=(28, 28, 1))
    seq = to_sequence(x, p)
    flat = to_sequence(x)
    for t in (0, 5, 783):
        np.testing.assert_array_equal(seq[t], flat[p[t]])


def test_shapes_and_errors():
    assert SEQUENCE_MODES == ("none", "flatten", "permute")
    assert sequence_shape((28, 28, 1), "none") == (28, 28, 1)
    assert sequence_shape((32, 32, 3), "flatten") == (1024, 3)
    with pytest.raises(ValueError, match="sequence must be one of"):
        sequence_shape((8, 8, 1), "rows")
    with pytest.raises(ValueError, match="permutation must have shape"):
        to_sequence(np.zeros((2, 2, 1)), np.arange(3))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., H, W, C\)"):
        to_sequence(np.zeros((4, 1)))
    with pytest.raises(ValueError, match="length must be a positive int"):
        pixel_permutation(0)

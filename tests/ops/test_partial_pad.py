"""ops.partial_conv_scale against a brute-force mask convolution (Liu et al. 2018)."""

import itertools

import numpy as np
import pytest

from convjax._checks import normalize_padding
from convjax.ops import partial_conv_scale


def brute_force_scale(shape, kernel, strides, padding, dilation):
    n = len(shape)
    pads = normalize_padding(padding, shape, kernel, strides, dilation=dilation)
    mask = np.pad(np.ones(shape), pads)
    out_shape = [
        (s + lo + hi - ((k - 1) * d + 1)) // st + 1
        for s, (lo, hi), k, st, d in zip(shape, pads, kernel, strides, dilation)
    ]
    scale = np.zeros(out_shape)
    for o in itertools.product(*[range(m) for m in out_shape]):
        valid = 0.0
        for t in itertools.product(*[range(k) for k in kernel]):
            valid += mask[tuple(o[i] * strides[i] + t[i] * dilation[i] for i in range(n))]
        scale[o] = np.prod(kernel) / valid if valid > 0 else 0.0
    return scale


@pytest.mark.parametrize(
    "shape,kernel,strides,padding,dilation",
    [
        ((7,), (3,), (1,), "SAME", (1,)),
        ((6, 5), (3, 3), (2, 2), "SAME", (1, 1)),
        ((5, 6), (4, 2), (1, 2), "SAME", (1, 1)),
        ((6, 6), (3, 3), (1, 1), "SAME", (2, 2)),
        ((4, 5, 3), (3, 3, 3), (1, 2, 1), "SAME", (1, 1, 1)),
        ((5,), (3,), (1,), ((4, 1),), (1,)),  # windows holding only padding -> 0
    ],
)
def test_matches_brute_force(shape, kernel, strides, padding, dilation):
    got = partial_conv_scale(shape, kernel, strides, padding, dilation)
    expected = brute_force_scale(shape, kernel, strides, padding, dilation)
    assert got.shape == (1, *expected.shape, 1) and got.dtype == np.float32
    np.testing.assert_allclose(got[0, ..., 0], expected, rtol=1e-6)


def test_interior_is_one_and_valid_padding_is_identity():
    s = partial_conv_scale((9, 9), 3)
    np.testing.assert_array_equal(s[0, 1:-1, 1:-1, 0], 1.0)
    np.testing.assert_array_equal(partial_conv_scale((9, 9), 3, padding="VALID"), 1.0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(spatial_shape=(5, 5), kernel_size=(3, 3, 3)), "kernel_size"),
        (dict(spatial_shape=(5, 5), kernel_size=3, strides=0), "strides"),
        (dict(spatial_shape=(5, 5), kernel_size=3, padding="FULL"), "padding"),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        partial_conv_scale(**kwargs)

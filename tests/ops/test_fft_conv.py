"""Spatial, FFT and causal convolution against a float64 NumPy loop, and each other."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from convjax.ops.fft_conv import (
    causal_conv1d,
    conv_valid,
    fft_conv,
    next_fast_len,
    spatial_conv,
    use_fft,
)
from tests.helpers import jit_variants


def reference_conv(x, kernel, strides):
    """VALID cross-correlation, float64 loop over kernel taps."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    n = x.ndim - 2
    spatial, window = x.shape[1:-1], kernel.shape[:n]
    out = tuple((s - k) // st + 1 for s, k, st in zip(spatial, window, strides))
    y = np.zeros((x.shape[0], *out, kernel.shape[-1]))
    for tap in np.ndindex(*window):
        sl = (slice(None),) + tuple(
            slice(t, t + (o - 1) * st + 1, st) for t, o, st in zip(tap, out, strides)
        )
        y += np.einsum("n...i,io->n...o", x[sl], kernel[tap])
    return y


def _data(spatial, window, cin=3, cout=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, *spatial, cin)).astype(np.float32)
    k = rng.standard_normal((*window, cin, cout)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(k)


CASES = [
    ((23,), (7,), (1,)),
    ((20,), (9,), (3,)),
    ((11, 13), (5, 3), (1, 1)),
    ((12, 9), (3, 5), (2, 1)),
    ((6, 7, 5), (3, 3, 3), (1, 2, 1)),
]


@jit_variants
@pytest.mark.parametrize("spatial,window,strides", CASES)
def test_spatial_and_fft_match_numpy(transform, spatial, window, strides):
    x, k = _data(spatial, window)
    ref = reference_conv(x, k, strides)
    for fn in (spatial_conv, fft_conv):
        y = transform(lambda a, b, fn=fn: fn(a, b, strides))(x, k)
        assert y.shape == ref.shape and y.dtype == jnp.float32
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k", [1, 5, 16, 33])
def test_causal_fft_equals_causal_spatial_and_is_causal(k):
    x, w = _data((40,), (k,))
    ys = causal_conv1d(x, w, method="spatial")
    yf = causal_conv1d(x, w, method="fft")
    assert ys.shape == (2, 40, 2)
    np.testing.assert_allclose(yf, ys, rtol=1e-4, atol=1e-4)
    # definition: y[t] = sum_q w[q] x[t - (k - 1 - q)], zero before the start
    xp = np.concatenate([np.zeros((2, k - 1, 3)), np.asarray(x, np.float64)], axis=1)
    np.testing.assert_allclose(ys, reference_conv(xp, w, (1,)), rtol=1e-4, atol=1e-4)
    # changing the future never changes the past (exactly for spatial; FFT mixes every
    # position, so the future leaks only at float32 rounding level of its magnitude)
    t0 = 25
    x2 = x.at[:, t0:].set(100.0)
    np.testing.assert_array_equal(causal_conv1d(x2, w, method="spatial")[:, :t0], ys[:, :t0])
    leak = np.abs(np.asarray(causal_conv1d(x2, w, method="fft")[:, :t0] - yf[:, :t0])).max()
    assert leak < 1e-5 * 100.0 * 3 * k


@pytest.mark.parametrize("fn", [spatial_conv, fft_conv])
@pytest.mark.parametrize("strides", [(1, 1), (2, 1)])
def test_gradients(fn, strides):
    x, k = _data((7, 6), (3, 3), cin=2, cout=2)
    f = jax.jit(lambda a, b: fn(a, b, strides))
    check_grads(f, (x, k), order=1, modes=("rev",), atol=2e-2, rtol=2e-2)


def test_custom_vjp_matches_jax_rule_inside_switch():
    x, k = _data((9, 8), (3, 5))
    cot = jnp.asarray(np.random.default_rng(1).standard_normal((2, 4, 2, 2)), jnp.float32)

    def lax_conv(a, b):
        return jax.lax.conv_general_dilated(
            a, b, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    def switched(a, b):
        i = (b[0, 0, 0, 0] > 1e9).astype(jnp.int32)  # traced index, always branch 0
        return jax.lax.switch(i, [lambda u, v: spatial_conv(u, v, 2), lax_conv], a, b)

    got = jax.jit(jax.grad(lambda a, b: jnp.vdot(switched(a, b), cot), (0, 1)))(x, k)
    want = jax.grad(lambda a, b: jnp.vdot(lax_conv(a, b), cot), (0, 1))(x, k)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_low_precision_inputs():
    x, k = _data((16, 16), (9, 9))
    ref = reference_conv(x, k, (1, 1))
    scale = np.abs(ref).max()
    for fn in (spatial_conv, fft_conv):
        y = fn(x.astype(jnp.bfloat16), k.astype(jnp.bfloat16))
        assert y.dtype == jnp.bfloat16
        assert np.abs(np.asarray(y, np.float64) - ref).max() < 0.05 * scale


def test_auto_method_and_fast_lengths():
    assert use_fft((33, 33), "auto", 17) and not use_fft((9, 9), "auto", 17)
    assert use_fft((3,), "fft") and not use_fft((99,), "spatial")
    assert [next_fast_len(n) for n in (1, 7, 31, 64, 97)] == [1, 8, 32, 64, 100]
    x, k = _data((40,), (33,))
    np.testing.assert_allclose(
        conv_valid(x, k, method="auto", fft_threshold=5), spatial_conv(x, k), rtol=1e-4, atol=1e-4
    )


def test_errors():
    x, k = _data((8, 8), (3, 3))
    with pytest.raises(TypeError, match="`x`"):
        spatial_conv(x.astype(jnp.int32), k)
    with pytest.raises(ValueError, match="kernel"):
        fft_conv(x, k[0])
    with pytest.raises(ValueError, match="in_features"):
        spatial_conv(x, k[:, :, :2])
    with pytest.raises(ValueError, match="larger than"):
        fft_conv(x, jnp.ones((9, 9, 3, 2)))
    with pytest.raises(ValueError, match="method"):
        conv_valid(x, k, method="winograd")
    with pytest.raises(ValueError, match="strides"):
        spatial_conv(x, k, (1, 0))
    with pytest.raises(ValueError, match="spatial dims"):
        causal_conv1d(x, k)

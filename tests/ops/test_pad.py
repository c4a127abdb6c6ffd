"""ops.pad against numpy.pad, in 1-D/2-D/3-D, jit/no-jit/pmap, gradients and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from convjax.ops import PAD_MODES, pad
from tests.helpers import jit_variants

NP_MODE = {"zero": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


@pytest.mark.parametrize("mode", PAD_MODES)
@pytest.mark.parametrize(
    "shape,pad_width",
    [
        ((2, 7, 3), 2),
        ((2, 5, 6, 3), ((1, 2), (3, 0))),
        ((1, 4, 5, 3, 2), (1, 2, 2)),
    ],
)
def test_matches_numpy(mode, shape, pad_width):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    n = len(shape) - 2
    if isinstance(pad_width, int):
        pairs = [(pad_width, pad_width)] * n
    else:
        pairs = [(p, p) if isinstance(p, int) else p for p in pad_width]
    expected = np.pad(x, [(0, 0), *pairs, (0, 0)], mode=NP_MODE[mode])
    np.testing.assert_array_equal(np.asarray(pad(x, pad_width, mode)), expected)


@jit_variants
@pytest.mark.parametrize("mode", PAD_MODES)
def test_jit_and_nojit(mode, transform):
    x = jnp.arange(2 * 5 * 4 * 3, dtype=jnp.float32).reshape(2, 5, 4, 3)
    expected = np.pad(np.asarray(x), [(0, 0), (2, 2), (1, 1), (0, 0)], mode=NP_MODE[mode])
    out = transform(lambda a: pad(a, (2, 1), mode))(x)
    np.testing.assert_array_equal(np.asarray(out), expected)


@pytest.mark.parametrize("mode", PAD_MODES)
def test_pmap_equals_single(mode, num_devices):
    x = jnp.asarray(np.random.default_rng(1).normal(size=(num_devices, 2, 6, 5, 3)), jnp.float32)
    out = jax.pmap(lambda a: pad(a, 2, mode))(x)
    single = jax.vmap(lambda a: pad(a, 2, mode))(x)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(single))


@pytest.mark.parametrize("mode", PAD_MODES)
def test_gradients(mode):
    x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 4, 5, 2)), jnp.float32)
    check_grads(lambda a: pad(a, 2, mode), (x,), order=2, modes=("fwd", "rev"), eps=1e-2)
    # reflect / replicate / circular route gradient from the border back into x
    g = jax.grad(lambda a: pad(a, 2, mode)[:, :2].sum())(x)
    assert (np.abs(np.asarray(g)).sum() > 0) == (mode != "zero")


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.int32, jnp.uint8])
def test_dtype_preserved(dtype):
    x = jnp.ones((1, 3, 3, 1), dtype)
    assert pad(x, 1, "replicate").dtype == dtype


def test_no_padding_is_identity():
    x = jnp.ones((1, 3, 3, 1))
    assert pad(x, 0, "reflect") is x


@pytest.mark.parametrize(
    "x_shape,pad_width,mode,exc,match",
    [
        ((1, 4, 4, 1), 1, "mirror", ValueError, "`mode` must be one of"),
        ((4, 4), 1, "zero", ValueError, "spatial dims"),
        ((1, 2, 3, 4, 5, 6, 1), 1, "zero", ValueError, "spatial dims"),
        ((1, 4, 4, 1), (1, 2, 3), "zero", ValueError, "one entry per spatial dim"),
        ((1, 4, 4, 1), -1, "zero", ValueError, "non-negative"),
        ((1, 4, 4, 1), ((1, 2, 3), (1, 1)), "zero", ValueError, r"\(lo, hi\)"),
        ((1, 4, 4, 1), 4, "reflect", ValueError, "must be < the input size 4"),
        ((1, 4, 4, 1), 5, "circular", ValueError, "must be <= the input size 4"),
        ((1, 4, 4, 1), "SAME", "zero", ValueError, "one entry per spatial dim"),
        ((1, 4, 4, 1), 1.5, "zero", TypeError, "pad_width"),
    ],
)
def test_errors(x_shape, pad_width, mode, exc, match):
    with pytest.raises(exc, match=match):
        pad(jnp.zeros(x_shape), pad_width, mode)

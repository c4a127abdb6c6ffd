"""Tests for convjax.nnx.SoftPool (the op itself is tested in tests/ops/test_soft_pool.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from convjax.nnx import SoftPool
from convjax.ops import soft_pool


def _x(shape=(2, 6, 6, 3), seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def test_module_equals_op_and_has_no_state():
    x = _x()
    pool = SoftPool((3, 3), strides=(2, 2), padding="SAME")
    np.testing.assert_array_equal(
        np.asarray(pool(x)), np.asarray(soft_pool(x, (3, 3), (2, 2), "SAME"))
    )
    assert jax.tree_util.tree_leaves(nnx.state(pool)) == []
    pool.eval()
    np.testing.assert_array_equal(
        np.asarray(pool(x)), np.asarray(soft_pool(x, (3, 3), (2, 2), "SAME"))
    )
    # list arguments are accepted and stored hashable (static under nnx.jit)
    pool2 = SoftPool([2, 2], strides=[2, 2], padding=[(0, 1), [1, 0]])
    assert pool2(x).shape == soft_pool(x, (2, 2), (2, 2), ((0, 1), (1, 0))).shape


def test_in_a_model_under_nnx_jit_and_grad():
    class Net(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
            self.pool = SoftPool((2, 2), strides=(2, 2))

        def __call__(self, x):
            return jnp.mean(self.pool(self.conv(x)) ** 2)

    model = Net(nnx.Rngs(0))
    x = _x()

    @nnx.jit
    def loss_and_grad(m, a):
        return nnx.value_and_grad(lambda mm: mm(a))(m)

    loss, grads = loss_and_grad(model, x)
    assert np.isfinite(float(loss)) and np.isclose(float(loss), float(model(x)), rtol=1e-6)
    g = np.asarray(grads["conv"]["kernel"][...])
    assert g.shape == (3, 3, 3, 4) and np.all(np.isfinite(g)) and np.abs(g).sum() > 0


def test_dtype_casts_compute_and_output():
    x = _x()
    y = SoftPool((2, 2), (2, 2), dtype=jnp.bfloat16)(x)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(y, np.float32),
        np.asarray(soft_pool(x.astype(jnp.bfloat16), (2, 2), (2, 2)), np.float32),
    )
    assert SoftPool((2, 2), (2, 2))(x.astype(jnp.float16)).dtype == jnp.float16


def test_bad_configuration_fails_at_construction():
    with pytest.raises(ValueError, match="`window_shape` entries must be >= 1"):
        SoftPool((0, 2))
    with pytest.raises(ValueError, match="`strides`"):
        SoftPool((2, 2), strides=(2, 2, 2))
    with pytest.raises(ValueError, match="`padding` must be"):
        SoftPool((2, 2), padding="CAUSAL")
    with pytest.raises(ValueError, match="`window_shape` must have 1 to 3 entries"):
        SoftPool((2, 2, 2, 2))
    with pytest.raises(ValueError, match="`x` must have shape"):
        SoftPool((2, 2))(jnp.zeros((2, 6, 3)))  # 1-D input for a 2-D window
    with pytest.raises(TypeError, match="`x` must have a floating dtype"):
        SoftPool((2, 2))(jnp.zeros((1, 4, 4, 1), jnp.int32))

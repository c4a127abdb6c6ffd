"""Tests for convjax.linen.SoftPool (the op itself is tested in tests/ops/test_soft_pool.py)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax.linen import SoftPool
from convjax.ops import soft_pool


def _x(shape=(2, 6, 6, 3), seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def test_module_equals_op_and_has_no_variables():
    x = _x()
    pool = SoftPool((3, 3), strides=(2, 2), padding="SAME")
    variables = pool.init(jax.random.key(0), x)
    assert jax.tree_util.tree_leaves(variables) == []
    np.testing.assert_array_equal(
        np.asarray(pool.apply(variables, x)), np.asarray(soft_pool(x, (3, 3), (2, 2), "SAME"))
    )


def test_in_a_compact_model_under_jit_and_grad():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            y = nn.Conv(4, (3, 3))(x)
            return SoftPool((2, 2), (2, 2), padding="SAME")(y)

    x = _x((2, 5, 5, 3))
    model = Net()
    params = model.init(jax.random.key(1), x)["params"]
    y = jax.jit(model.apply)({"params": params}, x)
    assert y.shape == (2, 3, 3, 4)
    grads = jax.jit(jax.grad(lambda p: jnp.mean(model.apply({"params": p}, x) ** 2)))(params)
    g = np.asarray(grads["Conv_0"]["kernel"])
    assert np.all(np.isfinite(g)) and np.abs(g).sum() > 0


def test_dtype_casts_compute_and_output():
    x = _x()
    y = SoftPool((2, 2), (2, 2), dtype=jnp.float16).apply({}, x)
    assert y.dtype == jnp.float16
    np.testing.assert_allclose(
        np.asarray(y, np.float32),
        np.asarray(soft_pool(x.astype(jnp.float16), (2, 2), (2, 2)), np.float32),
    )


def test_bad_configuration_raises():
    with pytest.raises(ValueError, match="`window_shape` entries must be >= 1"):
        SoftPool((2, -1))
    with pytest.raises(ValueError, match="`padding` must be"):
        SoftPool((2, 2), padding="FULL")
    with pytest.raises(ValueError, match="`window_shape`.*larger than the padded input"):
        SoftPool((7, 7)).apply({}, _x())


def test_list_arguments_are_stored_as_tuples():
    pool = SoftPool([2, 2], strides=[2, 2], padding=[[0, 1], (1, 0)])
    assert pool.window_shape == (2, 2) and pool.padding == ((0, 1), (1, 0))
    hash(pool.padding)
    x = _x()
    np.testing.assert_allclose(
        np.asarray(jax.jit(pool.apply)({}, x)),
        np.asarray(soft_pool(x, (2, 2), (2, 2), ((0, 1), (1, 0)))),
        atol=1e-6,
    )

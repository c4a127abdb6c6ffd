"""The pooling interception: every Flax pooling call becomes the requested pool, exactly."""

import functools

import flax.linen as nn
import jax
import numpy as np
import pytest
from flax.linen.pooling import min_pool

from convjax.convert import intercept_pools
from convjax.ops.soft_pool import soft_pool

X = jax.random.normal(jax.random.key(0), (2, 7, 7, 3))


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("padding", ["VALID", "SAME", ((1, 1), (0, 1))])
def test_avg_pool_calls_become_max_and_soft(count_include_pad, padding):
    avg = functools.partial(nn.avg_pool, count_include_pad=count_include_pad, padding=padding)
    calls = []
    with intercept_pools(lambda call: calls.append(call) or "max"):
        y_max = avg(X, (3, 3), strides=(2, 2))
    np.testing.assert_allclose(y_max, nn.max_pool(X, (3, 3), (2, 2), padding), rtol=1e-6)
    assert [(c.kind, c.window, c.strides) for c in calls] == [("avg", (3, 3), (2, 2))]
    with intercept_pools(lambda call: "soft"):
        y_soft = avg(X, (3, 3), strides=(2, 2))
    np.testing.assert_allclose(y_soft, soft_pool(X, (3, 3), (2, 2), padding), rtol=1e-5, atol=1e-6)


def test_max_pool_partial_becomes_avg_min_pool_and_outside_calls_are_kept():
    pool = functools.partial(nn.max_pool, window_shape=(2, 2), strides=(2, 2))
    with intercept_pools(lambda call: "avg" if call.kind == "max" else None):
        y = pool(X)
        y_min = min_pool(X, (2, 2), (2, 2))
    np.testing.assert_allclose(y, nn.avg_pool(X, (2, 2), (2, 2)), rtol=1e-6)
    np.testing.assert_array_equal(y_min, min_pool(X, (2, 2), (2, 2)))
    np.testing.assert_array_equal(pool(X), nn.max_pool(X, (2, 2), (2, 2)))  # patch removed

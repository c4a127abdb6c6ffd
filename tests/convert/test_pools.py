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


def test_direct_reduce_window_pooling_is_reported_kept_and_warned():
    """A pooling written with lax.reduce_window is kept and named in the report (with a
    warning), never skipped silently; convjax's own SoftPool (reduce_window inside) is not."""
    import jax.numpy as jnp
    from flax import nnx

    import convjax

    class RawPoolNet(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)

        def __call__(self, x):
            x = nnx.max_pool(self.conv(x), (2, 2), (2, 2))
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
            return x.mean(axis=(1, 2))

    x = jnp.ones((2, 8, 8, 3))
    model = RawPoolNet(nnx.Rngs(0))
    with pytest.warns(UserWarning, match=r"keeps 1 lax.reduce_window call\(s\).*test_pools.py"):
        new = convjax.convert(model, pool="soft", inputs=x)
    lines = [(c.before, c.after) for c in new.convert_report.changes if c.path.startswith("pool")]
    assert lines[0][1] == "soft" and lines[0][0].startswith("max_pool(window=(2, 2)")
    assert lines[1][0].startswith("lax.reduce_window(window=(1, 2, 2, 1)")
    assert lines[1][1].startswith("kept: lax.reduce_window called directly")
    assert len(lines) == 2  # soft_pool's own reduce_window is not a user pooling
    h = model.conv(x)
    expected = jax.lax.reduce_window(
        soft_pool(h, (2, 2), (2, 2)), -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"
    ).mean(axis=(1, 2))
    np.testing.assert_allclose(new(x), expected, rtol=1e-5, atol=1e-6)
    assert jax.lax.reduce_window is not None and "hook" not in jax.lax.reduce_window.__name__

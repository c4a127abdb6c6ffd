"""Linen DeconvConv / DeconvDense: agreement with the ops, batch_stats, modes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax import ops
from convjax.linen.deconv import DeconvConv, DeconvDense


def rand(key, shape, scale=1.0):
    """Test data from NumPy (no per-shape JAX random compiles), float32."""
    return (scale * np.random.default_rng(key).standard_normal(shape)).astype(np.float32)


def test_conv_train_eval_batch_stats():
    layer = DeconvConv(5, 3, strides=(1, 2), block=4, num_iters=6, axis_name="batch")
    x = rand(0, (2, 7, 8, 6)) + 1.0
    variables = layer.init(jax.random.key(0), x, use_running_average=False)  # no pmap needed
    params, stats0 = variables["params"], variables["batch_stats"]
    assert params["kernel"].shape == (3, 3, 6, 5) and stats0["deconv"].shape == (1, 18, 18)
    np.testing.assert_array_equal(stats0["mean"], 0.0)  # init never updates the statistics

    @jax.jit
    def train(variables, x):
        return jax.pmap(
            lambda x: layer.apply(variables, x, use_running_average=False, mutable=["batch_stats"]),
            axis_name="batch",
        )(x[None])

    y, upd = train(variables, x)
    want, s = jax.jit(
        functools.partial(ops.deconv_conv, strides=(1, 2), padding=1, block=4, num_iters=6)
    )(x, params["kernel"], params["bias"])
    np.testing.assert_allclose(y[0], want, rtol=1e-5, atol=1e-5)
    eye = np.broadcast_to(np.eye(18), (1, 18, 18))
    np.testing.assert_allclose(upd["batch_stats"]["mean"][0], 0.1 * s.mean, atol=1e-6)
    np.testing.assert_allclose(
        upd["batch_stats"]["deconv"][0], 0.9 * eye + 0.1 * s.deconv, atol=1e-6
    )

    new_stats = jax.tree.map(lambda a: a[0], upd["batch_stats"])
    evaluated = jax.jit(layer.apply, static_argnames="use_running_average")(
        {"params": params, "batch_stats": new_stats}, x, use_running_average=True
    )
    running = ops.DeconvStats(new_stats["mean"], new_stats["deconv"])
    np.testing.assert_allclose(
        evaluated,
        ops.deconv_conv_eval(
            x, params["kernel"], params["bias"], running, strides=(1, 2), padding=1
        ),
        rtol=1e-5,
        atol=1e-5,
    )
    frozen = DeconvConv(5, 3, strides=(1, 2), block=4, freeze_stats=True)
    y_frozen, upd_frozen = frozen.apply(
        {"params": params, "batch_stats": new_stats},
        x,
        use_running_average=False,
        mutable=["batch_stats"],
    )
    np.testing.assert_allclose(y_frozen, evaluated, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(upd_frozen["batch_stats"]["deconv"], new_stats["deconv"])


def test_conv_1d_int_kernel_and_grad():
    layer = DeconvConv(4, 3, use_running_average=False)
    x = rand(1, (3, 10, 2))
    variables = layer.init(jax.random.key(1), x)
    assert variables["params"]["kernel"].shape == (3, 2, 4)

    def loss(params):
        y, _ = layer.apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, x, mutable=["batch_stats"]
        )
        return jnp.sum(y**2)

    grads = jax.jit(jax.grad(loss))(variables["params"])
    assert all(jnp.isfinite(g).all() and jnp.abs(g).max() > 0 for g in jax.tree.leaves(grads))


def test_dense_train_and_eval():
    head = DeconvDense(3, block=8, num_iters=7)
    x = rand(2, (32, 12)) + 1.0
    variables = head.init(jax.random.key(2), x, use_running_average=False)
    y, upd = head.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    p = variables["params"]
    want, s = ops.deconv_dense(x, p["kernel"], p["bias"], block=8, num_iters=7)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * s.mean, atol=1e-6)
    y_eval = head.apply({"params": p, **upd}, x, use_running_average=True)
    running = ops.DeconvStats(upd["batch_stats"]["mean"], upd["batch_stats"]["deconv"])
    np.testing.assert_allclose(
        y_eval, ops.deconv_dense_eval(x, p["kernel"], p["bias"], running), atol=1e-5
    )


def test_errors():
    x = jnp.ones((1, 6, 6, 6))
    with pytest.raises(ValueError, match="feature_group_count"):
        DeconvConv(4, 3, feature_group_count=4).init(jax.random.key(0), x, False)
    with pytest.raises(ValueError, match="momentum"):
        DeconvConv(4, 3, momentum=-0.1).init(jax.random.key(0), x, False)
    with pytest.raises(ValueError, match="kernel_size"):
        DeconvConv(4, (3, 3, 3)).init(jax.random.key(0), x, False)
    with pytest.raises(TypeError, match="floating"):
        DeconvDense(4).init(jax.random.key(0), jnp.ones((2, 3), jnp.int32), False)


def test_default_init_is_pytorchs():
    """Linen layers: PyTorch's defaults, weight and bias U(+-1/sqrt fan_in)."""
    x = jnp.ones((2, 6, 6, 32))
    conv = DeconvConv(48, 3).init(jax.random.key(0), x, use_running_average=True)["params"]
    dense = DeconvDense(512).init(jax.random.key(1), jnp.ones((4, 256)), use_running_average=True)
    for p, fan_in in ((conv, 3 * 3 * 32), (dense["params"], 256)):
        w = np.asarray(p["kernel"], np.float64)
        b = np.asarray(p["bias"], np.float64)
        bound = 1 / np.sqrt(fan_in) * (1 + 1e-6)
        assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
        assert w.var() * fan_in == pytest.approx(1 / 3, rel=0.05)
        assert np.abs(b).max() > 0.5 / np.sqrt(fan_in)

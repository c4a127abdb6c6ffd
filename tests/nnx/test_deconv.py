"""NNX DeconvConv / DeconvDense: agreement with the ops, running averages, modes, pmap."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from convjax import ops
from convjax.nnx.deconv import DeconvConv, DeconvDense, DeconvStat
from tests.helpers import shard_for_pmap


def rand(key, shape, scale=1.0):
    """Test data from NumPy (no per-shape JAX random compiles), float32."""
    return (scale * np.random.default_rng(key).standard_normal(shape)).astype(np.float32)


@nnx.jit
def call(model, x):
    return model(x)


def test_conv_train_eval_running_averages():
    layer = DeconvConv(6, 5, 3, strides=2, block=4, num_iters=6, rngs=nnx.Rngs(0))
    assert isinstance(layer.mean, nnx.BatchStat) and isinstance(layer.deconv, DeconvStat)
    assert layer.kernel.shape == (3, 3, 6, 5) and layer.mean.shape == (1, 18)  # b = 2, shared
    layer.bias[...] = jnp.asarray(rand(9, (5,)))
    x1, x2 = rand(1, (2, 8, 8, 6)) + 1.0, rand(2, (2, 8, 8, 6)) * 2.0
    kw = dict(strides=2, padding=1, block=4, num_iters=6)  # the layer pads k // 2 by default
    k, b = layer.kernel[...], layer.bias[...]

    y1 = call(layer, x1)
    train_op = jax.jit(functools.partial(ops.deconv_conv, **kw))
    want1, s1 = train_op(x1, k, b)
    np.testing.assert_allclose(y1, want1, rtol=1e-5, atol=1e-5)
    eye = np.broadcast_to(np.eye(18), (1, 18, 18))
    np.testing.assert_allclose(layer.mean[...], 0.1 * s1.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.deconv[...], 0.9 * eye + 0.1 * s1.deconv, atol=1e-6)

    call(layer, x2)
    _, s2 = train_op(x2, k, b)
    np.testing.assert_allclose(layer.mean[...], 0.09 * s1.mean + 0.1 * s2.mean, atol=1e-5)
    np.testing.assert_allclose(
        layer.deconv[...], 0.81 * eye + 0.09 * s1.deconv + 0.1 * s2.deconv, atol=1e-5
    )

    layer.eval()
    before = (np.asarray(layer.mean[...]), np.asarray(layer.deconv[...]))
    running = ops.DeconvStats(layer.mean[...], layer.deconv[...])
    y_eval = call(layer, x1)
    np.testing.assert_allclose(
        y_eval, ops.deconv_conv_eval(x1, k, b, running, strides=2, padding=1), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(layer.mean[...], before[0])  # eval never updates
    np.testing.assert_array_equal(layer.deconv[...], before[1])
    layer.train()
    assert layer.use_running_average is False
    view = nnx.view(layer, use_running_average=True)
    np.testing.assert_allclose(call(view, x1), y_eval, rtol=1e-6, atol=1e-6)


def test_freeze_stats_keeps_statistics_and_matches_eval():
    layer = DeconvConv(3, 4, (3, 3), num_iters=10, rngs=nnx.Rngs(1))
    x = rand(3, (2, 6, 6, 3))
    call(layer, x)
    frozen = np.asarray(layer.deconv[...])
    layer.freeze_stats = True
    y = call(layer, rand(4, (2, 6, 6, 3)))
    np.testing.assert_array_equal(layer.deconv[...], frozen)
    np.testing.assert_allclose(y, layer(rand(4, (2, 6, 6, 3)), use_running_average=True))


def test_optimizer_wrt_param_leaves_stats_and_trains():
    model = DeconvConv(  # 1-D, list arguments
        2, 3, [3], strides=[1], padding=[(1, 1)], num_iters=5, sampling_stride=1, rngs=nnx.Rngs(2)
    )
    opt = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    x = rand(5, (4, 12, 2)) * 3.0 + 2.0
    target = rand(6, (4, 12, 3))

    @nnx.jit
    def step(model, opt, x):
        def loss_fn(model):
            return jnp.mean((model(x) - target) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss, grads

    losses = []
    for _ in range(4):
        loss, grads = step(model, opt, x)
        losses.append(float(loss))
    assert set(jax.tree.leaves(nnx.state(grads, DeconvStat))) == set()  # no grads for stats
    assert losses[-1] < losses[0]
    assert not np.allclose(model.mean[...], 0.0)  # updated by the forward pass, not by optax


def test_pmap_axis_name_matches_single_device(num_devices):
    layer = DeconvConv(3, 4, 3, axis_name="batch", sampling_stride=1, rngs=nnx.Rngs(3))
    single = DeconvConv(3, 4, 3, sampling_stride=1, rngs=nnx.Rngs(3))
    x = rand(7, (num_devices * 2, 5, 5, 3)) + 0.5
    graphdef, state = nnx.split(layer)

    def fwd(state, x):
        model = nnx.merge(graphdef, state)
        y = model(x)
        return y, nnx.state(model, DeconvStat)

    y, stats = jax.pmap(fwd, axis_name="batch", in_axes=(None, 0))(
        state, shard_for_pmap(x, num_devices)
    )
    y1 = call(single, x)
    np.testing.assert_allclose(y.reshape(y1.shape), y1, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stats["deconv"][...][3], single.deconv[...], rtol=1e-4, atol=1e-4)


def test_bf16_compute_fp32_params_and_stats():
    layer = DeconvConv(4, 4, 3, dtype=jnp.bfloat16, rngs=nnx.Rngs(4))
    y = call(layer, (rand(8, (2, 6, 6, 4)) * 1e3).astype(jnp.bfloat16))
    assert y.dtype == jnp.bfloat16 and jnp.isfinite(y).all()
    assert layer.kernel[...].dtype == jnp.float32
    assert layer.deconv[...].dtype == jnp.float32 and jnp.isfinite(layer.deconv[...]).all()


def test_dense_train_eval_and_no_bias():
    head = DeconvDense(12, 3, block=8, use_bias=False, num_iters=7, rngs=nnx.Rngs(5))
    assert head.bias is None and head.mean.shape == (1, 4)  # gcd: b = 4, one shared D
    x = rand(10, (32, 12)) + 1.0
    y = call(head, x)
    want, s = ops.deconv_dense(x, head.kernel[...], None, block=8, num_iters=7)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(head.deconv[...], 0.9 * np.eye(4) + 0.1 * s.deconv, atol=1e-6)
    head.eval()
    running = ops.DeconvStats(head.mean[...], head.deconv[...])
    np.testing.assert_allclose(
        call(head, x), ops.deconv_dense_eval(x, head.kernel[...], None, running), atol=1e-5
    )


def test_constructor_and_call_errors():
    with pytest.raises(ValueError, match="feature_group_count"):
        DeconvConv(6, 4, 3, feature_group_count=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="out_features"):
        DeconvConv(4, 6, 3, feature_group_count=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="momentum"):
        DeconvConv(4, 4, 3, momentum=1.5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="kernel_size"):
        DeconvConv(4, 4, (3, 3, 3, 3), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="block"):
        DeconvDense(4, 4, block=0, rngs=nnx.Rngs(0))
    layer = DeconvConv(4, 4, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="input features"):
        layer(jnp.ones((1, 5, 5, 3)))
    with pytest.raises(ValueError, match="spatial dims"):
        layer(jnp.ones((1, 5, 4)))


def test_default_init_is_pytorchs():
    """FastDeconv / Delinear keep PyTorch's defaults: weight and bias U(+-1/sqrt fan_in)."""
    conv = DeconvConv(32, 48, 3, rngs=nnx.Rngs(0))
    dense = DeconvDense(256, 512, rngs=nnx.Rngs(1))
    for layer, fan_in in ((conv, 3 * 3 * 32), (dense, 256)):
        w = np.asarray(layer.kernel[...], np.float64)
        b = np.asarray(layer.bias[...], np.float64)
        bound = 1 / np.sqrt(fan_in) * (1 + 1e-6)
        assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
        assert w.var() * fan_in == pytest.approx(1 / 3, rel=0.05)
        assert np.abs(b).max() > 0.5 / np.sqrt(fan_in)  # not the old zero bias
    zero = DeconvConv(4, 4, 3, bias_init=nnx.initializers.zeros_init(), rngs=nnx.Rngs(0))
    assert float(jnp.abs(zero.bias[...]).max()) == 0.0

"""NNX FlexConv/CKConv: parameters, penalty, resolution change, and training across a bucket."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from convjax.nnx import CKConv, FlexConv, MaskParam, change_resolution, total_aliasing_penalty

SMALL = dict(hidden_features=4, num_layers=2)


def test_module_parameters_and_output():
    layer = FlexConv(2, 3, 9, rngs=nnx.Rngs(0), **SMALL)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 2)), jnp.float32)
    y = layer(x)
    assert y.shape == (2, 8, 8, 3) and y.dtype == jnp.float32
    masks = nnx.state(layer, MaskParam)
    assert set(masks.keys()) == {"mask_mu", "mask_sigma"}
    np.testing.assert_array_equal(layer.mask_sigma[...], np.float32([0.075, 0.075]))  # itself
    assert issubclass(MaskParam, nnx.Param)  # trained by nnx.Optimizer(wrt=nnx.Param) too
    params = nnx.state(layer, nnx.Param)
    assert "mask_mu" in params and "kernel_net" in params and "bias" in params
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(params))
    assert int(layer.active_kernel_size()) == 5 and layer.bucket_sizes() == (5, 9)
    np.testing.assert_allclose(layer.sigma, [0.075, 0.075], rtol=1e-5)
    y16 = FlexConv(2, 3, 9, dtype=jnp.bfloat16, rngs=nnx.Rngs(0), **SMALL)(x)
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y16, np.float32), y, atol=0.05 * float(jnp.abs(y).max()))

    ck = CKConv(2, 4, 5, causal=True, rngs=nnx.Rngs(1), **SMALL)
    assert ck(jnp.ones((1, 12, 2))).shape == (1, 12, 4)
    assert not jax.tree.leaves(nnx.state(ck, MaskParam))


def test_total_aliasing_penalty_sums_every_flexconv():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.a = FlexConv(1, 2, 9, rngs=rngs, **SMALL)
            self.b = FlexConv(2, 2, 17, rngs=rngs, **SMALL)
            self.c = CKConv(2, 2, 5, rngs=rngs, **SMALL)  # SIREN: no penalty
            self.lin = nnx.Linear(2, 2, rngs=rngs)

    net = Net(nnx.Rngs(0))
    total = total_aliasing_penalty(net)
    expected = net.a.aliasing_penalty() + net.b.aliasing_penalty()
    assert float(total) > 0 and float(total) == pytest.approx(float(expected), rel=1e-6)
    assert float(net.c.aliasing_penalty()) == 0.0
    assert float(total_aliasing_penalty(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))) == 0.0
    grads = nnx.grad(lambda m: total_aliasing_penalty(m))(net)
    assert float(jnp.abs(grads["a"]["kernel_net"]["gabor"][0]["w"][...]).sum()) > 0


def test_change_resolution_copies_and_resamples():
    layer = FlexConv(1, 1, 9, rngs=nnx.Rngs(0), **SMALL)
    hi = change_resolution(layer, 2)
    assert layer.resolution_factor == 1.0 and hi.resolution_factor == 2.0
    assert hi.bucket_sizes() == (5, 9, 17)
    k_lo, k_hi = layer.kernel(), hi.kernel()
    assert k_hi.shape == (17, 17, 1, 1)
    np.testing.assert_allclose(k_hi[::2, ::2] * 4.0, k_lo, rtol=1e-5, atol=1e-7)  # (1/2)^2 scale
    assert hi(jnp.ones((1, 16, 16, 1))).shape == (1, 16, 16, 1)
    with pytest.raises(ValueError, match="factor"):
        change_resolution(layer, 1.1)


def test_first_adam_step_moves_sigma_as_the_reference():
    """The trainer's optimizer (Adam, masks at 0.1x lr) moves sigma by the reference's step.

    The reference trains sigma itself: Adam's first step is ``-lr_mask * g / (|g| + eps)``
    with ``g = dL/dsigma``, i.e. ~``lr_mask`` per step (a softplus parametrisation would move
    sigma ~0.072x as far at sigma = 0.075).
    """
    from convjax.train.optim import make_task_optimizer, param_labels

    layer = FlexConv(2, 3, 17, buckets=(17,), rngs=nnx.Rngs(0), **SMALL)  # crop: 3 x 3 taps
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 8, 8, 2)), jnp.float32)
    cot = jnp.asarray(rng.standard_normal((2, 8, 8, 3)), jnp.float32)
    state = nnx.state(layer, nnx.Param)
    lr = 0.01
    config = dict(name="adam", learning_rate=lr, warmup_steps=0, schedule="constant")
    tx, _ = make_task_optimizer(config, param_labels(state), num_steps=10)
    params = nnx.to_pure_dict(state)
    graphdef, _ = nnx.split(layer, nnx.Param)

    def loss(p):
        model = nnx.merge(graphdef, p)
        return jnp.vdot(model(x), cot)

    grads = jax.jit(jax.grad(loss))(params)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    # dL/dsigma: the gradient the reference's optimizer sees for its sigma parameter
    # (the smooth floor changes it by a factor 1 - 9e-7 at sigma = 0.075)
    g = np.asarray(grads["mask_sigma"], np.float64)
    assert np.all(np.abs(g) > 1e-3)
    reference_step = -0.1 * lr * g / (np.abs(g) + 1e-8)  # Adam's first step, 0.1x lr
    np.testing.assert_allclose(updates["mask_sigma"], reference_step, rtol=1e-4)
    np.testing.assert_allclose(np.abs(updates["mask_sigma"]), 0.1 * lr, rtol=1e-3)


def _target(x):
    """y[t] = x[t - 2] - x[t + 2]: needs taps 2 steps out, where the init mask is ~0.004."""
    return jnp.roll(x, 2, axis=1) - jnp.roll(x, -2, axis=1)


def _data(batch=8, length=24):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, length, 1)), jnp.float32)
    return x, _target(x)


def _layer():
    return FlexConv(
        1, 1, 17, num_spatial_dims=1, padding_mode="circular", rngs=nnx.Rngs(0), **SMALL
    )


def test_training_grows_the_mask_across_buckets_in_one_jitted_step():
    layer = _layer()
    opt = nnx.Optimizer(layer, optax.adam(0.05), wrt=nnx.Param)
    traces = []

    @nnx.jit
    def step(model, optimizer, x, y):
        traces.append(None)  # runs only while tracing

        def loss_fn(m):
            return jnp.mean((m(x) - y) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss, model.active_kernel_size()

    x, y = _data()
    sizes, losses = [], []
    for _ in range(25):  # the crop leaves bucket 5 at step ~15
        loss, size = step(layer, opt, x, y)
        sizes.append(int(size))
        losses.append(float(loss))
    assert sizes[0] == 5 and max(sizes) >= 9, sizes  # the crop moved to a larger bucket
    assert len(traces) == 1  # ... without re-tracing the step
    assert losses[-1] < 0.5 * losses[0]
    # now drive the output to zero: the mask shrinks, sigma stays positive and finite
    zeros = jnp.zeros_like(y)
    for _ in range(15):
        loss, size = step(layer, opt, x, zeros)
    assert len(traces) == 1
    sigma = np.asarray(layer.sigma)
    assert np.all(sigma > 0) and np.all(np.isfinite(sigma))
    assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(nnx.state(layer)))


def test_training_across_buckets_under_pmap(num_devices):
    layer = _layer()
    graphdef, params = nnx.split(layer)
    tx = optax.adam(0.05)
    traces = []

    def step(params, opt_state, x, y):
        traces.append(None)

        def loss_fn(p):
            return jnp.mean((nnx.merge(graphdef, p)(x) - y) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        grads = jax.lax.pmean(grads, "batch")
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        size = nnx.merge(graphdef, params).active_kernel_size()
        return params, opt_state, jax.lax.pmean(loss, "batch"), size

    pstep = jax.pmap(step, axis_name="batch")
    replicate = lambda tree: jax.tree.map(lambda a: jnp.stack([a] * num_devices), tree)
    p_params, p_opt = replicate(params), replicate(tx.init(params))
    x, y = _data(batch=num_devices)
    xs, ys = x.reshape(num_devices, 1, *x.shape[1:]), y.reshape(num_devices, 1, *y.shape[1:])
    p_params, p_opt, _, size = pstep(p_params, p_opt, xs, ys)
    # pmap may trace once more when its inputs switch from host-stacked to pmap-sharded
    # arrays (step 2); count from there: the bucket change itself must not re-trace.
    p_params, p_opt, _, size = pstep(p_params, p_opt, xs, ys)
    traced = len(traces)
    sizes = [np.asarray(size)]
    for _ in range(23):
        p_params, p_opt, loss, size = pstep(p_params, p_opt, xs, ys)
        sizes.append(np.asarray(size))
    assert np.all(sizes[0] == 5) and max(int(s.max()) for s in sizes) >= 9
    assert all(np.all(s == s[0]) for s in sizes)  # every device took the same branch
    assert len(traces) == traced
    for leaf in jax.tree.leaves(p_params):
        np.testing.assert_array_equal(leaf[0], leaf[-1])  # parameters stay replicated


def test_errors_name_the_argument():
    layer = FlexConv(2, 3, 9, rngs=nnx.Rngs(0), **SMALL)
    with pytest.raises(ValueError, match="spatial dims"):
        layer(jnp.ones((1, 8, 2)))
    with pytest.raises(ValueError, match="in_features"):
        layer(jnp.ones((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="padding_mode"):
        FlexConv(2, 3, 9, padding_mode="learned", rngs=nnx.Rngs(0), **SMALL)(jnp.ones((1, 8, 8, 2)))
    with pytest.raises(ValueError, match="kernel_size"):
        FlexConv(2, 3, 8, rngs=nnx.Rngs(0), **SMALL)
    with pytest.raises(ValueError, match="num_spatial_dims"):
        FlexConv(2, 3, 9, num_spatial_dims=4, rngs=nnx.Rngs(0), **SMALL)
    with pytest.raises(ValueError, match="causal"):
        FlexConv(2, 3, 9, causal=True, num_spatial_dims=2, rngs=nnx.Rngs(0), **SMALL)


def test_length_zero_input_is_one_clear_error():
    layer = FlexConv(2, 3, 9, num_spatial_dims=1, rngs=nnx.Rngs(0), **SMALL)
    with pytest.raises(ValueError, match=r"^`x` has spatial size \(0,\) \(shape \(2, 0, 2\)\)"):
        layer(jnp.ones((2, 0, 2)))

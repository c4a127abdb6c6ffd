"""nnx padding: PadParam separation, pop_padding_losses, Pad modes, train step, pmap."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from convjax.nnx import Conv, Pad, PaddingLoss, PaddingModule, PadParam, pop_padding_losses
from convjax.ops import PAD_MODES, pad, padding_loss
from tests.helpers import shard_for_pmap


class Net(nnx.Module):
    def __init__(self, rngs):
        self.c1 = Conv(3, 4, 3, padding_mode="learned", rngs=rngs)
        self.c2 = Conv(
            4,
            2,
            3,
            strides=2,
            padding_mode="learned",
            padding_kwargs=dict(mixing="full", shared=False),
            rngs=rngs,
        )

    def __call__(self, x):
        return self.c2(jax.nn.relu(self.c1(x))).mean(axis=(1, 2))


def task_loss(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


def perturb_padding(model, seed=0):
    """Move the padding filters off their init so every gradient path is exercised."""
    rng = np.random.default_rng(seed)
    for _, var in nnx.iter_graph(model):
        if isinstance(var, PadParam):
            var[...] = var[...] + 0.3 * jnp.asarray(rng.normal(size=var[...].shape), jnp.float32)


def data(batch=8, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(batch, 6, 5, 3)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(batch, 2)), jnp.float32)
    return x, y


def test_padparam_is_not_a_param():
    model = Net(nnx.Rngs(0))
    assert not issubclass(PadParam, nnx.Param)
    param_paths = {p for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    pad_paths = {p for p, _ in nnx.to_flat_state(nnx.state(model, PadParam))}
    assert pad_paths and not (param_paths & pad_paths)
    assert all("pad" in p for p in pad_paths)
    # a task optimizer over nnx.Param never touches the padding filters
    opt = nnx.Optimizer(model, optax.sgd(1.0), wrt=nnx.Param)
    before = nnx.state(model, PadParam)
    grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    opt.update(model, grads)
    jax.tree.map(np.testing.assert_array_equal, before, nnx.state(model, PadParam))


def test_separation_exact_zeros_and_one_backward_pass():
    model = Net(nnx.Rngs(0))
    perturb_padding(model)
    x, y = data()
    diff = nnx.DiffState(0, (nnx.Param, PadParam))

    @nnx.jit
    def grads(model, x, y):
        def task_only(m):
            out = task_loss(m, x, y)
            pop_padding_losses(m)
            return out

        def pad_only(m):
            m(x)
            return pop_padding_losses(m)

        def total(m):
            return task_loss(m, x, y) + pop_padding_losses(m)

        return (
            nnx.grad(task_only, argnums=diff)(model),
            nnx.grad(pad_only, argnums=diff)(model),
            nnx.grad(total, argnums=diff)(model),
        )

    g_task, g_pad, g_total = grads(model, x, y)
    for leaf in jax.tree.leaves(nnx.state(g_task, PadParam)):
        np.testing.assert_array_equal(np.asarray(leaf), 0.0)
    for leaf in jax.tree.leaves(nnx.state(g_pad, nnx.Param)):
        np.testing.assert_array_equal(np.asarray(leaf), 0.0)
    assert all(float(jnp.abs(a).sum()) > 0 for a in jax.tree.leaves(nnx.state(g_task, nnx.Param)))
    assert all(float(jnp.abs(a).sum()) > 0 for a in jax.tree.leaves(nnx.state(g_pad, PadParam)))
    jax.tree.map(
        np.testing.assert_array_equal, nnx.state(g_total, nnx.Param), nnx.state(g_task, nnx.Param)
    )
    jax.tree.map(
        np.testing.assert_array_equal, nnx.state(g_total, PadParam), nnx.state(g_pad, PadParam)
    )


def test_task_gradient_flows_through_padded_values_into_x():
    pm = PaddingModule(3, 1, rngs=nnx.Rngs(0))
    perturb_padding(pm)
    x = data()[0]
    grad = nnx.jit(nnx.grad(lambda m, a: jnp.sum(m(a)[:, 0] ** 2), argnums=1))
    g = grad(pm, x)  # row 0 of the output is padding, not x
    assert float(jnp.abs(g[:, :2]).sum()) > 0
    np.testing.assert_array_equal(np.asarray(g[:, 2:]), 0.0)  # depth 2: only 2 rows feed it


def test_pop_padding_losses_records_sums_and_resets():
    model = Net(nnx.Rngs(0))
    perturb_padding(model)
    x, _ = data()
    h = model.c1(x)
    model.c2(jax.nn.relu(h))
    p1 = model.c1.pad.padding_params()
    p2 = model.c2.pad.padding_params()
    expected = padding_loss(p1, x) + padding_loss(p2, jax.nn.relu(h))
    np.testing.assert_allclose(float(pop_padding_losses(model)), float(expected), rtol=1e-6)
    assert float(pop_padding_losses(model)) == 0.0  # popped
    model(x)
    model(x)  # two forward passes accumulate
    np.testing.assert_allclose(float(pop_padding_losses(model)), 2 * float(expected), rtol=1e-6)
    model.eval()
    model(x)
    assert float(pop_padding_losses(model)) == 0.0  # eval mode records nothing
    model.train()
    model(x)
    assert float(pop_padding_losses(model)) > 0.0
    plain = Conv(3, 4, 3, padding_mode="reflect", rngs=nnx.Rngs(0))
    plain(x)
    assert float(pop_padding_losses(plain)) == 0.0


@pytest.mark.parametrize("mode", [*PAD_MODES, "partial", "learned"])
def test_pad_modes(mode):
    x = data()[0]
    layer = Pad(3, ((1, 2), (2, 0)), mode, rngs=nnx.Rngs(0))
    ops_mode = {"partial": "zero", "learned": "replicate"}.get(mode, mode)  # learned init
    expected = pad(x, ((1, 2), (2, 0)), ops_mode)
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(expected), atol=1e-6)
    assert layer(x, pad_width=1).shape == (8, 8, 7, 3)


@pytest.mark.parametrize(
    "make,exc,match",
    [
        (lambda: Pad(3, 1, "mirror"), ValueError, "`mode` must be one of"),
        (lambda: Pad(3, 1, "zero", padding_kwargs={"depth": 1}), ValueError, "padding_kwargs"),
        (lambda: PaddingModule(3, 1, depth=0), ValueError, "depth"),
        (lambda: PaddingModule(3, -1), ValueError, "non-negative"),
        (lambda: PaddingModule(3, 1)(jnp.ones((1, 4, 4, 2))), ValueError, "3\\)"),
        (lambda: Pad(3, 1)(jnp.ones((1, 4, 4, 2))), ValueError, "3 features"),
        (lambda: PaddingModule(3, 1)(jnp.ones((1, 4, 4, 3), jnp.int32)), TypeError, "floating"),
    ],
)
def test_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_two_optimizer_train_step_under_nnx_jit():
    """The padding optimizer trains the filters on the padding loss; the task optimizer,
    stepped with the same gradient tree, never sees them."""
    model = Net(nnx.Rngs(0))
    opt_task = nnx.Optimizer(model, optax.sgd(0.05), wrt=nnx.Param)
    opt_pad = nnx.Optimizer(model, optax.adam(0.02), wrt=PadParam)
    yy, xx = jnp.meshgrid(jnp.linspace(0, 1, 6), jnp.linspace(0, 1, 5), indexing="ij")
    x = (
        jnp.stack([xx + yy, xx - yy, xx * 0.5], -1)[None].repeat(4, 0)
        * jnp.arange(1, 5)[:, None, None, None]
    )
    y = jnp.ones((4, 2))

    @nnx.jit
    def step(model, opt_task, opt_pad):
        def loss_fn(m):
            task = task_loss(m, x, y)
            pad_loss = pop_padding_losses(m)
            return task + pad_loss, (task, pad_loss)

        diff = nnx.DiffState(0, (nnx.Param, PadParam))
        grads, (task, pad_loss) = nnx.grad(loss_fn, argnums=diff, has_aux=True)(model)
        opt_task.update(model, nnx.state(grads, nnx.Param))
        opt_pad.update(model, nnx.state(grads, PadParam))
        return task, pad_loss

    history = [step(model, opt_task, opt_pad) for _ in range(40)]
    assert history[-1][1] < 0.2 * history[0][1]  # padding loss falls
    assert history[-1][0] < history[0][0]  # task loss falls
    assert float(pop_padding_losses(model)) == 0.0  # nothing left behind


def test_pmap_functional_step_equals_single_device(num_devices):
    """split/merge step under jax.pmap with pmean'd gradients == one device, global batch."""
    model = Net(nnx.Rngs(0))
    perturb_padding(model)
    graphdef, state = nnx.split(model)
    x, y = data(batch=2 * num_devices, seed=1)

    def grads_of(state, x, y):
        def loss_fn(state):
            m = nnx.merge(graphdef, state)
            total = task_loss(m, x, y) + pop_padding_losses(m)
            return total, nnx.state(m, PaddingLoss)

        return jax.grad(loss_fn, has_aux=True)(state)

    def per_device(state, x, y):
        g, leftover = grads_of(state, x, y)
        return jax.lax.pmean(g, "batch"), leftover

    reps = jax.tree.map(lambda a: jnp.broadcast_to(a, (num_devices, *a.shape)), state)
    g_pmap, leftover = jax.pmap(per_device, axis_name="batch")(
        reps, shard_for_pmap(x, num_devices), shard_for_pmap(y, num_devices)
    )
    g_single, _ = jax.jit(grads_of)(state, x, y)
    for a, b in zip(jax.tree.leaves(g_pmap), jax.tree.leaves(g_single)):
        np.testing.assert_allclose(np.asarray(a[0]), np.asarray(b), rtol=2e-4, atol=1e-6)
    for leaf in jax.tree.leaves(leftover):
        np.testing.assert_array_equal(np.asarray(leaf), 0.0)
    for leaf in jax.tree.leaves(nnx.state(g_single, PadParam)):
        assert float(jnp.abs(leaf).sum()) > 0

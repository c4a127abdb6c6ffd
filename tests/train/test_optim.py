"""Optimizers: label tree from Variable types, 0.1x mask learning rate, schedule, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from convjax.nnx import FlexConv, MaskParam
from convjax.train.optim import (
    DEFAULT_GROUP,
    MASK_GROUP,
    make_padding_optimizer,
    make_schedule,
    make_task_optimizer,
    param_labels,
)


class _WithMask(nnx.Module):
    def __init__(self) -> None:
        self.kernel = nnx.Param(jnp.ones((2, 3)))
        self.bias = nnx.Param(jnp.ones((3,)))
        self.mu = MaskParam(jnp.ones((2,)))


def test_labels_follow_variable_types():
    labels = param_labels(nnx.state(_WithMask(), nnx.Param))
    assert labels == {"kernel": DEFAULT_GROUP, "bias": DEFAULT_GROUP, "mu": MASK_GROUP}


def test_real_flexconv_mask_params_are_labelled():
    layer = nnx.eval_shape(lambda: FlexConv(2, 3, 9, rngs=nnx.Rngs(0)))  # abstract: no compute
    state = nnx.state(layer, nnx.Param)
    labels = param_labels(state)
    flat = dict(nnx.to_flat_state(state))
    n_mask = sum(isinstance(v, MaskParam) for v in flat.values())
    assert n_mask >= 2  # mean and scale of the Gaussian mask
    assert sum(leaf == MASK_GROUP for leaf in jax.tree.leaves(labels)) == n_mask
    assert sum(leaf == DEFAULT_GROUP for leaf in jax.tree.leaves(labels)) == len(flat) - n_mask


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_mask_group_gets_a_tenth_of_the_step(name):
    """Same gradient on every leaf: the mask leaf moves exactly 0.1x as far (first step)."""
    model = _WithMask()
    state = nnx.state(model, nnx.Param)
    params = nnx.to_pure_dict(state)
    config = dict(name=name, learning_rate=0.5, warmup_steps=0, momentum=0.0, weight_decay=0.0)
    tx, _ = make_task_optimizer(config, param_labels(state), num_steps=10)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.25), params)
    updates, _ = tx.update(grads, tx.init(params), params)
    default_step = np.asarray(updates["bias"])
    mask_step = np.asarray(updates["mu"])
    assert np.all(default_step != 0)
    np.testing.assert_allclose(mask_step, 0.1 * default_step[: mask_step.size], rtol=1e-6)


def test_weight_decay_only_on_kernels():
    state = nnx.state(_WithMask(), nnx.Param)
    params = nnx.to_pure_dict(state)
    config = dict(name="sgd", learning_rate=1.0, warmup_steps=0, momentum=0.0, weight_decay=0.1)
    tx, _ = make_task_optimizer(config, param_labels(state), num_steps=10)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_allclose(updates["kernel"], -0.1 * np.ones((2, 3)), rtol=1e-6)
    assert np.all(np.asarray(updates["bias"]) == 0) and np.all(np.asarray(updates["mu"]) == 0)


def test_warmup_cosine_schedule_values():
    sched = make_schedule(dict(learning_rate=0.2, warmup_steps=10), num_steps=110)
    assert float(sched(0)) == 0.0
    assert float(sched(5)) == pytest.approx(0.1)
    assert float(sched(10)) == pytest.approx(0.2)
    # Half way through the cosine part: (1 + cos(pi / 2)) / 2 = 0.5.
    assert float(sched(60)) == pytest.approx(0.1, rel=1e-5)
    assert float(sched(110)) == pytest.approx(0.0, abs=1e-7)
    const = make_schedule(dict(learning_rate=0.3, schedule="constant", warmup_steps=0), num_steps=5)
    assert float(const(4)) == pytest.approx(0.3)


def test_padding_optimizer_steps_pad_params():
    tx = make_padding_optimizer(dict(name="sgd", learning_rate=0.5, momentum=0.0))
    params = {"w": jnp.ones((3,))}
    updates, _ = tx.update({"w": jnp.ones((3,))}, tx.init(params), params)
    np.testing.assert_allclose(optax.apply_updates(params, updates)["w"], 0.5)


@pytest.mark.parametrize(
    "config, match",
    [
        (dict(name="lion"), "optimizer.name"),
        (dict(name="sgd", schedule="linear"), "optimizer.schedule"),
        (dict(name="sgd", warmup_steps=-1), "warmup_steps"),
        (dict(name="adam", weight_decay=-0.1), "weight_decay"),
        (dict(name="adam", mask_lr_factor=-1.0), "mask_lr_factor"),
    ],
)
def test_bad_task_optimizer_config(config, match):
    with pytest.raises(ValueError, match=match):
        make_task_optimizer(config, {"w": DEFAULT_GROUP}, num_steps=10)


def test_bad_padding_optimizer_and_steps():
    with pytest.raises(ValueError, match="padding_optimizer.name"):
        make_padding_optimizer(dict(name="rmsprop"))
    with pytest.raises(ValueError, match="num_steps"):
        make_schedule(dict(learning_rate=0.1), num_steps=0)


def _torch_sgd_loop(params, grads_per_step, lrs, momentum, weight_decay):
    """PyTorch's ``SGD(momentum, weight_decay)`` update written out per step (dampening 0):
    ``d = g + wd * p; buf = momentum * buf + d (buf = d at step 0); p -= lr * buf``."""
    p = {k: np.asarray(v, np.float64).copy() for k, v in params.items()}
    buf = {}
    for g, lr in zip(grads_per_step, lrs):
        for k in p:
            d = np.asarray(g[k], np.float64) + weight_decay * p[k]
            buf[k] = d if k not in buf else momentum * buf[k] + d
            p[k] = p[k] - lr * buf[k]
    return p


def test_sgd_with_decay_on_all_matches_pytorchs_coupled_l2():
    """``weight_decay_on="all"``: every parameter decays, the decay enters before momentum,
    and the step-schedule learning rate multiplies the momentum buffer, as in PyTorch."""
    model = _WithMask()
    state = nnx.state(model, nnx.Param)
    params = nnx.to_pure_dict(state)
    config = dict(
        name="sgd",
        learning_rate=0.1,
        warmup_steps=0,
        momentum=0.9,
        weight_decay=1e-2,
        weight_decay_on="all",
        schedule="step",
        step_fractions=(0.5,),
        step_factor=0.1,
        mask_lr_factor=1.0,
    )
    tx, sched = make_task_optimizer(config, param_labels(state), num_steps=4)
    rng = np.random.default_rng(0)
    grads = [jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape)), params)]
    grads += [jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape)), params)] * 3
    opt_state, current = tx.init(params), params
    for g in grads:
        updates, opt_state = tx.update(g, opt_state, current)
        current = optax.apply_updates(current, updates)
    lrs = [0.1, 0.1, 0.01, 0.01]
    assert [float(sched(t)) for t in range(4)] == pytest.approx(lrs)
    want = _torch_sgd_loop(params, grads, lrs, 0.9, 1e-2)
    for k in want:
        np.testing.assert_allclose(np.asarray(current[k]), want[k], rtol=1e-5, atol=1e-7)


def test_step_schedule_scales_to_the_run():
    sched = make_schedule(dict(learning_rate=0.1, schedule="step", warmup_steps=0), num_steps=90)
    assert [float(sched(t)) for t in (0, 29, 30, 59, 60, 89)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )
    with pytest.raises(ValueError, match="step_fractions"):
        make_schedule(dict(schedule="step", step_fractions=(0.7, 0.2)), num_steps=10)

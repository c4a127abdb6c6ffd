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
        (dict(name="sgd", schedule="step"), "optimizer.schedule"),
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

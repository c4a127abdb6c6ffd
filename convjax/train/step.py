"""Per-device train and eval steps written with named-axis collectives.

The same Python function runs under ``jax.pmap`` and under ``jax.shard_map`` (see
:mod:`convjax.train.distributed`): it sees its device's slice of the global batch and
averages gradients and metrics with ``lax.pmean`` over ``axis_name``. BatchNorm and
deconvolution statistics are averaged by the modules themselves (models are built with the
same ``axis_name``), so after a step every device holds identical state, equal to a
single-device step on the whole global batch.

One backward pass serves both optimizers: ``total = task_loss + padding_losses +
aliasing_penalty``. The padding losses only depend on ``PadParam`` (they see
``stop_gradient(x)``) and the task forward pass uses ``stop_gradient(PadParam)``, so
``grad(total)`` gives task gradients on ``params`` and padding gradients on ``pad_params``
with exact zeros across.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from convjax.nnx import pop_padding_losses, total_aliasing_penalty
from convjax.train.state import ModelDef, TrainState, stats_filter

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def all_finite(*trees: Any) -> jax.Array:
    """``True`` iff every floating-point leaf of ``trees`` is finite: one fused reduction
    (``all(isfinite(x))`` per leaf, no overflow, unlike a sum of squares).

    Example:
      >>> bool(all_finite({"w": jnp.ones(3)}, {"b": jnp.asarray([jnp.nan])}))
      False
    """
    flags = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(trees)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def step_key(base: jax.Array, step: jax.Array, axis_name: str | None) -> jax.Array:
    """PRNG key of one device in one step: ``fold_in(fold_in(base, step), device_index)``."""
    key = jax.random.fold_in(jax.random.wrap_key_data(base), step)
    if axis_name is not None:
        key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    return key


def _reseed(model: nnx.Module, tags: tuple[str, ...], key: jax.Array) -> None:
    if tags:
        nnx.reseed(model, **{tag: jax.random.fold_in(key, i) for i, tag in enumerate(tags)})


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross entropy in float32: ``-log softmax(logits)[label]``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def make_loss_fn(
    model_def: ModelDef,
    *,
    compute_dtype: Any = None,
    aliasing_weight: float = 1.0,
    aliasing_target: str | None = None,
    aliasing_rule: str | None = None,
) -> Callable[..., tuple[jax.Array, tuple[dict, Metrics]]]:
    """Per-device loss ``loss_fn(params, pad_params, stats, batch, key) -> (total, aux)``.

    ``total = mean_i CE(f(x_i), y_i) + pop_padding_losses(model) + aliasing_weight *
    total_aliasing_penalty(model, target=aliasing_target, rule=aliasing_rule)`` (``None``: each
    FlexConv's own target / rule) with the model in train mode, its RNG streams reseeded
    from ``key``. ``aux = (new_stats, metrics)``: the statistics after the forward pass and
    the per-device ``loss`` (task), ``accuracy``, ``padding_loss``, ``aliasing_penalty``,
    ``total_loss``. Differentiate w.r.t. ``(params, pad_params)``: the task loss gives exact
    zeros on ``pad_params`` and the padding losses exact zeros on ``params``.

    Example (not run as a doctest: a fragment of the trainer's setup):
      >>> loss_fn = make_loss_fn(model_def)  # doctest: +SKIP
      >>> grads = jax.grad(loss_fn, argnums=(0, 1), has_aux=True)(p, pp, s, batch, key)[0]
      ... # doctest: +SKIP
    """

    def loss_fn(params: dict, pad_params: dict, stats: dict, batch: Batch, key: jax.Array):
        model = model_def.merge(params, pad_params, stats, train=True)
        _reseed(model, model_def.rng_tags, key)
        images = batch["image"]
        if compute_dtype is not None:
            images = images.astype(compute_dtype)
        logits = model(images)
        task_loss = cross_entropy(logits, batch["label"]).mean()
        pad_loss = jnp.asarray(pop_padding_losses(model), jnp.float32)
        penalty = total_aliasing_penalty(model, target=aliasing_target, rule=aliasing_rule)
        penalty = jnp.asarray(penalty, jnp.float32)
        total = task_loss + pad_loss + aliasing_weight * penalty
        new_stats = nnx.to_pure_dict(nnx.state(model, stats_filter()))
        accuracy = jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
        metrics = {
            "loss": task_loss,
            "accuracy": accuracy,
            "padding_loss": pad_loss,
            "aliasing_penalty": penalty,
            "total_loss": total,
        }
        return total, (new_stats, metrics)

    return loss_fn


def make_train_step(
    model_def: ModelDef,
    tx_task: optax.GradientTransformation,
    tx_pad: optax.GradientTransformation,
    *,
    schedule: optax.Schedule | None = None,
    axis_name: str | None = "batch",
    compute_dtype: Any = None,
    aliasing_weight: float = 1.0,
    aliasing_target: str | None = None,
    aliasing_rule: str | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """Build the per-device train step ``step(state, batch) -> (state, metrics)``.

    Args:
      model_def: from :func:`convjax.train.state.split_model`.
      tx_task: optimizer over ``state.params`` (pure dict).
      tx_pad: optimizer over ``state.pad_params``.
      schedule: learning-rate schedule, reported as the ``learning_rate`` metric.
      axis_name: the data-parallel axis (``None``: no collectives, plain ``jit``).
      compute_dtype: cast the images to this dtype (e.g. ``jnp.bfloat16``); the loss is
        always computed in float32 and parameters/statistics stay float32.
      aliasing_weight: multiplier of ``convjax.nnx.total_aliasing_penalty(model)``.
      aliasing_target, aliasing_rule: the penalty's target / rule for every FlexConv
        (``None``: each layer's own; see ``convjax.ops.flex_conv_aliasing_penalty``).

    The batch holds ``image`` float ``(B_dev, *spatial, C)`` and ``label`` int ``(B_dev,)``.
    Loss (per device, then ``pmean``): ``mean_i CE(f(x_i), y_i) + sum padding losses +
    aliasing_weight * penalty``. Metrics (``pmean`` over devices): ``loss`` (task loss),
    ``accuracy``, ``padding_loss``, ``aliasing_penalty``, ``total_loss``, ``grad_norm``,
    ``learning_rate``, and ``state_finite`` (1.0 iff every float of the new state, i.e.
    parameters, padding parameters, statistics and both optimizer states, is finite; the
    training loop checks it so that no checkpoint holds a non-finite state).

    Example (``model_def`` from :func:`convjax.train.state.split_model`, ``tx`` and
    ``tx_pad`` optax optimizers; ``tests/train/test_step.py`` runs it in full):
      >>> step = make_train_step(model_def, tx, tx_pad)  # doctest: +SKIP
      >>> p_step = jax.pmap(step, axis_name="batch")  # doctest: +SKIP
    """

    loss_fn = make_loss_fn(
        model_def,
        compute_dtype=compute_dtype,
        aliasing_weight=aliasing_weight,
        aliasing_target=aliasing_target,
        aliasing_rule=aliasing_rule,
    )
    grad_fn = jax.grad(loss_fn, argnums=(0, 1), has_aux=True)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        key = step_key(state.rng, state.step, axis_name)
        (g_task, g_pad), (stats, metrics) = grad_fn(
            state.params, state.pad_params, state.stats, batch, key
        )
        if axis_name is not None:
            g_task, g_pad, metrics = jax.lax.pmean((g_task, g_pad, metrics), axis_name)
        updates, opt_task = tx_task.update(g_task, state.opt_task, state.params)
        params = optax.apply_updates(state.params, updates)
        pad_updates, opt_pad = tx_pad.update(g_pad, state.opt_pad, state.pad_params)
        pad_params = optax.apply_updates(state.pad_params, pad_updates)
        metrics["grad_norm"] = optax.tree.norm(g_task)
        lr = schedule(state.step) if schedule is not None else 0.0
        metrics["learning_rate"] = jnp.asarray(lr, jnp.float32)
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            pad_params=pad_params,
            stats=stats,
            opt_task=opt_task,
            opt_pad=opt_pad,
        )
        finite = all_finite(params, pad_params, stats, opt_task, opt_pad)
        metrics["state_finite"] = finite.astype(jnp.float32)
        return new_state, metrics

    return train_step


def make_eval_step(
    model_def: ModelDef, *, axis_name: str | None = "batch", compute_dtype: Any = None
) -> Callable[[TrainState, Batch], Metrics]:
    """Build the per-device eval step ``eval_step(state, batch) -> sums``.

    The model runs in eval mode (running statistics, no dropout). ``batch`` may carry a
    ``mask`` (float or bool, ``(B_dev,)``) marking real examples in a padded last batch.
    Returns sums over the global batch (``psum`` over devices): ``loss_sum`` (float32),
    ``correct`` and ``count``, so accuracy over a split is ``sum(correct) / sum(count)``
    with every real example counted exactly once.

    Example (not run as a doctest: a fragment of the trainer's setup):
      >>> sums = jax.pmap(make_eval_step(model_def), axis_name="batch")(state, batch)
      ... # doctest: +SKIP
    """

    def eval_step(state: TrainState, batch: Batch) -> Metrics:
        model = model_def.merge(state.params, state.pad_params, state.stats, train=False)
        images = batch["image"]
        if compute_dtype is not None:
            images = images.astype(compute_dtype)
        logits = model(images)
        pop_padding_losses(model)  # eval records nothing we need; keep the model clean
        labels = batch["label"]
        mask = batch.get("mask")
        mask = jnp.ones(labels.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
        correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        sums = {
            "loss_sum": jnp.sum(cross_entropy(logits, labels) * mask),
            "correct": jnp.sum(correct * mask),
            "count": jnp.sum(mask),
        }
        if axis_name is not None:
            sums = jax.lax.psum(sums, axis_name)
        return sums

    return eval_step


__all__ = [
    "all_finite",
    "cross_entropy",
    "make_eval_step",
    "make_loss_fn",
    "make_train_step",
    "step_key",
]

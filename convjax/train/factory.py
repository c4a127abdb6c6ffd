"""Build a model's train state and per-device steps from a config, without the data pipeline.

:func:`make_train_setup` does what :func:`convjax.train.loop.train` does between reading the
data and running the loop: build the model from the config's name and switches
(``padding`` / ``pool`` / ``norm`` / ``conv``), split it into a functional
:class:`~convjax.train.state.TrainState`, create the task optimizer (over ``nnx.Param``) and the
Padding Module's optimizer (over ``PadParam``), and build the per-device train and eval steps
(``task loss + padding losses + aliasing penalty``, both optimizer states stepped in one
backward pass). Benchmarks and tests use it to run exactly the step users train with; the
result is compiled with :class:`convjax.train.distributed.DataParallel` like the trainer does.

Example:
  >>> from convjax.train.distributed import DataParallel
  >>> spec = resolve_spec({"model": "digits_cnn"})
  >>> setup = make_train_setup(spec, num_classes=10, in_features=1, num_steps=100)
  >>> dp = DataParallel("pmap")
  >>> step = dp.compile(setup.train_step, donate_state=True)
  >>> state, metrics = step(dp.replicate(setup.state), dp.shard_batch(batch))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from convjax.train.config import resolve_spec
from convjax.train.optim import make_padding_optimizer, make_task_optimizer, param_labels
from convjax.train.spec import TrainSpec
from convjax.train.state import ModelDef, TrainState, create_train_state, split_model
from convjax.train.step import make_eval_step, make_train_step

#: Compute dtypes accepted by ``config.dtype``.
DTYPES = {"float32": None, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: str) -> Any:
    """``spec.run.dtype`` name -> compute dtype (``None`` for float32: the input dtype)."""
    if name not in DTYPES:
        raise ValueError(f"`config.dtype` must be one of {list(DTYPES)}, got {name!r}.")
    return DTYPES[name]


def count_params(tree: Any) -> int:
    """Number of scalars in a pytree of arrays."""
    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def build_model(
    spec: TrainSpec | Any,
    *,
    num_classes: int,
    in_features: int,
    axis_name: str | None = "batch",
    input_shape: Any = None,
) -> nnx.Module:
    """The model of ``spec`` (:meth:`convjax.models.spec.ModelSpec.build`), seeded by
    ``spec.run.seed``, computing in ``spec.run.dtype`` (a config or mapping is resolved
    first, :func:`convjax.train.config.resolve_spec`). ``input_shape`` (one example, e.g.
    ``(8, 8, 1)``) is the example :func:`convjax.convert` traces for an import-path model.

    Example:
      >>> model = build_model(resolve_spec(), num_classes=10, in_features=1)
    """
    spec = resolve_spec(spec)
    return spec.model.build(
        num_classes=num_classes,
        in_features=in_features,
        seed=spec.run.seed,
        axis_name=axis_name,
        dtype=compute_dtype(spec.run.dtype),
        input_shape=input_shape,
    )


def make_optimizers(
    spec: TrainSpec | Any, param_state: Any, num_steps: int
) -> tuple[Any, Any, Any]:
    """``(tx_task, schedule, tx_pad)`` from ``spec.optimizer`` / ``spec.padding_optimizer``."""
    spec = resolve_spec(spec)
    tx_task, schedule = make_task_optimizer(spec.optimizer, param_labels(param_state), num_steps)
    tx_pad = make_padding_optimizer(spec.padding_optimizer)
    return tx_task, schedule, tx_pad


@dataclasses.dataclass(frozen=True, eq=False)
class TrainSetup:
    """Everything needed to run a config's train step, before any device placement.

    Attributes:
      model_def: the split model (train / eval graphs, RNG streams).
      state: the initial host :class:`TrainState` (step 0, both optimizer states).
      train_step: per-device ``step(state, batch) -> (state, metrics)`` with collectives
        over ``axis_name`` (compile it with ``DataParallel.compile``).
      eval_step: per-device ``eval_step(state, batch) -> sums``.
      tx_task: the task optimizer (over ``state.params``).
      tx_pad: the padding optimizer (over ``state.pad_params``).
      schedule: the task learning-rate schedule.
      num_params: scalars in ``state.params``.
      num_padding_params: scalars in ``state.pad_params`` (0 without learned padding).
    """

    model_def: ModelDef
    state: TrainState
    train_step: Callable[..., Any]
    eval_step: Callable[..., Any]
    tx_task: optax.GradientTransformation
    tx_pad: optax.GradientTransformation
    schedule: optax.Schedule
    num_params: int
    num_padding_params: int


def make_train_setup(
    spec: TrainSpec | Any,
    *,
    num_classes: int,
    in_features: int,
    num_steps: int,
    axis_name: str | None = "batch",
    input_shape: Any = None,
) -> TrainSetup:
    """Model, initial state, both optimizers and the per-device steps of ``spec``.

    The same construction as the trainer (``convjax.train.loop.train``): the model is
    ``spec.model.build(...)`` seeded by ``spec.run.seed``; the task optimizer is
    ``make_task_optimizer(spec.optimizer, ..., num_steps)`` (``num_steps`` sets the cosine
    decay), the padding optimizer ``make_padding_optimizer(spec.padding_optimizer)``; the
    train step is :func:`convjax.train.step.make_train_step` with ``spec.run.aliasing_weight``,
    ``aliasing_target`` and ``aliasing_rule``. The fields and their meaning:
    ``convjax/configs/default.py``.

    Args:
      spec: a :class:`~convjax.train.spec.TrainSpec`, or an ml_collections config / (partial)
        mapping, resolved here (:func:`convjax.train.config.resolve_spec`).
      num_classes: number of logits of the model.
      in_features: input channels (the last dim of the images).
      num_steps: total train steps the learning-rate schedule spans (>= 1).
      axis_name: the data-parallel axis of the steps' collectives (``"batch"`` for
        ``DataParallel``; ``None``: no collectives, for a plain ``jax.jit``).
      input_shape: one example's shape (e.g. ``(8, 8, 1)``); needed by an import-path model
        (``--config.model=<module>:<factory>``) with a switch set (:func:`build_model`).

    Returns:
      A :class:`TrainSetup`.

    Raises:
      ValueError: unknown model or switch value (``ConfigError`` naming the field), a switch
        combination the model rejects, or ``num_steps < 1``.

    Example:
      >>> setup = make_train_setup(resolve_spec(), num_classes=10, in_features=1, num_steps=10)
      >>> setup.state.step
      Array(0, dtype=int32)
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"`num_steps` must be an int >= 1, got {num_steps!r}.")
    spec = resolve_spec(spec)  # a TrainSpec comes back as is; a mapping is resolved here
    model = build_model(
        spec,
        num_classes=num_classes,
        in_features=in_features,
        axis_name=axis_name,
        input_shape=input_shape,
    )
    model_def, params, pad_params, stats, param_state = split_model(model)
    del model
    tx_task, schedule, tx_pad = make_optimizers(spec, param_state, num_steps)
    state = create_train_state(params, pad_params, stats, tx_task, tx_pad, spec.run.seed)
    dtype = compute_dtype(spec.run.dtype)
    train_step = make_train_step(
        model_def,
        tx_task,
        tx_pad,
        schedule=schedule,
        axis_name=axis_name,
        compute_dtype=dtype,
        aliasing_weight=spec.run.aliasing_weight,
        aliasing_target=spec.run.aliasing_target,
        aliasing_rule=spec.run.aliasing_rule,
    )
    eval_step = make_eval_step(model_def, axis_name=axis_name, compute_dtype=dtype)
    return TrainSetup(
        model_def=model_def,
        state=state,
        train_step=train_step,
        eval_step=eval_step,
        tx_task=tx_task,
        tx_pad=tx_pad,
        schedule=schedule,
        num_params=count_params(params),
        num_padding_params=count_params(pad_params),
    )


__all__ = ["TrainSetup", "make_train_setup"]

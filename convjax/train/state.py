"""Functional train state of an NNX model: pure pytrees in, pure pytrees out.

An NNX model is split once with ``nnx.split`` into its graph definitions (static: one in train
mode, one in eval mode) and four groups of variables:

* ``params``: every ``nnx.Param`` (including FlexConv's ``MaskParam``), updated by the task
  optimizer;
* ``pad_params``: every ``PadParam`` (learned padding), updated by the padding optimizer;
* RNG streams (``nnx.RngState``): kept static, reseeded inside every step from
  ``(seed, step, device index)``, so they are never part of the state;
* ``stats``: everything else (BatchNorm statistics, deconvolution running statistics,
  recorded padding losses...), replaced by the values after each forward pass.

The groups are stored as pure dicts (``nnx.to_pure_dict``); ``nnx.merge`` rebuilds the model
from them inside the step, so the step is a pure function of ``(state, batch)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from convjax.nnx import PadParam


def stats_filter() -> nnx.filterlib.Filter:
    """Filter of the ``stats`` group: not Param, PadParam, RNG state or intermediates."""
    return nnx.Not(nnx.Any(nnx.Param, PadParam, nnx.RngState, nnx.Intermediate))


@dataclasses.dataclass(frozen=True, eq=False)
class ModelDef:
    """Static description of a split NNX model (never traced, never checkpointed).

    Attributes:
      train_graph: graph definition with the model in train mode (``model.train()``).
      eval_graph: graph definition in eval mode (``model.eval()``).
      rng_state: the model's RNG streams (``nnx.RngState`` as a pure dict), merged back
        unchanged and reseeded in every step.
      rng_tags: the stream names found in ``rng_state`` (e.g. ``("default", "dropout")``).
    """

    train_graph: Any
    eval_graph: Any
    rng_state: dict
    rng_tags: tuple[str, ...]

    def merge(
        self, params: dict, pad_params: dict, stats: dict, *, train: bool = True
    ) -> nnx.Module:
        """Rebuild the model from pure-dict variable groups."""
        graph = self.train_graph if train else self.eval_graph
        return nnx.merge(graph, params, pad_params, self.rng_state, stats)


@struct.dataclass
class TrainState:
    """Everything a step reads and writes; a pytree of arrays.

    Attributes:
      step: int32 scalar, number of completed train steps.
      params: pure dict of ``nnx.Param`` values (float32).
      pad_params: pure dict of ``PadParam`` values (float32; empty without learned padding).
      stats: pure dict of the remaining variables (batch / deconvolution statistics).
      opt_task: optax state of the task optimizer.
      opt_pad: optax state of the padding optimizer.
      rng: uint32 raw key data of the base PRNG key (``jax.random.key_data``).
    """

    step: jax.Array
    params: dict
    pad_params: dict
    stats: dict
    opt_task: optax.OptState
    opt_pad: optax.OptState
    rng: jax.Array


def split_model(model: nnx.Module) -> tuple[ModelDef, dict, dict, dict, nnx.State]:
    """Split ``model`` into a :class:`ModelDef` and ``(params, pad_params, stats)`` pure dicts.

    Also returns the ``nnx.Param`` state (with Variable types) for building label trees.
    The model is left in train mode.

    Example (not run as a doctest: a fragment of the trainer's setup):
      >>> model_def, params, pad_params, stats, param_state = split_model(model)  # doctest: +SKIP
    """
    filters = (nnx.Param, PadParam, nnx.RngState, stats_filter())
    model.eval()
    eval_graph, *_ = nnx.split(model, *filters)
    model.train()
    train_graph, params, pad_params, rng_state, stats = nnx.split(model, *filters)
    tags = sorted(
        {
            getattr(var, "tag", "default")
            for _, var in nnx.to_flat_state(rng_state)
            if isinstance(var, nnx.RngKey)
        }
    )
    model_def = ModelDef(train_graph, eval_graph, nnx.to_pure_dict(rng_state), tuple(tags))
    pure = lambda s: jax.tree.map(jnp.asarray, nnx.to_pure_dict(s))
    return model_def, pure(params), pure(pad_params), pure(stats), params


def create_train_state(
    params: dict,
    pad_params: dict,
    stats: dict,
    tx_task: optax.GradientTransformation,
    tx_pad: optax.GradientTransformation,
    seed: int,
) -> TrainState:
    """Initial :class:`TrainState` (step 0) with both optimizer states initialised.

    Example (not run as a doctest: a fragment of the trainer's setup):
      >>> state = create_train_state(params, pad_params, stats, tx, tx_pad, seed=0)
      ... # doctest: +SKIP
    """
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        pad_params=pad_params,
        stats=stats,
        opt_task=tx_task.init(params),
        opt_pad=tx_pad.init(pad_params),
        rng=jax.random.key_data(jax.random.key(seed)),
    )


def to_host(tree: Any) -> Any:
    """Copy a pytree of arrays to host numpy arrays."""
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


__all__ = [
    "ModelDef",
    "TrainState",
    "create_train_state",
    "split_model",
    "stats_filter",
    "to_host",
]

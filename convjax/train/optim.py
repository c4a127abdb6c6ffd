"""Optimizers: the task optimizer (per-group learning rates) and the padding optimizer.

The task optimizer updates every ``nnx.Param`` of a model; FlexConv's mask parameters
(``MaskParam``, a ``Param`` subclass) form their own group with a scaled learning rate
(0.1x by default, as in FlexConv), built with ``optax.multi_transform`` on a label tree derived
from the Variable types. The Padding Module's parameters (``PadParam``, not a ``Param``) have
their own optimizer, stepped in the same train step on the padding loss.

Parameters are handled as *pure dicts* (nested dicts of arrays, as
``nnx.to_pure_dict(nnx.state(model, nnx.Param))`` gives), so optimizer states are plain
pytrees that checkpoint and replicate without Flax-specific nodes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from convjax._spec import ConfigError, check_bool, check_float, check_int, check_str, flag, plain
from convjax.nnx import MaskParam

#: Optimizer names accepted by :func:`make_task_optimizer` and :func:`make_padding_optimizer`.
OPTIMIZERS = ("sgd", "adam", "adamw")
#: Learning-rate schedules accepted by :func:`make_schedule`.
SCHEDULES = ("cosine", "constant", "step")
#: Which parameters ``optimizer.weight_decay`` applies to (see :func:`make_task_optimizer`).
WEIGHT_DECAY_ON = ("kernels", "all")

#: Label of ordinary parameters and of FlexConv mask parameters in the label tree.
DEFAULT_GROUP = "default"
MASK_GROUP = "mask"


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """The task optimizer (``--config.optimizer.<field>``), checked.

    Attributes:
      name: one of :data:`OPTIMIZERS`. learning_rate: peak learning rate.
      warmup_steps: linear warm-up steps. schedule: one of :data:`SCHEDULES`.
      end_learning_rate_factor: cosine end value as a fraction of the peak.
      weight_decay: on kernels (ndim >= 2, not mask parameters); coupled L2 for SGD/Adam,
        decoupled for AdamW. momentum / nesterov: SGD. b1 / b2: Adam.
      mask_lr_factor: learning-rate factor of FlexConv's mask parameters.
      grad_clip_norm: global-norm clipping when > 0.
      step_fractions / step_factor: the ``"step"`` schedule multiplies the learning rate by
        ``step_factor`` at each of these fractions of the run (PyTorch's MultiStepLR).
      weight_decay_on: ``"kernels"`` (ndim >= 2, not mask parameters) or ``"all"`` (PyTorch's
        coupled L2 on every parameter, as ``torch.optim.SGD(weight_decay=...)``).

    Example:
      >>> OptimizerSpec(name="sgd", learning_rate=0.1).momentum
      0.9
    """

    name: str = "adam"
    learning_rate: float = 3e-3
    warmup_steps: int = 20
    schedule: str = "cosine"
    end_learning_rate_factor: float = 0.0
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    b1: float = 0.9
    b2: float = 0.999
    mask_lr_factor: float = 0.1
    grad_clip_norm: float = 0.0
    step_fractions: tuple[float, ...] = (1 / 3, 2 / 3)
    step_factor: float = 0.1
    weight_decay_on: str = "kernels"

    #: The config block this spec is read from (error messages name ``--config.<block>.x``).
    block = "optimizer"

    def __post_init__(self) -> None:
        _check_fields(self)

    @classmethod
    def from_config(cls, block: Any) -> Any:
        """This spec from its config block (a complete or partial mapping; missing fields
        take the defaults above, unknown ones are a :class:`ConfigError`)."""
        if isinstance(block, cls):
            return block
        block = plain(block) if block is not None else {}
        if not isinstance(block, Mapping):
            raise ConfigError(f"{flag(cls.block)} must be a block of fields, got {block!r}")
        known = list(cls.config_fields())
        for key in block:
            if key not in known:
                raise ConfigError(f"unknown field {flag(cls.block + '.' + key)}; fields: {known}")
        return cls(**block)

    @classmethod
    def config_fields(cls) -> tuple[str, ...]:
        """The fields of this spec's config block."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_config(self) -> dict[str, Any]:
        """The config block of this spec (inverse of :meth:`from_config`)."""
        return {k: getattr(self, k) for k in self.config_fields()}


@dataclasses.dataclass(frozen=True)
class PaddingOptimizerSpec(OptimizerSpec):
    """The Padding Module's optimizer (``--config.padding_optimizer.<field>``): constant
    learning rate; ``name``, ``learning_rate``, ``momentum`` (SGD), ``weight_decay``,
    ``b1`` / ``b2`` (Adam).

    Example:
      >>> PaddingOptimizerSpec().learning_rate
      0.001
    """

    name: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999

    block = "padding_optimizer"

    @classmethod
    def config_fields(cls) -> tuple[str, ...]:
        """The fields of this spec's config block (the others keep their defaults)."""
        return _PADDING_FIELDS


_PADDING_FIELDS = ("name", "learning_rate", "momentum", "weight_decay", "b1", "b2")


def _check_fields(spec: OptimizerSpec) -> None:
    b = spec.block
    check_str(spec.name, f"{b}.name", OPTIMIZERS)
    check_str(spec.schedule, f"{b}.schedule", SCHEDULES)
    check_int(spec.warmup_steps, f"{b}.warmup_steps", 0)
    check_bool(spec.nesterov, f"{b}.nesterov")
    check_str(spec.weight_decay_on, f"{b}.weight_decay_on", WEIGHT_DECAY_ON)
    fractions = spec.step_fractions
    if isinstance(fractions, (int, float)):
        fractions = (fractions,)
    if (
        not isinstance(fractions, (list, tuple))
        or not all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and 0.0 < f < 1.0
            for f in fractions
        )
        or list(fractions) != sorted(fractions)
    ):
        raise ConfigError(
            f"{flag(b + '.step_fractions')} must be increasing fractions in (0, 1), got "
            f"{spec.step_fractions!r}"
        )
    object.__setattr__(spec, "step_fractions", tuple(float(f) for f in fractions))
    for key in (
        "learning_rate",
        "end_learning_rate_factor",
        "weight_decay",
        "momentum",
        "b1",
        "b2",
        "mask_lr_factor",
        "grad_clip_norm",
        "step_factor",
    ):
        object.__setattr__(spec, key, check_float(getattr(spec, key), f"{b}.{key}", 0))
    object.__setattr__(spec, "warmup_steps", int(spec.warmup_steps))


def param_labels(params_state: nnx.State, mask_type: type | None = None) -> dict:
    """Label tree (a pure dict of str) for ``optax.multi_transform`` from Variable types.

    Args:
      params_state: the ``nnx.State`` of a model's ``nnx.Param`` variables (with Variable
        objects, i.e. before ``nnx.to_pure_dict``).
      mask_type: the Variable type of the reduced-learning-rate group; default
        ``convjax.nnx.MaskParam`` (FlexConv's mask mu / sigma).

    Returns:
      A nested dict with the same keys as ``nnx.to_pure_dict(params_state)`` whose leaves are
      :data:`MASK_GROUP` for ``mask_type`` variables and :data:`DEFAULT_GROUP` otherwise.

    Example (not run as a doctest: a fragment of the trainer's setup):
      >>> labels = param_labels(nnx.state(model, nnx.Param))  # doctest: +SKIP
    """
    if mask_type is None:
        mask_type = MaskParam
    labels: dict = {}
    for path, var in nnx.to_flat_state(params_state):
        node = labels
        for key in path[:-1]:
            node = node.setdefault(key, {})
        is_mask = isinstance(var, mask_type)
        node[path[-1]] = MASK_GROUP if is_mask else DEFAULT_GROUP
    return labels


def make_schedule(config: Any, num_steps: int) -> optax.Schedule:
    """Learning-rate schedule: linear warm-up then cosine decay (or constant, or steps).

    ``lr(t) = peak * t / warmup`` for ``t < warmup``, then
    ``end + (peak - end) * (1 + cos(pi * (t - warmup) / (num_steps - warmup))) / 2``
    (``"cosine"``), ``peak`` (``"constant"``), or ``peak * step_factor^i`` after the ``i``-th
    boundary ``round(f * num_steps)`` of ``step_fractions`` (``"step"``: PyTorch's
    ``MultiStepLR`` scaled to the run, e.g. fractions ``(1/3, 2/3)`` = "x0.1 every 30 of 90
    epochs").

    Config fields: ``learning_rate`` (peak), ``warmup_steps`` (int), ``schedule``
    ("cosine" | "constant" | "step"), ``end_learning_rate_factor`` (end = factor * peak),
    ``step_fractions``, ``step_factor``.

    Example:
      >>> import ml_collections
      >>> sched = make_schedule(ml_collections.ConfigDict(dict(learning_rate=0.1)), 100)
    """
    spec = OptimizerSpec.from_config(config)
    peak, warmup, kind = spec.learning_rate, spec.warmup_steps, spec.schedule
    if num_steps < 1:
        raise ValueError(f"`num_steps` must be >= 1, got {num_steps}.")
    if kind == "step":
        factor = spec.step_factor
        boundaries = {max(1, round(f * num_steps)): factor for f in spec.step_fractions}
        steps = optax.piecewise_constant_schedule(peak, boundaries)
        if warmup == 0:
            return steps
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, warmup), lambda t: steps(t + warmup)], [warmup]
        )
    if kind == "constant":
        if warmup == 0:
            return optax.constant_schedule(peak)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup]
        )
    end = peak * spec.end_learning_rate_factor
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=warmup,
        decay_steps=max(num_steps, warmup + 1),
        end_value=end,
    )


def _scaled(schedule: optax.Schedule, factor: float) -> optax.Schedule:
    return lambda count: schedule(count) * factor


def _base_optimizer(
    name: str, learning_rate: optax.ScalarOrSchedule, spec: OptimizerSpec, decay_mask: Any
) -> optax.GradientTransformation:
    weight_decay, b1, b2 = spec.weight_decay, spec.b1, spec.b2
    if name == "adamw":
        return optax.adamw(learning_rate, b1=b1, b2=b2, weight_decay=weight_decay, mask=decay_mask)
    parts = []
    if weight_decay > 0:
        # Coupled (L2) weight decay: added to the gradient before momentum / Adam scaling.
        parts.append(optax.add_decayed_weights(weight_decay, mask=decay_mask))
    if name == "sgd":
        momentum, nesterov = spec.momentum, spec.nesterov
        parts.append(optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov))
    else:
        parts.append(optax.adam(learning_rate, b1=b1, b2=b2))
    return optax.chain(*parts)


def make_task_optimizer(
    config: Any, labels: dict, num_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The task optimizer over ``nnx.Param`` (pure dict), with per-group learning rates.

    Config fields: ``name`` ("sgd" | "adam" | "adamw"), ``learning_rate``, ``warmup_steps``,
    ``schedule``, ``end_learning_rate_factor``, ``step_fractions``/``step_factor``,
    ``weight_decay``, ``weight_decay_on`` (``"kernels"``: leaves with ndim >= 2 that are not
    mask parameters; ``"all"``: every parameter, as PyTorch's ``SGD(weight_decay=...)``, the
    papers' reference code, does), ``momentum``/``nesterov`` (SGD), ``b1``/``b2``
    (Adam), ``mask_lr_factor`` (FlexConv mask group), ``grad_clip_norm`` (global-norm
    clipping if > 0). Missing fields take the defaults of ``base_config().optimizer``
    (:mod:`convjax.configs.default`, the one place of the trainer's defaults).

    Args:
      config: the ``optimizer`` sub-config.
      labels: the label tree from :func:`param_labels`.
      num_steps: total number of training steps (for the cosine decay).

    Returns:
      ``(tx, schedule)``; ``schedule(step)`` is the default group's learning rate.

    Example (not run as a doctest: a fragment of the trainer's setup):
      >>> tx, sched = make_task_optimizer(config.optimizer, param_labels(params), 1000)
      ... # doctest: +SKIP
    """
    spec = OptimizerSpec.from_config(config)
    name = spec.name
    schedule = make_schedule(spec, num_steps)
    mask_factor = spec.mask_lr_factor

    decay_all = spec.weight_decay_on == "all"

    def decay_mask(params: Any) -> Any:
        return jax.tree.map(lambda p: decay_all or jnp.ndim(p) >= 2, params)

    def mask_decay(params: Any) -> Any:
        return jax.tree.map(lambda _: decay_all, params)

    transforms = {
        DEFAULT_GROUP: _base_optimizer(name, schedule, spec, decay_mask),
        # Mask parameters (mu, sigma of the Gaussian mask): reduced lr, decayed only with "all".
        MASK_GROUP: _base_optimizer(name, _scaled(schedule, mask_factor), spec, mask_decay),
    }
    tx: optax.GradientTransformation = optax.multi_transform(transforms, labels)
    clip = spec.grad_clip_norm
    if clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(clip), tx)
    return tx, schedule


def make_padding_optimizer(config: Any) -> optax.GradientTransformation:
    """The Padding Module's own optimizer over ``PadParam`` (constant learning rate).

    It runs on all padding parameters raveled into one vector (``optax.flatten``): the many
    tiny per-layer filters are updated by a few fused kernels instead of a few per leaf.

    Config fields: ``name`` ("sgd" | "adam" | "adamw"), ``learning_rate``, ``momentum``
    (SGD), ``weight_decay``, ``b1``/``b2`` (Adam); missing fields take the defaults of
    ``base_config().padding_optimizer`` (:mod:`convjax.configs.default`).

    Example:
      >>> import ml_collections
      >>> tx_pad = make_padding_optimizer(ml_collections.ConfigDict(dict(name="adam")))
    """
    spec = PaddingOptimizerSpec.from_config(config)
    lr = spec.learning_rate
    decay_all = lambda p: jax.tree.map(lambda _: True, p)  # noqa: E731
    return _flattened(_base_optimizer(spec.name, lr, spec, decay_all))


def _flattened(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """``optax.flatten(tx)`` for a non-empty tree (``tx`` itself for an empty one).

    One flat vector instead of two tiny leaves per padded conv (38 in ResNet-20): the update
    is the same elementwise arithmetic, in 44 instead of 117 XLA fusions (CPU, ResNet-20).
    """
    flat = optax.flatten(tx)

    def init(params: Any) -> optax.OptState:
        return (flat if jax.tree.leaves(params) else tx).init(params)

    def update(updates: Any, state: optax.OptState, params: Any = None) -> Any:
        return (flat if jax.tree.leaves(updates) else tx).update(updates, state, params)

    return optax.GradientTransformation(init, update)


__all__ = [
    "DEFAULT_GROUP",
    "MASK_GROUP",
    "OPTIMIZERS",
    "SCHEDULES",
    "OptimizerSpec",
    "PaddingOptimizerSpec",
    "make_padding_optimizer",
    "make_schedule",
    "make_task_optimizer",
    "param_labels",
]

"""The trainer's config: defaults in one place, checked once, compared on resume.

Every field the trainer reads has its default in :func:`convjax.configs.default.base_config`
(``config.data`` in :func:`convjax.data.default_config`). :func:`resolve_config` merges a
user's config (an ml_collections ``ConfigDict``, a dict, or a partial one) onto that base
*once*, at the entry point, and checks every value; afterwards the trainer reads fields
directly (``config.eval_every``), with no per-module fallbacks.

Errors name the field as it is typed on the command line (``--config.batch_size must be >= 1,
got 0``; ``unknown field --config.num_stepz; did you mean --config.num_steps?``).

On resume, :func:`compare_configs` splits the differences between the stored
``<workdir>/config.json`` and the new config into fields that may change
(:data:`RESUMABLE_FIELDS`: run length, logging, checkpoint cadence, ...) and fields that
change the model, the data or the optimisation (everything else), which stop the run.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from typing import Any

import ml_collections

#: Compute dtypes accepted by ``config.dtype``.
DTYPE_NAMES = ("float32", "bfloat16", "float16")

#: Top-level fields that may differ between a stored run and its resume (prefix match for
#: nested blocks). They change how long the run goes and what it prints or keeps, not what a
#: step computes.
RESUMABLE_FIELDS = (
    "num_steps",
    "num_epochs",
    "workdir",
    "log_every",
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "resume",
    "tensorboard",
    "progress",
    "stop_on_nonfinite",
    "parallel",
    "distributed",
    "data.num_threads",
    "data.prefetch_batches",
    "data.eval_batch_size",
)

#: Free-form blocks: any key is accepted (e.g. ``model_kwargs`` goes to the model builder).
FREE_FORM_FIELDS = ("model_kwargs",)


#: Stands for a field missing from one of two compared configs.
ABSENT = "<absent>"


class ConfigError(ValueError):
    """A bad config value; the message is one line naming the ``--config.<field>`` flag."""


def base_config() -> ml_collections.ConfigDict:
    """The default of every field (:func:`convjax.configs.default.base_config`)."""
    from convjax.configs.default import base_config as _base

    return _base()


def flag(path: str) -> str:
    """``"optimizer.name"`` -> ``"--config.optimizer.name"`` (the command-line spelling)."""
    return f"--config.{path}"


def _to_dict(config: Any) -> dict:
    if config is None:
        return {}
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if isinstance(config, Mapping):
        return {k: _to_dict(v) if isinstance(v, Mapping) else v for k, v in config.items()}
    raise TypeError(
        f"`config` must be an ml_collections ConfigDict or a mapping, got {type(config).__name__}."
    )


def _merge(base: dict, user: Mapping, prefix: str = "") -> dict:
    out = dict(base)
    for key, value in user.items():
        path = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(_unknown_message(path, [f"{prefix}{k}" for k in base]))
        if isinstance(base[key], dict) and path not in FREE_FORM_FIELDS:
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"{flag(path)} must be a block of fields, got {value!r}; set its fields, "
                    f"e.g. {flag(path + '.' + next(iter(base[key]), 'name'))}=..."
                )
            out[key] = _merge(base[key], _to_dict(value), prefix=f"{path}.")
        else:
            out[key] = _to_dict(value) if isinstance(value, Mapping) else value
    return out


def _unknown_message(path: str, known: list[str]) -> str:
    close = difflib.get_close_matches(path, known, n=1, cutoff=0.6)
    hint = f"; did you mean {flag(close[0])}?" if close else "; see `convjax train --help`."
    return f"unknown field {flag(path)}{hint}"


def resolve_config(config: Any = None, **overrides: Any) -> ml_collections.ConfigDict:
    """Merge ``config`` (and keyword ``overrides``) onto the base config and check it.

    Args:
      config: a ``ConfigDict`` or a (possibly partial, nested) mapping; ``None`` = defaults.
      **overrides: top-level fields set after merging (e.g. ``num_steps=10``).

    Returns:
      A complete, locked ``ConfigDict`` with every field of the base config.

    Raises:
      ConfigError: an unknown field (with a "did you mean") or a bad value, naming the
        ``--config.<field>`` flag.

    Example:
      >>> config = resolve_config({"num_steps": 10, "optimizer": {"name": "sgd"}})
      >>> config.num_steps, config.optimizer.name, config.optimizer.learning_rate
      (10, 'sgd', 0.003)
    """
    base = base_config().to_dict()
    merged = _merge(base, _to_dict(config))
    merged = _merge(merged, overrides)
    _reconcile_dataset(merged, base)
    check_config(merged)
    resolved = ml_collections.ConfigDict(merged)
    resolved.lock()
    return resolved


def _reconcile_dataset(cfg: dict, base: Mapping) -> None:
    """Make ``dataset`` and ``data.name`` (two spellings of one field) agree, in place.

    The one changed from its default wins (``--config.data.name=tfds:mnist`` alone selects
    MNIST); both changed to different datasets is a :class:`ConfigError`; an empty
    ``dataset`` defers to ``data.name``.
    """
    dataset, name = cfg["dataset"], cfg["data"]["name"]
    if dataset == name:
        return
    if not dataset or dataset == base["dataset"]:
        cfg["dataset"] = name
    elif name == base["data"]["name"]:
        cfg["data"]["name"] = dataset
    else:
        raise ConfigError(
            f"{flag('dataset')}={dataset!r} and {flag('data.name')}={name!r} name different "
            f"datasets; they are one field, set one of them"
        )


def resolve_block(name: str, block: Any) -> dict[str, Any]:
    """One block of the config (``"optimizer"``, ``"padding_optimizer"``) merged onto its
    defaults from the base config; unknown fields raise :class:`ConfigError`.

    Example:
      >>> resolve_block("optimizer", {"name": "sgd"})["learning_rate"]
      0.003
    """
    base = base_config().to_dict()[name]
    return _merge(base, _to_dict(block), prefix=f"{name}.")


def _number(cfg: Mapping, path: str, kind: type, minimum: float | None = None) -> None:
    node: Any = cfg
    for part in path.split("."):
        node = node[part]
    ok_type = isinstance(node, (int, float)) and not isinstance(node, bool)
    if kind is int:
        ok_type = ok_type and float(node).is_integer()
    if not ok_type or (isinstance(node, float) and not math.isfinite(node)):
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"{flag(path)} must be {what}, got {node!r}")
    if minimum is not None and node < minimum:
        raise ConfigError(f"{flag(path)} must be >= {minimum:g}, got {node!r}")


def _choice(cfg: Mapping, path: str, choices: tuple[str, ...]) -> None:
    node: Any = cfg
    for part in path.split("."):
        node = node[part]
    if node not in choices:
        raise ConfigError(f"{flag(path)} must be one of {list(choices)}, got {node!r}")


def check_config(cfg: Mapping) -> None:
    """Check the values of a complete config (a nested dict); raise :class:`ConfigError`.

    Example:
      >>> check_config(base_config().to_dict())
    """
    from convjax.models import available_models
    from convjax.models.blocks import CONV_TYPES, NORM_TYPES, PADDING_MODES, POOL_TYPES
    from convjax.train.distributed import BACKENDS
    from convjax.train.optim import OPTIMIZERS, SCHEDULES

    for path, minimum in (
        ("batch_size", 1),
        ("num_steps", 0),
        ("num_epochs", 0),
        ("log_every", 1),
        ("eval_every", 0),
        ("checkpoint_every", 0),
        ("keep_checkpoints", 1),
        ("seed", 0),
        ("optimizer.warmup_steps", 0),
    ):
        _number(cfg, path, int, minimum)
    if cfg["num_steps"] == 0 and cfg["num_epochs"] == 0:
        raise ConfigError(f"{flag('num_steps')} or {flag('num_epochs')} must be >= 1 (both are 0)")
    for path, minimum in (
        ("optimizer.learning_rate", 0),
        ("optimizer.weight_decay", 0),
        ("optimizer.mask_lr_factor", 0),
        ("optimizer.grad_clip_norm", 0),
        ("optimizer.end_learning_rate_factor", 0),
        ("optimizer.momentum", 0),
        ("optimizer.b1", 0),
        ("optimizer.b2", 0),
        ("padding_optimizer.learning_rate", 0),
        ("padding_optimizer.weight_decay", 0),
        ("padding_optimizer.momentum", 0),
        ("padding_optimizer.b1", 0),
        ("padding_optimizer.b2", 0),
        ("aliasing_weight", 0),
    ):
        _number(cfg, path, float, minimum)
    _choice(cfg, "model", tuple(available_models()))
    _choice(cfg, "padding", PADDING_MODES)
    _choice(cfg, "pool", POOL_TYPES)
    _choice(cfg, "norm", NORM_TYPES)
    _choice(cfg, "conv", ("",) + CONV_TYPES)
    _choice(cfg, "dtype", DTYPE_NAMES)
    _choice(cfg, "parallel", BACKENDS)
    _choice(cfg, "optimizer.name", OPTIMIZERS)
    _choice(cfg, "optimizer.schedule", SCHEDULES)
    _choice(cfg, "padding_optimizer.name", OPTIMIZERS)
    for path in ("resume", "tensorboard", "progress", "stop_on_nonfinite", "optimizer.nesterov"):
        node: Any = cfg
        for part in path.split("."):
            node = node[part]
        if not isinstance(node, bool):
            raise ConfigError(f"{flag(path)} must be True or False, got {node!r}")
    if not isinstance(cfg["workdir"], str) or not cfg["workdir"]:
        raise ConfigError(f"{flag('workdir')} must be a non-empty path, got {cfg['workdir']!r}")


def config_to_json(config: Any) -> dict:
    """A JSON-able nested dict of ``config`` (tuples become lists)."""
    return json.loads(json.dumps(_to_dict(config), default=list))


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and path not in FREE_FORM_FIELDS:
            out.update(_flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def _resumable(path: str) -> bool:
    return any(path == f or path.startswith(f + ".") for f in RESUMABLE_FIELDS)


def compare_configs(stored: Mapping, new: Any) -> tuple[dict, dict]:
    """Differences between a stored config (``config.json``) and a new one.

    Returns:
      ``(accepted, blocking)``: dicts ``{"field.path": (stored, new)}``; ``accepted`` holds
      the :data:`RESUMABLE_FIELDS` (and fields the stored config predates, at their
      default), ``blocking`` every other difference (model, data, optimiser, dtype, seed...).

    Example:
      >>> old = config_to_json(resolve_config({"num_steps": 10}))
      >>> compare_configs(old, resolve_config({"num_steps": 20, "model": "resnet20"}))
      ({'num_steps': (10, 20)}, {'model': ('digits_cnn', 'resnet20')})
    """
    base = config_to_json(base_config())
    stored = json.loads(json.dumps(stored))
    if "dataset" in stored and "name" in stored.get("data", {}):
        # Runs stored before ``dataset`` and ``data.name`` were reconciled kept the default in one.
        _reconcile_dataset(stored, base)
    a, b = _flatten(stored), _flatten(config_to_json(new))
    defaults = _flatten(base)
    accepted, blocking = {}, {}
    for path in sorted(set(a) | set(b)):
        old, value = a.get(path, ABSENT), b.get(path, ABSENT)
        if old == value:
            continue
        # A field added to convjax after the run was stored: fine at its default value.
        new_field_at_default = old == ABSENT and path in defaults and value == defaults[path]
        ok = _resumable(path) or new_field_at_default
        (accepted if ok else blocking)[path] = (old, value)
    return accepted, blocking


def describe_changes(changes: Mapping[str, tuple[Any, Any]]) -> str:
    """``"--config.num_steps: 10 -> 20, ..."`` for a dict from :func:`compare_configs`."""
    return ", ".join(f"{flag(k)}: {old!r} -> {new!r}" for k, (old, new) in changes.items())


__all__ = [
    "DTYPE_NAMES",
    "FREE_FORM_FIELDS",
    "RESUMABLE_FIELDS",
    "ConfigError",
    "base_config",
    "check_config",
    "compare_configs",
    "config_to_json",
    "describe_changes",
    "flag",
    "resolve_block",
    "resolve_config",
]

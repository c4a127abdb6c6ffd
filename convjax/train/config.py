"""The trainer's config: defaults in one place, resolved once into a typed spec, compared on
resume.

Every field the trainer reads has its default in :func:`convjax.configs.default.base_config`
(``config.data`` in :func:`convjax.data.default_config`). :func:`resolve_spec` merges a
user's config (an ml_collections ``ConfigDict``, a dict, or a partial one) onto that base
*once*, at the entry point, and turns it into a :class:`convjax.train.spec.TrainSpec` whose
parts check every value; afterwards the trainer reads typed attributes
(``spec.run.eval_every``), never config fields by string. ``dataset`` is one field;
``data.name`` is accepted as an alias of it (older scripts and stored ``config.json`` files).

Errors name the field as it is typed on the command line (``--config.batch_size must be >= 1,
got 0``; ``unknown field --config.num_stepz; did you mean --config.num_steps?``).

On resume, :func:`compare_configs` splits the differences between the stored
``<workdir>/config.json`` and the new config into fields that may change
(:data:`RESUMABLE_FIELDS`: run length, logging, checkpoint cadence, ...) and fields that
change the model, the data or the optimisation (everything else), which stop the run.
"""

from __future__ import annotations

import ast
import difflib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from convjax._spec import ConfigError, flag
from convjax.configs.default import base_config as _base_config
from convjax.train.spec import DTYPE_NAMES, TrainSpec

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


#: The default dataset (``base_config().dataset``).
_DEFAULT_DATASET = "digits"


def base_config() -> ml_collections.ConfigDict:
    """The default of every field (:func:`convjax.configs.default.base_config`)."""
    return _base_config()


def _to_dict(config: Any) -> dict:
    if config is None:
        return {}
    if isinstance(config, TrainSpec):
        return config.to_config()
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


def dataset_alias(user: Mapping) -> dict:
    """``user`` with ``data.name`` (the old spelling) folded into ``dataset``.

    ``dataset`` is one field. A config that sets only ``data.name`` selects that dataset;
    one that sets both (configs and ``config.json`` files written before they were one field)
    keeps the one that is not the default; two different non-default datasets are a
    :class:`ConfigError`. On the command line the flag given last wins (see
    ``convjax.__main__.apply_overrides``).

    Example:
      >>> dataset_alias({"data": {"name": "tfds:mnist"}})
      {'data': {}, 'dataset': 'tfds:mnist'}
    """
    out = dict(user)
    if out.get("dataset") == "":
        del out["dataset"]  # an empty dataset means the default (or data.name, if given)
    data = out.get("data")
    if not isinstance(data, Mapping) or "name" not in data:
        return out
    data = dict(data)
    name = data.pop("name")
    out["data"] = data
    dataset = out.get("dataset", "")
    if not dataset or dataset == name or dataset == _DEFAULT_DATASET:
        out["dataset"] = name
    elif name != _DEFAULT_DATASET:
        raise ConfigError(
            f"{flag('dataset')}={dataset!r} and {flag('data.name')}={name!r} name different "
            f"datasets; {flag('data.name')} is an alias of {flag('dataset')}: set that one only"
        )
    return out


def resolve_spec(config: Any = None, **overrides: Any) -> TrainSpec:
    """Merge ``config`` (and keyword ``overrides``) onto the base config; the checked spec.

    The one resolution of a run, done at the entry point (the CLI, ``compare``, or
    ``convjax.train.train(config)`` called with a mapping); a :class:`TrainSpec` given here
    comes back unchanged.

    Args:
      config: a ``ConfigDict`` or a (possibly partial, nested) mapping; ``None`` = defaults.
      **overrides: top-level fields set after merging (e.g. ``num_steps=10``).

    Raises:
      ConfigError: an unknown field (with a "did you mean") or a bad value, naming the
        ``--config.<field>`` flag.

    Example:
      >>> spec = resolve_spec({"num_steps": 10, "optimizer": {"name": "sgd"}})
      >>> spec.run.num_steps, spec.optimizer.name, spec.optimizer.learning_rate
      (10, 'sgd', 0.003)
    """
    if isinstance(config, TrainSpec) and not overrides:
        return config
    return TrainSpec.from_config(merge_config(config, **overrides))


def merge_config(config: Any = None, **overrides: Any) -> dict:
    """``config`` (and ``overrides``) merged onto the base config as a nested dict, with
    unknown fields rejected but values not yet checked (:func:`resolve_spec` checks them).

    Example:
      >>> merge_config({"data": {"name": "tfds:mnist"}})["dataset"]
      'tfds:mnist'
    """
    base = base_config().to_dict()
    merged = _merge(base, dataset_alias(_to_dict(config)))
    return _merge(merged, dataset_alias(overrides))


def resolve_config(config: Any = None, **overrides: Any) -> ml_collections.ConfigDict:
    """The complete, checked config as a locked ``ConfigDict`` (:func:`resolve_spec`'s
    spec written back in the config's layout).

    Example:
      >>> config = resolve_config({"num_steps": 10, "optimizer": {"name": "sgd"}})
      >>> config.num_steps, config.optimizer.name, config.optimizer.learning_rate
      (10, 'sgd', 0.003)
    """
    resolved = ml_collections.ConfigDict(resolve_spec(config, **overrides).to_config())
    resolved.lock()
    return resolved


def _parse_value(path: str, text: str, current: Any) -> Any:
    """Parse ``--config.<path>=text`` with the type of the field's current value."""
    if isinstance(current, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"{flag(path)} must be True or False, got {text!r}")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{flag(path)} must be an integer, got {text!r}") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{flag(path)} must be a number, got {text!r}") from None
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    if isinstance(current, (tuple, list)) and not isinstance(value, (tuple, list)):
        raise ConfigError(f"{flag(path)} must be a tuple like (1, 2), got {text!r}")
    return value


def all_paths(tree: Mapping, prefix: str = "") -> list[str]:
    """Every field path of a nested config dict (blocks and leaves)."""
    out = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out.append(path)
        if isinstance(value, Mapping):
            out.extend(all_paths(value, f"{path}."))
    return out


def parse_overrides(pairs: Sequence[tuple[str, str]], tree: Mapping | None = None) -> dict:
    """``--config.<path>=<text>`` pairs -> a partial nested config, each value parsed with
    the type of the field in ``tree`` (a merged config; default the base config).

    ``data.name`` is read as ``dataset`` (its alias); fields under ``model_kwargs`` may be new
    (Python literals, else strings). Later pairs win over earlier ones.

    Raises:
      ConfigError: an unknown field (with a "did you mean"), a block given a value, or a
        value of the wrong type.

    Example:
      >>> parse_overrides([("num_steps", "3"), ("data.name", "tfds:mnist")])
      {'num_steps': 3, 'dataset': 'tfds:mnist'}
    """
    tree = base_config().to_dict() if tree is None else tree
    out: dict = {}
    for path, text in pairs:
        path = "dataset" if path == "data.name" else path
        parts = path.split(".")
        node: Any = tree
        free = any(path.startswith(f + ".") for f in FREE_FORM_FIELDS)
        for i, part in enumerate(parts[:-1]):
            if ".".join(parts[: i + 1]) in FREE_FORM_FIELDS:
                node = {}
                break
            if not isinstance(node, Mapping) or part not in node:
                raise ConfigError(_unknown_message(path, all_paths(tree)))
            node = node[part]
        if not isinstance(node, Mapping) or (parts[-1] not in node and not free):
            raise ConfigError(_unknown_message(path, all_paths(tree)))
        current = node.get(parts[-1])
        if isinstance(current, Mapping) and path not in FREE_FORM_FIELDS:
            example = "name" if "name" in current else next(iter(current), "name")
            raise ConfigError(
                f"{flag(path)} is a block of fields; set one of them, e.g. "
                f"{flag(path + '.' + example)}=..."
            )
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = _parse_value(path, text, current)
    return out


def deep_update(tree: Mapping, partial: Mapping) -> dict:
    """``tree`` with the fields of ``partial`` set (nested blocks, ``model_kwargs`` too, are
    updated key by key, not replaced).

    Example:
      >>> deep_update({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}})
      {'a': {'b': 1, 'c': 3}}
    """
    out = dict(tree)
    for key, value in partial.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = value
    return out


def resolve_block(name: str, block: Any) -> dict[str, Any]:
    """One block of the config (``"optimizer"``, ``"padding_optimizer"``) merged onto its
    defaults from the base config; unknown fields raise :class:`ConfigError`.

    Example:
      >>> resolve_block("optimizer", {"name": "sgd"})["learning_rate"]
      0.003
    """
    base = base_config().to_dict()[name]
    return _merge(base, _to_dict(block), prefix=f"{name}.")


def check_config(cfg: Mapping) -> None:
    """Check the values of a complete config (a nested dict); raise :class:`ConfigError`.

    Example:
      >>> check_config(base_config().to_dict())
    """
    TrainSpec.from_config(cfg)


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
      >>> compare_configs(old, resolve_spec({"num_steps": 20, "model": "resnet20"}))
      ({'num_steps': (10, 20)}, {'model': ('digits_cnn', 'resnet20')})
    """
    base = config_to_json(base_config())
    # Runs stored before ``dataset`` was one field also hold ``data.name``.
    stored = dataset_alias(json.loads(json.dumps(stored)))
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
    "dataset_alias",
    "deep_update",
    "describe_changes",
    "flag",
    "merge_config",
    "parse_overrides",
    "resolve_block",
    "resolve_config",
    "resolve_spec",
]

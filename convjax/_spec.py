"""Helpers shared by the typed specs (private; the package's ground floor, imports nothing
from convjax).

A spec is a small frozen dataclass owned by the package that uses it
(:class:`convjax.models.spec.ModelSpec`, :class:`convjax.data.spec.DataSpec`,
:class:`convjax.train.optim.OptimizerSpec`, :class:`convjax.train.spec.RunSpec`); the trainer's
config is resolved into them once, at the entry point. A spec checks itself when it is made
and raises :class:`ConfigError` with one line in the command line's vocabulary
(``--config.batch_size must be an integer >= 1, got 0``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


class ConfigError(ValueError):
    """A bad config value; the message is one line naming the ``--config.<field>`` flag."""


def flag(path: str) -> str:
    """``"optimizer.name"`` -> ``"--config.optimizer.name"`` (the command-line spelling).

    Example:
      >>> flag("optimizer.name")
      '--config.optimizer.name'
    """
    return f"--config.{path}"


def check_int(value: Any, path: str, minimum: int | None = None) -> int:
    """``value`` as an int (integral floats accepted); :class:`ConfigError` otherwise.

    Example:
      >>> check_int(3.0, "num_steps", 0)
      3
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not float(value).is_integer():
        raise ConfigError(f"{flag(path)} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{flag(path)} must be >= {minimum}, got {value!r}")
    return int(value)


def check_float(value: Any, path: str, minimum: float | None = None) -> float:
    """``value`` as a finite float; :class:`ConfigError` otherwise.

    Example:
      >>> check_float(1, "optimizer.learning_rate", 0)
      1.0
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value):
        raise ConfigError(f"{flag(path)} must be a number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{flag(path)} must be >= {minimum:g}, got {value!r}")
    return float(value)


def check_bool(value: Any, path: str) -> bool:
    """``value`` if it is a bool; :class:`ConfigError` otherwise."""
    if not isinstance(value, bool):
        raise ConfigError(f"{flag(path)} must be True or False, got {value!r}")
    return value


def check_str(value: Any, path: str, choices: Sequence[str] | None = None) -> str:
    """``value`` if it is a str (one of ``choices`` when given); :class:`ConfigError`."""
    if not isinstance(value, str):
        raise ConfigError(f"{flag(path)} must be a string, got {value!r}")
    if choices is not None and value not in choices:
        raise ConfigError(f"{flag(path)} must be one of {list(choices)}, got {value!r}")
    return value


def frozen(value: Any) -> Any:
    """Lists -> tuples, recursively (JSON round trips turn tuples into lists)."""
    if isinstance(value, (list, tuple)):
        return tuple(frozen(v) for v in value)
    if isinstance(value, Mapping):
        return {k: frozen(v) for k, v in value.items()}
    return value


def plain(value: Any) -> Any:
    """ConfigDicts / mappings -> dicts, recursively (order kept)."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


__all__ = ["ConfigError", "check_bool", "check_float", "check_int", "check_str", "flag"]

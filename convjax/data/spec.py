"""The data part of a run, resolved and checked: :class:`DataSpec`.

Config fields: the top-level ``dataset`` (``--config.data.name`` is an accepted alias of it)
and the ``data`` block (:func:`convjax.data.default_config` documents every field).
:meth:`DataSpec.from_config` is the one place those fields are read; :func:`make_loaders`
takes a :class:`DataSpec` (or the ``data`` block as a mapping).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from convjax._spec import ConfigError, check_bool, check_int, check_str, flag, frozen
from convjax.data.sequential import SEQUENCE_MODES
from convjax.data.sources import DEFAULT_STATS_IMAGES

_TRISTATE = ("auto", "true", "false")


def _tristate(value: Any, path: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.strip().lower() in _TRISTATE + ("yes", "no", "1", "0"):
        v = value.strip().lower()
        return {"yes": "true", "1": "true", "no": "false", "0": "false"}.get(v, v)
    raise ConfigError(f"{flag(path)} must be one of {list(_TRISTATE)}, got {value!r}")


def _stats(value: Any, path: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),)
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        return tuple(float(v) for v in value)
    raise ConfigError(f"{flag(path)} must be a number or a tuple of numbers, got {value!r}")


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Which dataset, and how the pipeline reads and transforms it.

    Attributes:
      name: dataset spec: ``"digits"``, ``"idx:<directory>"`` or ``"tfds:<name>"``
        (``--config.dataset``).
      the others: the ``--config.data.<field>`` fields of :func:`convjax.data.default_config`
        (``augment`` / ``flip`` / ``convert_tfrecord`` are ``"auto"``, ``"true"`` or
        ``"false"``; ``convert_tfrecord`` is a bool).

    Example:
      >>> DataSpec("tfds:mnist", image_size=32).image_size
      32
    """

    name: str = "digits"
    data_dir: str = ""
    train_split: str = "train"
    eval_split: str = ""
    num_classes: int = 10
    augment: str = "auto"
    crop_padding: int = -1
    flip: str = "auto"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    stats_images: int = DEFAULT_STATS_IMAGES
    convert_tfrecord: bool = True
    array_record_dir: str = ""
    image_size: int = 0
    sequence: str = "none"
    permutation_seed: int = 0
    eval_batch_size: int = 0
    num_epochs: int = 0
    num_threads: int = 2
    prefetch_batches: int = 4

    def __post_init__(self) -> None:
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        check_str(self.name, "dataset")
        if not self.name:
            raise ConfigError(f"{flag('dataset')} must name a dataset, got ''")
        for key in ("data_dir", "train_split", "eval_split", "array_record_dir"):
            check_str(getattr(self, key), f"data.{key}")
        check_str(self.sequence, "data.sequence", SEQUENCE_MODES)
        put("augment", _tristate(self.augment, "data.augment"))
        put("flip", _tristate(self.flip, "data.flip"))
        check_bool(self.convert_tfrecord, "data.convert_tfrecord")
        for key, minimum in (
            ("num_classes", 1),
            ("crop_padding", -1),
            ("stats_images", 0),
            ("image_size", 0),
            ("permutation_seed", 0),
            ("eval_batch_size", 0),
            ("num_epochs", 0),
            ("num_threads", 0),
            ("prefetch_batches", 1),
        ):
            put(key, check_int(getattr(self, key), f"data.{key}", minimum))
        put("mean", _stats(frozen(self.mean), "data.mean"))
        put("std", _stats(frozen(self.std), "data.std"))
        if bool(self.mean) != bool(self.std):
            raise ConfigError(
                f"{flag('data.mean')} and {flag('data.std')} must both be set or both empty, "
                f"got {self.mean} and {self.std}"
            )

    @classmethod
    def from_config(cls, config: Any) -> DataSpec:
        """The data fields of a complete trainer config (``dataset`` and the ``data`` block)."""
        data = config["data"]
        fields = [f.name for f in dataclasses.fields(cls) if f.name != "name"]
        return cls(name=config["dataset"], **{k: data[k] for k in fields})

    def to_config(self) -> dict[str, Any]:
        """The config fields of this spec (inverse of :meth:`from_config`)."""
        block = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"dataset": block.pop("name"), "data": block}

    def to_dict(self) -> dict[str, Any]:
        """The fields as the ``data`` block :func:`convjax.data.make_loaders` reads."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


__all__ = ["DataSpec"]

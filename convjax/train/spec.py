"""The resolved, typed description of a training run: :class:`TrainSpec`.

A run is described by small frozen specs, each owned by the package that uses it:

* :class:`convjax.models.spec.ModelSpec` -- the model name, the four switches, its keywords;
* :class:`convjax.data.spec.DataSpec` -- the dataset and the pipeline;
* :class:`convjax.train.optim.OptimizerSpec` / :class:`~convjax.train.optim.PaddingOptimizerSpec`
  -- the task and the Padding Module's optimizers;
* :class:`RunSpec` (with :class:`DistributedSpec`) -- steps, seed, logging, evaluation,
  checkpoints, precision, data-parallel backend, multi-host setup.

The config (a file and ``--config.x=y`` flags, or a mapping in Python) is resolved into a
:class:`TrainSpec` once, at the entry point (:func:`convjax.train.config.resolve_spec`);
everything below takes the spec and reads typed attributes. Each spec checks itself when it is
made (one-line :class:`~convjax._spec.ConfigError` naming ``--config.<field>``), and each has
one ``from_config`` / ``to_config`` pair: the only place config fields are mapped to spec
fields. ``TrainSpec.from_config(spec.to_config()) == spec``, so the stored
``<workdir>/config.json`` gives back the same spec.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from convjax._spec import ConfigError, check_bool, check_float, check_int, check_str, flag
from convjax.data.spec import DataSpec
from convjax.models.spec import ModelSpec
from convjax.ops.magnet import ALIASING_RULES, ALIASING_TARGETS
from convjax.train.distributed import BACKENDS
from convjax.train.optim import OptimizerSpec, PaddingOptimizerSpec

#: Compute dtypes accepted by ``config.dtype``.
DTYPE_NAMES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class DistributedSpec:
    """Multi-host setup (``--config.distributed.<field>``; empty / 0 / -1 = auto-detect).

    Example:
      >>> DistributedSpec().initialize
      False
    """

    initialize: bool = False
    coordinator_address: str = ""
    coordinator_bind_address: str = ""
    num_processes: int = 0
    process_id: int = -1

    def __post_init__(self) -> None:
        check_bool(self.initialize, "distributed.initialize")
        check_str(self.coordinator_address, "distributed.coordinator_address")
        check_str(self.coordinator_bind_address, "distributed.coordinator_bind_address")
        object.__setattr__(
            self, "num_processes", check_int(self.num_processes, "distributed.num_processes", 0)
        )
        object.__setattr__(
            self, "process_id", check_int(self.process_id, "distributed.process_id", -1)
        )

    @classmethod
    def from_config(cls, block: Any) -> DistributedSpec:
        """From the ``distributed`` config block."""
        return cls(**{f.name: block[f.name] for f in dataclasses.fields(cls) if f.name in block})

    def to_config(self) -> dict[str, Any]:
        """The ``distributed`` config block (also what ``setup_distributed`` reads)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """How long the run goes and what it keeps, prints and runs on.

    Attributes (``--config.<field>``; ``convjax/configs/default.py`` documents each):
      seed, workdir, batch_size (global), num_steps (> 0 fixes the length, else num_epochs
      epochs), num_epochs, log_every, eval_every (0 = at the end), checkpoint_every (0 = at
      the end), keep_checkpoints, resume, tensorboard, progress, stop_on_nonfinite,
      parallel (:data:`convjax.train.distributed.BACKENDS`), dtype (:data:`DTYPE_NAMES`),
      aliasing_weight, aliasing_target, aliasing_rule (the FlexConv anti-aliasing penalty:
      :func:`convjax.ops.flex_conv_aliasing_penalty`), distributed.

    Example:
      >>> RunSpec(num_steps=10).num_steps
      10
    """

    seed: int = 0
    workdir: str = "runs/default"
    batch_size: int = 64
    num_steps: int = 0
    num_epochs: int = 20
    log_every: int = 10
    eval_every: int = 100
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    resume: bool = True
    tensorboard: bool = False
    progress: bool = True
    stop_on_nonfinite: bool = True
    parallel: str = "pmap"
    dtype: str = "float32"
    aliasing_weight: float = 1.0
    aliasing_target: str = "gabor"
    aliasing_rule: str = "reference"
    distributed: DistributedSpec = dataclasses.field(default_factory=DistributedSpec)

    def __post_init__(self) -> None:
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        for key, minimum in (
            ("seed", 0),
            ("batch_size", 1),
            ("num_steps", 0),
            ("num_epochs", 0),
            ("log_every", 1),
            ("eval_every", 0),
            ("checkpoint_every", 0),
            ("keep_checkpoints", 1),
        ):
            put(key, check_int(getattr(self, key), key, minimum))
        if self.num_steps == 0 and self.num_epochs == 0:
            raise ConfigError(
                f"{flag('num_steps')} or {flag('num_epochs')} must be >= 1 (both are 0)"
            )
        for key in ("resume", "tensorboard", "progress", "stop_on_nonfinite"):
            check_bool(getattr(self, key), key)
        check_str(self.parallel, "parallel", BACKENDS)
        check_str(self.dtype, "dtype", DTYPE_NAMES)
        put("aliasing_weight", check_float(self.aliasing_weight, "aliasing_weight", 0))
        check_str(self.aliasing_target, "aliasing_target", ALIASING_TARGETS)
        check_str(self.aliasing_rule, "aliasing_rule", ALIASING_RULES)
        if not isinstance(self.workdir, str) or not self.workdir:
            raise ConfigError(f"{flag('workdir')} must be a non-empty path, got {self.workdir!r}")
        if not isinstance(self.distributed, DistributedSpec):
            put("distributed", DistributedSpec.from_config(self.distributed))

    @classmethod
    def from_config(cls, config: Any) -> RunSpec:
        """The run fields of a complete trainer config."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "distributed"]
        return cls(
            **{k: config[k] for k in names},
            distributed=DistributedSpec.from_config(config["distributed"]),
        )

    def to_config(self) -> dict[str, Any]:
        """The config fields of this spec (inverse of :meth:`from_config`)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["distributed"] = self.distributed.to_config()
        return out


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """Everything a training run needs to know, resolved and checked.

    Attributes:
      model: :class:`~convjax.models.spec.ModelSpec`.
      data: :class:`~convjax.data.spec.DataSpec`.
      optimizer: :class:`~convjax.train.optim.OptimizerSpec`.
      padding_optimizer: :class:`~convjax.train.optim.PaddingOptimizerSpec`.
      run: :class:`RunSpec`.

    Example:
      >>> from convjax.train.config import resolve_spec
      >>> spec = resolve_spec({"model": "resnet20", "num_steps": 10})
      >>> spec.model.name, spec.run.num_steps, spec.optimizer.name
      ('resnet20', 10, 'adam')
      >>> TrainSpec.from_config(spec.to_config()) == spec
      True
    """

    model: ModelSpec = dataclasses.field(default_factory=ModelSpec)
    data: DataSpec = dataclasses.field(default_factory=DataSpec)
    optimizer: OptimizerSpec = dataclasses.field(default_factory=OptimizerSpec)
    padding_optimizer: PaddingOptimizerSpec = dataclasses.field(
        default_factory=PaddingOptimizerSpec
    )
    run: RunSpec = dataclasses.field(default_factory=RunSpec)

    @classmethod
    def from_config(cls, config: Any) -> TrainSpec:
        """The spec of a complete config (every field of ``base_config``; a ConfigDict or a
        nested mapping such as a stored ``config.json``). Partial configs go through
        :func:`convjax.train.config.resolve_spec`, which merges them onto the defaults."""
        return cls(
            model=ModelSpec.from_config(config),
            data=DataSpec.from_config(config),
            optimizer=OptimizerSpec.from_config(config["optimizer"]),
            padding_optimizer=PaddingOptimizerSpec.from_config(config["padding_optimizer"]),
            run=RunSpec.from_config(config),
        )

    def to_config(self) -> dict[str, Any]:
        """The complete config (a nested dict in ``base_config``'s layout)."""
        return {
            **self.model.to_config(),
            **self.data.to_config(),
            "optimizer": self.optimizer.to_config(),
            "padding_optimizer": self.padding_optimizer.to_config(),
            **self.run.to_config(),
        }


__all__ = ["DTYPE_NAMES", "DistributedSpec", "RunSpec", "TrainSpec"]

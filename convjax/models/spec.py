"""The model part of a run, resolved and checked: :class:`ModelSpec`.

Config fields (``convjax/configs/default.py``): ``model`` (a registry name, see
:func:`convjax.models.available_models`, or an import path ``"<module>:<factory>"`` of the
user's own model), the four switches ``padding`` / ``pool`` / ``norm`` / ``conv`` and
``model_kwargs`` (keywords of the model's builder). :meth:`ModelSpec.from_config` is the one
place those fields are read.

**An import-path model** (``--config.model=my_pkg.nets:make_cnn``): ``my_pkg.nets`` must be
importable (on ``sys.path``; the working directory is searched too) when the run trains *and*
when it is evaluated, predicted or exported, since those rebuild the model from
``config.json``. The factory's contract::

    factory(*, num_classes: int, in_features: int, rngs: nnx.Rngs, **model_kwargs)
        -> nnx.Module   # maps (N, *input_shape) float32 to logits (N, num_classes)

``rngs`` has the streams ``params`` (seeded by ``--config.seed``) and ``dropout``; the
``--config.model_kwargs.<name>`` fields are passed on as keywords, except the block
``model_kwargs.convert``: options of :func:`convjax.convert` (:meth:`ModelSpec.convert_options`;
with ``norm=deconv`` the classifier is converted too, ``deconv_dense=True``, as in the zoo).
The model is plain Flax NNX (``nnx.Conv``, ``nnx.BatchNorm``, pools as function calls, ...)
or a Linen ``nn.Module`` (not initialised: the factory returns e.g. ``ResNet(num_classes=...)``).
A Linen model is initialised on an example batch with ``rngs.params()`` and trained as a
:class:`convjax.convert.LinenModel` (its collections as NNX variables: ``params`` ->
``nnx.Param``, ``padding`` -> ``PadParam``, ``batch_stats`` -> statistics; its ``__call__``
argument ``train`` / ``deterministic`` / ... gets the mode);
the switches the config sets explicitly are applied by :func:`convjax.convert` (``inputs=`` an
example batch of the data's image shape), the others leave the model as written: a switch is
*unset* when it is ``""`` (the config default), so a user's average pools stay average pools
unless ``--config.pool`` is given. For a zoo model ``""`` means the zoo default
(:data:`SWITCH_DEFAULTS`), and the spec stores that value, so ``config.json`` files are the same
as before unset switches existed.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as linen_nn
import jax.numpy as jnp
from flax import nnx

from convjax._spec import ConfigError, check_str, flag, frozen, plain
from convjax.convert.api import convert
from convjax.convert.common import make_plan
from convjax.convert.linen_model import from_linen
from convjax.models.blocks import CONV_TYPES, NORM_TYPES, PADDING_MODES, POOL_TYPES, LayerConfig
from convjax.models.registry import SWITCHES, available_models, build, model_info
from convjax.nnx.deconv import _DeconvLayer

#: The value of each switch of a zoo model when the config does not set it (``""``). A model
#: that does not honour a switch (:func:`convjax.models.model_info`) accepts only this value.
SWITCH_DEFAULTS = {"padding": "zero", "pool": "max", "norm": "batch", "conv": ""}
_CHOICES = {
    "padding": PADDING_MODES,
    "pool": POOL_TYPES,
    "norm": NORM_TYPES,
    "conv": ("", *CONV_TYPES),
}


def is_import_path(name: Any) -> bool:
    """Whether ``--config.model`` names a user factory (``"<module>:<factory>"``).

    Example:
      >>> is_import_path("my_pkg.nets:make_cnn"), is_import_path("resnet20")
      (True, False)
    """
    return isinstance(name, str) and ":" in name


def _import_module(name: str) -> Any:
    """``importlib.import_module``, also searching the working directory (as ``python -m``
    does; the ``convjax`` console script does not put it on ``sys.path``)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        top = name.split(".")[0]
        cwd = os.getcwd()
        if err.name != top or cwd in sys.path or "" in sys.path:
            raise
        if not any(os.path.exists(os.path.join(cwd, top + s)) for s in ("", ".py")):
            raise
        sys.path.append(cwd)
        return importlib.import_module(name)


def resolve_factory(path: str) -> Callable[..., nnx.Module]:
    """The factory of an import path ``"<module>:<attribute>"`` (the attribute may be dotted).

    Raises:
      ConfigError: one line naming ``--config.model``: a malformed path, a module that cannot
        be imported, a missing attribute, or an attribute that is not callable.

    Example:
      >>> resolve_factory("convjax.models.registry:resnet20").__name__
      'resnet20'
    """
    module_name, _, attr = path.partition(":")
    where = f"{flag('model')}={path!r}"
    if not module_name or not attr or ":" in attr:
        raise ConfigError(f"{where} must be '<module>:<factory>', e.g. 'my_pkg.nets:make_cnn'")
    try:
        obj: Any = _import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any import failure is one line for the user
        raise ConfigError(
            f"{where}: module {module_name!r} cannot be imported ({type(err).__name__}: {err}); "
            "is it on sys.path (e.g. run from the directory that holds it)?"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{where}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(
            f"{where}: {module_name}.{attr} is a {type(obj).__name__}, not a callable factory"
        )
    return obj


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Which model to build, with which switches and builder keywords.

    Attributes:
      name: a registered model name (:func:`convjax.models.available_models`) or an import
        path ``"<module>:<factory>"`` (module docstring).
      padding / pool / norm / conv: the switches; ``""`` is unset: a zoo model's default
        (:data:`SWITCH_DEFAULTS`, filled in here; ``conv=""``: the model's own, ``"flex"`` for
        FlexNets and FlexTCN, ``"standard"`` otherwise), an import-path model as written.
      kwargs: keyword arguments of the model's builder (``--config.model_kwargs.<name>``).

    Raises:
      ConfigError: an unknown model or switch value, a switch the model does not honour set
        to a non-default value, a switch combination that cannot work, or a keyword the
        builder does not accept (one line each, naming the ``--config`` flag).

    Example:
      >>> ModelSpec("resnet20", norm="deconv").norm
      'deconv'
      >>> ModelSpec("resnet20", pool="soft")  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      convjax._spec.ConfigError: --config.pool='soft' has no effect on model 'resnet20'...
    """

    name: str = "digits_cnn"
    padding: str = ""
    pool: str = ""
    norm: str = ""
    conv: str = ""
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.kwargs, Mapping):
            raise ConfigError(
                f"{flag('model_kwargs')} must be a block of fields, got {self.kwargs!r}"
            )
        object.__setattr__(self, "kwargs", frozen(plain(self.kwargs)))
        if is_import_path(self.name):
            self._check_import_path()
            return
        check_str(self.name, "model")
        if self.name not in available_models():
            close = difflib.get_close_matches(self.name, available_models(), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{flag('model')} must be one of {available_models()} or an import path "
                f"'<module>:<factory>' of your own model; {hint}got {self.name!r}"
            )
        for switch in ("padding", "pool", "norm"):
            if getattr(self, switch) == "":
                object.__setattr__(self, switch, SWITCH_DEFAULTS[switch])
        for switch in SWITCHES:
            check_str(getattr(self, switch), switch, _CHOICES[switch])
        info = model_info(self.name)
        switch_on = {s for s, kw in info.switch_kwargs if kw in self.kwargs}
        honoured = [s for s in SWITCHES if s in info.switches or s in switch_on]
        for switch in SWITCHES:
            value = getattr(self, switch)
            if switch not in honoured and value != SWITCH_DEFAULTS[switch]:
                raise ConfigError(
                    f"{flag(switch)}={value!r} has no effect on model {self.name!r}; it honours "
                    f"{', '.join(flag(s) for s in honoured) or 'no switch'}"
                )
        if info.kwargs is not None:
            for key in self.kwargs:
                if key not in info.kwargs:
                    close = difflib.get_close_matches(key, info.kwargs, n=1, cutoff=0.6)
                    hint = f"did you mean {flag('model_kwargs.' + close[0])}? " if close else ""
                    raise ConfigError(
                        f"unknown field {flag('model_kwargs.' + key)} for model {self.name!r}; "
                        f"{hint}it accepts {', '.join(info.kwargs)}"
                    )
        try:
            LayerConfig(
                padding=self.padding,
                pool=self.pool,
                norm=self.norm,
                conv=self.conv or info.default_conv,
            )
        except ValueError as err:
            changed = [s for s in SWITCHES if getattr(self, s) != SWITCH_DEFAULTS[s]]
            given = " ".join(f"{flag(s)}={getattr(self, s)}" for s in changed or SWITCHES)
            raise ConfigError(f"{given}: {err}") from None

    def _check_import_path(self) -> None:
        for switch in SWITCHES:
            check_str(getattr(self, switch), switch, ("", *_CHOICES[switch]))
        resolve_factory(self.name)
        options = self.convert_options()
        try:
            make_plan(**self.convert_switches(), options=dict(options))
        except (TypeError, ValueError) as err:
            given = " ".join(f"{flag(s)}={v}" for s, v in self.convert_switches().items() if v)
            if options:
                given += f" {flag('model_kwargs.convert')}={options}"
            raise ConfigError(f"{given.strip()}: {err}") from None

    def convert_options(self) -> dict[str, Any]:
        """The :func:`convjax.convert` options of an import-path model: ``deconv_dense=True``
        with ``norm="deconv"`` (the classifier becomes a deconvolution "Delinear" layer too,
        as in the zoo models and the reference code), updated by the
        ``--config.model_kwargs.convert`` block (e.g. ``{"padding_kwargs": {"depth": 2}}``,
        ``{"deconv_dense": False}``), which is not passed to the factory.

        Example:
          >>> ModelSpec("convjax.models.registry:resnet20", norm="deconv").convert_options()
          {'deconv_dense': True}
        """
        user = self.kwargs.get("convert") or {}
        if not isinstance(user, Mapping):
            raise ConfigError(f"{flag('model_kwargs.convert')} must be a block, got {user!r}")
        defaults = {"deconv_dense": True} if self.norm == "deconv" else {}
        return {**defaults, **plain(user)}

    def convert_switches(self) -> dict[str, str | None]:
        """The switches :func:`convjax.convert` gets for an import-path model: the ones set
        (non-empty), ``None`` for the unset ones (left as the model is written).

        Example:
          >>> ModelSpec("convjax.models.registry:resnet20", pool="soft").convert_switches()
          {'padding': None, 'pool': 'soft', 'norm': None, 'conv': None}
        """
        return {s: (getattr(self, s) or None) for s in SWITCHES}

    @property
    def honoured_switches(self) -> tuple[str, ...]:
        """The switches this model honours (with these ``kwargs``)."""
        if is_import_path(self.name):
            return SWITCHES
        info = model_info(self.name)
        on = {s for s, kw in info.switch_kwargs if kw in self.kwargs}
        return tuple(s for s in SWITCHES if s in info.switches or s in on)

    @classmethod
    def from_config(cls, config: Any) -> ModelSpec:
        """The model fields of a complete trainer config (ConfigDict or nested mapping)."""
        return cls(
            name=config["model"],
            padding=config["padding"],
            pool=config["pool"],
            norm=config["norm"],
            conv=config["conv"],
            kwargs=plain(config["model_kwargs"]),
        )

    def to_config(self) -> dict[str, Any]:
        """The config fields of this spec (inverse of :meth:`from_config`)."""
        return {
            "model": self.name,
            "model_kwargs": plain(self.kwargs),
            "padding": self.padding,
            "pool": self.pool,
            "norm": self.norm,
            "conv": self.conv,
        }

    def build(
        self,
        *,
        num_classes: int,
        in_features: int,
        seed: int = 0,
        axis_name: str | None = None,
        dtype: Any = None,
        input_shape: Sequence[int] | None = None,
    ) -> nnx.Module:
        """The model (:func:`convjax.models.build`), parameters seeded by ``seed`` (dropout
        by ``seed + 1``).

        An import-path model is ``factory(num_classes=, in_features=, rngs=, **kwargs)``
        converted by :func:`convjax.convert` with the switches that are set
        (:meth:`convert_switches`; ``inputs=`` zeros of shape ``(1, *input_shape)``, the
        image shape of one example, required when a switch is set). ``axis_name`` is given
        to its ``nnx.BatchNorm`` layers and converted deconvolution layers (cross-device
        statistics, as in the zoo models); ``dtype`` is the factory's business (the trainer
        casts the inputs only).

        Example:
          >>> model = ModelSpec("digits_cnn").build(num_classes=10, in_features=1)
        """
        if is_import_path(self.name):
            return self._build_import_path(
                num_classes=num_classes,
                in_features=in_features,
                seed=seed,
                axis_name=axis_name,
                input_shape=input_shape,
            )
        return build(
            self.name,
            num_classes=num_classes,
            in_features=in_features,
            padding=self.padding,
            pool=self.pool,
            norm=self.norm,
            conv=self.conv or None,
            axis_name=axis_name,
            dtype=dtype,
            rngs=nnx.Rngs(params=int(seed), dropout=int(seed) + 1),
            **dict(self.kwargs),
        )

    def _build_import_path(
        self,
        *,
        num_classes: int,
        in_features: int,
        seed: int,
        axis_name: str | None,
        input_shape: Sequence[int] | None,
    ) -> nnx.Module:
        factory = resolve_factory(self.name)
        rngs = nnx.Rngs(params=int(seed), dropout=int(seed) + 1)
        kwargs = {k: v for k, v in self.kwargs.items() if k != "convert"}
        model = factory(num_classes=num_classes, in_features=in_features, rngs=rngs, **kwargs)
        linen = isinstance(model, linen_nn.Module)
        if not (linen or isinstance(model, nnx.Module)):
            raise ConfigError(
                f"{flag('model')}={self.name!r} returned a {type(model).__name__}; the factory "
                "must return an nnx.Module or a flax.linen.Module"
            )
        switches = self.convert_switches()
        converting = any(v is not None for v in switches.values())
        inputs = None
        if linen or converting:
            if input_shape is None:
                what = "initialise the Linen model" if linen else "convert the model"
                raise ValueError(
                    f"`input_shape` (one example's shape) is needed to {what} of "
                    f"{flag('model')}={self.name!r}"
                )
            inputs = jnp.zeros((1, *(int(d) for d in input_shape)), jnp.float32)
        if converting:
            options = {"seed": int(seed), **self.convert_options()}
            model = convert(model, **switches, inputs=inputs, **options)
        if linen:
            return from_linen(model, inputs, rngs=rngs, axis_name=axis_name)
        if axis_name is not None:
            for _, module in nnx.iter_graph(model):
                if isinstance(module, (nnx.BatchNorm, _DeconvLayer)):
                    module.axis_name = axis_name
        return model


__all__ = ["SWITCH_DEFAULTS", "ModelSpec", "is_import_path", "resolve_factory"]

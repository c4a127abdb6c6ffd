"""The model part of a run, resolved and checked: :class:`ModelSpec`.

Config fields (``convjax/configs/default.py``): ``model`` (a registry name, see
:func:`convjax.models.available_models`), the four switches ``padding`` / ``pool`` / ``norm``
/ ``conv`` and ``model_kwargs`` (keywords of the model's builder). :meth:`ModelSpec.from_config`
is the one place those fields are read.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any

from flax import nnx

from convjax._spec import ConfigError, check_str, flag, frozen, plain
from convjax.models.blocks import CONV_TYPES, NORM_TYPES, PADDING_MODES, POOL_TYPES, LayerConfig
from convjax.models.registry import SWITCHES, available_models, build, model_info

#: The value of each switch when the config does not set it. A model that does not honour a
#: switch (:func:`convjax.models.model_info`) accepts only this value for it.
SWITCH_DEFAULTS = {"padding": "zero", "pool": "max", "norm": "batch", "conv": ""}
_CHOICES = {
    "padding": PADDING_MODES,
    "pool": POOL_TYPES,
    "norm": NORM_TYPES,
    "conv": ("", *CONV_TYPES),
}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Which model to build, with which switches and builder keywords.

    Attributes:
      name: a registered model name (:func:`convjax.models.available_models`).
      padding / pool / norm / conv: the switches (``conv=""``: the model's own, ``"flex"``
        for FlexNets and FlexTCN, ``"standard"`` otherwise).
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
    padding: str = SWITCH_DEFAULTS["padding"]
    pool: str = SWITCH_DEFAULTS["pool"]
    norm: str = SWITCH_DEFAULTS["norm"]
    conv: str = SWITCH_DEFAULTS["conv"]
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        check_str(self.name, "model", available_models())
        for switch in SWITCHES:
            check_str(getattr(self, switch), switch, _CHOICES[switch])
        if not isinstance(self.kwargs, Mapping):
            raise ConfigError(
                f"{flag('model_kwargs')} must be a block of fields, got {self.kwargs!r}"
            )
        object.__setattr__(self, "kwargs", frozen(plain(self.kwargs)))
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

    @property
    def honoured_switches(self) -> tuple[str, ...]:
        """The switches this model honours (with these ``kwargs``)."""
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
    ) -> nnx.Module:
        """The model (:func:`convjax.models.build`), parameters seeded by ``seed`` (dropout
        by ``seed + 1``).

        Example:
          >>> model = ModelSpec("digits_cnn").build(num_classes=10, in_features=1)
        """
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


__all__ = ["SWITCH_DEFAULTS", "ModelSpec"]

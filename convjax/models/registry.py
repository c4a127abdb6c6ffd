"""Model registry: look models up by name from a config.

``build(name, *, num_classes, in_features, padding, pool, norm, conv, axis_name, dtype, rngs,
**kwargs)`` resolves the switches into a :class:`convjax.models.blocks.LayerConfig` and calls
the registered constructor. Keyword arguments that are ``LayerConfig`` fields
(``param_dtype``, ``bn_momentum``, ``bn_epsilon``, ``flex_kernel_size``, ``flex_kwargs``,
``deconv_kwargs``) go to the config; the rest go to the model (e.g. ``width_multiplier``,
``widths``, ``head``, ``stem``, ``dropout``).

Each registered model declares the switches it honours (:func:`model_info`; e.g. CIFAR
ResNet-20 has no pooling layer, so ``pool`` does nothing there) and the keyword arguments its
builder accepts, so a config can be checked before anything is built
(:class:`convjax.models.spec.ModelSpec`).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import os
from collections.abc import Callable
from typing import Any

from flax import nnx

from convjax.models.blocks import LayerConfig
from convjax.models.flexnet import FLEXNET7_WIDTHS, FlexNet
from convjax.models.flextcn import FlexTCN
from convjax.models.resnet import CifarResNet, ResNet
from convjax.models.small import SmallCNN
from convjax.models.vgg import VGG, VGG_STAGES

#: ``constructor(*, num_classes, in_features, cfg, rngs, **kwargs) -> nnx.Module``.
ModelConstructor = Callable[..., nnx.Module]

#: The four model switches, in the order they are listed.
SWITCHES = ("padding", "pool", "norm", "conv")

_REGISTRY: dict[str, ModelConstructor] = {}
_DEFAULT_CONV: dict[str, str] = {}
_INFO: dict[str, ModelInfo] = {}
_SOURCE: dict[str, dict[str, str | None]] = {}
_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(LayerConfig)) - {
    "padding",
    "pool",
    "norm",
    "conv",
    "axis_name",
    "dtype",
}


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What a registered model declares about itself (:func:`model_info`).

    Attributes:
      name: the registry name.
      description: one line (the first line of the constructor's docstring).
      switches: the switches (of :data:`SWITCHES`) the model honours; the others are
        ignored by its layers.
      default_conv: the ``conv`` switch used when none is given.
      kwargs: keyword arguments the builder accepts (model arguments and ``LayerConfig``
        fields), or ``None`` when they are not declared (any keyword is passed on).
      switch_kwargs: ``{switch: kwarg}``: a switch honoured only when that keyword is given
        (e.g. ``pool`` for a FlexNet with ``pool_after``).
    """

    name: str
    description: str
    switches: tuple[str, ...]
    default_conv: str
    kwargs: tuple[str, ...] | None
    switch_kwargs: tuple[tuple[str, str], ...] = ()


def _builder_kwargs(cls: type | None, fixed: tuple[str, ...]) -> tuple[str, ...] | None:
    if cls is None:
        return None
    skip = {"self", "num_classes", "in_features", "cfg", "rngs", *fixed}
    params = inspect.signature(cls.__init__).parameters
    own = [n for n, p in params.items() if n not in skip and p.kind is not p.VAR_KEYWORD]
    return tuple(sorted({*own, *_CONFIG_FIELDS}))


def register(
    name: str,
    *,
    default_conv: str = "standard",
    switches: tuple[str, ...] = SWITCHES,
    builds: type | None = None,
    fixed: tuple[str, ...] = (),
    switch_kwargs: dict[str, str] | None = None,
    description: str = "",
) -> Callable[[ModelConstructor], ModelConstructor]:
    """Decorator registering ``constructor(*, num_classes, in_features, cfg, rngs, **kw)``.

    ``default_conv`` is the ``conv`` switch used when :func:`build` gets ``conv=None``;
    ``switches`` the switches the model honours; ``builds`` the class the constructor
    builds (its ``__init__`` keywords, less ``fixed`` ones the constructor sets, are the
    accepted ``model_kwargs``; ``None``: not checked); ``switch_kwargs`` maps a switch to a
    keyword that turns it on (see :class:`ModelInfo`); ``description`` defaults to the
    constructor's docstring's first line.

    Example:
      >>> @register("my_net")
      ... def my_net(*, num_classes, in_features, cfg, rngs):
      ...     return SmallCNN((8,), num_classes=num_classes, in_features=in_features,
      ...                     cfg=cfg, rngs=rngs)
      >>> "my_net" in available_models()
      True
      >>> del _REGISTRY["my_net"]  # (this example only: keep the registry as shipped)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty string, got {name!r}.")

    def decorator(fn: ModelConstructor) -> ModelConstructor:
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered.")
        bad = [s for s in switches if s not in SWITCHES]
        if bad:
            raise ValueError(f"`switches` must be a subset of {SWITCHES}, got {switches!r}.")
        _REGISTRY[name] = fn
        _DEFAULT_CONV[name] = default_conv
        try:
            source_file = inspect.getsourcefile(fn)
        except TypeError:
            source_file = None
        _SOURCE[name] = {
            "model": name,
            "module": getattr(fn, "__module__", None),
            "file": os.path.abspath(source_file) if source_file else None,
        }
        doc = (description or (fn.__doc__ or "").strip().split("\n")[0]).strip().replace("``", "")
        _INFO[name] = ModelInfo(
            name=name,
            description=doc,
            switches=tuple(s for s in SWITCHES if s in switches),
            default_conv=default_conv,
            kwargs=_builder_kwargs(builds, fixed),
            switch_kwargs=tuple(sorted((switch_kwargs or {}).items())),
        )
        return fn

    return decorator


def model_source(name: str) -> dict[str, str | None] | None:
    """Where a model registered outside convjax was registered: ``{"model", "module",
    "file"}`` (the constructor's module and source file), ``None`` for convjax's own models.

    The trainer stores it in the workdir (``model_source.json``) so that ``convjax eval`` /
    ``predict`` / ``export`` and ``load_model`` can re-run the registration
    (:func:`load_model_source`).

    Example:
      >>> model_source("resnet20") is None
      True
    """
    source = _SOURCE.get(name)
    if source is None or str(source["module"]).startswith("convjax."):
        return None
    return dict(source)


def load_model_source(source: dict[str, Any]) -> None:
    """Re-run the registration a :func:`model_source` record points to, unless its model is
    registered already: import its module when it is importable, else run its file (a config
    file that calls :func:`register` at import; its ``get_config`` is not called).

    Raises:
      ValueError: one line naming the model and the file or module that could not register it.

    Example:
      >>> load_model_source({"model": "resnet20", "module": None, "file": None})
    """
    name = source.get("model")
    if name in _REGISTRY:
        return
    module, path = source.get("module"), source.get("file")
    tried = []
    if module and module != "__main__" and not str(module).startswith("_convjax_config_"):
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 - reported in one line below if still missing
            tried.append(f"import {module}: {type(err).__name__}: {err}")
    if name not in _REGISTRY and path:
        if not os.path.exists(path):
            tried.append(f"{path} does not exist")
        else:
            spec = importlib.util.spec_from_file_location(
                f"_convjax_config_{abs(hash(path))}", path
            )
            file_module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(file_module)
            except Exception as err:  # noqa: BLE001 - one line for the user
                tried.append(f"running {path}: {type(err).__name__}: {err}")
    if name not in _REGISTRY:
        detail = "; ".join(tried) or f"{path or module} does not register it"
        raise ValueError(
            f"model {name!r} was registered by {path or module} (convjax.models.register), "
            f"which could not register it again: {detail}"
        )


def available_models() -> list[str]:
    """Sorted names accepted by :func:`build`.

    Example:
      >>> "resnet20" in available_models()
      True
    """
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a registered model.

    Example:
      >>> model_info("resnet20").switches
      ('padding', 'norm', 'conv')
    """
    if name not in _INFO:
        raise ValueError(f"`name` must be one of {available_models()}, got {name!r}.")
    return _INFO[name]


def build(
    name: str,
    *,
    num_classes: int,
    in_features: int,
    padding: str = "zero",
    pool: str = "max",
    norm: str = "batch",
    conv: str | None = None,
    axis_name: str | None = None,
    dtype: Any = None,
    rngs: nnx.Rngs,
    **kwargs: Any,
) -> nnx.Module:
    """Build a registered model: ``model(x)`` maps ``(N, H, W, C)`` (``(N, L, C)`` for
    ``flextcn``) to logits ``(N, num_classes)``; ``model.train()``/``model.eval()`` switch
    dropout and norm statistics.

    Args:
      name: one of :func:`available_models`.
      num_classes: number of logits.
      in_features: input channels.
      padding: ``"zero" | "reflect" | "replicate" | "circular" | "partial" | "learned"``.
      pool: ``"max" | "avg" | "soft"``.
      norm: ``"batch" | "deconv" | "none"``.
      conv: ``"standard" | "flex"``; ``None`` = the model's own (``"flex"`` for ``flexnet*``
        and ``flextcn``, ``"standard"`` otherwise).
      axis_name: named axis for cross-device statistics (BatchNorm, deconvolution moments).
      dtype: compute dtype (``None``: the input's); parameters stay ``param_dtype`` (fp32).
      rngs: ``nnx.Rngs`` (``params``; dropout models also draw ``dropout``).
      **kwargs: ``LayerConfig`` fields or model keyword arguments (module docstring).

    Raises:
      ValueError: unknown name or switch value, or a switch combination that cannot work.

    Example:
      >>> import jax.numpy as jnp
      >>> model = build("digits_cnn", num_classes=10, in_features=1, pool="soft",
      ...               rngs=nnx.Rngs(0))
      >>> model(jnp.ones((2, 8, 8, 1))).shape
      (2, 10)
    """
    if name not in _REGISTRY:
        raise ValueError(f"`name` must be one of {available_models()}, got {name!r}.")
    layer_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _CONFIG_FIELDS}
    cfg = LayerConfig(
        padding=padding,
        pool=pool,
        norm=norm,
        conv=_DEFAULT_CONV[name] if conv is None else conv,
        axis_name=axis_name,
        dtype=dtype,
        **layer_kwargs,
    )
    return _REGISTRY[name](
        num_classes=num_classes, in_features=in_features, cfg=cfg, rngs=rngs, **kwargs
    )


def _vgg(stages: str, head: str) -> ModelConstructor:
    def make(**kw: Any) -> nnx.Module:
        kw.setdefault("head", head)
        return VGG(VGG_STAGES[stages], **kw)

    return make


for _depth in (11, 16):
    for _suffix, _head in (("", "cifar"), ("_imagenet", "imagenet")):
        register(
            f"vgg{_depth}{_suffix}",
            builds=VGG,
            fixed=("stages",),
            description=f"VGG-{_depth} ({_head} head): conv stages with 2x2 pools",
        )(_vgg(f"vgg{_depth}", _head))

_CIFAR_RESNET = dict(switches=("padding", "norm", "conv"), builds=CifarResNet, fixed=("depth",))
_RESNET = dict(builds=ResNet, fixed=("block", "stage_sizes"))
_FLEXNET = dict(
    default_conv="flex",
    switches=("padding", "norm", "conv"),
    builds=FlexNet,
    switch_kwargs={"pool": "pool_after"},
)


@register("resnet20", **_CIFAR_RESNET)
def resnet20(**kw: Any) -> nnx.Module:
    """CIFAR ResNet-20 (3 stages x 3 basic blocks, widths 16/32/64, ~0.27M parameters)."""
    return CifarResNet(20, **kw)


@register("resnet56", **_CIFAR_RESNET)
def resnet56(**kw: Any) -> nnx.Module:
    """CIFAR ResNet-56 (3 stages x 9 basic blocks, widths 16/32/64, ~0.85M parameters)."""
    return CifarResNet(56, **kw)


@register("resnet18", **_RESNET)
def resnet18(**kw: Any) -> nnx.Module:
    """ImageNet ResNet-18 (basic blocks [2, 2, 2, 2], 11.7M parameters at 1000 classes)."""
    return ResNet("basic", (2, 2, 2, 2), **kw)


@register("resnet50", **_RESNET)
def resnet50(**kw: Any) -> nnx.Module:
    """ImageNet ResNet-50 (bottleneck blocks [3, 4, 6, 3], 25.6M parameters at 1000 classes)."""
    return ResNet("bottleneck", (3, 4, 6, 3), **kw)


@register("flexnet7", **_FLEXNET)
def flexnet7(**kw: Any) -> nnx.Module:
    """FlexNet-7 (stem 24, blocks 24,24,36,36,36,48,48; ~0.67M parameters on CIFAR-10)."""
    kw.setdefault("widths", FLEXNET7_WIDTHS)
    return FlexNet(**kw)


@register("flexnet_tiny", **{**_FLEXNET, "switches": SWITCHES})
def flexnet_tiny(**kw: Any) -> nnx.Module:
    """A CPU-sized FlexNet: stem 8, blocks 8 and 16, one 2x2 pool after the first block."""
    kw.setdefault("widths", (8, 16))
    kw.setdefault("pool_after", (0,))
    kw.setdefault("dropout", 0.1)
    return FlexNet(**kw)


@register("flextcn", default_conv="flex", switches=("norm", "conv"), builds=FlexTCN)
def flextcn(**kw: Any) -> nnx.Module:
    """FlexTCN for sequences ``(N, L, C)``: causal FlexConv residual blocks, widths 32 x 4."""
    return FlexTCN(**kw)


@register("digits_cnn", builds=SmallCNN)
def digits_cnn(**kw: Any) -> nnx.Module:
    """Small CNN for 8x8 digits (widths 32, 64; ~66k parameters): the trainer's default."""
    return SmallCNN(**kw)


__all__ = [
    "SWITCHES",
    "ModelConstructor",
    "ModelInfo",
    "available_models",
    "build",
    "load_model_source",
    "model_info",
    "model_source",
    "register",
]

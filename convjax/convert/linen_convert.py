"""``convert`` for Flax Linen modules: layers swapped while the model runs.

A converted Linen model is an instance of a subclass of the model's own class whose ``init``,
``init_with_output`` and ``apply`` run the original code under ``nn.intercept_methods`` and
:func:`convjax.convert.intercept_pools`. The interceptor sees each bound layer; a conv is
replaced by the convjax Linen layer constructed with ``parent=<the conv's own scope>``, so the
new layer reads and creates its variables exactly where the old one kept them
(``params/<conv path>/kernel``) and adds new ones beside them (``padding/<conv path>/pad/...``,
``batch_stats/<conv path>/mean``).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import warnings
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax.linen import module as linen_module

import convjax.linen as cjl
from convjax.convert.common import ConversionError, ConvSpec, Plan, conv_spec
from convjax.convert.pools import PoolCall, intercept_pools, pool_by_kind, pool_changes
from convjax.convert.report import Change, ConversionReport
from convjax.linen.padding import LOSSES_COLLECTION, PADDING_COLLECTION


def _path(mod: nn.Module) -> str:
    return "/".join(str(p) for p in mod.path) or "<model>"


def _spec(path: str, mod: nn.Module) -> ConvSpec:
    if isinstance(mod, cjl.Conv):
        n = 1 if isinstance(mod.kernel_size, int) and mod.num_spatial_dims == 1 else None
        ks = (
            (mod.kernel_size,) * (n or int(mod.num_spatial_dims or 2))
            if isinstance(mod.kernel_size, int)
            else tuple(mod.kernel_size)
        )
        dil = (
            (mod.kernel_dilation,) * len(ks)
            if isinstance(mod.kernel_dilation, int)
            else tuple(mod.kernel_dilation)
        )
        padding = mod.padding
        if padding is None:
            padding = tuple((d * (k // 2), d * (k // 2)) for k, d in zip(ks, dil))
        return conv_spec(
            path,
            ks,
            mod.strides,
            padding,
            dil,
            mod.feature_group_count,
            mod.use_bias,
            mode=mod.padding_mode,
        )
    return conv_spec(
        path,
        mod.kernel_size,
        mod.strides,
        mod.padding,
        mod.kernel_dilation,
        mod.feature_group_count,
        mod.use_bias,
        mod.input_dilation,
        mod.mask,
        mod.precision,
    )


def _describe(mod: nn.Module, spec: ConvSpec) -> str:
    origin = "nn.Conv" if type(mod) is nn.Conv else "convjax Conv"
    return f"{origin}({spec.describe()})"


class _Session:
    """The interceptor state of one run (``init`` / ``apply``) of a converted model."""

    def __init__(self, plan: Plan, fused: frozenset[str], record: bool):
        self.plan = plan
        self.fused = fused  # conv paths followed by a BatchNorm (found at convert time)
        self.record = record
        self.changes: list[Change] = []
        self.pairs: dict[str, str] = {}
        self.outputs: dict[str, Any] = {}
        self.own: set[int] = set()
        self.keep_alive: list[Any] = []  # own layers stay referenced, so their ids stay unique
        self.pools: list[PoolCall] = []

    def note(self, path: str, before: str, after: str) -> None:
        if self.record:
            self.changes.append(Change(path, before, after))

    # -- convs ---------------------------------------------------------------------------
    def _replacement(self, mod: nn.Module, path: str, x: jax.Array):
        plan = self.plan
        spec = _spec(path, mod)
        if x.ndim != len(spec.kernel_size) + 2:
            raise ConversionError(
                f"{path}: convjax convs take (batch, *{len(spec.kernel_size)} spatial dims, "
                f"features); the conv got an input of shape {tuple(x.shape)}."
            )
        mode = plan.mode_for(spec.mode) if spec.reads_border else "zero"
        common = dict(
            dtype=mod.dtype,
            param_dtype=mod.param_dtype,
            parent=mod.scope,
        )
        inits = dict(kernel_init=mod.kernel_init, bias_init=mod.bias_init)
        learned = plan.learned_kwargs() if mode == "learned" else None
        before = _describe(mod, spec)
        train = mod.is_mutable_collection("batch_stats")
        if plan.norm == "deconv":
            if any(d != 1 for d in spec.dilation):
                raise ConversionError(f"{path}: DeconvConv has no kernel dilation.")
            if mode == "partial":
                raise ConversionError(f"{path}: partial padding cannot be deconvolved.")
            layer = cjl.DeconvConv(
                mod.features,
                spec.kernel_size,
                strides=spec.strides,
                padding=spec.padding,
                padding_mode=mode,
                padding_kwargs=learned,
                use_bias=True,
                feature_group_count=spec.groups,
                use_running_average=not train,
                **dict(plan.deconv_kwargs),
                **inits,
                **common,
            )
            after = f"DeconvConv({spec.describe(mode)}, bias)"
            return layer, (x,), {}, before, after
        if plan.conv == "flex" and max(spec.kernel_size) > 1:
            if spec.groups != 1:
                raise ConversionError(
                    f"{path}: FlexConv has no grouped form (groups={spec.groups})."
                )
            if any(d != 1 for d in spec.dilation):
                raise ConversionError(f"{path}: FlexConv has no kernel dilation.")
            mode = plan.mode_for(spec.mode)
            if mode not in ("zero", "reflect", "replicate", "circular"):
                raise ConversionError(f"{path}: FlexConv cannot pad with {mode!r}; pass padding=.")
            layer = cjl.FlexConv(
                mod.features,
                plan.flex_kernel_size,
                strides=spec.strides,
                padding_mode=mode,
                use_bias=spec.use_bias,
                **dict(plan.flex_kwargs),
                **common,
            )
            after = f"FlexConv(horizon {plan.flex_kernel_size}, {mode}; new weights)"
            return layer, (x,), {}, before, after
        use_bias = spec.use_bias or (plan.norm == "none" and path in self.fused)
        if plan.padding is None and use_bias == spec.use_bias:
            reason = (
                "1x1 conv (FlexConv replaces spatial kernels only)"
                if plan.conv == "flex"
                else "no BatchNorm after it"
            )
            return None, (), {}, before, f"kept: {reason}"
        layer = cjl.Conv(
            mod.features,
            spec.kernel_size,
            strides=spec.strides,
            padding=spec.padding,
            padding_mode=mode,
            use_bias=use_bias,
            feature_group_count=spec.groups,
            kernel_dilation=spec.dilation,
            padding_kwargs=learned,
            **inits,
            **common,
        )
        note = "" if spec.reads_border or plan.padding is None else " (reads no border)"
        det = not mod.is_mutable_collection(LOSSES_COLLECTION)
        return layer, (x,), {"deterministic": det}, before, f"Conv({spec.describe(mode)}){note}"

    def interceptor(self, next_fun, args, kwargs, context):
        mod = context.module
        if context.method_name != "__call__" or id(mod) in self.own:
            return next_fun(*args, **kwargs)
        plan = self.plan
        touch_convs = plan.padding is not None or plan.norm is not None or plan.conv is not None
        if type(mod) in (nn.Conv, cjl.Conv) and touch_convs:
            path = _path(mod)
            x = args[0] if args else kwargs["inputs"]
            layer, a, k, before, after = self._replacement(mod, path, x)
            self.note(path, before, after)
            if layer is None:
                y = next_fun(*args, **kwargs)
            else:
                self.own.add(id(layer))
                self.keep_alive.append(layer)
                y = layer(*a, **k)
            self.outputs[path] = y
            return y
        if isinstance(mod, nn.BatchNorm) and plan.fuse_norm:
            path = _path(mod)
            x = args[0] if args else kwargs.get("x")
            conv = next((p for p, y in self.outputs.items() if y is x), None)
            if conv is not None:
                self.pairs[path] = conv
                self.note(path, "nn.BatchNorm", f"removed (fused into {conv})")
                return x
            self.note(path, "nn.BatchNorm", "kept: its input is not a conv output")
            return next_fun(*args, **kwargs)
        if type(mod) is nn.Dense and plan.norm == "deconv" and plan.dense_selected(_path(mod)):
            path = _path(mod)
            kwargs_d = {
                k: v
                for k, v in plan.deconv_kwargs.items()
                if k not in ("sampling_stride", "feature_group_count", "freeze", "freeze_iter")
            }
            layer = cjl.DeconvDense(
                mod.features,
                use_bias=True,
                use_running_average=not mod.is_mutable_collection("batch_stats"),
                kernel_init=mod.kernel_init,
                bias_init=mod.bias_init,
                dtype=mod.dtype,
                param_dtype=mod.param_dtype,
                **kwargs_d,
                parent=mod.scope,
            )
            self.own.add(id(layer))
            self.keep_alive.append(layer)
            self.note(path, "nn.Dense", "DeconvDense(bias)")
            return layer(args[0] if args else kwargs["inputs"])
        if isinstance(mod, cjl.SoftPool) and plan.pool not in (None, "soft"):
            self.note(_path(mod), "convjax SoftPool", plan.pool)
            x = args[0] if args else kwargs["x"]
            return pool_by_kind(plan.pool, x, mod.window_shape, mod.strides, mod.padding)
        if isinstance(mod, (cjl.DeconvConv, cjl.FlexConv)) and touch_convs:
            reason = f"already a convjax {type(mod).__name__} (build it with the switches instead)"
            self.note(_path(mod), type(mod).__name__, f"kept: {reason}")
            return next_fun(*args, **kwargs)
        if isinstance(mod, nn.ConvTranspose) and touch_convs:
            raise ConversionError(f"{_path(mod)}: nn.ConvTranspose is not supported by convert.")
        return next_fun(*args, **kwargs)

    # -- pools ---------------------------------------------------------------------------
    def pool_handler(self, call: PoolCall) -> str | None:
        stack = linen_module._context.module_stack
        mod = stack[-1] if stack else None
        where = _path(mod) if isinstance(mod, nn.Module) and mod.scope is not None else "<model>"
        target = self.plan.pool if call.kind in ("max", "avg") else None
        if self.record:
            self.pools.append(dataclasses.replace(call, site=f"{where} ({call.site})"))
        return target


_ACTIVE: list[_Session] = []


@contextlib.contextmanager
def _session(plan: Plan, fused: frozenset[str], record: bool = False) -> Iterator[_Session]:
    """Run the converted model's code with its layers swapped (a session already open, e.g.
    ``init`` calling ``init_with_output``, is reused, never stacked)."""
    if _ACTIVE:
        yield _ACTIVE[-1]
        return
    sess = _Session(plan, fused, record)
    _ACTIVE.append(sess)
    with contextlib.ExitStack() as stack:
        stack.callback(_ACTIVE.pop)
        stack.enter_context(nn.intercept_methods(sess.interceptor))
        if plan.pool is not None or record:
            stack.enter_context(intercept_pools(sess.pool_handler))
        yield sess


def _strip_losses(variables: Any) -> Any:
    if isinstance(variables, dict) and LOSSES_COLLECTION in variables:
        return {k: v for k, v in variables.items() if k != LOSSES_COLLECTION}
    return variables


def _warn_losses_dropped(variables: Any, mutable: Any) -> None:
    """A training ``apply`` (some collections mutable) of a model with learned padding that
    does not make ``losses`` mutable drops the padding losses: the filters never train."""
    if not isinstance(variables, dict) or not variables.get(PADDING_COLLECTION):
        return
    if mutable is False or mutable is True or mutable is None:
        return
    names = [mutable] if isinstance(mutable, str) else list(mutable)
    if names and LOSSES_COLLECTION not in names:
        warnings.warn(
            "convjax.convert: this model has learned padding but `apply(..., mutable=...)` "
            f"does not include {LOSSES_COLLECTION!r}, so the padding losses are dropped and the "
            "padding filters never train. Use mutable=[..., 'losses'], add "
            "`convjax.linen.sum_padding_losses(mutated)` to the loss and optimise "
            "`convjax.convert.linen_trainable(variables)` with "
            "`convjax.convert.make_optimizers(variables, tx)`.",
            UserWarning,
            stacklevel=3,
        )


def _converted_class(cls: type, plan: Plan, fused: frozenset[str]) -> type:
    @nn.nowrap
    def init(self, *args, **kwargs):
        with _session(plan, fused):
            return _strip_losses(super(new_cls, self).init(*args, **kwargs))

    @nn.nowrap
    def init_with_output(self, *args, **kwargs):
        with _session(plan, fused):
            y, variables = super(new_cls, self).init_with_output(*args, **kwargs)
        return y, _strip_losses(variables)

    @nn.nowrap
    def apply(self, variables, *args, **kwargs):
        _warn_losses_dropped(variables, kwargs.get("mutable", False))
        with _session(plan, fused):
            return super(new_cls, self).apply(_strip_losses(variables), *args, **kwargs)

    namespace = {
        "init": init,
        "init_with_output": init_with_output,
        "apply": apply,
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
    }
    new_cls = type(cls)(cls.__name__, (cls,), namespace)
    return new_cls


def _instance(cls: type, model: nn.Module) -> nn.Module:
    fields = {
        f.name: getattr(model, f.name)
        for f in dataclasses.fields(model)
        if f.init and f.name != "parent"
    }
    return cls(**fields)


def _sizes(variables: Any) -> dict[tuple, tuple[str, int]]:
    flat = jax.tree_util.tree_flatten_with_path(variables)[0]
    out = {}
    for path, leaf in flat:
        keys = tuple(getattr(k, "key", getattr(k, "idx", k)) for k in path)
        out[keys] = (str(keys[0]), int(np.prod(leaf.shape)))
    return out


def _diff(a: dict, b: dict) -> dict[str, int]:
    out: collections.Counter = collections.Counter()
    for p, (kind, size) in a.items():
        if p not in b and kind != LOSSES_COLLECTION:
            out[kind] += size
    return dict(out)


def convert_linen(model: nn.Module, plan: Plan, inputs: Any, call_kwargs: dict | None):
    """The Linen path of :func:`convjax.convert`; returns ``(converted module, report)``."""
    if inputs is None:
        raise ValueError(
            "`inputs` (an example batch) is required for Linen models: the conversion report and "
            "the conv -> BatchNorm pairs come from one abstract init."
        )
    if model.scope is not None:
        raise TypeError("`model` must be an unbound Linen module (not inside init/apply).")
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    kwargs = dict(call_kwargs or {})
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    base = type(model)
    if "_convjax_converted" in vars(base):
        raise TypeError("`model` is already a converted module: convert the original once.")
    original = jax.eval_shape(lambda: model.init(rngs, *args, **kwargs))
    # pass 1: which convs feed a BatchNorm (only norm="none" needs it to give them a bias)
    fused: frozenset[str] = frozenset()
    if plan.norm == "none":
        probe = _instance(_converted_class(base, plan, fused), model)
        with _session(plan, fused, record=True) as sess:
            jax.eval_shape(lambda: probe.init(rngs, *args, **kwargs))
        fused = frozenset(sess.pairs.values())
    new_cls = _converted_class(base, plan, fused)
    new = _instance(new_cls, model)
    with _session(plan, fused, record=True) as sess:
        converted = jax.eval_shape(lambda: new.init(rngs, *args, **kwargs))
    changes = list(_dedupe(sess.changes))
    for line, call in zip(pool_changes(sess.pools, plan.pool), sess.pools):
        if plan.pool is not None or call.kind not in ("max", "avg"):
            changes.append(Change(*line))
    report = ConversionReport(
        switches=plan.switches,
        changes=tuple(changes),
        params_added=_diff(_sizes(converted), _sizes(original)),
        params_removed=_diff(_sizes(original), _sizes(converted)),
    )
    new_cls.convert_report = report
    new_cls._convjax_converted = True
    return new, report


def _dedupe(changes: list[Change]) -> Iterator[Change]:
    """A layer called twice (shared weights) is listed once."""
    seen: set[str] = set()
    for c in changes:
        if c.path not in seen:
            seen.add(c.path)
            yield c

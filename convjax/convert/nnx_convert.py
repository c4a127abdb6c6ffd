"""``convert`` for Flax NNX modules: a converted deep copy with layers swapped in place."""

from __future__ import annotations

import collections
import dataclasses
import functools
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import convjax.nnx as cnn
from convjax.convert.common import ConversionError, ConvSpec, Plan, conv_spec
from convjax.convert.pools import PoolCall, intercept_pools, pool_changes
from convjax.convert.report import Change, ConversionReport
from convjax.nnx.soft_pool import Pool

#: Conv layer types a conversion replaces.
CONV_TYPES = (nnx.Conv, cnn.Conv)


class Removed(nnx.Module):
    """What a BatchNorm fused into the conv before it becomes: the identity.

    Accepts and ignores the BatchNorm call's extra arguments (``use_running_average``, ``mask``).
    """

    def __init__(self, was: str):
        self.was = was

    def __call__(self, x: jax.Array, *args: Any, **kwargs: Any) -> jax.Array:
        return x


def _path_str(path: tuple) -> str:
    return "/".join(str(p) for p in path) or "<model>"


def _modules(model: nnx.Module) -> dict[tuple, nnx.Module]:
    return {p: n for p, n in nnx.iter_graph(model) if isinstance(n, nnx.Module)}


def _spec(path: str, m: nnx.Module) -> ConvSpec:
    if isinstance(m, cnn.Conv):
        padding = (
            m.padding
            if m.padding is not None
            else tuple(
                (d * (k // 2), d * (k // 2)) for k, d in zip(m.kernel_size, m.kernel_dilation)
            )
        )
        return conv_spec(
            path,
            m.kernel_size,
            m.strides,
            padding,
            m.kernel_dilation,
            m.feature_group_count,
            m.use_bias,
            mode=m.padding_mode,
        )
    return conv_spec(
        path,
        m.kernel_size,
        m.strides,
        m.padding,
        m.kernel_dilation,
        m.feature_group_count,
        m.use_bias,
        m.input_dilation,
        m.mask,
        m.precision,
    )


def _features(m: nnx.Module) -> tuple[int, int]:
    return int(m.in_features), int(m.out_features)


def _keep_var(new: nnx.Module, name: str, old: Any) -> None:
    if old is not None:
        setattr(new, name, old)


# ------------------------------------------------------------------------------ tracing


class _Trace:
    """Calls recorded in one traced forward pass: conv outputs, BatchNorm inputs, pools."""

    def __init__(self) -> None:
        self.convs: dict[str, Any] = {}  # path -> output object
        self.norm_inputs: dict[str, Any] = {}  # path -> input object
        self.called: set[str] = set()
        self.pools: list[PoolCall] = []

    def pairs(self) -> dict[str, str]:
        """``{batchnorm path: conv path}`` where the BatchNorm's input IS the conv's output."""
        out = {}
        for bn, x in self.norm_inputs.items():
            for conv, y in self.convs.items():
                if x is y:
                    out[bn] = conv
        return out


def _trace(model: nnx.Module, args: tuple, kwargs: dict) -> _Trace:
    """Run ``model(*args, **kwargs)`` abstractly (``jax.eval_shape``) on a copy, recording
    which conv produced each BatchNorm's input and every pooling call."""
    trace = _Trace()
    graphdef, state = nnx.split(model)
    recorded = (nnx.Conv, cnn.Conv, cnn.DeconvConv, nnx.BatchNorm, nnx.Linear)

    def run(state):
        m = nnx.merge(graphdef, state)
        paths = {id(n): _path_str(p) for p, n in _modules(m).items()}
        classes = {type(n) for n in _modules(m).values()} | set(recorded)
        saved = {
            cls: vars(cls).get("__call__")
            for cls in classes
            if any("__call__" in vars(k) for k in cls.__mro__[:-1])
        }
        stack: list[str] = []

        def wrap(cls, orig):
            @functools.wraps(orig)
            def call(self, *a, **k):
                mine = type(self) is cls and id(self) in paths
                if mine:
                    stack.append(paths[id(self)])
                try:
                    y = orig(self, *a, **k)
                finally:
                    if mine:
                        stack.pop()
                if mine and isinstance(self, recorded):
                    path = paths[id(self)]
                    trace.called.add(path)
                    if isinstance(self, nnx.BatchNorm):
                        trace.norm_inputs[path] = a[0] if a else k.get("x")
                    else:
                        trace.convs[path] = y
                return y

            return call

        def on_pool(call: PoolCall) -> None:
            where = stack[-1] if stack else "<model>"
            trace.pools.append(dataclasses.replace(call, site=f"{where} ({call.site})"))

        try:
            for cls in saved:
                cls.__call__ = wrap(cls, cls.__call__)
            with intercept_pools(on_pool):
                m(*args, **kwargs)
        finally:
            for cls, orig in saved.items():
                if orig is None:
                    del cls.__call__
                else:
                    cls.__call__ = orig
        return jnp.zeros(())

    jax.eval_shape(run, state)
    return trace


# ------------------------------------------------------------------------------ builders


def _conv_kwargs(m: nnx.Module) -> dict[str, Any]:
    return dict(dtype=m.dtype, param_dtype=m.param_dtype)


def _to_conv(path: str, m: nnx.Module, plan: Plan, rngs: nnx.Rngs, *, bias: bool | None = None):
    spec = _spec(path, m)
    mode = plan.mode_for(spec.mode) if spec.reads_border else "zero"
    c_in, c_out = _features(m)
    use_bias = spec.use_bias if bias is None else bias
    new = cnn.Conv(
        c_in,
        c_out,
        spec.kernel_size,
        strides=spec.strides,
        padding=spec.padding,
        padding_mode=mode,
        use_bias=use_bias,
        feature_group_count=spec.groups,
        kernel_dilation=spec.dilation,
        padding_kwargs=plan.learned_kwargs() if mode == "learned" else None,
        rngs=rngs,
        **_conv_kwargs(m),
    )
    new.kernel = m.kernel
    if spec.use_bias:
        _keep_var(new, "bias", m.bias)
    note = "" if spec.reads_border or plan.padding is None else " (reads no border)"
    return new, f"Conv({spec.describe(mode)}){note}"


def _to_deconv(path: str, m: nnx.Module, plan: Plan, rngs: nnx.Rngs):
    spec = _spec(path, m)
    if any(d != 1 for d in spec.dilation):
        raise ConversionError(f"{path}: DeconvConv has no kernel dilation (got {spec.dilation}).")
    mode = plan.mode_for(spec.mode) if spec.reads_border else "zero"
    if mode == "partial":
        raise ConversionError(f"{path}: partial padding cannot be deconvolved; pass padding=.")
    c_in, c_out = _features(m)
    try:
        new = cnn.DeconvConv(
            c_in,
            c_out,
            spec.kernel_size,
            strides=spec.strides,
            padding=spec.padding,
            padding_mode=mode,
            use_bias=True,
            feature_group_count=spec.groups,
            padding_kwargs=plan.learned_kwargs() if mode == "learned" else None,
            **dict(plan.deconv_kwargs),
            rngs=rngs,
            **_conv_kwargs(m),
        )
    except ValueError as err:
        raise ConversionError(f"{path}: cannot become a DeconvConv: {err}") from None
    new.kernel = m.kernel
    if spec.use_bias:
        _keep_var(new, "bias", m.bias)
    return new, f"DeconvConv({spec.describe(mode)}, bias)"


def _to_flex(path: str, m: nnx.Module, plan: Plan, rngs: nnx.Rngs):
    spec = _spec(path, m)
    if spec.groups != 1:
        raise ConversionError(f"{path}: FlexConv has no grouped form (groups={spec.groups}).")
    if any(d != 1 for d in spec.dilation):
        raise ConversionError(f"{path}: FlexConv has no kernel dilation (got {spec.dilation}).")
    mode = plan.mode_for(spec.mode)
    if mode not in ("zero", "reflect", "replicate", "circular"):
        raise ConversionError(f"{path}: FlexConv cannot pad with {mode!r}; pass padding=.")
    c_in, c_out = _features(m)
    new = cnn.FlexConv(
        c_in,
        c_out,
        plan.flex_kernel_size,
        strides=spec.strides,
        padding_mode=mode,
        num_spatial_dims=len(spec.kernel_size),
        use_bias=spec.use_bias,
        **dict(plan.flex_kwargs),
        rngs=rngs,
        **_conv_kwargs(m),
    )
    return new, f"FlexConv(horizon {plan.flex_kernel_size}, {mode}; new weights)"


def _to_dense(path: str, m: nnx.Linear, plan: Plan, rngs: nnx.Rngs):
    kwargs = {
        k: v
        for k, v in plan.deconv_kwargs.items()
        if k not in ("sampling_stride", "feature_group_count", "freeze", "freeze_iter")
    }
    new = cnn.DeconvDense(
        m.in_features,
        m.out_features,
        use_bias=True,
        **kwargs,
        rngs=rngs,
        dtype=m.dtype,
        param_dtype=m.param_dtype,
    )
    new.kernel = m.kernel
    if m.use_bias:
        new.bias = m.bias
    return new, "DeconvDense(bias)"


def _describe_old(m: nnx.Module, path: str) -> str:
    if isinstance(m, CONV_TYPES):
        origin = "nnx.Conv" if type(m) is nnx.Conv else "convjax Conv"
        return f"{origin}({_spec(path, m).describe()})"
    return type(m).__name__


# ------------------------------------------------------------------------------ replacing


def _replace_refs(root: nnx.Module, mapping: dict[int, nnx.Module]) -> None:
    """Point every reference to a replaced module (attributes, nnx.List/Dict, lists, dicts)
    at its replacement; a module shared by several parents is replaced everywhere."""
    seen: set[int] = set()

    def visit(node: Any) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, nnx.Module):
            for name, value in list(vars(node).items()):
                if name.startswith("_pytree__") or name.startswith("_object__"):
                    continue
                if id(value) in mapping:
                    if isinstance(node, nnx.List) and name.isdigit():
                        node[int(name)] = mapping[id(value)]
                    else:
                        setattr(node, name, mapping[id(value)])
                else:
                    visit(value)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if id(value) in mapping:
                    node[i] = mapping[id(value)]
                else:
                    visit(value)
        elif isinstance(node, dict):
            for k, value in list(node.items()):
                if id(value) in mapping:
                    node[k] = mapping[id(value)]
                else:
                    visit(value)
        elif isinstance(node, tuple):
            if any(id(v) in mapping for v in node):
                raise ConversionError(
                    "a converted layer is held in a tuple, which cannot be updated in place; "
                    "hold layers in a list, nnx.List or attributes."
                )
            for value in node:
                visit(value)

    visit(root)


def _count(model: nnx.Module) -> dict[tuple, tuple[str, int]]:
    flat = nnx.to_flat_state(nnx.state(model, nnx.Not(nnx.RngState)))
    return {p: (type(v).__name__, int(np.prod(np.shape(v.get_value())))) for p, v in flat}


def _diff(a: dict, b: dict) -> dict[str, int]:
    out: collections.Counter = collections.Counter()
    for p, (kind, size) in a.items():
        if p not in b:
            out[kind] += size
    return dict(out)


# ------------------------------------------------------------------------------ the model class


def _converted_class(
    cls: type, pool: str | None, report: ConversionReport, has_padding: bool
) -> type:
    """A subclass of ``cls`` whose ``__call__`` runs under the pooling interception (if
    ``pool``) and warns about padding losses recorded but never collected; it carries the
    conversion's report as ``convert_report``."""
    original = cls.__call__

    def handler(call: PoolCall) -> str | None:
        return pool if call.kind in ("max", "avg") else None

    @functools.wraps(original)
    def __call__(self, *args, **kwargs):
        if has_padding:
            _warn_uncollected(self)
        if pool is None:
            return original(self, *args, **kwargs)
        with intercept_pools(handler):
            return original(self, *args, **kwargs)

    namespace = {
        "__call__": __call__,
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "convert_report": report,
    }
    return type(cls)(cls.__name__, (cls,), namespace)


_WARNED: set[int] = set()


def _warn_uncollected(model: nnx.Module) -> None:
    """Warn once if a learned padding loss was recorded but never popped (eager calls only).

    A non-zero :class:`convjax.nnx.PaddingLoss` at the start of a call means an earlier
    training call recorded it and nobody called ``pop_padding_losses`` (so nothing trains the
    padding filters, e.g. the usual ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` loop).
    Inside ``jit`` the values are abstract and nothing is checked.
    """
    if id(type(model)) in _WARNED:
        return
    for _, var in nnx.iter_graph(model):
        if isinstance(var, cnn.PaddingLoss):
            value = var.get_value()
            if isinstance(value, jax.core.Tracer):
                return
            if float(value) != 0.0:
                _WARNED.add(id(type(model)))
                warnings.warn(
                    "convjax.convert: this model's learned padding recorded losses that were "
                    "never collected, so its padding filters (PadParam) are not trained. Add "
                    "`convjax.nnx.pop_padding_losses(model)` to the loss and step a second "
                    "optimizer over PadParam: `opt, opt_pad = "
                    "convjax.convert.make_optimizers(model, tx)`.",
                    UserWarning,
                    stacklevel=3,
                )
                return


# ------------------------------------------------------------------------------ entry point


def convert_nnx(model: nnx.Module, plan: Plan, inputs: Any, call_kwargs: dict | None):
    """The NNX path of :func:`convjax.convert`; returns ``(converted copy, report)``."""
    args = inputs if isinstance(inputs, tuple) else (() if inputs is None else (inputs,))
    call_kwargs = dict(call_kwargs or {})
    if plan.needs_trace and not args:
        raise ValueError(
            "`inputs` (an example batch) is required with pool= or norm=: pooling calls and "
            "conv -> BatchNorm pairs are found by tracing one forward pass."
        )
    trace = _trace(model, args, call_kwargs) if args else None
    new = nnx.clone(model)
    rngs = nnx.Rngs(plan.seed)
    changes: list[Change] = []
    mapping: dict[int, nnx.Module] = {}
    modules = _modules(new)
    by_str = {_path_str(p): m for p, m in modules.items()}
    pairs = trace.pairs() if trace is not None and plan.fuse_norm else {}
    fused_convs = set(pairs.values())
    for path_t, m in modules.items():
        path = _path_str(path_t)
        if type(m) in CONV_TYPES:
            before = _describe_old(m, path)
            if plan.norm == "deconv":
                new_m, after = _to_deconv(path, m, plan, rngs)
                bn = next((by_str[b] for b, c in pairs.items() if c == path), None)
                if bool(getattr(bn, "use_running_average", False)):
                    new_m.use_running_average = True
            elif plan.conv == "flex" and max(m.kernel_size) > 1:
                new_m, after = _to_flex(path, m, plan, rngs)
            elif plan.norm == "none" and path in fused_convs:
                new_m, after = _to_conv(path, m, plan, rngs, bias=True)
            elif plan.padding is not None or plan.conv == "flex" and max(m.kernel_size) == 1:
                new_m, after = _to_conv(path, m, plan, rngs)
                if plan.conv == "flex" and plan.padding is None:
                    after = "kept: 1x1 conv (FlexConv replaces spatial kernels only)"
                    new_m = None
            elif plan.norm == "none":
                new_m, after = None, "kept: no BatchNorm after it"
            else:
                continue
            if new_m is not None:
                mapping[id(m)] = new_m
            changes.append(Change(path, before, after))
        elif isinstance(m, nnx.BatchNorm) and plan.fuse_norm:
            if path in pairs:
                mapping[id(m)] = Removed(f"BatchNorm after {pairs[path]}")
                changes.append(Change(path, "nnx.BatchNorm", f"removed (fused into {pairs[path]})"))
            elif trace is not None and path not in trace.called:
                changes.append(Change(path, "nnx.BatchNorm", "kept: not called in the traced pass"))
            else:
                changes.append(
                    Change(path, "nnx.BatchNorm", "kept: its input is not a conv output")
                )
        elif type(m) is nnx.Linear and plan.norm == "deconv" and plan.dense_selected(path):
            new_m, after = _to_dense(path, m, plan, rngs)
            mapping[id(m)] = new_m
            changes.append(Change(path, "nnx.Linear", after))
        elif isinstance(m, cnn.SoftPool) and plan.pool not in (None, "soft"):
            # convjax's own SoftPool module: becomes a pooling call of the requested kind
            mapping[id(m)] = Pool(plan.pool, m.window_shape, m.strides, m.padding)
            changes.append(Change(path, "convjax SoftPool", plan.pool))
        elif isinstance(m, (cnn.DeconvConv, cnn.FlexConv)) and (
            plan.padding or plan.norm or plan.conv
        ):
            reason = f"already a convjax {type(m).__name__} (build it with the switches instead)"
            changes.append(Change(path, type(m).__name__, f"kept: {reason}"))
        elif isinstance(m, (nnx.ConvTranspose,)) and (plan.padding or plan.norm or plan.conv):
            raise ConversionError(f"{path}: nnx.ConvTranspose is not supported by convert.")
    if plan.pool is not None:
        changes += [Change(*line) for line in pool_changes(trace.pools, plan.pool)]
    _replace_refs(new, mapping)
    report = ConversionReport(
        switches=plan.switches,
        changes=tuple(changes),
        params_added=_diff(_count(new), _count(model)),
        params_removed=_diff(_count(model), _count(new)),
    )
    base = type(model)
    if plan.pool is not None and "convert_report" in vars(base):
        base = base.__mro__[1]  # the new pooling switch replaces an earlier conversion's
    has_padding = any(isinstance(v, cnn.PaddingLoss) for _, v in nnx.iter_graph(new))
    new.__class__ = _converted_class(base, plan.pool, report, has_padding)
    return new, report

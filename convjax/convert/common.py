"""The switches and options of :func:`convjax.convert`, shared by the NNX and Linen paths."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from convjax._checks import check_choice
from convjax.ops.pad import FLEX_PADDING_MODES, PADDING_MODES, check_deconv_padding_mode
from convjax.switches import CONV_TYPES, NORM_TYPES, POOL_TYPES

#: Options :func:`convjax.convert` accepts besides the four switches.
OPTIONS = (
    "inputs",
    "call_kwargs",
    "padding_kwargs",
    "deconv_kwargs",
    "deconv_dense",
    "flex_kernel_size",
    "flex_kwargs",
    "seed",
    "return_report",
)


class ConversionError(ValueError):
    """A layer :func:`convjax.convert` cannot convert: one line naming its path and why."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """The resolved switches and options of one conversion."""

    padding: str | None = None
    pool: str | None = None
    norm: str | None = None
    conv: str | None = None
    padding_kwargs: Mapping[str, Any] | None = None
    deconv_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    deconv_dense: bool | Sequence[str] = False
    flex_kernel_size: int = 33
    flex_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    seed: int = 0

    @property
    def switches(self) -> dict[str, str]:
        names = ("padding", "pool", "norm", "conv")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    @property
    def fuse_norm(self) -> bool:
        """Whether conv + BatchNorm pairs are fused (``norm`` "deconv" or "none")."""
        return self.norm in ("deconv", "none")

    @property
    def needs_trace(self) -> bool:
        """Pools and conv -> BatchNorm pairs are found by tracing one forward pass."""
        return self.pool is not None or self.fuse_norm

    def learned_kwargs(self) -> dict[str, Any]:
        """Padding Module options; ``filter_init="zero"`` unless given, so a converted model
        starts as the zero-padded original (identical outputs)."""
        return {"filter_init": "zero", **dict(self.padding_kwargs or {})}

    def mode_for(self, current: str) -> str:
        """The padding kind a converted conv gets (the switch, else its current one)."""
        return self.padding if self.padding is not None else current

    def dense_selected(self, path: str) -> bool:
        if isinstance(self.deconv_dense, bool):
            return self.deconv_dense
        return path in set(self.deconv_dense)


def make_plan(
    padding: str | None, pool: str | None, norm: str | None, conv: str | None, options: dict
) -> Plan:
    """Check the switches and options (one-line ``ValueError``/``TypeError``) into a Plan."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"convert() got unknown options {unknown}; expected some of {OPTIONS}.")
    if padding is not None:
        check_choice(padding, PADDING_MODES, "padding")
    if pool is not None:
        check_choice(pool, POOL_TYPES, "pool")
    if norm is not None:
        check_choice(norm, NORM_TYPES, "norm")
    if conv is not None:
        check_choice(conv, CONV_TYPES, "conv")
    if norm == "batch":
        norm = None  # the plain model's own normalisation: nothing to change
    if conv == "standard":
        conv = None
    if norm == "deconv" and conv == "flex":
        raise ValueError(
            "`norm='deconv'` cannot be combined with `conv='flex'`: Network Deconvolution folds "
            "its whitening into a fixed kernel and FlexConv kernels are generated per step."
        )
    if norm == "deconv" and padding is not None:
        check_deconv_padding_mode(padding, "padding")
    if conv == "flex" and padding is not None and padding not in FLEX_PADDING_MODES:
        raise ValueError(
            f"`padding={padding!r}` cannot be combined with `conv='flex'`: FlexConv supports "
            f"padding modes {list(FLEX_PADDING_MODES)}."
        )
    if options.get("padding_kwargs") and padding != "learned":
        raise ValueError("`padding_kwargs` apply only with padding='learned'.")
    horizon = options.get("flex_kernel_size", 33)
    if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon < 1 or horizon % 2 == 0:
        raise ValueError(f"`flex_kernel_size` must be an odd int >= 1, got {horizon!r}.")
    dense = options.get("deconv_dense", False)
    if dense and norm != "deconv":
        raise ValueError("`deconv_dense` applies only with norm='deconv'.")
    return Plan(
        padding=padding,
        pool=pool,
        norm=norm,
        conv=conv,
        padding_kwargs=options.get("padding_kwargs"),
        deconv_kwargs=dict(options.get("deconv_kwargs") or {}),
        deconv_dense=dense if isinstance(dense, bool) else tuple(dense),
        flex_kernel_size=horizon,
        flex_kwargs=dict(options.get("flex_kwargs") or {}),
        seed=int(options.get("seed", 0)),
    )


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """A conv layer's hyper-parameters in convjax terms (NNX or Linen, any origin)."""

    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: Any  # "SAME" | "VALID" | int | pairs (a convjax amount)
    mode: str  # the padding kind it has now
    dilation: tuple[int, ...]
    groups: int
    use_bias: bool

    @property
    def reads_border(self) -> bool:
        """False for 1x1 kernels and zero / "VALID" amounts (nothing is padded)."""
        if all(k == 1 for k in self.kernel_size) or self.padding == "VALID":
            return False
        if isinstance(self.padding, str) or self.padding is None:
            return True
        pads = self.padding
        if isinstance(pads, int):
            return pads > 0
        flat = [p for pair in pads for p in (pair if isinstance(pair, Sequence) else (pair,))]
        return any(p > 0 for p in flat)

    def describe(self, mode: str | None = None) -> str:
        k = "x".join(map(str, self.kernel_size))
        extra = ""
        if any(s != 1 for s in self.strides):
            extra += f"/{'x'.join(map(str, self.strides))}"
        if self.groups != 1:
            extra += f" groups={self.groups}"
        if any(d != 1 for d in self.dilation):
            extra += f" dilation={self.dilation}"
        return f"{k}{extra} {mode or self.mode}"


def _tuple(value: Any, n: int, default: int = 1) -> tuple[int, ...]:
    if value is None:
        return (default,) * n
    if isinstance(value, int):
        return (value,) * n
    return tuple(int(v) for v in value)


def conv_spec(
    path: str,
    kernel_size,
    strides,
    padding,
    dilation,
    groups,
    use_bias,
    input_dilation=1,
    mask=None,
    precision=None,
    mode: str = "zero",
) -> ConvSpec:
    """Translate a Flax conv's hyper-parameters, raising :class:`ConversionError` for what
    convjax convs do not take (input dilation, masks, explicit precision)."""
    ks = (kernel_size,) if isinstance(kernel_size, int) else tuple(int(k) for k in kernel_size)
    n = len(ks)
    if not 1 <= n <= 3:
        raise ConversionError(f"{path}: convjax convs have 1 to 3 spatial dims, got kernel {ks}.")
    if any(d != 1 for d in _tuple(input_dilation, n)):
        raise ConversionError(f"{path}: input_dilation {input_dilation} is not supported.")
    if mask is not None:
        raise ConversionError(f"{path}: a masked conv (mask=...) is not supported.")
    if precision is not None:
        raise ConversionError(f"{path}: an explicit precision={precision!r} is not supported.")
    dil = _tuple(dilation, n)
    if isinstance(padding, str):
        upper = padding.upper()
        if upper in ("SAME", "VALID"):
            padding = upper
        elif upper == "CIRCULAR":
            padding, mode = "SAME", "circular"
        elif upper == "REFLECT":
            padding, mode = "SAME", "reflect"
        elif upper == "CAUSAL":
            if n != 1:
                raise ConversionError(f"{path}: padding='CAUSAL' is for 1-D convs only.")
            padding = ((dil[0] * (ks[0] - 1), 0),)
        else:
            raise ConversionError(f"{path}: unknown padding {padding!r}.")
    elif isinstance(padding, int):
        padding = tuple((padding, padding) for _ in range(n))
    else:
        padding = tuple(
            (int(p), int(p)) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in padding
        )
    return ConvSpec(ks, _tuple(strides, n), padding, mode, dil, int(groups), bool(use_bias))

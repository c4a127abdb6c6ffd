"""The padded convolution: pad by mode, convolve, partial-convolution rescale, bias.

Every convjax conv layer (NNX and Linen ``Conv``, and the padding path of ``DeconvConv``) is a
thin owner of parameters over these functions:

* :func:`conv_padding` resolves the padding *amount*. The default (``padding=None``) is
  symmetric ``dilation * (k // 2)`` on both sides of every spatial dim: PyTorch's
  ``padding=k // 2``, the geometry every network of the four papers was trained with. For an
  odd kernel it gives the same output size as ``"SAME"``, ``ceil(size / stride)``, but with a
  stride ``s > 1`` on a size divisible by ``s``, XLA's ``"SAME"`` pads ``(k // 2 - 1, k // 2)``
  (nothing on the top/left for 3x3 stride 2), so every output reads a window shifted by one
  pixel and the Padding Module would learn only two of the four sides. ``"SAME"`` stays
  available explicitly.
* :func:`pad_by_mode` pads with a ``padding_mode`` (the *kind*): ``"zero"``, ``"reflect"``,
  ``"replicate"``, ``"circular"`` (:func:`convjax.ops.pad`), ``"partial"`` (zeros; the conv
  rescales) or ``"learned"`` (the Padding Module of Alrasheedi et al. 2023, section III,
  :mod:`convjax.ops.learned_pad`, which can also return its self-supervised loss).
* :func:`padded_conv` is ``y = W * pad(x) + b``, with, for ``"partial"`` (Liu et al. 2018,
  eq. 1-2), ``y = (W * zeropad(x)) * sum(1) / sum(M) + b * [sum(M) > 0]``.

Zero and partial padding are done inside ``conv_general_dilated`` (XLA's native path); the other
modes pad explicitly and then convolve with ``"VALID"`` windows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from convjax._checks import (
    check_choice,
    check_floating,
    check_spatial_rank,
    normalize_pad_width,
    normalize_padding,
    normalize_tuple,
)
from convjax.ops.layout import conv_dimension_numbers
from convjax.ops.learned_pad import PadParams, learned_pad, learned_pad_and_loss
from convjax.ops.pad import PADDING_MODES, PaddingLike, PadWidth, pad
from convjax.ops.partial_pad import partial_conv_scale

Pairs = tuple[tuple[int, int], ...]


def symmetric_pads(kernel_size: Sequence[int], dilation: Sequence[int] | None = None) -> Pairs:
    """PyTorch's ``padding=k // 2``: ``dilation * (k // 2)`` on both sides of every dim.

    Example:
      >>> symmetric_pads((3, 5))
      ((1, 1), (2, 2))
    """
    dilation = tuple(dilation) if dilation is not None else (1,) * len(kernel_size)
    return tuple((d * (k // 2), d * (k // 2)) for k, d in zip(kernel_size, dilation))


def conv_padding(
    spatial_shape: Sequence[int],
    kernel_size: int | Sequence[int],
    strides: int | Sequence[int] = 1,
    padding: PaddingLike | None = None,
    dilation: int | Sequence[int] = 1,
) -> Pairs:
    """Resolve a conv's padding amount to explicit ``(lo, hi)`` pairs.

    Args:
      spatial_shape: the unpadded input's spatial shape.
      kernel_size, strides, dilation: int or one per spatial dim.
      padding: ``None`` (default: symmetric ``dilation * (k // 2)``, PyTorch's ``padding=k//2``;
        output ``ceil(size / stride)`` for odd kernels, one more than ``size`` per dim for even
        kernels at stride 1, as in PyTorch), ``"SAME"`` (XLA: output ``ceil(size / stride)``,
        the odd pixel on the high side), ``"VALID"``, or a :data:`convjax.ops.pad.PadWidth`.

    Returns:
      One ``(lo, hi)`` pair per spatial dim.

    Example:
      >>> conv_padding((32, 32), 3, 2), conv_padding((32, 32), 3, 2, "SAME")
      (((1, 1), (1, 1)), ((0, 1), (0, 1)))
    """
    n = len(tuple(spatial_shape))
    window = normalize_tuple(kernel_size, n, "kernel_size")
    stride = normalize_tuple(strides, n, "strides")
    dil = normalize_tuple(dilation, n, "kernel_dilation")
    if padding is None:
        return symmetric_pads(window, dil)
    return normalize_padding(padding, tuple(spatial_shape), window, stride, dilation=dil)


def _check_mode_params(mode: str, pad_params: Mapping[str, jax.Array] | None) -> None:
    check_choice(mode, PADDING_MODES, "padding_mode")
    if mode == "learned" and pad_params is None:
        raise ValueError(
            "`pad_params` must be given for padding_mode 'learned' (see init_padding_params)."
        )
    if mode != "learned" and pad_params is not None:
        raise ValueError(f"`pad_params` only apply to padding_mode 'learned', got {mode!r}.")


def pad_by_mode(
    x: jax.Array,
    pad_width: PadWidth,
    mode: str = "zero",
    pad_params: PadParams | None = None,
    *,
    padding_loss: bool = False,
) -> tuple[jax.Array, jax.Array | None]:
    """Pad the spatial dims of ``x`` with any ``padding_mode``; the learned mode's loss too.

    Args:
      x: ``(N, *spatial, C)``, 1 to 3 spatial dims.
      pad_width: a :data:`convjax.ops.pad.PadWidth`.
      mode: one of :data:`convjax.ops.pad.PADDING_MODES`; ``"partial"`` pads zeros (the conv
        rescales, see :func:`padded_conv`).
      pad_params: the Padding Module's filters (:func:`convjax.ops.init_padding_params`),
        required for (and only for) ``"learned"``.
      padding_loss: for ``"learned"``, also compute the self-supervised loss with the
        separation of Alrasheedi et al. built in (:func:`convjax.ops.learned_pad_and_loss`):
        the padding uses ``stop_gradient(pad_params)``, the loss ``stop_gradient(x)``.
        Without it the padding still uses ``stop_gradient(pad_params)`` (eval mode).

    Returns:
      ``(padded, loss)``: ``(N, *(s + lo + hi), C)`` in ``x``'s dtype, and a float32 scalar
      loss for ``"learned"`` with ``padding_loss`` and a non-zero ``pad_width``, else ``None``.

    Example:
      >>> y, loss = pad_by_mode(jnp.ones((2, 8, 8, 3)), 1, "reflect")
      >>> y.shape, loss
      ((2, 10, 10, 3), None)
    """
    _check_mode_params(mode, pad_params)
    if mode != "learned":
        return pad(x, pad_width, "zero" if mode == "partial" else mode), None
    pairs = normalize_pad_width(pad_width, check_spatial_rank(x, "x"))
    if not padding_loss or all(lo == 0 and hi == 0 for lo, hi in pairs):
        return learned_pad(jax.lax.stop_gradient(dict(pad_params)), x, pairs), None
    return learned_pad_and_loss(dict(pad_params), x, pairs)


def pad_for_conv(
    x: jax.Array,
    pads: Pairs,
    mode: str = "zero",
    pad_params: PadParams | None = None,
    *,
    padding_loss: bool = False,
) -> tuple[jax.Array, Pairs, jax.Array | None]:
    """Split a conv's padding into what is done before the conv and what the conv does.

    Zero and partial padding stay inside the conv (XLA pads natively, no padded copy of
    ``x``); every other mode pads here (:func:`pad_by_mode`) and the conv runs ``"VALID"``.

    Returns:
      ``(x_or_padded, conv_pads, loss)``: ``conv_pads`` are the explicit pairs the conv still
      has to zero-pad; ``loss`` as in :func:`pad_by_mode`.

    Example:
      >>> xp, conv_pads, _ = pad_for_conv(jnp.ones((1, 8, 8, 2)), ((1, 1), (1, 1)), "replicate")
      >>> xp.shape, conv_pads
      ((1, 10, 10, 2), ((0, 0), (0, 0)))
    """
    if mode in ("zero", "partial"):
        _check_mode_params(mode, pad_params)
        return x, tuple(pads), None
    padded, loss = pad_by_mode(x, pads, mode, pad_params, padding_loss=padding_loss)
    return padded, ((0, 0),) * len(pads), loss


def _check_conv_args(
    x: jax.Array, kernel: jax.Array, bias: jax.Array | None, groups: int
) -> tuple[int, int]:
    check_floating(x, "x")
    check_floating(kernel, "kernel")
    n = check_spatial_rank(x, "x")
    if kernel.ndim != n + 2:
        raise ValueError(
            f"`kernel` must be (*window, C_in / groups, C_out) with {n} spatial dims like `x` "
            f"{tuple(x.shape)}, got shape {tuple(kernel.shape)}."
        )
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"`feature_group_count` must be an int >= 1, got {groups!r}.")
    c_in, c_out = x.shape[-1], kernel.shape[-1]
    if kernel.shape[-2] * groups != c_in or c_out % groups:
        raise ValueError(
            f"`x` has {c_in} features but `kernel` {tuple(kernel.shape)} with "
            f"feature_group_count={groups} expects {kernel.shape[-2] * groups} (and C_out "
            "divisible by the groups)."
        )
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"`bias` must have shape ({c_out},), got {tuple(bias.shape)}.")
    return n, c_out


def padded_conv(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None = None,
    *,
    strides: int | Sequence[int] = 1,
    padding: PaddingLike | None = None,
    padding_mode: str = "zero",
    kernel_dilation: int | Sequence[int] = 1,
    feature_group_count: int = 1,
    pad_params: PadParams | None = None,
    padding_loss: bool = False,
) -> tuple[jax.Array, jax.Array | None]:
    """Convolution with any padding mode: ``y = W * pad(x) + b`` (channels-last).

    ``"partial"`` (Liu et al. 2018, "Partial Convolution based Padding", eq. 1-2) re-weights
    each output by ``window area / real taps``: ``y = (W * zeropad(x)) * sum(1)/sum(M) + b``
    where the window holds a real pixel, else 0. ``"learned"`` pads with the Padding Module
    (Alrasheedi et al. 2023) and, with ``padding_loss``, also returns its loss.

    Args:
      x: ``(N, *S, C_in)`` float, 1 to 3 spatial dims; the compute dtype (``kernel`` and
        ``bias`` are cast to it).
      kernel: ``(*window, C_in / feature_group_count, C_out)``.
      bias: ``(C_out,)`` or ``None``.
      strides, kernel_dilation: int or one per spatial dim.
      padding: the amount, see :func:`conv_padding` (default ``None``: symmetric ``k // 2``).
      padding_mode: the kind, one of :data:`convjax.ops.pad.PADDING_MODES`.
      feature_group_count: grouped conv.
      pad_params, padding_loss: the learned mode's filters and whether to return its loss
        (see :func:`pad_by_mode`).

    Returns:
      ``(y, loss)``: ``y`` is ``(N, *out, C_out)`` in ``x``'s dtype with
      ``out = (s + lo + hi - dilation * (k - 1) - 1) // stride + 1``; ``loss`` a float32
      scalar or ``None``.

    Example:
      >>> y, _ = padded_conv(jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4)), strides=2)
      >>> y.shape
      (2, 4, 4, 4)
    """
    n, _ = _check_conv_args(x, kernel, bias, feature_group_count)
    spatial = x.shape[1:-1]
    window = kernel.shape[:-2]
    stride = normalize_tuple(strides, n, "strides")
    dil = normalize_tuple(kernel_dilation, n, "kernel_dilation")
    pads = conv_padding(spatial, window, stride, padding, dil)
    xp, conv_pads, loss = pad_for_conv(x, pads, padding_mode, pad_params, padding_loss=padding_loss)
    dtype = x.dtype
    y = jax.lax.conv_general_dilated(
        xp,
        kernel.astype(dtype),
        window_strides=stride,
        padding=conv_pads,
        rhs_dilation=dil,
        dimension_numbers=conv_dimension_numbers(n),
        feature_group_count=feature_group_count,
    )
    b = None if bias is None else bias.astype(dtype)
    if padding_mode == "partial":
        scale = partial_conv_scale(spatial, window, stride, pads, dil)
        y = y * jnp.asarray(scale, dtype)
        if b is not None:
            y = y + b * jnp.asarray(scale > 0, dtype)
    elif b is not None:
        y = y + b
    return y, loss


#: The options of :func:`padded_conv` a conv layer keeps as attributes of the same names.
CONV_OPTIONS = ("strides", "padding", "padding_mode", "kernel_dilation", "feature_group_count")


def conv_options(layer: object) -> dict[str, object]:
    """``{name: getattr(layer, name)}`` for :data:`CONV_OPTIONS`: what a conv layer (NNX or
    Linen) passes to :func:`padded_conv`, so both spell the call once.

    Example (not run as a doctest: inside a layer's __call__):
      >>> y, loss = padded_conv(x, kernel, bias, **conv_options(self))  # doctest: +SKIP
    """
    return {name: getattr(layer, name) for name in CONV_OPTIONS}


__all__ = [
    "CONV_OPTIONS",
    "conv_options",
    "conv_padding",
    "pad_by_mode",
    "pad_for_conv",
    "padded_conv",
    "symmetric_pads",
]

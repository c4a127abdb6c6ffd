"""Padding vocabulary of convjax, and classic padding of the spatial dims of a channels-last array.

One definition of every padding name and type, imported everywhere else:

* ``padding_mode`` is the *kind* of padding: :data:`PADDING_MODES` (``"zero"``, ``"reflect"``,
  ``"replicate"``, ``"circular"``, ``"partial"``, ``"learned"``); :data:`PAD_MODES` are the
  classic ones :func:`pad` computes, :data:`FLEX_PADDING_MODES` the ones FlexConv takes and
  :data:`DECONV_PADDING_MODES` the ones Network Deconvolution takes.
* ``padding`` / ``pad_width`` is the *amount*: :data:`PadWidth` (an int, one int per spatial
  dim, or ``(lo, hi)`` per spatial dim); :data:`PaddingLike` adds ``"SAME"`` and ``"VALID"``.

The classic modes are the baselines the learned Padding Module (Alrasheedi et al. 2023) is
compared against.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from convjax._checks import (
    PaddingLike,  # noqa: F401 - re-exported
    PadWidth,
    check_choice,
    check_spatial_rank,
    normalize_pad_width,
)

# ``PadWidth`` (a padding amount) and ``PaddingLike`` (``"SAME"``, ``"VALID"`` or a PadWidth)
# live in ``convjax._checks`` (the package's ground floor) and are re-exported from here.

#: Classic modes, computed by :func:`pad`.
PAD_MODES = ("zero", "reflect", "replicate", "circular")
#: Every ``padding_mode`` of convjax convolutions: the classic modes, partial-convolution
#: padding (Liu et al. 2018) and the learned Padding Module (Alrasheedi et al. 2023).
PADDING_MODES = (*PAD_MODES, "partial", "learned")
#: Modes FlexConv takes: its crop size changes inside the compiled step, which partial
#: (a per-size re-weighting) and learned padding (per-size losses) do not support there.
FLEX_PADDING_MODES = PAD_MODES
#: Modes Network Deconvolution takes: partial-convolution re-weighting treats padded taps as
#: missing, but a deconvolved conv subtracts the patch mean inside the window (``(X - mu) D
#: w``), so zero-filled taps are not "missing" and the re-weighting has no meaning there.
DECONV_PADDING_MODES = (*PAD_MODES, "learned")
_JNP_MODE = {"zero": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def check_padding_mode(
    padding_mode: str, padding_kwargs: object = None, name: str = "padding_mode"
) -> bool:
    """Check a layer's ``padding_mode`` (and that ``padding_kwargs`` come only with
    ``"learned"``); return whether the layer needs a learned Padding Module.

    Example:
      >>> check_padding_mode("learned", {"depth": 3})
      True
    """
    check_choice(padding_mode, PADDING_MODES, name)
    if padding_kwargs and padding_mode != "learned":
        raise ValueError(
            f"`padding_kwargs` only apply to {name} 'learned', got {padding_mode!r} with "
            f"{dict(padding_kwargs)!r}."
        )
    return padding_mode == "learned"


def check_deconv_padding_mode(padding_mode: str, name: str = "padding_mode") -> None:
    """Raise ``ValueError`` (with the reason) unless Network Deconvolution can take the mode.

    Example:
      >>> check_deconv_padding_mode("reflect")
    """
    check_choice(padding_mode, PADDING_MODES, name)
    if padding_mode not in DECONV_PADDING_MODES:
        raise ValueError(
            f"`{name}={padding_mode!r}` cannot be combined with network deconvolution "
            "(`DeconvConv`, models' `norm='deconv'`): "
            "partial-convolution re-weighting treats padded taps as missing, but a deconvolved "
            "conv subtracts the patch mean inside the window ((X - mu) D w), so zero-filled taps "
            f"are not missing there. Use one of {list(DECONV_PADDING_MODES)}."
        )


def pad(
    x: jax.Array,
    pad_width: PadWidth,
    mode: str = "zero",
) -> jax.Array:
    """Pad the spatial dims of ``x`` with a classic rule.

    Args:
      x: ``(batch, *spatial, features)`` with 1 to 3 spatial dims, any dtype.
      pad_width: an int (all sides), one int per spatial dim, or ``(lo, hi)`` per spatial dim.
      mode: ``"zero"`` (constant 0), ``"reflect"`` (mirror without repeating the edge, like
        ``numpy.pad(mode="reflect")``; needs ``pad < size`` on each side), ``"replicate"``
        (repeat the edge value, ``numpy`` "edge") or ``"circular"`` (wrap around, ``numpy``
        "wrap"; needs ``pad <= size``).

    Returns:
      ``(batch, *(s + lo + hi for each spatial dim), features)``, same dtype as ``x``.
      Batch and feature dims are never padded. Gradients flow to ``x`` in every mode.

    Example:
      >>> x = jnp.arange(4.0).reshape(1, 4, 1)
      >>> pad(x, 1, "reflect")[0, :, 0]
      Array([1., 0., 1., 2., 3., 2.], dtype=float32)
    """
    check_choice(mode, PAD_MODES, "mode")
    n = check_spatial_rank(x, "x")
    pairs = normalize_pad_width(pad_width, n)
    spatial = x.shape[1:-1]
    for d, (s, (lo, hi)) in enumerate(zip(spatial, pairs)):
        if mode == "reflect" and max(lo, hi) >= s:
            raise ValueError(
                f"`pad_width` {max(lo, hi)} must be < the input size {s} along spatial dim {d} "
                f"for mode 'reflect'."
            )
        if mode == "circular" and max(lo, hi) > s:
            raise ValueError(
                f"`pad_width` {max(lo, hi)} must be <= the input size {s} along spatial dim {d} "
                f"for mode 'circular'."
            )
        if mode == "replicate" and s == 0 and (lo or hi):
            raise ValueError(f"cannot replicate-pad an empty spatial dim {d}.")
    full = ((0, 0), *pairs, (0, 0))
    if all(lo == 0 and hi == 0 for lo, hi in pairs):
        return x
    return jnp.pad(x, full, mode=_JNP_MODE[mode])

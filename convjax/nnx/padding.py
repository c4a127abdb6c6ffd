"""Padding as a module: classic modes, partial-conv padding and the learned Padding Module.

Variable types
  * :class:`PadParam` holds the learned padding filters. It is an ``nnx.Variable`` but NOT an
    ``nnx.Param``, so ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` never touches it and a
    second optimizer uses ``wrt=PadParam``.
  * :class:`PaddingLoss` holds the self-supervised padding loss a module accumulated during
    the forward pass; :func:`pop_padding_losses` sums and clears them.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from convjax.ops.pad import PAD_MODES, pad
from convjax.ops.validation import check_choice, check_spatial_rank, normalize_pad_width

PadWidth = int | Sequence[int] | Sequence[tuple[int, int]]

#: Every mode :class:`Pad` and :class:`convjax.nnx.Conv` accept.
PADDING_MODES = (*PAD_MODES, "partial")


class PadParam(nnx.Variable):
    """Learned padding parameters: an ``nnx.Variable`` that is deliberately not an ``nnx.Param``.

    Example:
      >>> opt_task = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
      >>> opt_pad = nnx.Optimizer(model, optax.adam(1e-3), wrt=PadParam)
    """


class PaddingLoss(nnx.Variable):
    """Scalar float32 sum of the padding losses a module recorded since the last pop."""


def pop_padding_losses(model: nnx.Module) -> jax.Array:
    """Sum every :class:`PaddingLoss` recorded in ``model`` and reset them to zero.

    Call it inside the loss function right after the forward pass, so the losses are part of
    the same trace: ``total = task_loss + pop_padding_losses(model)``. Because the task forward
    pass uses ``stop_gradient(pad params)`` and each padding loss uses ``stop_gradient(x)``,
    one ``grad(total)`` gives task gradients on ``nnx.Param`` and padding gradients on
    :class:`PadParam`, with exact zeros across.

    Returns:
      float32 scalar; ``0.0`` if the model has no learned padding (or nothing was recorded).

    Example:
      >>> logits = model(x)
      >>> total = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      >>> total = total + pop_padding_losses(model)
    """
    total = jnp.zeros((), jnp.float32)
    for _, var in nnx.iter_graph(model):
        if isinstance(var, PaddingLoss):
            total = total + var[...]
            var[...] = jnp.zeros((), jnp.float32)
    return total


class Pad(nnx.Module):
    """Pad the spatial dims of ``(batch, *spatial, features)`` with one of several modes.

    Modes: ``"zero"``, ``"reflect"``, ``"replicate"``, ``"circular"`` (via
    :func:`convjax.ops.pad`), ``"partial"`` (zero padding; the following conv applies the
    Liu et al. 2018 re-weighting ``sum(1)/sum(M)``, see :class:`convjax.nnx.Conv`).

    Args:
      features: channel count of the input (used by the learned mode; checked on call).
      pad_width: int, one int per spatial dim, or ``(lo, hi)`` per spatial dim. A call may
        override it (``pad(x, pad_width=...)``), which :class:`Conv` uses for "SAME" sizes.
      mode: one of :data:`PADDING_MODES`.
      rngs: accepted for a uniform signature.

    Shapes: ``(N, *S, C) -> (N, *(s + lo + hi), C)``, same dtype.

    Example:
      >>> p = Pad(3, 1, "reflect", rngs=nnx.Rngs(0))
      >>> p(jnp.ones((2, 8, 8, 3))).shape
      (2, 10, 10, 3)
    """

    def __init__(
        self,
        features: int,
        pad_width: PadWidth,
        mode: str = "zero",
        *,
        rngs: nnx.Rngs | None = None,
    ) -> None:
        check_choice(mode, PADDING_MODES, "mode")
        self.features = int(features)
        self.pad_width = pad_width
        self.mode = mode

    def __call__(self, x: jax.Array, pad_width: PadWidth | None = None) -> jax.Array:
        n = check_spatial_rank(x, "x")
        if x.shape[-1] != self.features:
            raise ValueError(
                f"`x` must have {self.features} features (last dim), got shape {tuple(x.shape)}."
            )
        pairs = normalize_pad_width(self.pad_width if pad_width is None else pad_width, n)
        mode = "zero" if self.mode == "partial" else self.mode
        return pad(x, pairs, mode)

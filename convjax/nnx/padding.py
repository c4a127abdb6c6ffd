"""Padding as a module: classic modes, partial-conv padding and the learned Padding Module.

Variable types
  * :class:`PadParam` holds the learned padding filters. It is an ``nnx.Variable`` but NOT an
    ``nnx.Param``, so ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` never touches it and a
    second optimizer uses ``wrt=PadParam``.
  * :class:`PaddingLoss` holds the self-supervised padding loss a module accumulated during
    the forward pass; :func:`pop_padding_losses` sums and clears them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from convjax._checks import check_spatial_rank, normalize_pad_width
from convjax.ops.conv import pad_by_mode
from convjax.ops.learned_pad import init_padding_params
from convjax.ops.pad import PadWidth, check_padding_mode


class PadParam(nnx.Variable):
    """Learned padding parameters: an ``nnx.Variable`` that is deliberately not an ``nnx.Param``.

    Example:
      >>> import optax
      >>> from convjax.nnx import Conv
      >>> model = Conv(1, 4, 3, padding_mode="learned", rngs=nnx.Rngs(0))
      >>> opt_task = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
      >>> opt_pad = nnx.Optimizer(model, optax.adam(1e-3), wrt=PadParam)
      >>> len(jax.tree.leaves(nnx.state(model, PadParam))) > 0
      True
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
      >>> from convjax.nnx import Conv
      >>> model = Conv(1, 4, 3, padding_mode="learned", rngs=nnx.Rngs(0))
      >>> y = model(jax.random.normal(jax.random.key(1), (2, 6, 6, 1)))
      >>> total = jnp.mean(y**2) + pop_padding_losses(model)  # task loss + padding losses
      >>> float(pop_padding_losses(model))  # reset by the first pop
      0.0
    """
    total = jnp.zeros((), jnp.float32)
    for _, var in nnx.iter_graph(model):
        if isinstance(var, PaddingLoss):
            total = total + var[...]
            var[...] = jnp.zeros((), jnp.float32)
    return total


def _num_spatial_dims(pad_width: PadWidth, num_spatial_dims: int | None) -> int:
    if num_spatial_dims is not None:
        return int(num_spatial_dims)
    if isinstance(pad_width, int):
        return 2
    return len(tuple(pad_width))


class PaddingModule(nnx.Module):
    """The Padding Module: pads with learned content and records its self-supervised loss.

    Implements Alrasheedi et al. (2023) as described in :mod:`convjax.ops.learned_pad`: a
    linear filter predicts each border line from the ``depth`` lines inside it
    (``l_0 = b + sum_k sum_o w[k, o] l_{k+1}[j + o]``), trained by the MSE of predicting the
    outermost ring of its own input. In a call (training mode):

      * the output is ``learned_pad(stop_gradient(params), x, pad_width)``: the task loss never
        moves :class:`PadParam` but its gradient flows through the padded values into ``x``;
      * ``padding_loss(params, stop_gradient(x))`` is added to the module's
        :class:`PaddingLoss` (only if something is padded); collect it with
        :func:`pop_padding_losses`.

    With ``deterministic=True`` (set by ``model.eval()``) nothing is recorded.

    Args:
      features: channels ``C`` of the input.
      pad_width: int, one int per spatial dim or ``(lo, hi)`` per spatial dim (a call may
        override it; the parameters do not depend on it).
      depth: context lines (default 2). width: window along the edge (default 3).
      mixing: ``"depthwise"`` (default) or ``"full"`` channel mixing.
      shared: one filter for all sides by rotation (default) or one per side.
      num_spatial_dims: spatial rank; default ``len(pad_width)`` for a tuple, else 2.
      filter_init: ``"replicate"`` (default), ``"zero"`` or ``"linear"``
        (see :data:`convjax.ops.learned_pad.PAD_INITS`).
      deterministic: eval mode (no loss recorded).
      dtype: compute dtype of the padding (None = input dtype); param_dtype: float32.
      rngs: accepted for a uniform signature (the initialisation is deterministic).

    Shapes: ``(N, *S, C) -> (N, *(s + lo + hi), C)``.

    Example:
      >>> pm = PaddingModule(3, 1, rngs=nnx.Rngs(0))
      >>> y = pm(jnp.ones((2, 8, 8, 3)))          # (2, 10, 10, 3)
      >>> loss = pop_padding_losses(pm)            # scalar, trains PadParam only
    """

    def __init__(
        self,
        features: int,
        pad_width: PadWidth,
        *,
        depth: int = 2,
        width: int = 3,
        mixing: str = "depthwise",
        shared: bool = True,
        num_spatial_dims: int | None = None,
        filter_init: str = "replicate",
        deterministic: bool = False,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ) -> None:
        n = _num_spatial_dims(pad_width, num_spatial_dims)
        params = init_padding_params(
            features,
            n,
            depth=depth,
            width=width,
            mixing=mixing,
            shared=shared,
            init=filter_init,
            dtype=param_dtype,
        )
        normalize_pad_width(pad_width, n)
        self.features = int(features)
        self.pad_width = pad_width
        self.num_spatial_dims = n
        self.deterministic = deterministic
        self.dtype = dtype
        self.kernel = PadParam(params["kernel"])
        self.bias = PadParam(params["bias"])
        self.padding_loss = PaddingLoss(jnp.zeros((), jnp.float32))

    def padding_params(self) -> dict[str, jax.Array]:
        """The live padding parameters as the pure ops expect them."""
        return {"kernel": self.kernel[...], "bias": self.bias[...]}

    def __call__(self, x: jax.Array, pad_width: PadWidth | None = None) -> jax.Array:
        n = check_spatial_rank(x, "x")
        if n != self.num_spatial_dims or x.shape[-1] != self.features:
            raise ValueError(
                f"`x` must be (batch, *{self.num_spatial_dims} spatial dims, {self.features}), "
                f"got shape {tuple(x.shape)}."
            )
        pairs = normalize_pad_width(self.pad_width if pad_width is None else pad_width, n)
        if self.dtype is not None:
            x = x.astype(self.dtype)
        padded, loss = pad_by_mode(
            x, pairs, "learned", self.padding_params(), padding_loss=not self.deterministic
        )
        self.record_loss(loss)
        return padded

    def record_loss(self, loss: jax.Array | None) -> None:
        """Add a padding loss computed with this module's parameters (``None``: nothing)."""
        if loss is not None:
            self.padding_loss[...] = self.padding_loss[...] + loss


def learned_padding_module(
    in_features: int,
    num_spatial_dims: int,
    padding_mode: str,
    padding_kwargs: Mapping[str, Any] | None,
    rngs: nnx.Rngs,
) -> PaddingModule | None:
    """The :class:`PaddingModule` a conv layer owns for ``padding_mode="learned"``, else None.

    Checks ``padding_mode`` and that ``padding_kwargs`` come only with ``"learned"``.
    """
    if not check_padding_mode(padding_mode, padding_kwargs):
        return None
    kwargs = {"num_spatial_dims": num_spatial_dims, **dict(padding_kwargs or {})}
    return PaddingModule(in_features, 0, **kwargs, rngs=rngs)


def pad_op_kwargs(module: PaddingModule | None) -> dict[str, Any]:
    """``pad_params`` and ``padding_loss`` for :func:`convjax.ops.padded_conv` /
    :func:`convjax.ops.pad_for_conv` from a layer's learned :class:`PaddingModule` (or none):
    the loss is computed unless the module is deterministic (``model.eval()``).

    Example (not run as a doctest: inside a layer's __call__):
      >>> y, loss = padded_conv(x, k, padding_mode="learned", **pad_op_kwargs(conv.pad))
      ... # doctest: +SKIP
    """
    if module is None:
        return {}
    return {"pad_params": module.padding_params(), "padding_loss": not module.deterministic}


class Pad(nnx.Module):
    """Pad the spatial dims of ``(batch, *spatial, features)`` with one of several modes.

    Modes: ``"zero"``, ``"reflect"``, ``"replicate"``, ``"circular"`` (via
    :func:`convjax.ops.pad`), ``"partial"`` (zero padding; the following conv applies the
    Liu et al. 2018 re-weighting ``sum(1)/sum(M)``, see :class:`convjax.nnx.Conv`) and
    ``"learned"`` (a :class:`PaddingModule`, attribute ``learned``, which records its loss).

    Args:
      features: channel count of the input (checked on call; sizes the learned filter).
      pad_width: int, one int per spatial dim, or ``(lo, hi)`` per spatial dim. A call may
        override it (``pad(x, pad_width=...)``), which :class:`Conv` uses for "SAME" sizes.
      mode: one of :data:`PADDING_MODES`.
      padding_kwargs: extra keyword arguments for :class:`PaddingModule` (``depth``,
        ``width``, ``mixing``, ``shared``, ``num_spatial_dims``, ``filter_init``, ``dtype``,
        ``param_dtype``); only for ``mode="learned"``.
      rngs: passed to the :class:`PaddingModule`.

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
        padding_kwargs: Mapping[str, Any] | None = None,
        rngs: nnx.Rngs | None = None,
    ) -> None:
        check_padding_mode(mode, padding_kwargs, "mode")
        self.features = int(features)
        self.pad_width = pad_width
        self.mode = mode
        self.learned = (
            PaddingModule(features, pad_width, **dict(padding_kwargs or {}), rngs=rngs)
            if mode == "learned"
            else None
        )

    def __call__(self, x: jax.Array, pad_width: PadWidth | None = None) -> jax.Array:
        n = check_spatial_rank(x, "x")
        if x.shape[-1] != self.features:
            raise ValueError(
                f"`x` must have {self.features} features (last dim), got shape {tuple(x.shape)}."
            )
        pairs = normalize_pad_width(self.pad_width if pad_width is None else pad_width, n)
        if self.learned is not None:
            return self.learned(x, pairs)
        return pad_by_mode(x, pairs, self.mode)[0]

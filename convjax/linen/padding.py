"""Linen padding modules: classic modes, partial-conv padding and the learned Padding Module.

Linen conventions: the learned filters live in their own ``"padding"`` collection (not
``"params"``), so a trainer keeps a separate optax state for them; each module sows its local
loss into the ``"losses"`` collection under the name ``"padding_loss"`` (only when that
collection is mutable). :func:`sum_padding_losses` adds them up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from convjax._checks import check_spatial_rank, normalize_pad_width
from convjax.ops.conv import pad_by_mode
from convjax.ops.learned_pad import init_padding_params
from convjax.ops.pad import PadWidth, check_padding_mode

#: Collection holding the learned padding filters.
PADDING_COLLECTION = "padding"
#: Collection the padding losses are sown into.
LOSSES_COLLECTION = "losses"


def sum_padding_losses(losses: Mapping[str, Any]) -> jax.Array:
    """Sum every sown ``"padding_loss"`` in a ``"losses"`` collection (nested dict of tuples).

    Accepts the collection itself or a dict of collections containing ``"losses"``.

    Example:
      >>> from convjax.linen import Conv
      >>> x = jax.random.normal(jax.random.key(1), (2, 6, 6, 1))
      >>> model = Conv(4, 3, padding_mode="learned")
      >>> variables = model.init(jax.random.key(0), x)  # params, padding (and losses: drop)
      >>> trainable = {k: variables[k] for k in ("params", "padding")}
      >>> y, mutated = model.apply(trainable, x, mutable=["losses"])
      >>> float(sum_padding_losses(mutated["losses"])) > 0.0
      True
    """
    if LOSSES_COLLECTION in losses and isinstance(losses[LOSSES_COLLECTION], Mapping):
        losses = losses[LOSSES_COLLECTION]
    total = jnp.zeros((), jnp.float32)
    for path, leaf in jax.tree_util.tree_flatten_with_path(losses)[0]:
        if any(getattr(k, "key", None) == "padding_loss" for k in path):
            total = total + jnp.asarray(leaf, jnp.float32)
    return total


class PaddingModule(nn.Module):
    """Linen Padding Module (Alrasheedi et al. 2023); see :mod:`convjax.ops.learned_pad`.

    Predicts each border line from the ``depth`` lines inside it with a linear filter
    (``l_0 = b + sum_k sum_o w[k, o] l_{k+1}[j + o]``). The task output uses
    ``stop_gradient`` of the filter; the loss ``padding_loss(P, stop_gradient(x))`` is sown
    into ``"losses"`` unless ``deterministic``. The filter lives in the ``"padding"``
    collection.

    Attributes:
      pad_width: int, per-dim ints or ``(lo, hi)`` pairs (the call may override it).
      depth, width, mixing, shared, filter_init: filter options (see
        :func:`convjax.ops.init_padding_params`).
      deterministic: eval mode (no loss sown); may also be passed to ``__call__``.
      dtype: compute dtype (None = input dtype). param_dtype: filter dtype (float32).

    Shapes: ``(N, *S, C) -> (N, *(s + lo + hi), C)``.

    Example:
      >>> pm = PaddingModule(pad_width=1)
      >>> variables = pm.init(jax.random.key(0), jnp.ones((2, 8, 8, 3)))
      >>> y, mutated = pm.apply(variables, jnp.ones((2, 8, 8, 3)), mutable=["losses"])
    """

    pad_width: PadWidth = 1
    depth: int = 2
    width: int = 3
    mixing: str = "depthwise"
    shared: bool = True
    filter_init: str = "replicate"
    deterministic: bool | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def padding_params(self, features: int, num_spatial_dims: int) -> dict[str, jax.Array]:
        """The filters ``{"kernel", "bias"}`` (created in ``"padding"`` on first use).

        Layers that pad inside their own op (:class:`convjax.linen.Conv`,
        :class:`convjax.linen.DeconvConv`) call this and :meth:`learn`; ``__call__`` pads.
        """
        make = lambda: init_padding_params(
            features,
            num_spatial_dims,
            depth=self.depth,
            width=self.width,
            mixing=self.mixing,
            shared=self.shared,
            init=self.filter_init,
            dtype=self.param_dtype,
        )
        kernel = self.variable(PADDING_COLLECTION, "kernel", lambda: make()["kernel"])
        bias = self.variable(PADDING_COLLECTION, "bias", lambda: make()["bias"])
        return {"kernel": kernel.value, "bias": bias.value}

    def learn(self, deterministic: bool | None = None) -> bool:
        """Whether a call computes (and sows) the padding loss: not in deterministic mode."""
        return not (deterministic if deterministic is not None else bool(self.deterministic))

    def record_loss(self, loss: jax.Array | None) -> None:
        """Sow a padding loss into ``"losses"`` (``None``: nothing)."""
        if loss is not None:
            self.sow(LOSSES_COLLECTION, "padding_loss", loss)

    def __call__(
        self, x: jax.Array, pad_width: PadWidth | None = None, deterministic: bool | None = None
    ) -> jax.Array:
        n = check_spatial_rank(x, "x")
        pairs = normalize_pad_width(self.pad_width if pad_width is None else pad_width, n)
        params = self.padding_params(x.shape[-1], n)
        if self.dtype is not None:
            x = x.astype(self.dtype)
        padded, loss = pad_by_mode(
            x, pairs, "learned", params, padding_loss=self.learn(deterministic)
        )
        self.record_loss(loss)
        return padded


def learned_padding_module(
    padding_mode: str, padding_kwargs: Mapping[str, Any] | None
) -> PaddingModule | None:
    """The :class:`PaddingModule` (named ``"pad"``) of a conv layer for ``"learned"``, else None.

    Call inside the layer's compact method. Checks ``padding_mode`` and that
    ``padding_kwargs`` come only with ``"learned"``.
    """
    if not check_padding_mode(padding_mode, padding_kwargs):
        return None
    return PaddingModule(**dict(padding_kwargs or {}), name="pad")


def pad_op_kwargs(
    module: PaddingModule | None, features: int, num_spatial_dims: int, deterministic: bool | None
) -> dict[str, Any]:
    """``pad_params`` and ``padding_loss`` for :func:`convjax.ops.padded_conv` /
    :func:`convjax.ops.pad_for_conv` from a layer's learned :class:`PaddingModule` (or none).

    Example (inside a layer's ``__call__``, ``pm`` its bound :class:`PaddingModule`):
      >>> y, loss = padded_conv(x, k, padding_mode="learned", **pad_op_kwargs(pm, 3, 2, None))
      ... # doctest: +SKIP
    """
    if module is None:
        return {}
    return {
        "pad_params": module.padding_params(features, num_spatial_dims),
        "padding_loss": module.learn(deterministic),
    }


class Pad(nn.Module):
    """Linen pad with a mode switch: zero / reflect / replicate / circular / partial / learned.

    ``"partial"`` zero-pads (the conv re-weights, see :class:`convjax.linen.Conv`);
    ``"learned"`` runs a :class:`PaddingModule` (submodule ``"learned"``) configured by
    ``padding_kwargs``.

    Shapes: ``(N, *S, C) -> (N, *(s + lo + hi), C)``.

    Example:
      >>> y = Pad(pad_width=1, mode="reflect").apply({}, jnp.ones((2, 8, 8, 3)))
      >>> y.shape
      (2, 10, 10, 3)
    """

    pad_width: PadWidth = 1
    mode: str = "zero"
    padding_kwargs: Mapping[str, Any] | None = None

    @nn.compact
    def __call__(
        self, x: jax.Array, pad_width: PadWidth | None = None, deterministic: bool | None = None
    ) -> jax.Array:
        check_padding_mode(self.mode, self.padding_kwargs, "mode")
        n = check_spatial_rank(x, "x")
        pairs = normalize_pad_width(self.pad_width if pad_width is None else pad_width, n)
        if self.mode == "learned":
            module = PaddingModule(
                pad_width=pairs, **dict(self.padding_kwargs or {}), name="learned"
            )
            return module(x, pairs, deterministic)
        return pad_by_mode(x, pairs, self.mode)[0]

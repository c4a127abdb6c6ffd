"""Linen padding modules: classic modes, partial-conv padding and the learned Padding Module.

Linen conventions: the learned filters live in their own ``"padding"`` collection (not
``"params"``), so a trainer keeps a separate optax state for them; each module sows its local
loss into the ``"losses"`` collection under the name ``"padding_loss"`` (only when that
collection is mutable). :func:`sum_padding_losses` adds them up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from convjax.ops.learned_pad import init_padding_params, learned_pad, learned_pad_and_loss
from convjax.ops.pad import PAD_MODES, pad
from convjax.ops.validation import check_choice, check_spatial_rank, normalize_pad_width

PadWidth = int | Sequence[int] | Sequence[tuple[int, int]]

#: Every mode :class:`Pad` and :class:`convjax.linen.Conv` accept.
PADDING_MODES = (*PAD_MODES, "partial", "learned")
#: Collection holding the learned padding filters.
PADDING_COLLECTION = "padding"
#: Collection the padding losses are sown into.
LOSSES_COLLECTION = "losses"


def sum_padding_losses(losses: Mapping[str, Any]) -> jax.Array:
    """Sum every sown ``"padding_loss"`` in a ``"losses"`` collection (nested dict of tuples).

    Accepts the collection itself or a dict of collections containing ``"losses"``.

    Example:
      >>> logits, mutated = model.apply(variables, x, mutable=["losses", "batch_stats"])
      >>> total = task_loss(logits) + sum_padding_losses(mutated["losses"])
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
    def __call__(
        self, x: jax.Array, pad_width: PadWidth | None = None, deterministic: bool | None = None
    ) -> jax.Array:
        n = check_spatial_rank(x, "x")
        features = x.shape[-1]
        pairs = normalize_pad_width(self.pad_width if pad_width is None else pad_width, n)
        make = lambda: init_padding_params(
            features,
            n,
            depth=self.depth,
            width=self.width,
            mixing=self.mixing,
            shared=self.shared,
            init=self.filter_init,
            dtype=self.param_dtype,
        )
        kernel = self.variable(PADDING_COLLECTION, "kernel", lambda: make()["kernel"])
        bias = self.variable(PADDING_COLLECTION, "bias", lambda: make()["bias"])
        params = {"kernel": kernel.value, "bias": bias.value}
        if self.dtype is not None:
            x = x.astype(self.dtype)
        det = deterministic if deterministic is not None else bool(self.deterministic)
        if det or all(lo == 0 and hi == 0 for lo, hi in pairs):
            return learned_pad(jax.lax.stop_gradient(params), x, pairs)
        padded, loss = learned_pad_and_loss(params, x, pairs)
        self.sow(LOSSES_COLLECTION, "padding_loss", loss)
        return padded


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
        check_choice(self.mode, PADDING_MODES, "mode")
        if self.padding_kwargs and self.mode != "learned":
            raise ValueError(
                f"`padding_kwargs` only apply to mode 'learned', got mode {self.mode!r} with "
                f"{dict(self.padding_kwargs)!r}."
            )
        n = check_spatial_rank(x, "x")
        pairs = normalize_pad_width(self.pad_width if pad_width is None else pad_width, n)
        if self.mode == "learned":
            module = PaddingModule(
                pad_width=pairs, **dict(self.padding_kwargs or {}), name="learned"
            )
            return module(x, pairs, deterministic)
        return pad(x, pairs, "zero" if self.mode == "partial" else self.mode)

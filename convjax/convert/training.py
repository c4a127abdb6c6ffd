"""Training a converted model in your own loop: both optimizers in one call, and a check.

Learned padding (Alrasheedi et al. 2023) trains its filters on their own self-supervised loss
with their own optimizer. In NNX the filters are :class:`convjax.nnx.PadParam`, deliberately
not ``nnx.Param``, so the usual ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` leaves them alone;
in Linen they are the ``padding`` collection, which a loop over ``params`` never sees.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import optax
from flax import nnx

from convjax.nnx.padding import PadParam

#: The padding optimizer the trainer uses by default (``configs.default``:
#: ``padding_optimizer``: Adam, learning rate 1e-3).
DEFAULT_PADDING_LR = 1e-3


def _has_pad_params(model: nnx.Module) -> bool:
    return any(isinstance(v, PadParam) for _, v in nnx.iter_graph(model))


def make_optimizers(
    model: Any,
    tx: optax.GradientTransformation,
    padding_tx: optax.GradientTransformation | None = None,
):
    """Both optimizers of a converted model: the task's and the learned padding's.

    NNX (``model`` an ``nnx.Module``): returns ``(opt, opt_pad)`` =
    ``(nnx.Optimizer(model, tx, wrt=nnx.Param), nnx.Optimizer(model, padding_tx,
    wrt=PadParam))``. Differentiate ``task_loss + pop_padding_losses(model)`` with
    ``nnx.grad(..., argnums=nnx.DiffState(0, nnx.Any(nnx.Param, PadParam)))`` and step each
    optimizer on its part (the task loss never moves ``PadParam`` and the padding loss never
    moves ``nnx.Param``: both use ``stop_gradient`` across, see
    :func:`convjax.nnx.pop_padding_losses`). ``opt_pad`` is still returned, over nothing,
    for a model without learned padding.

    Linen (``model`` a variables dict, e.g. ``variables = model.init(...)``): returns one
    optax transformation over :func:`linen_trainable` ``(variables)`` = ``{"params": ...,
    "padding": ...}`` that applies ``tx`` to ``params`` and ``padding_tx`` to ``padding``
    (``optax.multi_transform``). Differentiate ``task_loss + sum_padding_losses(mutated)``
    with respect to that dict.

    Args:
      model: a converted NNX model, or a Linen variables dict.
      tx: the task optimizer.
      padding_tx: the padding optimizer (default ``optax.adam(1e-3)``, the trainer's).

    Example:
      >>> import convjax
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> class CNN(nnx.Module):
      ...     def __init__(self, rngs):
      ...         self.conv1 = nnx.Conv(3, 8, (3, 3), rngs=rngs)
      ...         self.conv2 = nnx.Conv(8, 10, (3, 3), rngs=rngs)
      ...     def __call__(self, x):
      ...         x = nnx.max_pool(nnx.relu(self.conv1(x)), (2, 2), (2, 2))
      ...         return self.conv2(x).mean(axis=(1, 2))
      >>> x = jnp.ones((2, 8, 8, 3))
      >>> y = jnp.array([0, 1])
      >>> model = convjax.convert(CNN(rngs=nnx.Rngs(0)), padding="learned")
      >>> opt, opt_pad = make_optimizers(model, optax.sgd(0.1, momentum=0.9))
      >>> def loss_fn(m):
      ...     logits = m(x)
      ...     loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      ...     return loss + convjax.nnx.pop_padding_losses(m)
      >>> diff = nnx.DiffState(0, nnx.Any(nnx.Param, PadParam))
      >>> grads = nnx.jit(nnx.grad(loss_fn, argnums=diff))(model)
      >>> _ = opt.update(model, nnx.state(grads, nnx.Param))
      >>> _ = opt_pad.update(model, nnx.state(grads, PadParam))   # (update returns the updates)
      >>> int(opt.step[...]), int(opt_pad.step[...])
      (1, 1)
    """
    padding_tx = optax.adam(DEFAULT_PADDING_LR) if padding_tx is None else padding_tx
    if isinstance(model, nnx.Module):
        return (
            nnx.Optimizer(model, tx, wrt=nnx.Param),
            nnx.Optimizer(model, padding_tx, wrt=PadParam),
        )
    if isinstance(model, Mapping):
        return optax.multi_transform(
            {"params": tx, "padding": padding_tx},
            lambda tree: {k: k for k in tree},
        )
    raise TypeError(
        f"`model` must be an nnx.Module or a Linen variables dict, got {type(model).__name__}."
    )


def linen_trainable(variables: Mapping[str, Any]) -> dict[str, Any]:
    """The trainable collections of Linen variables: ``{"params": ..., "padding": ...}``
    (``padding`` empty without learned padding).

    Example:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import flax.linen as nn
      >>> import convjax
      >>> class CNN(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x):
      ...         return nn.Conv(4, (3, 3))(x).mean(axis=(1, 2))
      >>> x = jnp.ones((2, 8, 8, 3))
      >>> model = convjax.convert(CNN(), padding="learned", inputs=x)
      >>> variables = model.init(jax.random.key(0), x)
      >>> trainable = linen_trainable(variables)
      >>> jax.tree.map(jnp.shape, trainable)
      {'padding': {'Conv_0': {'pad': {'bias': (1, 3), 'kernel': (1, 2, 3, 3)}}},
       'params': {'Conv_0': {'bias': (4,), 'kernel': (3, 3, 3, 4)}}}
      >>> tx_all = make_optimizers(variables, optax.adam(1e-3))
      >>> opt_state = tx_all.init(trainable)
    """
    return {"params": variables["params"], "padding": dict(variables.get("padding", {}))}


def _updates(opt: Any, var: nnx.Variable, path: tuple) -> bool:
    wrt = getattr(opt, "wrt", None)
    if wrt is None:
        return False
    return bool(nnx.filterlib.to_predicate(wrt)(path, var))


def check_optimizers(model: nnx.Module, *optimizers: Any) -> bool:
    """Warn (``UserWarning``, with the fix) if no optimizer updates the learned padding.

    Checks every :class:`convjax.nnx.PadParam` of ``model`` against the ``wrt`` filter of each
    ``nnx.Optimizer``. Returns ``True`` when every padding parameter is covered (or there
    are none), ``False`` after warning.

    Example:
      >>> import warnings
      >>> import convjax
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> class CNN(nnx.Module):
      ...     def __init__(self, rngs):
      ...         self.conv1 = nnx.Conv(3, 8, (3, 3), rngs=rngs)
      ...         self.conv2 = nnx.Conv(8, 10, (3, 3), rngs=rngs)
      ...     def __call__(self, x):
      ...         x = nnx.max_pool(nnx.relu(self.conv1(x)), (2, 2), (2, 2))
      ...         return self.conv2(x).mean(axis=(1, 2))
      >>> x = jnp.ones((2, 8, 8, 3))
      >>> model = convjax.convert(CNN(rngs=nnx.Rngs(0)), padding="learned")
      >>> opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
      >>> with warnings.catch_warnings(record=True) as caught:
      ...     warnings.simplefilter("always")
      ...     check_optimizers(model, opt)      # PadParam is never updated
      False
      >>> print(caught[0].message)
      4 learned-padding parameters (PadParam, e.g. conv1/pad/bias) are updated by none ...
      >>> check_optimizers(model, *make_optimizers(model, optax.adam(1e-3)))
      True
    """
    missing = [
        path
        for path, var in nnx.iter_graph(model)
        if isinstance(var, PadParam) and not any(_updates(o, var, path) for o in optimizers)
    ]
    if not missing:
        return True
    first = "/".join(map(str, missing[0]))
    warnings.warn(
        f"{len(missing)} learned-padding parameters (PadParam, e.g. {first}) are updated by none "
        "of these optimizers, so the padding never trains. Build both with "
        "`opt, opt_pad = convjax.convert.make_optimizers(model, tx)` and add "
        "`convjax.nnx.pop_padding_losses(model)` to the loss.",
        UserWarning,
        stacklevel=2,
    )
    return False

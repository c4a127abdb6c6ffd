"""A Linen model as an NNX module: :class:`LinenModel`, so Linen models train in ``convjax train``.

The trainer (and everything that loads a run: ``load_model``, ``eval``, ``predict``,
``export``) works on NNX modules split into ``nnx.Param`` / ``PadParam`` / statistics groups.
:class:`LinenModel` holds a Linen module and its variables, one NNX variable per leaf, typed by
its collection, and calls ``module.apply`` in its ``__call__``:

=================  ==========================  =========================================
Linen collection   NNX variable type           trainer group
=================  ==========================  =========================================
``params``         ``nnx.Param``               task optimizer
``padding``        :class:`convjax.nnx.PadParam`  padding optimizer (Alrasheedi et al. 2023)
``batch_stats``    ``nnx.BatchStat``           statistics (BatchNorm, Network Deconvolution)
``losses``         one :class:`PaddingLoss`    summed padding losses, popped by the step
others             :class:`LinenVariable`      statistics (mutable while training)
=================  ==========================  =========================================

Paths keep the Linen layout under ``variables``: ``variables/params/Conv_0/kernel`` is Linen's
``params/Conv_0/kernel``, so :meth:`LinenModel.linen_variables` gives back a tree that the
Linen module's own ``apply`` takes.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from convjax.linen.padding import LOSSES_COLLECTION, PADDING_COLLECTION, sum_padding_losses
from convjax.nnx.padding import PaddingLoss, PadParam

#: Names of a Linen ``__call__`` argument that switches train / eval mode, and the value it
#: takes in train mode.
MODE_ARGUMENTS = {
    "train": True,
    "training": True,
    "is_training": True,
    "deterministic": False,
    "use_running_average": False,
}


class LinenVariable(nnx.Variable):
    """A leaf of a Linen collection other than ``params``, ``padding`` and ``batch_stats``
    (written back after each train-mode call, like statistics)."""


def variable_type(collection: str) -> type[nnx.Variable]:
    """The NNX variable type of a Linen collection (module docstring's table).

    Example:
      >>> variable_type("params").__name__, variable_type("padding").__name__
      ('Param', 'PadParam')
    """
    return {"params": nnx.Param, PADDING_COLLECTION: PadParam, "batch_stats": nnx.BatchStat}.get(
        collection, LinenVariable
    )


def mode_argument(module: nn.Module) -> str | None:
    """The argument of ``module.__call__`` that switches train / eval mode (one of
    :data:`MODE_ARGUMENTS`), or ``None`` when it has none.

    Example:
      >>> class Net(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x, train: bool = True):
      ...         return nn.Dense(2)(x)
      >>> mode_argument(Net())
      'train'
    """
    try:
        params = inspect.signature(type(module).__call__).parameters
    except (TypeError, ValueError):
        return None
    return next((name for name in MODE_ARGUMENTS if name in params), None)


def _wrap(tree: Any, kind: type[nnx.Variable]) -> Any:
    if isinstance(tree, Mapping):
        return {str(k): _wrap(v, kind) for k, v in tree.items()}
    return kind(jnp.asarray(tree))


def _assign(tree: Any, values: Any, axis_name: str | None) -> None:
    for k, v in values.items():
        if isinstance(v, Mapping):
            _assign(tree[k], v, axis_name)
            continue
        if axis_name is not None and jnp.issubdtype(jnp.asarray(v).dtype, jnp.inexact):
            v = jax.lax.pmean(v, axis_name)  # replicas keep one set of running statistics
        tree[k][...] = v


class LinenModel(nnx.Module):
    """An NNX module that runs a Linen module on NNX-held variables.

    ``model(x)`` is ``module.apply(variables, x, <mode>=...)``. In train mode
    (``model.train()``, the default) every collection except ``params`` and ``padding`` is
    mutable and written back, the padding losses the Linen layers sow are summed into one
    :class:`PaddingLoss` (collected by :func:`convjax.nnx.pop_padding_losses`, as for NNX
    layers) and a ``dropout`` key is drawn from ``rngs``; in eval mode (``model.eval()``)
    nothing is mutable. The mode reaches the Linen module through its ``__call__`` argument
    ``train`` / ``training`` / ``is_training`` (``True`` in train mode) or ``deterministic``
    / ``use_running_average`` (``False`` in train mode), found from the signature; a module
    with none of them is called the same way in both modes.

    With ``axis_name`` set (the trainer sets it to its data-parallel axis), the statistics a
    train-mode call writes are averaged over that axis, so the replicas keep one copy. A
    Linen ``nn.BatchNorm`` still normalises each device's batch with that device's moments
    unless the model gives it ``axis_name`` itself.

    Args:
      module: a Linen module (e.g. converted by :func:`convjax.convert`).
      variables: its variables (``module.init(...)``); a ``losses`` or ``intermediates``
        collection is dropped.
      rngs: ``nnx.Rngs``; its ``dropout`` stream (if any) feeds Linen's ``dropout`` rng.
      axis_name: see above.
      mode_arg: the mode argument's name (default: :func:`mode_argument`); ``""`` for none.

    Example:
      >>> class Net(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x, train: bool = True):
      ...         x = nn.Conv(4, (3, 3))(x)
      ...         x = nn.BatchNorm(use_running_average=not train)(x)
      ...         return nn.Dense(3)(x.mean(axis=(1, 2)))
      >>> x = jnp.ones((2, 8, 8, 1))
      >>> variables = Net().init(jax.random.key(0), x, train=False)
      >>> model = LinenModel(Net(), variables, rngs=nnx.Rngs(0))
      >>> model(x).shape
      (2, 3)
      >>> stats = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
      >>> sorted(stats["variables"]["batch_stats"]["BatchNorm_0"])  # Linen's paths, NNX types
      ['mean', 'var']
      >>> model.eval()
      >>> y = model.linen_module.apply(model.linen_variables(), x, train=False)
      >>> bool(jnp.allclose(model(x), y))
      True
    """

    def __init__(
        self,
        module: nn.Module,
        variables: Mapping[str, Any],
        *,
        rngs: nnx.Rngs | None = None,
        axis_name: str | None = None,
        mode_arg: str | None = None,
    ):
        if not isinstance(module, nn.Module):
            raise TypeError(f"`module` must be a flax.linen.Module, got {type(module).__name__}.")
        if not isinstance(variables, Mapping) or "params" not in variables:
            raise TypeError(
                "`variables` must be the Linen variables of `module` (a mapping with a "
                f"'params' collection), got {type(variables).__name__}."
            )
        mode_arg = mode_argument(module) if mode_arg is None else (mode_arg or None)
        if mode_arg is not None and mode_arg not in MODE_ARGUMENTS:
            raise ValueError(
                f"`mode_arg` must be one of {list(MODE_ARGUMENTS)} or '', got {mode_arg!r}."
            )
        self.linen_module = module
        self.mode_arg = mode_arg
        self.axis_name = axis_name
        self.deterministic = False  # model.train() / model.eval() set it
        self.rngs = rngs
        keep = {c: t for c, t in variables.items() if c not in (LOSSES_COLLECTION, "intermediates")}
        self.variables = nnx.data({c: _wrap(t, variable_type(c)) for c, t in keep.items()})
        if PADDING_COLLECTION in keep:
            self.padding_loss = PaddingLoss(jnp.zeros((), jnp.float32))

    def linen_variables(self) -> dict[str, Any]:
        """The current variables as a Linen variables dict (``{"params": ..., ...}``)."""
        return jax.tree.map(
            lambda v: v[...], self.variables, is_leaf=lambda x: isinstance(x, nnx.Variable)
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        train = not self.deterministic
        if self.mode_arg is not None:
            kwargs.setdefault(self.mode_arg, MODE_ARGUMENTS[self.mode_arg] == train)
        rngs = {}
        if train and self.rngs is not None and "dropout" in self.rngs:
            rngs["dropout"] = self.rngs.dropout()
        variables = self.linen_variables()
        if not train:
            return self.linen_module.apply(variables, *args, rngs=rngs, **kwargs)
        mutable = [c for c in variables if c not in ("params", PADDING_COLLECTION)]
        mutable.append(LOSSES_COLLECTION)
        out, updates = self.linen_module.apply(
            variables, *args, rngs=rngs, mutable=mutable, **kwargs
        )
        losses = updates.pop(LOSSES_COLLECTION, None)
        if losses and PADDING_COLLECTION in self.variables:
            self.padding_loss[...] = self.padding_loss[...] + sum_padding_losses(losses)
        for collection, values in updates.items():
            if collection in self.variables:
                _assign(self.variables[collection], values, self.axis_name)
        return out


def from_linen(
    module: nn.Module,
    inputs: Any,
    *,
    rngs: nnx.Rngs,
    axis_name: str | None = None,
    mode_arg: str | None = None,
) -> LinenModel:
    """Initialise a Linen module on ``inputs`` and wrap it as a :class:`LinenModel`.

    ``module.init`` runs in eval mode (``train=False`` or the module's equivalent, see
    :func:`mode_argument`) with the ``params`` key drawn from ``rngs.params()``; the same
    ``rngs`` give later dropout keys.

    Args:
      module: a Linen module (plain or converted by :func:`convjax.convert`).
      inputs: an example batch, ``(N, *input_shape)``.
      rngs: ``nnx.Rngs`` with a ``params`` stream (and ``dropout`` for dropout models).
      axis_name, mode_arg: see :class:`LinenModel`.

    Example:
      >>> class Net(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x):
      ...         return nn.Dense(3)(nn.Conv(4, (3, 3))(x).mean(axis=(1, 2)))
      >>> model = from_linen(Net(), jnp.ones((1, 8, 8, 1)), rngs=nnx.Rngs(params=0))
      >>> model(jnp.ones((5, 8, 8, 1))).shape
      (5, 3)
    """
    arg = mode_argument(module) if mode_arg is None else (mode_arg or None)
    kwargs = {} if arg is None else {arg: not MODE_ARGUMENTS[arg]}
    variables = module.init({"params": rngs.params()}, inputs, **kwargs)
    return LinenModel(module, variables, rngs=rngs, axis_name=axis_name, mode_arg=arg or "")


__all__ = ["MODE_ARGUMENTS", "LinenModel", "LinenVariable", "from_linen", "mode_argument"]

"""SIREN kernel network: the CKConv baseline kernel parametrisation.

Sitzmann et al., "Implicit Neural Representations with Periodic Activation Functions"
(NeurIPS 2020), as used by CKConv (Romero et al., ICLR 2022, arXiv 2102.02611):

    h_1 = sin(omega_0 (W_1 x + b_1));  h_l = sin(omega_0 (W_l h_{l-1} + b_l));  K(x) = W_out h + b

Init: ``W_1 ~ U(-1/d, 1/d)``, ``W_l ~ U(-sqrt(6/H)/omega_0, +)``; biases and the output layer
use the PyTorch default ``U(+-1/sqrt(fan_in))`` (output bias zero).

Parameters: ``{"layers": [{"w", "b"}] * L, "out": {"w": (H, O), "b": (O,)}}``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from convjax._checks import check_positive
from convjax.ops.magnet import _check_net_sizes

Params = dict[str, Any]


def siren_init(
    key: jax.Array,
    num_dims: int,
    out_features: int,
    *,
    hidden_features: int = 32,
    num_layers: int = 3,
    omega_0: float = 30.0,
    dtype: Any = jnp.float32,
) -> Params:
    """Initialise a SIREN with ``num_layers`` sine layers of width ``hidden_features``.

    Example:
      >>> p = siren_init(jax.random.key(0), 2, 6)
      >>> len(p["layers"]), p["out"]["w"].shape
      (3, (32, 6))
    """
    _check_net_sizes(num_dims, out_features, hidden_features, num_layers)
    check_positive(omega_0, "omega_0")
    keys = jax.random.split(key, 2 * num_layers + 1)
    layers = []
    fan_in = num_dims
    for layer in range(num_layers):
        w_bound = 1.0 / num_dims if layer == 0 else math.sqrt(6.0 / hidden_features) / omega_0
        b_bound = 1.0 / math.sqrt(fan_in)
        layers.append(
            {
                "w": jax.random.uniform(
                    keys[2 * layer], (fan_in, hidden_features), dtype, -w_bound, w_bound
                ),
                "b": jax.random.uniform(
                    keys[2 * layer + 1], (hidden_features,), dtype, -b_bound, b_bound
                ),
            }
        )
        fan_in = hidden_features
    bound = 1.0 / math.sqrt(hidden_features)
    out = {
        "w": jax.random.uniform(keys[-1], (hidden_features, out_features), dtype, -bound, bound),
        "b": jnp.zeros((out_features,), dtype),
    }
    return {"layers": layers, "out": out}


def siren_apply(params: Params, coords: jax.Array, omega_0: float = 30.0) -> jax.Array:
    """Evaluate the SIREN at ``coords`` ``(..., d)`` -> ``(..., out_features)``.

    ``omega_0`` is static configuration and must match the one given to :func:`siren_init`.

    Example:
      >>> p = siren_init(jax.random.key(0), 1, 3)
      >>> siren_apply(p, jnp.zeros((7, 1))).shape
      (7, 3)
    """
    coords = jnp.asarray(coords, params["out"]["w"].dtype)
    d = params["layers"][0]["w"].shape[0]
    if coords.shape[-1] != d:
        raise ValueError(f"`coords` must end in {d} (the net's spatial rank), got {coords.shape}.")
    lead = coords.shape[:-1]
    h = coords.reshape(-1, d)
    for lin in params["layers"]:
        h = jnp.sin(omega_0 * (h @ lin["w"] + lin["b"]))
    out = h @ params["out"]["w"] + params["out"]["b"]
    return out.reshape(*lead, out.shape[-1])

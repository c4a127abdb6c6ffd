"""SIREN kernel network: equations against NumPy, init bounds, gradients."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from convjax.ops.siren import siren_apply, siren_init


def siren_numpy(params, x, omega_0):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    h = np.asarray(x, np.float64)
    for lin in p["layers"]:
        h = np.sin(omega_0 * (h @ lin["w"] + lin["b"]))
    return h @ p["out"]["w"] + p["out"]["b"]


def test_apply_matches_numpy_and_init_bounds():
    d, h, omega = 2, 16, 30.0
    p = siren_init(jax.random.key(0), d, 3, hidden_features=h, num_layers=3, omega_0=omega)
    x = np.random.default_rng(0).uniform(-1, 1, (11, d)).astype(np.float32)
    np.testing.assert_allclose(
        siren_apply(p, x, omega), siren_numpy(p, x, omega), rtol=1e-3, atol=1e-4
    )
    assert np.abs(np.asarray(p["layers"][0]["w"])).max() <= 1 / d
    for lin in p["layers"][1:]:
        assert np.abs(np.asarray(lin["w"])).max() <= math.sqrt(6 / h) / omega
    assert siren_apply(p, np.zeros((2, 3, d), np.float32), omega).shape == (2, 3, 3)


def test_gradients_and_errors():
    p = siren_init(jax.random.key(1), 1, 2, hidden_features=4, num_layers=2, omega_0=3.0)
    x = jnp.linspace(-1, 1, 5)[:, None]
    apply = jax.jit(lambda q: siren_apply(q, x, 3.0))
    check_grads(apply, (p,), order=1, modes=("rev",), atol=5e-2, rtol=5e-2)
    with pytest.raises(ValueError, match="omega_0"):
        siren_init(jax.random.key(0), 1, 2, omega_0=0.0)
    with pytest.raises(ValueError, match="coords"):
        siren_apply(p, jnp.zeros((4, 2)))

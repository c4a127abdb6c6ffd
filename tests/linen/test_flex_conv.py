"""Linen FlexConv/CKConv: variables, equality with the op, sown penalty, resolution factor."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax.linen import CKConv, FlexConv
from convjax.ops.flex_conv import flex_conv, flex_conv_aliasing_penalty

SMALL = dict(hidden_features=4, num_layers=2)


def test_variables_apply_and_sown_penalty():
    layer = FlexConv(3, 9, **SMALL)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 2)), jnp.float32)
    variables = jax.jit(layer.init)(jax.random.key(0), x)
    params = variables["params"]
    assert sorted(params) == ["bias", "kernel_net", "mask"]
    np.testing.assert_array_equal(params["mask"]["sigma"], np.float32([0.075, 0.075]))
    assert "losses" not in variables  # only sown when the caller asks for it
    apply = jax.jit(lambda v, a: layer.apply(v, a, mutable=["losses"]))
    y, state = apply(variables, x)
    assert y.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(y, flex_conv(dict(params), x, kernel_size=9), rtol=1e-6)
    (penalty,) = state["losses"]["aliasing_penalty"]
    assert float(penalty) == pytest.approx(float(flex_conv_aliasing_penalty(params, 9)), rel=1e-6)
    assert float(penalty) > 0


def test_ckconv_causal_and_resolution_factor():
    ck = CKConv(2, 5, causal=True, **SMALL)
    x = jnp.ones((1, 10, 3))
    variables = ck.init(jax.random.key(1), x)
    assert "mask" not in variables["params"]
    y = ck.apply(variables, x)
    assert y.shape == (1, 10, 2)
    y2 = ck.apply(variables, x.at[:, 6:].set(9.0))
    np.testing.assert_allclose(y2[:, :6], y[:, :6], rtol=1e-6)  # causal
    layer = FlexConv(1, 9, **SMALL)
    v = layer.init(jax.random.key(2), jnp.ones((1, 8, 8, 1)))
    hi = FlexConv(1, 9, resolution_factor=2, **SMALL)
    assert hi.apply(v, jnp.ones((1, 16, 16, 1))).shape == (1, 16, 16, 1)
    with pytest.raises(ValueError, match="factor"):
        FlexConv(1, 9, resolution_factor=1.1, **SMALL).apply(v, jnp.ones((1, 8, 8, 1)))
    with pytest.raises(ValueError, match="causal"):
        FlexConv(1, 9, causal=True, **SMALL).init(jax.random.key(0), jnp.ones((1, 8, 8, 1)))

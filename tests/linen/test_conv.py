"""linen.Conv == nnx.Conv for the same parameters, every padding mode; collections; errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from convjax import linen as cl
from convjax import nnx as cn


@pytest.mark.parametrize("mode", ["zero", "reflect", "replicate", "circular", "partial", "learned"])
def test_matches_nnx(mode):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 7, 6, 4)), jnp.float32)
    kw = dict(strides=2, padding_mode=mode, feature_group_count=2)
    ref = cn.Conv(4, 6, 3, bias_init=nnx.initializers.normal(1.0), rngs=nnx.Rngs(0), **kw)
    conv = cl.Conv(6, 3, **kw)
    variables = conv.init(jax.random.key(1), x)
    if mode == "learned":
        assert set(variables["padding"]["pad"]) == {"kernel", "bias"}
        assert set(variables["params"]) == {"kernel", "bias"}  # no padding filter in params
    params = {"kernel": ref.kernel[...], "bias": ref.bias[...]}
    variables = {**variables, "params": params}
    y = jax.jit(lambda v, a: conv.apply(v, a, mutable=["losses"])[0])(variables, x)
    np.testing.assert_allclose(np.asarray(y), np.asarray(ref(x)), rtol=1e-5, atol=1e-5)


def test_collections_and_dtypes():
    conv = cl.Conv(4, (3,), padding_mode="learned", dtype=jnp.bfloat16)
    variables = conv.init(jax.random.key(0), jnp.ones((1, 9, 2)))
    assert sorted(variables) == ["losses", "padding", "params"]
    assert variables["params"]["kernel"].dtype == jnp.float32
    assert variables["padding"]["pad"]["kernel"].dtype == jnp.float32
    y = conv.apply({k: variables[k] for k in ("params", "padding")}, jnp.ones((1, 9, 2)))
    assert y.shape == (1, 9, 4) and y.dtype == jnp.bfloat16


@pytest.mark.parametrize(
    "kwargs,x,exc,match",
    [
        (dict(padding_mode="mirror"), jnp.ones((1, 5, 5, 3)), ValueError, "padding_mode"),
        (dict(feature_group_count=2), jnp.ones((1, 5, 5, 3)), ValueError, "divisible"),
        (dict(padding_kwargs={"depth": 1}), jnp.ones((1, 5, 5, 3)), ValueError, "padding_kwargs"),
        ({}, jnp.ones((1, 5, 3)), ValueError, "spatial dims"),
        ({}, jnp.ones((1, 5, 5, 3), jnp.int32), TypeError, "floating"),
    ],
)
def test_errors(kwargs, x, exc, match):
    with pytest.raises(exc, match=match):
        cl.Conv(4, 3, **kwargs).init(jax.random.key(0), x)


def test_deconv_conv_learned_padding_matches_nnx():
    """Linen DeconvConv pads through the same path: filter in "padding", loss sown, == NNX."""
    x = jnp.asarray(np.random.default_rng(5).normal(size=(2, 7, 8, 4)), jnp.float32)
    kw = dict(strides=2, padding_mode="learned", block=4, num_iters=5)
    ref = cn.DeconvConv(4, 5, 3, rngs=nnx.Rngs(0), **kw)
    layer = cl.DeconvConv(5, 3, **kw)
    variables = layer.init(jax.random.key(0), x, use_running_average=False)
    assert set(variables["padding"]["pad"]) == {"kernel", "bias"}
    rng = np.random.default_rng(6)
    pad_vars = {k: jnp.asarray(rng.normal(size=v.shape), jnp.float32)
                for k, v in variables["padding"]["pad"].items()}  # fmt: skip
    ref.pad.kernel[...], ref.pad.bias[...] = pad_vars["kernel"], pad_vars["bias"]
    variables = {  # no "losses": those sown by init would be summed too
        "batch_stats": variables["batch_stats"],
        "params": {"kernel": ref.kernel[...], "bias": ref.bias[...]},
        "padding": {"pad": pad_vars},
    }
    y, mutated = jax.jit(
        lambda v, a: layer.apply(v, a, use_running_average=False, mutable=["batch_stats", "losses"])
    )(variables, x)
    np.testing.assert_allclose(y, ref(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        cl.sum_padding_losses(mutated["losses"]), cn.pop_padding_losses(ref), rtol=1e-5
    )
    with pytest.raises(ValueError, match="patch mean"):
        cl.DeconvConv(5, 3, padding_mode="partial").init(
            jax.random.key(0), x, use_running_average=False
        )

"""linen padding: padding collection, sown losses, exact gradient separation, eval mode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax import linen as cl
from convjax.ops import PAD_MODES, pad, padding_loss


def _x(shape=(4, 6, 5, 3), seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def test_separation_and_sown_loss():
    x, target = _x(), _x((4, 3, 3, 2), seed=1)
    model = cl.Conv(2, 3, strides=2, padding_mode="learned", padding_kwargs={"mixing": "full"})
    variables = model.init(jax.random.key(0), x)
    rng = np.random.default_rng(2)
    padding = jax.tree.map(
        lambda a: a + 0.3 * jnp.asarray(rng.normal(size=a.shape), jnp.float32),
        variables["padding"],
    )
    params = variables["params"]

    def losses(params, padding):
        y, mutated = model.apply({"params": params, "padding": padding}, x, mutable=["losses"])
        return jnp.mean((y - target) ** 2), cl.sum_padding_losses(mutated)

    @jax.jit
    def grads(params, padding):
        g = lambda i: jax.grad(lambda p, q: losses(p, q)[i], argnums=(0, 1))(params, padding)
        total = jax.grad(lambda p, q: sum(losses(p, q)), argnums=(0, 1))(params, padding)
        return g(0), g(1), total, losses(params, padding)[1]

    (t_p, t_q), (l_p, l_q), (s_p, s_q), pad_loss = grads(params, padding)
    for leaf in jax.tree.leaves((t_q, l_p)):
        np.testing.assert_array_equal(np.asarray(leaf), 0.0)
    assert all(float(jnp.abs(a).sum()) > 0 for a in jax.tree.leaves((t_p, l_q)))
    jax.tree.map(np.testing.assert_array_equal, s_p, t_p)
    jax.tree.map(np.testing.assert_array_equal, s_q, l_q)
    expected = padding_loss(padding["pad"], x)
    np.testing.assert_allclose(float(pad_loss), float(expected), rtol=1e-6)


def test_deterministic_sows_nothing():
    x = _x()
    pm = cl.PaddingModule(pad_width=2)
    variables = pm.init(jax.random.key(0), x)
    y, mutated = pm.apply({"padding": variables["padding"]}, x, deterministic=True, mutable=True)
    assert "losses" not in mutated
    np.testing.assert_allclose(np.asarray(y), np.asarray(pad(x, 2, "replicate")), atol=1e-6)
    _, mutated = pm.apply({"padding": variables["padding"]}, x, mutable=["losses"])
    assert float(cl.sum_padding_losses(mutated["losses"])) > 0


@pytest.mark.parametrize("mode", [*PAD_MODES, "partial"])
def test_pad_modes(mode):
    x = _x()
    y = cl.Pad(pad_width=((1, 2), (0, 3)), mode=mode).apply({}, x)
    expected = pad(x, ((1, 2), (0, 3)), "zero" if mode == "partial" else mode)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(expected))


def test_errors():
    with pytest.raises(ValueError, match="`mode` must be one of"):
        cl.Pad(pad_width=1, mode="mirror").apply({}, _x())
    with pytest.raises(ValueError, match="`mixing` must be one of"):
        cl.PaddingModule(mixing="dense").init(jax.random.key(0), _x())

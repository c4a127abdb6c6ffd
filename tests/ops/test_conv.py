"""ops.conv: symmetric k//2 geometry (PyTorch) vs "SAME", pad_by_mode, padded_conv, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.test_util import check_grads

from convjax import linen as cl
from convjax import nnx as cn
from convjax.ops import (
    PADDING_MODES,
    conv_padding,
    init_padding_params,
    learned_pad,
    pad,
    pad_by_mode,
    padded_conv,
    padding_loss,
)

DN = ("NHWC", "HWIO", "NHWC")


def rand(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def test_conv_padding_resolves_the_amount():
    assert conv_padding((32, 32), 3, 2) == ((1, 1), (1, 1))  # default: PyTorch padding=1
    assert conv_padding((32, 32), 3, 2, "SAME") == ((0, 1), (0, 1))  # XLA's split
    assert conv_padding((224, 224), 7, 2) == ((3, 3), (3, 3))  # ImageNet stem
    assert conv_padding((9,), 3, 1, None, 2) == ((2, 2),)  # dilation * (k // 2)
    assert conv_padding((8, 8), 1, 2) == ((0, 0), (0, 0))
    assert conv_padding((8, 8), 3, 1, "VALID") == ((0, 0), (0, 0))
    assert conv_padding((8, 8), 3, 1, ((0, 2), (1, 0))) == ((0, 2), (1, 0))


def test_stride2_conv_equals_explicit_symmetric_conv_general_dilated():
    """ops, NNX and Linen stride-2 convs == a hand-written ((1, 1), (1, 1)) conv; not SAME."""
    x = rand(0, (2, 8, 8, 3))
    conv = cn.Conv(3, 4, 3, strides=2, bias_init=nnx.initializers.normal(1.0), rngs=nnx.Rngs(0))
    kernel, bias = conv.kernel[...], conv.bias[...]
    want = jax.lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=DN)
    want = want + bias
    np.testing.assert_allclose(conv(x), want, rtol=1e-6, atol=1e-6)
    y_op, loss = padded_conv(x, kernel, bias, strides=2)
    assert loss is None
    np.testing.assert_allclose(y_op, want, rtol=1e-6, atol=1e-6)
    linen = cl.Conv(4, 3, strides=2)
    y_linen = linen.apply({"params": {"kernel": kernel, "bias": bias}}, x)
    np.testing.assert_allclose(y_linen, want, rtol=1e-6, atol=1e-6)
    # the XLA "SAME" split reads windows one pixel further down/right: a different function
    same = cn.Conv(3, 4, 3, strides=2, padding="SAME", rngs=nnx.Rngs(0))
    same.bias[...] = bias
    y_same = same(x)
    assert y_same.shape == want.shape
    assert float(jnp.abs(y_same - want).max()) > 0.1
    want_same = jax.lax.conv_general_dilated(x, kernel, (2, 2), "SAME", dimension_numbers=DN)
    np.testing.assert_allclose(y_same, want_same + bias, rtol=1e-6, atol=1e-6)


_call = nnx.jit(lambda m, a: m(a))


def _side_bias_effects(conv, x):
    """How much the output changes when the padding bias of each side (0..3) is moved."""
    y0 = _call(conv, x)
    effects = []
    for side in range(4):
        old = conv.pad.bias[...]
        conv.pad.bias[...] = old.at[side].add(5.0)
        effects.append(float(jnp.abs(_call(conv, x) - y0).max()))
        conv.pad.bias[...] = old
    return effects


def test_stride2_learned_padding_pads_and_trains_all_four_sides():
    """Learned padding at stride 2 pads, and trains, all four sides with one filter each.

    Which padded lines a window *reads* is the geometry: with k // 2 (PyTorch) on an even map
    the last window ends on the last real row, so only the top/left padding is read (as in
    PyTorch); XLA's "SAME" reads only the bottom/right one; on odd maps k // 2 reads all four.
    """
    kwargs = dict(shared=False, filter_init="zero")  # one filter per side
    conv = cn.Conv(3, 4, 3, strides=2, padding_mode="learned", padding_kwargs=kwargs,
                   rngs=nnx.Rngs(0))  # fmt: skip
    conv.eval()  # no loss bookkeeping while probing the forward pass
    x = rand(1, (2, 8, 8, 3))
    params = {"kernel": rand(10, conv.pad.kernel.shape), "bias": rand(11, (4, 3))}
    conv.pad.kernel[...], conv.pad.bias[...] = params["kernel"], params["bias"]
    # the conv input is learned-padded by one line on all four sides
    xp = learned_pad(params, x, ((1, 1), (1, 1)))
    want = jax.lax.conv_general_dilated(xp, conv.kernel[...], (2, 2), "VALID", dimension_numbers=DN)
    np.testing.assert_allclose(_call(conv, x), want + conv.bias[...], rtol=1e-5, atol=1e-5)
    # probe each side alone: zero filters pad with their bias only (no corner propagation)
    conv.pad.kernel[...] = jnp.zeros(conv.pad.kernel.shape)
    low0, high0, low1, high1 = _side_bias_effects(conv, x)
    assert low0 > 1e-3 and low1 > 1e-3 and high0 == 0.0 and high1 == 0.0
    assert min(_side_bias_effects(conv, rand(2, (2, 7, 7, 3)))) > 1e-3  # odd map: all four
    same = cn.Conv(3, 4, 3, strides=2, padding="SAME", padding_mode="learned",
                   padding_kwargs=kwargs, rngs=nnx.Rngs(0))  # fmt: skip
    same.eval()
    low0, high0, low1, high1 = _side_bias_effects(same, x)
    assert low0 == 0.0 and low1 == 0.0 and high0 > 1e-3 and high1 > 1e-3

    # training: the padding optimizer moves every side's filter, the task loss none of them
    conv.train()
    opt = nnx.Optimizer(conv, optax.sgd(0.1), wrt=cn.PadParam)
    conv.pad.bias[...] = jnp.zeros((4, 3))
    before = np.asarray(conv.pad.kernel[...])

    @nnx.jit
    def step(conv, opt, x):
        def loss_fn(conv):
            return jnp.mean(conv(x) ** 2) + cn.pop_padding_losses(conv)

        grads = nnx.grad(loss_fn, argnums=nnx.DiffState(0, cn.PadParam))(conv)
        opt.update(conv, grads)

    step(conv, opt, x)
    moved = np.abs(np.asarray(conv.pad.kernel[...]) - before).reshape(4, -1).max(axis=1)
    assert (moved > 0).all()
    # the update is exactly the padding loss's gradient (task loss gives zeros)
    g = jax.grad(padding_loss)({"kernel": jnp.asarray(before), "bias": jnp.zeros((4, 3))}, x)
    np.testing.assert_allclose(conv.pad.kernel[...], before - 0.1 * g["kernel"], atol=1e-6)


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_pad_by_mode_matches_the_mode_ops(mode):
    x = rand(2, (1, 5, 4, 2))
    params = init_padding_params(2, 2, init="linear") if mode == "learned" else None
    y, loss = pad_by_mode(x, ((1, 2), (2, 1)), mode, params, padding_loss=True)
    if mode == "learned":
        np.testing.assert_array_equal(y, learned_pad(params, x, ((1, 2), (2, 1))))
        np.testing.assert_allclose(loss, padding_loss(params, x), rtol=1e-6)
    else:
        classic = "zero" if mode == "partial" else mode
        np.testing.assert_array_equal(y, pad(x, ((1, 2), (2, 1)), classic))
        assert loss is None


@pytest.mark.parametrize("mode", ["reflect", "partial", "learned"])
def test_padded_conv_gradients(mode):
    x = rand(3, (1, 5, 6, 2))
    kernel, bias = 0.5 * rand(4, (3, 3, 2, 3)), rand(5, (3,))
    params = init_padding_params(2, 2, init="linear") if mode == "learned" else None

    @jax.jit
    def f(x, kernel, bias):
        return padded_conv(x, kernel, bias, strides=2, padding_mode=mode, pad_params=params)[0]

    check_grads(f, (x, kernel, bias), order=1, modes=["rev"], atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_padded_conv_low_precision_is_finite(dtype):
    params = init_padding_params(3, 2, init="linear")

    @jax.jit
    def every_mode(x, kernel, bias):
        return {
            mode: padded_conv(
                x,
                kernel,
                bias,
                strides=2,
                padding_mode=mode,
                pad_params=params if mode == "learned" else None,
                padding_loss=True,
            )
            for mode in PADDING_MODES
        }

    x = (100 * rand(6, (2, 6, 6, 3))).astype(dtype)
    for mode, (y, loss) in every_mode(x, rand(7, (3, 3, 3, 4)), rand(8, (4,))).items():
        assert y.dtype == dtype and bool(jnp.isfinite(y).all()), mode
        assert loss is None or (loss.dtype == jnp.float32 and bool(jnp.isfinite(loss)))


@pytest.mark.parametrize(
    "kwargs,match,exc",
    [
        (dict(padding_mode="mirror"), "padding_mode", ValueError),
        (dict(padding_mode="learned"), "pad_params", ValueError),
        (dict(pad_params=init_padding_params(3, 2)), "pad_params", ValueError),
        (dict(kernel=jnp.ones((3, 3, 2, 4))), "features", ValueError),
        (dict(kernel=jnp.ones((3, 2, 4))), "kernel", ValueError),
        (dict(bias=jnp.ones((3,))), "bias", ValueError),
        (dict(padding="HALF"), "padding", ValueError),
        (dict(x=jnp.ones((1, 6, 6, 3), jnp.int32)), "floating", TypeError),
    ],
)
def test_padded_conv_errors(kwargs, match, exc):
    args = dict(x=jnp.ones((1, 6, 6, 3)), kernel=jnp.ones((3, 3, 3, 4)), bias=jnp.ones((4,)))
    args.update(kwargs)
    x, kernel, bias = args.pop("x"), args.pop("kernel"), args.pop("bias")
    with pytest.raises(exc, match=match):
        padded_conv(x, kernel, bias, **args)


def test_linen_and_nnx_share_the_default_geometry_in_1d_and_3d():
    specs = {1: ("NWC", "WIO", "NWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}
    for shape, k in [((2, 10, 3), (3,)), ((1, 6, 4, 6, 3), (3, 3, 3))]:
        x = rand(9, shape)
        ref = cn.Conv(3, 2, k, strides=2, padding_mode="replicate", rngs=nnx.Rngs(0))
        conv = cl.Conv(2, k, strides=2, padding_mode="replicate")
        variables = {"params": {"kernel": ref.kernel[...], "bias": ref.bias[...]}}
        y = conv.apply(variables, x)
        np.testing.assert_allclose(y, ref(x), rtol=1e-5, atol=1e-5)
        xp = np.pad(np.asarray(x), [(0, 0), *[(1, 1)] * len(k), (0, 0)], mode="edge")
        want = jax.lax.conv_general_dilated(
            jnp.asarray(xp),
            ref.kernel[...],
            (2,) * len(k),
            "VALID",
            dimension_numbers=specs[len(k)],
        )
        np.testing.assert_allclose(y, want + ref.bias[...], rtol=1e-5, atol=1e-5)

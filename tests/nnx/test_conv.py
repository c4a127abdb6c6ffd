"""nnx.Conv with padding_mode: float64 NumPy reference for every mode, shapes, dtypes, errors."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from convjax.nnx import Conv
from convjax.ops import init_padding_params, learned_pad

NP_MODE = {"zero": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def same_pairs(shape, kernel, strides):
    pairs = []
    for s, k, st in zip(shape, kernel, strides):
        out = -(-s // st)
        total = max((out - 1) * st + k - s, 0)
        pairs.append((total // 2, total - total // 2))
    return pairs


def ref_valid_conv(xp, kernel, strides, out_shape, groups=1):
    """Plain float64 loop over kernel taps of a "VALID" cross-correlation."""
    xp = np.asarray(xp, np.float64)
    kernel = np.asarray(kernel, np.float64)
    cin = xp.shape[-1] // groups
    cout = kernel.shape[-1] // groups
    y = np.zeros((xp.shape[0], *out_shape, kernel.shape[-1]))
    for t in itertools.product(*[range(k) for k in kernel.shape[:-2]]):
        window = tuple(
            slice(ti, ti + (o - 1) * st + 1, st) for ti, o, st in zip(t, out_shape, strides)
        )
        patch = xp[(slice(None), *window, slice(None))]
        for g in range(groups):
            y[..., g * cout : (g + 1) * cout] += (
                patch[..., g * cin : (g + 1) * cin] @ kernel[t][:, g * cout : (g + 1) * cout]
            )
    return y


def symmetric_pairs(kernel):
    return [(k // 2, k // 2) for k in kernel]


def ref_conv(x, kernel, bias, strides, mode, groups=1, padding=None):
    shape = x.shape[1:-1]
    ksize = kernel.shape[:-2]
    if padding == "SAME":
        pairs = same_pairs(shape, ksize, strides)
    else:  # the default: PyTorch's padding=k//2 on both sides
        pairs = symmetric_pairs(ksize)
    out_shape = [
        (s + lo + hi - k) // st + 1 for s, (lo, hi), k, st in zip(shape, pairs, ksize, strides)
    ]
    np_mode = "constant" if mode == "partial" else NP_MODE[mode]
    xp = np.pad(np.asarray(x, np.float64), [(0, 0), *pairs, (0, 0)], mode=np_mode)
    y = ref_valid_conv(xp, kernel, strides, out_shape, groups)
    if mode == "partial":  # Liu et al.: W^T(X*M) * sum(1)/sum(M) + b
        mask = np.pad(np.ones((1, *shape, 1)), [(0, 0), *pairs, (0, 0)])
        valid = ref_valid_conv(mask, np.ones((*ksize, 1, 1)), strides, out_shape)
        y = y * (np.prod(ksize) / valid)
    return y + np.asarray(bias, np.float64)


@pytest.mark.parametrize("mode", ["zero", "reflect", "replicate", "circular", "partial"])
@pytest.mark.parametrize(
    "shape,kernel_size,strides,groups,padding",
    [
        ((2, 7, 6, 4), 3, 2, 1, None),
        ((2, 7, 6, 4), 3, 2, 1, "SAME"),
        ((1, 6, 5, 4), (4, 2), (1, 2), 2, None),
        ((1, 6, 5, 4), (4, 2), (1, 2), 2, "SAME"),
    ],
)
def test_matches_float64_reference(mode, shape, kernel_size, strides, groups, padding):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    conv = Conv(
        4,
        6,
        kernel_size,
        strides=strides,
        padding=padding,
        padding_mode=mode,
        feature_group_count=groups,
        bias_init=nnx.initializers.normal(1.0),
        rngs=nnx.Rngs(0),
    )
    y = nnx.jit(lambda m, a: m(a))(conv, jnp.asarray(x))
    n = len(shape) - 2
    strides_t = (strides,) * n if isinstance(strides, int) else strides
    expected = ref_conv(x, conv.kernel[...], conv.bias[...], strides_t, mode, groups, padding)
    assert y.shape == expected.shape
    np.testing.assert_allclose(np.asarray(y), expected, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("transform", [lambda f: f, nnx.jit], ids=["nojit", "nnx.jit"])
def test_learned_mode_pads_with_the_learned_filter(transform):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 6, 5, 3)), jnp.float32)
    conv = Conv(3, 4, 3, strides=2, padding_mode="learned", rngs=nnx.Rngs(0))
    replicate = Conv(3, 4, 3, strides=2, padding_mode="replicate", rngs=nnx.Rngs(0))
    # the default init is replicate padding
    np.testing.assert_allclose(
        np.asarray(transform(lambda m, a: m(a))(conv, x)), np.asarray(replicate(x)), atol=1e-6
    )
    params = init_padding_params(3, 2, mixing="depthwise")
    params = {k: jnp.asarray(rng.normal(size=v.shape), jnp.float32) for k, v in params.items()}
    conv.pad.kernel[...] = params["kernel"]
    conv.pad.bias[...] = params["bias"]
    pairs = symmetric_pairs((3, 3))
    xp = np.asarray(learned_pad(params, x, pairs))
    expected = ref_valid_conv(xp, conv.kernel[...], (2, 2), (3, 3)) + np.asarray(conv.bias[...])
    np.testing.assert_allclose(
        np.asarray(transform(lambda m, a: m(a))(conv, x)), expected, rtol=2e-5, atol=2e-5
    )


@pytest.mark.parametrize(
    "shape,kernel_size,strides,mode",
    [
        ((2, 9, 3), (3,), 2, "reflect"),
        ((1, 5, 4, 3, 3), (3, 3, 3), (2, 1, 2), "learned"),
        ((1, 5, 4, 3, 3), (3, 1, 3), 1, "partial"),
    ],
)
def test_same_output_size_in_1d_and_3d(shape, kernel_size, strides, mode):
    conv = Conv(3, 2, kernel_size, strides=strides, padding_mode=mode, rngs=nnx.Rngs(0))
    n = len(shape) - 2
    st = (strides,) * n if isinstance(strides, int) else strides
    y = nnx.jit(lambda m, a: m(a))(conv, jnp.ones(shape))
    assert y.shape == (shape[0], *[-(-s // t) for s, t in zip(shape[1:-1], st)], 2)
    assert bool(jnp.isfinite(y).all())


def test_dtypes():
    conv = Conv(3, 4, 3, padding_mode="learned", rngs=nnx.Rngs(0))
    assert conv.kernel[...].dtype == jnp.float32
    assert conv.pad.kernel[...].dtype == jnp.float32
    assert conv(jnp.ones((1, 5, 5, 3), jnp.bfloat16)).dtype == jnp.bfloat16
    half = Conv(3, 4, 3, padding_mode="partial", dtype=jnp.float16, rngs=nnx.Rngs(0))
    assert half(jnp.ones((1, 5, 5, 3))).dtype == jnp.float16
    assert half.kernel[...].dtype == jnp.float32


@pytest.mark.parametrize(
    "kwargs,x_shape,exc,match",
    [
        (dict(padding_mode="mirror"), None, ValueError, "padding_mode"),
        (dict(padding="HALF"), None, ValueError, "padding"),
        (dict(feature_group_count=2), None, ValueError, "divisible"),
        (dict(kernel_size=(3, 3, 3, 3)), None, ValueError, "1 to 3 spatial"),
        (dict(padding_kwargs={"depth": 3}), None, ValueError, "padding_kwargs"),
        (dict(padding_mode="learned", padding_kwargs={"mixing": "x"}), None, ValueError, "mixing"),
        ({}, (1, 5, 5, 2), ValueError, "3 features"),
        ({}, (1, 5, 3), ValueError, "spatial dims"),
        ({}, "int", TypeError, "floating"),
    ],
)
def test_errors(kwargs, x_shape, exc, match):
    kwargs = {"kernel_size": 3, **kwargs}
    with pytest.raises(exc, match=match):
        conv = Conv(3, 4, rngs=nnx.Rngs(0), **kwargs)
        if x_shape == "int":
            conv(jnp.ones((1, 5, 5, 3), jnp.int32))
        else:
            conv(jnp.ones(x_shape))


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular", "learned"])
def test_deconv_conv_pads_through_the_conv_path(mode):
    """DeconvConv(padding_mode=m) == a VALID DeconvConv on x padded by mode (k // 2 per side)."""
    from convjax.nnx import DeconvConv, pop_padding_losses
    from convjax.ops import pad, padding_loss

    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 7, 8, 4)), jnp.float32)
    kw = dict(strides=2, block=4, num_iters=5, rngs=nnx.Rngs(0))
    layer = DeconvConv(4, 5, 3, padding_mode=mode, **kw)
    kw["rngs"] = nnx.Rngs(0)
    valid = DeconvConv(4, 5, 3, padding="VALID", **kw)
    np.testing.assert_array_equal(layer.kernel[...], valid.kernel[...])
    pairs = ((1, 1), (1, 1))
    if mode == "learned":
        rng = np.random.default_rng(4)
        params = {
            "kernel": jnp.asarray(rng.normal(size=layer.pad.kernel.shape), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=layer.pad.bias.shape), jnp.float32),
        }
        layer.pad.kernel[...], layer.pad.bias[...] = params["kernel"], params["bias"]
        xp = learned_pad(params, x, pairs)
    else:
        xp = pad(x, pairs, mode)
    call = nnx.jit(lambda m, a: (m(a), pop_padding_losses(m)))
    (y, loss), (want, _) = call(layer, x), call(valid, xp)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.deconv[...], valid.deconv[...], rtol=1e-5, atol=1e-6)
    expected_loss = padding_loss(params, x) if mode == "learned" else 0.0
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)


def test_deconv_conv_rejects_partial_padding_with_the_reason():
    from convjax.nnx import DeconvConv

    with pytest.raises(ValueError, match="padding_mode='partial'.*patch mean"):
        DeconvConv(4, 4, 3, padding_mode="partial", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="padding_kwargs"):
        DeconvConv(4, 4, 3, padding_kwargs={"depth": 1}, rngs=nnx.Rngs(0))

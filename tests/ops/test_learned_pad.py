"""ops.learned_pad: NumPy float64 reference, exact baselines, learning, separation, errors."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from convjax.ops import (
    init_padding_params,
    learned_pad,
    learned_pad_and_loss,
    padding_loss,
)
from tests.helpers import jit_variants

# ---------------------------------------------------------------------------------------------
# Independent float64 reference. Each side is described by its inward direction and its
# along-edge direction in original coordinates (a proper rotation of the top side's frame:
# top = inward +row / along +col).
FRAMES = {
    1: {(0, False): ((1,), None), (0, True): ((-1,), None)},
    2: {
        (0, False): ((1, 0), (0, 1)),
        (0, True): ((-1, 0), (0, -1)),
        (1, False): ((0, 1), (-1, 0)),
        (1, True): ((0, -1), (1, 0)),
    },
}


def _tap(params, side):
    k = np.asarray(params["kernel"], np.float64)
    b = np.asarray(params["bias"], np.float64)
    s = 0 if k.shape[0] == 1 else side
    return k[s], b[s]


def _predict_ref(arr, point, inward, along, kernel, bias, nctx):
    """Predict pixel `point` (may be outside arr) from nctx lines inward of it."""
    shape = arr.shape[1:-1]
    full = kernel.ndim == (2 if along is None else 3) + 1
    width = 1 if along is None else kernel.shape[1]
    c = (width - 1) // 2
    out = np.broadcast_to(bias, (arr.shape[0], bias.shape[0])).copy()
    for k in range(nctx):
        for o in range(width):
            q = [p + (k + 1) * i for p, i in zip(point, inward)]
            if along is not None:
                q = [qq + (o - c) * a for qq, a in zip(q, along)]
                q = [min(max(qq, 0), s - 1) for qq, s in zip(q, shape)]  # replicate along edge
            v = arr[(slice(None), *q, slice(None))]  # (N, C)
            w = kernel[k] if along is None else kernel[k, o]
            out += v @ w if full else v * w
    return out


def ref_loss(params, x):
    x = np.asarray(x, np.float64)
    n = x.ndim - 2
    depth = np.asarray(params["kernel"]).shape[1]
    sq, count = 0.0, 0
    for (d, high), (inward, along) in FRAMES[n].items():
        size = x.shape[1 + d]
        nctx = min(depth, size - 1)
        if nctx < 1:
            continue
        kernel, bias = _tap(params, 2 * d + int(high))
        for point in itertools.product(*[range(s) for s in x.shape[1:-1]]):
            if point[d] != (size - 1 if high else 0):
                continue
            err = (
                _predict_ref(x, point, inward, along, kernel, bias, nctx)
                - x[(slice(None), *point, slice(None))]
            )
            sq += (err**2).sum()
            count += err.size
    return sq / count


def ref_pad(params, x, pairs):
    arr = np.asarray(x, np.float64)
    n = arr.ndim - 2
    depth = np.asarray(params["kernel"]).shape[1]
    for d in range(n):
        parts = {}
        for high, amount in ((False, pairs[d][0]), (True, pairs[d][1])):
            # both sides of a dim are predicted from the map before that dim is padded
            side = arr
            inward, along = FRAMES[n][(d, high)]
            kernel, bias = _tap(params, 2 * d + int(high))
            for _ in range(amount):
                size = side.shape[1 + d]
                nctx = min(depth, size)
                new_shape = list(side.shape)
                new_shape[1 + d] = 1
                line = np.zeros(new_shape)
                other = [range(s) if i != d else [0] for i, s in enumerate(side.shape[1:-1])]
                for idx in itertools.product(*other):
                    point = list(idx)
                    point[d] = size if high else -1
                    line[(slice(None), *idx, slice(None))] = _predict_ref(
                        side, point, inward, along, kernel, bias, nctx
                    )
                side = np.concatenate([side, line] if high else [line, side], axis=1 + d)
            parts[high] = side
        lo, hi = pairs[d]
        arr = np.concatenate(
            [np.take(parts[False], range(lo), axis=1 + d), parts[True]], axis=1 + d
        )
    return arr


def _freeze(pad):
    return (
        pad if isinstance(pad, int) else tuple(p if isinstance(p, int) else tuple(p) for p in pad)
    )


_pad_jit = jax.jit(learned_pad, static_argnums=2)
_loss_jit = jax.jit(padding_loss)


def jpad(params, x, pad):
    """learned_pad under one jit (one compile beats many eager per-op compiles on CPU)."""
    return _pad_jit(params, jnp.asarray(x), _freeze(pad))


def random_params(rng, c, n, depth=2, width=3, mixing="depthwise", shared=True):
    p = init_padding_params(c, n, depth=depth, width=width, mixing=mixing, shared=shared)
    return {k: jnp.asarray(rng.normal(size=v.shape), jnp.float32) * 0.5 for k, v in p.items()}


# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape,pairs,depth,width,mixing,shared",
    [
        ((2, 6, 2), ((2, 3),), 2, 3, "depthwise", True),
        ((1, 5, 2), ((1, 0),), 3, 3, "full", False),
        ((2, 5, 6, 2), ((1, 2), (3, 1)), 2, 3, "depthwise", True),
        ((1, 4, 5, 2), ((2, 0), (0, 2)), 2, 3, "full", False),
        ((1, 3, 4, 2), ((2, 2), (1, 1)), 3, 2, "depthwise", False),  # depth > small size
    ],
)
def test_matches_float64_reference(shape, pairs, depth, width, mixing, shared):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    n = len(shape) - 2
    params = random_params(rng, shape[-1], n, depth, width, mixing, shared)
    out = jpad(params, x, pairs)
    np.testing.assert_allclose(np.asarray(out), ref_pad(params, x, pairs), rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(
        float(_loss_jit(params, jnp.asarray(x))), ref_loss(params, x), rtol=1e-5
    )


@pytest.mark.parametrize(
    "shape,pad,mixing,shared",
    [
        ((2, 5, 3), ((2, 3),), "full", False),
        ((2, 4, 6, 3), ((1, 3), (2, 0)), "depthwise", True),
        ((2, 4, 6, 3), 2, "full", False),
        ((1, 3, 4, 5, 2), (1, 2, 1), "depthwise", False),
    ],
)
def test_replicate_init_equals_edge_padding(shape, pad, mixing, shared):
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    n = len(shape) - 2
    per_dim = [pad] * n if isinstance(pad, int) else pad
    pairs = [(p, p) if isinstance(p, int) else p for p in per_dim]
    params = init_padding_params(shape[-1], n, mixing=mixing, shared=shared)
    expected = np.pad(x, [(0, 0), *pairs, (0, 0)], mode="edge")
    np.testing.assert_array_equal(np.asarray(jpad(params, x, pad)), expected)
    zero = init_padding_params(shape[-1], n, mixing=mixing, shared=shared, init="zero")
    expected = np.pad(x, [(0, 0), *pairs, (0, 0)])
    np.testing.assert_array_equal(np.asarray(jpad(zero, x, pad)), expected)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_linear_filter_extends_affine_maps_exactly_incl_corners(n):
    rng = np.random.default_rng(2)
    sizes = (6, 5, 4)[:n]
    pairs = ((2, 3), (3, 1), (1, 2))[:n]
    grids = np.meshgrid(*[np.arange(-3, s + 3) for s in sizes], indexing="ij")
    slopes = rng.normal(size=(n, 2))
    f = np.stack([sum(slopes[i, c] * g for i, g in enumerate(grids)) + c for c in range(2)], -1)
    f = f[None].astype(np.float32)
    inner = f[(slice(None), *[slice(3, 3 + s) for s in sizes])]
    expected = f[(slice(None), *[slice(3 - lo, 3 + s + hi) for s, (lo, hi) in zip(sizes, pairs)])]
    params = init_padding_params(2, n, init="linear")
    np.testing.assert_allclose(np.asarray(jpad(params, inner, pairs)), expected, atol=1e-4)
    assert float(_loss_jit(params, jnp.asarray(inner))) < 1e-9


def _fit(make_batch, params, steps=300, lr=0.05):
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps))

    def step(carry, key):
        p, s = carry
        loss, g = jax.value_and_grad(padding_loss)(p, make_batch(key))
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), loss

    keys = jax.random.split(jax.random.key(0), steps)
    (params, _), losses = jax.jit(lambda p: jax.lax.scan(step, (p, opt.init(p)), keys))(params)
    return params, losses


def test_learns_linear_extrapolation_of_planes_and_sinusoids():
    """Trained only on its self-supervised loss, the module extends signals with a known
    linear extrapolation (2-D planes; 1-D sinusoids of one frequency) almost exactly."""
    size, pad = 8, 2
    ii, jj = jnp.meshgrid(jnp.arange(-pad, size + pad), jnp.arange(-pad, size + pad), indexing="ij")

    def planes(key, batch=16):
        a = jax.random.normal(key, (batch, 3, 1, 1, 2))
        return a[:, 0] * ii[None, ..., None] / 4 + a[:, 1] * jj[None, ..., None] / 4 + a[:, 2]

    def inner2(full):
        return full[:, pad:-pad, pad:-pad]

    params, losses = _fit(lambda k: inner2(planes(k)), init_padding_params(2, 2))
    assert losses[-1] < 1e-2 * losses[0]
    truth = planes(jax.random.key(123))
    err_learned = jnp.mean((learned_pad(params, inner2(truth), pad) - truth) ** 2)
    err_zero = jnp.mean((jnp.pad(inner2(truth), ((0, 0), (2, 2), (2, 2), (0, 0))) - truth) ** 2)
    err_edge = jnp.mean(
        (jnp.pad(inner2(truth), ((0, 0), (2, 2), (2, 2), (0, 0)), "edge") - truth) ** 2
    )
    assert err_learned < 1e-3 * err_zero and err_learned < 2e-2 * err_edge

    t = jnp.arange(-pad, 16 + pad)
    omega = 0.7

    def waves(key, batch=16):
        k1, k2 = jax.random.split(key)
        amp = jax.random.uniform(k1, (batch, 1, 1), minval=0.5, maxval=2.0)
        phase = jax.random.uniform(k2, (batch, 1, 1), maxval=2 * np.pi)
        return amp * jnp.sin(omega * t[None, :, None] + phase)

    params, _ = _fit(lambda k: waves(k)[:, pad:-pad], init_padding_params(1, 1), steps=400)
    # the exact recurrence is s[i-1] = 2 cos(omega) s[i] - s[i+1]
    np.testing.assert_allclose(
        np.asarray(params["kernel"])[0, :, 0], [2 * np.cos(omega), -1.0], atol=2e-2
    )
    truth = waves(jax.random.key(7))
    err_learned = jnp.mean((learned_pad(params, truth[:, pad:-pad], pad) - truth) ** 2)
    err_zero = jnp.mean((jnp.pad(truth[:, pad:-pad], ((0, 0), (2, 2), (0, 0))) - truth) ** 2)
    assert err_learned < 1e-3 * err_zero


def test_separation_by_construction():
    """grad(task + padding loss) splits exactly: task -> x only, padding loss -> params only."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(2, 5, 6, 3)), jnp.float32)
    params = random_params(rng, 3, 2, mixing="full", shared=False)
    target = jnp.asarray(rng.normal(size=(2, 7, 8, 3)), jnp.float32)

    def losses(p, a):
        padded, pad_loss = learned_pad_and_loss(p, a, 1)
        return jnp.sum((padded - target) ** 2), pad_loss, jnp.sum(padded[:, 0])

    @jax.jit
    def all_grads(p, a):
        g = lambda i: jax.grad(lambda p, a: losses(p, a)[i], argnums=(0, 1))(p, a)
        total = jax.grad(lambda p, a: losses(p, a)[0] + losses(p, a)[1], argnums=(0, 1))(p, a)
        return g(0), g(1), g(2), total

    (task_p, task_x), (loc_p, loc_x), (_, border_x), (tot_p, tot_x) = all_grads(params, x)
    for leaf in jax.tree.leaves(task_p):
        np.testing.assert_array_equal(np.asarray(leaf), 0.0)
    np.testing.assert_array_equal(np.asarray(loc_x), 0.0)
    assert all(float(jnp.abs(leaf).sum()) > 0 for leaf in jax.tree.leaves(loc_p))
    # one backward pass of the sum gives both, exactly
    np.testing.assert_array_equal(np.asarray(tot_x), np.asarray(task_x))
    for t, lp in zip(jax.tree.leaves(tot_p), jax.tree.leaves(loc_p)):
        np.testing.assert_array_equal(np.asarray(t), np.asarray(lp))
    # the task gradient reaches the input through the padded border line (a line not in x)
    assert float(jnp.abs(border_x[:, :2]).sum()) > 0


def test_gradients_numerically():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(1, 3, 4, 2)), jnp.float32)
    params = random_params(rng, 2, 2, mixing="full", shared=False)
    f = jax.jit(lambda p, a: (learned_pad(p, a, ((2, 1), (0, 1))), padding_loss(p, a)))
    check_grads(f, (params, x), 1, modes=("rev",), eps=1e-2, atol=3e-2, rtol=3e-2)


@jit_variants
def test_jit_nojit_and_pmap(transform, num_devices):
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(num_devices, 5, 4, 2)), jnp.float32)
    params = random_params(rng, 2, 2)
    out, loss = transform(lambda a: learned_pad_and_loss(params, a, 2))(x)

    def per_device(a):
        padded, pad_loss = learned_pad_and_loss(params, a, 2)
        return padded, jax.lax.pmean(pad_loss, "batch")

    p_out, p_loss = jax.pmap(per_device, axis_name="batch")(x[:, None])
    np.testing.assert_allclose(np.asarray(out), np.asarray(p_out[:, 0]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(p_loss), float(loss), rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(out[:1]), ref_pad(params, np.asarray(x[:1]), ((2, 2), (2, 2))), atol=1e-4
    )


def test_dtypes_and_large_inputs():
    params = init_padding_params(2, 2)
    x = jnp.full((1, 4, 4, 2), 3.0, jnp.bfloat16)
    f = jax.jit(learned_pad_and_loss, static_argnums=2)
    out, loss = f(params, x, 1)
    assert out.dtype == jnp.bfloat16 and loss.dtype == jnp.float32
    big = jnp.asarray(np.random.default_rng(6).normal(size=(1, 5, 5, 2)) * 1e15, jnp.float32)
    out, loss = f(params, big, 3)
    assert bool(jnp.isfinite(out).all()) and bool(jnp.isfinite(loss))


def test_single_line_maps():
    params = init_padding_params(2, 2)
    x = jnp.ones((1, 1, 1, 2))
    assert float(padding_loss(params, x)) == 0.0
    np.testing.assert_array_equal(np.asarray(learned_pad(params, x, 2)), np.ones((1, 5, 5, 2)))


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (
            lambda: learned_pad(init_padding_params(2, 2), jnp.ones((1, 4, 4, 2), jnp.int32), 1),
            TypeError,
            "floating",
        ),
        (
            lambda: learned_pad(init_padding_params(2, 2), jnp.ones((4, 4)), 1),
            ValueError,
            "spatial dims",
        ),
        (
            lambda: learned_pad(init_padding_params(3, 2), jnp.ones((1, 4, 4, 2)), 1),
            ValueError,
            "do not fit",
        ),
        (
            lambda: learned_pad(init_padding_params(2, 1), jnp.ones((1, 4, 4, 2)), 1),
            ValueError,
            "do not fit",
        ),
        (
            lambda: learned_pad({"w": jnp.ones(3)}, jnp.ones((1, 4, 4, 2)), 1),
            TypeError,
            "'kernel' and 'bias'",
        ),
        (
            lambda: learned_pad(init_padding_params(2, 2), jnp.ones((1, 4, 4, 2)), -1),
            ValueError,
            "non-negative",
        ),
        (
            lambda: padding_loss(init_padding_params(2, 2), jnp.ones((1, 4, 2))),
            ValueError,
            "do not fit",
        ),
        (lambda: init_padding_params(2, 2, mixing="dense"), ValueError, "`mixing` must be one of"),
        (lambda: init_padding_params(2, 4), ValueError, "`num_spatial_dims`"),
        (lambda: init_padding_params(2, 2, depth=0), ValueError, "`depth` must be > 0"),
        (lambda: init_padding_params(2, 2, init="linear", depth=1), ValueError, "depth"),
        (lambda: init_padding_params(2, 2, init="gauss"), ValueError, "`init` must be one of"),
    ],
)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()

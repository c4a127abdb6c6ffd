"""Tests for convjax.ops.soft_pool against an independent NumPy float64 reference."""

from __future__ import annotations

import contextlib
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from convjax.ops import soft_pool, soft_pool_output_shape
from tests.helpers import jit_variants, shard_for_pmap

# ------------------------------------------------------------------------------------------------
# Slow reference: explicit loops over windows in float64, padding resolved independently.
# ------------------------------------------------------------------------------------------------


def _ref_pads(padding, size, k, s):
    if padding == "VALID":
        return [(0, 0)] * len(size)
    if padding == "SAME":
        out = []
        for n, kk, ss in zip(size, k, s):
            total = max((-(-n // ss) - 1) * ss + kk - n, 0)
            out.append((total // 2, total - total // 2))
        return out
    return [tuple(p) for p in padding]


def _windows(shape, k, s, padding):
    """Yield (output index, tuple of index lists of the real elements in that window)."""
    size = shape[1:-1]
    pads = _ref_pads(padding, size, k, s)
    outs = [(n + lo + hi - kk) // ss + 1 for n, kk, ss, (lo, hi) in zip(size, k, s, pads)]
    for idx in itertools.product(*(range(o) for o in outs)):
        axes = []
        for j, kk, ss, (lo, _), n in zip(idx, k, s, pads, size):
            start = j * ss - lo
            axes.append([p for p in range(start, start + kk) if 0 <= p < n])
        yield idx, axes, outs


def ref_soft_pool(x, k, s, padding="VALID"):
    x = np.asarray(x, np.float64)
    out = None
    for idx, axes, outs in _windows(x.shape, k, s, padding):
        if out is None:
            out = np.zeros((x.shape[0], *outs, x.shape[-1]))
        for b in range(x.shape[0]):
            for c in range(x.shape[-1]):
                vals = np.array([x[(b, *p, c)] for p in itertools.product(*axes)])
                w = np.exp(vals - vals.max())
                w /= w.sum()
                out[(b, *idx, c)] = np.sum(w * vals)
    return out


def ref_soft_pool_grad(x, g, k, s, padding="VALID"):
    """Sum over windows of g_W * w_i (1 + a_i - out_W): the paper's exact gradient."""
    x = np.asarray(x, np.float64)
    g = np.asarray(g, np.float64)
    gx = np.zeros_like(x)
    for idx, axes, _ in _windows(x.shape, k, s, padding):
        pos = list(itertools.product(*axes))
        for b in range(x.shape[0]):
            for c in range(x.shape[-1]):
                vals = np.array([x[(b, *p, c)] for p in pos])
                w = np.exp(vals - vals.max())
                w /= w.sum()
                out = np.sum(w * vals)
                for p, wi, ai in zip(pos, w, vals):
                    gx[(b, *p, c)] += g[(b, *idx, c)] * wi * (1.0 + ai - out)
    return gx


def pool_and_grad(x, k, s, padding):
    """Jitted ``(soft_pool(x), d sum(soft_pool(x)) / dx)`` (one compile instead of eager ops)."""

    def run(a):
        y, vjp = jax.vjp(lambda b: soft_pool(b, k, s, padding), a)
        return y, vjp(jnp.ones_like(y))[0]

    return jax.jit(run)(x)


@contextlib.contextmanager
def x64():
    """Enable float64 for one block (works on jax versions with and without jax.enable_x64)."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


# (input shape, window, strides, padding): block and general paths, 1-D / 2-D / 3-D,
# overlap (k > s), gaps (k < s), VALID remainders, SAME and explicit asymmetric padding.
CASES = [
    ((2, 9, 3), (3,), (3,), "VALID"),
    ((2, 10, 2), (3,), (2,), "SAME"),
    ((2, 7, 6, 3), (2, 2), (2, 2), "VALID"),
    ((2, 7, 5, 2), (2, 2), (2, 2), "SAME"),
    ((1, 7, 6, 2), (3, 3), (2, 2), "SAME"),
    ((1, 7, 6, 2), (3, 2), (1, 2), ((1, 2), (0, 1))),
    ((1, 8, 7, 2), (2, 2), (3, 3), "VALID"),
    ((1, 5, 4, 6, 2), (2, 2, 2), (2, 2, 2), "SAME"),
    ((1, 5, 4, 5, 1), (3, 2, 2), (2, 1, 2), "VALID"),
]
IDS = [f"{len(c[1])}d-k{c[1]}-s{c[2]}-{c[3]}" for c in CASES]


@pytest.mark.parametrize("shape,k,s,padding", CASES, ids=IDS)
def test_forward_and_gradient_match_reference(shape, k, s, padding):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=shape) * 3).astype(np.float32)
    y, vjp = jax.vjp(lambda a: soft_pool(a, k, s, padding), jnp.asarray(x))
    expected = ref_soft_pool(x, k, s, padding)
    assert y.shape == expected.shape == soft_pool_output_shape(shape, k, s, padding)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-5)
    g = rng.normal(size=y.shape).astype(np.float32)
    (gx,) = vjp(jnp.asarray(g))
    np.testing.assert_allclose(
        np.asarray(gx), ref_soft_pool_grad(x, g, k, s, padding), rtol=1e-4, atol=1e-5
    )


def test_large_block_window_uses_reshape_path_and_matches_reference():
    # 9x9 = 81 offsets > the unrolling limit: the primal path reduces a reshaped view.
    x = np.random.default_rng(1).normal(size=(1, 19, 18, 2)).astype(np.float32) * 4
    y, vjp = jax.vjp(lambda a: soft_pool(a, (9, 9), (9, 9), "SAME"), jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(y), ref_soft_pool(x, (9, 9), (9, 9), "SAME"), atol=1e-5)
    g = np.ones(y.shape, np.float32)
    np.testing.assert_allclose(
        np.asarray(vjp(jnp.asarray(g))[0]),
        ref_soft_pool_grad(x, g, (9, 9), (9, 9), "SAME"),
        rtol=1e-4,
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "k,s,padding",
    [((2, 2), (2, 2), "SAME"), ((3, 2), (2, 1), ((1, 0), (1, 1)))],
    ids=["block-same", "overlap-explicit"],
)
def test_check_grads_orders_1_and_2(k, s, padding):
    with x64():
        x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 5, 5, 2)), jnp.float64)
        check_grads(lambda a: soft_pool(a, k, s, padding), (x,), order=2, modes=["rev"])


def test_gradient_dtype_and_fp16_matches_fp32():
    x = np.random.default_rng(3).normal(size=(2, 6, 6, 3)).astype(np.float32) * 3
    loss = lambda a: jnp.sum(soft_pool(a, (2, 2), (2, 2)).astype(jnp.float32) ** 2)
    g32 = jax.grad(loss)(jnp.asarray(x))
    g16 = jax.grad(loss)(jnp.asarray(x, jnp.float16))
    assert g16.dtype == jnp.float16
    np.testing.assert_allclose(np.asarray(g16, np.float32), np.asarray(g32), rtol=2e-2, atol=2e-2)


# ------------------------------------------------------------------------------------------------
# Overflow: huge inputs stay finite and exact.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype,scale,rtol",
    [(jnp.float32, 1e4, 1e-6), (jnp.float16, 6e4, 1e-3), (jnp.bfloat16, 1e30, 8e-3)],
    ids=["fp32-1e4", "fp16-6e4", "bf16-1e30"],
)
def test_no_overflow_and_low_precision_agrees_with_fp32(dtype, scale, rtol):
    rng = np.random.default_rng(4)
    # Windows mixing huge positive and negative values and near-ties at the top.
    x = rng.uniform(-1.0, 1.0, size=(2, 6, 6, 2)) * scale
    x[:, ::2, ::2, :] = scale * 0.99
    x[:, 1::2, ::2, :] = scale * 0.99 - np.abs(x[:, 1::2, ::2, :]) * 1e-4
    xl = jnp.asarray(x, dtype)
    x32 = np.asarray(xl, np.float32)  # the exact same inputs, rounded to `dtype`
    for k, s, padding in [((2, 2), (2, 2), "VALID"), ((3, 3), (2, 2), "SAME")]:
        y, gx = pool_and_grad(xl, k, s, padding)
        assert y.dtype == dtype and gx.dtype == dtype
        assert np.all(np.isfinite(np.asarray(y, np.float32)))
        assert np.all(np.isfinite(np.asarray(gx, np.float32)))
        expected = ref_soft_pool(x32, k, s, padding)
        np.testing.assert_allclose(np.asarray(y, np.float64), expected, rtol=rtol, atol=0)
        y32 = soft_pool(jnp.asarray(x32), k, s, padding)
        np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(y32), rtol=rtol, atol=0)


def test_extreme_fp32_range_is_finite():
    big = float(np.finfo(np.float32).max) / 2
    x = jnp.asarray([[[big], [-big], [-big], [-big]]], jnp.float32)  # (1, 4, 1)
    y, vjp = jax.vjp(lambda a: soft_pool(a, (2,), (2,)), x)
    (gx,) = vjp(jnp.ones_like(y))
    np.testing.assert_array_equal(np.asarray(y)[0, :, 0], [big, -big])
    assert np.all(np.isfinite(np.asarray(gx)))
    # d out / d a = w (1 + a - out): the winner gets weight 1, the loser exactly 0.
    np.testing.assert_array_equal(np.asarray(gx)[0, :, 0], [1.0, 0.0, 0.5, 0.5])


# ------------------------------------------------------------------------------------------------
# Invariances and padding semantics.
# ------------------------------------------------------------------------------------------------


def test_per_window_shift_constant_window_and_bounds():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
    y = np.asarray(soft_pool(jnp.asarray(x), (2, 2), (2, 2)))
    # A different constant per window shifts each output by exactly that constant.
    c = rng.uniform(-50, 50, size=(2, 4, 4, 3)).astype(np.float32)
    shifted = x + np.repeat(np.repeat(c, 2, axis=1), 2, axis=2)
    y_shift = np.asarray(soft_pool(jnp.asarray(shifted), (2, 2), (2, 2)))
    np.testing.assert_allclose(y_shift, y + c, atol=1e-4)
    # Constant windows return the constant.
    const = np.repeat(np.repeat(c, 2, axis=1), 2, axis=2)
    np.testing.assert_allclose(np.asarray(soft_pool(jnp.asarray(const), (2, 2), (2, 2))), c)
    # The result lies between the window min and max (and above the mean: weights favour max).
    for k, s, padding in [((2, 2), (2, 2), "VALID"), ((3, 3), (2, 2), "SAME")]:
        out = np.asarray(soft_pool(jnp.asarray(x), k, s, padding))
        hi = np.asarray(
            jax.lax.reduce_window(
                x,
                -np.inf,
                jax.lax.max,
                (1, *k, 1),
                (1, *s, 1),
                [(0, 0), *_ref_pads(padding, (8, 8), k, s), (0, 0)],
            )
        )
        lo = -np.asarray(
            jax.lax.reduce_window(
                -x,
                -np.inf,
                jax.lax.max,
                (1, *k, 1),
                (1, *s, 1),
                [(0, 0), *_ref_pads(padding, (8, 8), k, s), (0, 0)],
            )
        )
        assert np.all(out <= hi + 1e-6) and np.all(out >= lo - 1e-6)


def test_padded_positions_get_no_weight():
    # If padded zeros took part, windows at the border of an all-negative input would be
    # pulled towards 0 (and get gradient through them); they must return the constant.
    x = jnp.full((1, 5, 5, 1), -7.0)
    for k, s, padding in [
        ((2, 2), (2, 2), "SAME"),
        ((3, 3), (1, 1), "SAME"),
        ((3, 3), (2, 2), ((2, 1), (1, 2))),
    ]:
        y, gx = pool_and_grad(x, k, s, padding)
        np.testing.assert_allclose(np.asarray(y), -7.0, rtol=1e-6)
        # Each window's weights sum to 1, so total gradient = number of windows.
        np.testing.assert_allclose(float(gx.sum()), y.size, rtol=1e-5)


def test_default_strides_are_one_like_flax_max_pool():
    x = jnp.asarray(np.random.default_rng(6).normal(size=(1, 6, 5, 2)), jnp.float32)
    assert soft_pool(x, (2, 2)).shape == (1, 5, 4, 2)
    np.testing.assert_allclose(
        np.asarray(soft_pool(x, (2, 2))), np.asarray(soft_pool(x, (2, 2), (1, 1))), atol=0
    )
    assert soft_pool(x, 2, 2).shape == (1, 3, 2, 2)  # ints broadcast to every spatial dim


# ------------------------------------------------------------------------------------------------
# Transformations.
# ------------------------------------------------------------------------------------------------


@jit_variants
def test_jit_equals_eager_reference(transform):
    x = np.random.default_rng(7).normal(size=(2, 6, 6, 2)).astype(np.float32)
    f = transform(lambda a: soft_pool(a, (3, 3), (2, 2), "SAME"))
    np.testing.assert_allclose(
        np.asarray(f(jnp.asarray(x))), ref_soft_pool(x, (3, 3), (2, 2), "SAME"), atol=1e-5
    )


def test_pmap_over_devices_equals_single_call(num_devices):
    x = np.random.default_rng(8).normal(size=(2 * num_devices, 6, 6, 2)).astype(np.float32)

    def step(a):
        y, vjp = jax.vjp(lambda b: soft_pool(b, (2, 2), (2, 2)), a)
        return y, vjp(jnp.ones_like(y))[0]

    y1, g1 = jax.jit(step)(jnp.asarray(x))
    yp, gp = jax.pmap(step)(jnp.asarray(shard_for_pmap(x, num_devices)))
    np.testing.assert_allclose(np.asarray(yp).reshape(y1.shape), np.asarray(y1), atol=1e-6)
    np.testing.assert_allclose(np.asarray(gp).reshape(g1.shape), np.asarray(g1), atol=1e-6)


@pytest.mark.parametrize("k,s", [((2, 2), (2, 2)), ((3, 3), (2, 2))], ids=["block", "overlap"])
def test_vmap_over_extra_batch_axis(k, s):
    x = jnp.asarray(np.random.default_rng(9).normal(size=(3, 2, 5, 5, 2)), jnp.float32)
    f = lambda a: soft_pool(a, k, s, "SAME")
    yv = jax.vmap(f)(x)
    np.testing.assert_allclose(np.asarray(yv), np.stack([np.asarray(f(a)) for a in x]), atol=1e-6)
    gv = jax.vmap(jax.grad(lambda a: jnp.sum(f(a) ** 2)))(x)
    gl = np.stack([np.asarray(jax.grad(lambda a: jnp.sum(f(a) ** 2))(a)) for a in x])
    np.testing.assert_allclose(np.asarray(gv), gl, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Errors at trace time.
# ------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    x = jnp.zeros((1, 4, 4, 2))
    with pytest.raises(TypeError, match="`x` must have a floating dtype"):
        soft_pool(jnp.zeros((1, 4, 4, 2), jnp.int32), (2, 2))
    with pytest.raises(ValueError, match="`x` must have shape"):
        soft_pool(jnp.zeros((4, 2)), 2)
    with pytest.raises(ValueError, match="`x` must have shape"):
        soft_pool(jnp.zeros((1, 2, 2, 2, 2, 2)), 2)
    # A window with the wrong number of dims: the message blames `window_shape`, not `x`.
    with pytest.raises(
        ValueError,
        match=r"^`window_shape` must have length 2 \(one entry per spatial dim of `x` with "
        r"shape \(1, 4, 4, 2\)\), got \(2, 2, 2\) \(length 3\)\.$",
    ):
        soft_pool(x, (2, 2, 2))  # 3 window dims for a 2-D input
    with pytest.raises(ValueError, match=r"^`window_shape` must have length 1 .*got \(2, 2\)"):
        soft_pool(jnp.zeros((1, 8, 3)), [2, 2])  # 2 window dims for a 1-D input
    with pytest.raises(ValueError, match="`window_shape`.*larger than the padded input"):
        soft_pool(x, (5, 2))
    with pytest.raises(ValueError, match="`window_shape` entries must be >= 1"):
        soft_pool(x, (0, 2))
    with pytest.raises(ValueError, match="`strides`"):
        soft_pool(x, (2, 2), (2, 2, 2))
    with pytest.raises(ValueError, match="`padding` must be"):
        soft_pool(x, (2, 2), padding="FULL")
    with pytest.raises(ValueError, match="only of padding"):
        soft_pool(x, (2, 2), (2, 2), ((2, 0), (0, 0)))
    with pytest.raises(ValueError, match="`window_shape` must have 1 to 3 entries"):
        soft_pool(x, (1, 1, 1, 1))
    with pytest.raises(ValueError, match="`x` must have shape"):
        jax.jit(lambda a: soft_pool(a, 2))(jnp.zeros((4,)))


# ------------------------------------------------------------------------------------------------
# Random configurations (hypothesis): shapes, windows, strides, paddings, incl. k < s and k > s.
# ------------------------------------------------------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@st.composite
def pool_configs(draw):
    n = draw(st.integers(1, 2))
    size = tuple(draw(st.integers(1, 7)) for _ in range(n))
    window = tuple(draw(st.integers(1, s + 1)) for s in size)
    strides = tuple(draw(st.integers(1, 3)) for _ in range(n))
    kind = draw(st.sampled_from(["VALID", "SAME", "explicit"]))
    if kind == "explicit":
        padding = tuple((draw(st.integers(0, k - 1)), draw(st.integers(0, k - 1))) for k in window)
    else:
        padding = kind
    return (1, *size, 2), window, strides, padding


@hypothesis.settings(max_examples=15, deadline=None, derandomize=True)
@hypothesis.given(pool_configs())
def test_random_configurations_match_reference(config):
    shape, k, s, padding = config
    try:
        expected_shape = soft_pool_output_shape(shape, k, s, padding)
    except ValueError:
        hypothesis.assume(False)  # window larger than the padded input, or an all-padding window
    x = np.random.default_rng(len(str(config))).normal(size=shape).astype(np.float32) * 2
    y, gx = pool_and_grad(jnp.asarray(x), k, s, padding)
    assert y.shape == expected_shape
    np.testing.assert_allclose(np.asarray(y), ref_soft_pool(x, k, s, padding), atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(gx), ref_soft_pool_grad(x, np.ones(y.shape), k, s, padding), atol=1e-5
    )

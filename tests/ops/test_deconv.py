"""Network Deconvolution ops against independent NumPy float64 references."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from convjax._checks import normalize_padding
from convjax.ops import deconv as dc
from tests.helpers import jit_variants, shard_for_pmap

# ---------------------------------------------------------------------------------------------
# NumPy float64 references (loops, written from the equations, not from the op)
# ---------------------------------------------------------------------------------------------


def np_isqrt_eig(a):
    w, v = np.linalg.eigh(a)
    return (v / np.sqrt(w)) @ v.T


def np_newton_schulz(a, num_iters):
    norm = np.sqrt((a * a).sum())
    y, z = a / norm, np.eye(len(a))
    for _ in range(num_iters):
        t = 0.5 * (3 * np.eye(len(a)) - z @ y)
        y, z = y @ t, t @ z
    return z / np.sqrt(norm)


def np_patches(x, window, strides, pads):
    """All conv patches: (N, *out, *window, C) by explicit loops over output positions."""
    x = np.asarray(x, np.float64)
    xp = np.pad(x, ((0, 0), *pads, (0, 0)))
    spatial = xp.shape[1:-1]
    out = [(s - k) // st + 1 for s, k, st in zip(spatial, window, strides)]
    res = np.zeros((x.shape[0], *out, *window, x.shape[-1]))
    for pos in itertools.product(*(range(o) for o in out)):
        for tap in itertools.product(*(range(k) for k in window)):
            idx = tuple(p * st + t for p, st, t in zip(pos, strides, tap))
            res[(slice(None), *pos, *tap)] = xp[(slice(None), *idx)]
    return res


def np_blocks(patches, n_spatial, b):
    """(N, *out, *window, C) -> list of (M, K*b) arrays, one per contiguous channel block."""
    c = patches.shape[-1]
    kk = int(np.prod(patches.shape[1 + n_spatial : -1]))
    flat = patches.reshape(-1, kk, c)
    return [flat[:, :, j * b : (j + 1) * b].reshape(flat.shape[0], kk * b) for j in range(c // b)]


def np_reference(x, kernel, bias, strides, pads, b, groups, eps, num_iters, sampling):
    """Stats from the sampled patches, then y = sum_blocks (X_j - mu_j) D_j W_j + bias."""
    n = x.ndim - 2
    window = kernel.shape[:n]
    kernel = np.asarray(kernel, np.float64)
    c_in, c_out = x.shape[-1], kernel.shape[-1]
    gi, go = c_in // groups, c_out // groups
    sampled = np_patches(x, window, [s * sampling for s in strides], pads)
    means, decs = [], []
    for rows in np_blocks(sampled, n, b):
        mu = rows.mean(0)
        cov = (rows - mu).T @ (rows - mu) / len(rows) + eps * np.eye(rows.shape[1])
        means.append(mu)
        decs.append(np_newton_schulz(cov, num_iters))
    full = np_patches(x, window, strides, pads)
    out_shape = full.shape[1 : 1 + n]
    y = np.zeros((x.shape[0] * int(np.prod(out_shape)), c_out)) + np.asarray(bias, np.float64)
    for j, rows in enumerate(np_blocks(full, n, b)):
        g = (j * b) // gi
        local = j * b - g * gi
        w = kernel[..., local : local + b, g * go : (g + 1) * go].reshape(-1, go)
        y[:, g * go : (g + 1) * go] += (rows - means[j]) @ decs[j] @ w
    return y.reshape(x.shape[0], *out_shape, c_out), np.stack(means), np.stack(decs)


_STATIC = (
    "strides",
    "padding",
    "block",
    "num_iters",
    "sampling_stride",
    "feature_group_count",
    "grouping",
)
conv = jax.jit(dc.deconv_conv, static_argnames=(*_STATIC, "eps", "axis_name"))
conv_eval = jax.jit(
    dc.deconv_conv_eval, static_argnames=("strides", "padding", "feature_group_count", "grouping")
)
dense = jax.jit(dc.deconv_dense, static_argnames=("block", "num_iters", "grouping"))


def rand(key, shape, scale=1.0):
    """Test data from NumPy (no per-shape JAX random compiles), float32."""
    return (scale * np.random.default_rng(key).standard_normal(shape)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Newton--Schulz
# ---------------------------------------------------------------------------------------------


def spd(n, eigenvalues, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return (q * np.asarray(eigenvalues)) @ q.T


# Eigenvalues in [0.5, 2] (n=8): normalised eigenvalues ~0.1..0.45. Tolerances per num_iters
# from the scalar recursion s <- s (3 - s)^2 / 4 (relative error of the smallest direction).
@pytest.mark.parametrize("num_iters,rtol", [(5, 0.1), (7, 2e-3), (10, 2e-5)])
def test_isqrt_matches_eigh_well_conditioned(num_iters, rtol):
    a = spd(8, np.linspace(0.5, 2.0, 8))
    got = np.asarray(dc.isqrt_newton_schulz(jnp.asarray(a, jnp.float32), num_iters), np.float64)
    want = np_isqrt_eig(a)
    assert np.abs(got - want).max() <= rtol * np.abs(want).max()
    # and exactly the float64 iteration for every count
    np.testing.assert_allclose(got, np_newton_schulz(a, num_iters), rtol=2e-5, atol=2e-5)


@jit_variants
def test_isqrt_batched(transform):
    a = np.stack([spd(5, np.linspace(1, 3, 5), s) for s in range(3)])
    got = transform(lambda m: dc.isqrt_newton_schulz(m, 12))(jnp.asarray(a, jnp.float32))
    want = np.stack([np_isqrt_eig(m) for m in a])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_isqrt_ill_conditioned_is_finite_and_monotone():
    """Eigenvalues of D A D follow s <- s (3 - s)^2 / 4: rise monotonically towards 1."""
    lam = np.logspace(-8, 0, 6)
    a = spd(6, lam, seed=1)
    s = lam / np.sqrt((lam**2).sum())
    prev = np.zeros(6)
    ds = jax.jit(lambda m: [dc.isqrt_newton_schulz(m, k) for k in range(1, 16)])(
        jnp.asarray(a, jnp.float32)
    )
    for d in ds:
        d = np.asarray(d, np.float64)
        assert np.isfinite(d).all()
        s = s * (3 - s) ** 2 / 4
        whitened = np.sort(np.linalg.eigvalsh(d @ a @ d))
        np.testing.assert_allclose(whitened, np.sort(s), rtol=0.05, atol=1e-5)
        assert (whitened >= prev - 1e-4).all() and (whitened <= 1 + 1e-4).all()
        prev = whitened
    g = jax.grad(lambda m: dc.isqrt_newton_schulz(m, 5).sum())(jnp.asarray(a, jnp.float32))
    assert jnp.isfinite(g).all()


def test_isqrt_grad_check():
    with jax.enable_x64(True):
        a = jnp.asarray(spd(4, [0.5, 1.0, 1.5, 2.0]))
        check_grads(jax.jit(lambda m: dc.isqrt_newton_schulz(m, 4)), (a,), order=1, modes=("rev",))


def test_isqrt_errors():
    with pytest.raises(ValueError, match="num_iters"):
        dc.isqrt_newton_schulz(jnp.eye(3), 0)
    with pytest.raises(ValueError, match=r"\(\.\.\., n, n\)"):
        dc.isqrt_newton_schulz(jnp.ones((3, 4)))
    with pytest.raises(TypeError, match="floating"):
        dc.isqrt_newton_schulz(jnp.eye(3, dtype=jnp.int32))


# ---------------------------------------------------------------------------------------------
# deconv_conv against the slow reference
# ---------------------------------------------------------------------------------------------

CASES = {
    # name: (x shape, kernel window, groups, c_out, strides, padding, block, expected b)
    "2d_same": ((2, 7, 7, 4), (3, 3), 1, 6, 1, "SAME", 64, 4),
    "2d_strided_valid_gcd": ((2, 9, 8, 6), (3, 3), 1, 4, 2, "VALID", 4, 2),
    "1x1": ((3, 6, 6, 8), (1, 1), 1, 5, 1, "SAME", 4, 4),
    "depthwise": ((2, 6, 6, 3), (3, 3), 3, 6, 1, "SAME", 64, 1),
    "grouped": ((2, 6, 5, 4), (3, 2), 2, 4, (1, 2), ((1, 0), (0, 1)), 64, 2),
    "1d": ((3, 11, 3), (3,), 1, 5, 1, "SAME", 64, 3),
    "3d": ((2, 4, 5, 4, 2), (3, 3, 3), 1, 3, 1, "SAME", 64, 2),
}


@pytest.mark.parametrize("name", list(CASES))
def test_deconv_conv_matches_slow_reference(name):
    shape, window, groups, c_out, strides, padding, block, b = CASES[name]
    n = len(window)
    x = rand(0, shape) + 0.5
    kernel = rand(1, (*window, shape[-1] // groups, c_out), 0.3)
    bias = rand(2, (c_out,))
    y, stats = conv(
        x,
        kernel,
        bias,
        strides=strides,
        padding=padding,
        block=block,
        num_iters=7,
        sampling_stride=2,
        feature_group_count=groups,
        grouping="per_block",
    )
    strides_t = (strides,) * n if isinstance(strides, int) else strides
    pads = normalize_padding(padding, shape[1:-1], window, strides_t)  # foundation helper
    want_y, want_mu, want_d = np_reference(x, kernel, bias, strides_t, pads, b, groups, 1e-5, 7, 2)
    assert stats.mean.shape == want_mu.shape and stats.deconv.shape == want_d.shape
    np.testing.assert_allclose(stats.mean, want_mu, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats.deconv, want_d, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(y, want_y, rtol=2e-4, atol=2e-4)


def test_whitening_property_and_fused_equals_whiten_then_matmul():
    """Enough iterations: covariance of the whitened patches is I; fused == slow two-step."""
    x = rand(3, (8, 10, 10, 2)) * jnp.array([1.0, 3.0]) + 1.0
    x = x + 0.8 * jnp.roll(x, 1, axis=2)  # strong pixel-wise correlation
    kernel = rand(4, (3, 3, 2, 4), 0.2)
    y, stats = conv(x, kernel, num_iters=15, sampling_stride=1, eps=1e-8, grouping="per_block")
    rows = dc.deconv_patches(x, 3, sampling_stride=1, grouping="per_block")  # (1, M, 18)
    rows = np.asarray(rows, np.float64)
    white = (rows[0] - np.asarray(stats.mean[0], np.float64)) @ np.asarray(stats.deconv[0])
    cov = white.T @ white / len(white)
    np.testing.assert_allclose(cov, np.eye(18), atol=2e-3)
    raw_cov = (rows[0] - rows[0].mean(0)).T @ (rows[0] - rows[0].mean(0)) / len(white)
    assert np.abs(raw_cov - np.diag(np.diag(raw_cov))).max() > 0.5  # it was correlated
    slow = white @ np.asarray(kernel, np.float64).reshape(18, 4)
    np.testing.assert_allclose(np.asarray(y).reshape(-1, 4), slow, rtol=1e-4, atol=1e-4)


def test_eval_reproduces_fused_conv_with_stats():
    x = rand(5, (2, 8, 8, 6))
    kernel, bias = rand(6, (3, 3, 6, 5), 0.3), rand(7, (5,))
    kw = dict(strides=2, padding="SAME", feature_group_count=1)
    y, stats = conv(x, kernel, bias, block=4, **kw)
    np.testing.assert_allclose(conv_eval(x, kernel, bias, stats, **kw), y, atol=1e-6)
    # the same stats on another input: one plain conv with folded weights
    x2 = rand(8, (2, 8, 8, 6))
    w, b = dc.fold_deconv(kernel, bias, stats)
    plain = jax.lax.conv_general_dilated(
        x2, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(
        conv_eval(x2, kernel, bias, stats, **kw), plain + b, rtol=1e-5, atol=1e-5
    )
    # identity statistics give the plain conv
    ident = dc.init_deconv_stats(6, (3, 3), block=4)
    base = jax.lax.conv_general_dilated(
        x2, kernel, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(
        conv_eval(x2, kernel, bias, ident, **kw), base + bias, rtol=1e-5, atol=1e-5
    )


def test_deconv_conv_grad_check():
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 5, 2)))
        kernel = jnp.asarray(np.random.default_rng(1).normal(size=(2, 2, 2, 3)))
        bias = jnp.asarray(np.random.default_rng(2).normal(size=(3,)))

        def f(x, k, b):
            return dc.deconv_conv(x, k, b, num_iters=3, sampling_stride=1)[0]

        check_grads(jax.jit(f), (x, kernel, bias), order=1, modes=("rev",), atol=1e-4, rtol=1e-4)
        assert dc.deconv_conv(x, kernel, bias)[1].deconv.dtype == jnp.float64


def test_pmap_equals_single_device_on_global_batch(num_devices):
    """Moments averaged over devices: outputs, statistics and gradients match one device.

    pmap checks outputs, statistics and gradients; shard_map checks outputs and statistics.
    """
    x = rand(9, (2 * num_devices, 6, 6, 4)) * 2 + 1
    kernel, bias = rand(10, (3, 3, 4, 4), 0.3), rand(11, (4,))
    kw = dict(num_iters=5, sampling_stride=1, block=2)  # shared grouping of 2 channel groups

    def loss(x, k, b, axis_name=None):
        y, stats = dc.deconv_conv(x, k, b, axis_name=axis_name, **kw)
        return jnp.sum(jnp.sin(y)), (y, stats)

    (_, (y1, s1)), (gx1, gk1, gb1) = jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True))(
        x, kernel, bias
    )
    pm = jax.pmap(
        jax.value_and_grad(lambda x, k, b: loss(x, k, b, "batch"), (0, 1, 2), has_aux=True),
        axis_name="batch",
        in_axes=(0, None, None),
    )
    (_, (yp, sp)), (gxp, gkp, gbp) = pm(shard_for_pmap(x, num_devices), kernel, bias)
    np.testing.assert_allclose(yp.reshape(y1.shape), y1, rtol=1e-4, atol=1e-4)
    for leaf_p, leaf_1 in zip(sp, s1):
        for d in range(num_devices):
            np.testing.assert_allclose(leaf_p[d], leaf_1, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gxp.reshape(gx1.shape), gx1, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(gkp.sum(0), gk1, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(gbp.sum(0), gb1, rtol=1e-3, atol=1e-3)
    # the same per-device function under shard_map (statistics come out replicated)
    mesh = jax.make_mesh((num_devices,), ("batch",), axis_types=(jax.sharding.AxisType.Auto,))
    spec = jax.sharding.PartitionSpec
    sm = jax.shard_map(
        lambda x, k, b: dc.deconv_conv(x, k, b, axis_name="batch", **kw),
        mesh=mesh,
        in_specs=(spec("batch"), spec(), spec()),
        out_specs=(spec("batch"), spec()),
    )
    ys, ss = jax.jit(sm)(x, kernel, bias)
    np.testing.assert_allclose(ys, y1, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ss.deconv, s1.deconv, rtol=1e-4, atol=1e-4)
    # without syncing each device whitens alone: the statistics differ
    _, (_, s_local) = jax.pmap(lambda x: loss(x, kernel, bias))(shard_for_pmap(x, num_devices))
    assert np.abs(np.asarray(s_local.deconv[0]) - np.asarray(s1.deconv)).max() > 1e-2


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_keeps_fp32_statistics(dtype):
    x = (rand(12, (2, 6, 6, 4)) * 300.0 + 1000.0).astype(dtype)
    kernel = rand(13, (3, 3, 4, 4), 0.3).astype(dtype)
    y, stats = conv(x, kernel)
    assert y.dtype == dtype
    assert stats.mean.dtype == jnp.float32 and stats.deconv.dtype == jnp.float32
    assert jnp.isfinite(y).all() and jnp.isfinite(stats.deconv).all()
    y32, _ = conv(x.astype(jnp.float32), kernel.astype(jnp.float32))
    np.testing.assert_allclose(y.astype(jnp.float32), y32, atol=0.15)


@jax.jit
def _value_and_grads(x, k):
    out = dc.deconv_conv(x, k)
    return out, jax.grad(lambda x, k: jnp.sum(dc.deconv_conv(x, k)[0] ** 2), (0, 1))(x, k)


@pytest.mark.parametrize("scale", [1e30, 1e-30, 0.0])
def test_any_magnitude_is_finite(scale):
    x = rand(14, (2, 5, 5, 2)) * scale + 7.0
    kernel = rand(15, (3, 3, 2, 3), 0.3)
    (y, stats), g = _value_and_grads(x, kernel)  # one compile for every scale
    assert jnp.isfinite(y).all() and jnp.isfinite(stats.deconv).all()
    assert all(jnp.isfinite(v).all() for v in g)


def test_deconv_conv_errors():
    x, k = jnp.ones((2, 6, 6, 4)), jnp.ones((3, 3, 4, 8))
    with pytest.raises(TypeError, match="`x`"):
        dc.deconv_conv(x.astype(jnp.int32), k)
    with pytest.raises(ValueError, match="`kernel` must have shape"):
        dc.deconv_conv(x, jnp.ones((3, 4, 8)))
    with pytest.raises(ValueError, match="input features 3"):
        dc.deconv_conv(x, jnp.ones((3, 3, 3, 8)))
    with pytest.raises(ValueError, match="divisible"):
        dc.deconv_conv(x, jnp.ones((3, 3, 2, 7)), feature_group_count=2)
    with pytest.raises(ValueError, match="block"):
        dc.deconv_conv(x, k, block=0)
    with pytest.raises(ValueError, match="sampling_stride"):
        dc.deconv_conv(x, k, sampling_stride=0)
    with pytest.raises(ValueError, match="strides"):
        dc.deconv_conv(x, k, strides=0)
    with pytest.raises(ValueError, match="eps"):
        dc.deconv_conv(x, k, eps=0.0)
    with pytest.raises(ValueError, match="num_iters"):
        dc.deconv_conv(x, k, num_iters=0)
    with pytest.raises(ValueError, match="larger than the padded input"):
        dc.deconv_conv(x, jnp.ones((7, 7, 4, 8)), padding="VALID")
    with pytest.raises(ValueError, match="`bias`"):
        dc.deconv_conv(x, k, jnp.ones(3))
    with pytest.raises(ValueError, match="`stats`"):
        dc.deconv_conv_eval(x, k, None, dc.init_deconv_stats(4, (3, 3), block=4)[:1] * 2)
    with pytest.raises(ValueError, match="do not match"):
        dc.deconv_conv_eval(x, k, None, dc.init_deconv_stats(4, (1, 1)))


def test_empty_batch_is_refused_in_training_mode_only():
    """Statistics of 0 examples do not exist: one ValueError naming `x` and the batch."""
    k = jnp.ones((3, 3, 4, 8))
    empty = jnp.ones((0, 6, 6, 4))
    message = r"^`x` of shape \(0, 6, 6, 4\) has no patches .* \(batch 0\); training mode"
    with pytest.raises(ValueError, match=message):
        dc.deconv_conv(empty, k)
    with pytest.raises(ValueError, match=message):  # the same at trace time under jit
        jax.jit(lambda a: dc.deconv_conv(a, k))(empty)
    with pytest.raises(ValueError, match=r"^`x` of shape \(0, 4\) has no rows .*\(batch 0\)"):
        dc.deconv_dense(jnp.ones((0, 4)), jnp.ones((4, 3)))
    with pytest.raises(ValueError, match=r"^`rows` of shape \(1, 0, 4\) holds no samples"):
        dc.deconv_statistics(jnp.ones((1, 0, 4)))
    # Eval mode uses stored statistics: an empty batch gives an empty output, as a conv does.
    _, stats = dc.deconv_conv(jnp.ones((2, 6, 6, 4)), k)
    assert dc.deconv_conv_eval(empty, k, None, stats).shape == (0, 6, 6, 8)


# ---------------------------------------------------------------------------------------------
# Dense ("Delinear")
# ---------------------------------------------------------------------------------------------


def test_deconv_dense_matches_reference_and_eval():
    x = rand(16, (64, 12)) * jnp.linspace(0.5, 3.0, 12) + 2.0
    kernel, bias = rand(17, (12, 5), 0.3), rand(18, (5,))
    y, stats = dense(x, kernel, bias, block=8, num_iters=9, grouping="per_block")  # gcd: b = 4
    xn, kn = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    want = np.zeros((64, 5)) + np.asarray(bias, np.float64)
    for j in range(3):
        rows = xn[:, 4 * j : 4 * j + 4]
        mu = rows.mean(0)
        d = np_newton_schulz((rows - mu).T @ (rows - mu) / 64 + 1e-5 * np.eye(4), 9)
        np.testing.assert_allclose(stats.deconv[j], d, rtol=2e-4, atol=2e-4)
        want += (rows - mu) @ d @ kn[4 * j : 4 * j + 4]
    np.testing.assert_allclose(y, want, rtol=2e-4, atol=2e-4)
    dense_eval = jax.jit(dc.deconv_dense_eval, static_argnames="grouping")
    np.testing.assert_allclose(dense_eval(x, kernel, bias, stats, "per_block"), y, atol=1e-5)
    y3, _ = dense(x.reshape(4, 16, 12), kernel, bias, block=8, num_iters=9, grouping="per_block")
    np.testing.assert_allclose(y3.reshape(64, 5), y, atol=1e-5)
    with pytest.raises(ValueError, match="`kernel` must have shape"):
        dc.deconv_dense(x, jnp.ones((5, 5)))


def test_block_size_rule():
    assert dc.deconv_block_size(64, 64) == 64
    assert dc.deconv_block_size(3, 64) == 3  # first layer: the whole 27-dim patch
    assert dc.deconv_block_size(96, 64) == 32  # gcd rule
    assert dc.deconv_block_size(128, 64, feature_group_count=128) == 1  # depthwise
    assert dc.deconv_block_size(128, 64, feature_group_count=4) == 32
    with pytest.raises(ValueError, match="feature_group_count"):
        dc.deconv_block_size(10, 64, feature_group_count=3)


def test_update_running_stats_formula_dtype_and_no_gradient():
    rng = np.random.default_rng(7)
    running = dc.DeconvStats(
        jnp.asarray(rng.normal(size=(2, 3)), jnp.float32),
        jnp.asarray(rng.normal(size=(2, 3, 3)), jnp.float32),
    )
    batch = dc.DeconvStats(
        jnp.asarray(rng.normal(size=(2, 3)), jnp.bfloat16),
        jnp.asarray(rng.normal(size=(2, 3, 3)), jnp.float32),
    )
    new = dc.update_running_stats(running, batch, 0.25)
    for r, b, n in zip(running, batch, new):
        expected = 0.75 * np.asarray(r, np.float64) + 0.25 * np.asarray(b.astype(jnp.float32))
        np.testing.assert_allclose(np.asarray(n), expected, rtol=1e-6, atol=1e-6)
        assert n.dtype == jnp.float32
    grad = jax.grad(lambda m: dc.update_running_stats(running, batch._replace(mean=m)).mean.sum())
    np.testing.assert_array_equal(np.asarray(grad(batch.mean.astype(jnp.float32))), 0.0)
    with pytest.raises(ValueError, match=r"`momentum` must be in \[0, 1\]"):
        dc.update_running_stats(running, batch, 1.5)


def _numpy_conv_symmetric(x, kernel, stride):
    """Plain 2-D cross-correlation, ``k // 2`` zeros on every side, as a float64 loop."""
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    k = kernel.shape[0]
    xp = np.pad(x, [(0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)])
    n, h, w, _ = x.shape
    out_h, out_w = (h + 2 * (k // 2) - k) // stride + 1, (w + 2 * (k // 2) - k) // stride + 1
    y = np.zeros((n, out_h, out_w, kernel.shape[-1]))
    for i in range(out_h):
        for j in range(out_w):
            patch = xp[:, i * stride : i * stride + k, j * stride : j * stride + k, :]
            y[:, i, j] = np.einsum("nabc,abco->no", patch, kernel)
    return y


def test_default_padding_is_the_layers_symmetric_one():
    """``deconv_conv`` / ``deconv_conv_eval`` / ``deconv_patches`` pad ``k // 2`` on both sides
    by default (PyTorch's geometry, as every convjax layer): with identity statistics the eval
    op is a plain conv, checked against a NumPy loop at stride 2 on an even map."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 8, 8, 3)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((3, 3, 3, 4)), jnp.float32)
    identity = dc.init_deconv_stats(3, (3, 3))
    y = dc.deconv_conv_eval(x, k, None, identity, strides=2)
    np.testing.assert_allclose(y, _numpy_conv_symmetric(x, k, 2), rtol=1e-4, atol=1e-4)
    same = dc.deconv_conv_eval(x, k, None, identity, strides=2, padding="SAME")
    assert float(jnp.max(jnp.abs(same - y))) > 1e-2  # SAME shifts the window by one pixel
    # training op: the default equals explicit (1, 1) pads
    y_train = dc.deconv_conv(x, k, strides=2)[0]
    np.testing.assert_allclose(y_train, dc.deconv_conv(x, k, strides=2, padding=1)[0], rtol=1e-6)
    np.testing.assert_array_equal(
        dc.deconv_patches(x, 3, strides=2), dc.deconv_patches(x, 3, strides=2, padding=1)
    )


def test_pytorch_default_initialisers():
    """kaiming_uniform(a=sqrt 5): U(+-1/sqrt fan_in), variance 1/(3 fan_in); bias U(+-1/sqrt
    fan_in); kaiming fan-out normal: variance 2 / (k*k*C_out)."""
    w = np.asarray(dc.pytorch_kernel_init()(jax.random.key(0), (3, 3, 64, 128)), np.float64)
    fan_in = 3 * 3 * 64
    assert np.abs(w).max() <= 1 / np.sqrt(fan_in) * (1 + 1e-6)
    assert w.var() * fan_in == pytest.approx(1 / 3, rel=0.02)
    b = np.asarray(dc.pytorch_bias_init(fan_in)(jax.random.key(1), (20000,)), np.float64)
    assert np.abs(b).max() <= 1 / np.sqrt(fan_in) * (1 + 1e-6)
    assert b.var() * fan_in == pytest.approx(1 / 3, rel=0.03)
    f = np.asarray(dc.kaiming_fan_out_init()(jax.random.key(2), (3, 3, 64, 128)), np.float64)
    assert f.var() * (3 * 3 * 128) / 2 == pytest.approx(1.0, rel=0.02)
    assert np.abs(f).max() > 2.5 * np.sqrt(2 / (3 * 3 * 128))  # untruncated normal tails
    with pytest.raises(ValueError, match="fan_in"):
        dc.pytorch_bias_init(0)

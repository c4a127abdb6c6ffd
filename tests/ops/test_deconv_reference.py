"""Network Deconvolution vs a slow NumPy port of the authors' reference algorithm (FastDeconv).

The port below is written from the description of the reference code (issue #11), in its own
layout (PyTorch NCHW / OIHW, channel-major ``unfold`` columns ``j = c*k*k + t``), float64 and
loops, sharing nothing with ``convjax.ops.deconv``:

- 3x3: patch rows from ``unfold`` at stride ``sampling_stride * stride``; 1x1: every
  ``(sampling_stride * stride)^2``-th pixel row of ``x`` (NHWC-flattened);
- each row of length ``C*k*k`` viewed as ``(F, C/B)`` and transposed, the ``C/B`` rows stacked
  as samples; one mean, one covariance, one Newton--Schulz ``D``;
- weights through the same view: ``W (C_out, C*k*k) -> (C_out*C/B, F)``, ``W' = W D``,
  ``b' = b - sum_g W' mu``, viewed back; then a plain conv;
- dense ("Delinear"): ``x.view(-1, B)``, ``W.view(-1, B) @ D``;
- freeze: counter modulo ``10 * freeze_iter``, recompute while ``counter <= freeze_iter``.

Gradients are checked as directional derivatives against central finite differences of the
float64 port (an independent route to the same numbers).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

from convjax import linen as clinen
from convjax import nnx as cnnx
from convjax.ops import deconv as dc
from tests.helpers import shard_for_pmap

# ---------------------------------------------------------------------------------------------
# The NumPy port (NCHW, float64)
# ---------------------------------------------------------------------------------------------


def ref_block(c, block):
    if block > c:
        return c
    return block if c % block == 0 else int(np.gcd(block, c))


def ref_newton_schulz(a, n_iter):
    norm = np.linalg.norm(a)
    y, z, eye = a / norm, np.eye(len(a)), np.eye(len(a))
    for _ in range(n_iter):
        t = 0.5 * (3.0 * eye - z @ y)
        y, z = y @ t, t @ z
    return z / np.sqrt(norm)


def ref_unfold(x, k, pad, stride):
    """torch.nn.functional.unfold(...).transpose(1, 2): (N*L, C*k*k), channel-major."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, w = x.shape
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    cols = np.zeros((n, oh, ow, c, k, k))
    for i in range(oh):
        for j in range(ow):
            cols[:, i, j] = x[:, :, i * stride : i * stride + k, j * stride : j * stride + k]
    return cols.reshape(n * oh * ow, c * k * k), (oh, ow)


def ref_conv2d(x, w, b, stride, pad):
    """Plain conv (cross-correlation) by unfold + matmul; returns NCHW."""
    cols, (oh, ow) = ref_unfold(x, w.shape[-1], pad, stride)
    y = cols @ w.reshape(w.shape[0], -1).T + b
    return y.reshape(x.shape[0], oh, ow, -1).transpose(0, 3, 1, 2)


def ref_stats(x, k, stride, pad, block, eps, n_iter, sampling_stride):
    c = x.shape[1]
    bb = ref_block(c, block)
    f, g = k * k * bb, c // bb
    s = sampling_stride * stride
    if k > 1:
        rows, _ = ref_unfold(x, k, pad, s)
    else:
        rows = x.transpose(0, 2, 3, 1).reshape(-1, c)[:: s * s]
    rows = rows.reshape(-1, f, g).transpose(0, 2, 1).reshape(-1, f)
    mu = rows.mean(0)
    xc = rows - mu
    cov = xc.T @ xc / len(rows) + eps * np.eye(f)
    return mu, ref_newton_schulz(cov, n_iter)


def ref_fold(w, b, mu, d):
    """W (C_out, C, k, k) through the (F, C/B) view; ``b - sum_g W' mu``."""
    c_out, f = w.shape[0], len(mu)
    g = w[0].size // f
    wv = w.reshape(c_out, f, g).transpose(0, 2, 1).reshape(-1, f) @ d
    b = b - (wv @ mu).reshape(c_out, g).sum(1)
    return wv.reshape(c_out, g, f).transpose(0, 2, 1).reshape(w.shape), b


def ref_fast_deconv(x, w, b, stride, *, block=64, eps=1e-5, n_iter=5, sampling_stride=3):
    """Training forward of FastDeconv (groups=1): (y, mean, deconv), NCHW / OIHW."""
    k = w.shape[-1]
    pad = k // 2
    mu, d = ref_stats(x, k, stride, pad, block, eps, n_iter, sampling_stride)
    wf, bf = ref_fold(w, b, mu, d)
    return ref_conv2d(x, wf, bf, stride, pad), mu, d


class RefFrozenDeconv:
    """The reference layer's training calls with ``freeze=True`` (stateful, NumPy)."""

    def __init__(self, w, b, stride, freeze_iter, momentum=0.1, **kw):
        self.w, self.b, self.stride, self.kw = w, b, stride, kw
        self.freeze_iter, self.momentum, self.counter = freeze_iter, momentum, 0
        f = w.shape[-1] ** 2 * ref_block(w.shape[1], kw.get("block", 64))
        self.running_mean, self.running_deconv = np.zeros(f), np.eye(f)

    def __call__(self, x):
        frozen = self.counter > self.freeze_iter
        self.counter = (self.counter + 1) % (self.freeze_iter * 10)
        if not frozen:
            y, mu, d = ref_fast_deconv(x, self.w, self.b, self.stride, **self.kw)
            m = self.momentum
            self.running_mean = (1 - m) * self.running_mean + m * mu
            self.running_deconv = (1 - m) * self.running_deconv + m * d
            return y, frozen
        k = self.w.shape[-1]
        wf, bf = ref_fold(self.w, self.b, self.running_mean, self.running_deconv)
        return ref_conv2d(x, wf, bf, self.stride, k // 2), frozen


def ref_delinear(x, w, b, block, eps=1e-5, n_iter=5):
    """Delinear training forward, w (C_out, C_in): (y, mean, deconv)."""
    bb = ref_block(x.shape[-1], block)
    rows = x.reshape(-1, bb)
    mu = rows.mean(0)
    xc = rows - mu
    d = ref_newton_schulz(xc.T @ xc / len(rows) + eps * np.eye(bb), n_iter)
    wv = w.reshape(-1, bb) @ d
    b = b - (wv @ mu).reshape(w.shape[0], -1).sum(1)
    return x @ wv.reshape(w.shape).T + b, mu, d


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def rand(seed, shape, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def to_nchw(x):
    return np.asarray(x, np.float64).transpose(0, 3, 1, 2)


def to_oihw(kernel):
    return np.asarray(kernel, np.float64).transpose(3, 2, 0, 1)


def directional_fd(f, args, direction, h):
    """Central difference of the scalar ``f(*args)`` along ``direction`` (a tuple like args)."""
    plus = [a + h * v for a, v in zip(args, direction)]
    minus = [a - h * v for a, v in zip(args, direction)]
    return (f(*plus) - f(*minus)) / (2 * h)


@functools.partial(jax.jit, static_argnames=("strides", "padding", "block", "num_iters"))
def jax_value_and_grad(x, kernel, bias, cot, *, strides, padding, block, num_iters):
    def loss(x, k, b):
        y, stats = dc.deconv_conv(
            x, k, b, strides=strides, padding=padding, block=block, num_iters=num_iters
        )
        return jnp.sum(y * cot), (y, stats)

    return jax.value_and_grad(loss, (0, 1), has_aux=True)(x, kernel, bias)


# ---------------------------------------------------------------------------------------------
# Convolutions: C_in in {3, 64, 128, 192} (gcd rule: G = 1, 1, 2, 3 groups), 1x1 and 3x3,
# stride 1 and 2.
# ---------------------------------------------------------------------------------------------

CONV_CASES = {
    # name: (x NHWC shape, kernel size, stride, C_out)
    "c3_3x3_s1_first_layer": ((4, 12, 12, 3), 3, 1, 8),
    "c128_3x3_s1": ((3, 9, 9, 128), 3, 1, 8),
    "c192_1x1_s2": ((4, 12, 12, 192), 1, 2, 8),
    # the same properties on the remaining combinations (slow: one F = 576 compile each)
    "c64_3x3_s2": ((3, 10, 10, 64), 3, 2, 16),
    "c192_3x3_s2": ((2, 12, 12, 192), 3, 2, 8),
    "c128_1x1_s1": ((2, 9, 9, 128), 1, 1, 16),
}
_SLOW_CASES = ("c64_3x3_s2", "c192_3x3_s2", "c128_1x1_s1")


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW_CASES else n for n in CONV_CASES],
)
def test_conv_matches_reference_outputs_stats_and_gradients(name):
    shape, k, stride, c_out = CONV_CASES[name]
    c = shape[-1]
    x = np.abs(rand(0, shape)) + 0.3 * rand(1, shape)  # ReLU-like, correlated channels
    kernel = rand(2, (k, k, c, c_out), 1.0 / np.sqrt(k * k * c))
    bias = rand(3, (c_out,), 0.1)
    pad = ((k // 2, k // 2),) * 2
    out_hw = (shape[1] + 2 * (k // 2) - k) // stride + 1
    cot = rand(4, (shape[0], out_hw, out_hw, c_out))
    (_, (y, stats)), (gx, gk) = jax_value_and_grad(
        x, kernel, bias, cot, strides=stride, padding=pad, block=64, num_iters=5
    )
    want_y, want_mu, want_d = ref_fast_deconv(to_nchw(x), to_oihw(kernel), bias, stride)
    f = want_mu.shape[0]
    assert stats.mean.shape == (1, f) and stats.deconv.shape == (1, f, f)  # shared size
    np.testing.assert_allclose(stats.mean[0], want_mu, rtol=1e-5, atol=1e-6)
    d_scale = np.abs(want_d).max()
    np.testing.assert_allclose(stats.deconv[0], want_d, rtol=0, atol=2e-5 * d_scale)
    want_y = want_y.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(y, want_y, rtol=0, atol=2e-5 * np.abs(want_y).max())

    # gradients: <grad, v> against finite differences of the float64 port, for x and kernel
    cot64 = to_nchw(cot)

    def ref_loss(x_nchw, w_oihw):
        return float(np.sum(ref_fast_deconv(x_nchw, w_oihw, bias, stride)[0] * cot64))

    vx, vk = rand(5, shape), rand(6, kernel.shape, 1.0 / np.sqrt(k * k * c))
    args = (to_nchw(x), to_oihw(kernel))
    fd_x = directional_fd(ref_loss, args, (to_nchw(vx), 0 * args[1]), 1e-4)
    fd_k = directional_fd(ref_loss, args, (0 * args[0], to_oihw(vk)), 1e-4)
    got_x = float(np.sum(np.asarray(gx, np.float64) * vx))
    got_k = float(np.sum(np.asarray(gk, np.float64) * vk))
    np.testing.assert_allclose(got_x, fd_x, rtol=2e-3, atol=1e-3 * np.abs(cot).sum() * 1e-3)
    np.testing.assert_allclose(got_k, fd_k, rtol=2e-3, atol=1e-3 * np.abs(cot).sum() * 1e-3)


def test_multi_block_grouping_differs_from_per_block():
    """C_in = 2 blocks: the two groupings are different maths (the reason for the option)."""
    x = np.abs(rand(7, (4, 9, 9, 16))) + 0.3 * rand(8, (4, 9, 9, 16))
    kernel = rand(9, (3, 3, 16, 4), 1 / 12.0)
    conv = jax.jit(dc.deconv_conv, static_argnames=("block", "grouping", "sampling_stride"))
    kw = dict(block=8, sampling_stride=1)
    y_shared, s_shared = conv(x, kernel, grouping="shared", **kw)
    y_block, s_block = conv(x, kernel, grouping="per_block", **kw)
    assert s_shared.deconv.shape == (1, 72, 72) and s_block.deconv.shape == (2, 72, 72)
    assert np.abs(y_shared - y_block).max() > 0.1 * np.abs(y_block).max()


# ---------------------------------------------------------------------------------------------
# Dense ("Delinear")
# ---------------------------------------------------------------------------------------------


def test_dense_matches_reference_outputs_stats_and_gradients():
    x = np.abs(rand(10, (48, 24))) + 0.5 * rand(11, (48, 24))
    kernel, bias = rand(12, (24, 5), 0.3), rand(13, (5,), 0.1)  # Flax (C_in, C_out)
    cot = rand(14, (48, 5))

    @jax.jit
    def value_and_grad(x, kernel):
        def loss(x, k):
            y, stats = dc.deconv_dense(x, k, bias, block=8, num_iters=5)  # G = 3 blocks
            return jnp.sum(y * cot), (y, stats)

        return jax.value_and_grad(loss, (0, 1), has_aux=True)(x, kernel)

    (_, (y, stats)), (gx, gk) = value_and_grad(x, kernel)
    x64, w64 = np.asarray(x, np.float64), np.asarray(kernel, np.float64).T
    want_y, want_mu, want_d = ref_delinear(x64, w64, bias, 8)
    assert stats.mean.shape == (1, 8) and stats.deconv.shape == (1, 8, 8)
    np.testing.assert_allclose(stats.mean[0], want_mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.deconv[0], want_d, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y, want_y, rtol=1e-4, atol=1e-4)

    def ref_loss(x, w):
        return float(np.sum(ref_delinear(x, w, bias, 8)[0] * cot))

    vx, vk = rand(15, x.shape), rand(16, kernel.shape)
    fd_x = directional_fd(ref_loss, (x64, w64), (vx.astype(np.float64), 0 * w64), 1e-5)
    fd_k = directional_fd(ref_loss, (x64, w64), (0 * x64, vk.T.astype(np.float64)), 1e-5)
    np.testing.assert_allclose(float(np.sum(np.asarray(gx, np.float64) * vx)), fd_x, rtol=1e-3)
    np.testing.assert_allclose(float(np.sum(np.asarray(gk, np.float64) * vk)), fd_k, rtol=1e-3)


# ---------------------------------------------------------------------------------------------
# First layer with the reference freeze schedule (n_iter=15, freeze=True)
# ---------------------------------------------------------------------------------------------


@nnx.jit
def nnx_call(layer, x):
    return layer(x)


def test_nnx_freeze_schedule_matches_reference_layer():
    """freeze_iter=1: calls with counter 0, 1 recompute, 2..9 frozen, then the cycle restarts;
    outputs, running statistics and counter follow the reference layer step by step."""
    layer = cnnx.DeconvConv(3, 8, 3, num_iters=15, freeze=True, freeze_iter=1, rngs=nnx.Rngs(0))
    layer.bias[...] = jnp.asarray(rand(20, (8,), 0.1))
    ref = RefFrozenDeconv(
        to_oihw(layer.kernel[...]), np.asarray(layer.bias[...], np.float64), 1, 1, n_iter=15
    )
    frozen_seen = []
    for step in range(12):
        x = np.abs(rand(100 + step, (4, 12, 12, 3))) + 0.2 * step
        y = nnx_call(layer, x)
        want, frozen = ref(to_nchw(x))
        frozen_seen.append(frozen)
        np.testing.assert_allclose(
            y, want.transpose(0, 2, 3, 1), rtol=0, atol=1e-4 * np.abs(want).max()
        )
        assert int(layer.counter[...]) == ref.counter
        np.testing.assert_allclose(layer.mean[...][0], ref.running_mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            layer.deconv[...][0],
            ref.running_deconv,
            rtol=0,
            atol=1e-4 * np.abs(ref.running_deconv).max(),
        )
    assert frozen_seen == [False] * 2 + [True] * 8 + [False] * 2
    layer.eval()  # eval never advances the counter
    nnx_call(layer, x)
    assert int(layer.counter[...]) == ref.counter


def test_freeze_gradients_flow_through_statistics_only_while_recomputing(num_devices):
    """counter <= freeze_iter: d/dx includes the statistics' path (reference autograd);
    frozen: the running statistics are constants. Both against finite differences of the port;
    under pmap the recomputing step syncs the moments and equals one device."""
    x = np.abs(rand(30, (4, 9, 9, 3))) + 0.3
    kernel, bias = rand(31, (3, 3, 3, 4), 0.2), rand(32, (4,), 0.1)
    running = dc.DeconvStats(jnp.asarray(rand(33, (1, 27), 0.1)), jnp.eye(27)[None] * 1.5 + 0.01)
    cot = rand(34, (4, 9, 9, 4))
    pad = ((1, 1), (1, 1))

    def loss(x, counter, axis_name=None):
        y, new, nxt = dc.deconv_conv_train(
            x, kernel, bias, running, counter, freeze_iter=2, num_iters=15, padding=pad,
            axis_name=axis_name,
        )  # fmt: skip
        return jnp.sum(y * cot), (new, nxt)

    grad_fn = jax.jit(jax.grad(loss, has_aux=True))
    g_live, (new_live, c_live) = grad_fn(x, jnp.int32(2))
    g_frozen, (new_frozen, c_frozen) = grad_fn(x, jnp.int32(3))
    assert int(c_live) == 3 and int(c_frozen) == 4
    np.testing.assert_array_equal(new_frozen.deconv, running.deconv)  # kept as they were
    assert np.abs(np.asarray(new_live.deconv - running.deconv)).max() > 1e-3

    w64, cot64 = to_oihw(kernel), to_nchw(cot)
    mu, d = np.asarray(running.mean[0], np.float64), np.asarray(running.deconv[0], np.float64)
    wf, bf = ref_fold(w64, bias, mu, d)

    def live_loss(xn):
        return float(np.sum(ref_fast_deconv(xn, w64, bias, 1, n_iter=15)[0] * cot64))

    def frozen_loss(xn):
        return float(np.sum(ref_conv2d(xn, wf, bf, 1, 1) * cot64))

    v = rand(35, x.shape)
    for g, ref_loss in ((g_live, live_loss), (g_frozen, frozen_loss)):
        fd = directional_fd(ref_loss, (to_nchw(x),), (to_nchw(v),), 1e-4)
        np.testing.assert_allclose(float(np.sum(np.asarray(g, np.float64) * v)), fd, rtol=2e-3)
    # the two gradients differ: only the live one has the statistics' path
    assert np.abs(np.asarray(g_live - g_frozen)).max() > 1e-3

    # pmap: the cond's live branch averages the moments over devices
    xs = np.concatenate([x] * num_devices)
    cots = np.concatenate([cot] * num_devices)

    def loss_pm(x, cot, counter):
        y, new, _ = dc.deconv_conv_train(
            x, kernel, bias, running, counter, freeze_iter=2, num_iters=15, padding=pad,
            axis_name="batch",
        )  # fmt: skip
        return jnp.sum(y * cot), new

    pm = jax.pmap(loss_pm, axis_name="batch", in_axes=(0, 0, None))
    _, new_pm = pm(shard_for_pmap(xs, num_devices), shard_for_pmap(cots, num_devices), 2)
    one = jax.jit(functools.partial(dc.deconv_conv_train, freeze_iter=2, num_iters=15, padding=pad))
    _, new_one, _ = one(xs, kernel, bias, running, jnp.int32(2))
    np.testing.assert_allclose(new_pm.deconv[0], new_one.deconv, rtol=1e-4, atol=1e-5)


def test_linen_freeze_schedule_matches_reference_layer():
    x0 = np.abs(rand(40, (4, 9, 9, 3)))
    lin = clinen.DeconvConv(4, 3, freeze=True, freeze_iter=1)
    variables = lin.init(jax.random.key(0), x0, use_running_average=False)
    assert variables["batch_stats"]["counter"].dtype == jnp.int32
    assert int(variables["batch_stats"]["counter"]) == 0  # init does not count
    params = variables["params"]
    ref = RefFrozenDeconv(to_oihw(params["kernel"]), np.asarray(params["bias"], np.float64), 1, 1)

    @jax.jit
    def train(variables, x):
        return lin.apply(variables, x, use_running_average=False, mutable=["batch_stats"])

    for step in range(4):  # counters 0, 1 recompute, 2, 3 frozen (the cycle: NNX test above)
        x = x0 + 0.3 * step
        y, upd = train(variables, x)
        variables = {**variables, **upd}
        want, _ = ref(to_nchw(x))
        want = want.transpose(0, 2, 3, 1)
        np.testing.assert_allclose(y, want, rtol=0, atol=1e-4 * np.abs(want).max())
        assert int(upd["batch_stats"]["counter"]) == ref.counter == step + 1
    np.testing.assert_allclose(variables["batch_stats"]["deconv"][0], ref.running_deconv, atol=1e-5)
    assert isinstance(lin, nn.Module)

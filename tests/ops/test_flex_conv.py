"""flex_conv: against a float64 NumPy dynamic-crop pipeline, buckets, gradients, resolution."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from convjax.ops.flex_conv import (
    active_bucket,
    flex_conv,
    flex_conv_aliasing_penalty,
    flex_conv_init,
    resolution_change,
    sample_kernel,
    switch_recompute,
)
from convjax.ops.gaussian_mask import threshold_radius
from convjax.ops.magnet import magnet_aliasing_penalty, magnet_frequencies, nyquist_budget
from tests.ops.test_fft_conv import reference_conv
from tests.ops.test_magnet import magnet_numpy

NET = dict(hidden_features=4, num_layers=2)


def _params(d, cin, cout, k, sigma=None, seed=0, mu=None, **kw):
    p = flex_conv_init(jax.random.key(seed), d, cin, cout, kernel_size=k, **{**NET, **kw})
    if sigma is not None:
        p["mask"]["sigma"] = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (d,))
    if mu is not None:
        p["mask"]["mu"] = jnp.broadcast_to(jnp.asarray(mu, jnp.float32), (d,))
    return p


def reference_crop_1d(grid, mu, sigma, threshold, causal):
    """The authors' dynamic crop of one dim, written out with NumPy (FlexConv Sec. 3).

    Roots of ``exp(-1/2 ((x - mu) / sigma)^2) = T`` are ``mu -+ sigma sqrt(-2 ln T)``. Causal:
    keep the points after the smaller root. Centred: keep ``|x| <`` the larger absolute root,
    as a symmetric slice. A root at or beyond the border keeps the whole grid.
    """
    aux = abs(sigma) * np.sqrt(-2.0 * np.log(threshold))
    if causal:
        root = mu - aux
        if abs(root) >= 1.0:
            return grid
        return grid[np.nonzero(root < grid)[0][0] :]
    root = max(abs(mu - aux), abs(mu + aux))
    if root >= 1.0:
        return grid
    first = np.nonzero(-root < grid[: len(grid) // 2 + 1])[0][0]
    return grid[first : len(grid) - first]


def numpy_flex_conv(params, x, horizon, causal=False, mode="constant", threshold=0.1, strides=None):
    """Independent float64 pipeline, no jit: crop each dim dynamically -> MAGNet -> mask ->
    a (possibly non-square) kernel -> pad by its own size -> correlate."""
    x = np.asarray(x, np.float64)
    d = x.ndim - 2
    full = np.linspace(-1, 1, horizon)
    mu = np.asarray(params["mask"]["mu"], np.float64)
    sigma = np.abs(np.asarray(params["mask"]["sigma"], np.float64))
    axes = [reference_crop_1d(full, mu[i], sigma[i], threshold, causal) for i in range(d)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
    sizes = grid.shape[:-1]
    values = magnet_numpy(params["kernel_net"], grid.reshape(-1, d))
    mask = np.exp(-0.5 * np.sum(((grid.reshape(-1, d) - mu) / sigma) ** 2, axis=-1))
    cin = x.shape[-1]
    kernel = (values * mask[:, None]).reshape(*sizes, cin, -1)
    pads = [(sizes[0] - 1, 0)] if causal else [((n - 1) // 2, (n - 1) // 2) for n in sizes]
    xp = np.pad(x, [(0, 0), *pads, (0, 0)], mode=mode)
    strides = (1,) * d if strides is None else strides
    return reference_conv(xp, kernel, strides) + np.asarray(params["bias"], np.float64)


@pytest.mark.parametrize(
    "d,horizon,sigma,expected_size",
    [(2, 9, 0.075, 5), (1, 17, 0.2, 9), (3, 5, None, 5)],
)
def test_matches_numpy_pipeline_and_picks_bucket(d, horizon, sigma, expected_size):
    p = _params(d, 2, 3, horizon, sigma)
    p["bias"] = jnp.arange(3.0)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, *(7,) * d, 2)), jnp.float32)
    idx = int(active_bucket(p, kernel_size=horizon))
    assert (5, 9, 17)[idx] == expected_size
    y = jax.jit(lambda q, a: flex_conv(q, a, kernel_size=horizon))(p, x)
    want = numpy_flex_conv(p, x, horizon)
    assert y.shape == (2, *(7,) * d, 3)
    np.testing.assert_allclose(y, want, rtol=2e-4, atol=2e-4)


CROP_CASES = [  # (d, horizon, causal, mu, sigma): isotropic, anisotropic, off-centre, causal
    (2, 17, False, 0.0, 0.1),
    pytest.param(2, 17, False, 0.0, 0.2, marks=pytest.mark.slow),
    (2, 17, False, 0.0, (0.05, 0.2)),
    (2, 17, False, (0.1, -0.05), (0.15, 0.08)),
    (1, 33, True, 1.0, 0.15),
    pytest.param(1, 33, True, 0.9, 0.05, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("d,horizon,causal,mu,sigma", CROP_CASES)
def test_bucketing_changes_cost_never_the_function(d, horizon, causal, mu, sigma):
    """Default ladder == one full-horizon bucket == the NumPy dynamic crop (no jit)."""
    p = _params(d, 2, 2, horizon, sigma=sigma, mu=mu, causal=causal)
    p["bias"] = jnp.asarray([0.5, -0.25])
    x = jnp.asarray(np.random.default_rng(7).standard_normal((1, *(11,) * d, 2)), jnp.float32)
    f = jax.jit(
        lambda q, buckets: flex_conv(q, x, kernel_size=horizon, causal=causal, buckets=buckets),
        static_argnums=1,
    )
    idx = int(active_bucket(p, kernel_size=horizon, causal=causal))
    assert idx < 2  # the default ladder computes it in a small bucket
    y_ladder = f(p, None)
    np.testing.assert_allclose(y_ladder, numpy_flex_conv(p, x, horizon, causal=causal), 2e-4, 2e-4)
    np.testing.assert_allclose(f(p, (horizon,)), y_ladder, rtol=1e-5, atol=1e-5)


def test_bucketing_never_changes_the_gradient():
    p = _params(2, 2, 2, 17, sigma=(0.05, 0.2), mu=(0.02, -0.1))
    rng = np.random.default_rng(8)
    x = jnp.asarray(rng.standard_normal((1, 9, 9, 2)), jnp.float32)
    cot = jnp.asarray(rng.standard_normal((1, 9, 9, 2)), jnp.float32)
    grad = jax.jit(
        jax.grad(lambda q, b: jnp.vdot(flex_conv(q, x, kernel_size=17, buckets=b), cot)),
        static_argnums=1,
    )
    g_ladder, g_full = grad(p, None), grad(p, (17,))
    assert int(active_bucket(p, kernel_size=17)) == 1  # 3 x 9 crop in bucket 9 of (5, 9, 17)
    for a, b in zip(jax.tree.leaves(g_ladder), jax.tree.leaves(g_full)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(g_ladder["mask"]["sigma"]).min()) > 0


def test_taps_outside_the_crop_are_zero_inside_the_bucket():
    p = _params(2, 1, 1, 17, sigma=(0.05, 0.2))  # crop 1 x 7 taps, computed in bucket 9
    kernel = np.asarray(sample_kernel(p, 1, kernel_size=17, size=9))[..., 0, 0]
    assert np.count_nonzero(kernel[:, 4]) == 1 and np.count_nonzero(kernel[4, :]) == 7
    assert np.count_nonzero(kernel) == 7
    uncropped = np.asarray(sample_kernel(p, 1, kernel_size=17, size=9, threshold=None))
    assert np.count_nonzero(uncropped) == 81  # the mask alone is positive everywhere


def test_init_switches_for_the_deliberate_differences():
    kw = dict(kernel_size=17, causal=True, **NET)
    ours = flex_conv_init(jax.random.key(0), 1, 2, 3, **kw)
    ref = flex_conv_init(
        jax.random.key(0), 1, 2, 3, init_unit_energy=False, gabor_centre="origin", **kw
    )
    # unit energy: sum over taps and C_in of K^2 is 1 on average over output channels
    k = np.asarray(sample_kernel(ours, 2, kernel_size=17, causal=True, threshold=None))
    assert np.mean(np.sum(k**2, axis=(0, 1))) == pytest.approx(1.0, rel=1e-4)
    # envelope centres: around the mask centre (1) vs around 0, within 1.667 * 0.075
    for p, centre in ((ours, 1.0), (ref, 0.0)):
        for g in p["kernel_net"]["gabor"]:
            assert np.all(np.abs(np.asarray(g["mu"]) - centre) <= 1.667 * 0.075 + 1e-6)
    # without the rescale the output layer keeps the PyTorch-default bound 1 / sqrt(H), bias
    # included (the reference's ``bias_init: None``); the rescale multiplies weight and bias
    # by one factor (same key: same draws)
    bound = 1 / math.sqrt(4) + 1e-6
    for name in ("w", "b"):
        assert float(jnp.abs(ref["kernel_net"]["out"][name]).max()) <= bound
    assert float(jnp.abs(ref["kernel_net"]["out"]["b"]).max()) > 0
    ratio_w = np.asarray(ours["kernel_net"]["out"]["w"]) / np.asarray(ref["kernel_net"]["out"]["w"])
    ratio_b = np.asarray(ours["kernel_net"]["out"]["b"]) / np.asarray(ref["kernel_net"]["out"]["b"])
    np.testing.assert_allclose(ratio_w, ratio_w.flat[0], rtol=1e-4)
    np.testing.assert_allclose(ratio_b, ratio_w.flat[0], rtol=1e-4)
    with pytest.raises(ValueError, match="gabor_centre"):
        flex_conv_init(jax.random.key(0), 1, 1, 1, gabor_centre="middle")


def test_causal_matches_numpy_and_never_reads_the_future():
    p = _params(1, 2, 2, 33, causal=True, sigma=0.3)
    assert float(p["mask"]["mu"][0]) == 1.0
    size = (5, 9, 17, 33)[int(active_bucket(p, kernel_size=33, causal=True))]
    assert size == 17  # floor(2.146 * 0.3 / (2 / 32)) + 1 = 11 -> bucket 17
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 40, 2)), jnp.float32)
    f = jax.jit(lambda q, a: flex_conv(q, a, kernel_size=33, causal=True, conv_method="spatial"))
    y = f(p, x)
    np.testing.assert_allclose(y, numpy_flex_conv(p, x, 33, causal=True), rtol=2e-4, atol=2e-4)
    y2 = f(p, x.at[:, 20:].set(50.0))
    np.testing.assert_array_equal(y2[:, :20], y[:, :20])
    yf = flex_conv(p, x, kernel_size=33, causal=True, conv_method="fft")
    np.testing.assert_allclose(yf, y, rtol=2e-4, atol=2e-4)


def test_jit_nojit_and_pmap_agree(num_devices):
    p = _params(1, 2, 2, 17, sigma=0.2)  # bucket 9 of (5, 9, 17)
    x = jnp.asarray(np.random.default_rng(4).standard_normal((num_devices, 12, 2)), jnp.float32)
    f = lambda q, a: flex_conv(q, a, kernel_size=17)
    y_jit = jax.jit(f)(p, x)
    y_eager = f(p, x)
    y_pmap = jax.pmap(f, in_axes=(None, 0))(p, x[:, None]).reshape(y_jit.shape)
    np.testing.assert_allclose(y_eager, y_jit, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y_pmap, y_jit, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["zero", "reflect", "replicate", "circular"])
def test_padding_modes(mode):
    p = _params(1, 1, 2, 9, sigma=0.5)  # a 9-tap kernel: pads 4 on each side
    x = jnp.asarray(np.random.default_rng(2).standard_normal((1, 10, 1)), jnp.float32)
    y = flex_conv(p, x, kernel_size=9, padding_mode=mode, buckets=(9,))  # one branch: cheap
    np_mode = {"zero": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
    np.testing.assert_allclose(
        y, numpy_flex_conv(p, x, 9, mode=np_mode[mode]), rtol=2e-4, atol=2e-4
    )


def test_init_unit_energy_false_is_the_reference_init():
    """``init_unit_energy=False``: the kernel net's output layer as PyTorch initialises it, so
    the kernel at the mask centre is dominated by the output bias, as in the reference."""
    p = flex_conv_init(jax.random.key(3), 2, 8, 8, kernel_size=33, init_unit_energy=False)
    out = p["kernel_net"]["out"]
    h = out["w"].shape[0]
    for name in ("w", "b"):
        assert float(jnp.abs(out[name]).max()) <= 1 / math.sqrt(h) + 1e-6
    k = np.asarray(sample_kernel(p, 8, kernel_size=33, threshold=None), np.float64)
    bias_part = np.asarray(out["b"], np.float64).reshape(8, 8)  # kernel net output * mask
    grid = np.linspace(-1, 1, 33)
    mask = np.exp(-0.5 * (grid[:, None] ** 2 + grid[None, :] ** 2) / 0.075**2)
    bias_kernel = mask[:, :, None, None] * bias_part
    share = np.sum(bias_kernel**2) / np.sum(k**2)
    assert 0.5 < share < 1.5  # the bias carries most of the initial kernel's energy


def test_strided_flex_conv_pads_symmetrically_like_the_layers():
    """Stride 2 on an even map: (n - 1) / 2 zeros on both sides, as PyTorch's padding=k//2
    and every convjax layer (XLA "SAME" would put the odd pixel on the high side only)."""
    p = _params(2, 2, 3, 9, 0.075)
    p["bias"] = jnp.arange(3.0)
    x = jnp.asarray(np.random.default_rng(4).standard_normal((2, 8, 8, 2)), jnp.float32)
    y = flex_conv(p, x, kernel_size=9, strides=2)
    assert y.shape == (2, 4, 4, 3)
    want = numpy_flex_conv(p, x, 9, strides=(2, 2))
    np.testing.assert_allclose(y, want, rtol=2e-4, atol=2e-4)


def test_penalty_target_and_rule():
    """target "gabor" leaves the mask out; "gabor+mask" adds its share; the rule is passed on."""
    p = _params(2, 2, 3, 33, 0.075)
    net, sigma = p["kernel_net"], jnp.abs(p["mask"]["sigma"])
    for rule in ("reference", "per_entry"):
        gabor = flex_conv_aliasing_penalty(p, 33, rule=rule)
        both = flex_conv_aliasing_penalty(p, 33, target="gabor+mask", rule=rule)
        assert float(gabor) == pytest.approx(float(magnet_aliasing_penalty(net, 33, rule=rule)))
        assert float(both) == pytest.approx(
            float(magnet_aliasing_penalty(net, 33, mask_sigma=sigma, rule=rule))
        )
        assert float(both) > float(gabor) > 0
    # default = the reference's target and rule
    assert float(flex_conv_aliasing_penalty(p, 33)) == pytest.approx(
        float(magnet_aliasing_penalty(net, 33, rule="reference"))
    )
    with pytest.raises(ValueError, match="target"):
        flex_conv_aliasing_penalty(p, 33, target="mask")


def test_ckconv_uses_full_horizon_and_strides_give_same_size():
    p = flex_conv_init(
        jax.random.key(0), 2, 1, 2, kernel_size=5, use_mask=False, kernel_net="siren"
    )
    assert "mask" not in p and int(active_bucket(p, kernel_size=5)) == 0
    x = jnp.ones((1, 9, 8, 1))
    y = flex_conv(p, x, kernel_size=5, kernel_net="siren", strides=(2, 3))
    assert y.shape == (1, 5, 3, 2)
    full = flex_conv(p, x, kernel_size=5, kernel_net="siren")
    # symmetric (k - 1) / 2 padding: strided outputs are the stride-1 outputs at 0, s, 2s, ...
    # (XLA "SAME" would start at 1 on the width, 8 = 2 * 3 + 2)
    np.testing.assert_allclose(y, full[:, ::2, ::3], rtol=1e-5, atol=1e-5)


def test_gradients_wrt_mask_and_kernel_net():
    p = _params(1, 1, 1, 9, sigma=0.2)
    x = jnp.asarray(np.random.default_rng(3).standard_normal((1, 8, 1)), jnp.float32)
    f = jax.jit(lambda q: flex_conv(q, x, kernel_size=9))
    check_grads(f, (p,), order=1, modes=("rev",), atol=5e-2, rtol=5e-2)
    g = jax.grad(lambda q: jnp.sum(f(q) ** 2))(p)
    assert float(jnp.abs(g["mask"]["sigma"]).sum()) > 0
    assert float(jnp.abs(g["mask"]["mu"]).sum()) > 0
    assert float(jnp.abs(g["kernel_net"]["out"]["w"]).sum()) > 0


def test_switch_recompute_gradient_equals_lax_switch():
    branches = [lambda a, b: jnp.sin(a) * b, lambda a, b: a**2 + b, lambda a, b: a * b**3]
    a, b = jnp.float32(0.7), jnp.float32(-1.3)
    for i in range(3):
        want = jax.grad(lambda u, v, i=i: jax.lax.switch(i, branches, u, v), (0, 1))(a, b)
        got = jax.jit(jax.grad(lambda u, v, i=i: switch_recompute(i, branches, u, v), (0, 1)))(a, b)
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_extreme_sigma_and_inputs_stay_finite():
    x = jnp.full((1, 6, 6, 1), 1e20, jnp.float32)
    value_and_grad = jax.jit(
        jax.value_and_grad(lambda q: jnp.sum(flex_conv(q, x * 1e-20, kernel_size=9)))
    )
    forward = jax.jit(lambda q: flex_conv(q, x, kernel_size=9))
    for sigma in (0.0, -1e-30, -0.69, 1e4):  # used as floor, floor, 0.69, 1e4
        p = _params(2, 1, 1, 9, sigma=sigma)
        y, g = value_and_grad(p)
        assert bool(jnp.isfinite(y))
        assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(g))
        assert bool(jnp.all(jnp.isfinite(forward(p))))


def test_resolution_change_formula():
    assert resolution_change(33, 2, 2) == (65, 0.25)
    assert resolution_change(17, 1, 0.5) == (9, 2.0)
    with pytest.raises(ValueError, match="factor"):
        resolution_change(33, 2, 1.3)
    # the finer grid contains the coarse one: every other sample is the same kernel value
    p = _params(2, 1, 1, 9, sigma=0.6)
    coarse = sample_kernel(p, 1, kernel_size=9)
    fine = sample_kernel(p, 1, kernel_size=17)
    np.testing.assert_allclose(fine[::2, ::2], coarse, rtol=1e-5, atol=1e-6)


def _alias_free(p, horizon):
    """Shrink the Gabor frequencies of ``p`` under the per-filter budget of ``horizon``."""
    top = float(jnp.max(magnet_frequencies(p["kernel_net"])))
    f = 0.8 * nyquist_budget(horizon, len(p["kernel_net"]["gabor"])) / top
    net = dict(p["kernel_net"])
    net["gabor"] = [{**g, "w": g["w"] * f, "gamma": g["gamma"] * f} for g in net["gabor"]]
    return {**p, "kernel_net": net}


def test_resampled_layer_at_2x_matches_original_when_alias_free():
    horizon, length = 17, 48
    t = np.arange(2 * length - 1) / 2.0  # fine grid; even samples = coarse grid
    signal = np.sin(2 * np.pi * t / 23.0) + 0.5 * np.cos(2 * np.pi * t / 11.0)
    fine_x = jnp.asarray(signal[None, :, None], jnp.float32)
    coarse_x = fine_x[:, ::2]
    new_k, scale = resolution_change(horizon, 1, 2)
    errors = {}
    for name, p in (
        ("aliased", _params(1, 1, 1, horizon, sigma=0.5, num_layers=3, hidden_features=8)),
        ("alias-free", None),
    ):
        if p is None:
            p = _alias_free(errors["_p"], horizon)
            assert float(magnet_aliasing_penalty(p["kernel_net"], horizon)) == 0.0
        else:
            assert float(magnet_aliasing_penalty(p["kernel_net"], horizon)) > 0.0
            errors["_p"] = p
        kw = dict(threshold=1e-3, conv_method="spatial")  # crop (almost) nothing: one bucket
        y_coarse = flex_conv(p, coarse_x, kernel_size=horizon, buckets=(horizon,), **kw)
        y_fine = flex_conv(p, fine_x, kernel_size=new_k, kernel_scale=scale, buckets=(new_k,), **kw)
        inner = slice(horizon, length - horizon)  # away from the zero-padded borders
        diff = np.abs(np.asarray(y_fine[0, ::2, 0] - y_coarse[0, :, 0]))[inner]
        errors[name] = diff.max() / np.abs(np.asarray(y_coarse[0, inner, 0])).max()
    assert errors["alias-free"] < 0.05, errors
    assert errors["aliased"] > 3 * errors["alias-free"], errors


def test_errors_name_the_argument():
    p = _params(2, 2, 3, 9)
    x = jnp.ones((1, 8, 8, 2))
    with pytest.raises(TypeError, match="`x`"):
        flex_conv(p, x.astype(jnp.int32), kernel_size=9)
    with pytest.raises(ValueError, match="spatial dims"):
        flex_conv(p, jnp.ones((1, 8, 2)), kernel_size=9)
    with pytest.raises(ValueError, match="padding_mode"):
        flex_conv(p, x, kernel_size=9, padding_mode="partial")
    with pytest.raises(ValueError, match="padding_mode"):
        flex_conv(p, jnp.ones((1, 4, 4, 2)), kernel_size=9, padding_mode="reflect")
    with pytest.raises(ValueError, match="in_features"):
        flex_conv(p, jnp.ones((1, 8, 8, 3)), kernel_size=9)
    with pytest.raises(ValueError, match="kernel_size"):
        flex_conv(p, x, kernel_size=8)
    with pytest.raises(ValueError, match="causal"):
        flex_conv(p, x, kernel_size=9, causal=True)
    with pytest.raises(ValueError, match="kernel_net"):
        flex_conv(p, x, kernel_size=9, kernel_net="mlp")
    with pytest.raises(ValueError, match="buckets"):
        flex_conv(p, x, kernel_size=9, buckets=(3, 7))
    with pytest.raises(ValueError, match="causal"):
        flex_conv_init(jax.random.key(0), 2, 1, 1, causal=True)


def test_empty_spatial_input_names_its_size():
    """Length 0 (or any empty spatial dim): a ValueError naming `x`'s spatial size."""
    p1 = _params(1, 2, 3, 9)
    with pytest.raises(ValueError, match=r"^`x` has spatial size \(0,\) \(shape \(2, 0, 2\)\)"):
        flex_conv(p1, jnp.ones((2, 0, 2)), kernel_size=9)
    with pytest.raises(ValueError, match=r"spatial size \(8, 0\) .*spatial dim 1 is empty"):
        flex_conv(_params(2, 2, 3, 9), jnp.ones((1, 8, 0, 2)), kernel_size=9)
    # An empty batch is fine: no positions are missing, the output is empty too.
    assert flex_conv(p1, jnp.ones((0, 16, 2)), kernel_size=9).shape == (0, 16, 3)
    assert math.isclose(threshold_radius(0.1), 2.1459660262893476, rel_tol=1e-9)

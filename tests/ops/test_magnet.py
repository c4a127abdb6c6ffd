"""MAGNet: equations against NumPy, init distributions, anti-aliasing penalty."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from convjax.ops.magnet import (
    magnet_aliasing_penalty,
    magnet_apply,
    magnet_frequencies,
    magnet_init,
    mask_frequency,
    nyquist_budget,
)


def magnet_numpy(params, x):
    """The MAGNet equations in float64 NumPy, one hidden unit at a time for the envelopes."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = np.asarray(x, np.float64)

    def gabor(g):
        env = np.ones((x.shape[0], g["w"].shape[1]))
        for d in range(x.shape[1]):
            env *= np.exp(-0.5 * (g["gamma"][d] * (x[:, d : d + 1] - g["mu"][d])) ** 2)
        return env * np.sin(x @ g["w"] + g["b"])

    h = gabor(p["gabor"][0])
    for g, lin in zip(p["gabor"][1:], p["hidden"]):
        h = gabor(g) * (h @ lin["w"] + lin["b"])
    return h @ p["out"]["w"] + p["out"]["b"]


@pytest.mark.parametrize("d", [1, 2, 3])
def test_apply_matches_numpy(d):
    params = magnet_init(jax.random.key(d), d, 5, hidden_features=8, num_layers=3)
    x = np.random.default_rng(0).uniform(-1, 1, (17, d)).astype(np.float32)
    y = magnet_apply(params, x)
    assert y.shape == (17, 5) and bool(jnp.all(jnp.isfinite(y)))
    np.testing.assert_allclose(y, magnet_numpy(params, x), rtol=2e-4, atol=2e-5)
    grid = magnet_apply(params, np.zeros((3, 4, d), np.float32))
    assert grid.shape == (3, 4, 5)


def test_init_statistics():
    d, h, layers, scale, alpha, beta = 2, 2048, 3, 25.6, 6.0, 1.0
    init = jax.jit(
        lambda k: magnet_init(
            k, d, 3, hidden_features=h, num_layers=layers, mu_center=0.2, mu_scale=0.125
        )
    )
    p = init(jax.random.key(0))
    n = d * h
    for layer, g in enumerate(p["gabor"]):
        gamma = np.asarray(g["gamma"], np.float64)
        shape_k = alpha / (layer + 1)
        # Gamma(k, beta): mean k / beta, variance k / beta^2
        assert abs(gamma.mean() - shape_k / beta) < 5 * math.sqrt(shape_k / n)
        assert abs(gamma.var() - shape_k / beta**2) < 0.15 * shape_k
        assert gamma.min() > 0
        mu = np.asarray(g["mu"])
        assert mu.min() >= 0.2 - 0.125 and mu.max() <= 0.2 + 0.125
        assert abs(mu.mean() - 0.2) < 5 * 0.125 / math.sqrt(3 * n)
        # sine weights: U(-1/sqrt(d), 1/sqrt(d)) * input_scale / sqrt(L + 1) * gamma
        u = np.asarray(g["w"], np.float64) / (scale / math.sqrt(layers + 1) * gamma)
        bound = 1 / math.sqrt(d)
        assert np.abs(u).max() <= bound * (1 + 1e-5)
        assert abs(u.var() - bound**2 / 3) < 0.05 * bound**2
        b = np.asarray(g["b"], np.float64)
        assert np.abs(b).max() <= math.pi and abs(b.var() - math.pi**2 / 3) < 0.3
    for lin in p["hidden"]:
        assert np.abs(np.asarray(lin["w"])).max() <= 1 / math.sqrt(h)


def test_output_bias_is_pytorch_default():
    """The reference's ``bias_init: None`` loads as the string 'None', so the output layer
    keeps PyTorch's default bias ``U(+-1/sqrt(H))`` (was zero before)."""
    h, out = 64, 8192
    p = magnet_init(jax.random.key(7), 2, out, hidden_features=h)
    b = np.asarray(p["out"]["b"], np.float64)
    bound = 1 / math.sqrt(h)
    assert np.abs(b).max() <= bound * (1 + 1e-6)
    # U(-c, c): mean 0, variance c^2 / 3 (standard errors over 8192 draws)
    assert abs(b.mean()) < 5 * bound / math.sqrt(3 * out)
    assert abs(b.var() - bound**2 / 3) < 0.05 * bound**2
    w = np.asarray(p["out"]["w"], np.float64)
    assert np.abs(w).max() <= bound * (1 + 1e-6)
    assert abs(w.var() - bound**2 / 3) < 0.02 * bound**2


def test_values_finite_for_large_parameters():
    p = magnet_init(jax.random.key(1), 2, 4, hidden_features=8, input_scale=1e4)
    p = jax.tree.map(lambda a: a * 50.0, p)
    y = magnet_apply(p, np.random.default_rng(0).uniform(-1, 1, (64, 2)).astype(np.float32))
    assert bool(jnp.all(jnp.isfinite(y)))


def _reference_frequencies(params, s):
    """The reference ``gabor_layer_frequencies`` ("gabor", "together") replayed in NumPy.

    Its sine weights are a 1x1 conv weight ``(H, d, 1, 1)`` and its gammas ``(H, d)``; their
    sum broadcasts to ``(H, d, H, d)`` (NumPy broadcasts as PyTorch does) before the max.
    """
    out = []
    for g in params["gabor"]:
        w = np.asarray(g["w"], np.float64).T[:, :, None, None]  # (H, d, 1, 1)
        gamma = np.asarray(g["gamma"], np.float64).T  # (H, d)
        combined = np.abs(w / (2 * math.pi)) + np.abs(gamma * s / (2 * math.pi))
        assert combined.ndim == 4
        out.append(combined.max())
    return out


def _per_entry_frequencies(params, s):
    """``max_j,d (|W_jd| + s |gamma_jd|) / 2 pi`` per filter, one entry at a time."""
    out = []
    for g in params["gabor"]:
        f = 0.0
        w, gamma = np.asarray(g["w"], np.float64), np.asarray(g["gamma"], np.float64)
        for j in range(w.shape[1]):
            for d in range(w.shape[0]):
                f = max(f, (abs(w[d, j]) + s * abs(gamma[d, j])) / (2 * math.pi))
        out.append(f)
    return out


def _penalty_numpy(params, k, weight, s=2.0, mask_sigma=None, rule="reference"):
    """The authors' regulariser ("together", l2-relu; "gabor+mask" with a mask) as loops."""
    freqs = (_reference_frequencies if rule == "reference" else _per_entry_frequencies)(params, s)
    n = len(freqs)
    mask_freq = 0.0
    if mask_sigma is not None:
        mask_freq = s * max(1.0 / abs(float(v)) for v in mask_sigma) / (2 * math.pi)
    total = 0.0
    for f in freqs:
        total += max(f + mask_freq / n - (k - 1) / 2 * 0.5 / n, 0.0) ** 2
    return weight * total


def test_aliasing_penalty_zero_under_budget_positive_above():
    p = magnet_init(jax.random.key(2), 2, 4, hidden_features=16)
    k = 33
    assert nyquist_budget(k, 4) == pytest.approx(2.0)
    above = magnet_aliasing_penalty(p, k)
    assert float(above) > 0
    assert float(above) == pytest.approx(_penalty_numpy(p, k, 0.1), rel=1e-5)
    # shrink every Gabor filter's frequencies until all are under the per-filter budget
    top = float(jnp.max(magnet_frequencies(p)))
    factor = 0.9 * nyquist_budget(k, 4) / top
    small = dict(p)
    small["gabor"] = [{**g, "w": g["w"] * factor, "gamma": g["gamma"] * factor} for g in p["gabor"]]
    assert float(jnp.max(magnet_frequencies(small))) < nyquist_budget(k, 4)
    assert float(magnet_aliasing_penalty(small, k)) == 0.0
    # a finer grid (larger k) has a larger budget
    assert float(magnet_aliasing_penalty(p, 129)) < float(above)


def test_aliasing_penalty_matches_reference_formula():
    p = magnet_init(jax.random.key(5), 2, 4, hidden_features=16)
    # shrink filters so that some are above and some below their budget
    p["gabor"] = [
        {**g, "w": g["w"] * f, "gamma": g["gamma"] * f}
        for g, f in zip(p["gabor"], (0.05, 0.1, 0.3, 1.0))
    ]
    sigma = jnp.array([0.2, 0.075])
    cases = ((33, 0.1, 2.0, sigma), (17, 0.5, 1.0, sigma), (33, 0.1, 2.0, None))
    for (k, weight, s, mask), rule in itertools.product(cases, ("reference", "per_entry")):
        got = magnet_aliasing_penalty(p, k, weight, s, mask_sigma=mask, rule=rule)
        mask_np = None if mask is None else np.asarray(mask)
        want = _penalty_numpy(p, k, weight, s, mask_np, rule)
        assert float(got) == pytest.approx(want, rel=1e-5)
    freqs = np.asarray(magnet_frequencies(p))
    budget = nyquist_budget(33, 4)
    assert np.any(freqs < budget) and np.any(freqs > budget)  # both branches of the relu
    # the mask term: a narrower mask (higher frequency) costs more, and its gradient widens it
    grad = jax.grad(lambda sg: magnet_aliasing_penalty(p, 33, mask_sigma=sg))(sigma)
    assert float(grad[1]) < 0 and float(grad[0]) == 0.0  # only the narrowest dim counts
    assert float(mask_frequency(sigma)) == pytest.approx(2.0 / (2 * math.pi) / 0.075, rel=1e-6)


def test_frequency_rules_reference_broadcast_vs_per_entry():
    """Default = the reference's broadcast sum of maxima; "per_entry" = the paper's max of sums,
    never larger, and strictly smaller when the largest |W| and |gamma| sit in different units."""
    p = magnet_init(jax.random.key(11), 2, 4, hidden_features=16)
    ref = np.asarray(magnet_frequencies(p))
    per = np.asarray(magnet_frequencies(p, rule="per_entry"))
    np.testing.assert_allclose(ref, _reference_frequencies(p, 2.0), rtol=1e-6)
    np.testing.assert_allclose(per, _per_entry_frequencies(p, 2.0), rtol=1e-6)
    assert np.all(per <= ref * (1 + 1e-6)) and np.any(per < ref * (1 - 1e-3))
    # one unit holding both maxima: the two rules agree
    g = p["gabor"][0]
    one = {
        **p,
        "gabor": [{**g, "w": g["w"].at[0, 0].set(500.0), "gamma": g["gamma"].at[0, 0].set(500.0)}],
    }
    f_ref = float(magnet_frequencies(one)[0])
    assert f_ref == pytest.approx(float(magnet_frequencies(one, rule="per_entry")[0]), rel=1e-6)
    assert f_ref == pytest.approx(1500.0 / (2 * math.pi), rel=1e-6)
    with pytest.raises(ValueError, match="rule"):
        magnet_frequencies(p, rule="max")


def test_gradients():
    p = magnet_init(jax.random.key(3), 2, 2, hidden_features=4, num_layers=2, input_scale=4.0)
    x = jnp.asarray(np.random.default_rng(1).uniform(-0.5, 0.5, (6, 2)), jnp.float32)
    apply = jax.jit(lambda q: magnet_apply(q, x))
    check_grads(apply, (p,), order=1, modes=("rev",), atol=5e-2, rtol=5e-2)
    big = magnet_init(jax.random.key(4), 2, 2, hidden_features=4, num_layers=2)
    penalty = jax.jit(lambda q: magnet_aliasing_penalty(q, 9))
    check_grads(penalty, (big,), order=1, modes=("rev",), atol=5e-2, rtol=5e-2)
    g = jax.grad(penalty)(big)
    assert float(jnp.abs(g["gabor"][0]["w"]).max()) > 0
    assert float(jnp.abs(g["gabor"][0]["mu"]).max()) == 0  # envelopes' centres don't matter


def test_errors():
    with pytest.raises(ValueError, match="num_dims"):
        magnet_init(jax.random.key(0), 4, 2)
    with pytest.raises(ValueError, match="hidden_features"):
        magnet_init(jax.random.key(0), 2, 2, hidden_features=0)
    with pytest.raises(ValueError, match="input_scale"):
        magnet_init(jax.random.key(0), 2, 2, input_scale=-1.0)
    p = magnet_init(jax.random.key(0), 2, 2, hidden_features=4)
    with pytest.raises(ValueError, match="coords"):
        magnet_apply(p, jnp.zeros((5, 3)))

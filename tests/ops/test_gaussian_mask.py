"""Gaussian mask, crop size and bucket ladder against their closed forms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax.ops.gaussian_mask import (
    SIGMA_FLOOR,
    bucket_index,
    crop_support,
    default_buckets,
    gaussian_mask,
    grid_coordinates,
    mask_crop_size,
    mesh_coordinates,
    positive_sigma,
    threshold_radius,
)


def _mask_numpy(horizon, mu, sigma):
    x = np.linspace(-1.0, 1.0, horizon)
    out = np.ones((horizon,) * len(mu))
    for d, (m, s) in enumerate(zip(mu, sigma)):
        shape = [1] * len(mu)
        shape[d] = horizon
        out = out * np.exp(-0.5 * ((x - m) / s) ** 2).reshape(shape)
    return out


def _crop_by_counting(horizon, mu, sigma, threshold, causal=False):
    """Smallest centred (or trailing) crop holding every grid point with mask >= T, by search."""
    m = _mask_numpy(horizon, mu, sigma)
    keep = m >= threshold
    if causal:
        idx = np.nonzero(keep)[0]
        return 1 if idx.size == 0 else horizon - idx.min()
    centre = (horizon - 1) // 2
    need = 0
    for index in zip(*np.nonzero(keep)):
        need = max(need, *(abs(i - centre) for i in index))
    return 2 * need + 1


def test_paper_closed_form_33_0075_01():
    mu, sigma = np.zeros(2), np.full(2, 0.075)
    assert int(mask_crop_size(jnp.asarray(mu), jnp.asarray(sigma), 33, 0.1)) == 5
    assert _crop_by_counting(33, mu, sigma, 0.1) == 5
    assert math.isclose(threshold_radius(0.1), math.sqrt(-2 * math.log(0.1)))
    assert abs(threshold_radius(0.1) - 2.146) < 1e-3
    values = gaussian_mask(mesh_coordinates(grid_coordinates(33), 2), mu, sigma)
    np.testing.assert_allclose(values, _mask_numpy(33, mu, sigma), rtol=1e-5, atol=1e-7)
    centre_row = np.asarray(values)[16]
    assert np.all(centre_row[14:19] >= 0.1) and centre_row[13] < 0.1 and centre_row[19] < 0.1


@pytest.mark.parametrize(
    "horizon,mu,sigma",
    [(33, [0.1, -0.2], [0.05, 0.3]), (29, [0.0], [0.5]), (17, [0.3, 0.0, -0.1], [0.1, 0.2, 0.05])],
)
def test_crop_holds_every_point_above_threshold(horizon, mu, sigma):
    got = int(mask_crop_size(jnp.asarray(mu), jnp.asarray(sigma), horizon, 0.1))
    assert got >= min(_crop_by_counting(horizon, np.array(mu), np.array(sigma), 0.1), horizon)
    assert got % 2 == 1 and got <= horizon


@pytest.mark.parametrize("horizon", [9, 29, 33])
def test_crop_is_tight_for_centred_masks(horizon):
    for sigma in np.linspace(0.02, 1.2, 25):
        for d in (1, 2):
            exact = _crop_by_counting(horizon, np.zeros(d), np.full(d, sigma), 0.1)
            got = int(mask_crop_size(jnp.zeros(d), jnp.full(d, sigma), horizon, 0.1))
            assert got == min(exact, horizon), (sigma, d)


def test_causal_crop_counts_back_from_newest_step():
    for sigma in (0.075, 0.2, 0.6):
        got = int(mask_crop_size(jnp.ones(1), jnp.full(1, sigma), 33, 0.1, causal=True))
        assert got == _crop_by_counting(33, np.ones(1), np.full(1, sigma), 0.1, causal=True)
    np.testing.assert_allclose(grid_coordinates(9, 3, causal=True), [0.5, 0.75, 1.0])


def test_bucket_index_is_smallest_bucket_holding_the_crop():
    ladder = default_buckets(33)
    assert ladder == (5, 9, 17, 33) and default_buckets(29) == (5, 9, 17, 29)
    for sigma in np.linspace(0.01, 1.5, 40):
        exact = int(mask_crop_size(jnp.zeros(2), jnp.full(2, sigma), 33, 0.1))
        idx = int(bucket_index(jnp.zeros(2), jnp.full(2, sigma), 33, ladder, 0.1))
        assert ladder[idx] >= exact
        assert idx == 0 or ladder[idx - 1] < exact


def test_bucket_index_jits_and_has_no_gradient_path():
    f = jax.jit(lambda s: bucket_index(jnp.zeros(1), s, 33, (5, 9, 17, 33)))
    assert int(f(jnp.full(1, 0.075))) == 0 and int(f(jnp.full(1, 0.9))) == 3


def test_positive_sigma_is_abs_sigma_smoothly_floored():
    sigma = jnp.array([-1e30, -0.3, -1e-12, 0.0, 0.075, 5.0, 1e30])
    used = positive_sigma(sigma)
    assert bool(jnp.all(used >= SIGMA_FLOOR * 0.999)) and bool(jnp.all(jnp.isfinite(used)))
    np.testing.assert_allclose(used[np.array([1, 4, 5])], [0.3, 0.075, 5.0], rtol=1e-6)
    assert float(used[3]) == pytest.approx(SIGMA_FLOOR)
    # derivative ~ sign(sigma): no gradient lost away from 0, none infinite at 0
    grad = jax.vmap(jax.grad(lambda s: positive_sigma(s)))(sigma)
    np.testing.assert_allclose(grad[np.array([1, 4, 5])], [-1.0, 1.0, 1.0], atol=1e-5)
    assert bool(jnp.all(jnp.isfinite(grad)))
    # extreme sigma: finite mask everywhere (no 0/0, no inf)
    c = mesh_coordinates(grid_coordinates(9), 1)
    for s in (0.0, 1e6):
        m = gaussian_mask(c, jnp.zeros(1), positive_sigma(jnp.full(1, s)))
        assert bool(jnp.all(jnp.isfinite(m)))


def _reference_keep(horizon, mu, sigma, threshold, causal):
    """The authors' crop per dim as index ranges (float64 loop), combined over dims."""
    grid = np.linspace(-1.0, 1.0, horizon)
    aux = np.asarray(sigma) * np.sqrt(-2 * np.log(threshold))
    keeps = []
    for m, a in zip(mu, aux):
        if causal:
            root = m - a
            keep = np.ones(horizon, bool) if abs(root) >= 1 else grid > root
        else:
            root = abs(m) + a
            keep = np.ones(horizon, bool) if root >= 1 else np.abs(grid) < root
        keeps.append(keep)
    return np.stack(np.meshgrid(*keeps, indexing="ij"), -1).all(-1)


@pytest.mark.parametrize(
    "mu,sigma",
    [
        ([0.0, 0.0], [0.1, 0.1]),
        ([0.0, 0.0], [0.05, 0.2]),
        ([0.3, -0.1], [0.07, 0.3]),
        ([0.0, 0.0], [0.6, 0.02]),
        ([1.0], [0.15]),
        ([0.6], [0.1]),
        ([1.5], [0.1]),  # root beyond the border: keep everything, as the reference does
    ],
    ids=lambda v: str(v),
)
def test_crop_support_matches_reference_rule_per_dim(mu, sigma):
    causal = len(mu) == 1  # the reference's 1-D kernels are causal
    horizon = 33
    grid = mesh_coordinates(grid_coordinates(horizon, causal=causal), len(mu))
    got = np.asarray(crop_support(grid, jnp.asarray(mu), jnp.asarray(sigma), 0.1, causal=causal))
    want = _reference_keep(horizon, mu, sigma, 0.1, causal)
    np.testing.assert_array_equal(got.astype(bool), want)
    size = int(mask_crop_size(jnp.asarray(mu), jnp.asarray(sigma), horizon, causal=causal))
    idx = np.nonzero(want)
    if causal:
        assert size == horizon - idx[0].min()
    else:
        centre = (horizon - 1) // 2
        assert size == 2 * max(np.abs(i - centre).max() for i in idx) + 1


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="kernel_size"):
        grid_coordinates(8)
    with pytest.raises(ValueError, match="threshold"):
        mask_crop_size(jnp.zeros(1), jnp.ones(1), 9, 1.5)
    with pytest.raises(ValueError, match="buckets"):
        bucket_index(jnp.zeros(1), jnp.ones(1), 9, (5, 7))
    with pytest.raises(ValueError, match="buckets"):
        bucket_index(jnp.zeros(1), jnp.ones(1), 9, (4, 9))
    with pytest.raises(ValueError, match="mu"):
        gaussian_mask(jnp.zeros((3, 2)), jnp.zeros(1), jnp.ones(1))
    with pytest.raises(ValueError, match="kernel_size"):
        mask_crop_size(jnp.zeros(1), jnp.ones(1), 8)  # even: causal kernels only
    assert int(mask_crop_size(jnp.ones(1), jnp.full(1, 0.2), 8, causal=True)) == 2

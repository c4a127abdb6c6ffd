"""FlexConv's learnable Gaussian mask, its sampling grid and its crop size.

Romero et al., "FlexConv: Continuous Kernel Convolutions with Differentiable Kernel Sizes"
(ICLR 2022, arXiv 2110.08059), Sec. 3. A kernel of maximum size ``horizon`` (odd) lives on the
grid ``linspace(-1, 1, horizon)`` per spatial dim, spacing ``h = 2 / (horizon - 1)``. The
mask multiplies the continuous kernel:

    m(x) = prod_d exp(-1/2 ((x_d - mu_d) / sigma_d)^2)                          (FlexConv eq. 3)

and the kernel is cropped where the mask drops below a threshold ``T``:

    m(x) >= T  <=>  |x_d - mu_d| <= sigma_d sqrt(-2 ln T)      (~ 2.146 sigma for T = 0.1)

Sigma is kept positive by parametrisation, never by clipping:
``sigma = softplus(sigma_raw) + SIGMA_FLOOR``; the floor keeps ``(x - mu) / sigma`` finite even
if training drives ``sigma_raw`` to ``-inf`` (the official code has no constraint and produced
NaNs when sigma reached 0).

Crop conventions (static shapes, see :mod:`convjax.ops.flex_conv`):
  * non-causal: the crop is the central ``size`` grid points of every dim (a centred cube), so
    the conv stays "SAME"-aligned. It must hold every grid point with ``m >= T``, i.e.
    ``|x_d| <= |mu_d| + sigma_d sqrt(-2 ln T)``; one size (the max over dims) for all dims.
  * causal (1-D only): the crop is the *last* ``size`` grid points (the newest steps, ``x = 1``
    is lag 0), reaching back to ``mu - sigma sqrt(-2 ln T)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from convjax._checks import check_positive

#: Lower bound added to ``softplus(sigma_raw)``: sigma > 0 for every finite raw value.
SIGMA_FLOOR = 1e-4


def _check_horizon(horizon: int, name: str = "kernel_size") -> None:
    if not isinstance(horizon, (int, np.integer)) or isinstance(horizon, bool):
        raise TypeError(f"`{name}` must be an odd int, got {horizon!r}.")
    if horizon < 1 or horizon % 2 == 0:
        raise ValueError(f"`{name}` must be an odd int >= 1, got {horizon!r}.")


def _check_threshold(threshold: float) -> None:
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"`threshold` must be in (0, 1), got {threshold!r}.")


def threshold_radius(threshold: float) -> float:
    """``sqrt(-2 ln T)``: the mask's half-width above ``T`` in units of sigma (2.146 for 0.1).

    Example:
      >>> round(threshold_radius(0.1), 3)
      2.146
    """
    _check_threshold(threshold)
    return math.sqrt(-2.0 * math.log(float(threshold)))


def sigma_from_raw(sigma_raw: jax.Array) -> jax.Array:
    """Positive sigma from its unconstrained parameter: ``softplus(raw) + SIGMA_FLOOR``.

    Example:
      >>> float(sigma_from_raw(raw_from_sigma(0.075)))  # doctest: +ELLIPSIS
      0.07...
    """
    return jax.nn.softplus(sigma_raw) + SIGMA_FLOOR


def raw_from_sigma(sigma: float | np.ndarray) -> np.ndarray:
    """Inverse of :func:`sigma_from_raw` (NumPy, for initialisation). ``sigma > SIGMA_FLOOR``."""
    s = np.asarray(sigma, dtype=np.float64) - SIGMA_FLOOR
    if np.any(s <= 0):
        raise ValueError(f"`sigma` must be > {SIGMA_FLOOR}, got {sigma!r}.")
    # softplus^-1(s) = log(expm1(s)), written stably for large s.
    return np.where(s > 20.0, s + np.log1p(-np.exp(-s)), np.log(np.expm1(np.minimum(s, 20.0))))


def grid_coordinates(horizon: int, size: int | None = None, *, causal: bool = False) -> np.ndarray:
    """1-D sample positions of a (cropped) kernel on the grid ``linspace(-1, 1, horizon)``.

    Args:
      horizon: odd maximum kernel size.
      size: number of points kept (odd when not causal); ``None`` = ``horizon``.
      causal: keep the last ``size`` points (newest steps) instead of the central ones.

    Returns:
      ``(size,)`` float32 NumPy array (a compile-time constant).

    Example:
      >>> grid_coordinates(33, 5)
      array([-0.125 , -0.0625,  0.    ,  0.0625,  0.125 ], dtype=float32)
    """
    _check_horizon(horizon)
    size = horizon if size is None else size
    if not isinstance(size, (int, np.integer)) or not 1 <= size <= horizon:
        raise ValueError(f"`size` must be an int in [1, {horizon}], got {size!r}.")
    full = np.linspace(-1.0, 1.0, horizon) if horizon > 1 else np.zeros(1)
    if causal:
        return full[horizon - size :].astype(np.float32)
    if size % 2 == 0:
        raise ValueError(f"`size` must be odd for a centred crop, got {size!r}.")
    start = (horizon - size) // 2
    return full[start : start + size].astype(np.float32)


def mesh_coordinates(coords_1d: np.ndarray, num_dims: int) -> np.ndarray:
    """The ``num_dims``-D grid of a 1-D coordinate vector: ``(*(len,) * num_dims, num_dims)``.

    Example:
      >>> mesh_coordinates(np.array([-1.0, 0.0, 1.0]), 2).shape
      (3, 3, 2)
    """
    grids = np.meshgrid(*([np.asarray(coords_1d)] * num_dims), indexing="ij")
    return np.stack(grids, axis=-1).astype(np.float32)


def gaussian_mask(coords: jax.Array, mu: jax.Array, sigma: jax.Array) -> jax.Array:
    """FlexConv mask ``prod_d exp(-1/2 ((x_d - mu_d) / sigma_d)^2)`` (eq. 3).

    Args:
      coords: ``(..., d)`` positions.
      mu: ``(d,)`` centre. sigma: ``(d,)`` positive widths.

    Returns:
      ``(...)`` mask values in ``[0, 1]``.

    Example:
      >>> c = mesh_coordinates(grid_coordinates(33), 2)
      >>> gaussian_mask(c, jnp.zeros(2), jnp.full(2, 0.075)).shape
      (33, 33)
    """
    coords = jnp.asarray(coords)
    if coords.shape[-1] != jnp.shape(mu)[-1] or jnp.shape(mu) != jnp.shape(sigma):
        raise ValueError(
            f"`coords` last dim ({coords.shape[-1]}), `mu` {jnp.shape(mu)} and `sigma` "
            f"{jnp.shape(sigma)} must all have the number of spatial dims."
        )
    z = (coords - mu) / sigma
    return jnp.exp(-0.5 * jnp.sum(z * z, axis=-1))


def _required_points(
    mu: jax.Array, sigma: jax.Array, horizon: int, threshold: float, causal: bool
) -> jax.Array:
    """Float scalar q: the crop must hold q grid steps (each side if centred, back if causal)."""
    _check_horizon(horizon)
    step = 2.0 / (horizon - 1) if horizon > 1 else 1.0
    radius = threshold_radius(threshold)
    mu = jax.lax.stop_gradient(jnp.asarray(mu, jnp.float32))
    sigma = jax.lax.stop_gradient(jnp.asarray(sigma, jnp.float32))
    if causal:
        if mu.shape != (1,):
            raise ValueError(f"a causal mask is 1-D: `mu` must have shape (1,), got {mu.shape}.")
        return jnp.floor((1.0 - (mu[0] - radius * sigma[0])) / step)
    return jnp.max(jnp.floor((jnp.abs(mu) + radius * sigma) / step))


def mask_crop_size(
    mu: jax.Array,
    sigma: jax.Array,
    horizon: int,
    threshold: float = 0.1,
    *,
    causal: bool = False,
) -> jax.Array:
    """Exact crop size: the fewest grid points (per dim) holding every point with mask >= T.

    Non-causal: ``2 floor((|mu| + sigma sqrt(-2 ln T)) / h) + 1`` (max over dims), capped at
    ``horizon``. Causal: ``floor((1 - mu + sigma sqrt(-2 ln T)) / h) + 1`` trailing points.

    Returns:
      int32 scalar (traceable; not a static shape: use a bucket ladder under ``jit``).

    Example:
      >>> int(mask_crop_size(jnp.zeros(2), jnp.full(2, 0.075), 33, 0.1))
      5
    """
    q = _required_points(mu, sigma, horizon, threshold, causal)
    size = q + 1.0 if causal else 2.0 * q + 1.0
    size = jnp.clip(size, 1.0, float(horizon))  # a count of grid points, not a parameter
    return size.astype(jnp.int32)


def check_buckets(buckets: tuple[int, ...], horizon: int, causal: bool) -> tuple[int, ...]:
    """Validate a ladder of crop sizes: ascending ints in [1, horizon] ending at ``horizon``."""
    try:
        out = tuple(int(b) for b in buckets)
    except TypeError:
        raise TypeError(f"`buckets` must be a sequence of ints, got {buckets!r}.") from None
    if not out or list(out) != sorted(set(out)) or out[0] < 1 or out[-1] != horizon:
        raise ValueError(
            f"`buckets` must be strictly ascending ints >= 1 ending at kernel_size={horizon}, "
            f"got {buckets!r}."
        )
    if not causal and any(b % 2 == 0 for b in out):
        raise ValueError(f"`buckets` must be odd for a non-causal kernel, got {buckets!r}.")
    return out


def default_buckets(horizon: int) -> tuple[int, ...]:
    """Default crop ladder: ``5, 9, 17, 33, ...`` (``2^j + 1``) below ``horizon``, then ``horizon``.

    Example:
      >>> default_buckets(33), default_buckets(29), default_buckets(3)
      ((5, 9, 17, 33), (5, 9, 17, 29), (3,))
    """
    _check_horizon(horizon)
    sizes = []
    j = 2
    while 2**j + 1 < horizon:
        sizes.append(2**j + 1)
        j += 1
    return (*sizes, horizon)


def bucket_index(
    mu: jax.Array,
    sigma: jax.Array,
    horizon: int,
    buckets: tuple[int, ...],
    threshold: float = 0.1,
    *,
    causal: bool = False,
) -> jax.Array:
    """Index of the smallest bucket size that holds the exact threshold crop (int32 scalar).

    Computed on-device from ``stop_gradient(mu, sigma)``, so it can drive ``lax.switch`` inside
    a jitted/pmapped step with no host round trip.

    Example:
      >>> int(bucket_index(jnp.zeros(2), jnp.full(2, 0.2), 33, (5, 9, 17, 33)))
      2
    """
    buckets = check_buckets(tuple(buckets), horizon, causal)
    q = _required_points(mu, sigma, horizon, threshold, causal)
    if causal:
        capacity = np.asarray([b - 1 for b in buckets], np.float32)
    else:
        capacity = np.asarray([(b - 1) // 2 for b in buckets], np.float32)
    idx = jnp.sum((q > capacity).astype(jnp.int32))
    return jnp.minimum(idx, len(buckets) - 1)


def check_sigma(value: float, name: str = "mask_init_sigma") -> None:
    """Raise ``ValueError`` unless ``value > SIGMA_FLOOR``."""
    check_positive(value, name)
    if value <= SIGMA_FLOOR:
        raise ValueError(f"`{name}` must be > {SIGMA_FLOOR}, got {value!r}.")

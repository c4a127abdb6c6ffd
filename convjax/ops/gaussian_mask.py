"""FlexConv's learnable Gaussian mask, its sampling grid and its crop.

Romero et al., "FlexConv: Continuous Kernel Convolutions with Differentiable Kernel Sizes"
(ICLR 2022, arXiv 2110.08059), Sec. 3. A kernel of maximum size ``horizon`` lives on the
grid ``linspace(-1, 1, horizon)`` per spatial dim, spacing ``h = 2 / (horizon - 1)``. The
mask multiplies the continuous kernel:

    m(x) = prod_d exp(-1/2 ((x_d - mu_d) / sigma_d)^2)                          (FlexConv eq. 3)

and the kernel is cropped to the region where the mask of each dim is above a threshold
``T``. The crop follows the authors' dynamic cropping, dimension by dimension, with the
threshold root ``r_d = sigma_d sqrt(-2 ln T)`` (~ 2.146 sigma for T = 0.1):

  * centred (images): keep grid points with ``|x_d| < |mu_d| + r_d`` -- a centred window that
    holds the whole mask support ``|x_d - mu_d| <= r_d`` (and, for ``mu_d != 0``, the mirrored
    points on the other side, as the reference keeps the kernel centred);
  * causal (1-D sequences, ``x = 1`` is the newest step): keep ``x > mu - r``.
  * A dim whose root reaches the border (``|mu_d| + r_d >= 1``, resp. ``|mu - r| >= 1``)
    keeps its whole grid.

:func:`crop_support` evaluates this rule on any grid points; :mod:`convjax.ops.flex_conv`
multiplies the kernel by it inside every bucket of its static-shape ladder, so the bucket
only changes the cost, never the function.

Sigma is the parameter itself (as in the reference, initialised at 0.075 and trained at 0.1x
the learning rate), so the optimizer sees the reference's dynamics. Positivity is enforced
where sigma is used, smoothly and without clipping: :func:`positive_sigma` returns
``sqrt(sigma^2 + SIGMA_FLOOR^2)``. The mask is even in sigma, and the reference's crop uses
``|sigma|`` (it takes the absolute roots), so this equals the reference up to
``SIGMA_FLOOR^2 / (2 |sigma|)`` (7e-8 at sigma = 0.075); its derivative
``sigma / sqrt(sigma^2 + floor^2)`` is ``sign(sigma)`` to the same precision, so no gradient
is lost, and the floor keeps ``(x - mu) / sigma`` finite when sigma passes through 0 (the
reference produced NaNs there).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from convjax._checks import check_positive

#: Smooth lower bound of the sigma used in the mask: ``sqrt(sigma^2 + SIGMA_FLOOR^2)``.
SIGMA_FLOOR = 1e-4


def _check_horizon(horizon: int, name: str = "kernel_size", *, causal: bool = False) -> None:
    kind = "an int" if causal else "an odd int"
    if not isinstance(horizon, (int, np.integer)) or isinstance(horizon, bool):
        raise TypeError(f"`{name}` must be {kind}, got {horizon!r}.")
    if horizon < 1 or (not causal and horizon % 2 == 0):
        raise ValueError(
            f"`{name}` must be {kind} >= 1"
            + ("" if causal else " (even sizes only for causal kernels)")
            + f", got {horizon!r}."
        )


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


def positive_sigma(sigma: jax.Array) -> jax.Array:
    """The mask width used in the mask and crop: ``sqrt(sigma^2 + SIGMA_FLOOR^2)`` (> 0).

    Args:
      sigma: ``(d,)`` the trained sigma parameter (any sign).

    Returns:
      ``(d,)`` float, ``|sigma|`` to within ``SIGMA_FLOOR^2 / (2 |sigma|)``.

    Example:
      >>> positive_sigma(jnp.array([0.075, -0.075, 0.0]))  # doctest: +ELLIPSIS
      Array([0.07500007, 0.07500007, 0.0001    ], dtype=float32)
    """
    sigma = jnp.asarray(sigma)
    return jnp.hypot(sigma, jnp.asarray(SIGMA_FLOOR, sigma.dtype))  # no overflow of sigma^2


def grid_coordinates(horizon: int, size: int | None = None, *, causal: bool = False) -> np.ndarray:
    """1-D sample positions of a (cropped) kernel on the grid ``linspace(-1, 1, horizon)``.

    Args:
      horizon: maximum kernel size (odd unless ``causal``).
      size: number of points kept (odd when not causal); ``None`` = ``horizon``.
      causal: keep the last ``size`` points (newest steps) instead of the central ones.

    Returns:
      ``(size,)`` float32 NumPy array (a compile-time constant).

    Example:
      >>> grid_coordinates(33, 5)
      array([-0.125 , -0.0625,  0.    ,  0.0625,  0.125 ], dtype=float32)
    """
    _check_horizon(horizon, causal=causal)
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
      mu: ``(d,)`` centre. sigma: ``(d,)`` positive widths (see :func:`positive_sigma`).

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


def crop_support(
    coords: jax.Array,
    mu: jax.Array,
    sigma: jax.Array,
    threshold: float = 0.1,
    *,
    causal: bool = False,
) -> jax.Array:
    """1 where the reference's dynamic crop keeps a grid point, 0 where it removes it.

    Per dim ``d`` with root ``r_d = sigma_d sqrt(-2 ln T)`` (module docstring):
    centred: keep ``|x_d| < |mu_d| + r_d``, or the whole dim if ``|mu_d| + r_d >= 1``;
    causal (1-D): keep ``x > mu - r``, or everything if ``|mu - r| >= 1``. A point is kept
    when every dim keeps it. Computed from ``stop_gradient(mu, sigma)``: the crop boundary
    carries no gradient (the reference crops under ``torch.no_grad``).

    Args:
      coords: ``(..., d)`` grid positions. mu, sigma: ``(d,)`` (sigma positive).
      threshold: the crop threshold ``T``. causal: the 1-D causal rule.

    Returns:
      ``(...)`` float32 of 0 and 1.

    Example:
      >>> crop_support(grid_coordinates(9)[:, None], jnp.zeros(1), jnp.full(1, 0.2))
      Array([0., 0., 0., 1., 1., 1., 0., 0., 0.], dtype=float32)
    """
    radius = threshold_radius(threshold)
    coords = jnp.asarray(coords, jnp.float32)
    mu = jax.lax.stop_gradient(jnp.asarray(mu, jnp.float32))
    sigma = jax.lax.stop_gradient(jnp.asarray(sigma, jnp.float32))
    if coords.shape[-1] != mu.shape[-1] or mu.shape != sigma.shape:
        raise ValueError(
            f"`coords` last dim ({coords.shape[-1]}), `mu` {mu.shape} and `sigma` "
            f"{sigma.shape} must all have the number of spatial dims."
        )
    if causal:
        if mu.shape != (1,):
            raise ValueError(f"a causal mask is 1-D: `mu` must have shape (1,), got {mu.shape}.")
        root = mu - radius * sigma
        keep = (coords > root) | (jnp.abs(root) >= 1.0)
    else:
        root = jnp.abs(mu) + radius * sigma
        keep = (jnp.abs(coords) < root) | (root >= 1.0)
    return jnp.all(keep, axis=-1).astype(jnp.float32)


def mask_crop_size(
    mu: jax.Array,
    sigma: jax.Array,
    horizon: int,
    threshold: float = 0.1,
    *,
    causal: bool = False,
) -> jax.Array:
    """Size of the reference crop: the fewest grid points (per dim) holding every kept point.

    Counts the points :func:`crop_support` keeps on the 1-D grid of each dim and returns the
    largest (centred: ``2 max|j - centre| + 1``; causal: trailing points), so a centred
    (trailing) window of this size -- or any larger bucket -- contains the whole crop.

    Returns:
      int32 scalar in ``[1, horizon]`` (traceable; not a static shape: use a bucket ladder
      under ``jit``).

    Example:
      >>> int(mask_crop_size(jnp.zeros(2), jnp.full(2, 0.075), 33, 0.1))
      5
    """
    _check_horizon(horizon, causal=causal)
    _check_threshold(threshold)
    mu = jnp.asarray(mu, jnp.float32)
    sigma = jnp.asarray(sigma, jnp.float32)
    if mu.ndim != 1 or mu.shape != sigma.shape:
        raise ValueError(f"`mu` {mu.shape} and `sigma` {sigma.shape} must both have shape (d,).")
    grid = grid_coordinates(horizon, causal=causal)
    index = np.arange(horizon)
    keep = jax.vmap(
        lambda m, s: crop_support(grid[:, None], m[None], s[None], threshold, causal=causal)
    )(mu, sigma)  # (d, horizon)
    if causal:
        return jnp.max(keep * (horizon - index)).astype(jnp.int32)
    reach = jnp.max(keep * np.abs(index - (horizon - 1) // 2))
    return (2 * reach + 1).astype(jnp.int32)


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

    Reaches any horizon, e.g. a causal kernel over a whole 784-step sequence.

    Example:
      >>> default_buckets(33), default_buckets(29), default_buckets(3)
      ((5, 9, 17, 33), (5, 9, 17, 29), (3,))
      >>> default_buckets(784)
      (5, 9, 17, 33, 65, 129, 257, 513, 784)
    """
    _check_horizon(horizon, causal=True)
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
    """Index of the smallest bucket size that holds the reference crop (int32 scalar).

    Computed on-device from ``stop_gradient(mu, sigma)``, so it can drive ``lax.switch`` inside
    a jitted/pmapped step with no host round trip.

    Example:
      >>> int(bucket_index(jnp.zeros(2), jnp.full(2, 0.2), 33, (5, 9, 17, 33)))
      2
    """
    buckets = check_buckets(tuple(buckets), horizon, causal)
    size = mask_crop_size(mu, sigma, horizon, threshold, causal=causal)
    idx = jnp.sum((size > np.asarray(buckets, np.int32)).astype(jnp.int32))
    return jnp.minimum(idx, len(buckets) - 1)


def check_sigma(value: float, name: str = "mask_init_sigma") -> None:
    """Raise ``ValueError`` unless ``value > 0`` (a finite positive initial mask width)."""
    check_positive(value, name)

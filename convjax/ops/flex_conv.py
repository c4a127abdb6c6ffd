"""FlexConv / CKConv as a pure op: a continuous kernel, masked, cropped and convolved.

Romero et al., "FlexConv: Continuous Kernel Convolutions with Differentiable Kernel Sizes"
(ICLR 2022, arXiv 2110.08059). For a layer with horizon ``k`` (odd maximum size):

    K(x) = kernel_net(x) * m(x; mu, sigma) * kernel_scale,   x on linspace(-1, 1, k)^d   (eq. 4)
    y = x_in (*) K + b           (cross-correlation, padded (size - 1) / 2 on both sides)

``kernel_net`` is MAGNet (:mod:`convjax.ops.magnet`, FlexConv) or SIREN
(:mod:`convjax.ops.siren`, the CKConv baseline); ``m`` is the Gaussian mask
(:mod:`convjax.ops.gaussian_mask`); CKConv has no mask and always uses the full horizon.

Static shapes under ``jit`` -- the bucket ladder
-------------------------------------------------
The cropped size (grid points with ``m >= threshold``) depends on the learned sigma, but XLA
needs static shapes. The crop is rounded *up* to a ladder of odd sizes (default
:func:`~convjax.ops.gaussian_mask.default_buckets`: ``5, 9, 17, 33``, capped at ``k``), and
``lax.switch(bucket_index(mu, sigma), branches)`` selects the branch on device. Every branch is
traced and compiled once; only the selected one runs (forward and backward, see
:func:`switch_recompute`), and it evaluates the kernel net *only on
its cropped grid* and convolves with the cropped kernel, so cost follows the learned size and
the horizon only bounds it. The index is computed from ``stop_gradient(mu, sigma)`` on device:
no host round trip, no re-tracing when the bucket changes, and it works unchanged under
``pmap``/``shard_map`` (sigma is replicated, so every device takes the same branch). Each
branch picks spatial or FFT convolution for its own size
(:func:`convjax.ops.fft_conv.conv_valid`).

Inside the bucket, every tap that the authors' dynamic crop removes is zeroed
(:func:`convjax.ops.gaussian_mask.crop_support`: per dim, ``|x_d| < |mu_d| + sigma_d
sqrt(-2 ln T)``, or ``x > mu - sigma sqrt(-2 ln T)`` if causal), with zero gradient. So the
layer computes exactly what the reference's per-dimension crop computes -- a rectangular,
possibly anisotropic kernel -- whatever bucket holds it: bucketing changes the cost, never
the function.

Resolution change
-----------------
A trained layer runs at ``r`` times the input resolution by sampling the same continuous kernel
on a grid ``r`` times finer -- horizon ``r (k - 1) + 1`` -- and multiplying it by ``r^-d`` (the
ratio of the cells' volumes, so ``sum_taps K dx`` is unchanged): see
:func:`resolution_change`. This is accurate when the kernel net respects the Nyquist budget,
which the anti-aliasing penalty (:func:`convjax.ops.magnet.magnet_aliasing_penalty`) enforces.

Parameters (a plain pytree): ``{"kernel_net": ..., "mask": {"mu": (d,), "sigma": (d,)},
"bias": (C_out,)}``; ``"mask"`` is absent for CKConv, ``"bias"`` without bias. ``sigma`` is
the trained parameter itself (as in the reference; see
:func:`convjax.ops.gaussian_mask.positive_sigma` for where positivity is enforced).

Deliberate differences from the authors' code
---------------------------------------------
* Output-layer rescale at init (:func:`flex_conv_init`, ``init_unit_energy=True``): MAGNet's
  output layer (weight and bias, both drawn from PyTorch's default ``U(+-1/sqrt(H))`` as in
  the reference) is scaled by one factor so the initial kernel has unit energy per output
  channel. The reference keeps that layer unscaled, so its kernel energy depends on the
  horizon and mask; ``init_unit_energy=False`` (with ``gabor_centre="origin"`` for causal
  kernels) is exactly the reference's initialisation (changes results).
* Sigma positivity: ``sqrt(sigma^2 + 1e-8)`` instead of the reference's unconstrained
  sigma (which NaNs at 0); identical to 7e-8 at init.
* Bucketed static shapes and a spatial/FFT choice per bucket: cost only.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from convjax._checks import (
    check_choice,
    check_floating,
    check_positive,
    check_spatial_rank,
    normalize_tuple,
)
from convjax.ops.fft_conv import CONV_METHODS, conv_valid
from convjax.ops.gaussian_mask import (
    _check_horizon,
    _check_threshold,
    bucket_index,
    check_buckets,
    check_sigma,
    crop_support,
    default_buckets,
    gaussian_mask,
    grid_coordinates,
    mesh_coordinates,
    positive_sigma,
)
from convjax.ops.magnet import (
    ALIASING_RULES,
    ALIASING_TARGETS,
    magnet_aliasing_penalty,
    magnet_apply,
    magnet_init,
    sample_gabor_gammas,
)
from convjax.ops.pad import FLEX_PADDING_MODES, pad
from convjax.ops.siren import siren_apply, siren_init

Params = dict[str, Any]
KERNEL_NETS = ("magnet", "siren")
#: Where MAGNet's Gabor envelope centres are drawn: around the mask centre, or around 0.
GABOR_CENTRES = ("mask", "origin")
#: Envelope centres of MAGNet are drawn in ``mu_mask +- MAGNET_MU_FACTOR * mask_init_sigma``.
MAGNET_MU_FACTOR = 1.667
#: Gamma prior of MAGNet's envelope widths (filter ``l``: ``Gamma(alpha / (l + 1), beta)``).
MAGNET_ALPHA, MAGNET_BETA = 6.0, 1.0


def init_mask(num_dims: int, init_sigma: float = 0.075, *, causal: bool = False) -> Params:
    """Mask parameters: ``mu = 0`` (``mu = 1``, the newest step, if causal), ``sigma = init``.

    As the reference initialises them (FlexConv Sec. 3; ``mask_init_value`` 0.075): sigma is
    stored as itself, so Adam moves it by ``~lr`` per step, as in the paper.

    Example:
      >>> m = init_mask(2)
      >>> m["mu"], m["sigma"]
      (Array([0., 0.], dtype=float32), Array([0.075, 0.075], dtype=float32))
    """
    if num_dims not in (1, 2, 3):
        raise ValueError(f"`num_dims` must be 1, 2 or 3, got {num_dims!r}.")
    if causal and num_dims != 1:
        raise ValueError(f"`causal=True` needs a 1-D kernel, got num_dims={num_dims}.")
    check_sigma(init_sigma)
    mu = jnp.full((num_dims,), 1.0 if causal else 0.0, jnp.float32)
    sigma = jnp.full((num_dims,), float(init_sigma), jnp.float32)
    return {"mu": mu, "sigma": sigma}


def mask_sigma(params: Params) -> jax.Array:
    """The positive mask widths ``(d,)`` used by the mask and crop: ``positive_sigma(sigma)``."""
    return positive_sigma(params["mask"]["sigma"])


def kernel_net_apply(
    params: Params, coords: jax.Array, kernel_net: str = "magnet", omega_0: float = 30.0
) -> jax.Array:
    """Evaluate the kernel network (``"magnet"`` or ``"siren"``) at ``coords (..., d)``."""
    check_choice(kernel_net, KERNEL_NETS, "kernel_net")
    if kernel_net == "magnet":
        return magnet_apply(params, coords)
    return siren_apply(params, coords, omega_0)


def sample_kernel(
    params: Params,
    in_features: int,
    *,
    kernel_size: int,
    size: int | None = None,
    causal: bool = False,
    kernel_net: str = "magnet",
    omega_0: float = 30.0,
    kernel_scale: float = 1.0,
    threshold: float | None = 0.1,
) -> jax.Array:
    """Sample the (masked, cropped) continuous kernel on the central/trailing ``size`` points.

    ``K(x) = kernel_net(x) * m(x) * crop(x) * kernel_scale`` (FlexConv eq. 4), where ``crop``
    is the reference's dynamic crop at ``threshold`` (1 inside, 0 outside, no gradient; see
    :func:`convjax.ops.gaussian_mask.crop_support`). ``threshold=None`` keeps the uncropped
    masked kernel. Without a mask (CKConv) there is neither mask nor crop.

    Returns:
      ``(*(size,) * d, in_features, out_features)`` float32 kernel.

    Example:
      >>> p = flex_conv_init(jax.random.key(0), 2, 3, 4)
      >>> sample_kernel(p, 3, kernel_size=33, size=5).shape
      (5, 5, 3, 4)
    """
    size = kernel_size if size is None else size
    d = _num_dims(params, kernel_net)
    coords = mesh_coordinates(grid_coordinates(kernel_size, size, causal=causal), d)
    values = kernel_net_apply(params["kernel_net"], coords, kernel_net, omega_0)
    if "mask" in params:
        mu, sigma = params["mask"]["mu"], mask_sigma(params)
        mask = gaussian_mask(coords, mu, sigma)
        if threshold is not None:
            mask = mask * crop_support(coords, mu, sigma, threshold, causal=causal)
        values = values * mask[..., None]
    out_dim = values.shape[-1]
    if out_dim % in_features:
        raise ValueError(
            f"the kernel net produces {out_dim} values per tap, not a multiple of "
            f"in_features={in_features}: the input has the wrong number of features."
        )
    return (values * kernel_scale).reshape(*coords.shape[:-1], in_features, out_dim // in_features)


def _num_dims(params: Params, kernel_net: str) -> int:
    check_choice(kernel_net, KERNEL_NETS, "kernel_net")
    net = params["kernel_net"]
    return int(
        net["gabor"][0]["w"].shape[0] if kernel_net == "magnet" else net["layers"][0]["w"].shape[0]
    )


def flex_conv_init(
    key: jax.Array,
    num_dims: int,
    in_features: int,
    out_features: int,
    *,
    kernel_size: int = 33,
    kernel_net: str = "magnet",
    use_mask: bool = True,
    mask_init_sigma: float = 0.075,
    causal: bool = False,
    use_bias: bool = True,
    hidden_features: int = 32,
    num_layers: int = 3,
    input_scale: float = 25.6,
    omega_0: float = 30.0,
    init_unit_energy: bool = True,
    gabor_centre: str = "mask",
) -> Params:
    """Initialise FlexConv (``use_mask=True``) or CKConv (``use_mask=False``) parameters.

    The kernel net is initialised as in its paper (MAGNet: FlexConv App. A; SIREN: CKConv),
    the mask as in :func:`init_mask`, the bias at zero. Two deliberate differences from the
    authors' code, each with a switch because each changes results:

    * ``init_unit_energy=True``: the kernel net's output layer is rescaled so that the
      masked kernel sampled on the horizon grid has ``sum_{taps, C_in} K^2 = 1`` on average
      over output channels (LeCun-style variance preservation, like Flax's default conv init,
      whatever the horizon, rank or mask size): the output layer's weight and bias (both
      PyTorch's default ``U(+-1/sqrt(H))``, as in the reference) are multiplied by one
      factor. The reference keeps that layer as drawn, so its kernel energy shrinks with the
      mask and varies with the horizon, and its bias carries most of it (``False`` = the
      reference).
    * ``gabor_centre="mask"``: MAGNet's Gabor envelope centres are drawn around the mask
      centre, ``U(c - 1.667 sigma_0, c + 1.667 sigma_0)`` with ``c = 1`` (the newest step) for
      a causal kernel. The reference draws them around 0 whatever the mask (``"origin"``), so
      its causal kernels start as the product of a mask at ``x = 1`` and envelopes at
      ``x = 0`` (tiny where the mask is). Non-causal kernels: both are 0, no difference.

    Example:
      >>> p = flex_conv_init(jax.random.key(0), 2, 3, 8)
      >>> sorted(p), p["mask"]["mu"].shape, p["bias"].shape
      (['bias', 'kernel_net', 'mask'], (2,), (8,))
    """
    _check_horizon(kernel_size, causal=causal)
    check_choice(kernel_net, KERNEL_NETS, "kernel_net")
    for name, v in (("in_features", in_features), ("out_features", out_features)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"`{name}` must be an int >= 1, got {v!r}.")
    if causal and num_dims != 1:
        raise ValueError(f"`causal=True` needs num_dims=1, got {num_dims!r}.")
    check_choice(gabor_centre, GABOR_CENTRES, "gabor_centre")
    # One compiled program instead of hundreds of eager dispatches; the Gamma draws (slow to
    # compile) come from their own cached program, shared by layers of the same net shape.
    key, gamma_key = jax.random.split(key)
    gammas = None
    if kernel_net == "magnet":
        gammas = sample_gabor_gammas(
            gamma_key, num_layers + 1, num_dims, hidden_features, MAGNET_ALPHA, MAGNET_BETA
        )
    return _init_compiled(
        key,
        gammas,
        num_dims,
        in_features,
        out_features,
        kernel_size,
        kernel_net,
        use_mask,
        float(mask_init_sigma),
        causal,
        use_bias,
        hidden_features,
        num_layers,
        float(input_scale),
        float(omega_0),
        bool(init_unit_energy),
        gabor_centre,
    )


@partial(jax.jit, static_argnums=tuple(range(2, 17)))
def _init_compiled(
    key: jax.Array,
    gammas: jax.Array | None,
    num_dims: int,
    in_features: int,
    out_features: int,
    kernel_size: int,
    kernel_net: str,
    use_mask: bool,
    mask_init_sigma: float,
    causal: bool,
    use_bias: bool,
    hidden_features: int,
    num_layers: int,
    input_scale: float,
    omega_0: float,
    init_unit_energy: bool,
    gabor_centre: str,
) -> Params:
    params: Params = {}
    if use_mask:
        params["mask"] = init_mask(num_dims, mask_init_sigma, causal=causal)
    net_out = in_features * out_features
    if kernel_net == "magnet":
        center = 1.0 if causal and gabor_centre == "mask" else 0.0
        spread = MAGNET_MU_FACTOR * mask_init_sigma if use_mask else 1.0
        net = magnet_init(
            key,
            num_dims,
            net_out,
            hidden_features=hidden_features,
            num_layers=num_layers,
            input_scale=input_scale,
            mu_center=center,
            mu_scale=spread,
            gammas=gammas,
        )
    else:
        net = siren_init(
            key,
            num_dims,
            net_out,
            hidden_features=hidden_features,
            num_layers=num_layers,
            omega_0=omega_0,
        )
    params["kernel_net"] = net
    if init_unit_energy:
        kernel = sample_kernel(
            params,
            in_features,
            kernel_size=kernel_size,
            causal=causal,
            kernel_net=kernel_net,
            omega_0=omega_0,
            threshold=None,
        )
        energy = jnp.mean(jnp.sum(kernel * kernel, axis=tuple(range(kernel.ndim - 1))))
        factor = jax.lax.rsqrt(energy + 1e-30)
        net["out"] = {"w": net["out"]["w"] * factor, "b": net["out"]["b"] * factor}
    if use_bias:
        params["bias"] = jnp.zeros((out_features,), jnp.float32)
    return params


def resolution_change(kernel_size: int, num_dims: int, factor: float) -> tuple[int, float]:
    """Horizon and kernel scale for running a layer at ``factor`` x its training resolution.

    ``new_kernel_size = factor (k - 1) + 1`` (same continuous extent on a finer/coarser grid)
    and ``kernel_scale = factor^-d`` (cell volume ratio, ``(src / tgt)^d``).

    Example:
      >>> resolution_change(33, 2, 2)
      (65, 0.25)
    """
    _check_horizon(kernel_size)
    check_positive(factor, "factor")
    new = factor * (kernel_size - 1)
    if abs(new - round(new)) > 1e-9 or round(new) % 2:
        raise ValueError(
            f"`factor` {factor!r} must make factor * (kernel_size - 1) = {new} an even integer "
            f"(kernel_size={kernel_size}) so the new grid is odd and contains the old centre."
        )
    return int(round(new)) + 1, float(factor) ** (-num_dims)


def active_bucket(
    params: Params,
    *,
    kernel_size: int,
    threshold: float = 0.1,
    causal: bool = False,
    buckets: Sequence[int] | None = None,
) -> jax.Array:
    """Index into the bucket ladder that :func:`flex_conv` uses now (int32 scalar)."""
    ladder = check_buckets(
        tuple(buckets) if buckets is not None else default_buckets(kernel_size), kernel_size, causal
    )
    if "mask" not in params:
        return jnp.asarray(len(ladder) - 1, jnp.int32)
    return bucket_index(
        params["mask"]["mu"], mask_sigma(params), kernel_size, ladder, threshold, causal=causal
    )


def flex_conv(
    params: Params,
    x: jax.Array,
    *,
    kernel_size: int = 33,
    kernel_net: str = "magnet",
    omega_0: float = 30.0,
    threshold: float = 0.1,
    causal: bool = False,
    strides: int | Sequence[int] = 1,
    padding_mode: str = "zero",
    buckets: Sequence[int] | None = None,
    conv_method: str = "auto",
    fft_threshold: int | None = None,
    kernel_scale: float = 1.0,
    dtype: Any = None,
) -> jax.Array:
    """FlexConv (with ``params["mask"]``) or CKConv (without) on ``(N, *S, C_in)`` input.

    Args:
      params: from :func:`flex_conv_init`.
      x: ``(N, *S, C_in)`` float, 1-3 spatial dims matching the kernel net.
      kernel_size: horizon ``k`` (odd; any size if causal): the grid ``linspace(-1, 1, k)``
        and the maximum size.
      kernel_net: ``"magnet"`` or ``"siren"`` (with its static ``omega_0``).
      threshold: mask crop threshold ``T`` (0.1): taps the reference's dynamic crop removes
        are zero (and get no gradient) in every bucket.
      causal: 1-D causal conv (the kernel's last tap is the current step), output ``(N, T, C)``.
      strides: output ``ceil(S / s)`` per dim. Each bucket of odd size ``n`` pads
        ``(n - 1) / 2`` on both sides, as the reference (and every convjax layer) does, so a
        stride-2 conv on an even map reads the same taps as PyTorch's ``padding=k//2``.
      padding_mode: ``"zero" | "reflect" | "replicate" | "circular"`` (each bucket pads by
        its own size; causal pads on the left only).
      buckets: crop-size ladder (ascending, ending at ``k``); default ``5, 9, 17, 33, ...``.
      conv_method: ``"auto"`` (FFT for sizes >= ``fft_threshold``), ``"spatial"`` or ``"fft"``.
      kernel_scale: multiplies the kernel (``factor^-d`` after :func:`resolution_change`).
      dtype: compute dtype of the convolution (default ``x.dtype``); the kernel net and the
        mask always run in float32.

    Returns:
      ``(N, *ceil(S / s), C_out)`` in ``dtype``.

    Example:
      >>> p = flex_conv_init(jax.random.key(0), 2, 3, 4)
      >>> flex_conv(p, jnp.ones((2, 16, 16, 3)), kernel_size=33).shape
      (2, 16, 16, 4)
    """
    check_floating(x, "x")
    check_choice(kernel_net, KERNEL_NETS, "kernel_net")
    check_choice(padding_mode, FLEX_PADDING_MODES, "padding_mode")
    check_choice(conv_method, CONV_METHODS, "conv_method")
    _check_horizon(kernel_size, causal=causal)
    _check_threshold(threshold)
    d = _num_dims(params, kernel_net)
    n = check_spatial_rank(x, "x")
    if n != d:
        raise ValueError(
            f"`x` has {n} spatial dims (shape {tuple(x.shape)}) but the kernel is {d}-D: "
            f"expected rank {d + 2}."
        )
    empty = [i for i, size in enumerate(x.shape[1:-1]) if size == 0]
    if empty:
        raise ValueError(
            f"`x` has spatial size {tuple(x.shape[1:-1])} (shape {tuple(x.shape)}): spatial dim "
            f"{empty[0]} is empty; FlexConv needs at least 1 position per spatial dim."
        )
    if causal and n != 1:
        raise ValueError(f"`causal=True` needs 1-D input (N, T, C), got shape {tuple(x.shape)}.")
    strides_t = normalize_tuple(strides, n, "strides")
    spatial = x.shape[1:-1]
    in_features = x.shape[-1]
    ladder = check_buckets(
        tuple(buckets) if buckets is not None else default_buckets(kernel_size), kernel_size, causal
    )
    if "mask" not in params:
        ladder = (kernel_size,)
    largest = ladder[-1]
    for i, s in enumerate(spatial):
        reach = largest - 1 if causal else (largest - 1) // 2
        if (padding_mode == "reflect" and reach >= s) or (padding_mode == "circular" and reach > s):
            raise ValueError(
                f"`padding_mode` {padding_mode!r} pads up to {reach} (kernel_size={kernel_size}) "
                f"but spatial dim {i} of `x` has size {s}; use 'zero'/'replicate' or a smaller "
                f"kernel_size."
            )
    out_dim = params["kernel_net"]["out"]["w"].shape[-1]
    if out_dim % in_features:
        raise ValueError(
            f"`x` has {in_features} features but the kernel net makes {out_dim} values per tap "
            f"(in_features * out_features): wrong in_features."
        )
    out_features = out_dim // in_features
    if "bias" in params and params["bias"].shape != (out_features,):
        raise ValueError(
            f"`x` has {in_features} features, implying out_features={out_features}, but the bias "
            f"has shape {params['bias'].shape}: wrong in_features."
        )
    compute = jnp.dtype(dtype) if dtype is not None else x.dtype

    def branch(size: int):
        def run(p: Params, xin: jax.Array) -> jax.Array:
            kernel = sample_kernel(
                p,
                in_features,
                kernel_size=kernel_size,
                size=size,
                causal=causal,
                kernel_net=kernel_net,
                omega_0=omega_0,
                kernel_scale=kernel_scale,
                threshold=threshold,
            ).astype(compute)
            if causal:
                pads = ((size - 1, 0),)
            else:
                pads = ((size // 2, size // 2),) * n
            xp = pad(xin.astype(compute), pads, padding_mode)
            y = conv_valid(xp, kernel, strides_t, method=conv_method, fft_threshold=fft_threshold)
            if "bias" in p:
                y = y + p["bias"].astype(compute)
            return y.astype(compute)

        return run

    branches = [branch(size) for size in ladder]
    if len(branches) == 1:
        return branches[0](params, x)
    index = bucket_index(
        params["mask"]["mu"], mask_sigma(params), kernel_size, ladder, threshold, causal=causal
    )
    return switch_recompute(index, branches, params, x)


def switch_recompute(index: jax.Array, branches: Sequence[Any], *operands: Any) -> Any:
    """``lax.switch(index, branches, *operands)`` whose backward re-runs only the chosen branch.

    Differentiating ``lax.switch`` directly makes *every* branch emit zero-filled copies of the
    residuals of all the others (the FFT branch alone saves MBs), which made a 5x5 FlexConv
    step ~4x slower than the bare layer on CPU. Here the forward keeps only ``operands`` and
    the backward is a second ``lax.switch`` over per-branch VJPs, which recompute the chosen
    branch's forward (kernel generation + conv): one extra forward of the *selected* size.
    Reverse mode only (a ``custom_vjp``); ``index`` gets no gradient.

    Example:
      >>> f = lambda i, a: switch_recompute(i, [jnp.sin, jnp.cos], a)
      >>> round(float(jax.grad(f, argnums=1)(jnp.int32(1), 0.5)), 4)  # d cos / da = -sin(0.5)
      -0.4794
    """

    @jax.custom_vjp
    def run(i: jax.Array, *ops: Any) -> Any:
        return jax.lax.switch(i, branches, *ops)

    def run_fwd(i: jax.Array, *ops: Any) -> tuple[Any, Any]:
        return jax.lax.switch(i, branches, *ops), (i, ops)

    def run_bwd(res: Any, g: Any) -> tuple[Any, ...]:
        i, ops = res

        def vjp_of(branch: Any) -> Any:
            def back(ops: Any, g: Any) -> Any:
                _, vjp = jax.vjp(branch, *ops)
                return vjp(g)

            return back

        grads = jax.lax.switch(i, [vjp_of(b) for b in branches], ops, g)
        return (np.zeros(np.shape(i), jax.dtypes.float0), *grads)

    run.defvjp(run_fwd, run_bwd)
    return run(jnp.asarray(index, jnp.int32), *operands)


def flex_conv_aliasing_penalty(
    params: Params,
    kernel_size: int,
    weight: float = 0.1,
    kernel_net: str = "magnet",
    gauss_stddevs: float = 2.0,
    *,
    target: str = "gabor",
    rule: str = "reference",
) -> jax.Array:
    """FlexConv's anti-aliasing penalty (FlexConv Sec. 4.2) for a MAGNet kernel net.

    :func:`convjax.ops.magnet.magnet_aliasing_penalty`::

        weight * sum_i relu(f_i [+ f_m / (L + 1)] - (k - 1) / 4 / (L + 1))^2
        f_i = max_{j,d} |W_ijd| / (2 pi) + s max_{j,d} |gamma_ijd| / (2 pi)   (rule "reference")
        f_m = s / (2 pi) max_d 1 / sigma_d                        (target "gabor+mask" only)

    Args:
      params, kernel_size: the layer's parameters and horizon.
      weight, gauss_stddevs: the penalty's ``factor`` (0.1) and ``s`` (2).
      kernel_net: ``"magnet"``; 0.0 for ``"siren"``, which has no Gabor filters.
      target: ``"gabor"`` (default: the mask term left out, as in most of the reference's
        configs and commands) or ``"gabor+mask"`` (the mask's frequency shared over the
        filters; without a mask, as for CKConv, there is no mask term).
      rule: ``"reference"`` (default: ``max|W| + s max|gamma|``, what the authors' code
        computes) or ``"per_entry"`` (``max(|W| + s|gamma|)``, the paper's stated intent).

    Example:
      >>> p = flex_conv_init(jax.random.key(0), 2, 3, 4)
      >>> flex_conv_aliasing_penalty(p, 33).shape
      ()
    """
    check_choice(kernel_net, KERNEL_NETS, "kernel_net")
    check_choice(target, ALIASING_TARGETS, "target")
    check_choice(rule, ALIASING_RULES, "rule")
    if kernel_net != "magnet":
        return jnp.zeros((), jnp.float32)
    sigma = mask_sigma(params) if "mask" in params and target == "gabor+mask" else None
    return magnet_aliasing_penalty(
        params["kernel_net"], kernel_size, weight, gauss_stddevs, mask_sigma=sigma, rule=rule
    )


__all__ = [
    "ALIASING_RULES",
    "ALIASING_TARGETS",
    "FLEX_PADDING_MODES",
    "GABOR_CENTRES",
    "KERNEL_NETS",
    "active_bucket",
    "flex_conv",
    "flex_conv_aliasing_penalty",
    "flex_conv_init",
    "init_mask",
    "kernel_net_apply",
    "mask_sigma",
    "resolution_change",
    "sample_kernel",
]

"""MAGNet: the multiplicative anisotropic Gabor kernel network of FlexConv, and its
anti-aliasing penalty.

Romero et al., FlexConv (ICLR 2022, arXiv 2110.08059), Sec. 4 and App. A. A MAGNet maps a
position ``x`` in ``[-1, 1]^d`` to the ``C_out * C_in`` kernel values at ``x``:

    g_l(x) = exp(-1/2 sum_d (gamma_{l,d} (x_d - mu_{l,d}))^2) * sin(W_l x + b_l)     (Gabor)
    h_1 = g_1(x);   h_l = g_l(x) * (A_l h_{l-1} + a_l),  l = 2..L+1;   K(x) = A_out h + a_out

``num_layers = L`` hidden layers means ``L + 1`` Gabor filters. Init (per filter ``l = 0..L``):
``gamma ~ Gamma(alpha / (l + 1), beta)`` (alpha 6, beta 1); ``mu ~ U(c - s, c + s)``;
``W ~ U(-1/sqrt(d), 1/sqrt(d)) * input_scale / sqrt(L + 1) * gamma`` (input_scale 25.6);
``b ~ U(-pi, pi)``. Linear layers, the output layer's bias included, use the PyTorch default
``U(+-1/sqrt(fan_in))`` (the reference config's ``bias_init: None`` loads as the string
``'None'``, which matches none of its bias rules, so PyTorch's default stays).

Anti-aliasing (FlexConv Sec. 4.2), as the authors' regulariser computes it (method
"together", l2-relu, ``s`` = ``gauss_stddevs`` = 2). Gabor filter ``i = 0..L`` of a layer has
frequency (cycles per unit, a Gaussian envelope of inverse width ``gamma`` counting as
frequency ``s gamma / (2 pi)``)

    f_i = max_{j,d} |W_{i,j,d}| / (2 pi) + s max_{j,d} |gamma_{i,j,d}| / (2 pi)   ("reference")
    f_i = max_{j,d} (|W_{i,j,d}| + s |gamma_{i,j,d}|) / (2 pi)                   ("per_entry")

The reference code (``antialiasing.py``) adds the ``(H, d, 1, 1)`` sine weights of a Gabor
layer to its ``(H, d)`` gammas; the sum broadcasts to ``(H, d, H, d)``, so its maximum is the
sum of the two maxima: the ``"reference"`` rule, what the published runs used (the default).
``"per_entry"`` is the paper's stated intent (the frequency of each unit, then the maximum);
it is never larger. With target ``"gabor+mask"`` the FlexConv mask's frequency
``f_m = s / (2 pi) * max_d 1 / sigma_d`` is split evenly over the ``L + 1`` filters (products
of filters add frequencies); target ``"gabor"`` (most of the reference's runs) leaves it out.
Each filter is compared with its share of the Nyquist frequency of the kernel grid
``linspace(-1, 1, k)``, ``(k - 1) / 4``:

    penalty = weight * sum_i relu(f_i [+ f_m / (L + 1)] - (k - 1) / (4 (L + 1)))^2

Parameters are a plain pytree: ``{"gabor": [{"gamma", "mu", "w": (d, H), "b": (H,)}] * (L+1),
"hidden": [{"w": (H, H), "b": (H,)}] * L, "out": {"w": (H, O), "b": (O,)}}``.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from convjax._checks import check_choice, check_positive

Params = dict[str, Any]

#: How a Gabor layer's frequency combines sine weights and envelope widths (module docstring).
ALIASING_RULES = ("reference", "per_entry")
#: What the anti-aliasing penalty covers: the Gabor filters, or the filters and the mask.
ALIASING_TARGETS = ("gabor", "gabor+mask")


def _check_net_sizes(num_dims: int, out_features: int, hidden_features: int, num_layers: int):
    if num_dims not in (1, 2, 3):
        raise ValueError(f"`num_dims` must be 1, 2 or 3, got {num_dims!r}.")
    for name, v, lo in (
        ("out_features", out_features, 1),
        ("hidden_features", hidden_features, 1),
        ("num_layers", num_layers, 1),
    ):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise ValueError(f"`{name}` must be an int >= {lo}, got {v!r}.")


@partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def sample_gabor_gammas(
    key: jax.Array, num_filters: int, num_dims: int, hidden_features: int, alpha: float, beta: float
) -> jax.Array:
    """Envelope widths of all Gabor filters in one draw: ``(L + 1, d, H)``, filter ``l`` from
    ``Gamma(alpha / (l + 1), beta)``.

    One batched ``jax.random.gamma`` (a rejection-sampling loop that is slow to compile) in its
    own cached compiled function, shared by every layer with the same net shape.

    Example:
      >>> sample_gabor_gammas(jax.random.key(0), 4, 2, 32, 6.0, 1.0).shape
      (4, 2, 32)
    """
    shapes = alpha / jnp.arange(1, num_filters + 1, dtype=jnp.float32)
    draws = jax.random.gamma(key, shapes[:, None, None], (num_filters, num_dims, hidden_features))
    return draws / beta


def magnet_init(
    key: jax.Array,
    num_dims: int,
    out_features: int,
    *,
    hidden_features: int = 32,
    num_layers: int = 3,
    input_scale: float = 25.6,
    alpha: float = 6.0,
    beta: float = 1.0,
    mu_center: float = 0.0,
    mu_scale: float = 1.0,
    gammas: jax.Array | None = None,
    dtype: Any = jnp.float32,
) -> Params:
    """Initialise MAGNet parameters (see the module docstring for the distributions).

    Args:
      key: PRNG key. num_dims: d, the spatial rank of the kernel (1-3).
      out_features: outputs per position (``C_out * C_in`` for a conv kernel).
      hidden_features, num_layers: width H and number L of hidden layers (L + 1 Gabor filters).
      input_scale: frequency scale of the sine weights (25.6 in FlexConv).
      alpha, beta: Gamma prior of the envelope widths (layer l uses ``alpha / (l + 1)``).
      mu_center, mu_scale: envelope centres ``mu ~ U(mu_center - s, mu_center + s)``.
      gammas: ``(L + 1, d, H)`` envelope widths from :func:`sample_gabor_gammas` (drawn here
        from ``key`` when omitted).

    Example:
      >>> p = magnet_init(jax.random.key(0), 2, 8)
      >>> p["gabor"][0]["w"].shape, p["out"]["w"].shape
      ((2, 32), (32, 8))
    """
    _check_net_sizes(num_dims, out_features, hidden_features, num_layers)
    check_positive(input_scale, "input_scale")
    check_positive(alpha, "alpha")
    check_positive(beta, "beta")
    check_positive(mu_scale, "mu_scale", allow_zero=True)
    d, h, f = num_dims, hidden_features, num_layers + 1
    key_u, key_g = jax.random.split(key)
    if gammas is None:
        gammas = sample_gabor_gammas(key_g, f, d, h, float(alpha), float(beta))
    if gammas.shape != (f, d, h):
        raise ValueError(
            f"`gammas` must have shape {(f, d, h)} (filters, dims, hidden), got {gammas.shape}."
        )
    # Every uniform draw comes from one U(-1, 1) call (threefry is costly to compile per call).
    sizes = {
        "mu": (f, d, h),
        "w": (f, d, h),
        "b": (f, h),
        "hidden_w": (num_layers, h, h),
        "hidden_b": (num_layers, h),
        "out_w": (h, out_features),
        "out_b": (out_features,),
    }
    counts = [math.prod(shape) for shape in sizes.values()]
    flat = jax.random.uniform(key_u, (sum(counts),), dtype, -1.0, 1.0)
    parts = dict(zip(sizes, jnp.split(flat, np.cumsum(counts)[:-1])))
    u = {name: parts[name].reshape(shape) for name, shape in sizes.items()}
    gammas = gammas.astype(dtype)
    scale = input_scale / math.sqrt(num_layers + 1)
    gabor = [
        {
            "gamma": gammas[layer],
            "mu": mu_center + mu_scale * u["mu"][layer],
            "w": u["w"][layer] / math.sqrt(d) * scale * gammas[layer],
            "b": math.pi * u["b"][layer],
        }
        for layer in range(f)
    ]
    bound = 1.0 / math.sqrt(h)
    hidden = [
        {"w": bound * u["hidden_w"][layer], "b": bound * u["hidden_b"][layer]}
        for layer in range(num_layers)
    ]
    out = {"w": bound * u["out_w"], "b": bound * u["out_b"]}
    return {"gabor": gabor, "hidden": hidden, "out": out}


def _gabor(p: Params, x: jax.Array) -> jax.Array:
    # x: (P, d); gamma, mu, w: (d, H) -> (P, H)
    z = p["gamma"] * (x[:, :, None] - p["mu"])
    envelope = jnp.exp(-0.5 * jnp.sum(z * z, axis=1))
    return envelope * jnp.sin(x @ p["w"] + p["b"])


def magnet_apply(params: Params, coords: jax.Array) -> jax.Array:
    """Evaluate MAGNet at positions ``coords`` ``(..., d)`` -> ``(..., out_features)``.

    Runs in the parameters' dtype (float32). Cost is linear in the number of positions, so
    evaluating only the cropped grid makes kernel generation follow the learned size.

    Example:
      >>> p = magnet_init(jax.random.key(0), 1, 4)
      >>> magnet_apply(p, jnp.linspace(-1, 1, 5)[:, None]).shape
      (5, 4)
    """
    coords = jnp.asarray(coords, params["out"]["w"].dtype)
    d = params["gabor"][0]["w"].shape[0]
    if coords.shape[-1] != d:
        raise ValueError(f"`coords` must end in {d} (the net's spatial rank), got {coords.shape}.")
    lead = coords.shape[:-1]
    x = coords.reshape(-1, d)
    h = _gabor(params["gabor"][0], x)
    for g, lin in zip(params["gabor"][1:], params["hidden"]):
        h = _gabor(g, x) * (h @ lin["w"] + lin["b"])
    out = h @ params["out"]["w"] + params["out"]["b"]
    return out.reshape(*lead, out.shape[-1])


def magnet_frequencies(
    params: Params, gauss_stddevs: float = 2.0, rule: str = "reference"
) -> jax.Array:
    """Frequency of each Gabor filter (cycles per unit): ``(L + 1,)``.

    ``rule="reference"`` (default, the authors' code): ``f_i = max_{j,d} |W_{i,j,d}| / (2 pi)
    + s max_{j,d} |gamma_{i,j,d}| / (2 pi)``. ``rule="per_entry"`` (the paper's stated intent,
    never larger): ``f_i = max_{j,d} (|W_{i,j,d}| + s |gamma_{i,j,d}|) / (2 pi)``. ``s`` =
    ``gauss_stddevs``; see the module docstring (FlexConv Sec. 4.2).

    Example:
      >>> magnet_frequencies(magnet_init(jax.random.key(0), 2, 4)).shape
      (4,)
    """
    check_positive(gauss_stddevs, "gauss_stddevs", allow_zero=True)
    check_choice(rule, ALIASING_RULES, "rule")
    two_pi = 2.0 * math.pi
    if rule == "reference":
        freqs = [
            (jnp.max(jnp.abs(g["w"])) + gauss_stddevs * jnp.max(jnp.abs(g["gamma"]))) / two_pi
            for g in params["gabor"]
        ]
    else:
        freqs = [
            jnp.max(jnp.abs(g["w"]) + gauss_stddevs * jnp.abs(g["gamma"])) / two_pi
            for g in params["gabor"]
        ]
    return jnp.stack(freqs)


def mask_frequency(sigma: jax.Array, gauss_stddevs: float = 2.0) -> jax.Array:
    """Frequency of a Gaussian mask: ``s / (2 pi) * max_d 1 / sigma_d`` (scalar).

    ``sigma`` must be positive (:func:`convjax.ops.gaussian_mask.positive_sigma`).

    Example:
      >>> round(float(mask_frequency(jnp.array([0.5, 0.25]), 2.0)), 4)  # 2 / (2 pi) * 4
      1.2732
    """
    check_positive(gauss_stddevs, "gauss_stddevs", allow_zero=True)
    return gauss_stddevs / (2.0 * math.pi) * jnp.max(1.0 / jnp.asarray(sigma))


def nyquist_budget(kernel_size: int, num_filters: int) -> float:
    """Per-filter frequency budget ``(k - 1) / 4 / (L + 1)`` on the grid ``linspace(-1, 1, k)``."""
    if not isinstance(kernel_size, int) or kernel_size < 1:
        raise ValueError(f"`kernel_size` must be an int >= 1, got {kernel_size!r}.")
    return (kernel_size - 1) / 4.0 / num_filters


def magnet_aliasing_penalty(
    params: Params,
    kernel_size: int,
    weight: float = 0.1,
    gauss_stddevs: float = 2.0,
    mask_sigma: jax.Array | None = None,
    rule: str = "reference",
) -> jax.Array:
    """Anti-aliasing penalty of one MAGNet (FlexConv Sec. 4.2; float32 scalar)::

        f_i  = magnet_frequencies(params, s, rule)_i                     i = 0..L
        f_m  = s / (2 pi) * max_d 1 / sigma_d                 (0 without a mask)
        penalty = weight * sum_i relu(f_i + f_m / (L + 1) - (k - 1) / 4 / (L + 1))^2

    the authors' regulariser, method "together", function l2-relu: target "gabor+mask" when
    ``mask_sigma`` is given, "gabor" when it is None. Defaults as in the paper's experiments:
    ``weight`` (their ``factor``) 0.1, ``s`` = ``gauss_stddevs`` = 2, ``rule="reference"``
    (the frequency the authors' code computes; ``"per_entry"`` is the paper's stated one, see
    :func:`magnet_frequencies`). Zero iff every filter stays under its share of the Nyquist
    frequency of a ``kernel_size`` grid; differentiable in ``W``, ``gamma`` and sigma (a max
    passes its gradient to its largest entry).

    Args:
      params: MAGNet parameters. kernel_size: the horizon ``k`` of the grid.
      weight: multiplier (>= 0). gauss_stddevs: ``s`` (>= 0).
      mask_sigma: ``(d,)`` positive mask widths of the FlexConv, or None (no mask term).
      rule: ``"reference"`` or ``"per_entry"`` (:data:`ALIASING_RULES`).

    Example:
      >>> p = magnet_init(jax.random.key(0), 2, 4)
      >>> bool(magnet_aliasing_penalty(p, 33) > 0)  # the paper's init starts above the budget
      True
    """
    check_positive(weight, "weight", allow_zero=True)
    freqs = magnet_frequencies(params, gauss_stddevs, rule)
    num_filters = freqs.shape[0]
    if mask_sigma is not None:
        freqs = freqs + mask_frequency(mask_sigma, gauss_stddevs) / num_filters
    budget = nyquist_budget(kernel_size, num_filters)
    excess = jax.nn.relu(freqs - budget)
    return (weight * jnp.sum(excess * excess)).astype(jnp.float32)

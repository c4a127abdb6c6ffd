"""Array layout of convjax: channels-last, as Flax.

Activations are ``(batch, *spatial, features)`` and conv kernels ``(*window, in, out)``
(Flax's HWIO). :func:`conv_dimension_numbers` is the one place that spells this for
``jax.lax.conv_general_dilated``.
"""

from __future__ import annotations

from convjax._checks import check_choice


def conv_dimension_numbers(num_spatial_dims: int) -> tuple[str, str, str]:
    """``dimension_numbers`` of a channels-last conv with 1, 2 or 3 spatial dims.

    Args:
      num_spatial_dims: 1, 2 or 3.

    Returns:
      ``(lhs, rhs, out)`` specs, e.g. ``("NHWC", "HWIO", "NHWC")`` for images.

    Example:
      >>> conv_dimension_numbers(1)
      ('NWC', 'WIO', 'NWC')
    """
    check_choice(num_spatial_dims, (1, 2, 3), "num_spatial_dims")
    spatial = "DHW"[3 - num_spatial_dims :]
    return f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"

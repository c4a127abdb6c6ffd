"""Small shared test helpers."""

import jax
import numpy as np
import pytest

#: Run a test body with and without ``jax.jit``: ``def test_x(transform): transform(f)(x)``.
jit_variants = pytest.mark.parametrize("transform", [lambda f: f, jax.jit], ids=["nojit", "jit"])


def shard_for_pmap(x: np.ndarray, num_devices: int) -> np.ndarray:
    """Reshape a global batch ``(B, ...)`` to ``(num_devices, B // num_devices, ...)``."""
    assert x.shape[0] % num_devices == 0, (x.shape, num_devices)
    return x.reshape(num_devices, x.shape[0] // num_devices, *x.shape[1:])

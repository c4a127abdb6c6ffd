"""Test harness: 8 CPU devices for pmap/shard_map paths, set before JAX initialises."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

import pytest  # noqa: E402

NUM_DEVICES = 8


@pytest.fixture(scope="session")
def num_devices() -> int:
    n = jax.local_device_count()
    assert n == NUM_DEVICES, f"expected {NUM_DEVICES} CPU devices, got {n}"
    return n

"""Run one per-device step function under ``jax.pmap`` or ``jax.shard_map``; multi-host helpers.

:class:`DataParallel` owns the placement of the train state (replicated) and of the global
batch (split over the ``"batch"`` axis) for either backend, so the loop and the tests call

    dp = DataParallel("pmap")            # or "shard_map"
    state = dp.replicate(host_state)
    step = dp.compile(train_step)        # the same per-device function for both
    state, metrics = step(state, dp.shard_batch(local_batch))

With several processes (``jax.distributed.initialize``) each process passes its own
*process-local* part of the global batch; pmap and shard_map both assemble the global batch
from these parts over all devices of all processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from convjax.ops.validation import check_choice

#: Parallel backends accepted by :class:`DataParallel`.
BACKENDS = ("pmap", "shard_map")


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    initialization_timeout: int = 300,
) -> None:
    """Call ``jax.distributed.initialize`` (before any other JAX call), once.

    Arguments left ``None`` are taken from the environment the way JAX does (cluster
    auto-detection: TPU pods, SLURM, Open MPI, ``JAX_COORDINATOR_ADDRESS`` ...).

    Example:
      >>> initialize("10.0.0.1:1234", num_processes=2, process_id=0)
    """
    kwargs: dict[str, Any] = {"initialization_timeout": initialization_timeout}
    if coordinator_address:
        kwargs["coordinator_address"] = coordinator_address
    if num_processes is not None and num_processes > 0:
        kwargs["num_processes"] = int(num_processes)
    if process_id is not None and process_id >= 0:
        kwargs["process_id"] = int(process_id)
    jax.distributed.initialize(**kwargs)


def is_primary() -> bool:
    """True on the process that writes logs and checkpoints (process 0)."""
    return jax.process_index() == 0


def env_flag(name: str) -> bool:
    """True if environment variable ``name`` is set to a true-ish value (1/true/yes)."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


class DataParallel:
    """Data parallelism over all devices, with ``jax.pmap`` or ``jax.shard_map``.

    Args:
      backend: "pmap" (default) or "shard_map".
      axis_name: name of the data axis used by the step's collectives.
      devices: devices to use (default: all devices of all processes). With a subset (e.g.
        one device for a single-device reference run) only one process is supported.

    Attributes:
      num_devices: devices over all processes. ``num_local_devices``: this process's.

    Example:
      >>> dp = DataParallel("shard_map")
      >>> state, metrics = dp.compile(step)(dp.replicate(state), dp.shard_batch(batch))
    """

    def __init__(
        self,
        backend: str = "pmap",
        axis_name: str = "batch",
        devices: list[jax.Device] | None = None,
    ) -> None:
        check_choice(backend, BACKENDS, "backend")
        self.backend = backend
        self.axis_name = axis_name
        self.devices = list(jax.devices() if devices is None else devices)
        self.local_devices = [d for d in self.devices if d.process_index == jax.process_index()]
        self.num_devices = len(self.devices)
        self.num_local_devices = len(self.local_devices)
        self.mesh = None
        if backend == "shard_map":
            self.mesh = jax.make_mesh(
                (self.num_devices,),
                (axis_name,),
                axis_types=(jax.sharding.AxisType.Auto,),
                devices=self.devices,
            )

    # ---------------------------------------------------------------- placement
    def replicate(self, tree: Any) -> Any:
        """Place a host pytree (identical on every process) on every device."""
        if self.backend == "pmap":
            # A leading local-device axis: pmap takes one slice per device. On one process,
            # place it the way pmap lays out its outputs, so the compiled step is reused.
            n = self.num_local_devices
            stacked = jax.tree.map(lambda x: np.stack([np.asarray(x)] * n), tree)
            if jax.process_count() > 1:
                return stacked
            mesh = jax.sharding.Mesh(np.asarray(self.devices), (self.axis_name,))
            return jax.device_put(stacked, NamedSharding(mesh, P(self.axis_name)))
        sharding = NamedSharding(self.mesh, P())

        def put(x: Any) -> jax.Array:
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

        return jax.tree.map(put, tree)

    def unreplicate(self, tree: Any) -> Any:
        """Host numpy copy of a replicated pytree (the first local device's copy)."""
        if self.backend == "pmap":
            return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data[0]), tree)
        return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data), tree)

    def check_batch_size(self, local_batch_size: int, what: str = "batch size") -> None:
        """Raise ``ValueError`` unless the process-local batch splits evenly over devices."""
        if local_batch_size % self.num_local_devices:
            raise ValueError(
                f"per-process {what} {local_batch_size} is not divisible by the "
                f"{self.num_local_devices} local devices; choose a multiple."
            )

    def shard_batch(self, batch: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Place this process's part ``(B_local, ...)`` of the global batch on its devices."""
        first = next(iter(batch.values()))
        self.check_batch_size(int(np.shape(first)[0]))
        if self.backend == "pmap":
            n = self.num_local_devices
            return {
                k: np.asarray(v).reshape(n, np.shape(v)[0] // n, *np.shape(v)[1:])
                for k, v in batch.items()
            }
        sharding = NamedSharding(self.mesh, P(self.axis_name))
        return {
            k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in batch.items()
        }

    def metrics_to_host(self, metrics: Any) -> Any:
        """Host numpy copy of replicated metrics/sums (as python floats for scalars)."""
        return jax.tree.map(float, self.unreplicate(metrics))

    # ---------------------------------------------------------------- compilation
    def compile(self, fn: Callable, *, donate_state: bool = False) -> Callable:
        """Compile a per-device ``fn(state, batch) -> outputs`` for this backend.

        The state (first argument) is replicated, the batch (second) split over the data
        axis; every output is replicated (the step makes it identical with collectives).
        """
        donate = (0,) if donate_state else ()
        if self.backend == "pmap":
            return jax.pmap(
                fn, axis_name=self.axis_name, devices=self.devices, donate_argnums=donate
            )
        mapped = jax.shard_map(
            fn,
            mesh=self.mesh,
            in_specs=(P(), P(self.axis_name)),
            out_specs=P(),
            # Per-device (pmap) semantics: gradients w.r.t. replicated values are NOT summed
            # implicitly; the step averages them itself with lax.pmean.
            check_vma=False,
        )
        return jax.jit(mapped, donate_argnums=donate)


__all__ = ["BACKENDS", "DataParallel", "env_flag", "initialize", "is_primary"]

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

Joining a multi-process job: :func:`setup_distributed` (called by the trainer) initializes
``jax.distributed`` when ``config.distributed`` or ``JAX_COORDINATOR_ADDRESS`` /
``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` ask for it (``convjax launch`` sets these for N local
processes), with bounded failure: an unreachable coordinator raises :class:`DistributedError`
after ``CONVJAX_INITIALIZATION_TIMEOUT`` seconds, and a dead peer stops the others after
``CONVJAX_HEARTBEAT_TIMEOUT`` seconds without heartbeats.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from convjax._checks import check_choice

#: Parallel backends accepted by :class:`DataParallel`.
BACKENDS = ("pmap", "shard_map")


#: Environment variables read when the config / command line leave a field unset.
ENV_COORDINATOR_ADDRESS = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
#: Where process 0's coordinator service listens ("host:port"); JAX reads it too.
ENV_COORDINATOR_BIND_ADDRESS = "JAX_COORDINATOR_BIND_ADDRESS"
#: Seconds to wait for the coordinator / all processes at start-up (default 300).
ENV_INITIALIZATION_TIMEOUT = "CONVJAX_INITIALIZATION_TIMEOUT"
#: Seconds without heartbeats after which a process counts as dead (default 100).
ENV_HEARTBEAT_TIMEOUT = "CONVJAX_HEARTBEAT_TIMEOUT"


class DistributedError(RuntimeError):
    """The multi-process setup failed (e.g. the coordinator cannot be reached)."""


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer.") from None


def distributed_settings(dist: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Resolve the multi-process settings from ``config.distributed`` and the environment.

    A config field that is unset (``""``, ``0`` processes, ``-1`` process id) is taken from
    ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` (timeouts from
    ``CONVJAX_INITIALIZATION_TIMEOUT`` / ``CONVJAX_HEARTBEAT_TIMEOUT``). Multi-process
    mode is on if ``dist["initialize"]`` is true or any of these is set; otherwise the run is
    a single host and ``jax.distributed`` is not touched.

    ``coordinator_bind_address`` is where process 0's coordinator service listens: the config
    field, else ``JAX_COORDINATOR_BIND_ADDRESS``, else the coordinator address itself (its
    host and port), so the service is reachable on the interface the other processes are told
    to use and on no other. (JAX's own default is every interface, ``[::]:<port>``, for an
    unauthenticated service.) ``None`` when the coordinator address is auto-detected: JAX
    then binds every interface. ``"[::]:<port>"`` / ``"0.0.0.0:<port>"`` ask for every
    interface explicitly, e.g. when a host's own name resolves to a loopback address.

    Returns:
      ``{"initialize", "coordinator_address", "coordinator_bind_address", "num_processes",
      "process_id", "initialization_timeout", "heartbeat_timeout"}`` (``None`` = let JAX
      auto-detect, e.g. on TPU pods, SLURM or Open MPI).

    Example:
      >>> settings = distributed_settings({"coordinator_address": "10.0.0.1:1234",
      ...                                  "num_processes": 2, "process_id": 1})
      >>> settings["initialize"], settings["coordinator_bind_address"]
      (True, '10.0.0.1:1234')
    """
    dist = dist.to_dict() if hasattr(dist, "to_dict") else dict(dist or {})
    address = (
        str(dist.get("coordinator_address") or "")
        or os.environ.get(ENV_COORDINATOR_ADDRESS, "").strip()
    )
    num_processes = int(dist.get("num_processes") or 0) or _env_int(ENV_NUM_PROCESSES)
    process_id = dist.get("process_id")
    process_id = int(process_id) if process_id is not None and int(process_id) >= 0 else None
    if process_id is None:
        process_id = _env_int(ENV_PROCESS_ID)
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}.")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(
            f"process_id must be in [0, num_processes={num_processes}), got {process_id}."
        )
    enabled = bool(dist.get("initialize", False)) or bool(
        address or num_processes is not None or process_id is not None
    )
    bind = (
        str(dist.get("coordinator_bind_address") or "")
        or os.environ.get(ENV_COORDINATOR_BIND_ADDRESS, "").strip()
        or address
    )
    if bind:
        _split_address(bind, "coordinator_bind_address")
    return {
        "initialize": enabled,
        "coordinator_address": address or None,
        "coordinator_bind_address": bind or None,
        "num_processes": num_processes,
        "process_id": process_id,
        "initialization_timeout": int(
            dist.get("initialization_timeout") or _env_int(ENV_INITIALIZATION_TIMEOUT) or 300
        ),
        "heartbeat_timeout": int(
            dist.get("heartbeat_timeout") or _env_int(ENV_HEARTBEAT_TIMEOUT) or 100
        ),
    }


def _split_address(address: str, name: str = "coordinator_address") -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{name} must be 'host:port', got {address!r} (e.g. '10.0.0.1:1234').")
    return host.strip("[]"), int(port)


def wait_for_coordinator(address: str, timeout: float, *, interval: float = 0.25) -> None:
    """Block until a TCP connection to ``address`` ("host:port") succeeds.

    Raises :class:`DistributedError` naming the address if nothing accepts a connection
    within ``timeout`` seconds (the coordinator process is not running, is still starting
    past the timeout, or a firewall blocks the port).

    Example (not run as a doctest: needs a running coordinator):
      >>> wait_for_coordinator("127.0.0.1:1234", timeout=30)  # doctest: +SKIP
    """
    host, port = _split_address(address)
    deadline = time.monotonic() + timeout
    last_error: OSError | None = None
    while True:
        remaining = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=max(min(remaining, 2.0), 0.1)):
                return
        except OSError as err:
            last_error = err
        if time.monotonic() + interval > deadline:
            break
        time.sleep(interval)
    raise DistributedError(
        f"could not reach the coordinator at {address} within {timeout:g} s ({last_error}). "
        "Is process 0 running, does coordinator_address / JAX_COORDINATOR_ADDRESS name "
        "its host and a free, reachable port, and does process 0's coordinator_bind_address "
        "accept connections from this host?"
    )


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    coordinator_bind_address: str | None = None,
    initialization_timeout: int = 300,
    heartbeat_timeout: int = 100,
) -> None:
    """Call ``jax.distributed.initialize`` (before any other JAX call), once.

    Arguments left ``None`` are taken from ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES``
    / ``JAX_PROCESS_ID``, then from JAX's cluster auto-detection (TPU pods, SLURM, Open
    MPI). Process 0's coordinator service listens on ``coordinator_bind_address`` (default:
    ``JAX_COORDINATOR_BIND_ADDRESS``, else the coordinator address; see
    :func:`distributed_settings`). CPU collectives use gloo (unless
    ``JAX_CPU_COLLECTIVES_IMPLEMENTATION`` says otherwise), so N local CPU processes form one
    data-parallel job over loopback.

    Failure is bounded: a process other than 0 first checks that the coordinator accepts
    connections and raises :class:`DistributedError` after ``initialization_timeout``
    seconds if it does not; once connected, a peer that stops sending heartbeats for
    ``heartbeat_timeout`` seconds makes JAX terminate every process with an error.

    Example (not run as a doctest: needs a coordinator, before any JAX call):
      >>> initialize("10.0.0.1:1234", num_processes=2, process_id=0)  # doctest: +SKIP
    """
    settings = distributed_settings(
        {
            "coordinator_address": coordinator_address or "",
            "num_processes": num_processes or 0,
            "process_id": -1 if process_id is None else process_id,
            "coordinator_bind_address": coordinator_bind_address or "",
        }
    )
    address = settings["coordinator_address"]
    bind = settings["coordinator_bind_address"]
    num_processes, process_id = settings["num_processes"], settings["process_id"]
    if not os.environ.get("JAX_CPU_COLLECTIVES_IMPLEMENTATION"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs: dict[str, Any] = {
        "initialization_timeout": int(initialization_timeout),
        "heartbeat_timeout_seconds": int(heartbeat_timeout),
    }
    if address:
        kwargs["coordinator_address"] = address
    if bind:
        kwargs["coordinator_bind_address"] = bind
    if num_processes is not None:
        kwargs["num_processes"] = num_processes
    if process_id is not None:
        kwargs["process_id"] = process_id
    who = f"process {'?' if process_id is None else process_id}/{num_processes or '?'}"
    serving = f", serving it on {bind or 'every interface'}" if process_id == 0 else ""
    print(
        f"convjax: {who} joining coordinator {address or '(auto-detected)'}{serving} "
        f"(timeout {initialization_timeout} s)",
        flush=True,
    )
    if address and process_id not in (None, 0):
        wait_for_coordinator(address, initialization_timeout)
    jax.distributed.initialize(**kwargs)


def setup_distributed(dist: Mapping[str, Any] | None = None) -> bool:
    """Initialize ``jax.distributed`` if the config or the environment asks for it.

    Returns True when the run is multi-process (``jax.distributed`` initialized, now or
    before). Call it before any other JAX call. See :func:`distributed_settings`.

    Example (not run as a doctest: a fragment of the training loop):
      >>> setup_distributed(config.distributed)   # no-op on a single host
      ... # doctest: +SKIP
    """
    settings = distributed_settings(dist)
    if jax.distributed.is_initialized():
        return True
    if not settings["initialize"]:
        return False
    initialize(
        settings["coordinator_address"],
        settings["num_processes"],
        settings["process_id"],
        coordinator_bind_address=settings["coordinator_bind_address"],
        initialization_timeout=settings["initialization_timeout"],
        heartbeat_timeout=settings["heartbeat_timeout"],
    )
    return True


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

    Example (not run as a doctest: a fragment of the training loop):
      >>> dp = DataParallel("shard_map")  # doctest: +SKIP
      >>> state, metrics = dp.compile(step)(dp.replicate(state), dp.shard_batch(batch))
      ... # doctest: +SKIP
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
    def compile(
        self,
        fn: Callable,
        *,
        donate_state: bool = False,
        compiler_options: Mapping[str, Any] | None = None,
    ) -> Callable:
        """Compile a per-device ``fn(state, batch) -> outputs`` for this backend.

        The state (first argument) is replicated, the batch (second) split over the data
        axis; every output is replicated (the step makes it identical with collectives).
        ``compiler_options`` (XLA debug options, see :func:`xla_compiler_options`) are passed
        to every compilation.
        """
        donate = (0,) if donate_state else ()
        options = dict(compiler_options or {})
        if self.backend == "pmap":
            mapped = jax.pmap(
                fn, axis_name=self.axis_name, devices=self.devices, donate_argnums=donate
            )
            return _CompileWithOptions(mapped, options) if options else mapped
        mapped = jax.shard_map(
            fn,
            mesh=self.mesh,
            in_specs=(P(), P(self.axis_name)),
            out_specs=P(),
            # Per-device (pmap) semantics: gradients w.r.t. replicated values are NOT summed
            # implicitly; the step averages them itself with lax.pmean.
            check_vma=False,
        )
        return jax.jit(mapped, donate_argnums=donate, compiler_options=options or None)


def _dtype_of(x: Any) -> np.dtype:
    """The dtype of an array or a Python/NumPy scalar (``np.result_type(array)`` is deprecated
    for arrays: implicit array-to-dtype conversion)."""
    return np.dtype(x.dtype) if hasattr(x, "dtype") else np.result_type(x)


class _CompileWithOptions:
    """``jax.pmap`` takes no ``compiler_options``: lower and compile on the first call for
    each argument signature (shapes, dtypes, tree structure) and reuse the executable."""

    def __init__(self, mapped: Callable, options: Mapping[str, Any]) -> None:
        self._mapped = mapped
        self._options = dict(options)
        self._compiled: dict[Any, Callable] = {}

    def __call__(self, *args: Any) -> Any:
        leaves, treedef = jax.tree.flatten(args)
        key = (treedef, tuple((np.shape(x), str(_dtype_of(x))) for x in leaves))
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._mapped.lower(*args).compile(compiler_options=self._options)
            self._compiled[key] = compiled
        return compiled(*args)


#: XLA:CPU (jaxlib 0.12) miscompiles bfloat16 YNNPACK fusions: a chain
#: ``dot/conv -> relu -> dot/conv -> elementwise -> reduce`` (max pool, mean, max) fused into
#: one YNNPACK subgraph reads garbage (NaN / 1e38 values; eager and float32/float16 are
#: correct). This option turns YNNPACK fusion off for the compilation it is passed to.
CPU_BF16_WORKAROUND = {"xla_cpu_experimental_ynn_fusion_type": ""}


def xla_compiler_options(compute_dtype: Any, platform: str | None = None) -> dict[str, Any]:
    """Compiler options the train/eval steps need on ``platform`` (default: JAX's backend).

    Returns :data:`CPU_BF16_WORKAROUND` for bfloat16 compute on CPU (an XLA:CPU YNNPACK
    fusion bug turns bfloat16 conv -> relu -> conv -> relu -> max-pool chains into NaN under
    ``jit``), else ``{}``. Pass them to ``jax.jit(..., compiler_options=...)``.

    Example:
      >>> xla_compiler_options(jnp.bfloat16, "cpu")
      {'xla_cpu_experimental_ynn_fusion_type': ''}
      >>> xla_compiler_options(None, "cpu")
      {}
    """
    platform = jax.default_backend() if platform is None else platform
    if platform == "cpu" and compute_dtype is not None and np.dtype(compute_dtype) == jnp.bfloat16:
        return dict(CPU_BF16_WORKAROUND)
    return {}


__all__ = [
    "BACKENDS",
    "CPU_BF16_WORKAROUND",
    "DataParallel",
    "DistributedError",
    "distributed_settings",
    "env_flag",
    "initialize",
    "is_primary",
    "setup_distributed",
    "wait_for_coordinator",
    "xla_compiler_options",
]

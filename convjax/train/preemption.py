"""Stop requests (Ctrl-C, preemption) that every process of a run agrees on.

SIGINT (Ctrl-C) and SIGTERM (what preemptible TPU and GPU VMs, SLURM and Kubernetes send
before they stop a machine) do not stop the training loop where it stands: the handler of
:class:`StopRequest` only records the signal, and the loop asks :meth:`StopRequest.should_stop`
after every step. When it says yes, the loop saves a checkpoint at that step and ends with
:class:`convjax.train.loop.TrainingInterrupted` (exit status 130 for SIGINT, 143 for SIGTERM:
128 + the signal, the shell convention). A second Ctrl-C stops at once, without a checkpoint.

Several processes: a signal may reach one process only (one preempted host) or all of them
at slightly different steps, so they agree first. After every step each process puts its
flag into a tiny all-reduce (``max`` over all devices of all processes, one int32 per device),
and reads the result of the *previous* step's all-reduce: every process sees the same values
in the same order, so they all stop at the same step, one step after the first signal, and
process 0 saves that step. Reading a step late keeps the host from waiting on the device
(the all-reduce of step ``t`` has finished long before step ``t + 1`` is dispatched). This is
an explicit collective rather than JAX's preemption sync point
(``multihost_utils.reached_preemption_sync_point``), because that only covers SIGTERM (not
Ctrl-C) and needs the coordination service's preemption notifier, which replaces Python's
SIGTERM handler. Measured cost: see the README ("Preemption and Ctrl-C").
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

#: The signals that ask for a checkpoint and a clean stop.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def signal_name(signum: int) -> str:
    """``"SIGTERM"`` for 15, ..."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopRequest:
    """Records SIGINT/SIGTERM while installed and says when all processes should stop.

    Args:
      multiprocess: agree across ``jax.distributed`` processes (default: when there are
        several).

    Example:
      >>> import signal
      >>> stop = StopRequest()
      >>> with stop.installed():
      ...     for step in range(1, 100):
      ...         pass  # one train step
      ...         if step == 3 and stop.active:
      ...             signal.raise_signal(signal.SIGTERM)   # as a preempting scheduler would
      ...         if stop.should_stop():
      ...             break  # save a checkpoint at ``step`` and exit 128 + stop.signum
      >>> step, signal_name(stop.signum), stop.active
      (3, 'SIGTERM', False)
    """

    def __init__(self, multiprocess: bool | None = None) -> None:
        self.multiprocess = jax.process_count() > 1 if multiprocess is None else multiprocess
        self.signum: int | None = None  # the first signal received (this process)
        self.agreed_signum: int | None = None  # the signal all processes stop for
        self.active = False  # handlers installed (main thread only)
        self._previous: dict[int, Any] = {}
        self._pending: Any = None  # the last all-reduce, read at the next step
        self._reduce = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            return
        if signum == signal.SIGINT:  # a second Ctrl-C: stop now, without a checkpoint
            raise KeyboardInterrupt

    def installed(self) -> StopRequest:
        """Context manager: install the handlers (main thread only; elsewhere a no-op)."""
        return self

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                previous = signal.getsignal(sig)
                if previous is signal.SIG_IGN or previous is None:  # ignored, or not Python's
                    continue
                self._previous[sig] = previous
                signal.signal(sig, self._handle)
            self.active = True
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}
        self.active = False

    def should_stop(self) -> bool:
        """Whether every process stops after the current step (call once per step on every
        process); sets :attr:`agreed_signum`."""
        if not self.multiprocess:
            self.agreed_signum = self.signum
            return self.signum is not None
        previous = self._pending
        self._pending = self._all_reduce(self.signum or 0)
        if previous is None:
            return False
        value = int(np.asarray(previous.addressable_data(0)))
        if value:
            self.agreed_signum = value
        return bool(value)

    def _all_reduce(self, value: int) -> jax.Array:
        """``max`` of ``value`` over all processes (a device array; not waited for)."""
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        if self._reduce is None:
            mesh = Mesh(np.asarray(jax.devices()), ("processes",))
            self._in = NamedSharding(mesh, PartitionSpec("processes"))
            self._reduce = jax.jit(jnp.max, out_shardings=NamedSharding(mesh, PartitionSpec()))
        local = np.full((jax.local_device_count(),), value, np.int32)
        global_array = jax.make_array_from_process_local_data(
            self._in, local, (jax.device_count(),)
        )
        return self._reduce(global_array)


__all__ = ["STOP_SIGNALS", "StopRequest", "signal_name"]

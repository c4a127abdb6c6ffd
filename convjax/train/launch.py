"""Run one job as N local processes, the way a TPU pod slice or a GPU cluster runs it.

``convjax launch --processes 2 --devices-per-process 4 -- train --config=default`` starts two
``python -m convjax train --config=default`` processes on this machine. Each gets

* ``JAX_COORDINATOR_ADDRESS=127.0.0.1:<free port>`` (process 0 runs the coordinator) and
  ``JAX_COORDINATOR_BIND_ADDRESS`` set to the same address, so the coordinator service
  listens on loopback only (JAX's default is every interface),
  ``JAX_NUM_PROCESSES=N`` and ``JAX_PROCESS_ID=i``, which ``convjax train`` passes to
  ``jax.distributed.initialize`` (see :mod:`convjax.train.distributed`);
* ``JAX_PLATFORMS=cpu``, ``JAX_NUM_CPU_DEVICES=D`` and gloo CPU collectives, so the N x D
  CPU devices form one data-parallel job whose collectives really cross process boundaries
  over loopback, exactly as they cross hosts on a cluster.

The output of every process is forwarded line by line with a ``[p<i>]`` prefix. If one
process fails, the others are stopped (SIGTERM, then SIGKILL after a grace period) and the
launcher exits with the failed process's status; Ctrl-C or SIGTERM stops all of them, and on
Linux the processes are killed if the launcher itself dies. The command after
``--`` is a ``convjax`` command (``train ...``), a Python script (``path.py ...``, run with
this interpreter) or any executable.

Example:
  $ convjax launch --processes 2 -- train --config=default --config.num_epochs=2
  [p0] convjax: model digits_cnn (...), 8 x cpu device(s) via pmap, ...
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO

#: Commands of ``python -m convjax`` that the launcher runs through the package.
CONVJAX_COMMANDS = ("train", "configs", "models")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (picked by the OS).

    Example:
      >>> 1024 <= free_port() < 65536
      True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def child_env(
    base: Mapping[str, str],
    *,
    process_id: int,
    num_processes: int,
    coordinator_address: str,
    devices_per_process: int,
) -> dict[str, str]:
    """The environment of local process ``process_id``: coordinator, ids, CPU devices.

    The coordinator is bound where it is advertised (``JAX_COORDINATOR_BIND_ADDRESS =
    coordinator_address``), so a loopback address keeps it off the network.

    ``--xla_force_host_platform_device_count`` is removed from ``XLA_FLAGS`` (it would
    override ``JAX_NUM_CPU_DEVICES``); everything else in ``base`` is kept.

    Example:
      >>> env = child_env(os.environ, process_id=1, num_processes=2,
      ...                 coordinator_address="127.0.0.1:1234", devices_per_process=4)
      >>> env["JAX_PROCESS_ID"], env["JAX_NUM_CPU_DEVICES"]
      ('1', '4')
    """
    env = dict(base)
    xla_flags = re.sub(
        r"--xla_force_host_platform_device_count=\S*", "", env.get("XLA_FLAGS", "")
    ).strip()
    if xla_flags:
        env["XLA_FLAGS"] = xla_flags
    else:
        env.pop("XLA_FLAGS", None)
    env.update(
        {
            "JAX_COORDINATOR_ADDRESS": coordinator_address,
            # The coordinator service listens where it is advertised (loopback), not on
            # JAX's default of every interface.
            "JAX_COORDINATOR_BIND_ADDRESS": coordinator_address,
            "JAX_NUM_PROCESSES": str(num_processes),
            "JAX_PROCESS_ID": str(process_id),
            "JAX_PLATFORMS": "cpu",
            "JAX_NUM_CPU_DEVICES": str(devices_per_process),
            "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def resolve_command(command: Sequence[str]) -> list[str]:
    """``train ...`` -> ``python -m convjax train ...``; ``x.py ...`` -> ``python x.py ...``.

    Anything else is run as given. Raises ``ValueError`` for an empty command.
    """
    command = list(command)
    if not command:
        raise ValueError(
            "launch needs a command after '--', e.g. `convjax launch --processes 2 -- train "
            "--config=default`."
        )
    if command[0] in CONVJAX_COMMANDS:
        return [sys.executable, "-m", "convjax", *command]
    if command[0].endswith(".py"):
        return [sys.executable, *command]
    return command


def _forward(stream: IO[bytes], prefix: str, out: IO[str], lock: threading.Lock) -> None:
    """Copy ``stream`` to ``out`` line by line, each line prefixed (progress bars included)."""
    for raw in iter(stream.readline, b""):
        text = raw.decode("utf-8", errors="replace").rstrip("\n")
        # tqdm redraws with carriage returns: keep only the latest state of the line.
        text = text.rsplit("\r", 1)[-1] if "\r" in text.rstrip("\r") else text.rstrip("\r")
        with lock:
            out.write(f"{prefix}{text}\n")
            out.flush()
    stream.close()


def _die_with_parent() -> None:
    """In the child before exec (Linux): get SIGKILL if the launcher dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the process group of our child ``proc`` (it and its own children)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_all(procs: Sequence[subprocess.Popen], grace: float) -> None:
    """SIGTERM every running child (group), then SIGKILL what is left after ``grace`` s."""
    running = [p for p in procs if p.poll() is None]
    for p in running:
        _signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in running:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        if p.poll() is None:
            _signal_group(p, signal.SIGKILL)
            p.wait()


def _exit_status(returncode: int) -> int:
    """Shell convention: a child killed by signal ``s`` reports ``128 + s``."""
    return 128 - returncode if returncode < 0 else returncode


def launch(
    command: Sequence[str],
    *,
    processes: int = 2,
    devices_per_process: int = 4,
    port: int | None = None,
    host: str = "127.0.0.1",
    timeout: float | None = None,
    grace: float = 5.0,
    env: Mapping[str, str] | None = None,
    out: IO[str] | None = None,
) -> int:
    """Run ``command`` as ``processes`` local JAX processes; return the job's exit status.

    Args:
      command: ``["train", "--config=..."]``, ``["script.py", ...]`` or an executable + args.
      processes: number of processes N (>= 1).
      devices_per_process: CPU devices D of each process (N x D devices in all).
      port: coordinator port on ``host`` (default: a free port picked by the OS).
      host: coordinator host; loopback for one machine.
      timeout: stop everything after this many seconds (exit status 124); ``None``: no limit.
      grace: seconds between SIGTERM and SIGKILL when stopping the processes.
      env: base environment of the children (default ``os.environ``).
      out: where the prefixed output goes (default ``sys.stdout``).

    Returns:
      0 if every process exited with 0; else the status of the first process that failed
      (``128 + signal`` for a signal), 124 on timeout, 130 on Ctrl-C.

    Example (not run as a doctest: starts 2 processes and trains):
      >>> launch(["train", "--config=default", "--config.num_steps=20"], processes=2)
      ... # doctest: +SKIP
      0
    """
    if not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be an integer >= 1, got {processes!r}.")
    if not isinstance(devices_per_process, int) or devices_per_process < 1:
        raise ValueError(
            f"devices_per_process must be an integer >= 1, got {devices_per_process!r}."
        )
    if port is not None and not 0 < int(port) < 65536:
        raise ValueError(f"port must be in 1..65535, got {port!r}.")
    argv = resolve_command(command)
    out = sys.stdout if out is None else out
    address = f"{host}:{port if port is not None else free_port(host)}"
    base = os.environ if env is None else env
    lock = threading.Lock()
    procs: list[subprocess.Popen] = []
    threads: list[threading.Thread] = []

    def say(text: str) -> None:
        with lock:
            out.write(f"convjax launch: {text}\n")
            out.flush()

    say(
        f"{processes} process(es) x {devices_per_process} CPU device(s), coordinator {address}: "
        + " ".join(argv)
    )
    status = 0
    try:
        for i in range(processes):
            proc = subprocess.Popen(
                argv,
                env=child_env(
                    base,
                    process_id=i,
                    num_processes=processes,
                    coordinator_address=address,
                    devices_per_process=devices_per_process,
                ),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: we can stop its children too
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
            procs.append(proc)
            thread = threading.Thread(
                target=_forward, args=(proc.stdout, f"[p{i}] ", out, lock), daemon=True
            )
            thread.start()
            threads.append(thread)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                i, code = failed[0]
                status = _exit_status(code)
                others = sum(c is None for c in codes)
                say(
                    f"process {i} exited with status {status}"
                    + (f"; stopping the other {others} process(es)" if others else "")
                )
                break
            if all(c == 0 for c in codes):
                break
            if deadline is not None and time.monotonic() > deadline:
                say(f"timeout after {timeout:g} s; stopping all processes")
                status = 124
                break
            time.sleep(0.05)
    except KeyboardInterrupt:
        say("interrupted; stopping all processes")
        status = 130
    finally:
        _stop_all(procs, grace)
        for thread in threads:
            thread.join(timeout=5.0)
    return status


def main(argv: Sequence[str]) -> int:
    """``convjax launch [options] -- <command>``: parse the options, run :func:`launch`."""
    argv = list(argv)
    if "--" in argv:
        split = argv.index("--")
        options, command = argv[:split], argv[split + 1 :]
    else:
        options, command = argv, []
    parser = argparse.ArgumentParser(
        prog="convjax launch",
        description="Run a convjax command as N local JAX processes (multi-host on one machine).",
        epilog="example: convjax launch --processes 2 -- train --config=default",
    )
    parser.add_argument("--processes", type=int, default=2, help="number of processes")
    parser.add_argument(
        "--devices-per-process", type=int, default=4, help="CPU devices per process"
    )
    parser.add_argument("--port", type=int, default=None, help="coordinator port (default free)")
    parser.add_argument("--timeout", type=float, default=None, help="stop after this many s")
    args = parser.parse_args(options)

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # stop the processes like Ctrl-C does

    signal.signal(signal.SIGTERM, terminate)
    try:
        return launch(
            command,
            processes=args.processes,
            devices_per_process=args.devices_per_process,
            port=args.port,
            timeout=args.timeout,
        )
    except ValueError as err:
        print(f"convjax launch: error: {err}", file=sys.stderr)
        return 2


__all__ = ["child_env", "free_port", "launch", "main", "resolve_command"]

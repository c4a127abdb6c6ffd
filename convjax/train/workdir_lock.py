"""One trainer per workdir: an exclusive lock held for the whole run.

:func:`acquire` takes ``<workdir>/.lock`` before the trainer touches anything else in the
workdir. The lock is a kernel ``flock`` on that file, so it is released when the holding
process ends in any way (exit, crash, ``kill -9``); the file holds the holder's host, PID
and start time (JSON), which the message of a refused trainer names::

    workdir runs/x is in use by another trainer: host node3, PID 4121, started
    2026-12-02T18:20:11+00:00 (lock file runs/x/.lock); wait for it to end or use another
    --workdir

A lock file whose ``flock`` is free belongs to a run that ended without releasing it
(killed, preempted): it is stale, and the new trainer takes it over with one warning line.
A clean end removes the file.

Several hosts: only process 0 writes a workdir (logs, metrics, checkpoints; see
:mod:`convjax.train.checkpoint`), so only process 0 takes the lock; it tells the other
processes whether it got it, and every process stops with the same line if not. Two jobs
on different machines that share a workdir over a network file system exclude each other
only if that file system honours ``flock`` across machines (NFSv4, Lustre and GPFS do; a
local disk is not shared anyway). Where ``flock`` is not supported at all, the lock falls
back to the file alone: a file naming a live process on this host, or any process on
another host, refuses the run (delete the file if that run is gone).
"""

from __future__ import annotations

import atexit
import datetime
import errno
import fcntl
import json
import os
import socket
from collections.abc import Callable
from typing import Any

#: Name of the lock file inside the workdir.
LOCK_FILE = ".lock"

#: Locks this process holds, by workdir: a new run in the same process (a notebook re-running
#: ``train`` after an error) takes its own earlier lock over instead of refusing itself.
_HELD: dict[str, WorkdirLock] = {}


class WorkdirLocked(RuntimeError):
    """Another trainer holds the workdir; the message names it (host, PID, start time)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_holder(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            holder = json.loads(f.read() or "{}")
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict[str, Any]) -> str:
    """``host H, PID P, started T`` of a lock file's content."""
    return (
        f"host {holder.get('host', '?')}, PID {holder.get('pid', '?')}, "
        f"started {holder.get('started', '?')}"
    )


class WorkdirLock:
    """The lock on one workdir, held from :func:`acquire` until :meth:`release`.

    Example:
      >>> lock = acquire("runs/x")
      >>> lock.release()
    """

    def __init__(self, workdir: str, fd: int | None, path: str | None) -> None:
        self.workdir = workdir
        self._fd = fd
        self.path = path

    @property
    def held(self) -> bool:
        """Whether this object holds the lock (``False`` on processes other than 0)."""
        return self.path is not None

    def release(self) -> None:
        """Remove the lock file and release the lock (idempotent)."""
        if self.path is None:
            return
        try:
            os.unlink(self.path)  # before unlocking: a waiter re-checks the inode (acquire)
        except OSError:
            pass
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self.path = None, None
        if _HELD.get(self.workdir) is self:
            del _HELD[self.workdir]


def _holder_record() -> bytes:
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": started}
    return (json.dumps(record) + "\n").encode("utf-8")


def _locked_message(workdir: str, path: str, holder: dict[str, Any]) -> str:
    return (
        f"workdir {workdir} is in use by another trainer: {describe_holder(holder)} "
        f"(lock file {path}); wait for it to end or use another --workdir"
    )


def _acquire_local(workdir: str, warn: Callable[[str], None]) -> WorkdirLock:
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    for _ in range(100):  # retried only while another process releases at the same moment
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WorkdirLocked(_locked_message(workdir, path, _read_holder(path))) from None
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                return _acquire_without_flock(workdir, path, warn)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the holder removed the file between our open and flock: retry
            os.close(fd)
            continue
        previous = os.read(fd, 1 << 16)
        if previous.strip():
            try:
                holder = json.loads(previous)
            except ValueError:
                holder = {}
            holder = holder if isinstance(holder, dict) else {}
            warn(
                f"taking over the stale lock of a trainer that is gone ({describe_holder(holder)}"
                f"; {path})"
            )
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, _holder_record())
        os.fsync(fd)
        return WorkdirLock(workdir, fd, path)
    raise WorkdirLocked(f"could not lock {path}: it keeps being replaced")


def _acquire_without_flock(workdir: str, path: str, warn: Callable[[str], None]) -> WorkdirLock:
    """The file-only lock of file systems without ``flock`` (see the module docstring)."""
    holder = _read_holder(path)
    if holder:
        here = holder.get("host") == socket.gethostname()
        if not here or _pid_alive(int(holder.get("pid", -1))):
            raise WorkdirLocked(_locked_message(workdir, path, holder))
        warn(f"taking over the stale lock of a trainer that is gone ({describe_holder(holder)})")
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(_holder_record())
    os.replace(tmp, path)
    return WorkdirLock(workdir, None, path)


def acquire(
    workdir: str, *, primary: bool = True, warn: Callable[[str], None] | None = None
) -> WorkdirLock:
    """Lock ``workdir`` for this run (see the module docstring).

    Args:
      workdir: the run's directory (created if missing).
      primary: whether this process writes the workdir (process 0). With several processes
        every process must call this: process 0 takes the lock and tells the others.
      warn: prints the stale-lock warning (default: ``convjax: warning: ...`` on stderr).

    Raises:
      WorkdirLocked: another live trainer holds the lock (on every process).

    Example:
      >>> lock = acquire("runs/x")  # a second trainer on runs/x now stops with one line
      >>> lock.release()
    """
    import jax

    warn = warn or (lambda text: print(f"convjax: warning: {text}", flush=True))
    workdir = os.path.abspath(workdir)
    lock, message = WorkdirLock(workdir, None, None), ""
    if primary:
        if workdir in _HELD:  # this process's own earlier run (ended by an error)
            _HELD[workdir].release()
        try:
            lock = _acquire_local(workdir, warn)
            _HELD[workdir] = lock
        except WorkdirLocked as err:
            message = str(err)
    if jax.process_count() > 1:
        message = _broadcast_message(message)
    if message:
        raise WorkdirLocked(message)
    return lock


@atexit.register
def _release_all() -> None:
    for lock in list(_HELD.values()):
        lock.release()


def _broadcast_message(message: str) -> str:
    """Process 0's ``message`` on every process (empty: the lock was taken)."""
    import numpy as np
    from jax.experimental import multihost_utils

    payload = np.frombuffer(message.encode("utf-8")[:4096].ljust(4096, b"\0"), np.uint8)
    data = np.asarray(multihost_utils.broadcast_one_to_all(payload)).astype(np.uint8)
    return data.tobytes().rstrip(b"\0").decode("utf-8", errors="replace")


__all__ = ["LOCK_FILE", "WorkdirLock", "WorkdirLocked", "acquire", "describe_holder"]

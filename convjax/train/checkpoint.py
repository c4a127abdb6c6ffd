"""Orbax checkpoints of the whole run: train state, data-iterator position, and RNG.

A checkpoint holds the host copy of :class:`convjax.train.state.TrainState` (params, both
optimizer states, batch/deconvolution statistics, padding parameters, step and base RNG key)
as a nested dict of arrays (``flax.serialization.to_state_dict``), plus the data iterator's
state (``iterator.get_state()``, e.g. a grain ``DatasetIterator``) as JSON. Restoring both
continues a run exactly where the checkpoint was taken: on CPU a killed-and-resumed run ends
bit-identical to an uninterrupted one.

With several processes (``jax.distributed``) only process 0 touches the checkpoint
directory: it writes (the host copy is the same on every process) and, on restore, reads and
broadcasts the state and data position to the other processes. So resuming needs no shared
file system between hosts, and there are no orbax barriers the other processes could miss.

Verified checkpoints: after orbax has finalized step ``s``, :class:`Checkpointer` writes
``<directory>/s/checksums.json`` (the SHA-256 and size of every file of the step, written
last and atomically: temporary file, fsync, rename). :meth:`Checkpointer.restore` checks it
before reading: a step with a missing, truncated or changed file (a single flipped bit), an
unreadable manifest or no files at all is damaged; it is skipped with one warning line naming
the step and what is wrong, and the newest intact step is restored (a writing run moves the
damaged step to ``<directory>/damaged-s`` so the step can be written again). If no step is
intact, :class:`CheckpointError` says so in one line. A step without ``checksums.json`` (written
by convjax before checksums, or a run killed between orbax's commit and the manifest) is
restored unverified, with a warning; if orbax cannot read it, it counts as damaged.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

#: The checksum manifest of a step directory (written last).
MANIFEST = "checksums.json"


class CheckpointError(RuntimeError):
    """No intact checkpoint to restore (or the requested step is missing or damaged)."""


class DiskFullError(OSError):
    """The workdir's file system is full; the message names the directory and free space."""


def free_space(path: str) -> str:
    """Free space of the file system holding ``path`` (or its nearest existing parent)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return "unknown"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if free < 1024 or unit == "TiB":
            return f"{free:.0f} {unit}" if unit == "bytes" else f"{free:.1f} {unit}"
        free /= 1024
    return "unknown"  # pragma: no cover


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or an exception it was raised from) is "no space left on device"."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(err) or "Disk quota exceeded" in str(err):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def disk_full_error(path: str, what: str) -> DiskFullError:
    """The one-line error for a full disk while writing ``what`` under ``path``."""
    return DiskFullError(
        errno.ENOSPC,
        f"no space left on the device of {path} ({free_space(path)} free) while writing "
        f"{what}; free some space and run the same command to resume",
    )


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files_of(step_dir: str) -> list[str]:
    out = []
    for root, _, files in os.walk(step_dir):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), step_dir)
            if rel != MANIFEST and not rel.startswith(MANIFEST):
                out.append(rel)
    return sorted(out)


def write_manifest(step_dir: str) -> None:
    """Write ``step_dir/checksums.json``: SHA-256 and size of every file, atomically."""
    files = {
        rel: {
            "sha256": _sha256(os.path.join(step_dir, rel)),
            "size": os.path.getsize(os.path.join(step_dir, rel)),
        }
        for rel in _files_of(step_dir)
    }
    tmp = os.path.join(step_dir, f"{MANIFEST}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"format": 1, "algorithm": "sha256", "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(step_dir, MANIFEST))


#: :func:`verify_step`'s answer for a step without a manifest.
UNVERIFIED = "unverified"


def verify_step(step_dir: str) -> str | None:
    """``None`` if ``step_dir`` matches its manifest, :data:`UNVERIFIED` if it has none, else
    what is wrong (``"file state/d/... fails its SHA-256 checksum"``, ...).

    Example:
      >>> import os, tempfile
      >>> step = tempfile.mkdtemp()
      >>> with open(os.path.join(step, "w.bin"), "wb") as f:
      ...     _ = f.write(b"abc")
      >>> verify_step(step)
      'unverified'
      >>> write_manifest(step)
      >>> verify_step(step) is None
      True
      >>> with open(os.path.join(step, "w.bin"), "ab") as f:
      ...     _ = f.write(b"d")
      >>> verify_step(step)
      'file w.bin has 4 bytes, 3 were written (truncated?)'
    """
    if not os.path.isdir(step_dir):
        return "it does not exist"
    path = os.path.join(step_dir, MANIFEST)
    if not os.path.exists(path):
        return UNVERIFIED if _files_of(step_dir) else "empty step directory"
    try:
        with open(path, encoding="utf-8") as f:
            files = json.load(f)["files"]
        if not isinstance(files, dict) or not files:
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError):
        return f"its {MANIFEST} is unreadable"
    for rel, entry in sorted(files.items()):
        full = os.path.join(step_dir, rel)
        if not os.path.isfile(full):
            return f"file {rel} is missing"
        size = os.path.getsize(full)
        if size != entry.get("size"):
            return f"file {rel} has {size} bytes, {entry.get('size')} were written (truncated?)"
        if _sha256(full) != entry.get("sha256"):
            return f"file {rel} fails its SHA-256 checksum (changed after writing)"
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(err).__name__}: {line[:200]}" if line else type(err).__name__


@contextlib.contextmanager
def _quiet_orbax() -> Any:
    """Silence orbax/absl warnings while probing possibly damaged steps (we say it once)."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _encode_data_state(data_state: Any) -> dict:
    if data_state is None:
        return {"kind": "none"}
    if isinstance(data_state, bytes):
        return {"kind": "bytes", "value": base64.b64encode(data_state).decode("ascii")}
    return {"kind": "json", "value": data_state}


def _decode_data_state(payload: dict) -> Any:
    kind = payload.get("kind")
    if kind == "bytes":
        return base64.b64decode(payload["value"])
    if kind == "json":
        return payload["value"]
    return None


def _is_empty(x: Any) -> bool:
    return isinstance(x, dict) and not x


def _prune_empty(tree: Any) -> Any:
    """Drop empty dicts (orbax stores no empty containers); :func:`_restore_into` refills."""
    if isinstance(tree, dict):
        out = {k: _prune_empty(v) for k, v in tree.items()}
        return {k: v for k, v in out.items() if not _is_empty(v)}
    return tree


def _fill_from(template: Any, restored: Any) -> Any:
    """Put ``restored`` values into the (state-dict) structure of ``template``."""
    if isinstance(template, dict):
        restored = restored if isinstance(restored, dict) else {}
        return {k: _fill_from(v, restored.get(k, {})) for k, v in template.items()}
    if _is_empty(restored):
        raise ValueError(
            f"checkpoint is missing a value for a leaf of shape {np.shape(template)}; was the "
            "checkpoint written by a different config? Use a new --workdir or "
            "--config.resume=False."
        )
    value = np.asarray(restored)
    if value.shape != np.shape(template):
        raise ValueError(
            f"checkpoint leaf has shape {value.shape}, the model expects {np.shape(template)}; "
            "was the checkpoint written by a different config? Use a new --workdir or "
            "--config.resume=False."
        )
    return value.astype(np.asarray(template).dtype)


def _broadcast_from_primary(
    template: Any, restored: tuple[Any, Any] | None, error: str = ""
) -> Any:
    """Send process 0's ``restored`` (``(state, data_state)`` or ``None``) to all processes.

    Every process passes a ``template`` of the same structure; the result has host numpy
    leaves with the template's dtypes. A non-empty ``error`` of process 0 raises
    :class:`CheckpointError` on every process.
    """
    from jax.experimental import multihost_utils

    primary = jax.process_index() == 0
    code = 2 if primary and error else int(restored is not None and primary)
    found = int(multihost_utils.broadcast_one_to_all(np.int32(code)))
    if found == 2:
        raise CheckpointError(error or "process 0 found no intact checkpoint (see its output)")
    if not found:
        return None
    host_template = jax.device_get(template)
    source = restored[0] if primary and restored is not None else host_template
    state = multihost_utils.broadcast_one_to_all(source)
    state = jax.tree.map(
        lambda x, t: np.asarray(x).astype(np.asarray(t).dtype), state, host_template
    )
    payload = b""
    if primary and restored is not None:
        payload = json.dumps(_encode_data_state(restored[1])).encode("utf-8")
    size = int(multihost_utils.broadcast_one_to_all(np.int32(len(payload))))
    buffer = np.frombuffer(payload, np.uint8) if primary else np.zeros(size, np.uint8)
    data = np.asarray(multihost_utils.broadcast_one_to_all(buffer)).astype(np.uint8)
    return state, _decode_data_state(json.loads(data.tobytes().decode("utf-8")))


class Checkpointer:
    """Save / restore ``(train state, data iterator state)`` with an orbax CheckpointManager.

    Args:
      directory: checkpoint root (created if missing); step ``s`` goes to ``directory/s``.
      max_to_keep: number of most recent checkpoints kept.
      enabled: write checkpoints (``False`` on processes other than 0 when each process
        would write the same host copy; restoring still works everywhere). With several
        processes only process 0 ever opens the directory (see the module docstring).
      warn: prints a warning line (default: ``convjax: warning: ...`` on stderr).

    Every step is verified on restore (module docstring): a damaged newest step falls back
    to the newest intact one with one warning.

    Example (not run as a doctest: a fragment of the training loop):
      >>> ckpt = Checkpointer("runs/x/checkpoints")  # doctest: +SKIP
      >>> ckpt.save(100, host_state, iterator.get_state())  # doctest: +SKIP
      >>> state, data_state = ckpt.restore(template_state)  # doctest: +SKIP
    """

    def __init__(
        self,
        directory: str,
        *,
        max_to_keep: int = 2,
        enabled: bool = True,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.directory = os.path.abspath(directory)
        self.multiprocess = jax.process_count() > 1
        primary = jax.process_index() == 0
        self.enabled = enabled and primary if self.multiprocess else enabled
        self.warn = warn or _default_warn
        # Host numpy copies are identical on every process: process 0 alone writes. With
        # several processes the manager lives on process 0 only (no cross-process barriers).
        mp_options = ocp.options.MultiprocessingOptions(
            primary_host=0, active_processes={0} if self.multiprocess else None
        )
        self._options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=False,  # made below (orbax cannot with active_processes)
            enable_async_checkpointing=False,
            multiprocessing_options=mp_options,
        )
        self._manager: ocp.CheckpointManager | None = None
        if self.enabled:
            os.makedirs(self.directory, exist_ok=True)
        self._may_open = primary or not self.multiprocess
        self._open()

    def _open(self) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None
        if self._may_open and (self.enabled or os.path.isdir(self.directory)):
            with _quiet_orbax():
                self._manager = ocp.CheckpointManager(self.directory, options=self._options)

    def all_steps(self) -> list[int]:
        """The steps with a directory (intact or not), oldest first; ``[]`` elsewhere than
        process 0 of a multi-process run."""
        if not self._may_open or not os.path.isdir(self.directory):
            return []
        return sorted(int(n) for n in os.listdir(self.directory) if n.isdigit())

    def latest_step(self) -> int | None:
        """The newest saved step (intact or not; see :meth:`restore`), or ``None``."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def set_aside(self, step: int, label: str) -> str:
        """Move step ``step`` to ``<directory>/<label>-<step>`` (kept for inspection, no
        longer a step); returns the new path."""
        target = os.path.join(self.directory, f"{label}-{step}")
        n = 1
        while os.path.exists(target):
            n += 1
            target = os.path.join(self.directory, f"{label}-{step}.{n}")
        os.rename(os.path.join(self.directory, str(step)), target)
        if self._manager is not None:  # orbax caches the steps it saw: reopen
            self._open()
        return target

    def rewind(self, step: int) -> list[int]:
        """Move every step newer than ``step`` to ``rewound-<s>`` (a run resumed from an
        explicit older step will write them again); returns those steps."""
        newer = [s for s in self.all_steps() if s > step] if self.enabled else []
        for s in newer:
            self.set_aside(s, "rewound")
        return newer

    def save(self, step: int, state: Any, data_state: Any = None) -> None:
        """Write ``state`` (a host pytree) and the JSON-able ``data_state`` at ``step``,
        then its checksum manifest.

        Raises:
          DiskFullError: the file system is full (temporary directories are removed, the
            earlier steps are kept).
        """
        if not self.enabled or self._manager is None:
            return
        tree = _prune_empty(serialization.to_state_dict(jax.device_get(state)))
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(tree),
            data=ocp.args.JsonSave(_encode_data_state(data_state)),
        )
        step_dir = os.path.join(self.directory, str(int(step)))
        try:
            with _quiet_orbax():  # a failing save logs a traceback per thread; we say it once
                self._manager.save(int(step), args=args, force=True)
                self._manager.wait_until_finished()
            write_manifest(step_dir)
        except Exception as err:
            if not is_disk_full(err):
                raise
            # orbax's writer threads may still be finishing (and creating files) after the
            # error surfaced: wait for them, then remove what they left.
            with contextlib.suppress(Exception), _quiet_orbax():
                self._manager.wait_until_finished()
            self.remove_partial(int(step))
            raise disk_full_error(self.directory, f"the checkpoint of step {int(step)}") from None

    def remove_partial(self, step: int | None = None) -> None:
        """Remove orbax's temporary directories and ``step``'s directory if it has no manifest
        (an interrupted or failed save)."""
        if not os.path.isdir(self.directory):
            return
        for name in os.listdir(self.directory):
            if ".orbax-checkpoint-tmp" in name:
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
        if step is not None:
            step_dir = os.path.join(self.directory, str(step))
            if os.path.isdir(step_dir) and not os.path.exists(os.path.join(step_dir, MANIFEST)):
                shutil.rmtree(step_dir, ignore_errors=True)

    def restore(self, template: Any, step: int | None = None) -> tuple[Any, Any] | None:
        """Restore the newest intact (or the given) checkpoint into ``template``'s structure.

        Returns ``(state, data_state)`` with host numpy leaves, or ``None`` if there is no
        checkpoint. A damaged step (module docstring) is skipped with one warning; a writing
        checkpointer moves it to ``damaged-<step>``. With several processes every process
        must call it: process 0 reads and broadcasts.

        Raises:
          CheckpointError: ``step`` does not exist or is damaged, or no step is intact.
        """
        if self.multiprocess:
            try:
                local, message = self._restore_local(template, step), ""
            except CheckpointError as err:
                local, message = None, str(err)
            return _broadcast_from_primary(template, local, message)
        return self._restore_local(template, step)

    def _restore_local(self, template: Any, step: int | None) -> tuple[Any, Any] | None:
        if self._manager is None:
            return None
        steps = self.all_steps()
        if step is not None and int(step) not in steps:
            raise CheckpointError(
                f"no checkpoint of step {step} in {self.directory}; its steps are "
                f"{', '.join(map(str, steps)) or 'none'}"
            )
        candidates = [int(step)] if step is not None else steps[::-1]
        problems = []
        for s in candidates:
            problem = verify_step(os.path.join(self.directory, str(s)))
            restored = None
            if problem in (None, UNVERIFIED):
                try:
                    restored = self._read(template, s)
                except ValueError as err:
                    if "different config" in str(err):
                        raise
                    problem = f"orbax cannot read it ({_first_line(err)})"
                except Exception as err:  # noqa: BLE001 - any unreadable step is damaged
                    problem = f"orbax cannot read it ({_first_line(err)})"
                else:
                    if problem == UNVERIFIED:
                        self.warn(
                            f"checkpoint step {s} in {self.directory} has no {MANIFEST} "
                            "(written before checksums, or the save was cut short); restored "
                            "unverified"
                        )
                    if problems:
                        self.warn(f"{'; '.join(problems)}; restored step {s}")
                    return restored
            if step is not None:
                raise CheckpointError(
                    f"checkpoint step {s} in {self.directory} is damaged: {problem}"
                )
            where = ""
            if self.enabled:
                where = f", moved to {os.path.basename(self.set_aside(s, 'damaged'))}"
            problems.append(f"checkpoint step {s} in {self.directory} is damaged: {problem}{where}")
        if problems:
            raise CheckpointError(f"no intact checkpoint: {'; '.join(problems)}")
        return None

    def _read(self, template: Any, step: int) -> tuple[Any, Any]:
        with _quiet_orbax():
            restored = self._manager.restore(
                int(step),
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(), data=ocp.args.JsonRestore()
                ),
            )
        template_dict = serialization.to_state_dict(jax.device_get(template))
        filled = _fill_from(template_dict, restored["state"])
        state = serialization.from_state_dict(template, filled)
        return state, _decode_data_state(restored["data"])

    def close(self) -> None:
        """Wait for pending writes and release the manager."""
        if self._manager is not None:
            self._manager.close()
            self._manager = None


def _default_warn(text: str) -> None:
    print(f"convjax: warning: {text}", file=sys.stderr, flush=True)


__all__ = [
    "MANIFEST",
    "CheckpointError",
    "Checkpointer",
    "DiskFullError",
    "disk_full_error",
    "free_space",
    "is_disk_full",
    "verify_step",
    "write_manifest",
]

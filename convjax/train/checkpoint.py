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
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization


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


def _broadcast_from_primary(template: Any, restored: tuple[Any, Any] | None) -> Any:
    """Send process 0's ``restored`` (``(state, data_state)`` or ``None``) to all processes.

    Every process passes a ``template`` of the same structure; the result has host numpy
    leaves with the template's dtypes.
    """
    from jax.experimental import multihost_utils

    primary = jax.process_index() == 0
    found = multihost_utils.broadcast_one_to_all(np.int32(restored is not None and primary))
    if not int(found):
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

    Example (not run as a doctest: a fragment of the training loop):
      >>> ckpt = Checkpointer("runs/x/checkpoints")  # doctest: +SKIP
      >>> ckpt.save(100, host_state, iterator.get_state())  # doctest: +SKIP
      >>> state, data_state = ckpt.restore(template_state)  # doctest: +SKIP
    """

    def __init__(self, directory: str, *, max_to_keep: int = 2, enabled: bool = True) -> None:
        self.directory = os.path.abspath(directory)
        self.multiprocess = jax.process_count() > 1
        primary = jax.process_index() == 0
        self.enabled = enabled and primary if self.multiprocess else enabled
        # Host numpy copies are identical on every process: process 0 alone writes. With
        # several processes the manager lives on process 0 only (no cross-process barriers).
        mp_options = ocp.options.MultiprocessingOptions(
            primary_host=0, active_processes={0} if self.multiprocess else None
        )
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=False,  # made below (orbax cannot with active_processes)
            enable_async_checkpointing=False,
            multiprocessing_options=mp_options,
        )
        self._manager: ocp.CheckpointManager | None = None
        if self.enabled:
            os.makedirs(self.directory, exist_ok=True)
        may_open = primary or not self.multiprocess
        if may_open and (self.enabled or os.path.isdir(self.directory)):
            self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest saved step, or ``None``."""
        return None if self._manager is None else self._manager.latest_step()

    def save(self, step: int, state: Any, data_state: Any = None) -> None:
        """Write ``state`` (a host pytree) and the JSON-able ``data_state`` at ``step``."""
        if not self.enabled or self._manager is None:
            return
        tree = _prune_empty(serialization.to_state_dict(jax.device_get(state)))
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(tree),
            data=ocp.args.JsonSave(_encode_data_state(data_state)),
        )
        self._manager.save(int(step), args=args, force=True)
        self._manager.wait_until_finished()

    def restore(self, template: Any, step: int | None = None) -> tuple[Any, Any] | None:
        """Restore the newest (or given) checkpoint into the structure of ``template``.

        Returns ``(state, data_state)`` with host numpy leaves, or ``None`` if there is no
        checkpoint. With several processes every process must call it: process 0 reads and
        broadcasts.
        """
        if self.multiprocess:
            return _broadcast_from_primary(template, self._restore_local(template, step))
        return self._restore_local(template, step)

    def _restore_local(self, template: Any, step: int | None) -> tuple[Any, Any] | None:
        if self._manager is None:
            return None
        step = self._manager.latest_step() if step is None else step
        if step is None:
            return None
        restored = self._manager.restore(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardRestore(), data=ocp.args.JsonRestore()),
        )
        template_dict = serialization.to_state_dict(jax.device_get(template))
        filled = _fill_from(template_dict, restored["state"])
        state = serialization.from_state_dict(template, filled)
        return state, _decode_data_state(restored["data"])

    def close(self) -> None:
        """Wait for pending writes and release the manager."""
        if self._manager is not None:
            self._manager.close()


__all__ = ["Checkpointer"]

"""Metric sinks: a JSON-lines file, an optional TensorBoard writer, and running averages.

Every record is one JSON object per line, e.g.
``{"step": 100, "split": "train", "loss": 0.31, "accuracy": 0.91, "time": 12.3}``, which is
easy to read back with :func:`read_jsonl` (the quickstart notebook plots from it).
Only process 0 writes (``enabled=False`` elsewhere).

A crash or a full disk can leave a half-written last line: a resumed run drops it with one
warning line (and :func:`read_jsonl` skips it); a failed append is undone, and a full disk
raises :class:`convjax.train.checkpoint.DiskFullError` naming the directory and free space.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from convjax.train.checkpoint import disk_full_error, is_disk_full


class MetricsWriter:
    """Write metric records to ``<workdir>/metrics.jsonl`` and optionally TensorBoard.

    Args:
      workdir: output directory (created).
      enabled: write anything at all (process 0 only).
      tensorboard: also write TensorBoard event files under ``<workdir>/tb`` if
        ``tensorboardX`` is installed (a warning is printed otherwise).
      filename: name of the JSON-lines file.
      keep_until: the step a resumed run restarts from: rows of an existing file with a
        larger step (written after that checkpoint, before a crash) are dropped, so the file
        never holds two rows for the same ``(step, split)``. ``None`` keeps every row.

    A row for a ``(step, split)`` that is already in the file replaces it (e.g. the final
    test row when a finished run is run again).

    Example:
      >>> import tempfile
      >>> workdir = tempfile.mkdtemp()  # e.g. runs/x
      >>> w = MetricsWriter(workdir)
      >>> w.write(10, "train", {"loss": 0.5})
      >>> read_jsonl(os.path.join(workdir, "metrics.jsonl"))[0]["loss"]
      0.5
    """

    def __init__(
        self,
        workdir: str,
        *,
        enabled: bool = True,
        tensorboard: bool = False,
        filename: str = "metrics.jsonl",
        keep_until: int | None = None,
    ) -> None:
        self.enabled = enabled
        self.path = os.path.join(workdir, filename)
        self._tb = None
        self._keys: set[tuple[int, str]] = set()
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        if os.path.exists(self.path):
            records, torn = _read_records(self.path)
            if torn:
                print(
                    f"convjax: warning: dropped the half-written last line of {self.path} "
                    f"({len(torn)} bytes, left by a run that was cut short)",
                    file=sys.stderr,
                    flush=True,
                )
            kept = [r for r in records if keep_until is None or int(r["step"]) <= keep_until]
            if len(kept) != len(records) or torn:
                self._rewrite(kept)
            self._keys = {(int(r["step"]), r["split"]) for r in kept}
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                print(
                    "convjax: --config.tensorboard=True needs tensorboardX; install it with "
                    '`pip install -e ".[tensorboard]"` (or `pip install tensorboardX`). '
                    "Writing metrics.jsonl only.",
                    flush=True,
                )
            else:
                self._tb = SummaryWriter(os.path.join(workdir, "tb"))

    def _rewrite(self, records: list[dict[str, Any]]) -> None:
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                for record in records:
                    f.write(json.dumps(record) + "\n")
            os.replace(tmp, self.path)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            self._raise(err)

    def _append(self, line: str) -> None:
        """Append ``line``; on failure truncate back (no torn line is left behind)."""
        size = os.path.getsize(self.path) if os.path.exists(self.path) else 0
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
        except OSError as err:
            with contextlib.suppress(OSError):
                os.truncate(self.path, size)
            self._raise(err)

    def _raise(self, err: OSError) -> None:
        if is_disk_full(err):
            raise disk_full_error(os.path.dirname(self.path), os.path.basename(self.path)) from None
        raise err

    def write(self, step: int, split: str, values: Mapping[str, float]) -> None:
        """Append one record ``{"step", "split", **values}`` (floats; non-finite as null);
        replace the row of the same ``(step, split)`` if the file has one."""
        if not self.enabled:
            return
        record: dict[str, Any] = {"step": int(step), "split": split}
        for key, value in values.items():
            value = float(value)
            record[key] = value if math.isfinite(value) else None
        key = (int(step), split)
        if key in self._keys:
            others = [r for r in _iter_jsonl(self.path) if (int(r["step"]), r["split"]) != key]
            self._rewrite(others + [record])
        else:
            self._append(json.dumps(record) + "\n")
            self._keys.add(key)
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(f"{split}/{key}", float(value), int(step))

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class Averager:
    """Running mean of dicts of scalars (host floats or device arrays, fetched lazily).

    Example:
      >>> avg = Averager(); avg.add({"loss": 1.0}); avg.add({"loss": 3.0}); avg.result()
      {'loss': 2.0}
    """

    def __init__(self) -> None:
        self._items: list[Mapping[str, Any]] = []

    def add(self, values: Mapping[str, Any]) -> None:
        """Queue one dict of scalars (device arrays are not fetched until :meth:`result`)."""
        self._items.append(values)

    def __len__(self) -> int:
        return len(self._items)

    def result(self, reset: bool = True) -> dict[str, float]:
        """Mean of every key over the queued dicts."""
        if not self._items:
            return {}
        keys = self._items[0].keys()
        out = {k: float(np.mean([np.asarray(d[k], np.float64) for d in self._items])) for k in keys}
        if reset:
            self._items = []
        return out


def read_jsonl(path: str, split: str | None = None) -> list[dict[str, Any]]:
    """Read the records of a metrics file, optionally only those of one ``split``.

    Example (not run as a doctest: needs the trained workdir runs/default):
      >>> train = read_jsonl("runs/default/metrics.jsonl", "train")  # doctest: +SKIP
      >>> steps, losses = [r["step"] for r in train], [r["loss"] for r in train]
      ... # doctest: +SKIP
    """
    return [r for r in _iter_jsonl(path) if split is None or r.get("split") == split]


def _read_records(path: str) -> tuple[list[dict[str, Any]], str]:
    """``(records, torn)``: the records of a JSON-lines file and its half-written last line
    (``""`` if none). A bad line elsewhere raises a one-line ``ValueError``."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    numbered = [(i + 1, line.strip()) for i, line in enumerate(lines) if line.strip()]
    records = []
    for k, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "step" not in record:
                raise ValueError("not a metrics record")
        except ValueError:
            if k == len(numbered) - 1:
                return records, line
            raise ValueError(
                f"{path} line {number} is not a metrics record: {line[:80]!r}"
            ) from None
        records.append(record)
    return records, ""


def _iter_jsonl(path: str) -> Iterator[dict[str, Any]]:
    yield from _read_records(path)[0]


__all__ = ["Averager", "MetricsWriter", "read_jsonl"]

"""Damaged checkpoints: every step carries SHA-256 checksums written last; a truncated,
deleted, garbled, bit-flipped or empty newest step falls back to the newest intact one with
one warning, an explicit damaged step and no intact step raise one-line CheckpointErrors."""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from convjax.train.checkpoint import MANIFEST, Checkpointer, CheckpointError, verify_step
from tests.train.test_checkpoint import _state


def _two_steps(root):
    ckpt = Checkpointer(str(root), max_to_keep=3)
    for step in (2, 4):
        ckpt.save(step, _state(seed=step).replace(step=jnp.asarray(step)), {"i": step})
    ckpt.close()
    return root / "4"


def _data_file(step_dir):
    """The largest array-data file of the step (orbax/ocdbt names it by a hash)."""
    files = [p for p in step_dir.rglob("*") if p.is_file() and "/d/" in str(p)]
    return max(files, key=lambda p: p.stat().st_size)


def _truncate(step_dir):
    path = _data_file(step_dir)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return "has"


def _delete(step_dir):
    _data_file(step_dir).unlink()
    return "is missing"


def _garbage(step_dir):
    path = step_dir / "state" / "_METADATA"
    data = bytearray(path.read_bytes())
    data[10:30] = b"\x00garbage!garbage!\xff\xfe\x01"
    path.write_bytes(bytes(data))
    return "fails its SHA-256 checksum"


def _bit_flip(step_dir):
    path = _data_file(step_dir)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x08  # one bit
    path.write_bytes(bytes(data))
    return "fails its SHA-256 checksum"


def _empty(step_dir):
    for p in sorted(step_dir.rglob("*"), key=lambda p: -len(p.parts)):
        p.rmdir() if p.is_dir() else p.unlink()
    return "empty step directory"


@pytest.mark.parametrize("damage", [_truncate, _delete, _garbage, _bit_flip, _empty])
def test_damaged_newest_step_falls_back_with_one_warning(tmp_path, damage):
    newest = _two_steps(tmp_path)
    assert verify_step(str(newest)) is None
    what = damage(newest)
    assert verify_step(str(newest)) is not None and what in verify_step(str(newest))
    # A reader (eval) warns once and restores step 2, leaving the files where they are.
    warnings = []
    reader = Checkpointer(str(tmp_path), enabled=False, warn=warnings.append)
    restored, data = reader.restore(_state())
    assert int(restored.step) == 2 and data == {"i": 2}
    assert np.array_equal(
        restored.params["dense"]["kernel"], _state(seed=2).params["dense"]["kernel"]
    )
    assert len(warnings) == 1
    assert warnings[0].startswith(f"checkpoint step 4 in {tmp_path} is damaged: ")
    assert what in warnings[0] and warnings[0].endswith("restored step 2")
    # An explicit damaged step is an error, not a silent fallback.
    with pytest.raises(CheckpointError, match="checkpoint step 4 .* is damaged"):
        reader.restore(_state(), step=4)
    # A writer moves the damaged step aside, so the run can write step 4 again.
    writer = Checkpointer(str(tmp_path), warn=warnings.append)
    assert int(writer.restore(_state())[0].step) == 2
    assert "moved to damaged-4" in warnings[-1]
    assert writer.all_steps() == [2] and (tmp_path / "damaged-4").is_dir()
    writer.save(4, _state(seed=9).replace(step=jnp.asarray(4)), {"i": 4})
    assert int(writer.restore(_state())[0].step) == 4
    writer.close()


def test_no_intact_step_and_missing_step_are_one_line(tmp_path):
    newest = _two_steps(tmp_path)
    _bit_flip(newest)
    _truncate(tmp_path / "2")
    with pytest.raises(CheckpointError) as err:
        Checkpointer(str(tmp_path), enabled=False).restore(_state())
    message = str(err.value)
    assert message.startswith("no intact checkpoint: checkpoint step 4") and "step 2" in message
    assert "\n" not in message
    with pytest.raises(CheckpointError, match="no checkpoint of step 3 .* its steps are 2, 4"):
        Checkpointer(str(tmp_path), enabled=False).restore(_state(), step=3)


def test_step_without_manifest_is_restored_unverified(tmp_path):
    """A checkpoint written before checksums existed still resumes, with a warning."""
    newest = _two_steps(tmp_path)
    manifest = json.loads((newest / MANIFEST).read_text())
    assert set(manifest["files"]) == {
        os.path.relpath(p, newest) for p in newest.rglob("*") if p.is_file() and p.name != MANIFEST
    }
    (newest / MANIFEST).unlink()
    warnings = []
    restored, _ = Checkpointer(str(tmp_path), warn=warnings.append).restore(_state())
    assert int(restored.step) == 4
    assert len(warnings) == 1 and "has no checksums.json" in warnings[0]

"""Damaged checkpoints: every step carries SHA-256 checksums written last; a truncated,
deleted, garbled, bit-flipped or empty newest step falls back to the newest intact one with
one warning, an explicit damaged step and no intact step raise one-line CheckpointErrors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from convjax.__main__ import main
from convjax.train.checkpoint import MANIFEST, Checkpointer, CheckpointError, verify_step
from tests.train.test_checkpoint import _state

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


def test_cli_explicit_steps_and_a_damaged_newest_step(tmp_path, capsys):
    """``train --step`` / ``eval --step`` and, in a real ``python -m convjax eval`` process,
    a bit-flipped newest step: one warning line, the previous step evaluated, exit 0."""
    workdir = tmp_path / "run"
    argv = [
        "convjax", "train", "--config=default", "--config.model_kwargs.widths=(4,)",
        "--config.num_steps=4", "--config.checkpoint_every=1", "--config.keep_checkpoints=4",
        "--config.eval_every=0", "--config.progress=False", f"--workdir={workdir}",
    ]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["convjax", "eval", f"--workdir={workdir}", "--step=9"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"convjax: error: no checkpoint of step 9 in {workdir}/checkpoints; its steps are "
        "1, 2, 3, 4"
    ]
    assert main([*argv, "--step=2"]) == 0
    out = capsys.readouterr().out
    assert "resumed at step 2" in out and "moved the newer checkpoints 3, 4" in out
    assert sorted(os.listdir(workdir / "checkpoints")) == [
        "1", "2", "3", "4", "rewound-3", "rewound-4"
    ]  # fmt: skip
    _bit_flip(workdir / "checkpoints" / "4")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-m", "convjax", "eval", f"--workdir={workdir}"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"convjax: warning: checkpoint step 4 in {workdir}/checkpoints is damaged: file "
        + done.stderr.split(" is damaged: file ")[1].split(" fails")[0]
        + " fails its SHA-256 checksum (changed after writing); restored step 3"
    ]
    assert done.stdout.startswith("convjax: test split at step 3: accuracy")

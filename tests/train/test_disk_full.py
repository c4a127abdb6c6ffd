"""A full disk during a checkpoint or a metrics write: one line naming the directory and
the free space, no temporary checkpoint directories, the earlier checkpoints intact, no torn
metrics line; a torn last line of metrics.jsonl (a crash mid-write) is dropped on resume."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import uuid

import pytest

import convjax.train.metrics as metrics_mod
from convjax.__main__ import main
from convjax.train.checkpoint import verify_step
from convjax.train.loop import train
from convjax.train.metrics import MetricsWriter, read_jsonl
from tests.train.test_loop import _tiny_config

FULL = r"convjax: error: no space left on the device of {} \(\d+(\.\d)? (bytes|KiB|MiB|GiB)"


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _argv(workdir, *extra):
    return [
        "convjax", "train", "--config=default", "--config.num_steps=6",
        "--config.checkpoint_every=2", "--config.keep_checkpoints=3", "--config.eval_every=0",
        "--config.log_every=1", "--config.progress=False", f"--workdir={workdir}", *extra,
    ]  # fmt: skip


def test_checkpoint_save_on_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    """Simulated: orbax starts the save of step 4 (a temporary directory) and gets ENOSPC."""
    import orbax.checkpoint as ocp

    real_save = ocp.CheckpointManager.save

    def save(self, step, *args, **kwargs):
        if step == 4:
            tmp = os.path.join(str(self.directory), f"4.orbax-checkpoint-tmp-{uuid.uuid4().int}")
            os.makedirs(os.path.join(tmp, "state"))
            open(os.path.join(tmp, "state", "part"), "wb").write(b"half")
            _enospc()
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    assert main(_argv(tmp_path)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert re.match(FULL.format(tmp_path / "checkpoints"), err[0]), err
    assert err[0].endswith(
        "while writing the checkpoint of step 4; free some space and run the same command to resume"
    )
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]  # no temporary directory
    assert verify_step(str(tmp_path / "checkpoints" / "2")) is None


def test_metrics_write_on_a_full_disk_leaves_no_torn_line(tmp_path, monkeypatch, capsys):
    real_open = open

    class HalfFile:
        """Writes half of each line, then fails like a full disk."""

        def __init__(self, f):
            self.f = f

        def write(self, text):
            self.f.write(text[: len(text) // 2])
            self.f.flush()
            _enospc()

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    writer = MetricsWriter(str(tmp_path))
    writer.write(1, "train", {"loss": 1.0})
    monkeypatch.setattr(
        metrics_mod,
        "open",
        lambda path, mode="r", **kw: HalfFile(real_open(path, mode, **kw)) if "a" in mode
        else real_open(path, mode, **kw),
        raising=False,
    )  # fmt: skip
    with pytest.raises(OSError, match=f"no space left on the device of {tmp_path} .*metrics.jsonl"):
        writer.write(2, "train", {"loss": 0.5})
    monkeypatch.undo()
    assert (
        tmp_path / "metrics.jsonl"
    ).read_text() == '{"step": 1, "split": "train", "loss": 1.0}\n'


def test_torn_last_metrics_line_is_dropped_with_a_warning_on_resume(tmp_path, capsys):
    config = _tiny_config(tmp_path)
    config.num_steps = 4
    train(config)
    path = tmp_path / "metrics.jsonl"
    rows = read_jsonl(str(path))
    torn = '{"step": 5, "split": "train", "loss": 0.3'
    with open(path, "a") as f:
        f.write(torn)  # a crash mid-write
    assert read_jsonl(str(path)) == rows  # readers skip it
    capsys.readouterr()
    config.num_steps = 6
    summary = train(config)
    assert summary["resumed_from"] == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"convjax: warning: dropped the half-written last line of {path} ({len(torn)} bytes, "
        "left by a run that was cut short)"
    ]
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, 7))
    # A bad line elsewhere is not silently dropped.
    path.write_text('{"step": 1, "split": "train"}\nnot json\n{"step": 2, "split": "train"}\n')
    with pytest.raises(ValueError, match="metrics.jsonl line 2 is not a metrics record"):
        read_jsonl(str(path))


@pytest.fixture
def small_filesystem(tmp_path):
    """A 2 MiB tmpfs (root only; skipped where mounting is not permitted)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_real_full_filesystem(small_filesystem, capsys):
    """digits_cnn checkpoints take ~0.8 MiB: the third one does not fit in 2 MiB."""
    workdir = small_filesystem / "run"
    assert main(_argv(workdir, "--config.checkpoint_every=1")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(FULL.format(workdir / "checkpoints"), err[0]), err
    steps = os.listdir(workdir / "checkpoints")
    assert steps and all(s.isdigit() for s in steps)  # no temporary directories
    for step in steps:
        assert verify_step(str(workdir / "checkpoints" / step)) is None

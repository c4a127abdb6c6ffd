"""Metric sinks: JSON lines (non-finite as null), optional TensorBoard, running averages."""

import json

import numpy as np
import pytest

from convjax.train.metrics import Averager, MetricsWriter, read_jsonl


def test_jsonl_records_and_reading_back(tmp_path):
    writer = MetricsWriter(str(tmp_path))
    writer.write(10, "train", {"loss": np.float32(0.5), "accuracy": 0.75})
    writer.write(10, "test", {"loss": float("nan"), "accuracy": 0.5})
    writer.write(20, "train", {"loss": 0.25, "accuracy": 1.0})
    writer.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {"step": 10, "split": "train", "loss": 0.5, "accuracy": 0.75}
    assert json.loads(lines[1])["loss"] is None  # NaN is not valid JSON: written as null
    train = read_jsonl(str(tmp_path / "metrics.jsonl"), "train")
    assert [r["step"] for r in train] == [10, 20]
    assert len(read_jsonl(str(tmp_path / "metrics.jsonl"))) == 3


def test_disabled_writer_writes_nothing(tmp_path):
    writer = MetricsWriter(str(tmp_path / "other_process"), enabled=False, tensorboard=True)
    writer.write(1, "train", {"loss": 1.0})
    writer.close()
    assert not (tmp_path / "other_process").exists()


def test_tensorboard_event_files(tmp_path):
    pytest.importorskip("tensorboardX")
    writer = MetricsWriter(str(tmp_path), tensorboard=True)
    writer.write(1, "train", {"loss": 1.0})
    writer.close()
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_averager_means_and_resets():
    avg = Averager()
    avg.add({"loss": 1.0, "accuracy": np.asarray([0.5, 0.5])})  # replicated over 2 devices
    avg.add({"loss": 3.0, "accuracy": np.asarray([1.0, 1.0])})
    assert len(avg) == 2
    assert avg.result() == {"loss": 2.0, "accuracy": 0.75}
    assert len(avg) == 0 and avg.result() == {}


def test_resume_drops_rows_after_the_checkpoint_and_replaces_repeats(tmp_path):
    """``keep_until``: rows written after the checkpoint a run resumes from are dropped; a
    row for a ``(step, split)`` already in the file replaces it (no duplicates)."""
    writer = MetricsWriter(str(tmp_path))
    for step in (1, 2, 3):
        writer.write(step, "train", {"loss": float(step)})
    writer.write(3, "test", {"loss": 0.5})
    resumed = MetricsWriter(str(tmp_path), keep_until=2)
    assert [(r["step"], r["split"]) for r in read_jsonl(resumed.path)] == [
        (1, "train"),
        (2, "train"),
    ]
    resumed.write(3, "train", {"loss": 30.0})
    resumed.write(3, "test", {"loss": 0.25})
    resumed.write(3, "test", {"loss": 0.125})  # e.g. a finished run evaluated again
    rows = read_jsonl(resumed.path)
    assert [(r["step"], r["split"]) for r in rows] == [
        (1, "train"),
        (2, "train"),
        (3, "train"),
        (3, "test"),
    ]
    assert rows[-1]["loss"] == 0.125


def test_missing_tensorboardx_names_the_install_command(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails
    writer = MetricsWriter(str(tmp_path), tensorboard=True)
    writer.write(1, "train", {"loss": 1.0})
    assert 'pip install -e ".[tensorboard]"' in capsys.readouterr().out
    assert read_jsonl(writer.path)[0]["loss"] == 1.0

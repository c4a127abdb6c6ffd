"""The training loop end to end: a real learning run, exact kill-and-resume, metrics files."""

import json
import os

import jax
import numpy as np
import pytest

from convjax.__main__ import main
from convjax.configs import default
from convjax.train.loop import train
from convjax.train.metrics import read_jsonl
from tests.train.common import trees_equal


def test_cli_default_config_learns_digits(tmp_path, capsys):
    """``convjax train --config=default`` (shortened to 60 steps, shard_map over 8 devices)
    reaches >= 90% test accuracy on the 360 held-out digits (chance: 10%), seeded."""
    workdir = tmp_path / "run"
    status = main(
        [
            "convjax",
            "train",
            "--config=default",
            "--config.num_steps=60",
            "--config.eval_every=30",
            "--config.parallel=shard_map",
            "--config.progress=False",
            f"--workdir={workdir}",
        ]
    )
    assert status == 0
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["test_examples"] == 360
    assert summary["test_accuracy"] >= 0.9
    assert summary["steps"] == 60 and summary["devices"] == 8
    out = capsys.readouterr().out
    assert "test accuracy" in out
    # The run header says what the data pipeline chose and why.
    assert "convjax: data digits (sklearn.datasets.load_digits()): 1437 train / 360 test" in out
    assert "flip off (auto: 1-channel images)" in out and "(all 1437 train images)" in out
    train_records = read_jsonl(str(workdir / "metrics.jsonl"), "train")
    test_records = read_jsonl(str(workdir / "metrics.jsonl"), "test")
    assert [r["step"] for r in train_records] == list(range(10, 61, 10))
    assert [r["step"] for r in test_records] == [30, 60]
    assert train_records[-1]["loss"] < train_records[0]["loss"]
    assert test_records[-1]["accuracy"] == pytest.approx(summary["test_accuracy"])
    assert os.listdir(workdir / "checkpoints")  # the final checkpoint


class Killed(Exception):
    """Stands in for the process being killed between two checkpoints."""


def _tiny_config(workdir):
    config = default.get_config()
    config.model_kwargs = {"widths": (4,)}
    config.padding = "learned"  # two optimizer states and PadParams in the checkpoint
    config.model_kwargs.dropout = 0.3  # the RNG stream matters too
    config.batch_size = 16
    config.num_steps = 7
    config.checkpoint_every = 3
    config.eval_every = 0
    config.log_every = 1
    config.progress = False
    config.workdir = str(workdir)
    return config


def test_kill_and_resume_is_bit_identical(tmp_path):
    reference = train(_tiny_config(tmp_path / "straight"))

    def kill_at_5(step, _state):
        if step == 5:
            raise Killed

    resumed_dir = tmp_path / "resumed"
    with pytest.raises(Killed):
        train(_tiny_config(resumed_dir), hooks=[kill_at_5])
    assert sorted(os.listdir(resumed_dir / "checkpoints")) == ["3"]
    resumed = train(_tiny_config(resumed_dir))
    assert resumed["resumed_from"] == 3 and resumed["steps_this_run"] == 4

    a, b = reference["state"], resumed["state"]
    assert int(b.step) == 7
    assert jax.tree.leaves(a.pad_params)
    for field in ("params", "pad_params", "stats", "opt_task", "opt_pad", "rng"):
        assert trees_equal(getattr(a, field), getattr(b, field)), field
    assert resumed["test_accuracy"] == reference["test_accuracy"]
    assert resumed["test_loss"] == reference["test_loss"]
    # The metrics of the steps after the resume are those of the uninterrupted run.
    straight = read_jsonl(str(tmp_path / "straight" / "metrics.jsonl"), "train")
    again = read_jsonl(str(resumed_dir / "metrics.jsonl"), "train")
    last = lambda records: {r["step"]: r["loss"] for r in records if r["step"] > 3}
    assert last(again) == last(straight)
    assert np.isfinite(list(last(again).values())).all()

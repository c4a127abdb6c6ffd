"""SIGTERM (preemption) and SIGINT (Ctrl-C) save a checkpoint at the step reached, then stop
(exit 143 / 130); resuming from it ends exactly like an uninterrupted run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import jax
import pytest

from convjax.train.checkpoint import verify_step
from convjax.train.loop import TrainingInterrupted, train
from tests.train.common import trees_equal
from tests.train.test_loop import _tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return train(_tiny_config(tmp_path_factory.mktemp("straight")))


# SIGINT takes the same path as SIGTERM (one handler, one StopRequest): slow; SIGTERM runs.
@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)]
)
def test_signal_between_checkpoints_saves_that_step_and_resumes_exactly(
    tmp_path, reference, signum
):
    def signal_at_4(step, _state):
        if step == 4:  # checkpoints are at 3 and 6: the signal comes between them
            os.kill(os.getpid(), signum)

    with pytest.raises(TrainingInterrupted) as err:
        train(_tiny_config(tmp_path), hooks=[signal_at_4])
    # The handler records the signal; the loop finishes the step in progress (5: the hooks
    # of step 4 run after its stop check), saves it and stops.
    assert err.value.step == 5 and err.value.checkpoint_step == 5 and err.value.signum == signum
    name = signal.Signals(signum).name
    assert str(err.value) == (
        f"interrupted by {name} at step 5; saved a checkpoint at step 5; run the same command "
        "to resume"
    )
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["3", "5"]
    assert verify_step(str(tmp_path / "checkpoints" / "5")) is None
    assert signal.getsignal(signum) is not None  # the previous handler is back
    resumed = train(_tiny_config(tmp_path))
    assert resumed["resumed_from"] == 5 and resumed["steps_this_run"] == 2
    for field in ("params", "pad_params", "stats", "opt_task", "opt_pad", "rng"):
        assert trees_equal(getattr(reference["state"], field), getattr(resumed["state"], field))
    assert resumed["test_loss"] == reference["test_loss"]
    assert jax.tree.leaves(resumed["state"].pad_params)


@pytest.mark.parametrize(
    "signum, status",
    [pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow), (signal.SIGTERM, 143)],
)
def test_cli_signal_from_outside_saves_and_exits(tmp_path, signum, status):
    """A real signal sent to ``python -m convjax train`` while it trains."""
    workdir, log = tmp_path / "run", tmp_path / "out.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "convjax", "train", "--config=default",
                "--config.model_kwargs.widths=(4,)", "--config.num_steps=100000",
                "--config.checkpoint_every=0", "--config.eval_every=0", "--config.log_every=1",
                "--config.progress=False", f"--workdir={workdir}",
            ],
            stdout=out, stderr=subprocess.PIPE, cwd=ROOT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while b"step 3/100000" not in log.read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        proc.send_signal(signum)
        err = proc.communicate(timeout=120)[1].decode().strip().splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status
    name = signal.Signals(signum).name
    match = re.fullmatch(
        rf"convjax: interrupted by {name} at step (\d+); saved a checkpoint at step \1; run the "
        "same command to resume",
        err[-1],
    )
    assert match, err
    step = match.group(1)
    assert 3 <= int(step) < 100000
    assert [p.name for p in (workdir / "checkpoints").iterdir()] == [step]
    assert verify_step(str(workdir / "checkpoints" / step)) is None

"""Preemption of one host of a 2-process job (``convjax launch``, 2 x 2 CPU devices): one
SIGTERM to process 1 makes every process stop at the same step, process 0 saves it, and the
resumed job ends bit-identical to an uninterrupted one (see multihost_preempt.py)."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

from convjax.train.checkpoint import verify_step
from tests.train import multihost_preempt as worker
from tests.train.test_multihost import JOB_TIMEOUT_S, _finish, _launch_cli, _load, _read

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "multihost_preempt.py")


@pytest.mark.slow
def test_one_sigterm_stops_every_process_at_the_same_saved_step(tmp_path):
    out = str(tmp_path)
    log_path = os.path.join(out, "launch.log")
    proc = _launch_cli(
        ["--processes", "2", "--devices-per-process", "2", "--timeout", str(JOB_TIMEOUT_S)]
        + ["--", SCRIPT, out],
        log_path,
    )
    status = _finish(proc, JOB_TIMEOUT_S + 30)
    log = _read(log_path)
    assert status == 0, log[-6000:]
    stops = [json.load(open(os.path.join(out, f"stop_p{i}.json"))) for i in (0, 1)]
    # Process 1's hook of step 4 runs after that step's stop check: its flag enters the
    # all-reduce of step 5, whose result both processes read after step 6.
    stop_step = worker.SIGNAL_STEP + 2
    expected = {
        "step": stop_step,
        "checkpoint_step": stop_step,
        "signal": int(signal.SIGTERM),
    }
    assert stops == [expected, expected], log[-6000:]
    assert "[p0] convjax: model" in log and f"resumed at step {stop_step}" in log
    # Only process 0 wrote: its checkpoint of the final step (the stop step was replaced
    # by the newer one) verifies; process 1's workdir has no checkpoints.
    ckpts = os.path.join(out, "p0", "stop", "checkpoints")
    assert verify_step(os.path.join(ckpts, str(worker.NUM_STEPS))) is None
    assert not os.path.exists(os.path.join(out, "p1", "stop", "checkpoints"))
    for pid in (0, 1):
        resumed = _load(os.path.join(out, f"state_resumed_p{pid}.npz"))
        straight = _load(os.path.join(out, f"state_straight_p{pid}.npz"))
        assert int(resumed.pop("__resumed_from")) == stop_step
        assert int(straight.pop("__resumed_from")) == -1
        assert resumed.keys() == straight.keys()
        for key in resumed:
            assert np.array_equal(resumed[key], straight[key]), key

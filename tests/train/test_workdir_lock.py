"""The workdir lock: a second trainer on a workdir stops with one line naming the holder and
touches nothing; a stale lock (its process is gone) is taken over with a warning."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from convjax.__main__ import main
from convjax.train import workdir_lock
from convjax.train.workdir_lock import LOCK_FILE, WorkdirLocked, acquire

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HOLDER = """
import os, sys
from convjax.train.workdir_lock import acquire
lock = acquire(sys.argv[1])
print("locked", flush=True)
if sys.argv[2] == "crash":
    os._exit(0)  # dies without releasing: the lock file stays behind (stale)
sys.stdin.read()  # hold the lock until the test closes stdin
lock.release()
"""


def _holder(workdir, mode):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(workdir), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout.readline().strip() == b"locked"
    return proc


def test_second_trainer_stops_with_one_line_naming_the_holder(tmp_path, capsys):
    workdir = tmp_path / "run"
    holder = _holder(workdir, "hold")
    try:
        status = main(
            ["convjax", "train", "--config=default", "--config.num_steps=2", f"--workdir={workdir}"]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 1
        assert len(err) == 1, err
        assert err[0].startswith(f"convjax: error: workdir {workdir} is in use by another trainer")
        assert f"PID {holder.pid}," in err[0] and "host " in err[0] and "started 20" in err[0]
        # Nothing was touched: only the holder's lock file is there.
        assert sorted(os.listdir(workdir)) == [LOCK_FILE]
        # The API raises the same on a direct call.
        with pytest.raises(WorkdirLocked, match=f"PID {holder.pid},"):
            acquire(str(workdir))
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    # Released cleanly: the file is gone and the next trainer takes the lock silently.
    assert not (workdir / LOCK_FILE).exists()
    warnings = []
    lock = acquire(str(workdir), warn=warnings.append)
    assert warnings == [] and lock.held
    lock.release()


def test_stale_lock_is_taken_over_with_a_warning(tmp_path):
    workdir = tmp_path / "run"
    crashed = _holder(workdir, "crash")
    assert crashed.wait(timeout=60) == 0
    stale = json.loads((workdir / LOCK_FILE).read_text())
    assert stale["pid"] == crashed.pid
    warnings = []
    lock = acquire(str(workdir), warn=warnings.append)
    try:
        assert len(warnings) == 1
        assert warnings[0].startswith("taking over the stale lock of a trainer that is gone")
        assert f"PID {crashed.pid}," in warnings[0]
        assert json.loads((workdir / LOCK_FILE).read_text())["pid"] == os.getpid()
    finally:
        lock.release()


def test_same_process_takes_its_own_earlier_lock_over(tmp_path):
    """A run that ended by an error without closing does not lock out the next run of the
    same process (a notebook re-running train); a file-system without flock still locks."""
    first = acquire(str(tmp_path))
    second = acquire(str(tmp_path))
    assert not first.held and second.held
    second.release()
    # The file-only fallback: a live holder on this host refuses, a dead one is stale.
    path = str(tmp_path / LOCK_FILE)
    with open(path, "w") as f:
        json.dump({"host": workdir_lock.socket.gethostname(), "pid": os.getpid()}, f)
    with pytest.raises(WorkdirLocked, match=f"PID {os.getpid()},"):
        workdir_lock._acquire_without_flock(str(tmp_path), path, print)

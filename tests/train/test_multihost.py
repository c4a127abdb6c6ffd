"""Multi-host training on one machine: 2 processes x 4 CPU devices == 1 process x 8 devices.

``convjax launch`` starts two real JAX processes joined by ``jax.distributed`` over loopback
(gloo CPU collectives), each reading only its shard of the data. They run
``tests/train/multihost_worker.py``: a pmap run, then a shard_map run resumed from its
checkpoint. The reference is the same script in one process with 8 CPU devices.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from convjax.train import launch as launch_mod
from convjax.train.distributed import (
    DistributedError,
    distributed_settings,
    wait_for_coordinator,
)
from tests.train import multihost_worker as worker

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WORKER = os.path.join(HERE, "multihost_worker.py")
CRASH = os.path.join(HERE, "multihost_crash.py")
LISTEN = os.path.join(HERE, "multihost_listen.py")
#: Upper bound for any launched job; a hang fails the test instead of blocking the suite.
JOB_TIMEOUT_S = 300
FIELDS = ("params", "pad_params", "stats", "opt_task", "opt_pad")
JAX_ENV = (
    "JAX_COORDINATOR_ADDRESS",
    "JAX_COORDINATOR_BIND_ADDRESS",
    "JAX_NUM_PROCESSES",
    "JAX_PROCESS_ID",
)
#: Launched processes skip LLVM's optimisations: compiling, not running, dominates these
#: tiny jobs. (No fast-math either way, so the arithmetic is the same.)
FAST_COMPILE = "--xla_backend_optimization_level=0"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in JAX_ENV}
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def _launch_cli(args: list[str], log_path: str) -> subprocess.Popen:
    """``python -m convjax launch <args>`` in its own process group, output to a file."""
    with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "convjax", "launch", *args],
            cwd=ROOT,
            env=_clean_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _start_reference(out: str, log_path: str, extra: list[str]) -> subprocess.Popen:
    """The same job in one process with 8 CPU devices (no jax.distributed)."""
    env = _clean_env(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="8")
    env["XLA_FLAGS"] = launch_mod.child_env(
        env, process_id=0, num_processes=1, coordinator_address="", devices_per_process=8
    )["XLA_FLAGS"]
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, WORKER, out, "--single", *extra],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _finish(proc: subprocess.Popen, timeout: float) -> int:
    """Wait for a launched job; on timeout (or any error) kill its process group."""
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _load(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _metrics(path: str) -> list[dict]:
    records = [json.loads(line) for line in _read(path).splitlines() if line.strip()]
    for r in records:
        r.pop("time_s", None)
    return records


def _max_diff(a: dict, b: dict, prefix: str) -> float:
    keys = [k for k in a if k.startswith(prefix + "/")]
    assert keys, f"no leaves under {prefix!r}"
    return max(
        float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)), initial=0.0))
        for k in keys
    )


def _run_jobs(multi: str, single: str, extra: list[str]) -> tuple[str, str, str]:
    """Run the 2 x 4 job and the 1 x 8 reference (at the same time) on the same data."""
    log_path = os.path.join(multi, "launch.log")
    ref_log_path = os.path.join(single, "reference.log")
    proc = _launch_cli(
        ["--processes", "2", "--devices-per-process", "4", "--timeout", str(JOB_TIMEOUT_S)]
        + ["--", WORKER, multi, *extra],
        log_path,
    )
    try:
        ref = _start_reference(single, ref_log_path, extra)
    except BaseException:
        _finish(proc, 0)
        raise
    ref_status = _finish(ref, JOB_TIMEOUT_S)
    status = _finish(proc, JOB_TIMEOUT_S + 30)
    assert ref_status == 0, _read(ref_log_path)[-6000:]
    log = _read(log_path)
    assert status == 0, log[-6000:]
    return multi, single, log


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The 2 x 4 job and its 1 x 8 reference with learned padding and BatchNorm."""
    multi = str(tmp_path_factory.mktemp("multi"))
    single = str(tmp_path_factory.mktemp("single"))
    return _run_jobs(multi, single, [])


def _check_same_state(multi: str, single: str, run: str) -> dict[str, np.ndarray]:
    """2 x 4 == 1 x 8 for every field of the final state of ``run``; returns process 0's."""
    p0 = _load(os.path.join(multi, f"state_{run}_p0.npz"))
    p1 = _load(os.path.join(multi, f"state_{run}_p1.npz"))
    ref = _load(os.path.join(single, f"state_{run}_p0.npz"))
    assert sorted(p0) == sorted(ref)
    # Every process ends with the same (replicated) state, bit for bit.
    for key in p0:
        np.testing.assert_array_equal(p0[key], p1[key], err_msg=key)
    assert int(p0["step"]) == int(ref["step"]) == worker.NUM_STEPS
    np.testing.assert_array_equal(p0["rng"], ref["rng"])
    # Same global batches, same 8 shards: only the cross-process all-reduce order differs.
    for field in FIELDS:
        assert _max_diff(p0, ref, field) < 2e-5, field
    return p0


def _check_same_metrics(multi: str, single: str, run: str) -> list[dict]:
    """Process 0's metrics.jsonl of ``run`` == the reference's (all but wall times)."""
    got = _metrics(os.path.join(multi, "p0", run, "metrics.jsonl"))
    want = _metrics(os.path.join(single, "p0", run, "metrics.jsonl"))
    assert [(r["step"], r["split"]) for r in got] == [(r["step"], r["split"]) for r in want]
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for key in set(g) - {"split"}:
            assert g[key] == pytest.approx(w[key], rel=1e-5, abs=1e-6), (g["step"], key)
    return got


def test_launcher_output_and_exit(job):
    _, _, log = job
    assert "[p0] worker: done" in log and "[p1] worker: done" in log
    # Only process 0 reports (banner, summary); both joined the same coordinator.
    assert "[p0] convjax: model digits_cnn" in log
    assert "[p1] convjax: model" not in log and "[p1] convjax: done" not in log
    assert "8 x cpu device(s) via pmap" in log


@pytest.mark.parametrize("run", worker.RUNS)
def test_two_processes_equal_one_process(job, run):
    multi, single, _ = job
    p0 = _check_same_state(multi, single, run)
    assert any(k.startswith("stats/") and k.endswith("/mean") for k in p0)  # BatchNorm
    # Both optimizer states are real: momentum buffers of task and padding parameters moved.
    assert _max_diff(p0, {k: np.zeros_like(v) for k, v in p0.items()}, "opt_pad") > 1e-4
    assert _max_diff(p0, {k: np.zeros_like(v) for k, v in p0.items()}, "opt_task") > 1e-4


@pytest.mark.parametrize("run", worker.RUNS)
def test_same_metrics(job, run):
    multi, single, _ = job
    got = _check_same_metrics(multi, single, run)
    first = worker.RESUME_STEP + 1 if run == "resume" else 1
    assert {r["step"] for r in got if r["split"] == "train"} == set(
        range(first, worker.NUM_STEPS + 1)
    )
    test = [r for r in got if r["split"] == "test"]
    assert test and all(r["count"] == 360 for r in test)  # the whole split, once


def test_resume_matches_uninterrupted_run(job):
    multi, _, _ = job
    straight = _load(os.path.join(multi, "state_pmap_p0.npz"))
    resumed = _load(os.path.join(multi, "state_resume_p0.npz"))
    assert int(straight["__resumed_from"]) == -1
    assert int(resumed["__resumed_from"]) == worker.RESUME_STEP
    for field in (*FIELDS, "step", "rng"):
        keys = [k for k in straight if k == field or k.startswith(field + "/")]
        for key in keys:
            np.testing.assert_allclose(resumed[key], straight[key], rtol=0, atol=1e-6)


def test_only_process_zero_writes(job):
    multi, _, _ = job
    assert not os.path.exists(os.path.join(multi, "p1")), os.listdir(os.path.join(multi, "p1"))
    for run in worker.RUNS:
        files = os.listdir(os.path.join(multi, "p0", run))
        assert {"metrics.jsonl", "summary.json", "checkpoints"} <= set(files)
    names = os.listdir(os.path.join(multi, "p0", "pmap", "checkpoints"))
    steps = sorted(n for n in names if n.isdigit())
    assert steps == [str(s) for s in range(worker.RESUME_STEP, worker.NUM_STEPS + 1, 2)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is dead too.
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_launcher_stops_all_processes_when_one_dies(tmp_path):
    out = str(tmp_path)
    log_path = os.path.join(out, "launch.log")
    proc = _launch_cli(
        ["--processes", "2", "--devices-per-process", "1", "--timeout", str(JOB_TIMEOUT_S)]
        + ["--", CRASH, out],
        log_path,
    )
    status = _finish(proc, JOB_TIMEOUT_S + 30)
    log = _read(log_path)
    assert status == 3, log[-4000:]
    assert "[p0] crash: process 0 psum = 2.0" in log
    assert "process 1 exited with status 3; stopping the other 1 process(es)" in log
    pid0 = int(_read(os.path.join(out, "pid_0")))
    deadline = time.monotonic() + 10
    while _alive(pid0) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid0), "process 0 survived the launcher"


def _listening_sockets(pid: int) -> list[tuple[str, int]]:
    """``(ip, port)`` of every TCP socket that process ``pid`` listens on (Linux /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        if not os.path.exists(table):
            continue
        for line in _read(table).splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: TCP_LISTEN
                continue
            hex_ip, hex_port = local.split(":")
            raw = bytes.fromhex(hex_ip)
            # /proc prints the address as 32-bit words in host (little-endian) byte order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            ip = socket.inet_ntop(family, raw)
            # gRPC listens on IPv6 sockets; 127.0.0.1 shows as the v4-mapped ::ffff:127.0.0.1.
            ip = ip.removeprefix("::ffff:") if "." in ip else ip
            found.append((ip, int(hex_port, 16)))
    return found


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads Linux /proc/net/tcp")
def test_launch_binds_the_coordinator_to_loopback(tmp_path):
    """The coordinator listens on 127.0.0.1:<port> (JAX's default was every interface)."""
    out = str(tmp_path)
    log_path = os.path.join(out, "launch.log")
    port = launch_mod.free_port()
    proc = _launch_cli(
        ["--processes", "2", "--devices-per-process", "1", "--port", str(port)]
        + ["--timeout", str(JOB_TIMEOUT_S), "--", LISTEN, out],
        log_path,
    )
    try:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        ready = [os.path.join(out, f"ready_{i}") for i in (0, 1)]
        while not all(map(os.path.exists, ready)):
            assert proc.poll() is None and time.monotonic() < deadline, _read(log_path)[-4000:]
            time.sleep(0.1)
        pids = [int(_read(path)) for path in ready]
        sockets = {pid: _listening_sockets(pid) for pid in pids}
    finally:
        open(os.path.join(out, "stop"), "w").close()
        status = _finish(proc, 60)
    log = _read(log_path)
    assert status == 0, log[-4000:]
    assert f"serving it on 127.0.0.1:{port}" in log
    # Process 0 runs the coordinator service, on loopback only.
    assert ("127.0.0.1", port) in sockets[pids[0]], sockets
    on_port = [ip for pid in pids for ip, p in sockets[pid] if p == port]
    assert on_port == ["127.0.0.1"], sockets
    # Nothing any process listens on is a wildcard address (0.0.0.0 or ::).
    wildcard = [(ip, p) for pid in pids for ip, p in sockets[pid] if ip in ("0.0.0.0", "::")]
    assert not wildcard, sockets


def test_unreachable_coordinator_fails_fast_and_clearly():
    port = launch_mod.free_port()
    cmd = [sys.executable, "-m", "convjax", "train", "--config=default"]
    cmd += [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", "--process_id=1"]
    result = subprocess.run(
        cmd,
        cwd=ROOT,
        env=_clean_env(CONVJAX_INITIALIZATION_TIMEOUT="2", JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=120,  # the bound: a hang raises TimeoutExpired and fails the test
    )
    assert result.returncode != 0
    assert f"could not reach the coordinator at 127.0.0.1:{port} within 2 s" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------ fast unit checks
def test_wait_for_coordinator(monkeypatch):
    port = launch_mod.free_port()
    with pytest.raises(DistributedError, match=f"127.0.0.1:{port} within 0.3 s"):
        wait_for_coordinator(f"127.0.0.1:{port}", timeout=0.3)
    with pytest.raises(ValueError, match="host:port"):
        wait_for_coordinator("no-port", timeout=0.1)


def test_distributed_settings(monkeypatch):
    for name in JAX_ENV:
        monkeypatch.delenv(name, raising=False)
    single = distributed_settings({"initialize": False, "num_processes": 0, "process_id": -1})
    assert single["initialize"] is False
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    monkeypatch.setenv("CONVJAX_HEARTBEAT_TIMEOUT", "7")
    s = distributed_settings({"process_id": 2})  # the config wins over the environment
    assert s["initialize"] and s["coordinator_address"] == "10.0.0.1:1234"
    assert (s["num_processes"], s["process_id"], s["heartbeat_timeout"]) == (4, 2, 7)
    with pytest.raises(ValueError, match="process_id must be in"):
        distributed_settings({"process_id": 4})
    # The coordinator binds where it is advertised unless the config or env says otherwise.
    assert s["coordinator_bind_address"] == "10.0.0.1:1234"
    monkeypatch.setenv("JAX_COORDINATOR_BIND_ADDRESS", "[::]:1234")
    assert distributed_settings({})["coordinator_bind_address"] == "[::]:1234"
    bind = distributed_settings({"coordinator_bind_address": "10.0.0.9:1234"})
    assert bind["coordinator_bind_address"] == "10.0.0.9:1234"
    with pytest.raises(ValueError, match="coordinator_bind_address must be 'host:port'"):
        distributed_settings({"coordinator_bind_address": "10.0.0.9"})
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two'"):
        distributed_settings({})


def test_child_env_and_command():
    base = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_foo=1", "A": "b"}
    env = launch_mod.child_env(
        base,
        process_id=1,
        num_processes=2,
        coordinator_address="127.0.0.1:99",
        devices_per_process=4,
    )
    assert env["XLA_FLAGS"] == "--xla_foo=1" and env["A"] == "b"
    assert env["JAX_PROCESS_ID"] == "1" and env["JAX_NUM_PROCESSES"] == "2"
    assert env["JAX_NUM_CPU_DEVICES"] == "4" and env["JAX_PLATFORMS"] == "cpu"
    assert env["JAX_COORDINATOR_ADDRESS"] == env["JAX_COORDINATOR_BIND_ADDRESS"] == "127.0.0.1:99"
    assert launch_mod.resolve_command(["train", "--config=x"])[1:] == [
        "-m",
        "convjax",
        "train",
        "--config=x",
    ]
    assert launch_mod.resolve_command(["w.py", "a"]) == [sys.executable, "w.py", "a"]
    assert launch_mod.resolve_command(["echo", "a"]) == ["echo", "a"]
    with pytest.raises(ValueError, match="needs a command"):
        launch_mod.resolve_command([])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(processes=0), "processes must be an integer >= 1, got 0"),
        (dict(devices_per_process=0), "devices_per_process must be an integer >= 1, got 0"),
        (dict(port=70000), "port must be in 1..65535, got 70000"),
    ],
)
def test_launch_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        launch_mod.launch(["train"], **kwargs)


def test_launch_cli_errors(capsys):
    assert launch_mod.main(["--processes", "2"]) == 2
    assert "needs a command after '--'" in capsys.readouterr().err


@pytest.mark.slow
def test_dead_peer_stops_the_survivor_without_launcher(tmp_path):
    """No launcher: JAX's heartbeat check ends process 0 after process 1 died."""
    out = str(tmp_path)
    address = f"127.0.0.1:{launch_mod.free_port()}"
    procs = []
    for i in range(2):
        env = launch_mod.child_env(
            _clean_env(CONVJAX_HEARTBEAT_TIMEOUT="5"),
            process_id=i,
            num_processes=2,
            coordinator_address=address,
            devices_per_process=1,
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, CRASH, out],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    try:
        output0 = procs[0].communicate(timeout=120)[0].decode(errors="replace")
        procs[1].communicate(timeout=30)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert procs[1].returncode == 3
    assert procs[0].returncode != 0, output0[-3000:]
    assert "stopped sending heartbeats" in output0, output0[-3000:]


@pytest.mark.slow
def test_deconv_statistics_two_processes_equal_one_process(tmp_path):
    """Network deconvolution: moments averaged over all devices of both processes."""
    multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
    os.makedirs(multi)
    os.makedirs(single)
    _run_jobs(multi, single, ["--norm=deconv"])
    for run in worker.RUNS:
        p0 = _check_same_state(multi, single, run)
        assert any(k.startswith("stats/") and k.endswith("/deconv") for k in p0)
        _check_same_metrics(multi, single, run)

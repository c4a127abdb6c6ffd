"""The command line as a user meets it, in subprocesses: --help per command, one-line errors
naming the flag the user typed, --print_config, and Ctrl-C (SIGINT) on a short run."""

import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("XLA_FLAGS", None)  # one CPU device: a quick compile
    return env


def convjax(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "convjax", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    "command, expected",
    [
        ("train", ["--config=", "--workdir=", "--print_config", "--config.batch_size=64"]),
        ("eval", ["--workdir=", "--split="]),
        ("predict", ["--workdir=", "--top_k="]),
        ("launch", ["--processes", "--devices-per-process"]),
    ],
)
def test_help_lists_the_flags(command, expected):
    result = convjax(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: convjax {command}")
    for flag in expected:
        assert flag in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, line",
    [
        (["--config.batch_size=0"], "convjax: error: --config.batch_size must be >= 1, got 0"),
        (
            ["--config.num_stepz=5"],
            "convjax: error: unknown field --config.num_stepz; did you mean --config.num_steps?",
        ),
    ],
)
def test_bad_values_give_one_line(args, line):
    result = convjax("train", "--config=default", *args)
    assert result.returncode == 2
    assert result.stderr.strip() == line
    assert result.stdout == ""


def test_print_config_prints_the_merged_config():
    result = convjax(
        "train",
        "--config=default",
        "--config.num_steps=7",
        "--config.model_kwargs.widths=(4,)",
        "--config.data.name=idx:/data/fashion",
        "--print_config",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "--config.num_steps=7" in lines and "--config.stop_on_nonfinite=True" in lines
    assert "--config.model_kwargs.widths=(4,)" in lines  # a tuple, readable
    assert "!!python" not in result.stdout
    # --config.data.name alone selects the dataset (an alias of --config.dataset).
    assert "--config.dataset=idx:/data/fashion" in lines


def test_ctrl_c_prints_where_to_resume_and_no_traceback(tmp_path):
    """SIGINT after a few logged steps (no terminal: one log line per step): the step reached
    is saved, exit status 130, one line naming the step and its checkpoint, no traceback; the
    log lines carry step, loss, accuracy, learning rate, steps/s and ETA, after the compilation
    notice."""
    cmd = [
        sys.executable, "-m", "convjax", "train", "--config=default",
        "--config.model_kwargs.widths=(4,)", "--config.batch_size=16",
        "--config.num_steps=100000", "--config.log_every=1", "--config.checkpoint_every=2",
        f"--workdir={tmp_path}",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT
    )
    lines = []
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("convjax: step 5/") or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    lines += out.splitlines(keepends=True)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    message = [x for x in err.splitlines() if x.strip()]
    assert len(message) == 1
    assert message[0].startswith("convjax: interrupted by SIGINT at step ")
    assert message[0].endswith("; run the same command to resume")
    step = int(message[0].split("interrupted by SIGINT at step ")[1].split(";")[0])
    last = int(message[0].split("saved a checkpoint at step ")[1].split(";")[0])
    assert step >= 5 and last == step  # nothing lost (was: the last periodic checkpoint)
    assert max(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()) == last
    text = "".join(lines)
    assert "compiling the train step" in text
    log = next(x for x in lines if x.startswith("convjax: step 3/100000"))
    for field in (" loss ", " acc ", " lr ", " steps/s ", " ETA "):
        assert field in log

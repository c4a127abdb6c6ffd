"""The shell commands of README.md, read from its ```bash blocks and run where that is cheap.

Whatever the README says is what runs: the test parses every ```bash block (joining
backslash-continued lines) and classifies each command by the rules below.

Run, exactly as written, in a scratch directory (in README order):
- ``.venv/bin/convjax <args>`` commands that take seconds: ``configs``, ``models``, ``--help``,
  ``--version``, ``--print_config``, and ``eval`` / ``predict`` / ``export`` of
  ``--workdir=runs/default``. ``.venv/bin/convjax`` is this checkout's ``convjax.__main__.main``
  (the console script's entry point), called in this process.
- ``.venv/bin/python -c ...`` lines, with this interpreter and this checkout on the path.

The one deviation, stated here as the README test rules require: ``runs/default`` is made by
this test with ``convjax train --config=default --config.num_steps=2`` instead of the README's
full 440-step run (eval/predict/export only need a workdir with a checkpoint).

Not run (each is reported as a skip with its reason): the setup commands (``.ci/bootstrap``,
venv creation, ``pip install``: they install packages, checked from a fresh clone by
``.ci/run``), the test suite itself, commands needing a prepared TFDS dataset, a download or
Debian's Fashion-MNIST, training runs and ``compare`` experiments (minutes to an hour),
``launch`` (several processes), cluster commands, and templates with ``<placeholders>``.
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CONVJAX = ".venv/bin/convjax"
PYTHON = ".venv/bin/python"

#: Commands run as written (first match wins over SKIP_RULES).
RUN_RULES = (
    rf"^{re.escape(CONVJAX)} (configs|models)\b",
    rf"^{re.escape(CONVJAX)} [^#]*(--help|--version|--print_config)\b",
    rf"^{re.escape(CONVJAX)} (eval|predict|export) --workdir=runs/default\b",
    rf"^{re.escape(PYTHON)} -c ",
)
#: (pattern, why the command is not run here).
SKIP_RULES = (
    (r"<[a-z_ ]+>", "a template with <placeholders>"),
    (r"\.ci/bootstrap", "creates ./.venv and installs convjax (the fresh-clone setup, .ci/run)"),
    (r"-m pytest", "the test suite itself"),
    (r"-m venv|pip install", "creates an environment or installs packages (network)"),
    (r"tfds:|--data_dir|data prepare|cifar10|imagenet", "needs a TFDS dataset or a download"),
    (r"\bsrun\b|\bgcloud\b", "needs a cluster"),
    (r"\blaunch\b", "starts several processes and trains"),
    (
        r"-m convjax\.compare\.differences",
        "redraws the checkout's committed results/compare figure (its code: test_compare.py)",
    ),
    (r"\bcompare\b", "trains several arms over seeds (minutes to an hour)"),
    (r"fashion_mnist", "needs Debian's dataset-fashion-mnist and trains for minutes"),
    (r"\btrain\b", "a full training run (minutes); runs/default is trained here for 2 steps"),
)


def readme_commands(text: str | None = None) -> list[str]:
    """Every command of the README's ```bash blocks, continuation lines joined."""
    text = README.read_text(encoding="utf-8") if text is None else text
    commands = []
    for indent, body in re.findall(r"^([ \t]*)```bash\n(.*?)^[ \t]*```", text, re.M | re.S):
        current = ""
        for line in body.splitlines():
            line = line.removeprefix(indent)
            if line.rstrip().endswith("\\"):
                current += line.rstrip()[:-1]
                continue
            current = (current + line).strip()
            if current and not current.startswith("#"):
                commands.append(current)
            current = ""
    return commands


def classify(command: str) -> str | None:
    """None: run it; else the reason it is skipped."""
    if any(re.search(rule, command) for rule in RUN_RULES):
        return None
    for pattern, reason in SKIP_RULES:
        if re.search(pattern, command):
            return reason
    return "not known to be cheap (add a rule to tests/test_readme_commands.py to run it)"


def test_parser_and_rules():
    text = "x\n```bash\na \\\n  b   # c\n# comment\n```\n  ```bash\n  d\n  ```\n"
    assert readme_commands(text) == ["a   b   # c", "d"]
    assert classify(f"{CONVJAX} models   # names") is None
    assert classify(f"{CONVJAX} train --config=default").startswith("a full training run")
    assert classify(f"{CONVJAX} compare <experiment>") == "a template with <placeholders>"
    commands = readme_commands()
    assert any(classify(c) is None for c in commands), "the README has no command to run"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A directory with runs/default: the default config trained for 2 steps."""
    from convjax.__main__ import main

    root = tmp_path_factory.mktemp("readme")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        argv = ["convjax", "train", "--config=default", "--config.num_steps=2"]
        assert main([*argv, "--config.progress=False", "--workdir=runs/default"]) == 0
    finally:
        os.chdir(cwd)
    return root


def _run_python(command: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    env.pop("XLA_FLAGS", None)
    shell = f"{shlex.quote(sys.executable)}{command[len(PYTHON) :]}"
    return subprocess.run(
        ["bash", "-c", shell], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_readme_commands_run_as_written(scratch, monkeypatch, capsys):
    from convjax.__main__ import main

    monkeypatch.chdir(scratch)
    ran, skipped, outputs = [], [], {}
    for command in readme_commands():
        reason = classify(command)
        if reason is not None:
            skipped.append(f"{command!r}: {reason}")
            continue
        if command.startswith(PYTHON):
            proc = _run_python(command, scratch)
            assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
            out = proc.stdout
        else:
            argv = shlex.split(command[len(CONVJAX) :], comments=True)
            capsys.readouterr()
            status = main(["convjax", *argv])
            out, err = capsys.readouterr()
            assert status == 0, f"{command}: exit status {status}\n{err[-3000:]}"
            assert "Traceback" not in err, f"{command}\n{err[-3000:]}"
        ran.append(command)
        outputs[command] = out
    print("README commands run:", *ran, "skipped:", *skipped, sep="\n  ")
    verbs = {shlex.split(c)[1] for c in ran if c.startswith(CONVJAX)}
    assert {"configs", "models"} <= verbs, ran
    if {"predict", "export"} <= verbs:
        _check_export_consumer(scratch, outputs)


def _check_export_consumer(scratch: pathlib.Path, outputs: dict[str, str]) -> None:
    """The README's jax-only consumer of the export (``readme-test: export-consumer``) prints
    the classes `convjax predict` ranks first."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- readme-test: export-consumer -->\s*```python\n(.*?)```", text, re.S)
    if match is None:
        return
    snippet = match.group(1)
    assert "convjax" not in re.sub(r"#.*", "", snippet), "the consumer must not need convjax"
    proc = _run_python(f"{PYTHON} -c {shlex.quote(snippet)}", scratch)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exported = [int(v) for v in re.findall(r"\d+", proc.stdout.strip().splitlines()[-1])]
    predict_out = next(out for c, out in outputs.items() if " predict " in c)
    top1 = [int(m) for m in re.findall(r"^\S+: (\d+) \(", predict_out, re.M)]
    assert exported == top1 and len(top1) == len(np.load(scratch / "digits.npy"))

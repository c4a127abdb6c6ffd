"""Command line: ``convjax <command> [flags]`` (``python -m convjax ...`` is the same).

``convjax train --config=<file> [--config.<field>=<value> ...]`` runs or resumes a training
job. ``--config`` takes an ml_collections config file (a Python file with ``get_config()``),
or the name of a config shipped in ``convjax/configs`` (``--config=default``); an optional
``:arg`` suffix is passed to ``get_config(arg)``. Any field can be overridden, e.g.

    convjax train --config=convjax/configs/default.py --config.num_epochs=5 \\
        --config.padding=learned --config.parallel=shard_map --workdir=runs/learned

A trained workdir is used with ``convjax eval --workdir=DIR [--split=test]``,
``convjax predict --workdir=DIR <images, IDX or .npy files>`` and
``convjax export --workdir=DIR``; ``convjax data convert`` converts a TFRecord-prepared TFDS
dataset to ArrayRecord (see :mod:`convjax.data.tfds_files`), ``convjax launch`` runs local
multi-process jobs. ``convjax <command> --help`` lists each command's flags.
Bad flags and values give one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import importlib.util
import os
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

#: Directory of the configs shipped with convjax.
CONFIG_DIR = pathlib.Path(__file__).resolve().parent / "configs"
COMMANDS = ("train", "eval", "predict", "export", "configs", "models", "launch", "data", "compare")

#: Exit status of an interrupted run (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130

USAGE = """usage: convjax <command> [flags]      (convjax <command> --help: its flags)

commands:
  train     --config=<file or shipped name> [--config.<field>=<value> ...] [--workdir=<dir>]
            [--step=N] [--print_config]   run or resume a training job
  eval      --workdir=<dir> [--split=test|train] [--step=N]
            evaluate the run's checkpoint; prints and writes <dir>/eval_<split>.json
  predict   --workdir=<dir> [--top_k=3] <image files, IDX or .npy files>
            print the top-k classes of each image
  export    --workdir=<dir> [--out=<file>] [--platforms=cpu,cuda]
            write a serialized jax.export of the eval function
  configs   list the configs shipped in convjax/configs
  models    list the model names accepted by --config.model
  launch    [--processes N] [--devices-per-process D] [--port P] -- <command>
            run a command as N local JAX processes (multi-host on one machine)
  data convert <tfds name> [--data_dir=<dir>] [--out_root=<dir>]
            convert a TFRecord-prepared TFDS dataset to ArrayRecord (no TensorFlow)
  compare   <padding|pooling|norm|conv|file> [--quick] [--seeds=0,1,2] [--workdir=<dir>]
            train arms that differ in one switch over seeds; writes table.md and curves.png

example:
  convjax train --config=convjax/configs/default.py --config.num_epochs=5
  convjax eval --workdir=runs/default
  convjax launch --processes 2 -- train --config=default
"""

TRAIN_HELP = """usage: convjax train --config=<file or shipped name> [--config.<field>=<value> ...]
                     [--workdir=<dir>] [--step=N] [--print_config]

Train (or resume, from <workdir>/checkpoints) the job a config describes.

flags:
  --config=<file[:arg]>   ml_collections config file, or a shipped name ({shipped})
  --config.<field>=<v>    override a field (nested: --config.optimizer.learning_rate=0.1;
                          model keywords: --config.model_kwargs.widths="(16, 32)")
  --workdir=<dir>         output directory (default: --config.workdir)
  --step=<N>              resume from checkpoint step N (default: the newest intact one);
                          newer steps are moved to checkpoints/rewound-<step>
  --print_config          print the merged config and exit
  --coordinator_address=<host:port> --num_processes=<N> --process_id=<i>
                          multi-host setup (default: the JAX_COORDINATOR_ADDRESS,
                          JAX_NUM_PROCESSES and JAX_PROCESS_ID environment variables)

config fields (defaults of convjax/configs/default.py; see its docstring):
{fields}

exit status: 0 done; 1 stopped (non-finite loss/metric, config mismatch on resume, data
error, workdir locked, no intact checkpoint, disk full); 2 bad flags or values; 130
interrupted by Ctrl-C, 143 by SIGTERM (the step reached is saved first; run the same command
to resume).
"""

EVAL_HELP = """usage: convjax eval --workdir=<dir> [--split=test] [--step=N]

Restore the checkpoint of a training run and evaluate it on a split; prints the metrics and
writes <dir>/eval_<split>.json.

flags:
  --workdir=<dir>   a training run's directory (config.json, data_info.json, checkpoints/)
  --split=<name>    test (the run's evaluation split, default), train, or a TFDS split name
  --step=<N>        checkpoint step (default: the newest)
"""

PREDICT_HELP = """usage: convjax predict --workdir=<dir> [--top_k=3] <file> [<file> ...]

Print the top-k classes (with probabilities) of every image in the files: image files (PNG,
JPEG, ...; converted to the dataset's channels and size), NumPy .npy/.npz or IDX files
(*-ubyte, *.idx) with one (H, W[, C]) or many (N, H, W[, C]) images, uint8 or floats in [0, 1].

flags:
  --workdir=<dir>   a training run's directory
  --top_k=<k>       classes per image (default 3)
"""

EXPORT_HELP = """usage: convjax export --workdir=<dir> [--out=<file>] [--platforms=cpu,cuda]

Write a serialized jax.export of the eval function images -> logits (float32 input
(b, *input_shape), normalised like the data pipeline; symbolic batch size b), with the
checkpoint's parameters baked in, plus signature.json next to it. Reload it with
jax.export.deserialize(open(path, "rb").read()).call(images).

flags:
  --workdir=<dir>          a training run's directory
  --out=<file>             output file (default <dir>/export/eval_fn.jax)
  --platforms=<p1,p2>      lowering platforms (default: the current backend)
"""


class UsageError(ValueError):
    """A bad command line; printed as one line, exit status 2."""


def shipped_configs() -> list[str]:
    """Names of the config files in ``convjax/configs`` (without ``.py``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_"))


def _config_path(value: str) -> tuple[str, str | None]:
    """``--config`` value -> (file path, get_config argument or None)."""
    path, sep, extra = value.partition(":")
    if not os.path.exists(path):
        shipped = CONFIG_DIR / (path if path.endswith(".py") else f"{path}.py")
        if not shipped.exists():
            raise UsageError(
                f"--config={value}: no such file, and not a shipped config; shipped configs "
                f"are {shipped_configs()}"
            )
        path = str(shipped)
    return path, (extra if sep else None)


def load_config_file(value: str) -> Any:
    """Run ``get_config()`` (or ``get_config(arg)`` for ``file:arg``) of a config file."""
    path, arg = _config_path(value)
    spec = importlib.util.spec_from_file_location(f"_convjax_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise UsageError(f"--config={value}: {path} defines no get_config()")
    return module.get_config() if arg is None else module.get_config(arg)


def _parse_value(path: str, text: str, current: Any) -> Any:
    """Parse ``--config.<path>=text`` with the type of the field's current value."""
    from convjax.train.config import ConfigError, flag

    def literal() -> Any:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text

    if isinstance(current, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"{flag(path)} must be True or False, got {text!r}")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{flag(path)} must be an integer, got {text!r}") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{flag(path)} must be a number, got {text!r}") from None
    if isinstance(current, str):
        return text
    value = literal()
    if isinstance(current, (tuple, list)) and not isinstance(value, (tuple, list)):
        raise ConfigError(f"{flag(path)} must be a tuple like (1, 2), got {text!r}")
    return value


def apply_overrides(config: Any, overrides: Sequence[tuple[str, str]]) -> Any:
    """Apply ``--config.<path>=<value>`` pairs to ``config`` merged onto the defaults.

    Unknown fields raise ``ConfigError`` with a "did you mean"; fields under
    ``model_kwargs`` may be new (their values are Python literals, else strings).
    """
    from convjax.train.config import FREE_FORM_FIELDS, _unknown_message, resolve_config

    tree = resolve_config(config).to_dict()
    for path, text in overrides:
        parts = path.split(".")
        node = tree
        for i, part in enumerate(parts[:-1]):
            prefix = ".".join(parts[: i + 1])
            if not isinstance(node, dict) or part not in node:
                raise _config_error(_unknown_message(path, _all_paths(tree)))
            node = node[part]
            if prefix in FREE_FORM_FIELDS:
                node = _descend_free(node, parts[i + 1 : -1])
                break
        free = any(path.startswith(f + ".") for f in FREE_FORM_FIELDS)
        if not isinstance(node, dict) or (parts[-1] not in node and not free):
            raise _config_error(_unknown_message(path, _all_paths(tree)))
        current = node.get(parts[-1])
        if isinstance(current, dict) and path not in FREE_FORM_FIELDS:
            raise _config_error(
                f"--config.{path} is a block of fields; set one of them, e.g. "
                f"--config.{path}.{'name' if 'name' in current else next(iter(current))}=..."
            )
        node[parts[-1]] = _parse_value(path, text, current)
    return resolve_config(tree)


def _descend_free(node: dict, parts: Sequence[str]) -> dict:
    for part in parts:
        node = node.setdefault(part, {})
    return node


def _config_error(message: str) -> Exception:
    from convjax.train.config import ConfigError

    return ConfigError(message)


def _all_paths(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out.append(path)
        if isinstance(value, dict):
            out.extend(_all_paths(value, f"{path}."))
    return out


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` instead of printing usage and exiting."""

    def error(self, message: str) -> Any:  # noqa: D102 - argparse hook
        raise UsageError(message)


@dataclasses.dataclass
class CommandLine:
    """A parsed command line."""

    command: str
    config: Any = None
    workdir: str | None = None
    print_config: bool = False
    split: str = "test"
    step: int | None = None
    top_k: int = 3
    out: str | None = None
    platforms: list[str] | None = None
    files: list[str] = dataclasses.field(default_factory=list)


_FLAGS = {
    "train": (
        "workdir",
        "print_config",
        "step",
        "coordinator_address",
        "num_processes",
        "process_id",
    ),
    "eval": ("workdir", "split", "step"),
    "predict": ("workdir", "top_k"),
    "export": ("workdir", "out", "platforms"),
    "configs": (),
    "models": (),
}


def _parser(command: str) -> _Parser:
    p = _Parser(prog=f"convjax {command}", add_help=False, allow_abbrev=False)
    names = _FLAGS[command]
    if "workdir" in names:
        p.add_argument("--workdir", default=None)
    if "print_config" in names:
        p.add_argument("--print_config", action="store_true")
    if "coordinator_address" in names:
        p.add_argument("--coordinator_address", default=None)
        p.add_argument("--num_processes", type=int, default=None)
        p.add_argument("--process_id", type=int, default=None)
    if "split" in names:
        p.add_argument("--split", default="test")
    if "step" in names:
        p.add_argument("--step", type=int, default=None)
    if "top_k" in names:
        p.add_argument("--top_k", type=int, default=3)
    if "out" in names:
        p.add_argument("--out", default=None)
    if "platforms" in names:
        p.add_argument("--platforms", default=None)
    return p


def _unknown_flag(arg: str, command: str) -> UsageError:
    name = arg.split("=", 1)[0]
    known = [f"--{n}" for n in _FLAGS[command]] + (["--config"] if command == "train" else [])
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else f"; see `convjax {command} --help`"
    return UsageError(f"unknown flag {name} for `convjax {command}`{hint}")


def parse_command_line(argv: Sequence[str]) -> CommandLine:
    """Parse ``[prog, command, flags...]`` (help flags are handled by :func:`main`).

    Raises:
      UsageError: unknown command or flag, missing ``--config``/``--workdir``.
      ConfigError: an unknown config field or a bad value (naming ``--config.<field>``).

    Example:
      >>> parse_command_line(["convjax", "eval", "--workdir=runs/x"]).split
      'test'
    """
    args = list(argv[1:])
    if not args or args[0].startswith("-"):
        raise UsageError(f"a command is required, one of {list(COMMANDS)}")
    command, rest = args[0], args[1:]
    if command not in _FLAGS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"unknown command {command!r}{hint} (commands: {', '.join(COMMANDS)})")
    config_value = None
    overrides: list[tuple[str, str]] = []
    others: list[str] = []
    for arg in rest:
        if command == "train" and arg.startswith("--config="):
            config_value = arg[len("--config=") :]
        elif command == "train" and arg.startswith("--config."):
            path, sep, value = arg[len("--config.") :].partition("=")
            if not sep:
                raise UsageError(f"{arg} needs a value: --config.{path}=<value>")
            overrides.append((path, value))
        else:
            others.append(arg)
    namespace, unknown = _parser(command).parse_known_args(others)
    flags_left = [a for a in unknown if a.startswith("-")]
    if flags_left:
        raise _unknown_flag(flags_left[0], command)
    if unknown and command != "predict":
        raise UsageError(f"unexpected argument {unknown[0]!r} for `convjax {command}`")
    line = CommandLine(
        command=command,
        **{
            k: v
            for k, v in vars(namespace).items()
            if k in ("workdir", "print_config", "split", "step", "top_k", "out")
        },
    )
    if command in ("eval", "predict", "export") and not line.workdir:
        raise UsageError(f"`convjax {command}` needs --workdir=<a training run's directory>")
    if command == "predict":
        if not unknown:
            raise UsageError("`convjax predict` needs at least one image, IDX or .npy file")
        line.files = list(unknown)
    if getattr(namespace, "platforms", None):
        line.platforms = [p.strip() for p in namespace.platforms.split(",") if p.strip()]
    if command == "train":
        if config_value is None:
            raise UsageError("`convjax train` needs --config=<file or shipped name>")
        config = apply_overrides(load_config_file(config_value), overrides)
        _apply_distributed_flags(
            config, namespace.coordinator_address, namespace.num_processes, namespace.process_id
        )
        line.config = config
    return line


def parse_args(argv: Sequence[str]) -> tuple[str, Any, str | None]:
    """``(command, config, workdir)`` of a command line (see :func:`parse_command_line`).

    Example:
      >>> cmd, config, workdir = parse_args(
      ...     ["convjax", "train", "--config=default", "--config.num_steps=10"])
      >>> config.num_steps
      10
    """
    line = parse_command_line(argv)
    return line.command, line.config, line.workdir


def _apply_distributed_flags(
    config: Any, address: str | None, num_processes: int | None, process_id: int | None
) -> None:
    """Copy ``--coordinator_address/--num_processes/--process_id`` into config.distributed."""
    given = {
        "coordinator_address": address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if config is None or not given:
        return
    with config.unlocked():
        config.distributed.initialize = True
        for key, value in given.items():
            config.distributed[key] = value


def _exit_now_if_multiprocess(print_traceback: bool = True) -> None:
    """After an error in a multi-process run: print it and exit at once with status 1.

    A normal interpreter exit would wait in ``jax.distributed``'s shutdown barrier for the
    other processes (up to minutes); exiting at once lets the coordinator's heartbeat check
    (or ``convjax launch``) stop the peers promptly.
    """
    import jax

    if jax.distributed.is_initialized():
        import traceback

        if print_traceback:
            traceback.print_exc()
        print(
            f"convjax: error on process {jax.process_index()}; exiting without waiting for "
            "the other processes.",
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
        os._exit(1)


def _field_lines() -> str:
    from convjax.train.config import _flatten, base_config

    flat = _flatten(base_config().to_dict())
    show = lambda v: (v or "''") if isinstance(v, str) else v  # noqa: E731
    return "\n".join(f"  --config.{k}={show(v)}" for k, v in flat.items())


def command_help(command: str) -> str:
    """The ``--help`` text of ``command``."""
    if command == "train":
        return TRAIN_HELP.format(shipped=", ".join(shipped_configs()), fields=_field_lines())
    return {"eval": EVAL_HELP, "predict": PREDICT_HELP, "export": EXPORT_HELP}.get(command, USAGE)


def _error(message: str, status: int = 2) -> int:
    print(f"convjax: error: {str(message).strip() or 'error'}", file=sys.stderr, flush=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``convjax`` console script; returns the exit status."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if len(argv) >= 2 else 2
    if argv[1] == "launch":
        from convjax.train.launch import main as launch_main

        return launch_main(argv[2:])
    if argv[1] == "compare":
        from convjax.bench.compare import main as compare_main

        return compare_main(argv[2:])
    if argv[1] == "data":
        if argv[2:3] != ["convert"]:
            print("convjax: error: usage: convjax data convert <tfds name> ...", file=sys.stderr)
            return 2
        from convjax.data.tfds_files import main as convert_main

        return convert_main(argv[3:])
    if any(a in ("-h", "--help", "--helpfull") for a in argv[2:]) and argv[1] in _FLAGS:
        print(command_help(argv[1]))
        return 0
    from convjax.train.config import ConfigError

    try:
        line = parse_command_line(argv)
    except (UsageError, ConfigError) as err:
        return _error(str(err))
    if line.command == "configs":
        print("\n".join(shipped_configs()))
        return 0
    if line.command == "models":
        from convjax.models import available_models

        print("\n".join(available_models()))
        return 0
    if line.command == "train" and line.print_config:
        print(line.config)
        return 0
    try:
        return _run(line)
    except KeyboardInterrupt as err:
        text = str(err) or "interrupted; run the same command to resume"
        print(f"\nconvjax: {text}", file=sys.stderr, flush=True)
        signum = getattr(err, "signum", None)
        return 128 + int(signum) if signum else EXIT_INTERRUPTED


def _run(line: CommandLine) -> int:
    from convjax.data import DataError
    from convjax.train.checkpoint import CheckpointError, DiskFullError
    from convjax.train.config import ConfigError
    from convjax.train.distributed import DistributedError
    from convjax.train.workdir_lock import WorkdirLocked

    try:
        if line.command == "train":
            from convjax.train.loop import NonFiniteError, train

            try:
                summary = train(line.config, line.workdir, step=line.step)
            except NonFiniteError as err:
                return _error(str(err), 1)
            return 0 if summary["test_examples"] > 0 else 1
        if line.command == "eval":
            from convjax.train.inference import evaluate_workdir

            r = evaluate_workdir(line.workdir, line.split, step=line.step)
            print(
                f"convjax: {line.split} split at step {r['step']}: accuracy "
                f"{r['accuracy']:.4f}, loss {r['loss']:.4f} ({r['count']} examples); wrote "
                f"{os.path.join(os.path.abspath(line.workdir), 'eval_' + line.split + '.json')}",
                flush=True,
            )
            return 0
        if line.command == "predict":
            from convjax.train.inference import predict

            names: list[str] = []
            results = predict(line.workdir, line.files, top_k=line.top_k, names=names)
            for name, top in zip(names, results, strict=True):
                ranked = ", ".join(f"{c} ({p:.3f})" for c, p in top)
                print(f"{name}: {ranked}", flush=True)
            return 0
        if line.command == "export":
            from convjax.train.inference import export_model

            path = export_model(line.workdir, line.out, platforms=line.platforms)
            print(f"convjax: wrote {path} (and signature.json next to it)", flush=True)
            return 0
    except DataError as err:  # bad or missing data: one line, no traceback
        status = _error(str(err), 1)
        _exit_now_if_multiprocess(print_traceback=False)
        return status
    except (ConfigError, DistributedError, FileNotFoundError, WorkdirLocked) as err:
        return _error(str(err), 1)
    except (CheckpointError, DiskFullError) as err:
        status = _error(err.strerror if isinstance(err, DiskFullError) else str(err), 1)
        _exit_now_if_multiprocess(print_traceback=False)
        return status
        return _error(str(err), 1)
    except KeyboardInterrupt:
        raise
    except OSError as err:
        from convjax.train.checkpoint import disk_full_error, is_disk_full

        if not is_disk_full(err):
            _exit_now_if_multiprocess()
            raise
        workdir = line.workdir or getattr(line.config, "workdir", None) or "."
        status = _error(disk_full_error(workdir, "the workdir").strerror, 1)
        _exit_now_if_multiprocess(print_traceback=False)
        return status
    except Exception:
        _exit_now_if_multiprocess()
        raise
    raise AssertionError(line.command)  # pragma: no cover - every command returns above


if __name__ == "__main__":
    sys.exit(main())

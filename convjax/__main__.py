"""Command line: ``convjax <command> [flags]`` (``python -m convjax ...`` is the same).

``convjax train --config=<file> [--config.<field>=<value> ...]`` runs or resumes a training
job. ``--config`` takes an ml_collections config file (a Python file with ``get_config()``),
or the name of a config shipped in ``convjax/configs`` (``--config=default``); an optional
``:arg`` suffix is passed to ``get_config(arg)``. Any field can be overridden, e.g.

    convjax train --config=convjax/configs/default.py --config.num_epochs=5 \\
        --config.padding=learned --config.parallel=shard_map --workdir=runs/learned

A trained workdir is used with ``convjax eval --workdir=DIR [--split=test]``,
``convjax predict --workdir=DIR <images, IDX or .npy files>`` and
``convjax export --workdir=DIR``; ``convjax data prepare`` builds a TFDS dataset as
ArrayRecord (see :mod:`convjax.data.prepare`), ``convjax data convert`` converts a
TFRecord-prepared TFDS dataset to ArrayRecord (see :mod:`convjax.data.tfds_files`),
``convjax launch`` runs local multi-process jobs. ``convjax <command> --help`` lists each
command's flags. Bad flags and values give one line on stderr and exit status 2.

Why a small parser of its own rather than absl flags (what flax/examples use with
``ml_collections.config_flags``): one binary with subcommands, each with its own flags; no
global flag state, so :func:`main` can be called many times in one process (tests,
notebooks); the same ``--config=<file> --config.<field>=<value>`` spelling as absl.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import pathlib
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

import jax
from flax import nnx

from convjax import __version__, compare
from convjax.configs import ConfigFileError, load_config_module
from convjax.data import DataError
from convjax.data import cli as data_cli
from convjax.data import prepare as data_prepare
from convjax.models import available_models, model_info
from convjax.models.spec import ModelSpec
from convjax.train import launch
from convjax.train.checkpoint import (
    CheckpointError,
    DiskFullError,
    disk_full_error,
    is_disk_full,
)
from convjax.train.config import (
    ConfigError,
    _flatten,
    base_config,
    deep_update,
    merge_config,
    parse_overrides,
    resolve_spec,
)
from convjax.train.distributed import DistributedError
from convjax.train.inference import (
    class_names,
    evaluate_workdir,
    export_model,
    format_prediction,
    predict,
    register_workdir_model,
)
from convjax.train.loop import NonFiniteError, train
from convjax.train.spec import TrainSpec
from convjax.train.workdir_lock import WorkdirLocked

#: Directory of the configs shipped with convjax.
CONFIG_DIR = pathlib.Path(__file__).resolve().parent / "configs"
COMMANDS = ("train", "eval", "predict", "export", "configs", "models", "launch", "data", "compare")
#: Fields that change the model's parameters: fixed by a workdir's checkpoint, so
#: ``eval`` / ``predict`` / ``export`` do not take them as overrides.
MODEL_FIELDS = ("model", "model_kwargs", "padding", "pool", "norm", "conv")

#: Exit status of an interrupted run (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130

USAGE = """usage: convjax <command> [flags]      (convjax <command> --help: its flags)

commands:
  train     --config=<file or shipped name> [--config.<field>=<value> ...] [--workdir=<dir>]
            [--step=N] [--print_config]   run or resume a training job
  eval      --workdir=<dir> [--split=test|train] [--step=N] [--config.<field>=<value> ...]
            evaluate the run's checkpoint; prints and writes <dir>/eval_<split>.json
  predict   --workdir=<dir> [--top_k=3] [--config.<field>=<v>] <image, IDX or .npy files>
            print the top-k classes of each image
  export    --workdir=<dir> [--out=<file>] [--platforms=cpu,cuda] [--inputs=raw|normalized]
            [--config.<field>=<v>]
            write a serialized jax.export of the eval function (raw pixels in, logits out)
  configs   list the configs shipped in convjax/configs
  models    the models of --config.model: parameters, description, switches honoured
  launch    [--processes N] [--devices-per-process D] [--port P] -- <command>
            run a command as N local JAX processes (multi-host on one machine)
  data prepare <tfds name> [--data_dir=<dir>] [--manual_dir=<dir>] [--imports=<module>]
            download and prepare a TFDS dataset as ArrayRecord (the builder needs TensorFlow)
  data convert <tfds name> [--data_dir=<dir>] [--out_root=<dir>]
            convert a TFRecord-prepared TFDS dataset to ArrayRecord (no TensorFlow)
  compare   <padding|pooling|norm|conv|cifar10_*|file> [--quick] [--recipe=paper|adam]
            [--seeds=0,1,2] [--workdir=<dir>] [--config.<field>=<value> ...]
            train arms that differ in one switch over seeds, under the paper's recipe
            (default) or Adam; writes table.md and curves.png
  --version print the convjax version

--config.<field>=<value> overrides a config field (train: of the config file; eval, predict,
export: of the run's stored config.json, except the model's fields; compare: of every run).
One parser with subcommands instead of absl flags: no global flag state, so it runs inside
notebooks and tests; the flags are spelled as absl's config_flags spells them.

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
  --print_config          print the resolved config (as --config.<field>=<value> lines)
                          and exit
  --coordinator_address=<host:port> --num_processes=<N> --process_id=<i>
                          multi-host setup (default: the JAX_COORDINATOR_ADDRESS,
                          JAX_NUM_PROCESSES and JAX_PROCESS_ID environment variables)

config fields (defaults of convjax/configs/default.py; see its docstring; a flag always
wins over the file; --config.data.name is an alias of --config.dataset; a switch the model
does not honour, see `convjax models`, is an error; padding/pool/norm/conv='' is unset: a zoo
model's default (zero/max/batch/its own conv), an import-path model's layers as written;
--config.model=<module>:<factory> trains your own NNX model, see convjax/models/spec.py):
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
  --config.<field>=<value>  override a stored field (not the model's), e.g.
                    --config.data.data_dir=<dir> or --config.data.eval_batch_size=256
"""

PREDICT_HELP = """usage: convjax predict --workdir=<dir> [--top_k=3] <file> [<file> ...]

Print the top-k classes (with probabilities, and names where data_info.json has them) of
every image in the files: image files (PNG, JPEG, ...; converted to the dataset's channels and
size), NumPy .npy/.npz or IDX files (*-ubyte, *.idx) with one (H, W[, C]) or many
(N, H, W[, C]) images: uint8 or numbers in 0..255 (a file all in [0, 1] is scaled by 255),
resized like image files. NaN/inf or values outside 0..255 are refused; pixels far from the
training data's statistics get a warning.

flags:
  --workdir=<dir>   a training run's directory
  --top_k=<k>       classes per image (default 3)
  --config.<field>=<value>  override a stored field (not the model's)
"""

EXPORT_HELP = """usage: convjax export --workdir=<dir> [--out=<file>] [--platforms=cpu,cuda]
                      [--inputs=raw|normalized]

Write a serialized jax.export of the eval function images -> logits (symbolic batch size b),
with the checkpoint's parameters baked in, plus signature.json next to it. By default it takes
raw pixels, float32 (b, H, W, C) in 0..255 (uint8 images: .astype(np.float32)), and applies
the run's normalisation (data_info.json) and sequence layout itself. Reload it with
jax.export.deserialize(open(path, "rb").read()).call(images) (needs jax and flatbuffers).

flags:
  --workdir=<dir>          a training run's directory
  --out=<file>             output file (default <dir>/export/eval_fn.jax)
  --platforms=<p1,p2>      lowering platforms (default: the current backend)
  --config.<field>=<value> override a stored field (not the model's), e.g. --config.dtype
  --inputs=<raw|normalized>  raw pixels (default), or images already normalised like the
                           data pipeline's output, float32 (b, *input_shape)
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
            close = difflib.get_close_matches(path.removesuffix(".py"), shipped_configs(), n=1)
            hint = f"did you mean --config={close[0]}? " if close else ""
            raise UsageError(
                f"--config={value}: no such file, and not a shipped config; {hint}shipped "
                f"configs are {shipped_configs()}"
            )
        path = str(shipped)
    return path, (extra if sep else None)


def load_config_file(value: str) -> Any:
    """Run ``get_config()`` (or ``get_config(arg)`` for ``file:arg``) of a config file.

    Raises:
      UsageError: no such file or shipped config (with a "did you mean").
      ConfigFileError: the file does not run (``file:line: message`` for a syntax error).
    """
    path, arg = _config_path(value)
    module = load_config_module(path)
    return module.get_config() if arg is None else module.get_config(arg)


def apply_overrides(config: Any, overrides: Sequence[tuple[str, str]]) -> TrainSpec:
    """``config`` merged onto the defaults, the ``--config.<path>=<value>`` pairs applied
    (the command line wins over the file), resolved once into a :class:`TrainSpec`.

    Unknown fields raise ``ConfigError`` with a "did you mean"; fields under
    ``model_kwargs`` may be new (their values are Python literals, else strings).
    """
    tree = merge_config(config)
    return resolve_spec(deep_update(tree, parse_overrides(overrides, tree)))


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
    overrides: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    split: str = "test"
    step: int | None = None
    top_k: int = 3
    out: str | None = None
    platforms: list[str] | None = None
    inputs: str = "raw"
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
    "export": ("workdir", "out", "platforms", "inputs"),
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
    if "inputs" in names:
        p.add_argument("--inputs", default="raw", choices=("raw", "normalized"))
    return p


def _unknown_flag(arg: str, command: str) -> UsageError:
    name = arg.split("=", 1)[0]
    field = name.lstrip("-")
    takes_config = command in ("train", "eval", "predict", "export")
    if takes_config and field in _flatten(base_config().to_dict()):
        return UsageError(
            f"unknown flag {name} for `convjax {command}`; did you mean --config.{field}?"
        )
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
    takes_config = command in ("train", "eval", "predict", "export")
    for i, arg in enumerate(rest):
        if command == "train" and arg == "--config":
            after = rest[i + 1] if i + 1 < len(rest) else "<file>"
            raise UsageError(f"--config needs `=`: did you mean --config={after}?")
        if command == "train" and arg.startswith("--config="):
            config_value = arg[len("--config=") :]
        elif takes_config and arg.startswith("--config."):
            path, sep, value = arg[len("--config.") :].partition("=")
            if not sep:
                raise UsageError(f"{arg} needs `=`: did you mean --config.{path}=<value>?")
            overrides.append((path, value))
        elif takes_config and arg.startswith("--config"):
            raise UsageError(
                f"`convjax {command}` takes no --config=<file>; it reads the run's config.json"
            )
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
        overrides=overrides,
        **{
            k: v
            for k, v in vars(namespace).items()
            if k in ("workdir", "print_config", "split", "step", "top_k", "out", "inputs")
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
        tree = merge_config(load_config_file(config_value))
        tree = deep_update(tree, parse_overrides(overrides, tree))
        if line.workdir:
            tree["workdir"] = line.workdir
        _apply_distributed_flags(
            tree, namespace.coordinator_address, namespace.num_processes, namespace.process_id
        )
        line.config = resolve_spec(tree)  # the one resolution of this process
    elif command in ("eval", "predict", "export") and overrides:
        line.config = workdir_overrides(line.workdir, overrides)
    return line


def workdir_overrides(workdir: str, overrides: Sequence[tuple[str, str]]) -> TrainSpec:
    """The stored ``config.json`` of a workdir with ``--config.<field>=<value>`` applied;
    fields of the model (:data:`MODEL_FIELDS`) are fixed by the checkpoint and refused."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise UsageError(f"--workdir={workdir} holds no config.json (not a training run)")
    register_workdir_model(workdir)
    with open(path, encoding="utf-8") as f:
        tree = merge_config(json.load(f))
    partial = parse_overrides(overrides, tree)
    fixed = [k for k in partial if k in MODEL_FIELDS]
    if fixed:
        raise UsageError(
            f"--config.{fixed[0]} is fixed by the run's checkpoint; eval, predict and export "
            f"take only fields that leave the model as trained (not {', '.join(MODEL_FIELDS)})"
        )
    return resolve_spec(deep_update(tree, partial))


def parse_args(argv: Sequence[str]) -> tuple[str, Any, str | None]:
    """``(command, spec, workdir)`` of a command line (see :func:`parse_command_line`); the
    spec is the resolved :class:`~convjax.train.spec.TrainSpec`.

    Example:
      >>> cmd, spec, workdir = parse_args(
      ...     ["convjax", "train", "--config=default", "--config.num_steps=10"])
      >>> cmd, spec.run.num_steps, spec.model.pool, workdir
      ('train', 10, 'max', None)
    """
    line = parse_command_line(argv)
    return line.command, line.config, line.workdir


def _apply_distributed_flags(
    tree: dict, address: str | None, num_processes: int | None, process_id: int | None
) -> None:
    """Copy ``--coordinator_address/--num_processes/--process_id`` into the merged config's
    ``distributed`` block (in place)."""
    given = {
        "coordinator_address": address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return
    tree["distributed"] = {**tree["distributed"], "initialize": True, **given}


def _exit_now_if_multiprocess(print_traceback: bool = True) -> None:
    """After an error in a multi-process run: print it and exit at once with status 1.

    A normal interpreter exit would wait in ``jax.distributed``'s shutdown barrier for the
    other processes (up to minutes); exiting at once lets the coordinator's heartbeat check
    (or ``convjax launch``) stop the peers promptly.
    """
    if jax.distributed.is_initialized():
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


def _field_lines(tree: dict | None = None, indent: str = "  ") -> str:
    """``--config.<field>=<value>`` lines of a config tree (default: the base config); tuples
    print as ``(1, 2)``, empty strings as ``''``."""
    flat = _flat_fields(base_config().to_dict() if tree is None else tree)
    show = lambda v: (v or "''") if isinstance(v, str) else v  # noqa: E731
    return "\n".join(f"{indent}--config.{k}={show(v)}" for k, v in flat.items())


def _flat_fields(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` of a nested config (``model_kwargs`` entries too)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out.update(_flat_fields(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


#: ``(in_features, num_classes)`` each model's parameter count is given at in
#: ``convjax models`` (the input it is made for).
_MODEL_INPUT = {"digits_cnn": (1, 10), "flextcn": (1, 10)}


def models_table() -> str:
    """``convjax models``: name, parameters, description and honoured switches per model."""
    rows = []
    for name in available_models():
        imagenet = name.endswith("_imagenet") or name in ("resnet18", "resnet50")
        in_features, classes = _MODEL_INPUT.get(name, (3, 1000 if imagenet else 10))
        spec = ModelSpec(name)
        abstract = nnx.eval_shape(
            lambda spec=spec, f=in_features, c=classes: spec.build(num_classes=c, in_features=f)
        )
        params = sum(int(x.size) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
        info = model_info(name)
        rows.append(
            f"{name:<16} {params:>12,} params ({classes} classes, {in_features} channels)  "
            f"switches: {', '.join(info.switches)}\n{'':<17}{info.description}"
        )
    return "\n".join(rows)


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
    if argv[1] in ("--version", "-V", "version"):
        print(f"convjax {__version__}")
        return 0
    if argv[1] == "launch":
        return launch.main(argv[2:])
    if argv[1] == "compare":
        return compare.main(argv[2:])
    if argv[1] == "data":
        if argv[2:3] == ["prepare"]:
            return data_prepare.main(argv[3:])
        if argv[2:3] != ["convert"]:
            print(
                "convjax: error: usage: convjax data prepare <tfds name> ... or "
                "convjax data convert <tfds name> ...",
                file=sys.stderr,
            )
            return 2
        return data_cli.main(argv[3:])
    if any(a in ("-h", "--help", "--helpfull") for a in argv[2:]) and argv[1] in _FLAGS:
        print(command_help(argv[1]))
        return 0
    try:
        line = parse_command_line(argv)
    except (UsageError, ConfigError, ConfigFileError) as err:
        return _error(str(err))
    if line.command == "configs":
        print("\n".join(shipped_configs()))
        return 0
    if line.command == "models":
        print(models_table())
        return 0
    if line.command == "train" and line.print_config:
        print(_field_lines(line.config.to_config(), indent=""))
        return 0
    try:
        return _run(line)
    except KeyboardInterrupt as err:
        text = str(err) or "interrupted; run the same command to resume"
        print(f"\nconvjax: {text}", file=sys.stderr, flush=True)
        signum = getattr(err, "signum", None)
        return 128 + int(signum) if signum else EXIT_INTERRUPTED


def _run(line: CommandLine) -> int:
    try:
        if line.command == "train":
            try:
                summary = train(line.config, step=line.step)
            except NonFiniteError as err:
                return _error(str(err), 1)
            return 0 if summary["test_examples"] > 0 else 1
        if line.command == "eval":
            r = evaluate_workdir(line.workdir, line.split, step=line.step, config=line.config)
            print(
                f"convjax: {line.split} split at step {r['step']}: accuracy "
                f"{r['accuracy']:.4f}, loss {r['loss']:.4f} ({r['count']} examples); wrote "
                f"{os.path.join(os.path.abspath(line.workdir), 'eval_' + line.split + '.json')}",
                flush=True,
            )
            return 0
        if line.command == "predict":
            names: list[str] = []
            results = predict(
                line.workdir, line.files, top_k=line.top_k, names=names, config=line.config
            )
            labels = class_names(line.workdir)
            for name, top in zip(names, results, strict=True):
                print(f"{name}: {format_prediction(top, labels)}", flush=True)
            return 0
        if line.command == "export":
            path = export_model(
                line.workdir,
                line.out,
                platforms=line.platforms,
                config=line.config,
                inputs=line.inputs,
            )
            print(
                f"convjax: wrote {path} (and signature.json next to it; inputs: "
                f"{'raw pixels 0..255' if line.inputs == 'raw' else 'normalized images'})",
                flush=True,
            )
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
    except KeyboardInterrupt:
        raise
    except OSError as err:
        if not is_disk_full(err):
            _exit_now_if_multiprocess()
            raise
        workdir = line.workdir or (
            line.config.run.workdir if isinstance(line.config, TrainSpec) else "."
        )
        status = _error(disk_full_error(workdir, "the workdir").strerror, 1)
        _exit_now_if_multiprocess(print_traceback=False)
        return status
    except Exception:
        _exit_now_if_multiprocess()
        raise
    raise AssertionError(line.command)  # pragma: no cover - every command returns above


if __name__ == "__main__":
    sys.exit(main())

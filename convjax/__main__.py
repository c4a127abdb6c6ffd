"""Command line: ``convjax train --config=<file> [--config.<field>=<value> ...]``.

``python -m convjax train ...`` is the same. ``--config`` takes an ml_collections config file
(a Python file with ``get_config()``), or the name of a config shipped in
``convjax/configs`` (``--config=default``, ``--config=cifar10_resnet_deconv``); an optional
``:arg`` suffix is passed to ``get_config(arg)``. Any field can be overridden, e.g.

    convjax train --config=convjax/configs/default.py --config.num_epochs=5 \\
        --config.padding=learned --config.parallel=shard_map --workdir=runs/learned

Commands: ``train`` (run or resume a training job), ``configs`` (list the shipped configs),
``models`` (list model names), ``launch`` (local multi-process runs), ``data convert`` (a
TFRecord-prepared TFDS dataset to ArrayRecord, see :mod:`convjax.data.tfds_files`).
"""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

from absl import flags
from ml_collections import config_flags

#: Directory of the configs shipped with convjax.
CONFIG_DIR = pathlib.Path(__file__).resolve().parent / "configs"
COMMANDS = ("train", "configs", "models", "launch", "data")

USAGE = """usage: convjax <command> [flags]

commands:
  train     --config=<file or shipped name> [--config.<field>=<value> ...] [--workdir=<dir>]
  configs   list the configs shipped in convjax/configs
  models    list the model names accepted by --config.model
  launch    [--processes N] [--devices-per-process D] [--port P] -- <command>
            run a command as N local JAX processes (multi-host on one machine)
  data convert <tfds name> [--data_dir=<dir>] [--out_root=<dir>]
            convert a TFRecord-prepared TFDS dataset to ArrayRecord (no TensorFlow)

multi-host flags of train (default: the JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
JAX_PROCESS_ID environment variables; none of them: a single host, unless
--config.distributed.initialize=True lets JAX auto-detect a TPU pod / SLURM / Open MPI job):
  --coordinator_address=<host:port> --num_processes=<N> --process_id=<i>

example:
  convjax train --config=convjax/configs/default.py --config.num_epochs=5
  convjax launch --processes 2 -- train --config=default
"""


def shipped_configs() -> list[str]:
    """Names of the config files in ``convjax/configs`` (without ``.py``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_"))


def _resolve_config_arg(arg: str) -> str:
    """``--config=default`` -> the shipped file's path; paths are left unchanged."""
    prefix = "--config="
    if not arg.startswith(prefix):
        return arg
    value = arg[len(prefix) :]
    path, sep, extra = value.partition(":")
    if os.path.exists(path):
        return arg
    shipped = CONFIG_DIR / (path if path.endswith(".py") else f"{path}.py")
    if shipped.exists():
        return f"{prefix}{shipped}{sep}{extra}"
    raise ValueError(
        f"--config={value!r}: no such file, and not a shipped config; shipped configs are "
        f"{shipped_configs()}."
    )


def parse_args(argv: Sequence[str]) -> tuple[str, Any, str | None]:
    """Parse ``[prog, command, flags...]`` into ``(command, config, workdir)``.

    Raises ``ValueError`` for a missing/unknown command or a missing ``--config`` for
    ``train``; flag errors raise absl's ``flags.Error`` (bad values) or ``AttributeError``
    (an override of a field the config does not have).

    Example:
      >>> cmd, config, workdir = parse_args(
      ...     ["convjax", "train", "--config=default", "--config.num_steps=10"])
      >>> config.num_steps
      10
    """
    argv = list(argv)
    args = [argv[0]] + [_resolve_config_arg(a) for a in argv[1:]]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config",
        default=None,
        help_string="ml_collections config file",
        flag_values=fv,
        sys_argv=args,
    )
    flags.DEFINE_string(
        "workdir", None, "output directory (default: config.workdir)", flag_values=fv
    )
    flags.DEFINE_string(
        "coordinator_address", None, "multi-host: host:port of process 0", flag_values=fv
    )
    flags.DEFINE_integer("num_processes", None, "multi-host: number of processes", flag_values=fv)
    flags.DEFINE_integer("process_id", None, "multi-host: this process's id", flag_values=fv)
    positional = fv(args)[1:]
    if not positional:
        raise ValueError(f"a command is required, one of {list(COMMANDS)}.\n\n{USAGE}")
    command = positional[0]
    if command not in COMMANDS or len(positional) > 1:
        raise ValueError(
            f"unknown command {' '.join(positional)!r}; expected one of {list(COMMANDS)}."
            f"\n\n{USAGE}"
        )
    config = fv.config
    if command == "train" and config is None:
        raise ValueError(f"`convjax train` needs --config=<file>.\n\n{USAGE}")
    _apply_distributed_flags(config, fv.coordinator_address, fv.num_processes, fv.process_id)
    return command, config, fv.workdir


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
    from ml_collections import ConfigDict

    with config.unlocked():
        if config.get("distributed") is None:
            config.distributed = ConfigDict()
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``convjax`` console script; returns the exit status."""
    argv = sys.argv if argv is None else argv
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if len(argv) >= 2 else 2
    if argv[1] == "launch":
        from convjax.train.launch import main as launch_main

        return launch_main(argv[2:])
    if argv[1] == "data":
        if argv[2:3] != ["convert"]:
            print("convjax: error: usage: convjax data convert <tfds name> ...", file=sys.stderr)
            return 2
        from convjax.data.tfds_files import main as convert_main

        return convert_main(argv[3:])
    try:
        command, config, workdir = parse_args(argv)
    except (AttributeError, KeyError) as err:
        print(
            f"convjax: error: the config has no field {err} (check the --config.<field> overrides)",
            file=sys.stderr,
        )
        return 2
    except (ValueError, TypeError, flags.Error) as err:
        print(f"convjax: error: {err}", file=sys.stderr)
        return 2
    if command == "configs":
        print("\n".join(shipped_configs()))
        return 0
    if command == "models":
        from convjax.models import available_models

        print("\n".join(available_models()))
        return 0
    from convjax.data import DataError
    from convjax.train.distributed import DistributedError
    from convjax.train.loop import train

    try:
        summary = train(config, workdir)
    except DistributedError as err:
        print(f"convjax: error: {err}", file=sys.stderr, flush=True)
        return 1
    except DataError as err:  # bad or missing data: one line, no traceback
        print(f"convjax: error: {err}", file=sys.stderr, flush=True)
        _exit_now_if_multiprocess(print_traceback=False)
        return 1
    except Exception:
        _exit_now_if_multiprocess()
        raise
    return 0 if summary["test_examples"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())

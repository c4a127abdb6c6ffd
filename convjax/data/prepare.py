"""``convjax data prepare``: build a TFDS dataset as ArrayRecord from Python.

In tensorflow-datasets 4.9.10 the ``tfds build`` command imports ``apache_beam`` at start-up
and fails without it, even for datasets that never use Beam. The builder itself does not need
it: :func:`prepare_tfds` calls ``tfds.builder(name, file_format="array_record")`` and its
``download_and_prepare``, which is what ``tfds build --file_format=array_record`` does.
Preparing most TFDS image datasets needs TensorFlow (``pip install "tensorflow>=2.16"``, or
convjax's ``prepare`` extra); reading them back for training does not.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from convjax.data.sources import DataError

#: The pip line printed when a builder needs TensorFlow and it is not installed.
TENSORFLOW_INSTALL = 'pip install "tensorflow>=2.16"'
#: Python packages whose pip name differs from their import name.
_PIP_NAMES = {"apache_beam": "apache-beam", "PIL": "pillow", "cv2": "opencv-python-headless"}


def _missing_module_message(err: ModuleNotFoundError, name: str) -> str:
    module = (err.name or "").split(".")[0]
    if module == "tensorflow":
        return (
            f"preparing {name!r} needs TensorFlow, which is not installed: run "
            f'`{TENSORFLOW_INSTALL}` (or `pip install -e ".[prepare]"` in a convjax clone), '
            "preferably in a separate environment; training reads the result without it"
        )
    pip_name = _PIP_NAMES.get(module, module)
    return f"preparing {name!r} needs the module {module!r}: run `pip install {pip_name}`"


def prepare_tfds(
    name: str,
    *,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    imports: Sequence[str] = (),
) -> Any:
    """Download (if needed) and prepare the TFDS dataset ``name`` as ArrayRecord files.

    Args:
      name: a TFDS name ``name[/config][:version]`` (``tfds:`` prefix allowed), registered by
        TFDS or by one of ``imports``.
      data_dir: TFDS data directory to write into (default: TFDS's, ``$TFDS_DATA_DIR`` or
        ``~/tensorflow_datasets``).
      manual_dir: where the files of datasets that need a manual download are.
      imports: Python modules to import first (they register custom builders), like
        ``tfds build --imports``.

    Returns:
      The prepared builder (``builder.data_dir`` is the version directory).

    Raises:
      DataError: one line: unknown name (with the closest names), a module that is missing
        (with the ``pip install`` line), or a failed download.

    Example:
      >>> builder = prepare_tfds("mnist", data_dir="/data/tfds")  # doctest: +SKIP
      >>> builder.info.splits["train"].num_examples  # doctest: +SKIP
      60000
    """
    name = name.removeprefix("tfds:")
    for module in imports:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name == module:
                raise DataError(f"--imports: no module named {module!r}") from None
            raise DataError(_missing_module_message(err, name)) from None
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(
            name,
            data_dir=os.path.expanduser(data_dir) if data_dir else None,
            file_format="array_record",
        )
    except tfds.core.registered.DatasetNotFoundError:
        base = name.split("/")[0].split(":")[0]
        close = difflib.get_close_matches(base, tfds.list_builders(with_community_datasets=False))
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DataError(
            f"TFDS has no dataset named {name!r}{hint} (a custom builder: --imports=<module>)"
        ) from None
    except ModuleNotFoundError as err:
        raise DataError(_missing_module_message(err, name)) from None
    config = tfds.download.DownloadConfig(
        manual_dir=os.path.expanduser(manual_dir) if manual_dir else None
    )
    try:
        builder.download_and_prepare(download_config=config)
    except ModuleNotFoundError as err:
        raise DataError(_missing_module_message(err, name)) from None
    except AssertionError as err:  # TFDS: manual_dir missing or empty
        text = " ".join(str(err).split())
        raise DataError(f"preparing {name!r}: {text} (give --manual_dir=<dir>)") from None
    return builder


def main(argv: Sequence[str] | None = None) -> int:
    """``convjax data prepare NAME [--data_dir DIR] [--manual_dir DIR] [--imports M1,M2]``.

    Returns the exit status (0 done, 1 a data error, 2 bad flags); errors are one line.

    Example:
      >>> main(["mnist", "--data_dir=/data/tfds"])  # doctest: +SKIP
      0
    """
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> Any:  # one line, exit status 2
            print(f"convjax: error: {message}", file=sys.stderr)
            raise SystemExit(2)

    parser = Parser(
        prog="convjax data prepare",
        description="Download and prepare a TFDS dataset as ArrayRecord files (what "
        "`tfds build --file_format=array_record` does, without its apache_beam import).",
    )
    parser.add_argument("name", help="TFDS name[/config][:version], with or without 'tfds:'")
    parser.add_argument("--data_dir", default=None, help="TFDS data_dir (default: TFDS's)")
    parser.add_argument("--manual_dir", default=None, help="manually downloaded files")
    parser.add_argument("--imports", default="", help="modules that register custom builders")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    imports = [m.strip() for m in args.imports.split(",") if m.strip()]
    try:
        builder = prepare_tfds(
            args.name, data_dir=args.data_dir, manual_dir=args.manual_dir, imports=imports
        )
    except DataError as err:
        print(f"convjax: error: {err}", file=sys.stderr)
        return 1
    spec = builder.name
    if builder.builder_config is not None:
        spec += f"/{builder.builder_config.name}"
    splits = ", ".join(f"{k} {v.num_examples}" for k, v in builder.info.splits.items())
    print(
        f"convjax: prepared {spec} {builder.version} ({splits}) as ArrayRecord in "
        f"{builder.data_dir}; train with --config.dataset=tfds:{spec} "
        f"--config.data.data_dir={builder.data_dir_root}"
    )
    return 0


__all__ = ["TENSORFLOW_INSTALL", "main", "prepare_tfds"]

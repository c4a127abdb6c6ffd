"""``convjax data convert``: convert a TFRecord-prepared TFDS dataset to ArrayRecord."""

from __future__ import annotations

import argparse
import sys

from convjax.data.errors import DataError
from convjax.data.sources import find_tfds_version_dir
from convjax.data.tfds_files import convert_to_array_record, has_array_record


def main(argv: list[str] | None = None) -> int:
    """``convjax data convert [--out_root DIR] [--no-verify|--verify] NAME [--data_dir DIR]``:
    convert a TFRecord-prepared dataset to ArrayRecord ahead of training (what the trainer
    otherwise does on first use). Returns the exit status.

    Example:
      >>> main(["mnist", "--data_dir", "/data"])  # doctest: +SKIP
    """
    parser = argparse.ArgumentParser(
        prog="convjax data convert",
        description="Convert a TFRecord-prepared TFDS dataset to ArrayRecord (no TensorFlow).",
    )
    parser.add_argument("name", help="TFDS name[/config][:version], with or without 'tfds:'")
    parser.add_argument("--data_dir", default=None, help="TFDS data_dir (default: TFDS's)")
    parser.add_argument("--out_root", default=None, help="write a mirror here instead")
    check = parser.add_mutually_exclusive_group()
    check.add_argument("--verify", dest="verify", action="store_true", default=None)
    check.add_argument("--no-verify", dest="verify", action="store_false")
    args = parser.parse_args(argv)
    name = args.name.removeprefix("tfds:")
    try:
        version_dir = find_tfds_version_dir(name, args.data_dir)
        if has_array_record(version_dir) and args.out_root is None:
            print(f"convjax: {version_dir} already has ArrayRecord files")
            return 0
        out, read_dir = convert_to_array_record(
            version_dir, args.out_root, verify_checksums=args.verify
        )
    except DataError as e:
        print(f"convjax: error: {e}", file=sys.stderr)
        return 1
    print(f"convjax: ArrayRecord dataset in {out}; read it with --config.data.data_dir={read_dir}")
    return 0


__all__ = ["main"]

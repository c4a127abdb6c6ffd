"""``python -m convjax.compare.differences``: one figure of every claim's paired differences.

Reads several ``convjax compare`` workdirs (e.g. each experiment under ``--recipe=paper`` and
``--recipe=adam``) and draws each arm's paired per-seed difference to its group's first arm
with its 95 % Student-t interval, one panel per experiment and one colour per recipe (see
:func:`convjax.compare.runner.plot_differences`). It trains nothing.

Usage::

    python -m convjax.compare.differences --out=differences.png \\
        runs/compare/pooling runs/compare/pooling_adam
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from convjax.compare.runner import RESULTS_FILE, load_results, plot_differences


def main(argv: Sequence[str] | None = None) -> int:
    """Draw the workdirs' paired differences to ``--out``; 0 on success, 2 on bad input.

    Example:
      >>> main(["--out=differences.png", "runs/compare/pooling"])  # doctest: +SKIP
      0
    """
    parser = argparse.ArgumentParser(
        prog="python -m convjax.compare.differences",
        description="Draw every arm's paired difference to its group's first arm (95 %% CI) "
        "for several convjax compare workdirs, one panel per experiment, one colour per recipe.",
    )
    parser.add_argument("workdirs", nargs="+", help=f"compare workdirs (each with {RESULTS_FILE})")
    parser.add_argument("--out", required=True, help="the PNG file to write")
    args = parser.parse_args(argv)
    try:
        loaded = [load_results(w) for w in args.workdirs]
        plot_differences(loaded, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"python -m convjax.compare.differences: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({len(loaded)} workdirs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

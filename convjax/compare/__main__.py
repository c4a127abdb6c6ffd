"""``python -m convjax.compare <experiment> ...`` (the same as ``convjax compare``)."""

import sys

from convjax.compare.runner import main

if __name__ == "__main__":
    sys.exit(main())

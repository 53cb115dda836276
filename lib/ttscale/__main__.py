"""``python -m ttscale``: re-run chapters with other parameters (see :mod:`ttscale.cli`)."""

import sys

from ttscale.cli import main

if __name__ == "__main__":
    sys.exit(main())

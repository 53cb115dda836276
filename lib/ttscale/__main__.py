"""``python -m ttscale``: re-run chapters with other parameters (see :mod:`ttscale.cli`)."""

import sys

try:
    from ttscale.cli import main
    import jupytext, papermill, yaml  # noqa: F401,E401 - the book machinery the commands need
except ImportError as exc:  # the maths installs without the machinery: say how to get it
    sys.exit(f"python -m ttscale needs the book machinery ({exc.name} is missing): "
             'pip install -e ".[run]"')

if __name__ == "__main__":
    sys.exit(main())

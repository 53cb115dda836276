"""``python -m ttbook``: re-run chapters with other parameters (see :mod:`ttbook.cli`)."""

import sys

try:
    from ttbook.cli import main
    import jupytext, papermill, yaml  # noqa: F401,E401 - the book machinery the commands need
except ImportError as exc:  # the maths installs without the machinery: say how to get it
    sys.exit(f"python -m ttbook needs the book machinery ({exc.name} is missing): "
             'pip install -e ".[run]"')

if __name__ == "__main__":
    sys.exit(main())

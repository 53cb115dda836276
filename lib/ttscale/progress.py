"""Progress bars for long loops: visible to a person at a terminal or in Jupyter, quiet in logs.

Quiet when ``TTSCALE_QUIET=1`` (set by :func:`ttbook.chapters.execute`, i.e. papermill runs
and tests) or ``CI`` is set. Bars go to stderr, which the rendered book drops.
"""

from __future__ import annotations

import os
import sys

from tqdm.std import tqdm

__all__ = ["bar", "quiet"]


def quiet() -> bool:
    """True when progress output should be suppressed (papermill, tests, CI)."""
    return os.environ.get("TTSCALE_QUIET") == "1" or bool(os.environ.get("CI"))


def bar(iterable=None, **kwargs):
    """A tqdm bar over ``iterable`` (or a manual one with ``total=``), quiet under CI/papermill."""
    kwargs.setdefault("mininterval", 1.0)
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=quiet(), **kwargs)

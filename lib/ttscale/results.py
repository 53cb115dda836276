"""A chapter's declared results: the numbers it records with myst-nb's ``glue``.

Chapters already record every number their prose quotes with
``glue("key", value, display=False)``. Each call leaves a ``display_data`` output whose
metadata has a ``scrapbook`` entry naming the key (the papermill/scrapbook convention), so any
executed notebook carries its results: :func:`glued` reads them back. Plain numbers, strings and
bools are returned; figures and tables glued for the book are skipped. Used by
``python -m ttscale run`` and ``sweep`` to report and tabulate each run's results.
"""

from __future__ import annotations

import ast
import re

__all__ = ["glued", "scalar"]

_NUMPY_SCALAR = re.compile(r"^(?:np|numpy)\.\w+\((.*)\)$", re.S)


def scalar(text: str):
    """The plain value shown as ``text`` (``0.25``, ``'abc'``, ``np.float64(0.25)``), else None."""
    text = text.strip()
    m = _NUMPY_SCALAR.match(text)
    if m:
        text = m.group(1)
    if text in {"nan", "inf", "-inf"}:
        return float(text)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if isinstance(value, (bool, int, float, str)):
        return value
    return None


def glued(nb) -> dict:
    """Key -> value of every scalar glued in an executed notebook (``nbformat`` node or dict).

    Later glues of a key override earlier ones, as in the book build.
    """
    out = {}
    for cell in nb["cells"]:
        if cell.get("cell_type") != "code":
            continue
        for output in cell.get("outputs", []):
            meta = output.get("metadata") or {}
            scrap = meta.get("scrapbook")
            if not scrap or output.get("output_type") not in ("display_data", "execute_result"):
                continue
            prefix = scrap.get("mime_prefix", "")
            data = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in output.get("data", {}).items()}
            plain = data.get("text/plain")
            if plain is None or any(k.startswith("image/") for k in data):
                continue
            if isinstance(plain, list):
                plain = "".join(plain)
            value = scalar(plain)
            if value is not None:
                out[scrap["name"]] = value
    return out

"""A chapter's declared results: the numbers it records with myst-nb's ``glue``.

Chapters already record every number their prose quotes with
``glue("key", value, display=False)``. Each call leaves a ``display_data`` output whose
metadata has a ``scrapbook`` entry naming the key (the papermill/scrapbook convention), so any
executed notebook carries its results: :func:`glued` reads them back. Plain numbers, strings and
bools are returned; figures and tables glued for the book are skipped. Used by
``python -m ttbook run`` and ``sweep`` to report and tabulate each run's results.
"""

from __future__ import annotations

import ast
import re

__all__ = ["glued", "scalar", "meanings"]

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


_GLUE_REF = re.compile(r"\{glue(?::text|:md)?\}`([A-Za-z0-9_]+)(?::[^`]*)?`")
_ROLE = re.compile(r"\{[a-z:-]+\}`([^`]*)`")


def glued_names(nb) -> set:
    """Names of everything glued in an executed notebook: scalars, text and figures alike."""
    names = set()
    for cell in nb["cells"]:
        if cell.get("cell_type") != "code":
            continue
        for output in cell.get("outputs", []):
            scrap = (output.get("metadata") or {}).get("scrapbook")
            if scrap and "name" in scrap:
                names.add(scrap["name"])
    return names


def quoted_keys(path) -> set:
    """Glue keys the chapter at ``path`` quotes anywhere outside its code cells ({glue:text}`key`,
    {glue}`key`), including inside notes and other directives: the page needs each of them glued."""
    from pathlib import Path

    text = Path(path).read_text()
    text = re.sub(r"```\{code-cell\}.*?```", " ", text, flags=re.S)
    return set(_GLUE_REF.findall(text))


def meanings(path) -> dict:
    """Key -> a one-line meaning of each number the chapter at ``path`` quotes in its prose.

    The meaning is the sentence of the chapter that quotes the key, with the key shown as ``▢``
    and other quoted numbers as ``…``: what the page itself says the number is. Keys the prose
    never quotes get no entry. The first sentence that quotes a key wins.
    """
    from pathlib import Path

    text = Path(path).read_text()
    prose = re.sub(r"```.*?```", " ", text, flags=re.S)  # code cells and directives' bodies are not prose
    prose = re.sub(r"^---.*?---", " ", prose, count=1, flags=re.S)
    out = {}
    for para in re.split(r"\n\s*\n", prose):
        flat = " ".join(para.split())
        for sentence in re.split(r"(?<=[.;:!?])\s+(?=[A-Z({])", flat):
            keys = _GLUE_REF.findall(sentence)
            for key in keys:
                if key in out:
                    continue
                line = _GLUE_REF.sub(lambda m: "▢" if m.group(1) == key else "…", sentence)
                line = _ROLE.sub(lambda m: m.group(1), line).replace("$", "").replace("**", "")
                line = line.lstrip("-* ").strip()
                if len(line) > 110:  # keep the part around the number
                    at = line.index("▢") if "▢" in line else 0
                    lo = max(0, min(at - 55, len(line) - 110))
                    line = ("…" if lo else "") + line[lo:lo + 110].strip() + ("…" if lo + 110 < len(line) else "")
                out[key] = line
    return out

"""One recorded run of a chapter: the executed notebook next to a JSON report.

:func:`execute` runs a chapter with papermill (through :func:`ttbook.chapters.execute`) and
returns a *record*: the chapter and the hash of its source, the overrides and the full set of
parameters used, the status (``ok``/``failed``), the error and traceback of a failed run, the
results the chapter glued (:mod:`ttbook.results`), and the time it took. :func:`write_report`
stores a record as ``OUT.json`` next to ``OUT.ipynb``. Used by ``python -m ttbook run`` and by
:mod:`ttbook.sweeps` (one record per point of a sweep).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import re
import time
import traceback as _traceback
from pathlib import Path

from . import __version__, chapters, parameters as _parameters, results as _results

__all__ = ["execute", "write_report", "read_report", "report_path", "source_hash", "default_output", "run_key"]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def source_hash(name) -> str:
    """sha256 of the chapter's source file (a finished run is stale once this changes)."""
    return hashlib.sha256(chapters.chapter_path(name).read_bytes()).hexdigest()


def run_key(overrides: dict) -> str:
    """A readable, file-system-safe name for a set of overrides, e.g. ``d=4,seed=1``.

    ``defaults`` when there are none; a short hash is appended when the readable form had to
    drop characters or is long, so distinct overrides never share a key.
    """
    if not overrides:
        return "defaults"
    text = ",".join(f"{k}={json.dumps(overrides[k], separators=(',', ':'), sort_keys=True)}"
                    for k in sorted(overrides))
    safe = re.sub(r"[^A-Za-z0-9._=,+-]", "_", text)
    if safe != text or len(safe) > 80:
        safe = safe[:60] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return safe


def default_output(name, overrides: dict, root=".") -> Path:
    """Where ``python -m ttbook run`` keeps a run by default: ``runs/CHAPTER/KEY.ipynb``."""
    stem = chapters.chapter_path(name).stem
    return Path(root) / "runs" / stem / f"{run_key(overrides)}.ipynb"


def report_path(output) -> Path:
    """The report next to an output notebook: ``out.ipynb`` -> ``out.json``."""
    return Path(output).with_suffix(".json")


def _clean(text: str) -> str:
    return _ANSI.sub("", text)


def execute(name, overrides: dict, output, *, progress: bool = False) -> dict:
    """Run chapter ``name`` with the (already checked) ``overrides``; keep the notebook at ``output``.

    Never raises for a failure inside the chapter: the record's ``status`` is ``failed`` and
    ``error`` holds the exception name, message and traceback (plain text).
    """
    path = chapters.chapter_path(name)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    defaults = {p.name: p.default for p in _parameters.describe(path)}
    record = {
        "chapter": path.stem,
        "source": str(path.relative_to(chapters.ROOT)) if path.is_relative_to(chapters.ROOT) else str(path),
        "source_sha256": source_hash(path),
        "overrides": dict(overrides),
        "parameters": {**defaults, **overrides},
        "notebook": str(output),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "ttscale": __version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "pid": os.getpid(),
    }
    t0 = time.perf_counter()
    try:
        nb = chapters.execute(path, dict(overrides), output=output, progress=progress)
    except Exception as exc:  # noqa: BLE001 - every failure becomes part of the record
        record["status"] = "failed"
        tb = getattr(exc, "traceback", None)
        if isinstance(tb, list) and getattr(exc, "ename", None):  # papermill: error inside a cell
            record["error"] = {"ename": exc.ename, "evalue": _clean(str(exc.evalue)),
                               "cell": getattr(exc, "exec_count", None),
                               "traceback": _clean("\n".join(tb))}
        else:
            record["error"] = {"ename": type(exc).__name__, "evalue": _clean(str(exc)), "cell": None,
                               "traceback": _clean(_traceback.format_exc())}
        record["results"] = {}
    else:
        record["status"] = "ok"
        record["error"] = None
        record["results"] = _results.glued(nb)
    record["seconds"] = round(time.perf_counter() - t0, 3)
    return record


def write_report(record: dict, path) -> Path:
    """Write a run's record as JSON at ``path`` atomically (a half-written report never exists)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=False, default=repr) + "\n")
    os.replace(tmp, path)
    return path


def read_report(path) -> dict | None:
    """A report written by :func:`write_report`, or None if absent or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None

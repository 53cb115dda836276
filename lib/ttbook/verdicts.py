"""The book's verdicts: what each chapter finds about each claim, recorded when the chapter runs.

A chapter calls :func:`record` once per claim it tests (a result of the paper, or a result the book
adds). The record is glued (myst-nb) under the key ``verdict_<id>``, so it travels with the executed
notebook like every other number of the page: ``python -m ttbook run`` prints it, sweeps tabulate
it, and the results page of the book (:mod:`ttbook.sphinx_results`) gathers every chapter's records
into one table when the book is built. Nothing on that page is typed by hand: a chapter run under
other parameters records other verdicts.

A record is JSON with the fields of :data:`FIELDS`. ``status`` is one of :data:`STATUSES`;
``claim`` and ``finding`` are short sentences that may hold inline maths in ``$…$``; ``target`` is
the label of the figure or section that shows the evidence (``fig-…`` or ``sec-…``).
"""

from __future__ import annotations

import ast
import json

__all__ = ["STATUSES", "FIELDS", "PREFIX", "record", "parse", "collect"]

#: what a verdict can say, in the order the results page counts them: a claim of the paper is
#: reproduced or not; a result the book adds holds or not in this run
STATUSES = ("reproduced", "partly reproduced", "not reproduced", "holds", "holds in part", "does not hold",
            "not checked in this run")
#: the fields of a record
FIELDS = ("claim", "source", "status", "finding", "target")
#: glue keys of verdicts start with this
PREFIX = "verdict_"


def _check(value, name):
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value.strip()


def record(key: str, *, claim: str, source: str, status: str, finding: str, target: str, glue=None) -> dict:
    """Record the chapter's verdict on one claim; returns the record.

    ``key`` names the claim (letters, digits and underscores); ``source`` says where the claim comes
    from ("the paper, Theorem 3.1", or "beyond the paper"); ``status`` is one of :data:`STATUSES`;
    ``finding`` is the sentence that says what this run found, with its key numbers; ``target`` the
    label of the figure or section with the evidence. The record is glued as ``verdict_<key>``
    (``glue`` defaults to :func:`myst_nb.glue`; tests pass their own).
    """
    if not isinstance(key, str) or not key or not key.replace("_", "").isalnum() or not key.isascii():
        raise ValueError(f"key must be letters, digits and underscores, got {key!r}")
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(map(repr, STATUSES))}, got {status!r}")
    rec = {"claim": _check(claim, "claim"), "source": _check(source, "source"), "status": status,
           "finding": _check(finding, "finding"), "target": _check(target, "target")}
    if not (rec["target"].startswith("fig-") or rec["target"].startswith("sec-")):
        raise ValueError(f"target must be a figure or section label (fig-… or sec-…), got {target!r}")
    if glue is None:
        from myst_nb import glue
    glue(PREFIX + key, json.dumps(rec, ensure_ascii=False), display=False)
    return rec


def parse(plain: str) -> dict:
    """The record in a glued ``text/plain`` value (the repr of the JSON string :func:`record` glued)."""
    try:
        text = ast.literal_eval(plain) if plain[:1] in "'\"" else plain
        rec = json.loads(text)
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"not a verdict record: {plain[:80]!r}") from exc
    if not isinstance(rec, dict) or set(rec) != set(FIELDS) or rec["status"] not in STATUSES:
        raise ValueError(f"not a verdict record: {plain[:80]!r}")
    return rec


def collect(glue_data: dict) -> dict:
    """Key -> record of every verdict in one document's glue data (myst-nb's ``*.glue.json``:
    key -> output with ``data["text/plain"]``), in the order the chapter recorded them."""
    out = {}
    for key, output in glue_data.items():
        if not key.startswith(PREFIX):
            continue
        plain = (output.get("data") or {}).get("text/plain")
        if isinstance(plain, list):
            plain = "".join(plain)
        if plain is not None:
            out[key[len(PREFIX):]] = parse(plain)
    return out

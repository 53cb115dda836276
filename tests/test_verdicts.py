"""Verdict records (ttbook.verdicts) and the results page that gathers them (ttbook.sphinx_results)."""

import json

import pytest

from ttbook import verdicts
from ttbook.sphinx_results import inline_with_math, summary_sentence


def _glued():
    store = {}

    def glue(name, value, display=True):
        assert display is False
        store[name] = {"data": {"text/plain": repr(value)}}   # what myst-nb writes: the repr of the value
    return store, glue


GOOD = dict(claim="Error falls like $\\rho^{2k}$", source="the paper, Theorem 1", status="reproduced",
            finding="within 1.2 standard errors", target="fig-x")


def test_record_round_trips_through_the_glue_cache():
    store, glue = _glued()
    rec = verdicts.record("a_b1", glue=glue, **GOOD)
    verdicts.record("second", glue=glue, **{**GOOD, "status": "does not hold", "target": "sec-y"})
    store["other_number"] = {"data": {"text/plain": "0.5"}}
    got = verdicts.collect(json.loads(json.dumps(store)))
    assert list(got) == ["a_b1", "second"] and got["a_b1"] == rec == {**GOOD}
    assert got["second"]["status"] == "does not hold"


@pytest.mark.parametrize("change, message", [
    ({"status": "confirmed"}, "status must be one of"),
    ({"claim": " "}, "claim must be a non-empty string"),
    ({"target": "eq-1"}, "target must be a figure or section label"),
    ({"finding": None}, "finding must be a non-empty string"),
])
def test_bad_records_are_refused(change, message):
    _, glue = _glued()
    with pytest.raises(ValueError, match=message):
        verdicts.record("k", glue=glue, **{**GOOD, **change})


def test_bad_key_and_garbage_are_refused():
    _, glue = _glued()
    with pytest.raises(ValueError, match="key must be letters"):
        verdicts.record("has space", glue=glue, **GOOD)
    with pytest.raises(ValueError, match="not a verdict record"):
        verdicts.parse("'{\"claim\": 1}'")
    with pytest.raises(ValueError, match="not a verdict record"):
        verdicts.parse("<Figure size 640x480>")


def test_inline_maths_and_summary():
    nodes = inline_with_math("rate $\\rho^k$ and $n > d$.")
    assert [type(n).__name__ for n in nodes] == ["Text", "math", "Text", "math", "Text"]
    assert nodes[1].astext() == "\\rho^k"
    assert [type(n).__name__ for n in inline_with_math("costs $5")] == ["Text"]
    recs = [{"status": "reproduced"}, {"status": "reproduced"}, {"status": "holds in part"}]
    assert summary_sentence(recs, 2) == "3 verdicts from 2 chapters: 2 reproduced, 1 holds in part."

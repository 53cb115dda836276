"""Every chapter under parameters drawn at random from its declared domains.

The book promises that a page is right about its own numbers whatever the parameters. This runs
each chapter with a set of overrides drawn by :func:`ttbook.parameters.sample` (seeded; small sizes)
and checks that the run completes (so every assertion of the chapter held), and that no glued
number is NaN or infinite unless the chapter's front matter lists it under ``nonfinite:`` with the
reason the page gives, and that every key the page quotes was glued in this run (a key glued only
under some parameters leaves a hole in the rendered page). ``TTBOOK_RANDOM_RUNS=N`` draws N sets per chapter instead of one, and
``TTBOOK_RANDOM_SEED`` moves the draws.
"""

import math
import os

import pytest

from ttbook import chapters, parameters
from ttbook.results import glued, glued_names, quoted_keys

pytestmark = pytest.mark.slow

RUNS = int(os.environ.get("TTBOOK_RANDOM_RUNS", "1"))
SEED = int(os.environ.get("TTBOOK_RANDOM_SEED", "20261201"))
#: knobs a CPU-only test must not draw (a GPU that is not there, a cache it must not share)
KEEP = {"gpt2": ("device", "scale", "cache", "cache_dir"),
        "task_selection": ("task_names", "task_alphas", "task_n")}   # the paper's four types, one entry each


def _cases():
    return [(name, SEED + i) for name in chapters.chapters() for i in range(RUNS)]


@pytest.mark.parametrize("name, seed", _cases(), ids=lambda v: str(v))
def test_chapter_holds_under_random_parameters(name, seed, tmp_path):
    overrides = parameters.sample(name, seed, keep=KEEP.get(name, ()))
    if name == "gpt2":
        overrides["cache_dir"] = str(tmp_path)
    nb = chapters.execute(name, overrides, output=tmp_path / f"{name}.ipynb")
    allowed = set(chapters.front_matter(chapters.chapter_path(name)).get("nonfinite", {}) or {})
    bad = {k: v for k, v in glued(nb).items()
           if isinstance(v, float) and not math.isfinite(v) and k not in allowed}
    assert not bad, f"{name} with {overrides}: non-finite glued numbers without an explanation: {bad}"
    missing = quoted_keys(chapters.chapter_path(name)) - glued_names(nb)
    assert not missing, f"{name} with {overrides}: the page quotes keys this run never glued: {sorted(missing)}"

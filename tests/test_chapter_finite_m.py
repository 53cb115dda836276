"""The finite-m chapter: smoke run with finite results, and bad parameters stop it at the top."""

import math

import papermill
import pytest

from ttbook import chapters
from ttbook.results import glued

pytestmark = pytest.mark.slow


def test_finite_m_chapter_runs_with_smoke_parameters():
    nb = chapters.execute("finite_m", smoke=True)
    values = glued(nb)
    assert values["fm_worst_z"] < 5
    assert values["fm_n_points"] > 0
    numbers = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert all(math.isfinite(v) for v in numbers.values()), [k for k, v in numbers.items() if not math.isfinite(v)]


def test_finite_m_chapter_under_other_parameters():
    # small d, test prompts shorter than d, one training length, a short chain
    nb = chapters.execute("finite_m", {"d": 4, "n_train": [3], "m_test": 3, "m_grid": [2, 6], "m_noise": 9,
                                       "k_max": 5, "k_long": 12, "seed": 3}, smoke=True)
    assert glued(nb)["fm_worst_z"] < 5


@pytest.mark.parametrize(
    "params, message",
    [
        ({"k_long": 61}, "k_long must be <= 60"),
        ({"k_max": 30, "k_long": 20}, "k_max must be <= k_long"),
        ({"m_grid": []}, "m_grid must not be empty"),
        ({"noise_grid": [-1.0]}, "noise_grid must be a non-empty list of values >= 0"),
        ({"m_test": 0}, "m_test must be an integer >= 1"),
    ],
)
def test_bad_parameter_stops_the_chapter(params, message):
    with pytest.raises(papermill.PapermillExecutionError, match=message) as info:
        chapters.execute("finite_m", params, smoke=True)
    assert info.value.exec_count <= 4  # imports, parameters, injected parameters, checks

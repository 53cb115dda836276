"""The finite-m chapter: smoke run with finite results, and bad parameters stop it at the top."""

import math

import pytest

from ttbook import chapters, parameters
from ttbook.results import glued

pytestmark = pytest.mark.slow


def test_finite_m_chapter_runs_with_smoke_parameters():
    nb = chapters.execute("finite_m", smoke=True)
    values = glued(nb)
    assert values["fm_worst_z"] < 5
    assert values["fm_n_points"] > 0
    text = values["fm_sizing"]  # the sample size is measured against the finite-m effect
    assert "prompts per setting" in text
    need = int(text.split("about ")[1].split(" prompts")[0])
    assert ("enough" in text) == (need <= values["fm_nprompts"])
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
        ({"k_long": 61}, "parameter 'k_long' must be an int in [1, 60], got 61"),
        ({"k_max": 30, "k_long": 20}, "k_max must be ≤ k_long"),
        ({"m_grid": []}, "parameter 'm_grid' must be a non-empty list of int ≥ 1, got []"),
        ({"noise_grid": [-1.0]}, "parameter 'noise_grid' must be a non-empty list of float ≥ 0"),
        ({"m_test": 0}, "parameter 'm_test' must be an int ≥ 1, got 0"),
    ],
)
def test_bad_parameter_stops_the_chapter(params, message):
    with pytest.raises(ValueError) as err:  # decided before a kernel starts (tests/test_domains.py: and in the chapter)
        parameters.resolve("finite_m", params, smoke=True)
    assert message in str(err.value)

"""The hardness chapter: smoke run, and bad parameters stop it with the library's sentence."""

import pytest

from ttbook import chapters, parameters


def test_smoke_parameters_are_real_parameters():
    defaults = chapters.default_parameters("hardness")
    assert set(chapters.smoke_parameters("hardness")) <= set(defaults)


@pytest.mark.slow
def test_hardness_chapter_runs_with_smoke_parameters():
    nb = chapters.execute("hardness", smoke=True)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "singular" in text  # the singular covariance is reported, not turned into inf


@pytest.mark.slow
@pytest.mark.parametrize(
    "params, message",
    [
        ({"m_test": 0}, "parameter 'm_test' must be an int ≥ 1, got 0"),
        ({"hard_over_d": [0.5, 2.0]}, "parameter 'hard_over_d' must be a non-empty list of float ≥ 1"),
        ({"equal_r": [20]}, "every equal_r must be < d"),
        ({"target": 0.0}, "parameter 'target' must be a float > 0, got 0.0"),
        ({"ref_draws": 1}, "parameter 'ref_draws' must be an int ≥ 2, got 1"),
    ],
)
def test_bad_parameter_stops_the_chapter(params, message):
    with pytest.raises(ValueError) as err:  # decided before a kernel starts (tests/test_domains.py: and in the chapter)
        parameters.resolve("hardness", params, smoke=True)
    assert message in str(err.value)

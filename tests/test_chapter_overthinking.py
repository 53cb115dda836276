"""The overthinking chapter runs with its smoke parameters, reproduces the brief's numbers,
and stops at its validation cell with the library's sentence on a bad parameter."""

import pytest

from ttbook import chapters
from ttbook.results import glued

papermill = pytest.importorskip("papermill")


def test_smoke_parameters_are_real_parameters():
    assert set(chapters.smoke_parameters("overthinking")) <= set(chapters.default_parameters("overthinking"))


@pytest.mark.slow
def test_smoke_run_reproduces_the_brief():
    nb = chapters.execute("overthinking", smoke=True)
    g = glued(nb)
    for key, value in {"ot_missing_n10_k1": 6.24, "ot_missing_n10_k3": 0.82,
                       "ot_missing_n40_k2": 38.68, "ot_missing_n40_k3": 107.18,
                       "ot_skew100_min": 4.65, "ot_skew100_k20": 24.06}.items():
        assert float(g[key]) == pytest.approx(value, abs=0.005), key
    assert int(g["ot_missing_threshold"]) == 30
    assert int(g["ot_nstar_trace"]) == 92 and int(g["ot_nstar_max"]) == 9
    assert int(g["ot_short_bestk_n200"]) <= 3 < int(g["ot_short_bestk_n20"])
    assert float(g["ot_phase_agree"]) > 80


@pytest.mark.slow
@pytest.mark.parametrize("params, message", [
    ({"m_test": 0}, "m_test must be an integer >= 1"),
    ({"r": 20}, "r (missing skills) must be < d = 20"),
    ({"normalisations": ["sum"]}, "normalise must be one of"),
    ({"k_search": 5}, "k_search must be >= k_max"),
])
def test_bad_parameter_stops_with_library_message(params, message):
    with pytest.raises(papermill.PapermillExecutionError) as err:
        chapters.execute("overthinking", params, smoke=True)
    assert message in str(err.value)
    assert err.value.exec_count <= 3  # stopped in the validation cell, before any simulation

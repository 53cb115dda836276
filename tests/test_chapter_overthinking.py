"""The overthinking chapter runs with its smoke parameters, reproduces the reference values
(ttscale.reference) at their setting, and stops at its validation cell with the library's
sentence on a bad parameter."""

import pytest

from ttbook import chapters, parameters
from ttbook.results import glued
from ttscale import reference



def test_smoke_parameters_are_real_parameters():
    assert set(chapters.smoke_parameters("overthinking")) <= set(chapters.default_parameters("overthinking"))


@pytest.mark.slow
def test_smoke_run_reproduces_the_reference_values():
    nb = chapters.execute("overthinking", smoke=True)
    g = glued(nb)
    missing = reference.MISSING_SKILLS.value          # the smoke run is at its setting, d = 20, r = 5
    for n in (10, 40):
        for k, value in enumerate(missing["errors"][n]):
            assert float(g[f"ot_missing_n{n}_k{k}"]) == pytest.approx(value, abs=0.005), (n, k)
    assert int(g["ot_missing_threshold"]) == missing["last_stable_n"]
    u = reference.SKEWED_U_SHAPE.value                 # and at this one, d = 20, alpha = 1
    assert f"the minimum {u['min_error']:.3g} is reached at k = {u['best_k']}" in g["ot_skew_check"]
    assert f"back to {u['error_at_20']:.4g}" in g["ot_skew_check"]
    # n* = floor((lam_d + tr Lam) / (1/2 - lam_d)) + 1 for lam_i proportional to 1/i, by hand
    assert "overthinks is n = 92 " in g["ot_nstar_trace"] and "overthinks is n = 9 " in g["ot_nstar_max"]
    assert int(g["ot_short_bestk_n200"]) <= 3 < int(g["ot_short_bestk_n20"])
    assert float(g["ot_phase_agree"]) > 80
    # the diagnostic: right verdict on every task, and per-prompt stopping beats the best fixed k
    assert int(g["ot_diag_verdicts"]) == int(g["ot_diag_tasks"]) == 4
    assert float(g["ot_diag_short_adaptive"]) < float(g["ot_diag_short_fixed"])
    # the diagnostic's sample sizes: the glued wording follows the computed need
    for key, need, n in (("ot_size_heldout", "ot_held_need", "heldout_prompts"),
                         ("ot_size_draws", "ot_draws_need", "diag_draws")):
        size = chapters.smoke_parameters("overthinking").get(
            n, chapters.default_parameters("overthinking")[n])
        assert g[key].startswith(f"With {size} ")
        assert ("fewer than needed" in g[key]) == (int(g[need]) > size), g[key]


@pytest.mark.slow
@pytest.mark.parametrize("params, message", [
    ({"m_test": 0}, "parameter 'm_test' must be an int ≥ 1, got 0"),
    ({"r": 20}, "r (missing skills) must be < d (got r = 20, d = 20)"),
    ({"n_train_missing": []}, "parameter 'n_train_missing' must be a non-empty list"),
    ({"k_search": 5}, "k_search must be ≥ k_max"),
])
def test_bad_parameter_stops_with_library_message(params, message):
    with pytest.raises(ValueError) as err:  # decided before a kernel starts (tests/test_domains.py: and in the chapter)
        parameters.resolve("overthinking", params, smoke=True)
    assert message in str(err.value)

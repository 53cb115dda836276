"""The pseudo-Newton chapter runs with its smoke parameters, and stops early on bad ones."""

import pytest

from ttbook import chapters, parameters
from ttbook.results import glued as _glued

pytestmark = pytest.mark.slow


def test_smoke_run_checks_theory():
    nb = chapters.execute("pseudo_newton", smoke=True)
    glued = _glued(nb)
    assert float(glued["pn_worst_z"]) < 5
    assert float(glued["pn_rollout_gap"]) < 1e-9
    assert "n* = 73 training examples with k = 1 step" in glued["pn_frontier_theory"]   # by hand from eq. pn-population
    assert "k = 1, 2, 3, 5 the target is out of reach" in glued["pn_frontier_sim"]       # m = 40: the 1/m floor
    assert glued["pn_train_verdict"] == "below" and glued["pn_mp_side"] == "above"  # smoke: m = 40 < 5.83 d
    # the Monte Carlo sizes are measured, and the verdict on them follows the numbers
    assert int(glued["pn_front_unsettled"]) >= 0
    for key, size in [("pn_roll_sizing", "pn_nrollout"), ("pn_front_sizing", "pn_nfront")]:
        text = glued[key]
        if " prompts would " in text:
            need = int(text.split("about ")[1].split(" prompts")[0])
            have = int(text.split("this run's ")[1].split(" are")[0])
            assert ("enough" in text) == (need <= have) and ("too few" in text) == (need > have)
            assert have == int(glued[size])


@pytest.mark.parametrize("params,msg", [
    ({"m_test": 0}, "parameter 'm_test' must be an int ≥ 1, got 0"),
    ({"alpha": -1.0}, "parameter 'alpha' must be a float ≥ 0, got -1.0"),
    ({"covariance": "cauchy"}, "parameter 'covariance' must be one of"),
    ({"lr_schedule": [0.01, 0.0]}, "parameter 'lr_schedule' must be a non-empty list of float > 0"),
])
def test_bad_parameter_stops_at_the_top(params, msg):
    with pytest.raises(ValueError) as err:  # decided before a kernel starts (tests/test_domains.py: and in the chapter)
        parameters.resolve("pseudo_newton", params, smoke=True)
    assert msg in str(err.value)

"""The long-chains chapter runs with its smoke parameters, reproduces what its exact theory fixes
(the one-step optimum is Γ⁻¹, the k-step optimum is more cautious and keeps improving on prompts of
the training length, iterative Newton squares its residual), and refuses bad parameters with the
library's sentence."""

import pytest

from ttbook import chapters, parameters
from ttbook.results import glued


def test_smoke_parameters_are_real_parameters():
    assert set(chapters.smoke_parameters("long_chains")) <= set(chapters.default_parameters("long_chains"))


@pytest.mark.slow
def test_smoke_run_reproduces_the_exact_results():
    g = glued(chapters.execute("long_chains", smoke=True))
    assert float(g["lc_mc_z"]) < 5
    assert g["lc_shrinks"] == "falls with every longer chain" and g["lc_opt_mono"] == "falls"
    # d = 20, n = 10, k = 10: Γ⁻¹'s mean error diverges on prompts of the training length, P_k*'s does not
    assert float(g["lc_gamma_err_last"]) == pytest.approx(81.0026, rel=1e-4)
    assert float(g["lc_opt_err_last"]) == pytest.approx(10.3975, rel=1e-4)
    assert float(g["lc_saa_excess"]) < 0.05
    assert g["lc_ols_sentence"].startswith("Exact Newton (least squares) is exact to rounding")
    assert g["lc_ns_cross"].startswith("from step")            # Newton–Schulz passes the linear chain
    assert float(g["lc_poly_err"]) <= float(g["lc_pL_err"]) <= float(g["lc_gammaL_err"])
    # the held-out value of the sample-average optimum agrees with its exact error
    assert float(g["lc_fresh_z"]) < 5
    # beyond the exact reach: where a standard error passes its checks, the exact values agree
    assert g["lc_long_trusted"] in ("both cases", "the skewed case only", "the weak skills case only", "neither case")
    for key in ("skew", "weak"):
        if g[f"lc_{key}_long_exact_trust"] == "passes its checks":
            assert float(g[f"lc_{key}_long_exact_z"]) < 5
        if g[f"lc_{key}_iso_trust"] == "passes its checks":
            assert float(g[f"lc_{key}_iso_z"]) < 5
        assert 0 <= float(g[f"lc_{key}_iso_excess"]) < 0.1       # the exact price of the sample, ≥ 0
        assert g[f"lc_{key}_long_trust"].startswith(("passes all three checks", "fails"))
    # the ablation glues a computed verdict, one of the sentences the chapter can give
    assert g["lc_abl_verdict"].startswith(("Without them", "The intact model", "With k = 1"))
    assert float(g["lc_abl_diff_se"]) > 0


@pytest.mark.slow
@pytest.mark.parametrize("params, message", [
    ({"d": 1}, "parameter 'd' must be an int ≥ 2, got 1"),
    ({"k_train": [3, 2]}, "k_train must be increasing"),
    ({"saa_k": 4}, "parameter 'saa_k' must be an int in [1, 3]"),
    ({"chain_losses": ["last", "last"]}, "no repeated chain_losses"),
    ({"chain_steps": [10]}, "chain_steps must match chain_lr"),
    ({"tail_k": 3}, "parameter 'tail_k' must be an int in [4, 10]"),
    ({"saa_k_long": 3}, "parameter 'saa_k_long' must be an int in [4, 16]"),
    ({"long_reps": 1}, "parameter 'long_reps' must be an int in [2, 100]"),
])
def test_bad_parameter_stops_with_library_message(params, message):
    with pytest.raises(ValueError) as err:
        parameters.resolve("long_chains", params, smoke=True)
    assert message in str(err.value)

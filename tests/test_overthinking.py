"""Unit tests for ttscale.overthinking (divergence edges, finite-m errors, the diagnostic)."""

import numpy as np
import pytest
import torch

from ttscale import covariances as cv
from ttscale import estimators, lsa, overthinking as ot, prompts, theory

D = 20
I = np.eye(D)


def test_mp_lambda_max_and_edge_are_inverse():
    n = np.array([5, 20, 200, 5000])
    ratio = ot.mp_edge_ratio(n, D)
    assert np.allclose(ot.mp_lambda_max(n, D, ratio * D), 2.0, rtol=1e-12)
    # paper.md: d = 20, m = 40 -> n = 20 converges, n = 200 diverges
    assert ot.mp_lambda_max(20, D, 40) < 2 < ot.mp_lambda_max(200, D, 40)
    assert ot.mp_edge_ratio(1e12, D) == pytest.approx(1 / (np.sqrt(2) - 1) ** 2, rel=1e-6)
    assert isinstance(ot.mp_edge_ratio(20, D), float)


@pytest.mark.parametrize("bad", [0, -3.0, np.nan])
def test_mp_rejects_bad_lengths(bad):
    with pytest.raises(ValueError, match="n_train must be > 0"):
        ot.mp_edge_ratio(bad, D)
    with pytest.raises(ValueError, match="m_test must be > 0"):
        ot.mp_lambda_max(10, D, bad)
    with pytest.raises(ValueError, match="d must be an integer >= 1"):
        ot.mp_edge_ratio(10, 0)


def test_critical_n_train_matches_closed_forms():
    # missing skills: mu = n / (d - r) on the missing directions, overthinking iff n > 2(d - r)
    assert ot.critical_n_train(cv.missing_skills(D, 5), I) == 31
    # diagonal skewed: mu_max = 1 / ((1 + 1/n) lam_d + T/n) > 2 iff n > (lam_d + T) / (1/2 - lam_d)
    for norm in ("trace", "max"):
        lam = cv.power_law_spectrum(D, 1.0, norm)
        n_star = (lam[-1] + lam.sum()) / (0.5 - lam[-1])
        assert ot.critical_n_train(np.diag(lam), I) == int(np.floor(n_star)) + 1
    # in distribution the chain never diverges
    assert np.isnan(ot.critical_n_train(cv.power_law(D, 1.0), n_max=10_000))
    with pytest.raises(ValueError, match="n_max must be an integer >= 1"):
        ot.critical_n_train(I, I, n_max=0)


def test_best_k_ignores_overflow():
    e = np.array([[20.0, 5.0, 3.0, np.inf, np.nan], [20.0, 30.0, 1.0, 0.5, np.nan]])
    assert list(ot.best_k(e)) == [2, 3]
    with pytest.raises(ValueError, match="at least one entry"):
        ot.best_k(np.empty((3, 0)))



def test_spectral_radius_is_divergence_test():
    P = np.eye(3)
    S = np.stack([np.diag([0.5, 1.0, 1.9]), np.diag([0.5, 1.0, 2.5])])
    assert np.allclose(ot.spectral_radius(P, S), [0.9, 1.5])
    with pytest.raises(ValueError, match="P must be"):
        ot.spectral_radius(np.eye(2), S)


def test_population_prompts_have_exact_covariance():
    Sigma = cv.power_law(D, 0.8, rotate=True, seed=1)
    b = ot.population_prompts(Sigma, 2 * D, 7, seed=2)
    assert b.X.shape == (7, D, 2 * D)
    assert torch.allclose(prompts.sample_covariance(b.X), torch.as_tensor(Sigma).expand(7, D, D), atol=1e-12)
    assert torch.allclose(b.y, torch.einsum("bdn,bd->bn", b.X, b.w))
    with pytest.raises(ValueError, match="m must be >= d"):
        ot.population_prompts(Sigma, D - 1, 3)


def test_rollout_errors_match_recursion_and_conditional_mean():
    Lam = cv.missing_skills(D, 5)
    model = lsa.closed_form(Lam, 40)
    b = prompts.sample(I, 60, 50, seed=0, stream="test")
    got = ot.rollout_errors(model, b, 3)
    W = estimators.pseudo_newton(b.X, b.y, Lam, 40, 3)
    assert np.allclose(got, ((W - b.w[:, None]) ** 2).sum(2).numpy(), rtol=1e-10)
    # population prompts: mean over w of the rollout error estimates the theory (5 standard errors)
    pp = ot.population_prompts(I, 2 * D, 4000, seed=1)
    e = ot.rollout_errors(model, pp, 2)
    th = theory.cot_error(Lam, 40, np.arange(3), Sigma=I)
    assert np.all(np.abs(e.mean(0) - th) <= 5 * e.std(0) / np.sqrt(e.shape[0]) + 1e-9)


def test_finite_m_errors_k1_matches_exact_formula():
    Lam = cv.missing_skills(D, 5)
    r = ot.finite_m_errors(Lam, 40, 100, np.arange(3), Sigma=I, batch=3000, seed=4)
    assert r.errors.shape == (3000, 3) and r.radius.shape == (3000,)
    se = r.errors[:, 1].std() / np.sqrt(3000)
    assert abs(r.errors[:, 1].mean() - theory.one_step_error(Lam, 40, 100, Sigma=I)) < 5 * se
    assert np.all(r.errors[:, 0] == D)
    with pytest.raises(ValueError, match="m_test must be an integer >= 1"):
        ot.finite_m_errors(Lam, 40, 0, 1)


def test_isotropic_phase_diagram_against_one_step_theory_and_mp():
    n = [10, 500]
    m = [20, 400]
    pd = ot.isotropic_phase_diagram(D, n, m, 1, batch=2000, seed=0)
    for i, ni in enumerate(n):
        for j, mj in enumerate(m):
            exact = theory.one_step_error(I, ni, mj)
            assert abs(pd.mean_error[i, j] - exact) < 5 * pd.stderr[i, j]
    # far inside each phase the fraction is 0 or 1
    pd2 = ot.isotropic_phase_diagram(D, [10, 1000], [10, 1000], 0, batch=200)
    assert pd2.frac_diverging[0, 1] == 0 and pd2.frac_diverging[1, 0] == 1
    assert np.all(pd2.mean_error == D)
    with pytest.raises(ValueError, match="n_train must be an integer >= 1"):
        ot.isotropic_phase_diagram(D, [10.5], [20], 1)
    with pytest.raises(ValueError, match="batch must be an integer >= 1"):
        ot.isotropic_phase_diagram(D, [10], [20], 1, batch=0)


def test_diagnose_predicts_population_curve_and_validates():
    Lam = cv.missing_skills(D, 5)
    P = np.linalg.inv(theory.gamma(Lam, 40))
    X = ot.population_prompts(I, 2 * D, 4, seed=0).X
    dg = ot.diagnose(P, X, 6)
    th = theory.cot_error(Lam, 40, np.arange(7), Sigma=I)
    assert np.allclose(dg.predicted, th, rtol=1e-10)
    assert dg.best_k == int(np.argmin(th)) == 1 and not dg.helps and dg.frac_diverging == 1.0
    assert list(dg.per_prompt_best_k) == [1] * 4
    P10 = np.linalg.inv(theory.gamma(Lam, 10))
    dg10 = ot.diagnose(P10, X, 6)
    assert dg10.helps and dg10.best_k == 6 and dg10.frac_diverging == 0.0
    with pytest.raises(ValueError, match="k_max must be an integer >= 1"):
        ot.diagnose(P, X, 0)
    with pytest.raises(ValueError, match="P must be"):
        ot.diagnose(np.eye(3), X, 2)
    with pytest.raises(ValueError, match="X must have shape"):
        ot.diagnose(P, X[0], 2)


def test_self_labelled_errors_estimate_the_conditional_errors():
    Lam = cv.power_law(D, 1.0)
    model = lsa.closed_form(Lam, 100)
    X = prompts.sample(I, 60, 5, seed=3, stream="eval").X
    e = ot.self_labelled_errors(model, X, 4, draws=3000, seed=1)
    assert e.shape == (15000, 5)
    P = lsa.applied_map(model)
    expected = theory.map_error(P, prompts.sample_covariance(X), np.arange(5)).mean(0)
    se = e.std(0, ddof=1) / np.sqrt(e.shape[0])
    assert np.all(np.abs(e.mean(0) - expected) <= 5 * se + 1e-12)
    with pytest.raises(ValueError, match="draws must be an integer >= 1"):
        ot.self_labelled_errors(model, X, 4, draws=0)
    with pytest.raises(ValueError, match="X must have shape"):
        ot.self_labelled_errors(model, X[:, :3], 4)


def test_test_diagnostic_in_and_out_of_distribution():
    Lam = cv.power_law(D, 1.0)
    model = lsa.closed_form(Lam, 100)
    res = ot.test_diagnostic(model, Lam, 400, 6, sample=8, heldout=100, draws=2, seed=0)
    assert res.row["predicted helps"] and res.row["actually helps"] and res.row["predicted best k"] == 6
    assert res.heldout.shape == res.self_labelled.shape == (7,)
    # isotropic test with mu_max > 2: prediction and held-out agree that the best k is small
    iso = ot.test_diagnostic(model, I, 400, 20, sample=16, heldout=200, seed=1)
    assert not iso.row["predicted helps"] and not iso.row["actually helps"]
    assert abs(iso.row["predicted best k"] - iso.row["actual best k"]) <= 2
    assert iso.per_prompt <= iso.row[f"error at k = 20"]
    import matplotlib

    matplotlib.use("Agg")
    fig = ot.diagnostic_figure({"in": res, "iso": iso, "again": iso}, D)
    assert len([a for a in fig.axes if a.get_visible()]) == 3
    assert np.allclose(fig.axes[0].lines[2].get_ydata(), res.heldout)
    with pytest.raises(ValueError, match="results must hold at least one task"):
        ot.diagnostic_figure({}, D)
    with pytest.raises(ValueError, match="sample must be >= 2"):
        ot.test_diagnostic(model, I, 40, 3, sample=1)
    with pytest.raises(ValueError, match="heldout must be an integer >= 1"):
        ot.test_diagnostic(model, I, 40, 3, heldout=0)


def test_phase_figure_draws_edge_over_both_panels():
    import matplotlib

    matplotlib.use("Agg")
    pd = ot.isotropic_phase_diagram(D, [10, 100, 1000], [10, 40, 400], 5, batch=50)
    fig = ot.phase_figure(pd, D)
    a1, a2 = fig.axes[:2]
    for ax in (a1, a2):
        x, y = ax.lines[0].get_data()
        assert np.allclose(y, ot.mp_edge_ratio(x, D))
    with pytest.raises(ValueError, match="d must be an integer >= 1"):
        ot.phase_figure(pd, 0)

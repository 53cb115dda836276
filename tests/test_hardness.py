"""Task hardness at its homes: per-skill hardness, elasticities, steps to a target and effective
hardness (theory), spectra of prescribed hardness (covariances), reading a step count off an error
curve (simulation.first_below), and the finite-m primitives the hardness chapter builds its
simulation from (simulation.cot_errors with average_w=True, simulation.rollout_errors)."""

import numpy as np
import pytest
import torch

from ttscale import covariances as cv
from ttscale import lsa, prompts, reference, simulation, theory


# --------------------------------------------------------------------------- per-skill hardness (theory)
def test_skill_hardness_max_is_hard_and_identity_is_flat():
    Lam = cv.power_law(12, 0.7, rotate=True, seed=2)
    h = theory.skill_hardness(Lam)
    assert np.all(np.diff(h) >= 0)
    assert np.isclose(h[-1], theory.hardness(Lam))
    lam = np.linalg.eigvalsh(Lam)
    assert np.allclose(np.sort(h), np.sort(lam.sum() / lam))
    assert np.allclose(theory.skill_hardness(3.0 * np.eye(5)), 5.0)


def test_singular_covariance_is_a_clear_error_everywhere():
    Lam = cv.missing_skills(10, 2)
    for f in (theory.skill_hardness, theory.hardness_elasticity):
        with pytest.raises(ValueError, match="singular.*infinite"):
            f(Lam)
    with pytest.raises(ValueError, match="singular"):
        theory.effective_hardness(Lam, 10, 1)
    with pytest.raises(ValueError, match="singular"):
        theory.power_mean_hardness(Lam, 1)


def test_elasticity_matches_finite_differences():
    lam = cv.power_law_spectrum(8, 0.9)
    e = theory.hardness_elasticity(np.diag(lam))
    H0 = theory.hardness(np.diag(lam))
    eps = 1e-6
    for i in range(8):
        lam2 = lam.copy()
        lam2[i] *= np.exp(eps)
        fd = (np.log(theory.hardness(np.diag(lam2))) - np.log(H0)) / eps
        assert np.isclose(e[i], fd, atol=1e-5)
    assert np.isclose(e[-1], 1 / H0 - 1)
    assert np.isclose(e.sum(), 0.0)  # scale invariance: all log-eigenvalues up by t leaves Hard fixed


def test_elasticity_refuses_repeated_minimum():
    with pytest.raises(ValueError, match="repeated"):
        theory.hardness_elasticity(np.diag([2.0, 1.0, 1.0]))


# --------------------------------------------------------------------------- spectra of prescribed hardness (covariances)
def test_power_law_alpha_for_hardness_inverts_the_reference_values():
    r = reference.HARDNESS_POWER_LAW
    d = r.setting["d"]
    for alpha, H in r.value.items():  # H to two decimals, so alpha to about 1e-3
        assert abs(cv.power_law_alpha_for_hardness(d, H) - alpha) < 2e-3
    assert cv.power_law_alpha_for_hardness(d, float(d)) == 0.0
    a = cv.power_law_alpha_for_hardness(d, 500.0)
    assert np.isclose(theory.hardness(cv.power_law(d, a)), 500.0)


@pytest.mark.parametrize("kind,r", [("power_law", 1), ("weak_skills", 1), ("weak_skills", 5), ("weak_skills", 9)])
@pytest.mark.parametrize("H", [10.0, 17.5, 80.0])
def test_equal_hardness_spectrum_has_the_prescribed_hardness(kind, r, H):
    lam = cv.equal_hardness_spectrum(10, H, kind, r)
    assert lam.shape == (10,) and np.isclose(lam.sum(), 10)
    assert np.all(np.diff(lam) <= 1e-12)
    assert np.isclose(theory.hardness(np.diag(lam)), H)


def test_weak_skills_spectrum_shape():
    lam = cv.equal_hardness_spectrum(10, 40.0, "weak_skills", r=3)
    assert np.allclose(lam[:7], lam[0]) and np.allclose(lam[7:], lam[-1])
    assert np.isclose(lam[-1] / lam[0], 7 / 37)  # ε = (d - r)/(H - r)


def test_equal_hardness_spectrum_errors():
    with pytest.raises(ValueError, match="H must be >= d"):
        cv.equal_hardness_spectrum(10, 9.0)
    with pytest.raises(ValueError, match="kind must be one of"):
        cv.equal_hardness_spectrum(10, 20.0, "spiky")
    with pytest.raises(ValueError, match="r .weak skills. must be between 1 and d - 1"):
        cv.equal_hardness_spectrum(10, 20.0, "weak_skills", r=10)
    with pytest.raises(ValueError, match="H must be > 0"):
        cv.power_law_alpha_for_hardness(10, -1.0)


def test_weak_skill_spectrum():
    lam = cv.weak_skill_spectrum(10, 3, 0.25)
    assert np.isclose(lam.sum(), 10) and np.isclose(lam[-1] / lam[0], 0.25)
    assert np.isclose(theory.hardness(np.diag(lam)), 7 / 0.25 + 3)
    with pytest.raises(ValueError, match="singular"):
        theory.hardness(np.diag(cv.weak_skill_spectrum(10, 3, 0.0)))
    with pytest.raises(ValueError, match="level must lie in"):
        cv.weak_skill_spectrum(10, 3, 1.5)
    with pytest.raises(ValueError, match="r .weak skills. must be between"):
        cv.weak_skill_spectrum(10, 10, 0.5)
    with pytest.raises(ValueError, match="r must be an integer >= 1"):
        cv.weak_skill_spectrum(10, 0, 0.5)


# --------------------------------------------------------------------------- steps to a target (theory)
def test_steps_to_target_matches_brute_force_and_the_reference_frontier():
    r = reference.ISO_ERROR_FRONTIER  # Λ = I: n* is the smallest n that reaches the target in k steps
    I, target = np.eye(r.setting["d"]), r.setting["target"]
    for k, n_star in r.value.items():
        assert theory.steps_to_target(I, n_star, target) <= k
        assert theory.steps_to_target(I, n_star - 1, target) > k
    assert theory.steps_to_target(I, 24, 1.0) == 2 and theory.steps_to_target(I, 14, 1.0) == 3
    Lam = cv.power_law(15, 1.1, rotate=True, seed=1)
    lam = np.linalg.eigvalsh(Lam)
    T = lam.sum()
    rho = (lam + T) / (21 * lam + T)
    k = 0
    while (rho ** (2 * k)).sum() > 0.3:
        k += 1
    got = theory.steps_to_target(Lam, 20, 0.3)
    assert got == k and isinstance(got, int)
    assert np.isnan(theory.steps_to_target(Lam, 20, 1e-12, k_max=3))
    assert theory.steps_to_target(Lam, 20, 100.0) == 0  # k = 0 already scores d = 15


def test_bound_steps_never_below_exact_and_equal_for_identity():
    for d, n, target in [(20, 20, 1.0), (20, 5, 0.1), (7, 50, 0.5)]:
        assert theory.steps_to_target_bound(d, d, n, target) == theory.steps_to_target(np.eye(d), n, target)
        for H in [d * 1.5, d * 4, d * 20]:
            for kind in cv.KINDS:
                Lam = np.diag(cv.equal_hardness_spectrum(d, H, kind, r=2))
                assert theory.steps_to_target_bound(H, d, n, target) >= theory.steps_to_target(Lam, n, target)
    ks = theory.steps_to_target_bound(np.array([20.0, 40.0, 80.0]), 20, 20, 1.0)
    assert ks.dtype.kind == "i" and np.all(np.diff(ks) >= 0)
    assert theory.steps_to_target_bound(30.0, 20, 20, 25.0) == 0
    with pytest.raises(ValueError, match="H must be >= d"):
        theory.steps_to_target_bound(5.0, 20, 20, 1.0)
    with pytest.raises(ValueError, match="H must be finite"):
        theory.steps_to_target_bound(np.inf, 20, 20, 1.0)
    with pytest.raises(ValueError, match="target must be > 0"):
        theory.steps_to_target_bound(30.0, 20, 20, 0.0)


# --------------------------------------------------------------------------- reading a count off a curve (simulation)
def test_first_below_one_curve():
    got = simulation.first_below([5.0, 2.0, 0.5, 0.1], 1.0)
    assert got == 2 and isinstance(got, int)
    assert simulation.first_below([0.5, 2.0], 1.0) == 0
    assert simulation.first_below([2.0, 1.0], 1.0) == 1  # "<=" target counts
    assert np.isnan(simulation.first_below([5.0, 2.0], 1.0))
    assert simulation.first_below([np.inf, 3.0, 0.2], 1.0) == 2  # a diverged entry is allowed
    with pytest.raises(ValueError, match="NaN"):
        simulation.first_below([1.0, np.nan], 1.0)
    with pytest.raises(ValueError, match="target must be > 0"):
        simulation.first_below([1.0], 0.0)
    with pytest.raises(ValueError, match="at least one entry"):
        simulation.first_below([], 1.0)


def test_first_below_along_an_axis_is_the_curve_by_curve_answer():
    rng = np.random.default_rng(0)
    E = np.cumprod(rng.uniform(0.5, 1.05, size=(4, 3, 12)), axis=-1) * 3.0
    E[1, 2] = 5.0  # a curve that never gets there
    for axis in (-1, 0, 1):
        got = simulation.first_below(E, 1.0, axis=axis)
        moved = np.moveaxis(E, axis, -1)
        assert got.shape == moved.shape[:-1] and got.dtype == np.float64
        for idx in np.ndindex(moved.shape[:-1]):
            one = simulation.first_below(moved[idx], 1.0)
            assert (np.isnan(one) and np.isnan(got[idx])) or got[idx] == one
    assert np.isnan(simulation.first_below(E, 1.0)[1, 2])


# --------------------------------------------------------------------------- effective hardness (theory)
def test_effective_hardness_reproduces_exact_error_and_limits():
    Lam = np.diag(cv.equal_hardness_spectrum(20, 60.0, "weak_skills", r=4))
    ks = np.array([1, 3, 10, 100, 3000])
    He = theory.effective_hardness(Lam, 30, ks)
    err = theory.cot_error(Lam, 30, ks)
    assert np.allclose(20 * (1 + 30 / (1 + He)) ** (-2.0 * ks), err, rtol=1e-8)
    assert np.all(He < 60.0) and np.all(np.diff(He) > 0)
    assert abs(He[-1] - 60.0) < 0.1  # -> Hard as k -> infinity
    assert np.allclose(theory.effective_hardness(np.eye(20), 30, ks), 20.0)
    assert isinstance(theory.effective_hardness(Lam, 30, 2), float)
    with pytest.raises(ValueError, match="k must be >= 1"):
        theory.effective_hardness(Lam, 30, 0)


def test_power_mean_hardness_is_the_long_prompt_limit():
    Lam = cv.power_law(20, 0.8)
    h = theory.skill_hardness(Lam)
    assert np.isclose(theory.power_mean_hardness(Lam, 1), np.sqrt(np.mean((1 + h) ** 2)) - 1)
    for k in [1, 4, 30]:
        assert np.isclose(theory.effective_hardness(Lam, 10**7, k), theory.power_mean_hardness(Lam, k), rtol=1e-4)
    assert abs(theory.power_mean_hardness(Lam, 10**5) - theory.hardness(Lam)) < 1e-3 * theory.hardness(Lam)
    with pytest.raises(ValueError, match="k must be >= 1"):
        theory.power_mean_hardness(Lam, [0, 1])


# --------------------------------------------------------------------------- the chapter's finite-m primitives (simulation)
def test_cot_errors_average_w_is_the_frobenius_norm_of_each_prompts_matrix_power():
    Lam, n, m, k = cv.power_law(6, 0.8, rotate=True, seed=3), 10, 9, 4
    e = simulation.cot_errors(Lam, n, m, k, 40, average_w=True, seed=2, stream="eval", step=5)
    X = prompts.sample(Lam, m, 40, seed=2, stream="eval", step=5).X.numpy()  # the same prompts
    B = np.eye(6) - np.linalg.inv(theory.gamma(Lam, n)) @ (X @ X.transpose(0, 2, 1) / m)
    ref = np.stack([(np.linalg.matrix_power(B, j) ** 2).sum(axis=(1, 2)) for j in range(k + 1)], axis=1)
    assert e.shape == (40, k + 1) and np.allclose(e, ref, rtol=1e-10)
    # m -> infinity: every prompt has the population error exactly
    inf = simulation.cot_errors(Lam, n, None, k, 3, average_w=True)
    assert np.allclose(inf, theory.cot_error(Lam, n, np.arange(k + 1))[None, :], rtol=1e-10)


@pytest.mark.parametrize("m", [5, 40])  # fewer and more examples than dimensions
def test_cot_errors_average_w_mean_is_the_exact_finite_m_error(m):
    Lam = cv.power_law(10, 0.8, rotate=True, seed=0)
    e = simulation.cot_errors(Lam, 15, m, [0, 1, 2], 6000, average_w=True, seed=1, stream="eval")
    mean, se = simulation.mean_se(e)
    assert np.isclose(mean[0], 10.0) and se[0] < 1e-9  # k = 0: ‖I‖²_F = d on every prompt
    exact = theory.finite_m_cot_error(Lam, 15, m, [1, 2])
    assert np.all(np.abs(mean[1:] - exact) < 5 * se[1:])
    assert abs(exact[0] - theory.one_step_error(Lam, 15, m)) < 1e-9 * exact[0]


def test_averaging_over_w_keeps_the_mean_and_lowers_the_variance():
    Lam = cv.power_law(6, 0.6)
    args = (Lam, 10, 12, 3, 4000)
    drawn = simulation.cot_errors(*args, seed=4)                    # w drawn with each prompt
    averaged = simulation.cot_errors(*args, average_w=True, seed=4)  # same features, w averaged out
    (m1, s1), (m2, s2) = simulation.mean_se(drawn), simulation.mean_se(averaged)
    assert np.all(np.abs(m1[1:] - m2[1:]) < 5 * s1[1:])
    assert np.all(s2[1:] < s1[1:])


def test_rollout_errors_are_the_recursion_on_the_same_prompts():
    Lam = cv.power_law(5, 0.7, rotate=True, seed=1)
    test = prompts.sample(Lam, 14, 32, seed=0, stream="test", step=3)
    e = simulation.rollout_errors(lsa.closed_form(Lam, 8), test, 5)
    G_inv = torch.as_tensor(np.linalg.inv(theory.gamma(Lam, 8)))
    rec = simulation.recursion_errors(prompts.sample_covariance(test.X), test.w, G_inv, 5)
    assert e.shape == (32, 6) and np.allclose(e, rec, rtol=1e-9, atol=1e-12)
    assert np.allclose(e[:, 0], (test.w ** 2).sum(1).numpy())  # ŵ_0 = 0
    mean, se = simulation.mean_se(e)
    assert np.allclose(se, e.std(0, ddof=1) / np.sqrt(32))
    with pytest.raises(ValueError, match="at least 2 prompts"):
        simulation.mean_se(e[:1])


def test_rollout_agrees_with_an_independent_finite_m_reference():
    # the hardness chapter's check in miniature: the LSA's own chain on "test" prompts against the
    # w-averaged error on "eval" prompts, and both against the exact finite-m error for k <= 3
    Lam = np.diag(cv.equal_hardness_spectrum(8, 20.0))
    n, m, target = 10, 400, 0.5
    test = prompts.sample(Lam, m, 400, seed=1, stream="test")
    mean, se = simulation.mean_se(simulation.rollout_errors(lsa.closed_form(Lam, n), test, 6))
    ref, ref_se = simulation.mean_se(simulation.cot_errors(Lam, n, m, 6, 2000, average_w=True, seed=1, stream="eval"))
    assert not torch.equal(test.X[:5], prompts.sample(Lam, m, 5, seed=1, stream="eval").X)  # independent samples
    assert np.all(np.abs(mean[1:] - ref[1:]) < 5 * np.hypot(se[1:], ref_se[1:]))
    exact = theory.finite_m_cot_error(Lam, n, m, np.arange(1, theory.GENERAL_K_MAX + 1))
    assert np.all(np.abs(mean[1:4] - exact) < 5 * se[1:4]) and np.all(np.abs(ref[1:4] - exact) < 5 * ref_se[1:4])
    # long test prompts cost at most one step over the m -> infinity count
    k_exact, k_ref = theory.steps_to_target(Lam, n, target), simulation.first_below(ref, target)
    assert k_exact <= k_ref <= k_exact + 1
    assert abs(simulation.first_below(mean, target) - k_ref) <= 1


# ------------------------------------------------- the chapter's reference: Bartlett draws + map_error
@pytest.mark.parametrize("m", [6, 40])
def test_bartlett_reference_mean_is_the_exact_finite_m_error_and_the_feature_draws(m):
    # The hardness chapter's reference draws Ŝ_m from its Wishart law (wishart.sample_covariances)
    # and averages ‖(I − Γ⁻¹Ŝ_m)^k‖_F² (theory.map_error): in mean it must be the exact finite-m
    # error for k <= 3 and agree with the same average over Ŝ_m built from drawn features at a
    # longer k (m = 6 < d goes through the sampler's direct branch).
    from ttscale import wishart

    d, n = 10, 15
    Lam = cv.power_law(d, 0.8, rotate=True, seed=0)
    P = np.linalg.inv(theory.gamma(Lam, n))
    ks = np.array([0, 1, 2, 3, 12])
    bart = theory.map_error(P, wishart.sample_covariances(Lam, m, 6000, seed=2), ks)
    mean, se = simulation.mean_se(bart)
    exact = theory.finite_m_cot_error(Lam, n, m, ks[1:4])
    assert np.all(np.abs(mean[1:4] - exact) < 5 * se[1:4])
    feats = simulation.cot_errors(Lam, n, m, ks, 6000, average_w=True, seed=1, stream="eval")
    f_mean, f_se = simulation.mean_se(feats)
    assert abs(mean[-1] - f_mean[-1]) < 5 * np.hypot(se[-1], f_se[-1])

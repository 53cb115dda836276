import numpy as np
import pytest

from ttscale import covariances as cv
from ttscale import hardness as hd
from ttscale import theory


def test_skill_hardness_max_is_hard_and_identity_is_flat():
    Lam = cv.power_law(12, 0.7, rotate=True, seed=2)
    h = hd.skill_hardness(Lam)
    assert np.all(np.diff(h) >= 0)
    assert np.isclose(h[-1], theory.hardness(Lam))
    lam = np.linalg.eigvalsh(Lam)
    assert np.allclose(np.sort(h), np.sort(lam.sum() / lam))
    assert np.allclose(hd.skill_hardness(3.0 * np.eye(5)), 5.0)


def test_singular_covariance_is_a_clear_error_everywhere():
    Lam = cv.missing_skills(10, 2)
    for f in (hd.skill_hardness, hd.hardness_elasticity):
        with pytest.raises(ValueError, match="singular.*infinite"):
            f(Lam)
    with pytest.raises(ValueError, match="singular"):
        hd.effective_hardness(Lam, 10, 1)
    with pytest.raises(ValueError, match="singular"):
        hd.power_mean_hardness(Lam, 1)


def test_elasticity_matches_finite_differences():
    lam = cv.power_law_spectrum(8, 0.9)
    e = hd.hardness_elasticity(np.diag(lam))
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
        hd.hardness_elasticity(np.diag([2.0, 1.0, 1.0]))


def test_power_law_alpha_for_hardness_inverts_the_brief_values():
    for alpha, H in [(0.2, 24.16), (0.5, 33.97), (0.8, 51.75), (1.0, 71.95)]:
        assert abs(hd.power_law_alpha_for_hardness(20, H) - alpha) < 2e-3
    assert hd.power_law_alpha_for_hardness(20, 20.0) == 0.0
    a = hd.power_law_alpha_for_hardness(20, 500.0)
    assert np.isclose(theory.hardness(cv.power_law(20, a)), 500.0)


@pytest.mark.parametrize("kind,r", [("power_law", 1), ("weak_skills", 1), ("weak_skills", 5), ("weak_skills", 9)])
@pytest.mark.parametrize("H", [10.0, 17.5, 80.0])
def test_equal_hardness_spectrum_has_the_prescribed_hardness(kind, r, H):
    lam = hd.equal_hardness_spectrum(10, H, kind, r)
    assert lam.shape == (10,) and np.isclose(lam.sum(), 10)
    assert np.all(np.diff(lam) <= 1e-12)
    assert np.isclose(theory.hardness(np.diag(lam)), H)


def test_weak_skills_spectrum_shape():
    lam = hd.equal_hardness_spectrum(10, 40.0, "weak_skills", r=3)
    assert np.allclose(lam[:7], lam[0]) and np.allclose(lam[7:], lam[-1])
    assert np.isclose(lam[-1] / lam[0], 7 / 37)  # ε = (d - r)/(H - r)


def test_equal_hardness_spectrum_errors():
    with pytest.raises(ValueError, match="H must be >= d"):
        hd.equal_hardness_spectrum(10, 9.0)
    with pytest.raises(ValueError, match="kind must be one of"):
        hd.equal_hardness_spectrum(10, 20.0, "spiky")
    with pytest.raises(ValueError, match="r .weak skills. must be between 1 and d - 1"):
        hd.equal_hardness_spectrum(10, 20.0, "weak_skills", r=10)
    with pytest.raises(ValueError, match="H must be > 0"):
        hd.power_law_alpha_for_hardness(10, -1.0)


def test_steps_to_target_matches_brute_force_and_brief():
    Lam = np.eye(20)
    # paper.md: with n = 24 two steps reach error <= 1, with n = 14 three
    assert hd.steps_to_target(Lam, 24, 1.0) == 2
    assert hd.steps_to_target(Lam, 23, 1.0) == 3
    assert hd.steps_to_target(Lam, 14, 1.0) == 3
    Lam = cv.power_law(15, 1.1, rotate=True, seed=1)
    lam = np.linalg.eigvalsh(Lam)
    T = lam.sum()
    rho = (lam + T) / (21 * lam + T)
    k = 0
    while (rho ** (2 * k)).sum() > 0.3:
        k += 1
    assert hd.steps_to_target(Lam, 20, 0.3) == k
    assert np.isnan(hd.steps_to_target(Lam, 20, 1e-12, k_max=3))
    assert hd.steps_to_target(Lam, 20, 100.0) == 0  # k = 0 already scores d = 15


def test_bound_steps_never_below_exact_and_equal_for_identity():
    for d, n, target in [(20, 20, 1.0), (20, 5, 0.1), (7, 50, 0.5)]:
        assert hd.steps_to_target_bound(d, d, n, target) == hd.steps_to_target(np.eye(d), n, target)
        for H in [d * 1.5, d * 4, d * 20]:
            for kind in hd.KINDS:
                Lam = np.diag(hd.equal_hardness_spectrum(d, H, kind, r=2))
                assert hd.steps_to_target_bound(H, d, n, target) >= hd.steps_to_target(Lam, n, target)
    ks = hd.steps_to_target_bound(np.array([20.0, 40.0, 80.0]), 20, 20, 1.0)
    assert ks.dtype.kind == "i" and np.all(np.diff(ks) >= 0)
    assert hd.steps_to_target_bound(30.0, 20, 20, 25.0) == 0
    with pytest.raises(ValueError, match="H must be >= d"):
        hd.steps_to_target_bound(5.0, 20, 20, 1.0)
    with pytest.raises(ValueError, match="H must be finite"):
        hd.steps_to_target_bound(np.inf, 20, 20, 1.0)
    with pytest.raises(ValueError, match="target must be > 0"):
        hd.steps_to_target_bound(30.0, 20, 20, 0.0)


def test_first_below():
    assert hd.first_below([5.0, 2.0, 0.5, 0.1], 1.0) == 2
    assert np.isnan(hd.first_below([5.0, 2.0], 1.0))
    with pytest.raises(ValueError, match="1-d"):
        hd.first_below(np.ones((2, 2)), 1.0)


def test_effective_hardness_reproduces_exact_error_and_limits():
    Lam = np.diag(hd.equal_hardness_spectrum(20, 60.0, "weak_skills", r=4))
    ks = np.array([1, 3, 10, 100, 3000])
    He = hd.effective_hardness(Lam, 30, ks)
    err = theory.cot_error(Lam, 30, ks)
    assert np.allclose(20 * (1 + 30 / (1 + He)) ** (-2.0 * ks), err, rtol=1e-8)
    assert np.all(He < 60.0) and np.all(np.diff(He) > 0)
    assert abs(He[-1] - 60.0) < 0.1  # -> Hard as k -> infinity
    assert np.allclose(hd.effective_hardness(np.eye(20), 30, ks), 20.0)
    assert isinstance(hd.effective_hardness(Lam, 30, 2), float)
    with pytest.raises(ValueError, match="k must be >= 1"):
        hd.effective_hardness(Lam, 30, 0)


def test_power_mean_hardness_is_the_long_prompt_limit():
    Lam = cv.power_law(20, 0.8)
    h = hd.skill_hardness(Lam)
    assert np.isclose(hd.power_mean_hardness(Lam, 1), np.sqrt(np.mean((1 + h) ** 2)) - 1)
    for k in [1, 4, 30]:
        assert np.isclose(hd.effective_hardness(Lam, 10**7, k), hd.power_mean_hardness(Lam, k), rtol=1e-4)
    assert abs(hd.power_mean_hardness(Lam, 10**5) - theory.hardness(Lam)) < 1e-3 * theory.hardness(Lam)
    with pytest.raises(ValueError, match="k must be >= 1"):
        hd.power_mean_hardness(Lam, [0, 1])


def test_finite_m_reference_matches_exact_one_step_error():
    Lam = cv.power_law(10, 0.8, rotate=True, seed=0)
    for m in [5, 40]:  # m < d uses direct sampling, m >= d Bartlett
        mean, se = hd.wishart_draw_error(Lam, 15, m, [0, 1], draws=6000, seed=1)
        assert np.isclose(mean[0], 10.0) and se[0] < 1e-9
        assert abs(mean[1] - theory.one_step_error(Lam, 15, m)) < 5 * se[1]
    # m -> infinity: the population error
    mean, se = hd.wishart_draw_error(Lam, 15, 10**7, 4, draws=200)
    assert np.isclose(mean, theory.cot_error(Lam, 15, 4), rtol=1e-2)


def test_rollout_error_agrees_with_finite_m_reference():
    Lam = cv.power_law(6, 0.6)
    mean, se = hd.rollout_error(Lam, 10, 12, 4, batch=3000, seed=0)
    ref, ref_se = hd.wishart_draw_error(Lam, 10, 12, np.arange(5), draws=20000, seed=0)
    assert mean.shape == (5,) and np.isclose(mean[0], ref[0], rtol=0.1)
    assert np.all(np.abs(mean[1:] - ref[1:]) < 5 * np.hypot(se[1:], ref_se[1:]))
    assert abs(mean[1] - theory.one_step_error(Lam, 10, 12)) < 5 * se[1]
    with pytest.raises(ValueError, match="batch must be >= 2"):
        hd.rollout_error(Lam, 10, 12, 4, batch=1)
    with pytest.raises(ValueError, match="m_test must be an integer >= 1"):
        hd.rollout_error(Lam, 10, 0, 4, batch=10)
    with pytest.raises(ValueError, match="draws must be >= 2"):
        hd.wishart_draw_error(Lam, 10, 12, 1, draws=1)


def test_weak_skill_spectrum():
    lam = hd.weak_skill_spectrum(10, 3, 0.25)
    assert np.isclose(lam.sum(), 10) and np.isclose(lam[-1] / lam[0], 0.25)
    assert np.isclose(theory.hardness(np.diag(lam)), 7 / 0.25 + 3)
    with pytest.raises(ValueError, match="singular"):
        theory.hardness(np.diag(hd.weak_skill_spectrum(10, 3, 0.0)))
    with pytest.raises(ValueError, match="level must lie in"):
        hd.weak_skill_spectrum(10, 3, 1.5)
    with pytest.raises(ValueError, match="r .weak skills. must be between"):
        hd.weak_skill_spectrum(10, 10, 0.5)
    with pytest.raises(ValueError, match="r must be an integer >= 1"):
        hd.weak_skill_spectrum(10, 0, 0.5)


def test_simulate_steps_agrees_with_reference_and_exact_for_long_prompts():
    Lam = np.diag(hd.equal_hardness_spectrum(8, 20.0))
    out = hd.simulate_steps(Lam, 10, 400, 0.5, batch=400, draws=2000, seed=1)
    assert np.all(out["z"] < 5) and out["k_run"] >= out["finite_m_reference"]
    exact = hd.steps_to_target(Lam, 10, 0.5)
    assert exact <= out["finite_m_reference"] <= exact + 1
    assert abs(out["simulated"] - out["finite_m_reference"]) <= 1

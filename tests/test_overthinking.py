"""Unit tests for the primitives of the overthinking chapter, at their homes in the library.

Divergence edges (theory.mp_lambda_max, mp_edge_ratio, critical_n_train), the readers of an error
curve (simulation.best_k, spectral_radius), prompts that carry their covariance exactly
(prompts.population_prompts), and the two per-prompt errors the chapter simulates with
(simulation.rollout_errors, simulation.cot_errors with average_w=True). Each is checked against an
independent computation: a closed form, a brute-force scan, numpy's eigen-solver, matrix powers,
or a simulation. The chapter's own experiments (phase diagram, diagnostic) assert their checks in
the chapter, which runs on every build.
"""

import numpy as np
import pytest
import torch

from ttscale import covariances as cv
from ttscale import estimators, lsa, prompts, simulation, theory

D = 20
I = np.eye(D)


# --------------------------------------------------------------------------- divergence edges
def test_mp_lambda_max_and_edge_are_inverse():
    n = np.array([5, 20, 200, 5000])
    ratio = theory.mp_edge_ratio(n, D)
    assert np.allclose(theory.mp_lambda_max(n, D, ratio * D), 2.0, rtol=1e-12)
    # by hand: n/(n+d+1) (1 + sqrt(d/m))^2 at d = 20, m = 40 is 20/41 (1 + 1/sqrt 2)^2 and 200/221 (...)^2
    assert theory.mp_lambda_max(20, D, 40) == pytest.approx(20 / 41 * (1 + 2 ** -0.5) ** 2, rel=1e-12)
    assert theory.mp_lambda_max(20, D, 40) < 2 < theory.mp_lambda_max(200, D, 40)
    # the n -> infinity edge: (1 + sqrt(d/m))^2 = 2 at m/d = 1/(sqrt 2 - 1)^2
    assert theory.mp_edge_ratio(1e12, D) == pytest.approx(1 / (np.sqrt(2) - 1) ** 2, rel=1e-6)
    assert isinstance(theory.mp_edge_ratio(20, D), float)
    assert theory.mp_lambda_max(np.array([[10], [100]]), D, np.array([20, 40, 80])).shape == (2, 3)


def test_mp_lambda_max_is_the_largest_eigenvalue_of_large_sample_covariances():
    # Marchenko-Pastur: lambda_max of Gamma^-1 S_m for Lambda = I tends to the formula as d, m grow together
    d, m, n = 400, 1600, 50
    X = prompts.sample(np.eye(d), m, 4, seed=0, stream="test").X
    lam_max = torch.linalg.eigvalsh(prompts.sample_covariance(X)).numpy()[:, -1] * n / (n + d + 1)
    assert np.allclose(lam_max, theory.mp_lambda_max(n, d, m), rtol=0.03)


@pytest.mark.parametrize("bad", [0, -3.0, np.nan])
def test_mp_rejects_bad_lengths(bad):
    with pytest.raises(ValueError, match="n_train must be > 0"):
        theory.mp_edge_ratio(bad, D)
    with pytest.raises(ValueError, match="m_test must be > 0"):
        theory.mp_lambda_max(10, D, bad)
    with pytest.raises(ValueError, match="d must be an integer >= 1"):
        theory.mp_edge_ratio(10, 0)


def test_critical_n_train_matches_closed_forms():
    # missing skills: mu = n / (d - r) on the missing directions, overthinking iff n > 2(d - r)
    assert theory.critical_n_train(cv.missing_skills(D, 5), I) == 31
    # diagonal skewed: mu_max = 1 / ((1 + 1/n) lam_d + T/n) > 2 iff n > (lam_d + T) / (1/2 - lam_d)
    for norm in ("trace", "max"):
        lam = cv.power_law_spectrum(D, 1.0, norm)
        n_star = (lam[-1] + lam.sum()) / (0.5 - lam[-1])
        assert theory.critical_n_train(np.diag(lam), I) == int(np.floor(n_star)) + 1
    # in distribution the chain never diverges
    assert np.isnan(theory.critical_n_train(cv.power_law(D, 1.0), n_max=10_000))
    with pytest.raises(ValueError, match="n_max must be an integer >= 1"):
        theory.critical_n_train(I, I, n_max=0)


def test_critical_n_train_matches_a_scan_for_non_commuting_covariances():
    d = 8
    Lam = cv.power_law(d, 1.0)
    Sigma = cv.power_law(d, 0.3, rotate=True, seed=2)

    def mu_max(n):  # largest eigenvalue of Gamma^-1/2 Sigma Gamma^-1/2, from numpy alone
        G = (1 + 1 / n) * Lam + np.trace(Lam) / n * np.eye(d)
        g, U = np.linalg.eigh(G)
        R = U @ np.diag(g ** -0.5) @ U.T
        return np.linalg.eigvalsh(R @ Sigma @ R)[-1]

    first = next(n for n in range(1, 10_000) if mu_max(n) > 2)
    assert theory.critical_n_train(Lam, Sigma) == first


# --------------------------------------------------------------------------- readers of an error curve
def test_best_k_ignores_overflow():
    e = np.array([[20.0, 5.0, 3.0, np.inf, np.nan], [20.0, 30.0, 1.0, 0.5, np.nan]])
    assert list(simulation.best_k(e)) == [2, 3]
    assert list(simulation.best_k(e.T, axis=0)) == [2, 3]
    assert simulation.best_k([np.inf, np.nan]) == 0
    with pytest.raises(ValueError, match="at least one entry"):
        simulation.best_k(np.empty((3, 0)))


def test_spectral_radius_is_divergence_test():
    P = np.eye(3)
    S = np.stack([np.diag([0.5, 1.0, 1.9]), np.diag([0.5, 1.0, 2.5])])
    assert np.allclose(simulation.spectral_radius(P, S), [0.9, 1.5])
    assert simulation.spectral_radius(P, S[1]).shape == (1,)
    with pytest.raises(ValueError, match="P must be"):
        simulation.spectral_radius(np.eye(2), S)


def test_spectral_radius_against_numpy_for_non_commuting_matrices():
    P = np.linalg.inv(theory.gamma(cv.power_law(6, 1.0), 30))
    S = prompts.sample_covariance(prompts.sample(cv.power_law(6, 0.5, rotate=True, seed=1), 4, 5, seed=3).X)
    expected = [np.abs(np.linalg.eigvals(np.eye(6) - P @ s)).max() for s in S.numpy()]
    assert np.allclose(simulation.spectral_radius(P, S), expected, rtol=1e-10)
    # above 1 exactly when the chain's error grows without bound
    grows = theory.map_error(P, S, 400) > theory.map_error(P, S, 200)
    assert np.array_equal(simulation.spectral_radius(P, S) > 1, grows)


# --------------------------------------------------------------------------- prompts and per-prompt errors
def test_population_prompts_have_exact_covariance():
    Sigma = cv.power_law(D, 0.8, rotate=True, seed=1)
    b = prompts.population_prompts(Sigma, 2 * D, 7, seed=2)
    assert b.X.shape == (7, D, 2 * D)
    assert torch.allclose(prompts.sample_covariance(b.X), torch.as_tensor(Sigma).expand(7, D, D), atol=1e-12)
    assert torch.allclose(b.y, torch.einsum("bdn,bd->bn", b.X, b.w))
    again = prompts.population_prompts(Sigma, 2 * D, 7, seed=2)
    other = prompts.population_prompts(Sigma, 2 * D, 7, seed=2, step=1)
    assert torch.equal(b.X, again.X) and not torch.allclose(b.w, other.w)
    with pytest.raises(ValueError, match="m must be >= d"):
        prompts.population_prompts(Sigma, D - 1, 3)


def test_population_prompt_task_vectors_are_standard_normal():
    w = prompts.population_prompts(np.eye(4), 4, 20_000, seed=5).w.numpy()
    assert np.allclose(w.mean(0), 0, atol=0.05) and np.allclose(np.cov(w.T), np.eye(4), atol=0.05)


def test_rollout_errors_match_recursion_and_conditional_mean():
    Lam = cv.missing_skills(D, 5)
    model = lsa.closed_form(Lam, 40)
    b = prompts.sample(I, 60, 50, seed=0, stream="test")
    got = simulation.rollout_errors(model, b, 3)
    W = estimators.pseudo_newton(b.X, b.y, Lam, 40, 3)
    assert got.shape == (50, 4)
    assert np.allclose(got, ((W - b.w[:, None]) ** 2).sum(2).numpy(), rtol=1e-10)
    # population prompts: the mean over w of the rollout error estimates the m -> infinity theory
    pp = prompts.population_prompts(I, 2 * D, 4000, seed=1)
    mean, se = simulation.mean_se(simulation.rollout_errors(model, pp, 2))
    th = theory.cot_error(Lam, 40, np.arange(3), Sigma=I)
    assert np.all(np.abs(mean - th) <= 5 * se + 1e-9)


def test_cot_errors_averaged_over_w_are_matrix_powers_of_the_same_prompts():
    # the chapter relies on this: average_w=True returns ||(I - Gamma^-1 S_m)^k||_F^2 for the prompts
    # prompts.sample(Sigma, m, n_prompts, seed, stream, step) draws (one chunk), so a spectral radius
    # computed on those prompts belongs to the same rows
    Lam, Sigma = cv.missing_skills(8, 2), cv.power_law(8, 0.5, rotate=True, seed=4)
    ks = np.array([0, 1, 3, 7])
    e = simulation.cot_errors(Lam, 12, 10, ks, 30, Sigma=Sigma, average_w=True, seed=6, stream="eval", step=9)
    X = prompts.sample(Sigma, 10, 30, seed=6, stream="eval", step=9).X
    B = np.eye(8) - np.linalg.inv(theory.gamma(Lam, 12)) @ prompts.sample_covariance(X).numpy()
    brute = np.array([[np.linalg.norm(np.linalg.matrix_power(b, k), "fro") ** 2 for k in ks] for b in B])
    assert e.shape == (30, 4)
    np.testing.assert_allclose(e, brute, rtol=1e-10)
    # k = 0 is the trivial error d; theory.map_error's eigendecomposition path (a symmetric
    # positive-definite map) gets it to rounding, not bit for bit
    np.testing.assert_allclose(e[:, 0], 8.0, rtol=1e-13)


def test_cot_errors_averaged_over_w_k1_matches_exact_formula():
    Lam = cv.missing_skills(D, 5)
    e = simulation.cot_errors(Lam, 40, 100, np.arange(3), 3000, Sigma=I, average_w=True, seed=4)
    mean, se = simulation.mean_se(e[:, 1])
    assert abs(mean - theory.one_step_error(Lam, 40, 100, Sigma=I)) < 5 * se
    with pytest.raises(ValueError, match="m_test must be an integer >= 1"):
        simulation.cot_errors(Lam, 40, 0, 1, 10, average_w=True)

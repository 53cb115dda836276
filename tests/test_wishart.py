"""Exact Wishart moments and the exact finite-m CoT error, each against an independent oracle.

Oracles: chi-square moments (d = 1 or m = 1, where tr W^j has a closed form), the d <-> m duality
tr (XXᵀ)^j = tr (XᵀX)^j (which the loop equations do not build in), the textbook second moment
of a Wishart matrix, numerical integration against a density, and Monte Carlo with many draws.
"""

from fractions import Fraction
from math import comb, prod

import numpy as np
import pytest
from scipy import integrate, stats

from ttscale import theory, wishart


def rising(a, j, step=2):
    return prod(a + step * i for i in range(j))


@pytest.mark.parametrize("m", [1, 3, 10])
def test_trace_moments_d1_are_chi_square_moments(m):
    # d = 1: W = ‖x‖² ~ χ²_m, E W^j = m (m+2) ⋯ (m+2j−2)
    M = wishart.trace_moments(1, m, 40)
    assert M == [rising(m, j) for j in range(41)]


@pytest.mark.parametrize("d", [2, 5])
def test_trace_moments_m1_are_norm_moments(d):
    # m = 1: tr W^j = ‖x‖^{2j}, ‖x‖² ~ χ²_d
    M = wishart.trace_moments(d, 1, 30)
    assert M[1:] == [rising(d, j) for j in range(1, 31)]


def test_trace_moments_duality_in_d_and_m():
    # tr (X Xᵀ)^j = tr (Xᵀ X)^j for j >= 1: the d x m and m x d problems must agree
    assert wishart.trace_moments(3, 7, 40)[1:] == wishart.trace_moments(7, 3, 40)[1:]
    assert wishart.trace_moments(20, 40, 24)[1:] == wishart.trace_moments(40, 20, 24)[1:]


def test_trace_moments_closed_forms():
    d, m = 6, 11
    M = wishart.trace_moments(d, m, 3)
    assert M[1] == d * m
    assert M[2] == d * m * (m + d + 1)
    assert M[3] == d * m * (m * m + d * d + 3 * m * d + 3 * m + 3 * d + 4)


def test_trace_moment_monte_carlo():
    rng = np.random.default_rng(0)
    d, m, N = 4, 6, 400_000
    X = rng.standard_normal((N, d, m))
    lam = np.linalg.eigvalsh(X @ X.transpose(0, 2, 1))
    for j in (4, 5):
        v = (lam**j).sum(axis=1)
        exact = wishart.trace_moments(d, m, j)[j]
        assert abs(v.mean() - exact) < 5 * v.std() / np.sqrt(N)


def test_mixed_moments():
    d, m = 3, 5
    # tr W ~ χ²_{dm}: E (tr W)² = dm(dm + 2)
    assert wishart.mixed_moment(d, m, (1, 1)) == d * m * (d * m + 2)
    # a zero power is a factor d; d = 1 collapses products of traces to one power
    assert wishart.mixed_moment(d, m, (0, 2)) == d * wishart.trace_moments(d, m, 2)[2]
    assert wishart.mixed_moment(1, m, (3, 4)) == rising(m, 7)
    rng = np.random.default_rng(1)
    N = 400_000
    X = rng.standard_normal((N, d, m))
    lam = np.linalg.eigvalsh(X @ X.transpose(0, 2, 1))
    v = (lam**2).sum(1) * (lam**3).sum(1)
    assert abs(v.mean() - wishart.mixed_moment(d, m, (2, 3))) < 5 * v.std() / np.sqrt(N)


def test_narayana_moments_match_marchenko_pastur_density():
    for gamma in (Fraction(1, 2), Fraction(3, 2)):
        g = float(gamma)
        a, b = (1 - g**0.5) ** 2, (1 + g**0.5) ** 2
        dens = lambda x: np.sqrt((b - x) * (x - a)) / (2 * np.pi * g * x)  # noqa: E731
        nar = wishart.narayana_moments(gamma, 6)
        atom = max(0.0, 1 - 1 / g)
        for j in range(1, 7):
            val, _ = integrate.quad(lambda x: x**j * dens(x), a, b, limit=200)
            assert float(nar[j]) == pytest.approx(val, rel=1e-8)
        total, _ = integrate.quad(dens, a, b, limit=200)
        assert total + atom == pytest.approx(1.0, rel=1e-8)


def test_pairings_count_and_second_moment():
    for r in range(1, 6):
        assert len(wishart.pairings(r)) == prod(range(1, 2 * r, 2))  # (2r − 1)!!
    rng = np.random.default_rng(2)
    d, m = 4, 7
    A = rng.normal(size=(d, d))
    Sigma = A @ A.T
    B, C = rng.normal(size=(d, d)), rng.normal(size=(d, d))  # not symmetric
    # E[Ŝ C Ŝ] = Σ C Σ + (Σ Cᵀ Σ + tr(CΣ) Σ)/m for the sample covariance of m Gaussian vectors
    expected = np.trace(B @ Sigma @ C @ Sigma) + (np.trace(B @ Sigma @ C.T @ Sigma) + np.trace(C @ Sigma) * np.trace(B @ Sigma)) / m
    assert wishart.trace_expectation([B, C], Sigma, m) == pytest.approx(expected, rel=1e-12)
    assert wishart.trace_expectation([B], Sigma, m) == pytest.approx(np.trace(B @ Sigma), rel=1e-12)


def test_trace_expectation_three_factors_monte_carlo():
    rng = np.random.default_rng(3)
    d, m, N = 2, 3, 2_000_000
    A = rng.normal(size=(d, d))
    Sigma = A @ A.T + 0.2 * np.eye(d)
    Bs = [rng.normal(size=(d, d)) for _ in range(3)]
    L = np.linalg.cholesky(Sigma)
    X = L @ rng.standard_normal((N, d, m))
    S = X @ X.transpose(0, 2, 1) / m
    v = np.einsum("ij,njk,kl,nlp,pq,nqi->n", Bs[0], S, Bs[1], S, Bs[2], S)
    exact = wishart.trace_expectation(Bs, Sigma, m)
    assert abs(v.mean() - exact) < 5 * v.std() / np.sqrt(N)


def _lam(d, seed):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d))
    return A @ A.T / d + 0.1 * np.eye(d)


def test_finite_m_error_isotropic_equals_general_method():
    # Two independent exact methods: Wishart loop equations (isotropic path) and the Isserlis
    # expansion (general path, forced by calling it directly).
    d, m, n = 6, 9, 4
    P = np.linalg.inv(theory.gamma(np.eye(d), n))
    for k in range(4):
        for noise in (0.0, 0.8):
            iso = theory.finite_m_error(P, 1.7 * np.eye(d), m, k, noise)
            gen = theory._general_error(P, 1.7 * np.eye(d), m, k, noise)
            assert iso == pytest.approx(gen, rel=1e-10)


def test_finite_m_error_one_step_matches_closed_form_non_commuting():
    Lam, Sigma = _lam(5, 0), _lam(5, 1)
    assert theory.finite_m_cot_error(Lam, 7, 11, 1, Sigma=Sigma) == pytest.approx(
        theory.one_step_error(Lam, 7, 11, Sigma=Sigma), rel=1e-12
    )


def test_finite_m_error_non_commuting_with_noise_monte_carlo():
    # Conditional on the features the error is exact: ‖(I − PŜ)^k‖_F² + noise²/m tr(Q Ŝ Qᵀ);
    # averaging it over many prompts is an unbiased check of the general method at k = 2, 3.
    d, m, n, noise, N = 3, 10, 5, 0.6, 400_000
    Lam, Sigma = _lam(d, 4), _lam(d, 5)
    P = np.linalg.inv(theory.gamma(Lam, n))
    rng = np.random.default_rng(6)
    X = np.linalg.cholesky(Sigma) @ rng.standard_normal((N, d, m))
    S = X @ X.transpose(0, 2, 1) / m
    Bm = np.eye(d) - P @ S
    for k in (2, 3):
        Bk = np.linalg.matrix_power(Bm, k)
        Q = sum(np.linalg.matrix_power(Bm, i) for i in range(k)) @ P
        v = (Bk**2).sum((1, 2)) + noise**2 / m * np.einsum("nij,njk,nik->n", Q, S, Q)
        exact = theory.finite_m_cot_error(Lam, n, m, k, Sigma=Sigma, noise=noise)
        assert abs(v.mean() - exact) < 5 * v.std() / np.sqrt(N)


def test_finite_m_error_vectorised_in_k_and_known_value():
    d, m, n = 20, 40, 20
    ks = np.arange(6)
    curve = theory.finite_m_cot_error(np.eye(d), n, m, ks)
    assert curve.shape == (6,)
    assert [theory.finite_m_cot_error(np.eye(d), n, m, int(k)) for k in ks] == pytest.approx(curve, rel=1e-14)
    assert curve[0] == d
    assert curve[2] == pytest.approx(4.7623, abs=1e-4)  # measured independently when the issue was filed


def test_exact_arithmetic_where_floating_point_fails():
    # d = 1: E (1 − cW)^{2k} with W ~ χ²_m, by quadrature against the chi-square density (an
    # independent oracle); the same binomial sum in float64 is wrong by orders of magnitude.
    m, p, k = 200, 0.9, 30
    exact = theory.finite_m_error(p * np.eye(1), np.eye(1), m, k)
    c = p / m
    f = lambda x: (1 - c * x) ** (2 * k) * stats.chi2.pdf(x, m)  # noqa: E731
    oracle = sum(integrate.quad(f, lo, hi, limit=400, epsabs=0, epsrel=1e-12)[0] for lo, hi in [(0, 2 / c), (2 / c, np.inf)])
    assert exact == pytest.approx(oracle, rel=1e-8)
    M = wishart.trace_moments(1, m, 2 * k)
    naive = sum(comb(2 * k, j) * (-c) ** j * float(M[j]) for j in range(2 * k + 1))
    assert abs(naive - oracle) > 10 * abs(oracle)


def test_conditional_sd_monte_carlo():
    d, m, p, N = 3, 10, 0.3, 400_000
    rng = np.random.default_rng(7)
    X = rng.standard_normal((N, d, m))
    lam = np.linalg.eigvalsh(X @ X.transpose(0, 2, 1) / m)
    for k in (1, 3):
        e = ((1 - p * lam) ** (2 * k)).sum(1)
        sd = theory.finite_m_conditional_sd(p * np.eye(d), np.eye(d), m, k)
        assert sd == pytest.approx(e.std(), rel=0.02)
        assert theory.finite_m_error(p * np.eye(d), np.eye(d), m, k) == pytest.approx(e.mean(), rel=0.01)


def test_proportional_limit_approaches_exact_for_large_d():
    d, m, n = 200, 400, 200
    P = np.linalg.inv(theory.gamma(np.eye(d), n))
    ks = np.arange(1, 6)
    exact = theory.finite_m_error(P, np.eye(d), m, ks, noise=0.5)
    limit = theory.proportional_limit_error(P, np.eye(d), m, ks, noise=0.5)
    assert np.allclose(limit, exact, rtol=0.02)
    small = theory.proportional_limit_error(P[:4, :4], np.eye(4), 8, ks)
    assert not np.allclose(small, theory.finite_m_error(P[:4, :4], np.eye(4), 8, ks), rtol=0.02)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(Sigma=-np.eye(3)), "Sigma"),
        (dict(m_test=0), "m_test"),
        (dict(noise=-1.0), "noise"),
        (dict(noise=float("nan")), "noise"),
        (dict(k=4, Sigma=np.diag([1.0, 2.0, 3.0])), "k"),
        (dict(k=theory.ISOTROPIC_K_MAX + 1), "k"),
        (dict(k=1.5), "k"),
        (dict(P=np.full((3, 3), np.nan)), "P"),
        (dict(P=np.eye(2)), "Sigma"),
        (dict(P=np.ones(3)), "P"),
    ],
)
def test_finite_m_error_refuses_bad_input(kwargs, name):
    args = dict(P=0.3 * np.eye(3), Sigma=np.eye(3), m_test=5, k=2, noise=0.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        theory.finite_m_error(**args)


def test_moment_functions_refuse_bad_input():
    with pytest.raises(ValueError, match="j_max"):
        wishart.trace_moments(3, 4, wishart.MAX_DEGREE + 1)
    with pytest.raises(ValueError, match="m"):
        wishart.trace_moments(3, 0, 4)
    with pytest.raises(ValueError, match="powers"):
        wishart.mixed_moment(3, 4, (2, -1))
    with pytest.raises(ValueError, match="B"):
        wishart.trace_expectation([np.eye(2)] * 7, np.eye(2), 3)
    with pytest.raises(ValueError, match="gamma"):
        wishart.narayana_moments(0, 3)


def test_finite_m_k_max_names_the_method():
    assert theory.finite_m_k_max(0.3 * np.eye(3), 2.0 * np.eye(3)) == theory.ISOTROPIC_K_MAX
    assert theory.finite_m_k_max(0.3 * np.eye(3), np.diag([1.0, 2.0, 3.0])) == theory.GENERAL_K_MAX
    # it is the limit finite_m_error enforces
    theory.finite_m_error(0.3 * np.eye(3), np.diag([1.0, 2.0, 3.0]), 5, theory.GENERAL_K_MAX)
    with pytest.raises(ValueError, match="k must be"):
        theory.finite_m_error(0.3 * np.eye(3), np.diag([1.0, 2.0, 3.0]), 5, theory.GENERAL_K_MAX + 1)
    with pytest.raises(ValueError, match="Sigma"):
        theory.finite_m_k_max(np.eye(3), -np.eye(3))


# ------------------------------------------------------------------ sample_covariances (Bartlett)

@pytest.mark.parametrize("d, m", [(4, 9), (5, 5), (6, 3)])
def test_sample_covariances_has_the_wishart_moments(d, m):
    # E tr W = dm and E tr W^2 = dm(m + d + 1) (W = m Ŝ for Σ = I), and the sample mean of
    # many draws within 5 standard errors of them; m < d goes through the direct branch.
    S = wishart.sample_covariances(np.eye(d), m, 40_000, seed=3)
    assert S.shape == (40_000, d, d)
    W = m * S
    t1 = np.trace(W, axis1=1, axis2=2)
    t2 = np.einsum("bij,bji->b", W, W)
    for values, exact in [(t1, d * m), (t2, d * m * (m + d + 1))]:
        se = values.std() / np.sqrt(values.size)
        assert abs(values.mean() - exact) < 5 * se


def test_sample_covariances_mean_is_sigma_and_draws_are_seeded():
    from ttscale import covariances as cv

    Sigma = cv.power_law(5, 1.0, rotate=True, seed=2)
    S = wishart.sample_covariances(Sigma, 12, 30_000, seed=0, step=1)
    se = S.std(axis=0) / np.sqrt(S.shape[0])
    assert np.all(np.abs(S.mean(axis=0) - Sigma) < 5 * se + 1e-12)
    assert np.array_equal(S, np.swapaxes(S, 1, 2))
    assert np.linalg.eigvalsh(S).min() > -1e-12
    again = wishart.sample_covariances(Sigma, 12, 30_000, seed=0, step=1)
    assert np.array_equal(S, again)
    other = wishart.sample_covariances(Sigma, 12, 30_000, seed=0, step=2)
    assert not np.allclose(S, other)


@pytest.mark.parametrize("kwargs, name", [(dict(Sigma=-np.eye(2), m=3, batch=2), "Sigma"),
                                          (dict(Sigma=np.eye(2), m=0, batch=2), "m"),
                                          (dict(Sigma=np.eye(2), m=3, batch=0), "batch"),
                                          (dict(Sigma=np.eye(2), m=3, batch=2, seed=-1), "seed")])
def test_sample_covariances_validates(kwargs, name):
    with pytest.raises(ValueError, match=name):
        wishart.sample_covariances(**kwargs)

import numpy as np
import pytest

from ttscale import covariances as cv
from ttscale import theory


def test_gamma_formula():
    L = cv.power_law(6, 0.8, rotate=True, seed=1)
    n = 7
    assert np.allclose(theory.gamma(L, n), (1 + 1 / n) * L + np.trace(L) / n * np.eye(6))


def test_cot_error_isotropic_closed_form():
    d, n = 20, 10
    k = np.arange(6)
    assert np.allclose(theory.cot_error(np.eye(d), n, k), d * ((d + 1) / (n + d + 1)) ** (2 * k))
    assert theory.cot_error(np.eye(d), n, 0) == pytest.approx(d)


@pytest.mark.parametrize("k", [0, 1, 2, 5, 9])
def test_cot_error_matches_matrix_power_for_noncommuting_sigma(k):
    L = cv.power_law(8, 0.8, rotate=True, seed=2)
    S = cv.power_law(8, 0.3, rotate=True, seed=5)
    B = np.eye(8) - np.linalg.inv(theory.gamma(L, 12)) @ S
    expected = np.linalg.norm(np.linalg.matrix_power(B, k), "fro") ** 2
    assert theory.cot_error(L, 12, k, Sigma=S) == pytest.approx(expected, rel=1e-10)


def test_cot_error_vectorised_shape_and_type():
    L = cv.power_law(5, 0.5)
    out = theory.cot_error(L, 10, np.arange(12).reshape(3, 4))
    assert out.shape == (3, 4)
    assert isinstance(theory.cot_error(L, 10, 3), float)
    assert np.allclose(out.ravel(), [theory.cot_error(L, 10, int(k)) for k in range(12)])


def test_in_distribution_never_hurts():
    # every rho_i < n/(n+1) < 1 in distribution: the error falls with k
    for alpha in [0.0, 0.5, 1.5]:
        e = theory.cot_error(cv.power_law(10, alpha, rotate=True, seed=0), 15, np.arange(30))
        assert np.all(np.diff(e) < 0)


def test_symmetrised_error_equals_exact_iff_commuting():
    L = cv.power_law(6, 1.0)
    S = np.diag(np.linspace(0.5, 2.0, 6))
    k = np.arange(5)
    assert np.allclose(theory.symmetrised_error(L, 9, k, S), theory.cot_error(L, 9, k, S))
    Sr = cv.power_law(6, 0.3, rotate=True, seed=4)
    assert not np.allclose(theory.symmetrised_error(L, 9, 3, Sr), theory.cot_error(L, 9, 3, Sr))


def test_preconditioned_spectrum_missing_skills():
    # Γ = (1+1/n) diag(1..,0..) + (15/n) I; on a missing direction μ = 1/(15/n) = n/15
    mu = theory.preconditioned_spectrum(cv.missing_skills(20, 5), 40, np.eye(20))
    assert mu.max() == pytest.approx(40 / 15)


def test_one_step_error_against_monte_carlo():
    rng = np.random.default_rng(0)
    L = cv.power_law(4, 0.8, rotate=True, seed=3)
    S = cv.power_law(4, 0.2, rotate=True, seed=6)
    n, m, B = 6, 5, 200_000
    A = np.linalg.inv(theory.gamma(L, n))
    for Sigma in (None, S):
        cov = L if Sigma is None else S
        x = rng.multivariate_normal(np.zeros(4), cov, size=(B, m))  # (B, m, d)
        w = rng.standard_normal((B, 4))
        Shat = np.einsum("bmi,bmj->bij", x, x) / m
        err = ((np.einsum("ij,bjk,bk->bi", A, Shat, w) - w) ** 2).sum(1)
        exact = theory.one_step_error(L, n, m, Sigma)
        assert abs(err.mean() - exact) < 5 * err.std() / np.sqrt(B)


def test_one_step_error_tends_to_population():
    L = cv.power_law(5, 0.6)
    assert theory.one_step_error(L, 8, 10**9) == pytest.approx(theory.cot_error(L, 8, 1), rel=1e-6)


def test_bounds_dominate_exact_and_are_tight_for_identity():
    d = 10
    ks = np.arange(8)
    assert np.allclose(theory.cot_error_bound(np.eye(d), 15, ks), theory.cot_error(np.eye(d), 15, ks))
    for alpha in [0.3, 0.8, 1.2]:
        L = cv.power_law(d, alpha)
        assert np.all(theory.cot_error_bound(L, 15, ks) >= theory.cot_error(L, 15, ks) - 1e-12)
        for m in [5, 50, 500]:
            assert theory.one_step_bound(L, 15, m) >= theory.one_step_error(L, 15, m)


def test_smallest_n_train_against_closed_form():
    d = 20
    ks = np.array([1, 2, 3, 5, 10, 20])
    got = theory.smallest_n_train(np.eye(d), ks, 1.0)
    expected = np.ceil((d + 1) * (d ** (1 / (2 * ks)) - 1))  # d ((d+1)/(n+d+1))^{2k} <= 1
    assert np.array_equal(got, expected)
    assert list(got) == [73, 24, 14, 8, 4, 2]
    assert np.isnan(theory.smallest_n_train(np.eye(d), 0, 1.0))


def test_hardness_properties_and_singular_error():
    L = cv.power_law(7, 0.9, rotate=True, seed=1)
    assert theory.hardness(3.7 * L) == pytest.approx(theory.hardness(L))
    assert theory.hardness(np.eye(7)) == pytest.approx(7)
    assert theory.hardness(L) > 7
    with pytest.raises(ValueError, match="infinite"):
        theory.hardness(cv.missing_skills(5, 1))


def test_bad_inputs():
    with pytest.raises(ValueError, match="n_train must be an integer >= 1"):
        theory.gamma(np.eye(3), 0)
    with pytest.raises(ValueError, match="m_test must be an integer >= 1"):
        theory.one_step_error(np.eye(3), 5, 0)
    with pytest.raises(ValueError, match="k must be"):
        theory.cot_error(np.eye(3), 5, -1)
    with pytest.raises(ValueError, match="k must be"):
        theory.cot_error(np.eye(3), 5, 1.5)
    with pytest.raises(ValueError, match="Sigma must be 3 x 3"):
        theory.cot_error(np.eye(3), 5, 1, Sigma=np.eye(4))
    with pytest.raises(ValueError, match="Lam must be symmetric"):
        theory.cot_error(np.array([[1.0, 1.0], [0.0, 1.0]]), 5, 1)
    with pytest.raises(ValueError, match="Lam must be non-zero"):
        theory.gamma(np.zeros((3, 3)), 5)
    with pytest.raises(ValueError, match="target must be > 0"):
        theory.smallest_n_train(np.eye(3), 1, 0.0)


def test_diverging_error_overflows_to_inf_not_nan():
    # missing skills at n = 400: mu = 400/15 on the missing directions, (1 - mu)^(2k) overflows
    ks = np.array([0, 10, 200, 2000])
    e = theory.cot_error(cv.missing_skills(20, 5), 400, ks, np.eye(20))
    assert not np.any(np.isnan(e)) and np.isinf(e[-1]) and e[1] > 1e20
    assert int(np.argmin(e)) == 0


# map_error: one implementation of ‖(I − PΣ)^k‖_F² for any P (trained maps, mixtures,
# estimated preconditioners, per-prompt sample covariances).

def test_map_error_matches_direct_power_for_any_map():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((4, 4)) * 0.3
    Sigma = cv.power_law(4, 0.5)
    E = np.eye(4) - A @ Sigma
    for k in [0, 1, 4]:
        direct = np.linalg.norm(np.linalg.matrix_power(E, k), "fro") ** 2
        assert theory.map_error(A, Sigma, k) == pytest.approx(direct, rel=1e-12)
    assert theory.map_error(A, Sigma, np.array([0, 4])).shape == (2,)


def test_map_error_equals_cot_error_for_gamma_inverse():
    for Lam, Sigma in [(cv.power_law(6, 1.0), None), (cv.power_law(6, 1.0, rotate=True, seed=1), cv.identity(6)),
                       (cv.power_law(6, 1.0), cv.power_law(6, 0.5, rotate=True, seed=3))]:
        G_inv = np.linalg.inv(theory.gamma(Lam, 9))
        ks = np.array([0, 1, 3, 7])
        S = Lam if Sigma is None else Sigma
        assert np.allclose(theory.map_error(G_inv, S, ks), theory.cot_error(Lam, 9, ks, Sigma=Sigma), rtol=1e-10)
    assert isinstance(theory.map_error(G_inv, Lam, 2), float)


def test_map_error_batches_over_maps_and_over_covariances_with_unsorted_k():
    Lam = cv.power_law(4, 0.5)
    P = np.stack([np.eye(4) * s for s in (0.1, 0.5)])
    got = theory.map_error(P, Lam, np.array([3, 1]))
    for r, s in enumerate((0.1, 0.5)):
        for j, k in enumerate((3, 1)):
            ref = np.linalg.norm(np.linalg.matrix_power(np.eye(4) - s * Lam, k)) ** 2
            assert np.isclose(got[r, j], ref)
    S = np.stack([Lam, 2 * Lam, 3 * Lam])
    per_prompt = theory.map_error(0.2 * np.eye(4), S, 3)
    assert per_prompt.shape == (3,)
    assert np.allclose(per_prompt, [theory.map_error(0.2 * np.eye(4), M, 3) for M in S])


def test_map_error_rules():
    with pytest.raises(ValueError, match="P must be a finite square"):
        theory.map_error(np.ones((2, 3)), np.eye(3), 1)
    with pytest.raises(ValueError, match="Sigma must be 3 x 3"):
        theory.map_error(np.eye(3), np.eye(4), 1)
    with pytest.raises(ValueError, match="Sigma must be a \\(d, d\\) covariance or"):
        theory.map_error(np.eye(3), np.ones((2, 4, 4)), 1)
    with pytest.raises(ValueError, match="same batch size"):
        theory.map_error(np.stack([np.eye(3)] * 2), np.stack([np.eye(3)] * 3), 1)
    with pytest.raises(ValueError, match="k must be non-negative"):
        theory.map_error(np.eye(3), np.eye(3), -1)


def _frobenius_powers(Lam, n, ks, Sigma):
    """Independent oracle: ‖(I − Γ⁻¹Σ)^k‖_F² by repeated products of the d × d matrix."""
    d = Lam.shape[0]
    G = (1 + 1 / n) * Lam + np.trace(Lam) / n * np.eye(d)
    B = np.eye(d) - np.linalg.solve(G, Sigma)
    out, M = [], np.eye(d)
    with np.errstate(over="ignore"):   # a diverging chain overflows to inf, as cot_error's must
        for k in range(max(ks) + 1):
            out.append((M * M).sum())
            M = B @ M
    return np.array(out)[ks]


@pytest.mark.parametrize("d,alpha,n", [(1, 0.0, 3), (7, 1.5, 1000), (30, 0.8, 50), (40, 3.0, 5)])
def test_cot_error_in_distribution_and_shifted_match_matrix_powers(d, alpha, n):
    L = cv.power_law(d, alpha, rotate=True, seed=d)
    S = cv.power_law(d, 0.3, rotate=True, seed=d + 1)
    ks = np.array([0, 1, 2, 3, 10, 37, 100, 150])
    for Sigma in (L, S, 3.0 * S):  # the last one diverges
        exact = _frobenius_powers(L, n, ks, Sigma)
        got = theory.cot_error(L, n, ks, None if Sigma is L else Sigma)
        ok = exact > 1e-280  # below that the oracle's own products underflow
        assert np.allclose(got[ok], exact[ok], rtol=1e-9, atol=0)
        assert np.all(got[~ok] < 1e-250)


def test_cot_error_with_sigma_equal_to_lam_is_the_in_distribution_error():
    L = cv.power_law(12, 1.2, rotate=True, seed=3)
    ks = np.arange(60)
    assert np.allclose(theory.cot_error(L, 9, ks, L.copy()), theory.cot_error(L, 9, ks), rtol=1e-12)
    # a diverging chain overflows to +inf, never nan
    big = theory.cot_error(L, 9, np.array([0, 10, 4000]), 50 * cv.power_law(12, 0.0, rotate=True, seed=4))
    assert np.isinf(big[-1]) and big[-1] > 0 and big[0] < big[1] < big[2]


def test_cot_error_validates_each_matrix_once(monkeypatch):
    from ttscale import checks
    calls = []
    real = checks.covariance
    monkeypatch.setattr(checks, "covariance", lambda a, name="Lam", **kw: calls.append(name) or real(a, name, **kw))
    L = cv.power_law(5, 1.0)
    theory.cot_error(L, 10, np.arange(4))
    assert calls == ["Lam"]
    calls.clear()
    theory.cot_error(L, 10, np.arange(4), Sigma=np.eye(5))
    assert calls == ["Lam", "Sigma"]


def test_map_error_for_a_symmetric_map_and_a_stack_matches_direct_powers():
    # Symmetric positive-definite P (Γ⁻¹, the book's map) over a stack of sample covariances,
    # one of them diverging: every entry against numpy's matrix_power, the diverging one too.
    rng = np.random.default_rng(4)
    d = 5
    P = np.linalg.inv(theory.gamma(cv.power_law(d, 1.0, rotate=True, seed=2), 7))
    P = (P + P.T) / 2
    X = rng.standard_normal((6, d, 8))
    S = X @ np.swapaxes(X, 1, 2) / 8
    S[-1] *= 40  # pushes PS beyond 2: the chain diverges
    ks = np.array([0, 1, 2, 9, 30])
    got = theory.map_error(P, S, ks)
    for b in range(S.shape[0]):
        E = np.eye(d) - P @ S[b]
        ref = [np.linalg.norm(np.linalg.matrix_power(E, int(k))) ** 2 for k in ks]
        assert np.allclose(got[b], ref, rtol=1e-9, atol=0)
    assert got[-1, -1] > 1e6 * got[-1, 1]

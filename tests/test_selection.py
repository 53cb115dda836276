"""Tests for ttscale.selection: the surrogate QP (cvxpy) and the exact CoT-error optimiser (scipy)."""

from itertools import product

import numpy as np
import pytest

from ttscale import covariances, mixtures, selection

D = 6


def simplex_grid(L, steps):
    pts = np.array([p for p in product(range(steps + 1), repeat=L - 1) if sum(p) <= steps])
    return np.column_stack([pts, steps - pts.sum(axis=1)]) / steps


@pytest.fixture
def problem():
    Lams = mixtures.power_law_tasks(D, [0.2, 0.8, 0.5], rotate=True, seed=4)
    return Lams, np.array([10, 40, 25]), covariances.power_law(D, 0.6)


@pytest.mark.parametrize("solver", selection.SOLVERS)
def test_surrogate_beats_grid(problem, solver):
    Lams, _, Sigma = problem
    sel = selection.select_surrogate(Lams, Sigma, solver)
    assert sel.weights.min() >= 0 and sel.weights.sum() == pytest.approx(1.0, abs=1e-12)
    grid = min(selection.surrogate_objective(Lams, p, Sigma) for p in simplex_grid(3, 40))
    assert sel.objective <= grid + 1e-6


def test_surrogate_solvers_agree(problem):
    Lams, _, Sigma = problem
    w = [selection.select_surrogate(Lams, Sigma, s).weights for s in selection.SOLVERS]
    for other in w[1:]:
        np.testing.assert_allclose(other, w[0], atol=1e-3)


def test_surrogate_closed_form_two_tasks():
    """Two tasks: the QP optimum is the clipped 1-d least-squares solution along b1 − b2."""
    Lams = [covariances.power_law(4, 0.0), covariances.power_law(4, 1.0)]
    Sigma = covariances.power_law(4, 0.4)
    Si = np.linalg.inv(Sigma)
    b1, b2, e = (Si @ Lams[0]).ravel(), (Si @ Lams[1]).ravel(), np.eye(4).ravel()
    t = np.clip((e - b2) @ (b1 - b2) / ((b1 - b2) @ (b1 - b2)), 0, 1)
    sel = selection.select_surrogate(Lams, Sigma)
    np.testing.assert_allclose(sel.weights, [t, 1 - t], atol=1e-6)


def test_surrogate_recovers_exact_match():
    """If Σ is one of the tasks, the surrogate puts all mass on it (objective 0)."""
    Lams = [covariances.power_law(5, a) for a in (0.0, 0.5, 1.0)]
    sel = selection.select_surrogate(Lams, Lams[1])
    np.testing.assert_allclose(sel.weights, [0, 1, 0], atol=2e-5)  # interior point: ~sqrt(tol) at a zero residual
    assert sel.objective == pytest.approx(0.0, abs=1e-9)


def test_selector_reuse(problem):
    """Re-solving a compiled selector with new tasks or a new target gives that problem's optimum."""
    Lams, _, Sigma = problem
    sel = selection.SurrogateSelector(3, D)
    a = sel.solve(Lams, Sigma).weights
    assert not np.allclose(a, a[::-1], atol=1e-3)               # reversing the tasks changes the answer
    np.testing.assert_allclose(sel.solve(Lams[::-1], Sigma).weights, a[::-1], atol=1e-8)
    other = covariances.power_law(D, 1.2)
    np.testing.assert_allclose(sel.solve(Lams, other).weights, selection.select_surrogate(Lams, other).weights, atol=1e-8)
    assert not np.allclose(selection.select_surrogate(Lams, other).weights, a, atol=1e-3)
    np.testing.assert_allclose(sel.solve(Lams, Sigma).weights, a, atol=1e-8)


def test_exact_gradient_matches_finite_differences(problem):
    Lams, ns, Sigma = problem
    p = np.array([0.2, 0.3, 0.5])
    g = selection.exact_gradient(Lams, ns, p, Sigma, 4)
    assert g @ p == pytest.approx(0.0, abs=1e-8 * np.abs(g).max())  # f is constant along rays
    eps = 1e-7
    for v in (np.array([1.0, -1.0, 0.0]), np.array([0.0, 1.0, -1.0])):
        fd = (selection.exact_objective(Lams, ns, p + eps * v, Sigma, 4)
              - selection.exact_objective(Lams, ns, p - eps * v, Sigma, 4)) / (2 * eps)
        assert g @ v == pytest.approx(fd, rel=1e-5)


def test_exact_objective_is_the_mixture_cot_error(problem):
    """The objective select_exact optimises equals mixtures.mixture_cot_error (mixture_map, theory.map_error)."""
    Lams, ns, Sigma = problem
    for p in np.random.default_rng(5).dirichlet(np.ones(3), size=4):
        for k in (1, 4, 9):
            assert selection.exact_objective(Lams, ns, p, Sigma, k) == pytest.approx(
                mixtures.mixture_cot_error(Lams, ns, p, Sigma, k), rel=1e-10)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_exact_optimum_is_stationary_for_the_tested_gradient(problem, k):
    """First-order optimality on the simplex, measured with exact_gradient: ∂f = 0 on the support
    (f is constant along rays, so the multiplier of Σπ = 1 is 0) and ∂f >= 0 off it."""
    Lams, ns, Sigma = problem
    sel = selection.select_exact(Lams, ns, Sigma, k)
    g = selection.exact_gradient(Lams, ns, sel.weights, Sigma, k)
    scale = np.abs(selection.exact_gradient(Lams, ns, np.full(3, 1 / 3), Sigma, k)).max()
    support = sel.weights > 1e-6
    assert 0 < support.sum() < 3                               # a face of the simplex: both conditions are tested
    assert np.abs(g[support]).max() <= 1e-4 * scale
    assert g[~support].min() >= -1e-6 * scale


def test_exact_beats_grid_and_is_deterministic(problem):
    Lams, ns, Sigma = problem
    sel = selection.select_exact(Lams, ns, Sigma, 5)
    grid = min(selection.exact_objective(Lams, ns, p, Sigma, 5) for p in simplex_grid(3, 40))
    assert sel.objective <= grid * (1 + 1e-9)
    again = selection.select_exact(Lams, ns, Sigma, 5)
    np.testing.assert_array_equal(sel.weights, again.weights)
    assert sel.objective == pytest.approx(selection.exact_objective(Lams, ns, sel.weights, Sigma, 5), rel=1e-12)


def test_exact_prefers_long_prompts_for_same_covariance():
    """Same Λ, n = 10 or 200, in distribution: the exact objective picks the long prompts."""
    Lam = covariances.power_law(D, 0.5)
    sel = selection.select_exact([Lam, Lam], [10, 200], Lam, 3)
    assert sel.weights[1] > 0.99


# ---- validation ----

def test_singular_sigma_surrogate():
    with pytest.raises(ValueError, match="Sigma must be positive definite"):
        selection.select_surrogate([np.eye(3)], covariances.missing_skills(3, 1))


def test_no_task_surrogate():
    with pytest.raises(ValueError, match="at least one task"):
        selection.select_surrogate([], np.eye(3))


def test_mismatched_dimension_exact():
    with pytest.raises(ValueError, match="Sigma must be 3 x 3"):
        selection.select_exact([np.eye(3)], [5], np.eye(4), 2)


def test_exact_k_positive():
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        selection.select_exact([np.eye(3)], [5], np.eye(3), 0)


def test_unknown_solver():
    with pytest.raises(ValueError, match="solver must be one of"):
        selection.select_surrogate([np.eye(3)], np.eye(3), "MOSEK")


def test_surrogate_objective_weights_validated():
    with pytest.raises(ValueError, match="sum to 1"):
        selection.surrogate_objective([np.eye(3), np.eye(3)], [0.3, 0.3], np.eye(3))


def test_selector_shape_mismatch():
    sel = selection.SurrogateSelector(2, 3)
    with pytest.raises(ValueError, match="must hold 2 tasks of dimension 3"):
        sel.solve([np.eye(3)], np.eye(3))


def test_exact_objective_is_not_convex():
    """Along some segment of the simplex the exact error has a negative second difference."""
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 41)
    for trial in range(12):
        Sigma = covariances.power_law(10, [0.0, 0.5, 1.0][trial % 3])
        Lams = mixtures.power_law_tasks(10, [0.2, 0.8, 0.2, 0.8], rotate=trial % 2 == 0, seed=trial)
        p, q = rng.dirichlet(np.ones(4)), rng.dirichlet(np.ones(4))
        f = np.array([selection.exact_objective(Lams, [20, 20, 100, 100], (1 - x) * p + x * q, Sigma, [1, 3, 10][trial % 3])
                      for x in t])
        if (np.diff(f, 2) < -1e-7 * np.abs(f).max()).any():
            return
    pytest.fail("no non-convex segment found")


# ---- selection over a pool of individual prompts ----

def sample_pool(d, lengths, seed):
    """Ŝ_i = X_i X_iᵀ / n_i from numpy draws (not ttscale.prompts): one prompt per entry of lengths."""
    rng = np.random.default_rng(seed)
    root = np.diag(np.sqrt(covariances.power_law_spectrum(d, 0.6)))
    out = []
    for n in lengths:
        X = root @ rng.standard_normal((d, n))
        out.append(X @ X.T / n)
    return np.stack(out)


def pool_kkt(S, Sigma, pi):
    """Gradient of ‖vec(I) − Bπ‖² written out, and the multiplier of Σπ = 1 it implies."""
    d = S.shape[1]
    B = np.stack([(np.linalg.solve(Sigma, Si)).ravel() for Si in S], axis=1)
    g = 2 * B.T @ (B @ pi - np.eye(d).ravel())
    return g, g @ pi


@pytest.mark.parametrize("solver", ["CLARABEL", "OSQP"])
def test_pool_selection_is_on_the_simplex_and_satisfies_kkt(solver):
    S = sample_pool(4, [3, 5, 8, 12, 30] * 3, seed=1)
    Sigma = covariances.power_law(4, 0.9)
    sel = selection.select_pool(S, Sigma, solver)
    assert sel.weights.shape == (15,) and sel.weights.min() >= 0
    assert sel.weights.sum() == pytest.approx(1.0, abs=1e-12)
    g, lam = pool_kkt(S, Sigma, sel.weights)
    scale = np.abs(g).max()
    support = sel.weights > 1e-5
    assert 0 < support.sum() < 15                               # a face: both conditions are tested
    assert np.abs(g[support] - lam).max() <= 1e-4 * scale       # stationary on the support
    assert g[~support].min() >= lam - 1e-6 * scale              # no descent into an unused prompt
    assert sel.objective == pytest.approx(selection.pool_objective(S, sel.weights, Sigma), rel=1e-12)


def test_pool_selection_matches_brute_force_on_tiny_pools():
    for seed in range(3):
        S = sample_pool(3, [2, 6, 20], seed=10 + seed)
        Sigma = covariances.power_law(3, 0.4 + 0.3 * seed)
        sel = selection.select_pool(S, Sigma)
        grid = simplex_grid(3, 200)
        R = np.eye(3) - np.einsum("ij,gjk->gik", np.linalg.inv(Sigma), np.einsum("gi,ijk->gjk", grid, S))
        vals = (R ** 2).sum(axis=(1, 2))                         # the objective written out, on every grid point
        assert sel.objective <= vals.min() + 1e-9
        np.testing.assert_allclose(sel.weights, grid[vals.argmin()], atol=0.011)   # unique optimum, grid spacing 0.005


def test_pool_puts_all_mass_on_a_prompt_equal_to_the_target():
    S = sample_pool(3, [4, 9, 15, 40], seed=2)
    sel = selection.select_pool(S, S[2])
    assert sel.weights[2] > 1 - 1e-4 and sel.objective == pytest.approx(0.0, abs=1e-8)


def test_pool_exact_objective_and_gradient():
    S = sample_pool(3, [4, 9, 15, 40], seed=3)
    Sigma = covariances.power_law(3, 0.7)
    p = np.array([0.1, 0.2, 0.3, 0.4])
    Sbar = np.einsum("i,ijk->jk", p, S)
    M = np.einsum("i,ijk,ikl->jl", p, S, S)
    E = np.eye(3) - Sbar @ np.linalg.inv(M) @ Sigma
    for k in (1, 4):
        F = np.linalg.matrix_power(E, k)
        assert selection.pool_exact_objective(S, p, Sigma, k) == pytest.approx(np.sum(F * F), rel=1e-10)
    g = selection.pool_exact_gradient(S, p, Sigma, 4)
    eps = 1e-7
    for v in (np.array([1.0, -1.0, 0.0, 0.0]), np.array([0.0, 0.5, 0.5, -1.0])):
        fd = (selection.pool_exact_objective(S, p + eps * v, Sigma, 4)
              - selection.pool_exact_objective(S, p - eps * v, Sigma, 4)) / (2 * eps)
        assert g @ v == pytest.approx(fd, rel=1e-5)


def test_pool_exact_selection_beats_grid():
    S = sample_pool(3, [3, 10, 40], seed=4)
    Sigma = covariances.power_law(3, 0.5)
    sel = selection.select_pool_exact(S, Sigma, 3)
    grid = min(selection.pool_exact_objective(S, q, Sigma, 3) for q in simplex_grid(3, 60))
    assert sel.objective <= grid * (1 + 1e-9)
    np.testing.assert_array_equal(sel.weights, selection.select_pool_exact(S, Sigma, 3).weights)


def test_pool_bad_inputs():
    S = sample_pool(3, [4, 5], seed=0)
    bad = S.copy()
    bad[1] = np.diag([1.0, 1.0, -0.5])
    with pytest.raises(ValueError, match=r"S\[1\] must be positive semi-definite"):
        selection.select_pool(bad, np.eye(3))
    with pytest.raises(ValueError, match="Sigma must be 3 x 3"):
        selection.select_pool(S, np.eye(4))
    with pytest.raises(ValueError, match="pool is empty"):
        selection.select_pool(np.zeros((0, 3, 3)), np.eye(3))
    with pytest.raises(ValueError, match=r"S must be a stack of square matrices"):
        selection.select_pool(np.eye(3), np.eye(3))
    asym = S.copy()
    asym[0, 0, 1] += 0.1
    with pytest.raises(ValueError, match=r"S\[0\] must be symmetric"):
        selection.pool_objective(asym, [0.5, 0.5], np.eye(3))
    with pytest.raises(ValueError, match="Sigma must be positive definite"):
        selection.select_pool(S, np.diag([1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        selection.select_pool_exact(S, np.eye(3), 0)
    with pytest.raises(ValueError, match="must hold 2 prompts of dimension 3"):
        selection.PoolSelector(2, 3).solve(S[:1], np.eye(3))

"""The vectorised objectives (a stack of weight vectors at once) against the one-point functions."""

import numpy as np
import pytest

from ttscale import covariances, mixtures, selection


@pytest.fixture
def problem():
    Lams = mixtures.power_law_tasks(5, [0.1, 0.9, 0.5], rotate=True, seed=8)
    return Lams, [6, 30, 12], covariances.power_law(5, 0.7)


def weights(n, L=3, seed=0):
    W = np.random.default_rng(seed).dirichlet(np.ones(L), size=n)
    return np.vstack([W, np.eye(L), [[0.5, 0.5, 0.0]]])   # vertices and an edge too


def test_surrogate_objectives_match_one_point(problem):
    Lams, _, Sigma = problem
    W = weights(40)
    got = selection.surrogate_objectives(Lams, W, Sigma)
    want = [selection.surrogate_objective(Lams, w, Sigma) for w in W]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("k", [1, 4, 11])
def test_exact_objectives_match_one_point(problem, k):
    Lams, ns, Sigma = problem
    W = weights(40, seed=k)
    got = selection.exact_objectives(Lams, ns, W, Sigma, k)
    want = [selection.exact_objective(Lams, ns, w, Sigma, k) for w in W]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-300)


def test_exact_objectives_singular_mixture():
    """A type that leaves a skill unseen: the pseudo-inverse, as mixtures.mixture_cot_error uses."""
    Lams = [np.diag([1.0, 1.0, 0.0]), np.eye(3)]
    Sigma = np.diag([1.0, 0.5, 0.2])
    W = np.array([[1.0, 0.0], [0.7, 0.3]])
    got = selection.exact_objectives(Lams, [5, 9], W, Sigma, 3)
    want = [mixtures.mixture_cot_error(Lams, [5, 9], w, Sigma, 3) for w in W]
    np.testing.assert_allclose(got, want, rtol=1e-9)
    assert got[0] >= 1.0   # the unseen skill keeps its unit error


@pytest.mark.parametrize("bad, message", [
    (np.array([0.5, 0.5, 0.0]), "stack"),
    (np.array([[0.5, 0.6, 0.0]]), "must sum to 1"),
    (np.array([[1.2, -0.2, 0.0]]), "non-negative"),
    (np.array([[np.nan, 0.5, 0.5]]), "finite"),
])
def test_vectorised_objectives_validate_weights(problem, bad, message):
    Lams, ns, Sigma = problem
    with pytest.raises(ValueError, match=message):
        selection.surrogate_objectives(Lams, bad, Sigma)
    with pytest.raises(ValueError, match=message):
        selection.exact_objectives(Lams, ns, bad, Sigma, 2)


def test_pool_solve_targets_match_one_target_solves():
    """One pool, several targets, validated once: each the same optimum as a fresh select_pool."""
    from ttscale import prompts

    Lam = covariances.power_law(4, 0.6)
    S = prompts.sample_covariance(prompts.sample(Lam, 6, 9, seed=1).X).numpy()
    Sigmas = [covariances.power_law(4, a) for a in (0.2, 0.9)]
    got = selection.PoolSelector(9, 4).solve_targets(S, Sigmas)
    for sel, Sigma in zip(got, Sigmas):
        want = selection.select_pool(S, Sigma)
        np.testing.assert_allclose(sel.weights, want.weights, atol=1e-9)
        assert sel.objective == pytest.approx(selection.pool_objective(S, sel.weights, Sigma), rel=1e-12)
    with pytest.raises(ValueError, match="Sigmas"):
        selection.PoolSelector(9, 4).solve_targets(S, [])

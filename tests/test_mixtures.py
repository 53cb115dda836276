"""Tests for ttscale.mixtures: the mixture map A = Λ̄M⁻¹, its CoT error and the mixture sampler."""

import numpy as np
import pytest
import torch

from ttscale import covariances, lsa, mixtures, prompts, theory

D = 6


@pytest.fixture
def tasks():
    return mixtures.power_law_tasks(D, [0.2, 0.8, 0.5], rotate=True, seed=3), np.array([10, 40, 25])


def test_single_type_map_is_gamma_inverse(tasks):
    Lams, ns = tasks
    for l in range(3):
        A = mixtures.mixture_map(Lams, ns, np.eye(3)[l])
        np.testing.assert_allclose(A, np.linalg.inv(theory.gamma(Lams[l], ns[l])), rtol=1e-10, atol=1e-12)


def test_single_type_error_matches_theory(tasks):
    Lams, ns = tasks
    Sigma = covariances.power_law(D, 0.5, rotate=True, seed=9)
    ks = np.array([0, 1, 3, 7])
    np.testing.assert_allclose(mixtures.mixture_cot_error(Lams, ns, [0, 1, 0], Sigma, ks),
                               theory.cot_error(Lams[1], ns[1], ks, Sigma), rtol=1e-9)


def test_map_minimises_monte_carlo_loss(tasks):
    """A = Λ̄M⁻¹ is close to the minimiser of the empirical mixture loss built from independent draws."""
    Lams, ns = tasks
    pi = np.array([0.2, 0.5, 0.3])
    Lbar, M = mixtures.mixture_moments(Lams, ns, pi)
    # the empirical loss d − 2 tr(AΛ̄_mc) + tr(A M_mc Aᵀ) from sampled prompts: Λ̄_mc, M_mc = Σ π mean(Ŝ), Σ π mean(Ŝ²)
    Lbar_mc, M_mc = np.zeros((D, D)), np.zeros((D, D))
    for l in range(3):
        X = prompts.sample(Lams[l], int(ns[l]), 20000, seed=1, step=l).X.numpy()
        S = X @ X.transpose(0, 2, 1) / ns[l]
        Lbar_mc += pi[l] * S.mean(axis=0)
        M_mc += pi[l] * (S @ S).mean(axis=0)
    assert np.linalg.norm(M_mc - M) / np.linalg.norm(M) < 0.02
    assert np.linalg.norm(Lbar_mc - Lbar) / np.linalg.norm(Lbar) < 0.02
    A = mixtures.mixture_map(Lams, ns, pi)
    np.testing.assert_allclose(A @ M, Lbar, atol=1e-10)   # A solves the normal equations A M = Λ̄
    A_mc = Lbar_mc @ np.linalg.inv(M_mc)        # where the empirical loss's gradient 2(A M_mc − Λ̄_mc) vanishes
    assert np.linalg.norm(A_mc - A) / np.linalg.norm(A) < 0.03
    gap = min(np.linalg.norm(np.linalg.inv(theory.gamma(L, n)) - A) for L, n in zip(Lams, ns))
    assert np.linalg.norm(A_mc - A) < gap / 3   # closer to A than to any single-type map


def test_map_depends_only_on_proportions(tasks):
    """Scaled weights c·π: Λ̄(cπ)M(cπ)⁻¹, built from the definitions, is mixture_map(π) for every c.

    mixture_map itself only takes probability vectors (the simplex fixes the scale), so the
    scaled moments are assembled here from theory.gamma; the weights are also given to
    mixture_map in another order of the types, and as a vector off the simplex it must refuse.
    """
    Lams, ns = tasks
    pi = np.array([0.2, 0.5, 0.3])
    A = mixtures.mixture_map(Lams, ns, pi)
    Lbar, M = mixtures.mixture_moments(Lams, ns, pi)
    for c in (1e-3, 1.0, 7.0, 250.0):
        Lbar_c = sum(c * p * L for p, L in zip(pi, Lams))
        M_c = sum(c * p * theory.gamma(L, n) @ L for p, L, n in zip(pi, Lams, ns))
        np.testing.assert_allclose(Lbar_c @ np.linalg.inv(M_c), A, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(c * Lbar, Lbar_c, rtol=1e-12)
        np.testing.assert_allclose(c * M, M_c, rtol=1e-12)
    perm = [2, 0, 1]
    np.testing.assert_allclose(mixtures.mixture_map(Lams[perm], ns[perm], pi[perm]), A, rtol=1e-10, atol=1e-12)
    assert not np.allclose(mixtures.mixture_map(Lams, ns, pi[perm]), A, rtol=1e-3)   # the weights do matter
    with pytest.raises(ValueError, match="sum to 1"):
        mixtures.mixture_map(Lams, ns, 3 * pi)


def test_singular_mixture_uses_min_norm_map():
    Lam = covariances.missing_skills(4, 1)
    A = mixtures.mixture_map([Lam], [10], [1.0])
    G_inv = np.linalg.inv(theory.gamma(Lam, 10))
    np.testing.assert_allclose(A[:, :3], G_inv[:, :3], atol=1e-12)
    np.testing.assert_allclose(A[:, 3], 0.0, atol=1e-12)


def test_sampler_groups_and_determinism(tasks):
    Lams, ns = tasks
    s = mixtures.mixture_sampler(Lams, ns, [0.5, 0.5, 0.0], batch=64, seed=2)
    groups = s(5)
    assert sum(g.X.shape[0] for g in groups) == 64
    assert {g.X.shape[2] for g in groups} <= {10, 40}          # the zero-weight type never appears
    again = s(5)
    for g, h in zip(groups, again):
        assert torch.equal(g.X, h.X)
    assert not torch.equal(s(6)[0].X, groups[0].X)


def test_counts_follow_weights():
    counts = np.array([mixtures.mixture_counts([0.1, 0.6, 0.3], 100, 0, t) for t in range(400)]).sum(axis=0)
    freq = counts / counts.sum()
    np.testing.assert_allclose(freq, [0.1, 0.6, 0.3], atol=5 * np.sqrt(0.25 / 40000))


@pytest.fixture
def one_thread():
    """Tiny matrices: one torch thread avoids contention on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_training_reaches_mixture_map(one_thread):
    torch.manual_seed(0)
    Lams = mixtures.power_law_tasks(4, [0.0, 1.0])
    ns = [5, 30]
    pi = [0.5, 0.5]
    A = mixtures.mixture_map(Lams, ns, pi)
    _, A_hat, losses = mixtures.train_mixture(Lams, ns, pi, batch=128, lrs=(0.03, 0.005), steps_per_lr=150, seed=1)
    assert np.linalg.norm(A_hat - A) / np.linalg.norm(A) < 0.05
    gap = min(np.linalg.norm(np.linalg.inv(theory.gamma(L, n)) - A) for L, n in zip(Lams, ns))
    assert np.linalg.norm(A_hat - A) < gap / 3
    assert losses.shape == (300,)


def test_pair_rotation():
    U = mixtures.pair_rotation(5, 0.3)
    np.testing.assert_allclose(U.T @ U, np.eye(5), atol=1e-12)
    np.testing.assert_allclose(mixtures.pair_rotation(4, 0.0), np.eye(4))
    lam = np.array([4.0, 3.0, 2.0, 1.0])
    V = mixtures.pair_rotation(4, np.pi / 2)
    np.testing.assert_allclose(np.diag(V @ np.diag(lam) @ V.T), lam[::-1], atol=1e-12)


def test_power_law_tasks_aligned_and_rotated():
    aligned = mixtures.power_law_tasks(5, [0.2, 0.8])
    assert np.allclose(aligned[0], np.diag(np.diag(aligned[0])))
    rot = mixtures.power_law_tasks(5, [0.8, 0.8], rotate=True, seed=1)
    assert not np.allclose(rot[0], rot[1])
    np.testing.assert_allclose(np.trace(rot, axis1=1, axis2=2), 5.0)


# ---- validation: one test per rule ----

def test_weights_negative():
    with pytest.raises(ValueError, match="non-negative"):
        mixtures.validate_weights([1.2, -0.2], 2)


def test_weights_sum():
    with pytest.raises(ValueError, match="sum to 1"):
        mixtures.validate_weights([0.5, 0.4], 2)


def test_weights_length():
    with pytest.raises(ValueError, match="one probability per task type"):
        mixtures.validate_weights([1.0], 2)


def test_weights_finite():
    with pytest.raises(ValueError, match="finite"):
        mixtures.validate_weights([np.nan, 1.0], 2)


def test_weights_roundoff_is_cleaned():
    w = mixtures.validate_weights([1.0 + 1e-9, -1e-9], 2)
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0, abs=1e-15)


def test_no_task():
    with pytest.raises(ValueError, match="at least one task"):
        mixtures.mixture_map([], [], [])


def test_single_matrix_instead_of_list():
    with pytest.raises(ValueError, match="list of covariance"):
        mixtures.validate_tasks(np.eye(3))


def test_mismatched_dimensions():
    with pytest.raises(ValueError, match=r"Lams\[1\] must be 3 x 3"):
        mixtures.mixture_map([np.eye(3), np.eye(4)], [5, 5], [0.5, 0.5])


def test_n_trains_length():
    with pytest.raises(ValueError, match="one prompt length per task type"):
        mixtures.mixture_map([np.eye(3), np.eye(3)], [5], [0.5, 0.5])


def test_n_trains_positive():
    with pytest.raises(ValueError, match=r"n_trains\[0\] must be an integer >= 1"):
        mixtures.mixture_map([np.eye(3)], [0], [1.0])


def test_zero_task():
    with pytest.raises(ValueError, match="non-zero"):
        mixtures.validate_tasks([np.zeros((3, 3))])


def test_sigma_dimension():
    with pytest.raises(ValueError, match="Sigma must be 3 x 3"):
        mixtures.mixture_cot_error([np.eye(3)], [5], [1.0], np.eye(4), 2)


def test_sampler_validates_weights():
    with pytest.raises(ValueError, match="sum to 1"):
        mixtures.mixture_sampler([np.eye(3)], [5], [0.5], 8)


def test_population_loss_matches_the_lsa_built_from_A(tasks):
    """The LSA built from A predicts ŵ = AŜw, and its Monte Carlo loss matches the formula."""
    Lams, ns = tasks
    pi = [0.3, 0.3, 0.4]
    A = mixtures.mixture_map(Lams, ns, pi)
    model = lsa.from_map(A, c=0.5)
    np.testing.assert_allclose(lsa.applied_map(model, 0.5), A, atol=1e-12)
    groups = mixtures.mixture_sampler(Lams, ns, pi, 6000, seed=3, stream="eval")(0)
    errs = np.concatenate([((lsa.rollout(model, g.X, g.y, 1)[:, 1] - g.w) ** 2).sum(1).numpy() for g in groups])
    pred = mixtures.population_loss(A, Lams, ns, pi)
    assert abs(errs.mean() - pred) < 5 * errs.std(ddof=1) / np.sqrt(errs.size)
    # the formula's minimum: any perturbation of A raises it
    assert mixtures.population_loss(A + 0.01 * np.eye(D), Lams, ns, pi) > pred




def test_sampler_draws_what_prompts_sample_draws(tasks):
    """The sampler caches each type's factor, but its batches are prompts.sample's, bit for bit."""
    Lams, ns = tasks
    pi = [0.2, 0.5, 0.3]
    s = mixtures.mixture_sampler(Lams, ns, pi, batch=50, seed=4, stream="eval")
    for step in (0, 3, 11):
        counts = mixtures.mixture_counts(pi, 50, 4, step)
        expected = [prompts.sample(Lams[l], int(ns[l]), int(c), seed=4, stream="eval", step=step * len(Lams) + l)
                    for l, c in enumerate(counts) if c > 0]
        got = s(step)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert torch.equal(g.X, e.X) and torch.equal(g.y, e.y) and torch.equal(g.w, e.w)

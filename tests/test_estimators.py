"""Tests of ttscale.estimators: the pseudo-Newton recursion, the classical baselines, the estimated preconditioner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ttscale import covariances as cv
from ttscale import estimators, prompts, simulation, theory


def _prompts(d=6, m=12, b=50, seed=0, alpha=1.0):
    return prompts.sample(cv.power_law(d, alpha), m, b, seed=seed, stream="test")


def test_ols_recovers_w_noise_free():
    P = _prompts(m=10)
    assert torch.allclose(estimators.ols(P.X, P.y), P.w, atol=1e-9)


def test_ols_needs_m_at_least_d():
    P = _prompts(d=6, m=4)
    with pytest.raises(ValueError, match="at least d = 6"):
        estimators.ols(P.X, P.y)


def test_min_norm_interpolates_and_is_minimal():
    P = _prompts(d=8, m=3)
    w = estimators.min_norm_least_squares(P.X, P.y)
    assert torch.allclose(torch.einsum("bdm,bd->bm", P.X, w), P.y, atol=1e-9)
    # min-norm solution lies in the column span of X: w = X a
    a = torch.linalg.lstsq(P.X, w[:, :, None]).solution
    assert torch.allclose(P.X @ a, w[:, :, None], atol=1e-9)
    # independent computation: X (XᵀX)⁻¹ y
    ref = (P.X @ torch.linalg.solve(P.X.transpose(1, 2) @ P.X, P.y[:, :, None]))[:, :, 0]
    assert torch.allclose(w, ref, atol=1e-8)


def test_min_norm_equals_ols_when_overdetermined():
    P = _prompts(d=5, m=20)
    assert torch.allclose(estimators.min_norm_least_squares(P.X, P.y), estimators.ols(P.X, P.y), atol=1e-9)


def test_min_norm_error_is_d_minus_m():
    P = prompts.sample(cv.power_law(10, 0.7), 4, 4000, seed=3, stream="test")
    e = simulation.squared_errors(estimators.min_norm_least_squares(P.X, P.y), P.w)
    assert abs(e.mean() - 6) < 5 * e.std() / np.sqrt(e.size)


def test_ridge_matches_formula_and_limits():
    P = _prompts()
    lam = 0.3
    X = P.X.numpy()[0]
    y = P.y.numpy()[0]
    ref = np.linalg.solve(X @ X.T / X.shape[1] + lam * np.eye(6), X @ y / X.shape[1])
    assert np.allclose(estimators.ridge(P.X, P.y, lam)[0].numpy(), ref)
    assert torch.allclose(estimators.ridge(P.X, P.y, 1e-10), estimators.ols(P.X, P.y), atol=1e-6)
    assert estimators.ridge(P.X, P.y, 1e8).abs().max() < 1e-6


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "a"])
def test_ridge_penalty_rule(bad):
    P = _prompts()
    with pytest.raises(ValueError, match="penalty"):
        estimators.ridge(P.X, P.y, bad)


def test_gd_step_size_is_inverse_top_eigenvalue():
    P = _prompts()
    S = (P.X @ P.X.transpose(1, 2) / P.X.shape[2]).numpy()
    ref = 1 / np.linalg.eigvalsh(S)[:, -1]
    assert np.allclose(estimators.gd_step_size(P.X).numpy(), ref)


def test_gradient_descent_per_prompt_step_matches_loop():
    P = _prompts(b=4)
    path = estimators.gradient_descent(P.X, P.y, 3)
    eta = estimators.gd_step_size(P.X)
    for i in range(4):  # independent per-prompt loop
        X, y = P.X[i], P.y[i]
        w = torch.zeros(6, dtype=X.dtype)
        for k in range(3):
            w = w - eta[i] * (X @ (X.T @ w - y)) / X.shape[1]
            assert torch.allclose(path[i, k + 1], w, atol=1e-12)


def test_gradient_descent_fixed_step_and_contracts():
    P = _prompts(m=30)
    e = simulation.squared_errors(estimators.gradient_descent(P.X, P.y, 50), P.w)
    assert np.all(np.diff(e.mean(0)) <= 1e-12)
    fixed = estimators.gradient_descent(P.X, P.y, 2, step=0.1)
    ref = estimators.preconditioned_steps(P.X, P.y, 0.1 * torch.eye(6, dtype=P.X.dtype), 2)
    assert torch.allclose(fixed, ref)
    with pytest.raises(ValueError, match="step must be > 0"):
        estimators.gradient_descent(P.X, P.y, 2, step=0.0)


def test_newton_is_one_step_exact_at_population():
    Lam = cv.power_law(5, 1.0)
    P = prompts.sample(Lam, 20000, 3, seed=0, stream="test")
    w1 = estimators.newton(P.X, P.y, Lam, 1)[:, 1]
    assert torch.allclose(w1, P.w, atol=0.1)
    ref = estimators.preconditioned_steps(P.X, P.y, torch.as_tensor(np.linalg.inv(Lam)), 1)
    assert torch.allclose(estimators.newton(P.X, P.y, Lam, 1), ref)


def test_newton_needs_definite_lam():
    P = prompts.sample(cv.missing_skills(5, 1), 10, 2, seed=0)
    with pytest.raises(ValueError, match="positive definite"):
        estimators.newton(P.X, P.y, cv.missing_skills(5, 1), 2)


def test_shape_rule():
    with pytest.raises(ValueError, match="X must be"):
        estimators.ols(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="X must have shape"):
        estimators.gd_step_size(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="k must be"):
        estimators.gradient_descent(*_prompts()[:2], -1)


def _set(Lam, n, R, N, seed=0):
    P = prompts.sample(Lam, n, R * N, seed=seed, stream="preconditioner")
    d = Lam.shape[0]
    return P.X.reshape(R, N, d, n), P.w.reshape(R, N, d)


def test_plugin_converges_to_gamma_inverse():
    Lam = cv.power_law(5, 1.0)
    X, _ = _set(Lam, 10, 2, 2000)
    P = estimators.plugin_gamma_inverse(X, 10)
    assert P.shape == (2, 5, 5)
    assert np.allclose(P.numpy(), np.linalg.inv(theory.gamma(Lam, 10)), atol=0.03)


def test_plugin_matches_numpy_on_small_sample():
    Lam = cv.identity(3)
    X, _ = _set(Lam, 4, 1, 2)
    Xf = np.concatenate([X[0, 0].numpy(), X[0, 1].numpy()], axis=1)
    L = Xf @ Xf.T / 8
    ref = np.linalg.inv(theory.gamma(L, 4))
    assert np.allclose(estimators.plugin_gamma_inverse(X, 4)[0].numpy(), ref)


def test_erm_minimises_training_loss_and_converges():
    Lam = cv.power_law(4, 1.0)
    X, w = _set(Lam, 6, 1, 200)
    A = estimators.erm_preconditioner(X, w)[0]
    u = torch.einsum("pdn,pen,pe->pd", X[0], X[0], w[0]) / 6

    def loss(M):
        return ((w[0] - u @ M.T) ** 2).sum()

    # independent check: least squares w_p ≈ A u_p row by row
    ref = torch.linalg.lstsq(u, w[0]).solution.T
    assert torch.allclose(A, ref, atol=1e-8)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        assert loss(A) <= loss(A + 1e-3 * torch.randn(4, 4, generator=g, dtype=A.dtype))
    X, w = _set(Lam, 6, 1, 40000, seed=1)
    A = estimators.erm_preconditioner(X, w)[0].numpy()
    assert np.abs(A - np.linalg.inv(theory.gamma(Lam, 6))).max() < 0.1


def test_erm_underdetermined_uses_min_norm():
    X, w = _set(cv.identity(5), 4, 1, 2)
    A = estimators.erm_preconditioner(X, w)[0]
    assert torch.linalg.matrix_rank(A) <= 2


def test_rules():
    with pytest.raises(ValueError, match="replicates, N prompts"):
        estimators.plugin_gamma_inverse(torch.zeros(2, 3, 4), 5)
    with pytest.raises(ValueError, match="n_train"):
        estimators.plugin_gamma_inverse(torch.zeros(1, 2, 3, 4), 0)
    with pytest.raises(ValueError, match="w must have shape"):
        estimators.erm_preconditioner(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 4))

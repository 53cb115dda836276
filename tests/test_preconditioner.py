import numpy as np
import pytest
import torch

from ttscale import covariances as cv
from ttscale import preconditioner, prompts, theory


def _set(Lam, n, R, N, seed=0):
    P = prompts.sample(Lam, n, R * N, seed=seed, stream="preconditioner")
    d = Lam.shape[0]
    return P.X.reshape(R, N, d, n), P.w.reshape(R, N, d)


def test_plugin_converges_to_gamma_inverse():
    Lam = cv.power_law(5, 1.0)
    X, _ = _set(Lam, 10, 2, 2000)
    P = preconditioner.plugin_gamma_inverse(X, 10)
    assert P.shape == (2, 5, 5)
    assert np.allclose(P.numpy(), np.linalg.inv(theory.gamma(Lam, 10)), atol=0.03)


def test_plugin_matches_numpy_on_small_sample():
    Lam = cv.identity(3)
    X, _ = _set(Lam, 4, 1, 2)
    Xf = np.concatenate([X[0, 0].numpy(), X[0, 1].numpy()], axis=1)
    L = Xf @ Xf.T / 8
    ref = np.linalg.inv(theory.gamma(L, 4))
    assert np.allclose(preconditioner.plugin_gamma_inverse(X, 4)[0].numpy(), ref)


def test_erm_minimises_training_loss_and_converges():
    Lam = cv.power_law(4, 1.0)
    X, w = _set(Lam, 6, 1, 200)
    A = preconditioner.erm_preconditioner(X, w)[0]
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
    A = preconditioner.erm_preconditioner(X, w)[0].numpy()
    assert np.abs(A - np.linalg.inv(theory.gamma(Lam, 6))).max() < 0.1


def test_erm_underdetermined_uses_min_norm():
    X, w = _set(cv.identity(5), 4, 1, 2)
    A = preconditioner.erm_preconditioner(X, w)[0]
    assert torch.linalg.matrix_rank(A) <= 2


def test_rules():
    with pytest.raises(ValueError, match="replicates, N prompts"):
        preconditioner.plugin_gamma_inverse(torch.zeros(2, 3, 4), 5)
    with pytest.raises(ValueError, match="n_train"):
        preconditioner.plugin_gamma_inverse(torch.zeros(1, 2, 3, 4), 0)
    with pytest.raises(ValueError, match="w must have shape"):
        preconditioner.erm_preconditioner(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 4))

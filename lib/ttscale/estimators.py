"""Estimators of w from one prompt, batched (torch): the recursion CoT implements, its classical
baselines, and the preconditioner estimated from finitely many training prompts.

The pseudo-Newton recursion that test-time CoT implements (paper Proposition 3.2),

    ŵ_{i+1} = ŵ_i − P (Ŝ_m ŵ_i − X y / m),

is a preconditioned gradient step on ℓ(ŵ) = (1/2m)‖y − Xᵀŵ‖² (its gradient is
Ŝ_m ŵ − X y/m, and X y/m = Ŝ_m w). P = Γ⁻¹ is what the trained LSA uses, P = Λ⁻¹ is exact
Newton with the population Hessian, P = η I is plain gradient descent.

Baselines on a prompt (X, y) with y = Xᵀw exactly (no label noise):

- :func:`ols` solves the normal equations Ŝ_m ŵ = X y / m (needs m >= d); it is exact Newton
  with the *empirical* Hessian Ŝ_m, so it recovers w in one step, up to rounding.
- :func:`min_norm_least_squares` is ŵ = (Xᵀ)⁺ y, the interpolating solution of smallest norm;
  it equals OLS when m >= d and projects w onto the span of the x_i when m < d.
- :func:`ridge` is ŵ = (Ŝ_m + λ I)⁻¹ X y / m, shrunk towards 0.
- :func:`gradient_descent` and :func:`newton` are the recursion with P = η I (plain gradient
  descent, step :func:`gd_step_size`) and P = Λ⁻¹ (Newton with the population Hessian, Λ known).

The preconditioner learned from N training prompts (Theorem 3.1 has N → ∞):

- :func:`plugin_gamma_inverse`: estimate Λ by the pooled sample covariance Λ̂ of all N·n
  training features and plug it into Γ = (1 + 1/n)Λ + (tr Λ/n) I;
- :func:`erm_preconditioner`: the matrix A minimising the training loss on exactly those N
  prompts, Σ_p ‖w_p − A Ŝ_p w_p‖², i.e. A = (Σ w_p u_pᵀ)(Σ u_p u_pᵀ)⁺ with u_p = Ŝ_p w_p — the
  limit of gradient descent from V = 0 on the V_{w,x} block alone (other blocks frozen at 0).
"""

from __future__ import annotations

import numpy as np
import torch
from . import checks, theory
from .prompts import sample_covariance

__all__ = ['preconditioned_steps', 'pseudo_newton', 'ols', 'min_norm_least_squares', 'ridge', 'gd_step_size', 'gradient_descent', 'newton', 'plugin_gamma_inverse', 'erm_preconditioner']


@torch.no_grad()
def preconditioned_steps(X: torch.Tensor, y: torch.Tensor, P, k: int) -> torch.Tensor:
    """ŵ_0 = 0, …, ŵ_k of the preconditioned recursion; returns (batch, k+1, d).

    ``P`` is one (d, d) matrix shared by all prompts or a (batch, d, d) stack.
    """
    k = checks.nonnegative_int(k, "k")
    X = checks.tensor(X, "X", ndim=3)
    y = checks.tensor(y, "y", ndim=2, dtype=X.dtype)
    b, d, m = X.shape
    P = checks.tensor(P, "P", dtype=X.dtype)
    if P.shape not in ((d, d), (b, d, d)):
        raise ValueError(f"P must be (d, d) = {(d, d)} or (batch, d, d), got {tuple(P.shape)}")
    S = sample_covariance(X)
    Xy = torch.einsum("bdn,bn->bd", X, y) / m
    w_hat = X.new_zeros(b, d)
    out = [w_hat]
    spec = "ij,bj->bi" if P.ndim == 2 else "bij,bj->bi"  # one P for all prompts, or one each
    for _ in range(k):  # sequential steps of one recursion, each vectorised over the batch
        grad = torch.einsum("bij,bj->bi", S, w_hat) - Xy
        w_hat = w_hat - torch.einsum(spec, P, grad)
        out.append(w_hat)
    return torch.stack(out, dim=1)


def pseudo_newton(X: torch.Tensor, y: torch.Tensor, Lam, n_train: int, k: int) -> torch.Tensor:
    """The recursion with P = Γ⁻¹ (Γ from ``Lam`` and ``n_train``): what CoT computes."""
    G_inv = np.linalg.inv(theory.gamma(Lam, n_train))
    checks.same_dim(G_inv.shape[0], X.shape[1], "X")
    return preconditioned_steps(X, y, torch.as_tensor(G_inv, dtype=X.dtype), k)


def _check_prompt(X: torch.Tensor, y: torch.Tensor):
    X = checks.tensor(X, "X")
    y = checks.tensor(y, "y", dtype=X.dtype)
    if X.ndim != 3 or y.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[2] != y.shape[1]:
        raise ValueError(f"X must be (batch, d, m) and y (batch, m) with matching sizes, got {tuple(X.shape)} and {tuple(y.shape)}")
    return X, y


@torch.no_grad()
def ols(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Ordinary least squares ŵ = (X Xᵀ)⁻¹ X y for each prompt, (batch, d); needs m >= d.
    """
    X, y = _check_prompt(X, y)
    b, d, m = X.shape
    if m < d:
        raise ValueError(f"ols needs at least d = {d} examples per prompt (X Xᵀ is singular), got m = {m}; "
                         "use min_norm_least_squares")
    return torch.linalg.solve(X @ X.transpose(1, 2), torch.einsum("bdm,bm->bd", X, y))


@torch.no_grad()
def min_norm_least_squares(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """ŵ = (Xᵀ)⁺ y, the smallest-norm ŵ with Xᵀŵ = y (any m), shape (batch, d).

    For m < d and w ~ N(0, I) independent of X its error is E‖ŵ − w‖² = d − m exactly
    (ŵ is the projection of w onto the m-dimensional span of the x_i).
    """
    X, y = _check_prompt(X, y)
    return (torch.linalg.pinv(X.transpose(1, 2)) @ y[:, :, None])[:, :, 0]


@torch.no_grad()
def ridge(X: torch.Tensor, y: torch.Tensor, penalty: float) -> torch.Tensor:
    """Ridge regression ŵ = (Ŝ_m + λ I)⁻¹ X y / m with λ = ``penalty`` > 0, (batch, d).

    The penalty is on the 1/m-normalised scale of Ŝ_m = X Xᵀ / m.
    """
    X, y = _check_prompt(X, y)
    penalty = checks.positive_real(penalty, "penalty")
    b, d, m = X.shape
    A = sample_covariance(X) + penalty * torch.eye(d, dtype=X.dtype)
    return torch.linalg.solve(A, torch.einsum("bdm,bm->bd", X, y) / m)


@torch.no_grad()
def gd_step_size(X: torch.Tensor) -> torch.Tensor:
    """The classical safe step η = 1 / λ_max(Ŝ_m) of each prompt's loss (1/L), shape (batch,).

    ℓ(ŵ) = (1/2m)‖y − Xᵀŵ‖² has Hessian Ŝ_m, so with this step every direction is multiplied
    by 1 − η λ_j ∈ [0, 1]: it contracts, except the null directions of Ŝ_m (λ_j = 0, which exist
    when m < d), which stay where they are.
    """
    if X.ndim != 3:
        raise ValueError(f"X must have shape (batch, d, m), got {tuple(X.shape)}")
    return 1.0 / torch.linalg.eigvalsh(sample_covariance(X))[:, -1]


def gradient_descent(X: torch.Tensor, y: torch.Tensor, k: int, step=None) -> torch.Tensor:
    """k steps of plain gradient descent from ŵ_0 = 0: ŵ_0 … ŵ_k, shape (batch, k+1, d).

    ``step`` is one positive float for every prompt, or ``None`` for each prompt's own
    :func:`gd_step_size`.
    """
    X, y = _check_prompt(X, y)
    b, d, _ = X.shape
    eye = torch.eye(d, dtype=X.dtype)
    if step is None:
        P = gd_step_size(X)[:, None, None] * eye
    else:
        P = checks.positive_real(step, "step") * eye
    return preconditioned_steps(X, y, P, k)


def newton(X: torch.Tensor, y: torch.Tensor, Lam, k: int) -> torch.Tensor:
    """k Newton steps with the population Hessian (P = Λ⁻¹, Λ known), shape (batch, k+1, d).

    On a finite prompt the true Hessian is Ŝ_m, not Λ, so this is itself only a
    pseudo-Newton method; as m → ∞ it lands on w in one step.
    """
    X, y = _check_prompt(X, y)
    Lam = checks.covariance(Lam, "Lam", definite=True, d=X.shape[1])
    return preconditioned_steps(X, y, torch.as_tensor(np.linalg.inv(Lam), dtype=X.dtype), k)


def _training_set(X: torch.Tensor) -> torch.Tensor:
    X = checks.tensor(X, "X")
    if X.ndim != 4:
        raise ValueError(f"X must have shape (replicates, N prompts, d, n), got {tuple(X.shape)}")
    return X


@torch.no_grad()
def plugin_gamma_inverse(X: torch.Tensor, n_train: int) -> torch.Tensor:
    """Γ̂⁻¹ with Γ̂ built from the pooled sample covariance Λ̂ of each replicate's prompts.

    ``X`` is (replicates, N, d, n); returns (replicates, d, d).
    """
    X = _training_set(X)
    n = checks.positive_int(n_train, "n_train")
    R, N, d, m = X.shape
    Xf = X.permute(0, 2, 1, 3).reshape(R, d, N * m)
    Lam_hat = Xf @ Xf.transpose(1, 2) / (N * m)
    tr = torch.diagonal(Lam_hat, dim1=1, dim2=2).sum(-1)
    G = (1 + 1 / n) * Lam_hat + (tr / n)[:, None, None] * torch.eye(d, dtype=X.dtype)
    return torch.linalg.inv(G)


@torch.no_grad()
def erm_preconditioner(X: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A = (Σ_p w_p u_pᵀ)(Σ_p u_p u_pᵀ)⁺, u_p = Ŝ_p w_p: the training-loss minimiser on N prompts.

    ``X`` is (replicates, N, d, n), ``w`` (replicates, N, d); returns (replicates, d, d). For
    N < d the Gram matrix is singular and the pseudo-inverse picks the minimum-norm minimiser
    (where gradient descent from zero goes).
    """
    X = _training_set(X)
    w = checks.tensor(w, "w", dtype=X.dtype)
    if w.shape != X.shape[:3]:
        raise ValueError(f"w must have shape (replicates, N, d) = {tuple(X.shape[:3])}, got {tuple(w.shape)}")
    n = X.shape[3]
    y = torch.einsum("rpdn,rpd->rpn", X, w)  # the labels y = Xᵀw
    u = torch.einsum("rpdn,rpn->rpd", X, y) / n  # Ŝ_p w_p = X y / n
    B = torch.einsum("rpd,rpe->rde", w, u)
    G = torch.einsum("rpd,rpe->rde", u, u)
    return B @ torch.linalg.pinv(G, hermitian=True)

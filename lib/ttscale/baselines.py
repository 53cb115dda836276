"""Classical estimators of w from one prompt, batched (torch): the baselines for test-time CoT.

On a prompt (X, y) with y = Xᵀw exactly (no label noise, {ref}`sec-intro`):

- :func:`ols` solves the normal equations Ŝ_m ŵ = X y / m (needs m >= d); it is exact Newton
  with the *empirical* Hessian Ŝ_m, so it recovers w in one step, up to rounding.
- :func:`min_norm_least_squares` is ŵ = (Xᵀ)⁺ y, the interpolating solution of smallest norm;
  it equals OLS when m >= d and projects w onto the span of the x_i when m < d.
- :func:`ridge` is ŵ = (Ŝ_m + λ I)⁻¹ X y / m, shrunk towards 0.
- :func:`gradient_descent` and :func:`newton` are the preconditioned recursion of
  :mod:`ttscale.estimators` (pseudo-Newton) with P = η I (plain gradient descent, step :func:`gd_step_size`)
  and P = Λ⁻¹ (Newton with the population Hessian, Λ known).

Used in {ref}`sec-pseudo-newton`.
"""

from __future__ import annotations

import numpy as np
import torch

from . import checks
from .estimators import preconditioned_steps
from .prompts import sample_covariance

__all__ = ["ols", "min_norm_least_squares", "ridge", "gd_step_size", "gradient_descent", "newton"]


def _check_prompt(X: torch.Tensor, y: torch.Tensor):
    X = checks.tensor(X, "X")
    y = checks.tensor(y, "y", dtype=X.dtype)
    if X.ndim != 3 or y.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[2] != y.shape[1]:
        raise ValueError(f"X must be (batch, d, m) and y (batch, m) with matching sizes, got {tuple(X.shape)} and {tuple(y.shape)}")
    return X, y


@torch.no_grad()
def ols(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Ordinary least squares ŵ = (X Xᵀ)⁻¹ X y for each prompt, (batch, d); needs m >= d.

    Used in {ref}`sec-pseudo-newton`.
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
    Used in {ref}`sec-pseudo-newton`.
    """
    X, y = _check_prompt(X, y)
    return (torch.linalg.pinv(X.transpose(1, 2)) @ y[:, :, None])[:, :, 0]


@torch.no_grad()
def ridge(X: torch.Tensor, y: torch.Tensor, penalty: float) -> torch.Tensor:
    """Ridge regression ŵ = (Ŝ_m + λ I)⁻¹ X y / m with λ = ``penalty`` > 0, (batch, d).

    The penalty is on the 1/m-normalised scale of Ŝ_m = X Xᵀ / m.
    Used in {ref}`sec-pseudo-newton`.
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
    when m < d), which stay where they are. Used in {ref}`sec-pseudo-newton`.
    """
    if X.ndim != 3:
        raise ValueError(f"X must have shape (batch, d, m), got {tuple(X.shape)}")
    return 1.0 / torch.linalg.eigvalsh(sample_covariance(X))[:, -1]


def gradient_descent(X: torch.Tensor, y: torch.Tensor, k: int, step=None) -> torch.Tensor:
    """k steps of plain gradient descent from ŵ_0 = 0: ŵ_0 … ŵ_k, shape (batch, k+1, d).

    ``step`` is one positive float for every prompt, or ``None`` for each prompt's own
    :func:`gd_step_size`. Used in {ref}`sec-pseudo-newton`.
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
    Used in {ref}`sec-pseudo-newton`.
    """
    X, y = _check_prompt(X, y)
    Lam = checks.covariance(Lam, "Lam", definite=True, d=X.shape[1])
    return preconditioned_steps(X, y, torch.as_tensor(np.linalg.inv(Lam), dtype=X.dtype), k)

"""The preconditioner learned from a finite sample of training prompts (torch).

Theorem 3.1 gives the LSA's preconditioner Γ⁻¹ for infinitely many training prompts. With N
prompts there are two natural finite-sample versions:

- :func:`plugin_gamma_inverse`: estimate Λ by the pooled sample covariance Λ̂ of all N·n
  training features and plug it into Γ = (1 + 1/n)Λ + (tr Λ/n) I;
- :func:`erm_preconditioner`: the matrix A minimising the training loss on exactly those N
  prompts, Σ_p ‖w_p − A Ŝ_p w_p‖², i.e. A = (Σ w_p u_pᵀ)(Σ u_p u_pᵀ)⁺ with u_p = Ŝ_p w_p — the
  limit of gradient descent from V = 0 on the V_{w,x} block alone (other blocks frozen at 0).

:func:`ttscale.theory.map_error` gives the m → ∞ error ‖(I − PΣ)^k‖_F² of CoT with any P.
Used in {ref}`sec-pseudo-newton`.
"""

from __future__ import annotations

import torch

from . import checks

__all__ = ["plugin_gamma_inverse", "erm_preconditioner"]


def _training_set(X: torch.Tensor) -> torch.Tensor:
    X = checks.tensor(X, "X")
    if X.ndim != 4:
        raise ValueError(f"X must have shape (replicates, N prompts, d, n), got {tuple(X.shape)}")
    return X


@torch.no_grad()
def plugin_gamma_inverse(X: torch.Tensor, n_train: int) -> torch.Tensor:
    """Γ̂⁻¹ with Γ̂ built from the pooled sample covariance Λ̂ of each replicate's prompts.

    ``X`` is (replicates, N, d, n); returns (replicates, d, d). Used in {ref}`sec-pseudo-newton`.
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
    (where gradient descent from zero goes). Used in {ref}`sec-pseudo-newton`.
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

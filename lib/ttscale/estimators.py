"""Iterative estimators of w from one prompt, batched (torch).

The pseudo-Newton recursion that test-time CoT implements (paper Proposition 3.2),

    ŵ_{i+1} = ŵ_i − P (Ŝ_m ŵ_i − X y / m),

is a preconditioned gradient step on ℓ(ŵ) = (1/2m)‖y − Xᵀŵ‖² (its gradient is
Ŝ_m ŵ − X y/m, and X y/m = Ŝ_m w). P = Γ⁻¹ is what the trained LSA uses, P = Λ⁻¹ is exact
Newton with the population Hessian, P = η I is plain gradient descent.

Used in {ref}`sec-intro` and {ref}`sec-pseudo-newton`.
"""

from __future__ import annotations

import numpy as np
import torch

from . import checks, theory
from .prompts import sample_covariance

__all__ = ["preconditioned_steps", "pseudo_newton"]


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

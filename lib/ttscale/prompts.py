"""Seeded prompts for in-context weight prediction, and the LSA's token embedding.

A prompt holds n pairs (x_i, y_i) with x_i ~ N(0, Λ) i.i.d., y_i = ⟨w, x_i⟩ and
w ~ N(0, I_d) drawn afresh per prompt ({ref}`sec-intro`). Batches are indexed by
``(seed, stream, step)`` so that training and evaluation draw from separate,
reproducible streams: the same triple always gives the same prompts, on any machine.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from . import checks

__all__ = ["Prompts", "sample", "embed", "estimate_token", "sample_covariance", "generator", "population_prompts", "STREAMS"]

#: Named, independent random streams (Raventós et al.: never evaluate on training draws).
STREAMS = {"train": 0, "eval": 1, "test": 2, "preconditioner": 3}


class Prompts(NamedTuple):
    """A batch of prompts: ``X`` (batch, d, n), ``y`` (batch, n), ``w`` (batch, d)."""

    X: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor


def generator(seed: int, stream: str = "train", step: int = 0) -> torch.Generator:
    """A torch generator for one ``(seed, stream, step)``; independent across the triple.

    The three integers go through numpy's ``SeedSequence``, which hashes them into a
    well-mixed 64-bit state, so neighbouring steps or seeds give unrelated draws.
    """
    seed = checks.seed(seed)
    checks.one_of(stream, STREAMS, "stream")
    step = checks.nonnegative_int(step, "step")
    state = np.random.SeedSequence([seed, STREAMS[stream], step]).generate_state(2, dtype=np.uint32)
    g = torch.Generator()
    g.manual_seed(int(state[0]) << 31 ^ int(state[1]))
    return g


def _sqrt_factor(Lam: np.ndarray) -> np.ndarray:
    """L with L Lᵀ = Λ, valid for singular Λ too (through the eigendecomposition)."""
    lam, U = np.linalg.eigh(Lam)
    return U * np.sqrt(np.clip(lam, 0.0, None))


def sample(
    Lam,
    n: int,
    batch: int,
    *,
    seed: int = 0,
    stream: str = "train",
    step: int = 0,
    dtype: torch.dtype = torch.float64,
) -> Prompts:
    """Draw ``batch`` prompts of length ``n`` with feature covariance ``Lam``.

    Returns :class:`Prompts` with ``X`` of shape (batch, d, n) (columns are the x_i,
    as in the book's X = [x_1 … x_n]), ``y = Xᵀw`` of shape (batch, n) and ``w`` of
    shape (batch, d). Deterministic in ``(seed, stream, step)``.
    """
    Lam = checks.covariance(Lam, "Lam")
    n = checks.positive_int(n, "n")
    batch = checks.positive_int(batch, "batch")
    d = Lam.shape[0]
    checks.size(batch * d * n, "batch", "the (batch, d, n) feature tensor")
    g = generator(seed, stream, step)
    L = torch.as_tensor(_sqrt_factor(Lam), dtype=dtype)
    w = torch.randn(batch, d, generator=g, dtype=dtype)
    X = L @ torch.randn(batch, d, n, generator=g, dtype=dtype)
    y = torch.einsum("bdn,bd->bn", X, w)
    return Prompts(X, y, w)


def embed(X: torch.Tensor, y: torch.Tensor, w0: torch.Tensor | None = None) -> torch.Tensor:
    """The (2d+2) x (n+1) embedding of {ref}`sec-intro`, batched.

    Column i <= n is (x_i; y_i; 0_d; 0); the last column is the query token
    (0_d; 0; ŵ_0; 1), with ŵ_0 = 0 unless ``w0`` is given. Returns (batch, 2d+2, n+1).
    """
    X = checks.tensor(X, "X", ndim=3)
    y = checks.tensor(y, "y", ndim=2, dtype=X.dtype)
    if X.shape[0] != y.shape[0] or X.shape[2] != y.shape[1]:
        raise ValueError(f"X must be (batch, d, n) and y (batch, n) with matching sizes, got {tuple(X.shape)} and {tuple(y.shape)}")
    b, d, n = X.shape
    examples = torch.cat([X, y[:, None, :], X.new_zeros(b, d + 1, n)], dim=1)
    if w0 is None:
        w0 = X.new_zeros(b, d)
    if w0.shape != (b, d):
        raise ValueError(f"w0 must have shape (batch, d) = {(b, d)}, got {tuple(w0.shape)}")
    return torch.cat([examples, estimate_token(w0)], dim=2)


def estimate_token(w_hat: torch.Tensor) -> torch.Tensor:
    """The token (0_d; 0; ŵ; 1) that carries an estimate, shape (batch, 2d+2, 1)."""
    w_hat = checks.tensor(w_hat, "w_hat")
    if w_hat.ndim != 2:
        raise ValueError(f"w_hat must have shape (batch, d), got {tuple(w_hat.shape)}")
    b, d = w_hat.shape
    return torch.cat([w_hat.new_zeros(b, d + 1), w_hat, w_hat.new_ones(b, 1)], dim=1)[:, :, None]


def sample_covariance(X: torch.Tensor) -> torch.Tensor:
    """Ŝ = X Xᵀ / n for each prompt, shape (batch, d, d)."""
    X = checks.tensor(X, "X")
    if X.ndim != 3:
        raise ValueError(f"X must have shape (batch, d, n), got {tuple(X.shape)}")
    return X @ X.transpose(1, 2) / X.shape[2]


def population_prompts(Sigma, m: int, batch: int, *, seed: int = 0, stream: str = "test", step: int = 0) -> Prompts:
    """Prompts whose sample covariance equals Σ exactly: X Xᵀ/m = Σ (the m → ∞ limit, reached at finite m).

    X = √m Σ^{1/2} Qᵀ with Q an m × d matrix of orthonormal columns (QR of a seeded Gaussian
    matrix), w ~ N(0, I_d), y = Xᵀw. The CoT recursion sees X only through Ŝ_m = Σ and
    X y / m = Σ w, so an LSA run on these prompts follows the population (m → ∞) recursion
    exactly, and its error averaged over w estimates ‖(I − Γ⁻¹Σ)^k‖_F² without bias.
    Needs m >= d.
    """
    Sigma = checks.covariance(Sigma, "Sigma")
    d = Sigma.shape[0]
    m = checks.positive_int(m, "m")
    batch = checks.positive_int(batch, "batch")
    if m < d:
        raise ValueError(f"m must be >= d = {d} for a prompt to carry the whole covariance, got {m}")
    g = generator(seed, stream, step)
    G = torch.randn(batch, m, d, generator=g, dtype=torch.float64)
    Q, R = torch.linalg.qr(G)  # (batch, m, d), orthonormal columns
    lam, U = np.linalg.eigh(Sigma)
    root = torch.as_tensor((U * np.sqrt(np.clip(lam, 0, None))) @ U.T)
    X = np.sqrt(m) * root @ Q.transpose(1, 2)  # (batch, d, m)
    w = torch.randn(batch, d, generator=g, dtype=torch.float64)
    y = torch.einsum("bdn,bd->bn", X, w)
    return Prompts(X, y, w)


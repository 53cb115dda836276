"""The one-layer linear self-attention (LSA) model and its test-time CoT rollout (torch).

    f(Z) = Z + V Z (Zᵀ W Z) / N,    V, W ∈ R^{(2d+2)×(2d+2)}

with N the number of (x, y) example columns in Z (n in training, m at test;
{ref}`sec-intro`). The estimate ŵ is the w-slot of the last column of f(Z). Test-time chain
of thought appends that output column to Z as a new token and runs f again.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from . import checks, theory
from .prompts import embed

__all__ = ["Blocks", "blocks", "LSA", "closed_form", "from_map", "applied_map", "structured_W", "chain_map", "rollout"]


class Blocks(NamedTuple):
    """Row/column index ranges of the embedding: x-rows, y-row, w-rows, 1-row."""

    x: slice
    y: int
    w: slice
    one: int


def blocks(d: int) -> Blocks:
    """Where each part of a token sits: x in rows 0…d−1, y in row d, ŵ in d+1…2d, 1 in row 2d+1."""
    d = checks.positive_int(d, "d")
    return Blocks(slice(0, d), d, slice(d + 1, 2 * d + 1), 2 * d + 1)


class LSA(nn.Module):
    """One-layer linear self-attention with full (2d+2)×(2d+2) matrices ``V`` and ``W``.

    ``V`` and ``W`` start at zero unless given. ``train_W=False`` freezes ``W`` (the
    paper's training keeps it at its structure; only ``V`` is learned).
    """

    def __init__(self, d: int, V=None, W=None, *, train_W: bool = True, dtype: torch.dtype = torch.float64):
        super().__init__()
        self.d = checks.positive_int(d, "d")
        D = 2 * self.d + 2

        def param(M, name):
            if M is None:
                return torch.zeros(D, D, dtype=dtype)
            M = torch.as_tensor(M, dtype=dtype).clone()
            if M.shape != (D, D):
                raise ValueError(f"{name} must be (2d+2) x (2d+2) = {D} x {D} for d = {self.d}, got {tuple(M.shape)}")
            if not torch.isfinite(M).all():
                raise ValueError(f"{name} must have finite entries")
            return M

        self.V = nn.Parameter(param(V, "V"))
        self.W = nn.Parameter(param(W, "W"), requires_grad=bool(train_W))

    def forward(self, Z: torch.Tensor, n_examples: int, last_only: bool = False) -> torch.Tensor:
        """f(Z) = Z + V Z (Zᵀ W Z) / N with N = ``n_examples``; Z is (batch, 2d+2, T).

        ``last_only=True`` returns only the last column of f(Z), (batch, 2d+2), computed as
        z_T + V Z (Zᵀ W z_T) / N — the same numbers as the full output's last column at
        O(T d²) instead of O(T² d) cost.
        """
        N = checks.positive_int(n_examples, "n_examples")
        if Z.ndim != 3 or Z.shape[1] != 2 * self.d + 2:
            raise ValueError(f"Z must have shape (batch, 2d+2 = {2 * self.d + 2}, T), got {tuple(Z.shape)}")
        if last_only:
            z = Z[:, :, -1]
            scores = torch.einsum("bjt,bj->bt", Z, z @ self.W.T)  # Zᵀ (W z_T): one score per token
            mixed = torch.einsum("bjt,bt->bj", Z, scores)  # Z (Zᵀ W z_T)
            return z + mixed @ self.V.T / N  # multiply by V last: O(T d + d²) per prompt
        scores = Z.transpose(1, 2) @ self.W @ Z  # Zᵀ W Z, (batch, T, T)
        return Z + self.V @ Z @ scores / N

    def predict(self, Z: torch.Tensor, n_examples: int) -> torch.Tensor:
        """ŵ: the w-slot of f(Z)'s last column, (batch, d)."""
        return self.forward(Z, n_examples, last_only=True)[:, blocks(self.d).w]


def structured_W(d: int, c: float = 1.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """W with c·I_d in block (x-rows, w-columns), −c at (y-row, 1-column), zero elsewhere.

    Then z_jᵀ W z_T = c(⟨x_j, ŵ⟩ − y_j): each example attends with its residual.
    """
    c = checks.positive_real(c, "c")
    b = blocks(d)
    W = torch.zeros(2 * d + 2, 2 * d + 2, dtype=dtype)
    W[b.x, b.w] = c * torch.eye(d, dtype=dtype)
    W[b.y, b.one] = -c
    return W


def from_map(A, c: float = 1.0, dtype: torch.dtype = torch.float64) -> LSA:
    """The LSA that applies a given d x d map A: W = :func:`structured_W`, V_{w,x} = −A/c, zero elsewhere.

    Its chain computes ŵ ← ŵ − A Ŝ_m (ŵ − w). With A = Γ⁻¹ this is :func:`closed_form`; with a
    mixture's map it is the optimum of mixture training.
    """
    c = checks.positive_real(c, "c")
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or not np.all(np.isfinite(A)):
        raise ValueError(f"A must be a finite square matrix, got shape {A.shape}")
    d = A.shape[0]
    b = blocks(d)
    V = torch.zeros(2 * d + 2, 2 * d + 2, dtype=dtype)
    V[b.w, b.x] = torch.as_tensor(-A / c, dtype=dtype)
    return LSA(d, V, structured_W(d, c, dtype), train_W=False, dtype=dtype)


def closed_form(Lam, n_train: int, c: float = 1.0, dtype: torch.dtype = torch.float64) -> LSA:
    """The LSA at the optimum of Theorem 3.1: W = :func:`structured_W`, V_{w,x} = −Γ⁻¹/c.
    """
    c = checks.positive_real(c, "c")
    return from_map(np.linalg.inv(theory.gamma(Lam, n_train)), c, dtype)


def applied_map(model: LSA, c: float | None = None) -> np.ndarray:
    """The map A = −c V_{w,x} a (trained) LSA applies in its chain, read from its weights, (d, d).

    ``c`` is the scale at which the model reads its own estimate; by default the mean diagonal
    of W's (x-rows, w-columns) block. For the trained model A ≈ Γ⁻¹.
    """
    b = blocks(model.d)
    with torch.no_grad():
        if c is None:
            c = float(torch.diagonal(model.W[b.x, b.w]).mean())
            if not np.isfinite(c) or c == 0:
                raise ValueError("the model's W has no (x-rows, w-columns) block: it cannot read its own estimate")
        else:
            c = checks.positive_real(c, "c")
        return (-c * model.V[b.w, b.x]).cpu().numpy().astype(np.float64)


def chain_map(model: LSA):
    """The map form of the model's chain, or None when its weights do not admit one.

    When V is zero outside its (w-rows, x-columns) block and W is zero outside its (x-rows,
    w-columns) block M and its (y-row, 1-column) entry c_y (as for :func:`closed_form`,
    :func:`from_map` and any model trained with those zeros kept), an estimate token (0; 0; ŵ; 1)
    attends only to the examples, every appended token keeps x = 0 and y = 0, and the chain is

        ŵ ← ŵ + V_{w,x} (Ŝ M ŵ + c_y b),   Ŝ = X Xᵀ/m,  b = X y/m,

    which for :func:`from_map` (V_{w,x} = −A/c, M = cI, c_y = −c) is ŵ ← ŵ − A(Ŝŵ − b).
    Returns ``(V_wx, M, c_y)`` as tensors of the model's dtype.
    """
    b = blocks(model.d)
    with torch.no_grad():
        V, W = model.V.detach(), model.W.detach()
        V_rest, W_rest = V.clone(), W.clone()
        V_rest[b.w, b.x] = 0
        W_rest[b.x, b.w] = 0
        W_rest[b.y, b.one] = 0
        if bool(V_rest.any()) or bool(W_rest.any()):
            return None
        return V[b.w, b.x], W[b.x, b.w], W[b.y, b.one]


_ROLLOUT_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@torch.no_grad()
def rollout(model: LSA, X: torch.Tensor, y: torch.Tensor, k: int, *, last_only: bool = True,
            method: str = "tokens", dtype=None) -> torch.Tensor:
    """Test-time chain of thought, batched: returns ŵ_0 … ŵ_k, shape (batch, k+1, d).

    ``X`` (batch, d, m) and ``y`` (batch, m) may be tensors or numpy arrays; they must be finite.
    Starts from the embedding with ŵ_0 = 0; each application runs the model on the whole
    current token sequence, takes the last output column (0; 0; ŵ_i; 1) and *appends it
    to Z as a new token*. N stays the number of example columns m throughout.

    ``method``: ``"tokens"`` (default) runs that chain on a token matrix allocated once at its
    final size, (batch, 2d+2, m+k+1), each step filling the next column in place;
    ``"map"`` runs the equal map form of :func:`chain_map` (O(d²) per step and prompt instead of
    O((m+k) d); ValueError if the model's weights do not admit it); ``"auto"`` takes the map
    form when the model admits it, else the tokens. ``last_only=False`` recomputes the full
    f(Z) each step by :meth:`LSA.forward` on a growing matrix (slower, same numbers).

    ``dtype``: the arithmetic of the chain, ``torch.float32`` or ``torch.float64`` (or their names
    ``"float32"``, ``"float64"``); ``None`` (default) keeps the model's dtype. The model's weights
    and the prompts are cast to it (the model itself is not changed) and the estimates come back
    in it. Opt-in: at the book's sizes float32 runs the token chain about 2x faster and moves the
    mean error by under 1e-5 of its Monte Carlo standard error (``benchmarks/bench_float32.py``,
    ``tests/test_float32.py``); every chapter keeps float64.
    """
    k = checks.nonnegative_int(k, "k")
    if method not in ("tokens", "map", "auto"):
        raise ValueError(f"method must be 'tokens', 'map' or 'auto', got {method!r}")
    if dtype is not None:
        if not isinstance(dtype, (torch.dtype, str)):
            raise ValueError(f"dtype must be None, torch.float32 or torch.float64, got {dtype!r}")
        name = str(dtype).removeprefix("torch.") if isinstance(dtype, torch.dtype) else dtype
        dtype = _ROLLOUT_DTYPES[checks.one_of(name, _ROLLOUT_DTYPES, "dtype")]
        if dtype != model.V.dtype:
            model = copy.deepcopy(model).to(dtype)  # a cast copy: the caller's model keeps its dtype
    dtype = model.V.dtype
    X = checks.tensor(X, "X", ndim=3, dtype=dtype)
    y = checks.tensor(y, "y", ndim=2, dtype=dtype)
    if X.shape[1] != model.d:
        raise ValueError(f"X has feature dimension {X.shape[1]}, but the model has d = {model.d}")
    batch, d, m = X.shape
    checks.size(batch * (2 * d + 2) * (m + k + 1), "k", "the token matrix of the chain")
    w = blocks(d).w
    if method != "tokens" and last_only:
        form = chain_map(model)
        if form is None and method == "map":
            raise ValueError("method='map' needs a model whose V is zero outside its (w, x) block and whose W "
                             "is zero outside its (x, w) block and (y, 1) entry (see chain_map)")
        if form is not None:
            checks.size(batch * d * d, "X", "the per-prompt d x d maps of the chain's map form")
            return _map_rollout(form, X, y, k)
    if not last_only:
        Z = embed(X, y)
        estimates = [Z[:, w, -1]]
        for _ in range(k):
            last = model(Z, m)[:, :, -1]
            Z = torch.cat([Z, last[:, :, None]], dim=2)
            estimates.append(last[:, w])
        return torch.stack(estimates, dim=1)
    V, W = model.V.detach(), model.W.detach()
    # embed(X, y) written straight into the token matrix of the final size (no concatenations):
    # columns j < m are (x_j; y_j; 0; 0), column m the query (0; 0; ŵ_0 = 0; 1)
    b = blocks(d)
    Z = X.new_zeros(batch, 2 * d + 2, m + k + 1)
    Z[:, b.x, :m] = X
    Z[:, b.y, :m] = y
    Z[:, b.one, m] = 1
    for i in range(k):  # k sequential model applications (a chain, not a batch)
        T = m + 1 + i  # tokens so far
        Zt, z = Z[:, :, :T], Z[:, :, T - 1]
        scores = torch.bmm((z @ W.T)[:, None, :], Zt)  # (W z_T)ᵀ Z: one score per token, (batch, 1, T)
        mixed = torch.bmm(Zt, scores.transpose(1, 2))[:, :, 0]  # Z (Zᵀ W z_T)
        Z[:, :, T] = z + mixed @ V.T / m  # the output's last column, appended as token T
    return Z[:, w, m:].transpose(1, 2).contiguous()


def _map_rollout(form, X, y, k):
    """ŵ_0 = 0, ŵ_{i+1} = ŵ_i + V_wx (Ŝ M ŵ_i + c_y b): :func:`rollout`'s chain in map form."""
    V_wx, M, c_y = form
    batch, d, m = X.shape
    S = torch.bmm(X, X.transpose(1, 2)) / m  # Ŝ, (batch, d, d)
    # per prompt the map V_wx Ŝ M, stored transposed: the estimate is then a row vector and each
    # step a (batch, 1, d) by (batch, d, d) product, 2-3x faster than the (batch, d, d) by
    # (batch, d, 1) product of the column form (measured at d = 20, batch 1000), whose matrix-vector
    # kernel reads the maps at a fraction of the memory bandwidth (bit-identical results there)
    Kt = (V_wx @ S @ M).transpose(1, 2).contiguous()
    h = (c_y / m) * torch.einsum("bim,bm->bi", X, y) @ V_wx.T  # c_y V_wx b
    out = X.new_zeros(batch, k + 1, d)
    w_hat = out[:, 0]
    for i in range(k):
        w_hat = w_hat + (torch.bmm(w_hat[:, None, :], Kt)[:, 0] + h)
        out[:, i + 1] = w_hat
    return out

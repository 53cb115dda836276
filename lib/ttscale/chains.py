"""Chains trained for k steps: the k-step-optimal preconditioner, chain-trained, stacked and looped
LSAs, and iterative Newton (Newton–Schulz) as a baseline ({ref}`sec-long-chains`).

Direct training makes the LSA apply ŵ ← ŵ − Γ⁻¹ Ŝ (ŵ − w), with Γ⁻¹ the minimiser of the
*one-step* error E‖I − P Ŝ_n‖_F². Training that sees the chain minimises a k-step error instead:

- the k-step-optimal preconditioner P_k* = argmin_P E‖(I − P Ŝ_n)^k‖_F² over training prompts of
  length n. For Λ = I the objective restricted to P = p I is a convex function of p whose value is
  a finite sum of the exact Wishart moments E tr W^j (:func:`isotropic_power_traces`,
  :func:`optimal_isotropic_step`); for any Λ it is minimised over a fixed sample of training
  prompts (:func:`k_step_preconditioner`, sample-average approximation). For a diagonal P,
  :func:`diagonal_chain_errors` gives the per-prompt objective and its gradient by repeated
  squaring, cheaply enough for the large samples that longer chains need;
- the richer families an LSA with free W can realise: a shrunk target, ŵ ← ŵ − p(Ŝŵ − s Ŝw)
  (``shrink=True``), and L stacked layers, whose error is ‖q(Ŝ)‖_F² for a polynomial q of degree L
  with q(0) = 1; :func:`optimal_polynomial` finds the best one exactly;
- differentiable chains for training: :func:`chain_outputs` (the token-appending chain of
  :func:`ttscale.lsa.rollout`, with gradients), :class:`StackedLSA` (L layers or one weight-tied
  layer applied L times, no tokens appended), their losses and a staged-Adam loop;
- iterative Newton on the prompt's own Ŝ_m (:func:`newton_schulz`), M ← 2M − M Ŝ M, whose
  residual I − MŜ squares at every step.
"""

from __future__ import annotations

from fractions import Fraction
from math import comb
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.optimize import minimize, minimize_scalar
from torch import nn

from . import checks, lsa, prompts, theory, training, wishart

__all__ = ["isotropic_power_traces", "isotropic_chain_error", "optimal_isotropic_step", "optimal_polynomial",
           "k_step_preconditioner", "diagonal_chain_errors", "chain_outputs", "memoryless_rollout", "chain_loss",
           "StackedLSA", "stacked_loss", "train_chain", "newton_schulz", "residual_errors"]


# --------------------------------------------------------------------------- exact isotropic theory


def _moments(d, n, j_max):
    d = checks.positive_int(d, "d")
    n = checks.positive_int(n, "n_train")
    j_max = checks.nonnegative_int(j_max, "j_max")
    if j_max > wishart.MAX_DEGREE:
        raise ValueError(f"the chain is too long for the exact moments: it needs E tr W^j up to j = {j_max}, "
                         f"at most {wishart.MAX_DEGREE}")
    return d, n, wishart.trace_moments(d, n, j_max)


def _traces(d, n, p, j_max, M, js=None) -> dict:
    """{j: E tr (I − pŜ)^j} as exact Fractions, for j in ``js`` (default 0 … j_max).

    With p = a/b, t_j = Σ_i C(j, i) (−a)^i (bn)^{j−i} M_i / (bn)^j: integer sums, one
    reduction per j (Fraction arithmetic term by term would be much slower).
    """
    p = Fraction(p)
    a, b = p.numerator, p.denominator
    bn = b * n
    out = {}
    for j in (range(j_max + 1) if js is None else sorted(set(js))):
        num = sum(comb(j, i) * (-a) ** i * bn ** (j - i) * M[i] for i in range(j + 1))
        out[j] = Fraction(num, bn ** j)
    return out


def isotropic_power_traces(d: int, n_train: int, p: float, j_max: int) -> np.ndarray:
    """[E tr (I − p Ŝ_n)^j for j = 0 … j_max], exactly, Ŝ_n = X Xᵀ/n with X a d × n standard Gaussian.

    Each is Σ_i C(j, i) (−p/n)^i E tr W^i with the exact integer moments of
    :func:`ttscale.wishart.trace_moments`, summed in rational arithmetic (the alternating sum
    cancels catastrophically in floating point) and rounded once.
    """
    d, n, M = _moments(d, n_train, j_max)
    p = checks.finite_real(p, "p")
    t = _traces(d, n, p, int(j_max), M)
    return np.array([_float(t[j]) for j in range(int(j_max) + 1)])


def _float(x) -> float:
    """An exact rational as a float; +inf beyond the largest double (a diverging mean)."""
    try:
        return float(x)
    except OverflowError:
        return float("inf") if x > 0 else float("-inf")


def _needed(k, every_step):
    steps = range(1, k + 1) if every_step else (k,)
    return [i for i in steps] + [2 * i for i in steps]


def _chain_value(t, d, k, s, every_step):
    steps = range(1, k + 1) if every_step else (k,)
    return sum((1 - s) ** 2 * d + 2 * s * (1 - s) * t[i] + s * s * t[2 * i] for i in steps)


def _best_s(t, d, k, every_step):
    steps = range(1, k + 1) if every_step else (k,)
    A = Fraction(d * len(steps))
    B = sum(t[i] for i in steps)
    C = sum(t[2 * i] for i in steps)
    den = A - 2 * B + C  # = E Σ ‖I − (I − pŜ)^i‖_F² ≥ 0
    return Fraction(1) if den == 0 else (A - B) / den


def isotropic_chain_error(d: int, n_train: int, p: float, k: int, s: float = 1.0, *, every_step: bool = False) -> float:
    """Exact error of the chain ŵ ← ŵ − p(Ŝ_n ŵ − s Ŝ_n w), ŵ_0 = 0, after k steps (Λ = I, prompts of length n).

    The error is ŵ_k − w = −[(1 − s) I + s (I − pŜ)^k] w, so with t_j = E tr (I − pŜ)^j
    (:func:`isotropic_power_traces`) it is (1 − s)² d + 2s(1 − s) t_k + s² t_{2k}; s = 1 is the
    book's chain with P = p I. ``every_step=True`` sums the errors of steps 1 … k (the loss on
    every step).
    """
    k = checks.positive_int(k, "k")
    s = checks.finite_real(s, "s")
    if not isinstance(every_step, (bool, np.bool_)):
        raise ValueError(f"every_step must be True or False, got {every_step!r}")
    d, n, M = _moments(d, n_train, 2 * k)
    t = _traces(d, n, checks.finite_real(p, "p"), 2 * k, M, _needed(k, every_step))
    return _float(_chain_value(t, d, k, Fraction(s), every_step))


def optimal_isotropic_step(d: int, n_train: int, k: int, *, shrink: bool = False, every_step: bool = False):
    """The k-step-optimal scalar preconditioner for Λ = I: (p*, s*, error), exactly.

    Minimises :func:`isotropic_chain_error` over p (and over s with ``shrink=True``; otherwise
    s = 1). With s = 1 the objective E Σ tr (I − pŜ)^{2i} is convex in p, so a bounded Brent search
    on [0, 2] finds its minimum; with ``shrink`` the best s for each p is the closed form
    s = (A − B)/(A − 2B + C) of a quadratic, and the profile over p is searched on a grid, then
    refined. By rotation invariance of Ŝ_n the optimum over all matrices P is p* I whenever it is
    unique (the chapter checks this against :func:`k_step_preconditioner`).
    """
    k = checks.positive_int(k, "k")
    for name, flag in (("shrink", shrink), ("every_step", every_step)):
        if not isinstance(flag, (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False, got {flag!r}")
    d, n, M = _moments(d, n_train, 2 * k)
    needed = _needed(k, every_step)

    def profile(p):
        t = _traces(d, n, p, 2 * k, M, needed)
        s = _best_s(t, d, k, every_step) if shrink else Fraction(1)
        return _float(_chain_value(t, d, k, s, every_step)), s

    hi = 2.0
    if shrink:
        grid = np.linspace(0, hi, 41)[1:]
        vals = np.array([profile(p)[0] for p in grid])
        i = int(np.argmin(vals))
        lo_b, hi_b = grid[max(i - 1, 0)] if i else 0.0, grid[min(i + 1, grid.size - 1)]
    else:
        lo_b, hi_b = 0.0, hi
    res = minimize_scalar(lambda p: profile(p)[0], bounds=(lo_b, hi_b), method="bounded",
                          options={"xatol": 1e-10})
    p = float(res.x)
    value, s = profile(p)
    return p, float(s), value


def optimal_polynomial(d: int, n_train: int, L: int):
    """The best degree-L polynomial q with q(0) = 1 for E‖q(Ŝ_n)‖_F², Λ = I, exactly: (coefficients, steps, error).

    E‖q(Ŝ)‖_F² = Σ_ij q_i q_j E tr Ŝ^{i+j} is a quadratic form in the coefficients; with q_0 = 1
    its minimiser solves an L × L linear system, solved here in rational arithmetic. The error of
    L stacked structured LSA layers ŵ ← ŵ − p_l Ŝ (ŵ − w) is ‖Π_l (I − p_l Ŝ)‖_F², so the best
    such stack has p_l = 1/(roots of q) (real and positive: q is a kernel polynomial of the
    expected spectral measure). ``coefficients`` are q_0 … q_L, ``steps`` the p_l in increasing order.
    """
    L = checks.positive_int(L, "L")
    d, n, M = _moments(d, n_train, 2 * L)
    H = [[Fraction(M[i + j], n ** (i + j)) for j in range(L + 1)] for i in range(L + 1)]
    A = [row[1:] + [-row[0]] for row in H[1:]]  # H_11 q = −H_10
    for c in range(L):  # Gauss–Jordan in exact arithmetic (H_11 is positive definite)
        piv = next(r for r in range(c, L) if A[r][c] != 0)
        A[c], A[piv] = A[piv], A[c]
        A[c] = [v / A[c][c] for v in A[c]]
        for r in range(L):
            if r != c and A[r][c] != 0:
                f = A[r][c]
                A[r] = [a - f * b for a, b in zip(A[r], A[c])]
    q = [Fraction(1)] + [A[r][L] for r in range(L)]
    value = sum(q[i] * q[j] * H[i][j] for i in range(L + 1) for j in range(L + 1))
    coef = np.array([float(v) for v in q])
    roots = np.roots(coef[::-1])
    steps = np.sort(1.0 / np.real_if_close(roots, tol=1e6))
    return coef, steps, float(value)


# --------------------------------------------------------------------------- any Λ: sample-average approximation


def k_step_preconditioner(Lam, n_train: int, k: int, *, n_prompts: int = 2000, diagonal: bool = False,
                          every_step: bool = False, seed: int = 0, step: int = 0, max_iter: int = 200):
    """P_k* ≈ argmin_P mean over a fixed sample of training prompts of ‖(I − P Ŝ_n)^k‖_F²: (P, objective).

    ``n_prompts`` prompts of length ``n_train`` with covariance ``Lam`` from the ``preconditioner``
    stream of ``(seed, step)``; L-BFGS (scipy's) from P = Γ⁻¹ (the one-step optimum). ``diagonal=True``
    optimises P = U diag(p) Uᵀ in Λ's eigenbasis U (for Λ with a simple spectrum the optimum
    has this form: flipping the sign of one eigen-coordinate leaves the law of Ŝ_n unchanged). On
    directions the training features never reach (Λu = 0) the objective does not depend on P's
    column Pu, which stays at Γ⁻¹'s value. ``every_step=True`` sums the errors of steps 1 … k.
    The sample's own objective is returned; evaluate P on fresh prompts for an unbiased error.
    """
    Lam = checks.covariance(Lam, "Lam")
    n = checks.positive_int(n_train, "n_train")
    k = checks.positive_int(k, "k")
    n_prompts = checks.positive_int(n_prompts, "n_prompts")
    max_iter = checks.positive_int(max_iter, "max_iter")
    for name, flag in (("diagonal", diagonal), ("every_step", every_step)):
        if not isinstance(flag, (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False, got {flag!r}")
    d = Lam.shape[0]
    checks.size(n_prompts * d * max(d, n), "n_prompts", "the sample of training prompts")
    S = prompts.sample_covariance(prompts.sample(Lam, n, n_prompts, seed=seed, stream="preconditioner", step=step).X)
    G_inv = np.linalg.inv(theory.gamma(Lam, n))
    _, U = np.linalg.eigh(Lam)
    U_t = torch.as_tensor(U)
    if diagonal:
        x = torch.tensor(np.diag(U.T @ G_inv @ U).copy(), requires_grad=True)
        make = lambda x: U_t @ torch.diag(x) @ U_t.T  # noqa: E731
    else:
        x = torch.tensor(G_inv.copy(), requires_grad=True)
        make = lambda x: x  # noqa: E731
    eye = torch.eye(d, dtype=torch.float64)

    def objective():
        B = eye - make(x) @ S
        R, total = B, 0.0
        for i in range(1, k + 1):
            if every_step or i == k:
                total = total + (R * R).sum(dim=(1, 2)).mean()
            if i < k:
                R = B @ R
        return total

    def value_and_grad(v):
        x.data = torch.as_tensor(v, dtype=torch.float64).reshape(x.shape)
        x.grad = None
        f = objective()
        f.backward()
        return float(f.detach()), x.grad.numpy().ravel().copy()

    # scipy's L-BFGS-B (no bounds): torch's own L-BFGS would import torch's compiler, seconds
    res = minimize(value_and_grad, x.detach().numpy().ravel().copy(), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "maxcor": 20, "ftol": 1e-15, "gtol": 1e-12})
    x.data = torch.as_tensor(res.x, dtype=torch.float64).reshape(x.shape)
    with torch.no_grad():
        P = make(x).numpy().copy()
        value = float(objective())
    return P, value


# --------------------------------------------------------------------------- diagonal P: fast per-prompt errors


def _power_plan(k):
    """Repeated squaring for B^k: (number of squarings, the squares whose product is B^k)."""
    bits = [t for t in range(k.bit_length()) if k >> t & 1]
    return k.bit_length() - 1, bits


def diagonal_chain_errors(p, S, k: int, *, grad: bool = False):
    """‖(I − diag(p) Ŝ)^k‖_F² for each Ŝ of a stack ``S`` (batch, d, d); with ``grad=True``, their mean's gradient.

    The k-step error of the chain ŵ ← ŵ − P Ŝ (ŵ − w), averaged over w ~ N(0, I), for a diagonal P
    (for P = U diag(p) Uᵀ pass the stack UᵀŜU: the Frobenius norm is unchanged by the rotation).
    B^k, B = I − diag(p) Ŝ, is formed by repeated squaring: ⌊log₂ k⌋ squarings and one product per
    further binary digit of k, each a batched matrix product over the stack, instead of k − 1
    products. With ``grad=True`` the gradient of the mean over the stack with respect to p is
    back-propagated through those products by hand (two products each). The products run in
    ``S``'s dtype: float32 costs a fraction of float64 and puts a relative error of about 1e-7 on
    each value; the sum over the stack behind the gradient is taken in float64. Returns the errors
    (batch,) as float64 and, with ``grad=True``, the gradient (d,). A diverging chain overflows to
    ``inf``.
    """
    k = checks.positive_int(k, "k")
    if not isinstance(grad, (bool, np.bool_)):
        raise ValueError(f"grad must be True or False, got {grad!r}")
    if hasattr(S, "detach"):
        S = S.detach().cpu().numpy()
    S = np.asarray(S)
    if S.dtype not in (np.float32, np.float64):
        S = checks.finite_array(S, "S")
    if S.ndim != 3 or S.shape[1] != S.shape[2] or S.shape[0] < 1:
        raise ValueError(f"S must be a (batch, d, d) stack, got shape {S.shape}")
    if not np.all(np.isfinite(S)):
        raise ValueError("S must have finite entries (no NaN or inf)")
    d = S.shape[1]
    p = checks.finite_array(p, "p", ndim=1)
    if p.shape != (d,):
        raise ValueError(f"p must hold one entry per row of S (d = {d}), got shape {p.shape}")
    B = np.eye(d, dtype=S.dtype) - p.astype(S.dtype)[:, None] * S
    squarings, bits = _power_plan(k)
    with np.errstate(over="ignore", invalid="ignore"):
        sq = [B]  # sq[t] = B^(2^t)
        for _ in range(squarings):
            sq.append(sq[-1] @ sq[-1])
        partial = [sq[bits[0]]]  # partial[j] = product of sq[bits[0]], …, sq[bits[j]]
        for t in bits[1:]:
            partial.append(partial[-1] @ sq[t])
        R = partial[-1]
        errors = np.einsum("bij,bij->b", R, R).astype(np.float64)
        errors[np.isnan(errors)] = np.inf  # finite inputs: NaN only from an overflow (inf − inf)
        if not grad:
            return errors
        gR = (2.0 / S.shape[0]) * R  # d mean / dR
        g_sq = [None] * len(sq)
        for j in range(len(bits) - 1, 0, -1):  # partial[j] = partial[j − 1] @ sq[bits[j]]
            t = bits[j]
            g_sq[t] = partial[j - 1].transpose(0, 2, 1) @ gR
            gR = gR @ sq[t].transpose(0, 2, 1)
        g_sq[bits[0]] = gR
        for t in range(squarings, 0, -1):  # sq[t] = sq[t − 1] @ sq[t − 1]
            if g_sq[t] is None:
                continue
            A = sq[t - 1]
            g = g_sq[t] @ A.transpose(0, 2, 1) + A.transpose(0, 2, 1) @ g_sq[t]
            g_sq[t - 1] = g if g_sq[t - 1] is None else g_sq[t - 1] + g
        gB = g_sq[0]  # B = I − diag(p) S: dB_ij / dp_i = −S_ij
        gp = -np.einsum("bij,bij->bi", gB, S).sum(axis=0, dtype=np.float64)
    return errors, gp


# --------------------------------------------------------------------------- differentiable chains


def chain_outputs(model: lsa.LSA, X: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """The k output columns of the token-appending chain, with gradients: (batch, k, 2d+2).

    The same chain as :func:`ttscale.lsa.rollout` (each output column appended to Z as a new
    token, N = number of example columns), differentiable in the model's V and W.
    """
    k = checks.positive_int(k, "k")
    X = checks.tensor(X, "X", ndim=3, dtype=model.V.dtype)
    y = checks.tensor(y, "y", ndim=2, dtype=model.V.dtype)
    if X.shape[1] != model.d:
        raise ValueError(f"X has feature dimension {X.shape[1]}, but the model has d = {model.d}")
    return _chain_outputs(model, X, y, k)


def _chain_outputs(model, X, y, k):
    m = X.shape[2]
    Z = prompts.embed(X, y)
    outs = []
    for _ in range(k):  # k sequential applications, each vectorised over the batch
        last = model(Z, m, last_only=True)
        outs.append(last)
        Z = torch.cat([Z, last[:, :, None]], dim=2)
    return torch.stack(outs, dim=1)


@torch.no_grad()
def memoryless_rollout(model: lsa.LSA, X: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """ŵ_0 … ŵ_k of the chain with its memory removed, (batch, k+1, d): an ablation.

    Step i runs the model on the examples followed by *one* token, the previous step's output
    column, instead of on the examples followed by every output so far (:func:`chain_outputs`,
    :func:`ttscale.lsa.rollout`). The first step is the same; from the second on the model can no
    longer attend to its earlier estimates. For a model whose chain is a fixed-preconditioner map
    the two agree only if it ignores the appended tokens as keys and values.
    """
    k = checks.nonnegative_int(k, "k")
    X = checks.tensor(X, "X", ndim=3, dtype=model.V.dtype)
    y = checks.tensor(y, "y", ndim=2, dtype=model.V.dtype)
    if X.shape[1] != model.d:
        raise ValueError(f"X has feature dimension {X.shape[1]}, but the model has d = {model.d}")
    m = X.shape[2]
    Z = prompts.embed(X, y)
    w = lsa.blocks(model.d).w
    out = [Z[:, w, -1]]
    for _ in range(k):  # sequential steps, each vectorised over the batch
        last = model(Z, m, last_only=True)
        Z = torch.cat([Z[:, :, :m], last[:, :, None]], dim=2)
        out.append(last[:, w])
    return torch.stack(out, dim=1)


def _column_loss(outs, w, every_step):
    target = prompts.estimate_token(w)[:, :, 0][:, None, :]  # (0; 0; w; 1)
    sq = 0.5 * ((outs - target) ** 2).sum(-1)  # (batch, steps)
    return (sq.mean(1) if every_step else sq[:, -1]).mean()


def chain_loss(model: lsa.LSA, batch: prompts.Prompts, k: int, *, every_step: bool = False) -> torch.Tensor:
    """½ mean ‖output column − (0; 0; w; 1)‖² of the k-step chain: at step k, or averaged over steps 1 … k.

    k = 1 is the book's direct training loss (:func:`ttscale.training.lsa_loss`).
    """
    if not isinstance(every_step, (bool, np.bool_)):
        raise ValueError(f"every_step must be True or False, got {every_step!r}")
    k = checks.positive_int(k, "k")
    X, y = batch.X.to(model.V.dtype), batch.y.to(model.V.dtype)
    if X.ndim != 3 or X.shape[1] != model.d or y.shape != (X.shape[0], X.shape[2]):
        raise ValueError(f"batch must hold X (batch, d = {model.d}, n) and y (batch, n), got "
                         f"{tuple(X.shape)} and {tuple(y.shape)}")
    outs = _chain_outputs(model, X, y, k)  # a sampler's batch: finite by construction
    return _column_loss(outs, batch.w.to(outs.dtype), every_step)


class StackedLSA(nn.Module):
    """L linear self-attention layers applied to the whole token matrix, no token appended.

    Layer l maps Z to Z + V_l Z (Zᵀ W_l Z)/N (N = number of example columns), and the estimate
    after layer l is the w-slot of the last column. ``tied=True`` uses one (V, W) for every layer:
    a looped transformer. ``V`` and ``W`` are (L, 2d+2, 2d+2) stacks (one matrix when tied).
    """

    def __init__(self, d: int, L: int, V, W, *, tied: bool = False, dtype: torch.dtype = torch.float64):
        super().__init__()
        self.d = checks.positive_int(d, "d")
        self.L = checks.positive_int(L, "L")
        if not isinstance(tied, (bool, np.bool_)):
            raise ValueError(f"tied must be True or False, got {tied!r}")
        self.tied = bool(tied)
        D, count = 2 * self.d + 2, 1 if tied else self.L
        params = []
        for name, M in (("V", V), ("W", W)):
            M = checks.tensor(M, name, dtype=dtype).clone()
            if M.shape != (count, D, D):
                raise ValueError(f"{name} must have shape ({count}, {D}, {D}) for d = {d}, L = {L}, tied = {tied}, "
                                 f"got {tuple(M.shape)}")
            params.append(nn.Parameter(M))
        self.V, self.W = params

    def layers(self, Z: torch.Tensor, n_examples: int) -> torch.Tensor:
        """The last column after each layer, (batch, L, 2d+2).

        Every layer but the last updates the whole token matrix; the last one is needed only at
        its last column, z_T + V Z (Zᵀ W z_T)/N (as :meth:`ttscale.lsa.LSA.forward` with
        ``last_only``), which costs O(T d) per prompt instead of O(T² d + T d²).
        """
        N = checks.positive_int(n_examples, "n_examples")
        outs = []
        for l in range(self.L):  # layers are sequential
            V, W = (self.V[0], self.W[0]) if self.tied else (self.V[l], self.W[l])
            if l < self.L - 1:
                Z = Z + V @ Z @ (Z.transpose(1, 2) @ W @ Z) / N
                outs.append(Z[:, :, -1])
            else:
                z = Z[:, :, -1]
                scores = torch.bmm((z @ W.T)[:, None, :], Z)  # (W z_T)ᵀ Z, (batch, 1, T)
                outs.append(z + torch.bmm(Z, scores.transpose(1, 2))[:, :, 0] @ V.T / N)
        return torch.stack(outs, dim=1)

    def estimates(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """ŵ after layers 0 … L (ŵ_0 = 0), (batch, L+1, d)."""
        X = checks.tensor(X, "X", ndim=3, dtype=self.V.dtype)
        y = checks.tensor(y, "y", ndim=2, dtype=self.V.dtype)
        outs = self.layers(prompts.embed(X, y), X.shape[2])
        w = lsa.blocks(self.d).w
        return torch.cat([X.new_zeros(X.shape[0], 1, self.d), outs[:, :, w]], dim=1)


def stacked_loss(model: StackedLSA, batch: prompts.Prompts) -> torch.Tensor:
    """½ mean ‖last column after the last layer − (0; 0; w; 1)‖² (direct training of the stack)."""
    outs = model.layers(prompts.embed(batch.X.to(model.V.dtype), batch.y.to(model.V.dtype)), batch.X.shape[2])
    return _column_loss(outs, batch.w.to(outs.dtype), False)


def _clip(grads, clip):
    """``torch.nn.utils.clip_grad_norm_`` (2-norm over all gradients), on a list of tensors."""
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
    torch._foreach_mul_(grads, torch.clamp(clip / (total + 1e-6), max=1.0))


def train_chain(model, sampler: Callable[[int], prompts.Prompts], stages: Sequence, loss, *,
                clip: float | None = None):
    """Adam in stages ``[(steps, lr), …]`` on fresh batches ``sampler(step)``; returns the loss per step.

    Each stage restarts Adam at its learning rate and continues the sampler's step index (no batch
    is seen twice), as :func:`ttscale.training.train_stages`; ``loss(model, batch)`` is the objective.
    ``clip`` caps the gradient's Euclidean norm (a stacked LSA's output is a high-degree polynomial
    in the prompt, and one batch with a large prompt can throw Adam off).

    ``model`` may be a list of models and ``loss`` a list of objectives of the same length: each
    model is then trained with its own objective, Adam state and clipping, exactly as alone, but
    every batch is drawn once and shared; the losses per step come back as a (models, steps) array.
    The Adam step is ``torch.optim.Adam``'s with its defaults (the same numbers).
    """
    stages = [(checks.nonnegative_int(s, "steps"), checks.positive_real(lr, "lr")) for s, lr in stages]
    if clip is not None:
        clip = checks.positive_real(clip, "clip")
    if not stages:
        raise ValueError("stages must hold at least one (steps, lr) pair")
    several = isinstance(model, (list, tuple))
    models = list(model) if several else [model]
    losses = list(loss) if several else [loss]
    if not models or len(losses) != len(models) or not all(callable(f) for f in losses):
        raise ValueError(f"loss must be one callable per model: got {len(losses)} for {len(models)} models")
    if not all(isinstance(m, nn.Module) for m in models):
        raise ValueError("model must be a torch module or a list of them")
    params = [[p for p in m.parameters() if p.requires_grad] for m in models]
    history, t = [[] for _ in models], 0
    for steps, lr in stages:
        state = [[(torch.zeros_like(p), torch.zeros_like(p)) for p in ps] for ps in params]  # Adam restarts
        for i in range(steps):
            batch = sampler(t)
            for j, (m, f, ps) in enumerate(zip(models, losses, params)):
                for p in ps:
                    p.grad = None
                value = f(m, batch)
                value.backward()
                with torch.no_grad():
                    grads = [p.grad for p in ps]
                    if clip is not None:
                        _clip(grads, clip)
                    for p, g, (mm, vv) in zip(ps, grads, state[j]):
                        training.adam_step(p, g, mm, vv, i + 1, lr)
                history[j].append(value.item())
            t += 1
    out = np.array(history)
    return out if several else out[0]


# --------------------------------------------------------------------------- iterative Newton


@torch.no_grad()
def newton_schulz(S, k: int) -> torch.Tensor:
    """Iterative Newton (Newton–Schulz) for the (pseudo-)inverse of each Ŝ: M_0 … M_k, (batch, k+1, d, d).

    M_0 = α Ŝᵀ with α = 1/‖Ŝ Ŝᵀ‖_2, M_{j+1} = 2 M_j − M_j Ŝ M_j. (A factor 2 in α, the edge of the
    admissible range, would put the top direction's residual at −1, where squaring never shrinks
    it.) Every M_j is a
    polynomial in Ŝ, so the residual R_j = I − M_j Ŝ obeys R_{j+1} = R_j²: on the range of Ŝ it
    converges quadratically, on its null space (m < d) it stays at I, the minimum-norm solution's
    error. Each step costs two d × d matrix products. ``S`` is (batch, d, d) or (d, d).
    """
    k = checks.nonnegative_int(k, "k")
    S = checks.tensor(S, "S", dtype=torch.float64)
    if S.ndim == 2:
        S = S[None]
    if S.ndim != 3 or S.shape[1] != S.shape[2]:
        raise ValueError(f"S must be (batch, d, d) or (d, d), got {tuple(S.shape)}")
    top = torch.linalg.matrix_norm(S, ord=2)
    if bool((top == 0).any()):
        raise ValueError("S must be non-zero (a prompt with no signal has no inverse to approximate)")
    M = (1 / top**2)[:, None, None] * S.transpose(1, 2)
    out = [M]
    for _ in range(k):  # sequential Newton steps, each vectorised over the batch
        M = 2 * M - M @ S @ M
        out.append(M)
    return torch.stack(out, dim=1)


@torch.no_grad()
def residual_errors(M, S) -> np.ndarray:
    """‖I − M Ŝ‖_F² for each matrix of ``M`` (batch, K, d, d) and prompt of ``S`` (batch, d, d): (batch, K).

    For the estimate ŵ = M X y/m = M Ŝ w of a noise-free prompt this is its error averaged over
    w ~ N(0, I) given the features.
    """
    M = checks.tensor(M, "M", ndim=4, dtype=torch.float64)
    S = checks.tensor(S, "S", ndim=3, dtype=torch.float64)
    if M.shape[0] != S.shape[0] or M.shape[2:] != S.shape[1:]:
        raise ValueError(f"M must be (batch, K, d, d) and S (batch, d, d) with matching sizes, got "
                         f"{tuple(M.shape)} and {tuple(S.shape)}")
    R = torch.eye(S.shape[1], dtype=torch.float64) - M @ S[:, None]
    return (R * R).sum(dim=(-2, -1)).numpy()

"""Simulation: errors of estimators over many seeded prompts, and the summaries read off them.

The theory of :mod:`ttscale.theory` is exact at m → ∞ (any k), and at finite m for the isotropic
task (k up to 60) and for any task up to k = 3 (``finite_m_error``). The rest, and every check of
those formulas against the model, is measured here by simulation: draw prompts from a seeded
stream (:mod:`ttscale.prompts`), run the pseudo-Newton recursion or the model's own token-appending
chain, record each prompt's squared error, and summarise the mean (a standard error, or a
bootstrap band).

One error, two estimators of its mean. The chain's error after k steps is −(I − P Ŝ_m)^k w. Drawing
w with the prompt gives ‖ŵ_k − w‖² per prompt (:func:`recursion_errors`, :func:`rollout_errors`);
averaging over w ~ N(0, I) exactly, given the features, gives ‖(I − P Ŝ_m)^k‖_F² per prompt
(``average_w=True`` in :func:`cot_errors`; a Rao–Blackwell step: the same mean, a smaller variance,
and no labels needed).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import torch

from . import checks, lsa, prompts, theory

__all__ = ["Band", "squared_errors", "mean_se", "bootstrap", "recursion_errors", "rollout_errors", "cot_errors",
           "spectral_radius", "first_below", "smallest_n_reaching", "best_k"]


class Band(NamedTuple):
    """Mean over prompts, a bootstrap interval (lo, hi) and the standard error of the mean."""

    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    se: np.ndarray


def squared_errors(w_hat: torch.Tensor, w: torch.Tensor) -> np.ndarray:
    """‖ŵ − w‖² per prompt (and per step): ``w_hat`` (batch, …, d), ``w`` (batch, d).

    Returns a numpy array of shape (batch, …), in the wider of the two dtypes (a float32 model's
    estimates are compared with float64 task vectors in float64).
    """
    w_hat = torch.as_tensor(w_hat)
    w = torch.as_tensor(w)
    dtype = torch.promote_types(w_hat.dtype, w.dtype)
    w_hat, w = w_hat.to(dtype), w.to(dtype)
    if w.ndim != 2 or w_hat.shape[0] != w.shape[0] or w_hat.shape[-1] != w.shape[-1]:
        raise ValueError(f"w_hat must be (batch, ..., d) and w (batch, d) with matching sizes, got "
                         f"{tuple(w_hat.shape)} and {tuple(w.shape)}")
    w = w.reshape(w.shape[0], *([1] * (w_hat.ndim - 2)), w.shape[1])
    return ((w_hat - w) ** 2).sum(-1).cpu().numpy()


def mean_se(errors, axis: int = 0):
    """Mean over ``axis`` (the prompts) and the standard error of that mean: (mean, sd / √n)."""
    e = np.asarray(errors, dtype=np.float64)
    if e.ndim == 0 or e.shape[axis] < 2:
        raise ValueError(f"errors must hold at least 2 prompts along axis {axis}, got shape {e.shape}")
    return e.mean(axis=axis), e.std(axis=axis, ddof=1) / np.sqrt(e.shape[axis])


@functools.lru_cache(maxsize=4)
def _resample_counts(P: int, n_boot: int, seed: int) -> np.ndarray:
    """Multinomial resampling counts (n_boot, P), read-only: a function of (P, n_boot, seed) only.

    Cached, so that the bands of many curves over the same prompts (a chapter bootstraps a dozen
    of them with one seed) draw the counts once; every call gets the same numbers as a fresh draw.
    """
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(P, np.full(P, 1.0 / P), size=n_boot).astype(np.float64)
    counts.flags.writeable = False
    return counts


def bootstrap(errors, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> Band:
    """Mean of ``errors`` over axis 0 (prompts) with a percentile bootstrap interval.

    ``errors`` has shape (n_prompts, …); prompts are resampled *jointly* across the other
    axes (a paired bootstrap: the band of each step uses the same resampled prompts).
    Resampling is done with multinomial counts, so memory is O(n_boot · n_prompts).
    """
    e = np.asarray(errors, dtype=np.float64)
    if e.ndim < 1 or e.shape[0] < 2:
        raise ValueError(f"errors must have at least 2 prompts along axis 0, got shape {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError("errors must be finite (no NaN or inf)")
    n_boot = checks.positive_int(n_boot, "n_boot")
    level = checks.finite_real(level, "level")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    P = e.shape[0]
    flat = e.reshape(P, -1)
    means = _resample_counts(P, n_boot, checks.seed(seed)) @ flat / P  # (n_boot, rest)
    q = (1 - level) / 2
    lo, hi = np.quantile(means, [q, 1 - q], axis=0)
    shape = e.shape[1:]
    mean = flat.mean(axis=0)
    se = flat.std(axis=0, ddof=1) / np.sqrt(P)
    return Band(mean.reshape(shape), lo.reshape(shape), hi.reshape(shape), se.reshape(shape))


@torch.no_grad()
def recursion_errors(S: torch.Tensor, w: torch.Tensor, P, k: int) -> np.ndarray:
    """‖ŵ_i − w‖², i = 0…k, of ŵ_{i+1} = ŵ_i − P S (ŵ_i − w) from ŵ_0 = 0; shape (batch, k+1).

    Runs on the error e_i = ŵ_i − w, e_{i+1} = (I − P S) e_i, e_0 = −w. ``S`` is a (batch, d, d)
    stack of sample covariances or one (d, d) matrix (the population, m → ∞); ``P`` is
    (d, d) or (batch, d, d).
    """
    k = checks.nonnegative_int(k, "k")
    w = checks.tensor(w, "w", ndim=2)
    S = checks.tensor(S, "S", dtype=w.dtype)
    P = checks.tensor(P, "P", dtype=w.dtype)
    b, d = w.shape
    for name, M in (("S", S), ("P", P)):
        if M.shape not in ((d, d), (b, d, d)):
            raise ValueError(f"{name} must be (d, d) = {(d, d)} or (batch, d, d), got {tuple(M.shape)}")
    # the error as a row vector: e (PS)ᵀ is the same product, and a (b, 1, d) by (b, d, d)
    # batched product is faster than (b, d, d) by (b, d, 1)
    PSt = (P @ S).transpose(-1, -2).contiguous()
    PSt = PSt.expand(b, d, d) if PSt.ndim == 2 else PSt
    e = -w
    out = [e]
    for _ in range(k):  # sequential steps, each vectorised over the batch
        e = e - torch.bmm(e[:, None, :], PSt)[:, 0]
        out.append(e)
    return (torch.stack(out, dim=1) ** 2).sum(-1).cpu().numpy()


def rollout_errors(model, batch: prompts.Prompts, k: int) -> np.ndarray:
    """‖ŵ_i − w‖², i = 0…k, of a model's real token-appending chain (:func:`ttscale.lsa.rollout`);
    shape (batch, k+1)."""
    W_hat = lsa.rollout(model, batch.X, batch.y, k)
    return squared_errors(W_hat, batch.w)


def cot_errors(Lam, n_train: int, m_test, k, n_prompts: int, *, Sigma=None, P=None, average_w: bool = False,
               seed: int = 0, stream: str = "test", step: int = 0, batch: int = 2000) -> np.ndarray:
    """Per-prompt errors of k-step test-time CoT, by simulation; shape (n_prompts, len(k)).

    Test prompts have covariance ``Sigma`` (default ``Lam``) and length ``m_test``; ``m_test=None``
    means m → ∞ (Ŝ_m = Σ). The preconditioner is ``P`` (default Γ⁻¹ from ``Lam`` and ``n_train``,
    what the trained LSA uses). ``k`` is an int (steps 0…k are returned, shape (n_prompts, k+1))
    or an array of steps. ``average_w=False`` draws w with each prompt and returns ‖ŵ_k − w‖²
    (:func:`recursion_errors`); ``average_w=True`` returns the error averaged over w given the
    features, ‖(I − P Ŝ_m)^k‖_F² (:func:`ttscale.theory.map_error`; overflow gives ``inf``).
    Prompts come in chunks of ``batch`` from ``(seed, stream, step + chunk index)``, so the same
    arguments give the same numbers.
    """
    Lam = checks.covariance(Lam, "Lam")
    Sigma = Lam if Sigma is None else checks.covariance(Sigma, "Sigma", d=Lam.shape[0])
    ks = np.arange(checks.nonnegative_int(k, "k") + 1) if np.ndim(k) == 0 else checks.steps(k, "k").reshape(-1)
    n_prompts = checks.positive_int(n_prompts, "n_prompts")
    batch = checks.positive_int(batch, "batch")
    step = checks.nonnegative_int(step, "step")
    if m_test is not None:
        m_test = checks.positive_int(m_test, "m_test")
    if P is None:
        P = np.linalg.inv(theory.gamma(Lam, n_train))
    out = []
    for chunk, start in enumerate(range(0, n_prompts, batch)):  # chunks bound the memory
        b = min(batch, n_prompts - start)
        pr = prompts.sample(Sigma, 1 if m_test is None else m_test, b, seed=seed, stream=stream, step=step + chunk)
        S = torch.as_tensor(Sigma) if m_test is None else prompts.sample_covariance(pr.X)
        if average_w:
            e = theory.map_error(P, S.numpy(), ks)
            out.append(np.broadcast_to(e, (b, ks.size)) if np.ndim(e) == 1 else e)
        else:
            out.append(recursion_errors(S, pr.w, P, int(ks.max()))[:, ks])
    return np.ascontiguousarray(np.concatenate(out, axis=0))  # C order: a mean sums in the same order every time


def spectral_radius(P, S) -> np.ndarray:
    """max_j |1 − ν_j| over the eigenvalues ν_j of P Ŝ, per prompt: the chain diverges iff > 1.

    For symmetric positive-definite P (Γ⁻¹) and PSD Ŝ the ν_j are real and ≥ 0, and
    divergence is ν_max > 2. ``S`` is (batch, d, d) or (d, d).
    """
    P = checks.tensor(P, "P", dtype=torch.float64)
    S = checks.tensor(S, "S", dtype=torch.float64)
    if S.ndim == 2:
        S = S[None]
    if P.ndim != 2 or S.ndim != 3 or S.shape[1:] != P.shape:
        raise ValueError(f"P must be (d, d) and S (batch, d, d) with the same d, got {tuple(P.shape)} and {tuple(S.shape)}")
    nu = torch.linalg.eigvals(P @ S)
    return (1 - nu).abs().max(dim=1).values.numpy()


def first_below(errors, target: float, axis: int = -1):
    """Index of the first entry along ``axis`` that is <= ``target``, or ``nan`` where none is.

    For a 1-d curve (error after k = 0, 1, … steps) returns an ``int`` or ``nan``; otherwise a
    float array over the other axes. ``inf`` (a diverged chain) is allowed, ``nan`` is not.
    """
    target = checks.positive_real(target, "target")
    errors = np.asarray(errors, dtype=np.float64)
    if errors.ndim == 0 or errors.shape[axis] == 0:
        raise ValueError(f"errors must hold at least one entry along axis {axis}, got shape {errors.shape}")
    if np.isnan(errors).any():
        raise ValueError("errors must not contain NaN (an infinite error is allowed: a diverged chain)")
    ok = errors <= target
    out = np.where(ok.any(axis=axis), ok.argmax(axis=axis).astype(np.float64), np.nan)
    if out.ndim == 0:
        return float("nan") if np.isnan(out) else int(out)
    return out


def smallest_n_reaching(n_values, errors, target: float) -> np.ndarray:
    """For each column of ``errors`` (n_values × K), the first n whose error is <= ``target``.

    ``nan`` where no n on the grid reaches it: :func:`first_below` along the n axis, the simulated
    counterpart of :func:`ttscale.theory.smallest_n_train`.
    """
    n_values = np.asarray(n_values)
    errors = np.asarray(errors, dtype=np.float64)
    if errors.ndim != 2 or errors.shape[0] != n_values.size:
        raise ValueError(f"errors must have shape (len(n_values), K) = ({n_values.size}, K), got {errors.shape}")
    idx = first_below(np.where(np.isnan(errors), np.inf, errors), target, axis=0)  # nan: an overflowed chain
    return np.where(np.isnan(idx), np.nan, n_values[np.nan_to_num(idx).astype(int)].astype(np.float64))


def best_k(errors, axis: int = -1):
    """Index of the smallest error along ``axis``; overflowed entries (inf, nan) count as +inf.

    ``errors[..., k]`` is the error after k applications, so the result is the best number
    of applications on the grid.
    """
    e = np.asarray(errors, dtype=np.float64)
    if e.ndim == 0 or e.shape[axis] == 0:
        raise ValueError("errors must have at least one entry along axis")
    e = np.where(np.isfinite(e), e, np.inf)
    return np.argmin(e, axis=axis)

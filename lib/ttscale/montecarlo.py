"""Monte Carlo errors of estimators over many prompts, with bootstrap bands (numpy/torch).

The theory of :mod:`ttscale.theory` is exact at m → ∞ (any k), and at finite m for the isotropic
task (any k up to 60) and for any task up to k = 3 (``finite_m_error``). The rest, and every check
of those formulas against the model, is measured here by simulation: draw prompts from the seeded ``test`` stream, run the pseudo-Newton recursion,
record each prompt's squared error, and summarise the mean with a bootstrap band.

Used in {ref}`sec-pseudo-newton`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from . import checks, prompts, theory

__all__ = ["Band", "squared_errors", "bootstrap", "recursion_errors", "cot_errors", "smallest_n_reaching"]


class Band(NamedTuple):
    """Mean over prompts, a bootstrap interval (lo, hi) and the standard error of the mean."""

    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    se: np.ndarray


def squared_errors(w_hat: torch.Tensor, w: torch.Tensor) -> np.ndarray:
    """‖ŵ − w‖² per prompt (and per step): ``w_hat`` (batch, …, d), ``w`` (batch, d).

    Returns a numpy array of shape (batch, …). Used in {ref}`sec-pseudo-newton`.
    """
    w_hat = torch.as_tensor(w_hat)
    w = torch.as_tensor(w, dtype=w_hat.dtype)
    if w.ndim != 2 or w_hat.shape[0] != w.shape[0] or w_hat.shape[-1] != w.shape[-1]:
        raise ValueError(f"w_hat must be (batch, ..., d) and w (batch, d) with matching sizes, got "
                         f"{tuple(w_hat.shape)} and {tuple(w.shape)}")
    w = w.reshape(w.shape[0], *([1] * (w_hat.ndim - 2)), w.shape[1])
    return ((w_hat - w) ** 2).sum(-1).cpu().numpy()


def bootstrap(errors, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> Band:
    """Mean of ``errors`` over axis 0 (prompts) with a percentile bootstrap interval.

    ``errors`` has shape (n_prompts, …); prompts are resampled *jointly* across the other
    axes (a paired bootstrap: the band of each step uses the same resampled prompts).
    Resampling is done with multinomial counts, so memory is O(n_boot · n_prompts).
    Used in {ref}`sec-pseudo-newton`.
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
    rng = np.random.default_rng(checks.seed(seed))
    P = e.shape[0]
    flat = e.reshape(P, -1)
    counts = rng.multinomial(P, np.full(P, 1.0 / P), size=n_boot).astype(np.float64)  # (n_boot, P)
    means = counts @ flat / P  # (n_boot, rest)
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
    (d, d) or (batch, d, d). Used in {ref}`sec-pseudo-newton`.
    """
    k = checks.nonnegative_int(k, "k")
    w = checks.tensor(w, "w", ndim=2)
    S = checks.tensor(S, "S", dtype=w.dtype)
    P = checks.tensor(P, "P", dtype=w.dtype)
    b, d = w.shape
    for name, M in (("S", S), ("P", P)):
        if M.shape not in ((d, d), (b, d, d)):
            raise ValueError(f"{name} must be (d, d) = {(d, d)} or (batch, d, d), got {tuple(M.shape)}")
    PS = P @ S
    e = -w
    out = [(e ** 2).sum(-1)]
    for _ in range(k):  # sequential steps, each vectorised over the batch
        e = e - (PS @ e[:, :, None])[:, :, 0]  # (d,d) or (b,d,d), broadcast
        out.append((e ** 2).sum(-1))
    return torch.stack(out, dim=1).cpu().numpy()


def cot_errors(Lam, n_train: int, m_test, k: int, n_prompts: int, *, Sigma=None, P=None,
               seed: int = 0, stream: str = "test", batch: int = 2000) -> np.ndarray:
    """Per-prompt squared errors of k-step test-time CoT, by simulation; shape (n_prompts, k+1).

    Test prompts have covariance ``Sigma`` (default ``Lam``) and length ``m_test``; ``m_test=None``
    means m → ∞ (Ŝ_m = Σ, only w is random). The preconditioner is ``P`` (default Γ⁻¹ from
    ``Lam`` and ``n_train``, what the trained LSA uses). Prompts come in chunks of ``batch`` from
    ``(seed, stream, step = chunk index)``, so the same arguments give the same numbers.
    Used in {ref}`sec-pseudo-newton`.
    """
    Lam = checks.covariance(Lam, "Lam")
    Sigma = Lam if Sigma is None else checks.covariance(Sigma, "Sigma", d=Lam.shape[0])
    k = checks.nonnegative_int(k, "k")
    n_prompts = checks.positive_int(n_prompts, "n_prompts")
    batch = checks.positive_int(batch, "batch")
    if m_test is not None:
        m_test = checks.positive_int(m_test, "m_test")
    if P is None:
        P = np.linalg.inv(theory.gamma(Lam, n_train))
    out = []
    for chunk, start in enumerate(range(0, n_prompts, batch)):  # chunks bound the memory
        b = min(batch, n_prompts - start)
        pr = prompts.sample(Sigma, 1 if m_test is None else m_test, b, seed=seed, stream=stream, step=chunk)
        S = torch.as_tensor(Sigma) if m_test is None else prompts.sample_covariance(pr.X)
        out.append(recursion_errors(S, pr.w, P, k))
    return np.concatenate(out, axis=0)


def smallest_n_reaching(n_values, errors, target: float) -> np.ndarray:
    """For each column of ``errors`` (n_values × K), the first n whose error is <= ``target``.

    ``nan`` where no n on the grid reaches it. The simulated counterpart of
    :func:`ttscale.theory.smallest_n_train`. Used in {ref}`sec-pseudo-newton`.
    """
    n_values = np.asarray(n_values)
    errors = np.asarray(errors, dtype=np.float64)
    target = checks.positive_real(target, "target")
    if errors.ndim != 2 or errors.shape[0] != n_values.size:
        raise ValueError(f"errors must have shape (len(n_values), K) = ({n_values.size}, K), got {errors.shape}")
    ok = errors <= target
    return np.where(ok.any(axis=0), n_values[ok.argmax(axis=0)].astype(np.float64), np.nan)

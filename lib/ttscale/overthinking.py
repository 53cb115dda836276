"""When more test-time compute hurts: divergence edges, finite-m error curves, a diagnostic.

The trained LSA's chain of thought is the recursion ŵ_{i+1} = ŵ_i − P Ŝ_m (ŵ_i − w) with
P = Γ⁻¹ ({ref}`sec-pseudo-newton` and {ref}`sec-overthinking`), so ŵ_k − w = −(I − P Ŝ_m)^k w. With w ~ N(0, I_d) drawn
independently of the prompt's features, the error *given the features* is exactly

    E_w[‖ŵ_k − w‖² | X] = ‖(I − P Ŝ_m)^k‖_F²,

which needs no labels. Averaging it over prompts estimates the finite-m error with less
noise than sampling w (a Rao–Blackwell step), and evaluating it on a few unlabelled
downstream prompts predicts, before any chain is run, whether longer chains will help.

Used in {ref}`sec-overthinking`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from . import checks, prompts, theory
from .lsa import LSA, applied_map

__all__ = [
    "mp_lambda_max",
    "mp_edge_ratio",
    "critical_n_train",
    "best_k",
    "spectral_radius",
    "population_prompts",
    "rollout_errors",
    "FiniteM",
    "finite_m_errors",
    "PhaseDiagram",
    "isotropic_phase_diagram",
    "Diagnosis",
    "diagnose",
    "self_labelled_errors",
    "DiagnosticTest",
    "test_diagnostic",
    "phase_figure",
    "diagnostic_figure",
]


# --------------------------------------------------------------------------- edges
def mp_lambda_max(n_train, d: int, m_test):
    """Marchenko–Pastur prediction of λ_max(Γ⁻¹Ŝ_m) for Λ = Σ = I: (n/(n+d+1))(1 + √(d/m))².

    For Λ = I, Γ = ((n+d+1)/n) I, and the largest eigenvalue of a d × d sample covariance of
    m standard Gaussian vectors tends to (1 + √(d/m))² as d, m → ∞ with d/m fixed
    (Marchenko and Pastur 1967). The chain diverges when this exceeds 2. Vectorised over
    ``n_train`` and ``m_test`` (broadcast). Used in {ref}`sec-overthinking`.
    """
    d = checks.positive_int(d, "d")
    n = np.asarray(n_train, dtype=np.float64)
    m = np.asarray(m_test, dtype=np.float64)
    if n.size and (not np.all(np.isfinite(n)) or n.min() <= 0):
        raise ValueError("n_train must be > 0")
    if m.size and (not np.all(np.isfinite(m)) or m.min() <= 0):
        raise ValueError("m_test must be > 0")
    out = n / (n + d + 1) * (1 + np.sqrt(d / m)) ** 2
    return float(out) if out.ndim == 0 else out


def mp_edge_ratio(n_train, d: int):
    """The test length ratio m/d on the Marchenko–Pastur edge (n/(n+d+1))(1 + √(d/m))² = 2.

    Solving for m: √(d/m) = √(2(n+d+1)/n) − 1, so m/d = 1 / (√(2(n+d+1)/n) − 1)². Shorter
    test prompts (m/d below this) make the chain diverge. As n → ∞ the edge tends to
    1/(√2 − 1)² ≈ 5.83. Vectorised over ``n_train``. Used in {ref}`sec-overthinking`.
    """
    d = checks.positive_int(d, "d")
    n = np.asarray(n_train, dtype=np.float64)
    if n.size and (not np.all(np.isfinite(n)) or n.min() <= 0):
        raise ValueError("n_train must be > 0")
    out = 1.0 / (np.sqrt(2 * (n + d + 1) / n) - 1) ** 2
    return float(out) if out.ndim == 0 else out


def critical_n_train(Lam, Sigma=None, n_max: int = 100_000):
    """Smallest training prompt length n whose chain eventually diverges on test covariance Σ.

    Divergence (m → ∞) means μ_max(Γ^{−1/2}ΣΓ^{−1/2}) > 2. Γ(n) = Λ + (Λ + tr Λ · I)/n
    decreases in the Loewner order as n grows, so μ_max increases with n and a bisection
    over the integers finds the first n that overthinks. Returns ``nan`` if even ``n_max``
    does not. Used in {ref}`sec-overthinking`.
    """
    n_max = checks.positive_int(n_max, "n_max")

    def over(n):
        return theory.preconditioned_spectrum(Lam, n, Sigma)[-1] > 2.0

    if not over(n_max):
        return float("nan")
    if over(1):
        return 1
    lo, hi = 1, n_max  # over(lo) is False, over(hi) is True
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if over(mid):
            hi = mid
        else:
            lo = mid
    return hi


def best_k(errors, axis: int = -1):
    """Index of the smallest error along ``axis``; overflowed entries (inf, nan) count as +inf.

    ``errors[..., k]`` is the error after k applications, so the result is the best number
    of applications on the grid. Used in {ref}`sec-overthinking`.
    """
    e = np.asarray(errors, dtype=np.float64)
    if e.ndim == 0 or e.shape[axis] == 0:
        raise ValueError("errors must have at least one entry along axis")
    e = np.where(np.isfinite(e), e, np.inf)
    return np.argmin(e, axis=axis)


# --------------------------------------------------------------------------- per-prompt errors
def _as_tensor(a, dtype=torch.float64):
    return a.to(dtype) if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a), dtype=dtype)


def spectral_radius(P, S) -> np.ndarray:
    """max_j |1 − ν_j| over the eigenvalues ν_j of P Ŝ, per prompt: the chain diverges iff > 1.

    For symmetric positive-definite P (Γ⁻¹) and PSD Ŝ the ν_j are real and ≥ 0, and
    divergence is ν_max > 2. ``S`` is (batch, d, d) or (d, d). Used in {ref}`sec-overthinking`.
    """
    P = checks.tensor(P, "P", dtype=torch.float64)
    S = checks.tensor(S, "S", dtype=torch.float64)
    if S.ndim == 2:
        S = S[None]
    if P.ndim != 2 or S.ndim != 3 or S.shape[1:] != P.shape:
        raise ValueError(f"P must be (d, d) and S (batch, d, d) with the same d, got {tuple(P.shape)} and {tuple(S.shape)}")
    nu = torch.linalg.eigvals(P @ S)
    return (1 - nu).abs().max(dim=1).values.numpy()


def population_prompts(Sigma, m: int, batch: int, *, seed: int = 0, stream: str = "test", step: int = 0) -> prompts.Prompts:
    """Prompts whose sample covariance equals Σ exactly: X Xᵀ/m = Σ (the m → ∞ limit, reached at finite m).

    X = √m Σ^{1/2} Qᵀ with Q an m × d matrix of orthonormal columns (QR of a seeded Gaussian
    matrix), w ~ N(0, I_d), y = Xᵀw. The CoT recursion sees X only through Ŝ_m = Σ and
    X y / m = Σ w, so an LSA run on these prompts follows the population (m → ∞) recursion
    exactly, and its error averaged over w estimates ‖(I − Γ⁻¹Σ)^k‖_F² without bias.
    Needs m >= d. Used in {ref}`sec-overthinking`.
    """
    Sigma = checks.covariance(Sigma, "Sigma")
    d = Sigma.shape[0]
    m = checks.positive_int(m, "m")
    batch = checks.positive_int(batch, "batch")
    if m < d:
        raise ValueError(f"m must be >= d = {d} for a prompt to carry the whole covariance, got {m}")
    g = prompts.generator(seed, stream, step)
    G = torch.randn(batch, m, d, generator=g, dtype=torch.float64)
    Q, R = torch.linalg.qr(G)  # (batch, m, d), orthonormal columns
    lam, U = np.linalg.eigh(Sigma)
    root = torch.as_tensor((U * np.sqrt(np.clip(lam, 0, None))) @ U.T)
    X = np.sqrt(m) * root @ Q.transpose(1, 2)  # (batch, d, m)
    w = torch.randn(batch, d, generator=g, dtype=torch.float64)
    y = torch.einsum("bdn,bd->bn", X, w)
    return prompts.Prompts(X, y, w)


def rollout_errors(model: LSA, batch: prompts.Prompts, k: int) -> np.ndarray:
    """‖ŵ_i − w‖² for i = 0…k from the model's real token-appending CoT; shape (batch, k+1).

    Used in {ref}`sec-overthinking`.
    """
    from .lsa import rollout

    W_hat = rollout(model, batch.X, batch.y, k)
    return ((W_hat - batch.w.to(W_hat.dtype)[:, None, :]) ** 2).sum(dim=2).numpy()


class FiniteM(NamedTuple):
    """Per-prompt results on test prompts of finite length m."""

    errors: np.ndarray  # (batch, len(k)): ‖(I − Γ⁻¹Ŝ_m)^k‖_F² per prompt
    radius: np.ndarray  # (batch,): spectral radius of I − Γ⁻¹Ŝ_m (> 1: diverges)


def finite_m_errors(Lam, n_train: int, m_test: int, k, *, Sigma=None, batch: int = 1000,
                    seed: int = 0, stream: str = "test", step: int = 0) -> FiniteM:
    """CoT error curves of the trained LSA on ``batch`` test prompts of length m, per prompt.

    Test features come from :func:`ttscale.prompts.sample` with covariance Σ (default Λ);
    each prompt's error is conditional on its features and exact over w (see the module
    docstring), so ``errors.mean(0)`` is an unbiased estimate of E‖ŵ_k − w‖² at finite m.
    Vectorised over prompts. Used in {ref}`sec-overthinking`.
    """
    Lam = checks.covariance(Lam, "Lam")
    Sigma = Lam if Sigma is None else checks.covariance(Sigma, "Sigma", d=Lam.shape[0])
    m = checks.positive_int(m_test, "m_test")
    P = np.linalg.inv(theory.gamma(Lam, n_train))
    X = prompts.sample(Sigma, m, batch, seed=seed, stream=stream, step=step).X
    S = prompts.sample_covariance(X)
    return FiniteM(theory.map_error(P, S, k), spectral_radius(P, S))


class PhaseDiagram(NamedTuple):
    """Isotropic (Λ = Σ = I) finite-m results on an (n_train, m_test) grid; arrays are (len(n), len(m))."""

    n_train: np.ndarray
    m_test: np.ndarray
    frac_diverging: np.ndarray  # fraction of prompts with λ_max(Γ⁻¹Ŝ_m) > 2
    mean_error: np.ndarray  # mean over prompts of E_w‖ŵ_k − w‖² at the requested k
    stderr: np.ndarray  # its standard error
    k: int


def isotropic_phase_diagram(d: int, n_train, m_test, k: int, *, batch: int = 1000, seed: int = 0) -> PhaseDiagram:
    """Simulate the finite-m overthinking phase diagram for Λ = Σ = I.

    For Λ = I, Γ⁻¹ = c I with c = n/(n+d+1), so with s_j the eigenvalues of Ŝ_m the chain's
    error given the features is Σ_j (1 − c s_j)^{2k} and it diverges iff c·s_max > 2. The
    same ``batch`` prompts of each length m serve every n (common random numbers); prompts of
    different lengths come from different steps of the ``test`` stream.
    Used in {ref}`sec-overthinking`.
    """
    d = checks.positive_int(d, "d")
    k = checks.nonnegative_int(k, "k")
    n = np.array([checks.positive_int(v, "n_train") for v in np.atleast_1d(n_train).tolist()])
    m = np.array([checks.positive_int(v, "m_test") for v in np.atleast_1d(m_test).tolist()])
    batch = checks.positive_int(batch, "batch")
    c = n / (n + d + 1.0)
    frac = np.empty((n.size, m.size))
    mean = np.empty_like(frac)
    se = np.empty_like(frac)
    for j, mj in enumerate(m):  # one batch of prompts per test length
        X = prompts.sample(np.eye(d), int(mj), batch, seed=seed, stream="test", step=j).X
        s = torch.linalg.eigvalsh(prompts.sample_covariance(X)).numpy()  # (batch, d)
        cs = c[:, None, None] * s[None]  # (len(n), batch, d)
        frac[:, j] = (cs.max(axis=2) > 2).mean(axis=1)
        with np.errstate(over="ignore"):
            e = ((1 - cs) ** (2 * k)).sum(axis=2)
        mean[:, j] = e.mean(axis=1)
        se[:, j] = e.std(axis=1, ddof=1) / np.sqrt(batch) if batch > 1 else np.nan
    return PhaseDiagram(n, m, frac, mean, se, k)


# --------------------------------------------------------------------------- diagnostic
class Diagnosis(NamedTuple):
    """A prediction of the CoT error curve on a downstream task, before running any chain."""

    k: np.ndarray  # the steps predicted
    predicted: np.ndarray  # mean over the sample prompts of ‖(I − PŜ)^k‖_F²
    stderr: np.ndarray  # its standard error over the sample prompts
    best_k: int  # argmin of the prediction
    helps: bool  # does the longest chain beat one application?
    frac_diverging: float  # share of sample prompts with spectral radius > 1
    per_prompt_best_k: np.ndarray  # argmin per sample prompt (a per-prompt stopping rule)


def diagnose(P, X, k_max: int) -> Diagnosis:
    """Predict whether longer chains help on a downstream task, and the best k.

    Inputs: the model's preconditioner ``P`` (:func:`ttscale.lsa.applied_map`, i.e. Γ⁻¹) and the
    *features* ``X`` (batch, d, m) of a few downstream prompts — no answers. Each prompt's
    expected error over an isotropic prior w ~ N(0, I_d) is ‖(I − PŜ_m)^k‖_F² exactly, so the
    mean over the sample predicts the task's error curve for k = 0…k_max, including the
    finite-m effects of the prompts' own length. Used in {ref}`sec-overthinking`.
    """
    k_max = checks.positive_int(k_max, "k_max")
    X = _as_tensor(X)
    if X.ndim != 3:
        raise ValueError(f"X must have shape (batch, d, m), got {tuple(X.shape)}")
    P = np.asarray(P, dtype=np.float64)
    if P.shape != (X.shape[1], X.shape[1]):
        raise ValueError(f"P must be (d, d) with d = {X.shape[1]} (the prompts' dimension), got {P.shape}")
    ks = np.arange(k_max + 1)
    S = prompts.sample_covariance(X)
    e = theory.map_error(P, S, ks)  # (batch, K)
    finite = np.where(np.isfinite(e), e, np.inf)
    with np.errstate(invalid="ignore", over="ignore"):
        pred = finite.mean(axis=0)
        se = finite.std(axis=0, ddof=1) / np.sqrt(e.shape[0]) if e.shape[0] > 1 else np.full(ks.size, np.nan)
    return Diagnosis(ks, pred, se, int(best_k(pred)), bool(pred[-1] < pred[1]),
                     float((spectral_radius(P, S) > 1).mean()), best_k(finite, axis=1))


def self_labelled_errors(model: LSA, X, k_max: int, *, draws: int = 1, seed: int = 0) -> np.ndarray:
    """Run the model's own chain on unlabelled prompts, with answers made up from w ~ N(0, I_d).

    The model-agnostic version of :func:`diagnose`: draw ``draws`` task vectors per prompt
    (seeded, ``eval`` stream), set y = Xᵀw, run :func:`ttscale.lsa.rollout` and return the
    errors ‖ŵ_k − w‖², shape (batch · draws, k_max + 1). Needs no answers from the downstream
    task and no formula for the model, only the isotropic prior on w; it also sees every
    weight of the model, not only the block that :func:`ttscale.lsa.applied_map` reads.
    Used in {ref}`sec-overthinking`.
    """
    k_max = checks.positive_int(k_max, "k_max")
    draws = checks.positive_int(draws, "draws")
    X = _as_tensor(X)
    if X.ndim != 3 or X.shape[1] != model.d:
        raise ValueError(f"X must have shape (batch, d = {model.d}, m), got {tuple(X.shape)}")
    X = X.repeat(draws, 1, 1)
    g = prompts.generator(seed, "eval", 0)
    w = torch.randn(X.shape[0], model.d, generator=g, dtype=X.dtype)
    y = torch.einsum("bdn,bd->bn", X, w)
    return rollout_errors(model, prompts.Prompts(X, y, w), k_max)


class DiagnosticTest(NamedTuple):
    """The diagnostic's predictions on one downstream task, and what held-out prompts showed."""

    diagnosis: Diagnosis  # label-free prediction from the sample prompts (formula)
    self_labelled: np.ndarray  # (k_max+1,) mean error of self-labelled rollouts on the same sample
    heldout: np.ndarray  # (k_max+1,) mean held-out error of the model's real chain
    per_prompt: float  # held-out error when each prompt stops at its own predicted best k
    row: dict  # a summary row for a table


def test_diagnostic(model: LSA, Sigma, m_test: int, k_max: int, *, sample: int = 32, heldout: int = 500,
                    draws: int = 4, seed: int = 0, step: int = 0) -> DiagnosticTest:
    """Predict a downstream task's CoT error curve from ``sample`` unlabelled prompts, then check it.

    The prediction uses :func:`diagnose` (the model's P and the sample's features) and
    :func:`self_labelled_errors` (made-up answers through the model's own chain), on prompts
    of the ``eval`` stream; the check runs the model's chain on ``heldout`` fresh prompts of the
    ``test`` stream, with their true answers. Per-prompt stopping applies :func:`diagnose` to each
    held-out prompt's own features (no answers). Used in {ref}`sec-overthinking`.
    """
    sample = checks.positive_int(sample, "sample")
    heldout = checks.positive_int(heldout, "heldout")
    if sample < 2:
        raise ValueError(f"sample must be >= 2 prompts (a standard error needs two), got {sample}")
    P = applied_map(model)
    X = prompts.sample(Sigma, m_test, sample, seed=seed, stream="eval", step=step).X
    dg = diagnose(P, X, k_max)
    selfl = self_labelled_errors(model, X, k_max, draws=draws, seed=seed + step).mean(0)
    held = prompts.sample(Sigma, m_test, heldout, seed=seed, stream="test", step=step)
    e = rollout_errors(model, held, k_max)
    actual = e.mean(0)
    per_prompt = float(e[np.arange(len(e)), diagnose(P, held.X, k_max).per_prompt_best_k].mean())
    kb = int(best_k(actual))
    row = {"predicted helps": dg.helps, "actually helps": bool(actual[-1] < actual[1]),
           "predicted best k": dg.best_k, "self-labelled best k": int(best_k(selfl)), "actual best k": kb,
           "error at predicted k": float(actual[dg.best_k]), "error at actual best k": float(actual[kb]),
           "error, per-prompt k": per_prompt, "error at k = 1": float(actual[1]),
           f"error at k = {k_max}": float(actual[-1])}
    return DiagnosticTest(dg, selfl, actual, per_prompt, row)


test_diagnostic.__test__ = False  # a library function, not a pytest test


def phase_figure(phase: PhaseDiagram, d: int):
    """Two panels over (n_train, m_test/d): fraction of prompts diverging, and log10(error/d) at k.

    Draws the Marchenko–Pastur edge :func:`mp_edge_ratio` over both and, on the right, the
    contour where the error equals the trivial d. Returns the figure. Used in {ref}`sec-overthinking`.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    d = checks.positive_int(d, "d")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    ratio = phase.m_test / d
    n_line = np.geomspace(phase.n_train[0], phase.n_train[-1], 200)
    im1 = a1.pcolormesh(phase.n_train, ratio, phase.frac_diverging.T, cmap=sns.color_palette("rocket_r", as_cmap=True), vmin=0, vmax=1,
                        shading="nearest")
    fig.colorbar(im1, ax=a1, label="fraction of prompts diverging")
    with np.errstate(divide="ignore"):
        log_err = np.log10(phase.mean_error / d).T
    im2 = a2.pcolormesh(phase.n_train, ratio, np.clip(log_err, -4, 4), cmap=sns.color_palette("vlag", as_cmap=True), vmin=-4, vmax=4,
                        shading="nearest")
    fig.colorbar(im2, ax=a2, label=f"log10(error at k = {phase.k} / d)")
    if np.nanmin(log_err) < 0 < np.nanmax(log_err):
        a2.contour(phase.n_train, ratio, log_err, levels=[0], colors="k", linewidths=1, linestyles=":")
    for ax in (a1, a2):
        ax.plot(n_line, mp_edge_ratio(n_line, d), color="k", lw=2, label="Marchenko–Pastur edge")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(ratio[0] / 1.1, ratio[-1] * 1.1)
        ax.set_xlabel("training prompt length n")
    a1.set_ylabel("test prompt length m / d")
    a1.legend(loc="upper left", fontsize="small", frameon=True)
    return fig


def diagnostic_figure(results: dict, d: int):
    """One panel per downstream task: prediction (line and band of two standard errors where it is
    positive), self-labelled rollouts (thin line) and held-out error (dots), log scale, with the
    trivial error d and the predicted best k. ``results`` maps task names to
    :class:`DiagnosticTest`. Returns the figure. Used in {ref}`sec-overthinking`.
    """
    import matplotlib.pyplot as plt

    from . import plotting

    d = checks.positive_int(d, "d")
    if not results:
        raise ValueError("results must hold at least one task")
    cols = min(2, len(results))
    rows = -(-len(results) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.2 * rows), sharex=True, squeeze=False)
    for ax, (name, res), color in zip(axes.flat, results.items(), plotting.series_colors(len(results))):
        dg = res.diagnosis
        lo, hi = dg.predicted - 2 * dg.stderr, dg.predicted + 2 * dg.stderr
        ax.fill_between(dg.k, np.where(lo > 0, lo, np.nan), hi, where=lo > 0, color=color, alpha=0.3, lw=0,
                        label="predicted")
        ax.semilogy(dg.k, dg.predicted, "-", lw=2, alpha=0.5, color=color)
        ax.semilogy(dg.k, res.self_labelled, "-", lw=1, color=color, label="self-labelled")
        ax.semilogy(dg.k, res.heldout, "o", ms=3, color="k", label="held-out")
        ax.axvline(dg.best_k, color=color, lw=1, ls="--")
        ax.axhline(d, **plotting.TRIVIAL_STYLE, label="trivial error d")
        ax.text(0.5, 1.02, name, transform=ax.transAxes, ha="center", va="bottom", fontsize="small")
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    for ax in axes[-1]:
        ax.set_xlabel("model applications k")
    for ax in axes[:, 0]:
        ax.set_ylabel("test error")
    for ax in list(axes.flat)[len(results):]:
        ax.set_visible(False)
    axes[0, 0].legend(fontsize="small", loc="lower left")
    return fig

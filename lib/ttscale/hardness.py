"""Task hardness Hard(Λ) = tr Λ / λ_min(Λ): per-skill hardness, spectra of equal hardness,
CoT steps needed to reach a target error, and an effective hardness for k steps.

In distribution and with m → ∞ every skill (eigen-direction i of Λ) contracts by the same
law under one CoT step,

    ρ_i = (λ_i + T) / ((n+1) λ_i + T) = 1 / (1 + n / (1 + h_i)),   h_i = T / λ_i,

with T = tr Λ. The *per-skill hardness* h_i carries everything; Hard(Λ) = max_i h_i.
Errors are E‖ŵ_k − w‖², not divided by d (the zero predictor scores d).

Used in {ref}`sec-hardness`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import optimize

from . import checks, covariances, lsa, prompts, theory

__all__ = [
    "skill_hardness",
    "hardness_elasticity",
    "power_law_alpha_for_hardness",
    "equal_hardness_spectrum",
    "KINDS",
    "steps_to_target",
    "steps_to_target_bound",
    "effective_hardness",
    "power_mean_hardness",
    "rollout_error",
    "wishart_draw_error",
    "first_below",
    "weak_skill_spectrum",
    "simulate_steps",
]

#: Spectrum families :func:`equal_hardness_spectrum` can build at any prescribed hardness.
KINDS = ("power_law", "weak_skills")


def _eigenvalues(Lam) -> np.ndarray:
    """Eigenvalues of a non-singular covariance, decreasing; ValueError (via Hard) if singular."""
    theory.hardness(Lam)  # the one place that decides "singular" and says so
    return np.linalg.eigvalsh(checks.covariance(Lam, "Lam"))[::-1].copy()


def skill_hardness(Lam) -> np.ndarray:
    """Per-skill hardness h_i = tr Λ / λ_i, one per eigen-direction, in increasing order.

    The last entry is Hard(Λ); all equal d iff Λ ∝ I. Raises ``ValueError`` for a singular
    Λ (a skill with λ_i = 0 has infinite hardness). Used in {ref}`sec-hardness`.
    """
    lam = _eigenvalues(Lam)
    return lam.sum() / lam


def hardness_elasticity(Lam) -> np.ndarray:
    """∂ log Hard / ∂ log λ_i for each eigenvalue (decreasing order of λ_i).

    For a simple smallest eigenvalue: λ_i / T for i ≠ min and λ_min/T − 1 = 1/Hard − 1 for the
    smallest, so the smallest eigenvalue moves Hard one-for-one (elasticity ≈ −1) while each
    other one moves it by its share of the trace. Requires λ_min to be simple (otherwise Hard
    is not differentiable there). Used in {ref}`sec-hardness`.
    """
    lam = _eigenvalues(Lam)
    if lam.size > 1 and np.isclose(lam[-1], lam[-2], rtol=1e-9, atol=0):
        raise ValueError("Lam's smallest eigenvalue is repeated, so Hard(Lam) is not differentiable there")
    e = lam / lam.sum()
    e[-1] -= 1.0
    return e


def power_law_alpha_for_hardness(d: int, H: float) -> float:
    """The exponent α with Hard(power law λ_i ∝ i^−α, i = 1…d) = H.

    Hard of the power law is Σ_i (d/i)^α, increasing in α from d (α = 0), so the root is
    unique; found by bracketing and Brent's method. Used in {ref}`sec-hardness`.
    """
    d = checks.positive_int(d, "d")
    H = _check_H(H, d)
    if d == 1 or math.isclose(H, d, rel_tol=1e-12):
        return 0.0
    i = np.arange(1, d + 1, dtype=np.float64)

    def excess(a):
        return np.log(np.sum((d / i) ** a)) - np.log(H)

    hi = 1.0
    while excess(hi) < 0:
        hi *= 2.0
        if hi > 1e4:
            raise ValueError(f"H = {H!r} is too large to reach with a power law in d = {d}")
    return float(optimize.brentq(excess, 0.0, hi, xtol=1e-14, rtol=1e-14))


def _check_H(H, d) -> float:
    H = checks.positive_real(H, "H")
    if H < d * (1 - 1e-12):
        raise ValueError(f"H must be >= d = {d} (Hard(Lam) >= d for every covariance), got {H!r}")
    return max(H, float(d))


def equal_hardness_spectrum(d: int, H: float, kind: str = "power_law", r: int = 1) -> np.ndarray:
    """Eigenvalues (decreasing, summing to d) of a covariance with Hard exactly ``H``.

    ``kind="power_law"``: λ_i ∝ i^−α with α from :func:`power_law_alpha_for_hardness`.
    ``kind="weak_skills"``: d − r skills at level 1 and ``r`` weak skills at level
    ε = (d − r)/(H − r) (then Hard = (d − r + rε)/ε = H); r = 1 is one weak skill in an
    easy bulk, r = d − 1 one strong skill above a uniformly hard bulk. As ε → 0 it becomes
    the singular missing-skill covariance, whose hardness is infinite.
    Used in {ref}`sec-hardness`.
    """
    d = checks.positive_int(d, "d")
    H = _check_H(H, d)
    checks.one_of(kind, KINDS, "kind")
    if kind == "power_law":
        return covariances.power_law_spectrum(d, power_law_alpha_for_hardness(d, H), normalise="trace")
    r = checks.positive_int(r, "r")
    if r >= d:
        raise ValueError(f"r (weak skills) must be between 1 and d - 1 = {d - 1}, got {r}")
    return weak_skill_spectrum(d, r, min((d - r) / (H - r), 1.0))


def weak_skill_spectrum(d: int, r: int, level: float) -> np.ndarray:
    """Eigenvalues (decreasing, summing to d) of d − r skills at 1 and r weak skills at ``level``.

    ``level`` in [0, 1]; level 0 is the singular missing-skill covariance
    (:func:`ttscale.covariances.missing_skills`), whose hardness is infinite; otherwise
    Hard = (d − r)/level + r. Used in {ref}`sec-hardness`.
    """
    d = checks.positive_int(d, "d")
    r = checks.positive_int(r, "r")
    if r >= d:
        raise ValueError(f"r (weak skills) must be between 1 and d - 1 = {d - 1}, got {r}")
    level = checks.finite_real(level, "level")
    if not 0 <= level <= 1:
        raise ValueError(f"level must lie in [0, 1] (weak skills are at most as strong as the rest), got {level!r}")
    lam = np.concatenate([np.ones(d - r), np.full(r, level)])
    return lam * d / lam.sum()


def steps_to_target(Lam, n_train: int, target: float, k_max: int = 10_000, Sigma=None):
    """Smallest number of model applications k with E‖ŵ_k − w‖² <= ``target`` (m → ∞).

    Exact, from :func:`ttscale.theory.cot_error` on k = 0…``k_max``; ``Sigma`` defaults to
    Λ (in distribution, where the error falls with k). Returns an ``int``, or ``nan`` when no
    k <= ``k_max`` reaches the target. Used in {ref}`sec-hardness`.
    """
    target = checks.positive_real(target, "target")
    k_max = checks.positive_int(k_max, "k_max")
    if k_max > 1_000_000:
        raise ValueError(f"k_max must be <= 1000000 (a million model applications), got {k_max}")
    err = theory.cot_error(Lam, n_train, np.arange(k_max + 1), Sigma)
    return first_below(err, target)


def first_below(errors, target: float):
    """Index of the first entry of ``errors`` that is <= ``target`` (int), or ``nan`` if none.

    Used in {ref}`sec-hardness` to read steps-to-target off an error curve (exact or simulated).
    """
    target = checks.positive_real(target, "target")
    errors = np.asarray(errors, dtype=np.float64)
    if np.isnan(errors).any():
        raise ValueError("errors must not contain NaN (an infinite error is allowed: a diverged chain)")
    if errors.ndim != 1:
        raise ValueError(f"errors must be a 1-d array (error after k = 0, 1, ... steps), got shape {errors.shape}")
    hit = np.flatnonzero(errors <= target)
    return int(hit[0]) if hit.size else float("nan")


def steps_to_target_bound(H, d: int, n_train: int, target: float):
    """Steps Corollary 3.5 guarantees: smallest k with d (1 + n/(1 + H))^{−2k} <= target.

    k = ⌈log(d/target) / (2 log(1 + n/(1 + H)))⌉ (0 when target >= d). Depends on Λ only
    through H; never below :func:`steps_to_target` because every ρ_i <= 1/(1 + n/(1 + H)).
    ``H`` may be an array (returns an int array). Used in {ref}`sec-hardness`.
    """
    d = checks.positive_int(d, "d")
    n = checks.positive_int(n_train, "n_train")
    target = checks.positive_real(target, "target")
    Hs = np.asarray(H, dtype=np.float64)
    if not np.all(np.isfinite(Hs)):
        raise ValueError("H must be finite (a singular covariance has no finite hardness)")
    if np.any(Hs < d * (1 - 1e-12)):
        raise ValueError(f"H must be >= d = {d} (Hard(Lam) >= d for every covariance), got minimum {Hs.min()!r}")
    if target >= d:
        k = np.zeros_like(Hs)
    else:
        k = np.ceil(np.log(d / target) / (2 * np.log1p(n / (1 + Hs))) - 1e-12)
    k = k.astype(np.int64)
    return int(k) if k.ndim == 0 else k


def effective_hardness(Lam, n_train: int, k):
    """The hardness an isotropic-law task would need to have Λ's exact error after k steps.

    Solves d (1 + n/(1 + H_eff))^{−2k} = E‖ŵ_k − w‖² (in distribution, m → ∞):
    with ρ̄ = (error/d)^{1/(2k)}, the 2k-power mean of the per-skill factors ρ_i,
    H_eff = n ρ̄/(1 − ρ̄) − 1. Properties: H_eff <= Hard(Λ) with equality iff Λ ∝ I, and
    H_eff → Hard(Λ) as k → ∞. ``k`` >= 1, an int or an array. Used in {ref}`sec-hardness`.
    """
    ks = checks.steps(k, "k")
    if ks.size and ks.min() < 1:
        raise ValueError("k must be >= 1 for an effective hardness (at k = 0 the error is d for every task)")
    lam = _eigenvalues(Lam)
    n = checks.positive_int(n_train, "n_train")
    h = lam.sum() / lam
    rho = (1 + h) / (n + 1 + h)
    kk = ks.reshape(-1, 1).astype(np.float64)
    # power mean of order 2k, computed stably relative to the largest factor
    rmax = rho.max()
    rbar = rmax * np.mean((rho / rmax)[None, :] ** (2 * kk), axis=1) ** (1 / (2 * kk[:, 0]))
    out = n * rbar / (1 - rbar) - 1
    return float(out[0]) if ks.ndim == 0 else out.reshape(ks.shape)


def power_mean_hardness(Lam, k):
    """Long-prompt (n → ∞) limit of :func:`effective_hardness`: M_{2k}(1 + h_i) − 1.

    For large n, ρ_i ≈ (1 + h_i)/n, so the effective hardness is the power mean of order 2k of
    1 + h_i, minus 1: the quadratic mean at k = 1 (every skill counts), the maximum (Hard)
    as k → ∞. ``k`` >= 1, an int or an array. Used in {ref}`sec-hardness`.
    """
    ks = checks.steps(k, "k")
    if ks.size and ks.min() < 1:
        raise ValueError("k must be >= 1 for a power-mean hardness")
    g = 1 + skill_hardness(Lam)
    gmax = g.max()
    kk = ks.reshape(-1, 1).astype(np.float64)
    out = gmax * np.mean((g / gmax)[None, :] ** (2 * kk), axis=1) ** (1 / (2 * kk[:, 0])) - 1
    return float(out[0]) if ks.ndim == 0 else out.reshape(ks.shape)


def rollout_error(Lam, n_train: int, m_test: int, k: int, batch: int, *, seed: int = 0, step: int = 0):
    """Monte Carlo E‖ŵ_i − w‖², i = 0…k, of the closed-form LSA's token-appending rollout.

    ``batch`` test prompts of length ``m_test`` from the ``"test"`` stream of ``seed`` (index
    ``step``), in distribution (Σ = Λ). Returns ``(mean, se)``, two arrays of length k + 1,
    ``se`` the standard error of the mean over prompts. Used in {ref}`sec-hardness`.
    """
    k = checks.nonnegative_int(k, "k")
    batch = checks.positive_int(batch, "batch")
    if batch < 2:
        raise ValueError("batch must be >= 2 to estimate a standard error")
    m = checks.positive_int(m_test, "m_test")
    model = lsa.closed_form(Lam, n_train)
    P = prompts.sample(Lam, m, batch, seed=seed, stream="test", step=step)
    w_hat = lsa.rollout(model, P.X, P.y, k)
    sq = ((w_hat - P.w[:, None, :]) ** 2).sum(dim=2).numpy()  # (batch, k+1)
    return sq.mean(axis=0), sq.std(axis=0, ddof=1) / np.sqrt(batch)


def wishart_draw_error(Lam, n_train: int, m_test: int, k, draws: int = 2000, *, seed: int = 0):
    """E_Ŝ ‖(I − Γ⁻¹Ŝ_m)^k‖_F², the k-step error on test prompts of finite length m.

    A reference independent of the LSA code: ``draws`` Wishart matrices m Ŝ_m ~ W(Λ, m)
    from Bartlett's decomposition (numpy, ``np.random.default_rng(seed)``), the average over w
    done exactly (E_w‖B w‖² = ‖B‖_F²). Returns ``(mean, se)`` over draws, arrays over k
    (``k`` an int or an array of ints). For k = 1 it estimates
    :func:`ttscale.theory.one_step_error`. Used in {ref}`sec-hardness`.
    """
    ks = checks.steps(k, "k")
    draws = checks.positive_int(draws, "draws")
    if draws < 2:
        raise ValueError("draws must be >= 2 to estimate a standard error")
    m = checks.positive_int(m_test, "m_test")
    seed = checks.seed(seed)
    Lam = checks.covariance(Lam, "Lam")
    d = Lam.shape[0]
    G = theory.gamma(Lam, n_train)
    g, V = np.linalg.eigh(G)
    G_mhalf = (V / np.sqrt(g)) @ V.T
    G_half = (V * np.sqrt(g)) @ V.T
    lam, U = np.linalg.eigh(Lam)
    L = U * np.sqrt(np.clip(lam, 0, None))  # L Lᵀ = Λ
    rng = np.random.default_rng(seed)
    if m >= d:  # Bartlett: A lower triangular, A_ii^2 ~ chi^2(m - i), i = 0..d-1, N(0, 1) below
        A = np.zeros((draws, d, d))
        A[:, np.arange(d), np.arange(d)] = np.sqrt(rng.chisquare(m - np.arange(d), size=(draws, d)))
        il = np.tril_indices(d, -1)
        A[:, il[0], il[1]] = rng.standard_normal((draws, il[0].size))
    else:  # fewer examples than dimensions: sample the m columns directly
        A = rng.standard_normal((draws, d, m))
    LA = L @ A
    S_hat = LA @ LA.transpose(0, 2, 1) / m  # (draws, d, d), m Ŝ ~ Wishart(Λ, m)
    M = G_mhalf @ S_hat @ G_mhalf
    mu, Q = np.linalg.eigh((M + M.transpose(0, 2, 1)) / 2)
    # (I − Γ⁻¹Ŝ)^k = Γ^{−1/2} Q (I − diag μ)^k Qᵀ Γ^{1/2}
    left = G_mhalf @ Q  # (draws, d, d)
    right = Q.transpose(0, 2, 1) @ G_half
    C = np.einsum("sai,saj->sij", left, left) * np.einsum("sib,sjb->sij", right, right)
    D = (1.0 - mu)[:, None, :] ** ks.reshape(1, -1, 1)  # (draws, K, d)
    err = np.einsum("ski,sij,skj->sk", D, C, D)
    mean, se = err.mean(axis=0), err.std(axis=0, ddof=1) / np.sqrt(draws)
    if ks.ndim == 0:
        return float(mean[0]), float(se[0])
    return mean.reshape(ks.shape), se.reshape(ks.shape)


def simulate_steps(Lam, n_train: int, m_test: int, target: float, batch: int, draws: int, *,
                   k_max: int = 500, seed: int = 0, step: int = 0) -> dict:
    """Steps to ``target`` read off the simulated LSA rollout, checked against the finite-m reference.

    Runs :func:`wishart_draw_error` up to k_ref = min(``k_max``, 4 k_bound + 20) (finite test
    prompts can need more steps than Corollary 3.5's k_bound), then :func:`rollout_error` up to
    one step past the reference's count (at least k_bound). Returns a dict: ``simulated`` and
    ``finite_m_reference`` (first k with mean error <= target, ``nan`` if none was reached),
    ``z`` (|simulation − reference| / combined standard error for k = 1…k_run), ``k_run``, and
    ``z_exact`` (|simulation − exact finite-m error| / its standard error for k = 1…min(k_run, 3),
    :func:`ttscale.theory.finite_m_cot_error`).
    Used in {ref}`sec-hardness`.
    """
    d = checks.covariance(Lam, "Lam").shape[0]
    k_max = checks.positive_int(k_max, "k_max")
    k_bound = steps_to_target_bound(theory.hardness(Lam), d, n_train, target)
    k_ref = min(k_max, 4 * k_bound + 20)
    ref, ref_se = wishart_draw_error(Lam, n_train, m_test, np.arange(k_ref + 1), draws, seed=seed + step)
    k_ref_hit = first_below(ref, target)
    k_run = int(max(k_bound, 1 if np.isnan(k_ref_hit) else k_ref_hit + 1))
    k_run = min(k_run, k_ref)
    mean, se = rollout_error(Lam, n_train, m_test, k_run, batch, seed=seed, step=step)
    z = np.abs(mean - ref[: k_run + 1]) / np.hypot(se, ref_se[: k_run + 1])
    # k <= 3 for any spectrum; the isotropic method goes further, but there a long chain's mean can
    # rest on rare diverging prompts that a sample of this size does not contain
    k_exact = np.arange(1, min(k_run, theory.GENERAL_K_MAX) + 1)
    exact = theory.finite_m_cot_error(Lam, n_train, m_test, k_exact)
    z_exact = np.abs(mean[k_exact] - exact) / se[k_exact]
    return dict(simulated=first_below(mean, target), finite_m_reference=k_ref_hit, z=z[1:], k_run=k_run,
                z_exact=z_exact)

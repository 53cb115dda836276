"""Feature covariances used throughout the book: spectra ("skills") and rotations.

A covariance Λ = U diag(λ) Uᵀ: the eigenvectors are the *skills*, the eigenvalues
how strongly the data exercise them (the paper's Section 3; {ref}`sec-hardness`). Everything random here is
seeded, so the same arguments always give the same matrix.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize

from . import checks

__all__ = [
    "identity",
    "power_law_spectrum",
    "power_law",
    "missing_skills",
    "random_rotation",
    "from_spectrum",
    "spectrum",
    "weak_skill_spectrum",
    "power_law_alpha_for_hardness",
    "equal_hardness_spectrum",
    "KINDS",
]

NORMALISATIONS = ("trace", "max")


def identity(d: int) -> np.ndarray:
    """The isotropic covariance I_d (Hard = d, the easiest task)."""
    d = checks.positive_int(d, "d")
    checks.size(d * d, "d", "the d x d matrix")
    return np.eye(d)


def power_law_spectrum(d: int, alpha: float, normalise: str = "trace") -> np.ndarray:
    """Eigenvalues λ_i ∝ i^(−α), i = 1…d, in decreasing order.

    ``normalise="trace"`` scales them so that Σ λ_i = d (the book's default,
    {ref}`sec-hardness`); ``normalise="max"`` sets λ_1 = 1 (the alternative the overthinking chapter
    compares). α = 0 gives the identity.
    """
    d = checks.positive_int(d, "d")
    alpha = checks.finite_real(alpha, "alpha")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0 (a decaying spectrum), got {alpha!r}")
    checks.one_of(normalise, NORMALISATIONS, "normalise")
    lam = np.arange(1, d + 1, dtype=np.float64) ** (-alpha)
    if normalise == "trace":
        lam *= d / lam.sum()
    else:
        lam /= lam[0]
    return lam


def random_rotation(d: int, seed: int) -> np.ndarray:
    """A Haar-distributed random orthogonal d x d matrix, reproducible from ``seed``.

    QR of a Gaussian matrix with the signs of R's diagonal moved into Q (Mezzadri 2007),
    which makes the distribution exactly Haar.
    """
    d = checks.positive_int(d, "d")
    checks.size(d * d, "d", "the d x d matrix")
    seed = checks.seed(seed)
    g = np.random.default_rng(seed).standard_normal((d, d))
    q, r = np.linalg.qr(g)
    return q * np.sign(np.diag(r))


def from_spectrum(eigenvalues, U=None) -> np.ndarray:
    """Λ = U diag(eigenvalues) Uᵀ (U = I when omitted). Eigenvalues must be finite and >= 0."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if lam.ndim != 1 or lam.size == 0:
        raise ValueError(f"eigenvalues must be a non-empty 1-d array, got shape {lam.shape}")
    checks.size(lam.size**2, "the number of eigenvalues d", "the d x d matrix")
    if not np.all(np.isfinite(lam)):
        raise ValueError("eigenvalues must be finite (no NaN or inf)")
    if lam.min() < 0:
        raise ValueError(f"eigenvalues must be >= 0 (a covariance is PSD), got minimum {lam.min():.3g}")
    if U is None:
        return np.diag(lam)
    U = np.asarray(U, dtype=np.float64)
    d = lam.size
    if U.shape != (d, d):
        raise ValueError(f"U must be {d} x {d} to match the {d} eigenvalues, got shape {U.shape}")
    if not np.allclose(U.T @ U, np.eye(d), atol=1e-8):
        raise ValueError("U must be orthogonal (UᵀU = I)")
    cov = (U * lam) @ U.T
    return (cov + cov.T) / 2


def power_law(d: int, alpha: float, *, rotate: bool = False, seed: int = 0, normalise: str = "trace") -> np.ndarray:
    """Power-law covariance: spectrum :func:`power_law_spectrum`, optionally in a random eigenbasis.

    With ``rotate=False`` the matrix is diagonal (skills aligned with the coordinates);
    with ``rotate=True`` its eigenvectors are :func:`random_rotation` ``(d, seed)``.
    Hard(Λ) for d = 20 and tr = d: 24.16, 33.97, 51.75, 71.95 at α = 0.2, 0.5, 0.8, 1.0.
    """
    lam = power_law_spectrum(d, alpha, normalise)
    if not isinstance(rotate, (bool, np.bool_)):
        raise ValueError(f"rotate must be True or False, got {rotate!r}")
    U = random_rotation(d, seed) if rotate else None
    return from_spectrum(lam, U)


def missing_skills(d: int, r: int, level: float = 1.0) -> np.ndarray:
    """diag(level × (d − r), 0 × r): the last ``r`` skills never appear in the data.

    Singular when r > 0, so its hardness is infinite.
    """
    d = checks.positive_int(d, "d")
    checks.size(d * d, "d", "the d x d matrix")
    r = checks.nonnegative_int(r, "r")
    if r >= d:
        raise ValueError(f"r (missing skills) must be < d = {d}, got {r}")
    level = checks.positive_real(level, "level")
    lam = np.concatenate([np.full(d - r, level), np.zeros(r)])
    return np.diag(lam)


def spectrum(Lam) -> np.ndarray:
    """Eigenvalues of a covariance, in decreasing order."""
    Lam = checks.covariance(Lam, "Lam")
    return np.linalg.eigvalsh(Lam)[::-1].copy()


# --------------------------------------------------------------------------- spectra of a given hardness
#: Spectrum families :func:`equal_hardness_spectrum` can build at any prescribed hardness.
KINDS = ("power_law", "weak_skills")


def power_law_alpha_for_hardness(d: int, H: float) -> float:
    """The exponent α with Hard(power law λ_i ∝ i^−α, i = 1…d) = H.

    Hard of the power law is Σ_i (d/i)^α, increasing in α from d (α = 0), so the root is
    unique; found by bracketing and Brent's method.
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
    """
    d = checks.positive_int(d, "d")
    H = _check_H(H, d)
    checks.one_of(kind, KINDS, "kind")
    if kind == "power_law":
        return power_law_spectrum(d, power_law_alpha_for_hardness(d, H), normalise="trace")
    r = checks.positive_int(r, "r")
    if r >= d:
        raise ValueError(f"r (weak skills) must be between 1 and d - 1 = {d - 1}, got {r}")
    return weak_skill_spectrum(d, r, min((d - r) / (H - r), 1.0))


def weak_skill_spectrum(d: int, r: int, level: float) -> np.ndarray:
    """Eigenvalues (decreasing, summing to d) of d − r skills at 1 and r weak skills at ``level``.

    ``level`` in [0, 1]; level 0 is the singular missing-skill covariance
    (:func:`missing_skills`), whose hardness is infinite; otherwise
    Hard = (d − r)/level + r.
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


"""Closed-form theory of test-time CoT for the one-layer LSA (numpy).

Notation as in paper.md: Λ (``Lam``) the training covariance, Σ (``Sigma``) the test
covariance, n (``n_train``) the training prompt length, m (``m_test``) the test prompt
length, k the number of model applications (k = 0 is ŵ = 0, k = 1 plain in-context
prediction). Errors are E‖ŵ_k − w‖², not divided by d (the zero predictor scores d).

Used in {ref}`sec-intro`, {ref}`sec-pseudo-newton`, {ref}`sec-hardness` and
{ref}`sec-overthinking`.
"""

from __future__ import annotations

import numpy as np

from . import checks

__all__ = [
    "gamma",
    "hardness",
    "cot_error",
    "map_error",
    "one_step_error",
    "cot_error_bound",
    "one_step_bound",
    "preconditioned_spectrum",
    "symmetrised_error",
    "smallest_n_train",
]


def _lam_sigma(Lam, Sigma):
    Lam = checks.covariance(Lam, "Lam")
    if np.trace(Lam) <= 0:
        raise ValueError("Lam must be non-zero (its trace is 0, so no prompt carries information)")
    Sigma = Lam if Sigma is None else checks.covariance(Sigma, "Sigma", d=Lam.shape[0])
    return Lam, Sigma


def gamma(Lam, n_train: int) -> np.ndarray:
    """Γ = (1 + 1/n) Λ + (tr Λ / n) I_d, the matrix whose inverse the trained LSA learns.

    Theorem 3.1 of the paper: the optimal value block is −Γ⁻¹/c. Γ is positive definite
    whenever Λ ≠ 0, even for singular Λ, because of the (tr Λ / n) I floor.
    Used in {ref}`sec-intro` and {ref}`sec-pseudo-newton`.
    """
    Lam, _ = _lam_sigma(Lam, None)
    n = checks.positive_int(n_train, "n_train")
    d = Lam.shape[0]
    return (1 + 1 / n) * Lam + (np.trace(Lam) / n) * np.eye(d)


def hardness(Lam) -> float:
    """Hard(Λ) = tr Λ / λ_min(Λ) (paper Section 3): scale-invariant, >= d, = d iff Λ ∝ I.

    Raises ``ValueError`` for a singular Λ, whose hardness is infinite (a skill the data
    never exercise). Used in {ref}`sec-hardness`.
    """
    Lam = checks.covariance(Lam, "Lam")
    lam = np.linalg.eigvalsh(Lam)
    scale = max(np.abs(Lam).max(), np.finfo(float).tiny)
    if lam[0] <= checks.PSD_RTOL * scale:
        raise ValueError(
            f"Lam is singular (smallest eigenvalue {lam[0]:.3g}), so Hard(Lam) = tr/lambda_min is infinite: "
            "some skill is never exercised by the data"
        )
    return float(lam.sum() / lam[0])


def preconditioned_spectrum(Lam, n_train: int, Sigma=None) -> np.ndarray:
    """Eigenvalues μ_j of Γ^{−1/2} Σ Γ^{−1/2}, in increasing order.

    Each CoT step multiplies direction j of the error by (1 − μ_j) when Γ and Σ commute;
    the error eventually grows iff max μ_j > 2 (paper.md section 6).
    Used in {ref}`sec-overthinking`.
    """
    mu, _, _ = _preconditioned(Lam, n_train, Sigma)
    return mu


def _preconditioned(Lam, n_train, Sigma):
    Lam, Sigma = _lam_sigma(Lam, Sigma)
    G = gamma(Lam, n_train)
    g, V = np.linalg.eigh(G)
    G_mhalf = (V / np.sqrt(g)) @ V.T
    S = G_mhalf @ Sigma @ G_mhalf
    mu, Q = np.linalg.eigh((S + S.T) / 2)
    return mu, Q, (G, V, g)


def cot_error(Lam, n_train: int, k, Sigma=None):
    """Population (m → ∞) error E‖ŵ_k − w‖² = ‖(I − Γ⁻¹Σ)^k‖_F² after k model applications.

    ``k`` may be an int (returns a float) or an array of ints (returns an array of the
    same shape). One eigendecomposition serves every k: with S = Γ^{−1/2}ΣΓ^{−1/2} = Q M Qᵀ,
    (I − Γ⁻¹Σ)^k = Γ^{−1/2} Q (I − M)^k Qᵀ Γ^{1/2}, so the squared Frobenius norm is
    Σ_ij ((1 − μ_i)(1 − μ_j))^k (QᵀΓQ)_ij (QᵀΓ⁻¹Q)_ij — exact for any Σ, commuting or not.
    ``Sigma`` defaults to ``Lam`` (in distribution).
    Used in {ref}`sec-intro` and {ref}`sec-pseudo-newton`.
    """
    ks = checks.steps(k, "k")
    mu, Q, (_, V, g) = _preconditioned(Lam, n_train, Sigma)
    VQ = V.T @ Q
    C = ((VQ.T * g) @ VQ) * ((VQ.T / g) @ VQ)  # (QᵀΓQ) ∘ (QᵀΓ⁻¹Q)
    D = 1.0 - mu
    with np.errstate(over="ignore", invalid="ignore"):
        Dk = D[None, :] ** ks.reshape(-1, 1)
        err = np.einsum("ki,ij,kj->k", Dk, C, Dk)
    # A diverging chain can overflow double precision (inf·0 or inf − inf gives nan); the
    # squared norm it stands for is +inf, not "not a number".
    err = np.where(np.isnan(err), np.inf, err)
    return float(err[0]) if ks.ndim == 0 else err.reshape(ks.shape)


def map_error(P, Sigma, k):
    """‖(I − PΣ)^k‖_F² for any preconditioner P: the error of k steps of ŵ ← ŵ − P S (ŵ − w).

    The error vector after k steps is −(I − PS)^k w and E[wwᵀ] = I, so with S = Σ (m → ∞) this
    is E‖ŵ_k − w‖², and with S a prompt's sample covariance Ŝ_m it is the error averaged over w
    given that prompt's features. For P = Γ⁻¹ it equals :func:`cot_error`; it serves any other
    map too: a trained model's value block, a mixture's map, an estimated Γ⁻¹.

    ``P`` is (d, d) or a (batch, d, d) stack; ``Sigma`` is one (d, d) covariance or a
    (batch, d, d) stack; the batch axes broadcast. ``k`` an int or an array of ints. Returns an
    array of shape batch + k's shape (a float for one P, one Sigma and one k). Computed by
    repeated products of B = I − PΣ, one chain shared by every k; a diverging chain overflows
    to ``inf``. Used in {ref}`sec-pseudo-newton`, {ref}`sec-overthinking` and
    {ref}`sec-task-selection`.
    """
    ks = checks.steps(k, "k")
    P = np.asarray(P, dtype=np.float64)
    if P.ndim not in (2, 3) or P.shape[-1] != P.shape[-2] or not np.all(np.isfinite(P)):
        raise ValueError(f"P must be a finite square (d, d) matrix or (batch, d, d) stack, got shape {P.shape}")
    d = P.shape[-1]
    S = np.asarray(Sigma, dtype=np.float64)
    if S.ndim == 2:
        S = checks.covariance(S, "Sigma", d=d)
    elif S.ndim != 3 or S.shape[1:] != (d, d) or not np.all(np.isfinite(S)):
        raise ValueError(f"Sigma must be a (d, d) covariance or a finite (batch, d, d) stack with d = {d}, got shape {S.shape}")
    if P.ndim == 3 and S.ndim == 3 and P.shape[0] != S.shape[0]:
        raise ValueError(f"P and Sigma stacks must have the same batch size, got {P.shape[0]} and {S.shape[0]}")
    B = np.eye(d) - P @ S
    k_max = int(ks.max()) if ks.size else 0
    norms = np.empty(B.shape[:-2] + (k_max + 1,))
    power = np.broadcast_to(np.eye(d), B.shape).copy()
    with np.errstate(over="ignore", invalid="ignore"):
        for j in range(k_max + 1):  # one chain of powers B^j, shared by every requested k
            norms[..., j] = (power * power).sum(axis=(-2, -1))
            if j < k_max:
                power = B @ power
    norms = np.where(np.isnan(norms), np.inf, norms)  # inf − inf inside an overflowed product
    out = norms[..., ks.reshape(-1)].reshape(B.shape[:-2] + ks.shape)
    return float(out) if out.ndim == 0 else out


def symmetrised_error(Lam, n_train: int, k, Sigma=None):
    """The paper's governing quantity tr((I − Γ^{−1/2}ΣΓ^{−1/2})^{2k}) = Σ_j (1 − μ_j)^{2k}.

    Equals :func:`cot_error` when Γ and Σ commute; otherwise a different (similar-matrix)
    norm of the same iteration. Used in {ref}`sec-overthinking`.
    """
    ks = checks.steps(k, "k")
    mu = preconditioned_spectrum(Lam, n_train, Sigma)
    with np.errstate(over="ignore"):
        err = ((1.0 - mu)[None, :] ** (2 * ks.reshape(-1, 1))).sum(axis=1)
    return float(err[0]) if ks.ndim == 0 else err.reshape(ks.shape)


def one_step_error(Lam, n_train: int, m_test: int, Sigma=None) -> float:
    """Exact error of one model application (k = 1) on test prompts of finite length m.

    ŵ = Γ⁻¹ Ŝ_m w with Ŝ_m the test prompt's sample covariance; the Wishart moment
    E[Ŝ B Ŝ] = ((m+1)/m) Σ B Σ + (tr(ΣB)/m) Σ gives
    ‖I − Γ⁻¹Σ‖_F² + (1/m)[tr(Γ⁻¹Σ²Γ⁻¹) + tr(Γ⁻¹ΣΓ⁻¹)·tr Σ].
    ``Sigma`` defaults to ``Lam`` (the in-distribution case of paper.md section 4).
    Used in {ref}`sec-pseudo-newton`.
    """
    Lam, Sigma = _lam_sigma(Lam, Sigma)
    m = checks.positive_int(m_test, "m_test")
    A = np.linalg.inv(gamma(Lam, n_train))
    d = Lam.shape[0]
    bias = np.linalg.norm(np.eye(d) - A @ Sigma, "fro") ** 2
    AS = A @ Sigma
    variance = (np.trace(AS @ AS.T) + np.trace(A @ Sigma @ A) * np.trace(Sigma)) / m
    return float(bias + variance)


def one_step_bound(Lam, n_train: int, m_test: int) -> float:
    """Theorem 3.3's upper bound (d/n²)(1 + H)² + (d/m)(1 + H), H = Hard(Λ). Used in {ref}`sec-hardness`."""
    H = hardness(Lam)
    n = checks.positive_int(n_train, "n_train")
    m = checks.positive_int(m_test, "m_test")
    d = np.asarray(Lam).shape[0]
    return float(d / n**2 * (1 + H) ** 2 + d / m * (1 + H))


def cot_error_bound(Lam, n_train: int, k):
    """Corollary 3.5: E‖ŵ_k − w‖² <= d (1 + n/(1 + H))^{−2k} (up to 1 + o(1)); tight for Λ ∝ I.

    Vectorised over ``k`` like :func:`cot_error`. Used in {ref}`sec-pseudo-newton`.
    """
    ks = checks.steps(k, "k")
    H = hardness(Lam)
    n = checks.positive_int(n_train, "n_train")
    d = np.asarray(Lam).shape[0]
    out = d * (1 + n / (1 + H)) ** (-2.0 * ks)
    return float(out) if ks.ndim == 0 else out


def smallest_n_train(Lam, k, target: float, n_max: int = 10_000):
    """Smallest training prompt length n whose in-distribution error after k steps is <= target.

    In distribution (Σ = Λ) the error Σ_i ρ_i^{2k}, ρ_i = (λ_i + T)/((n+1)λ_i + T), falls
    with n, so the answer is the first n on the grid 1…``n_max`` that reaches the target;
    ``nan`` where none does (k = 0 never beats d). Vectorised over ``k``.
    Used in {ref}`sec-pseudo-newton`.
    """
    Lam = checks.covariance(Lam, "Lam")
    ks = checks.steps(k, "k")
    target = checks.positive_real(target, "target")
    n_max = checks.positive_int(n_max, "n_max")
    lam = np.linalg.eigvalsh(Lam)
    T = lam.sum()
    if T <= 0:
        raise ValueError("Lam must be non-zero")
    n = np.arange(1, n_max + 1, dtype=np.float64)[:, None]
    rho = (lam[None, :] + T) / ((n + 1) * lam[None, :] + T)  # (N, d)
    err = (rho[:, None, :] ** (2 * ks.reshape(1, -1, 1))).sum(axis=2)  # (N, K)
    ok = err <= target
    first = np.where(ok.any(axis=0), ok.argmax(axis=0) + 1.0, np.nan)
    return float(first[0]) if ks.ndim == 0 else first.reshape(ks.shape)

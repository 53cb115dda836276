"""Closed-form theory of test-time CoT for the one-layer LSA (numpy).

Notation as in the book ({ref}`sec-intro`): Λ (``Lam``) the training covariance, Σ (``Sigma``) the test
covariance, n (``n_train``) the training prompt length, m (``m_test``) the test prompt
length, k the number of model applications (k = 0 is ŵ = 0, k = 1 plain in-context
prediction). Errors are E‖ŵ_k − w‖², not divided by d (the zero predictor scores d).
"""

from __future__ import annotations

import numpy as np

from fractions import Fraction
from functools import lru_cache
from math import comb

from . import checks, wishart

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
    "finite_m_error",
    "finite_m_cot_error",
    "finite_m_conditional_sd",
    "finite_m_k_max",
    "proportional_limit_error",
    "skill_hardness",
    "hardness_elasticity",
    "steps_to_target",
    "steps_to_target_bound",
    "effective_hardness",
    "power_mean_hardness",
    "mp_lambda_max",
    "mp_edge_ratio",
    "critical_n_train",
    "ISOTROPIC_K_MAX",
    "GENERAL_K_MAX",
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
    """
    Lam, _ = _lam_sigma(Lam, None)
    return _gamma(Lam, checks.positive_int(n_train, "n_train"))


def _gamma(Lam: np.ndarray, n: int) -> np.ndarray:
    """:func:`gamma` of an already validated Λ and n."""
    return (1 + 1 / n) * Lam + (np.trace(Lam) / n) * np.eye(Lam.shape[0])


def hardness(Lam) -> float:
    """Hard(Λ) = tr Λ / λ_min(Λ) (paper Section 3): scale-invariant, >= d, = d iff Λ ∝ I.

    Raises ``ValueError`` for a singular Λ, whose hardness is infinite (a skill the data
    never exercise).
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
    the error eventually grows iff max μ_j > 2 ({ref}`sec-overthinking`).
    """
    mu, _, _ = _preconditioned(Lam, n_train, Sigma)
    return mu


def _rescaled(Lam, Sigma):
    """Λ and Σ divided together by an even power of two near Λ's scale (exact in floating point).

    Γ⁻¹Σ does not change when Λ and Σ are scaled together; this keeps 1e-310·I or 1e307·I from
    under- or overflowing on the way, and its square root is exact too.
    """
    e = -2 * int(np.round(np.log2(np.abs(Lam).max()) / 2))
    if e == 0:  # the common case: nothing to scale, nothing to copy
        return Lam, Sigma
    return np.ldexp(Lam, e), np.ldexp(Sigma, e)


def _preconditioned(Lam, n_train, Sigma):
    Lam, Sigma = _lam_sigma(Lam, Sigma)
    Lam, Sigma = _rescaled(Lam, Sigma)
    G = _gamma(Lam, checks.positive_int(n_train, "n_train"))
    g, V = np.linalg.eigh(G)
    G_mhalf = (V / np.sqrt(g)) @ V.T
    S = G_mhalf @ Sigma @ G_mhalf
    mu, Q = np.linalg.eigh((S + S.T) / 2)
    return mu, Q, (G, V, g)


def cot_error(Lam, n_train: int, k, Sigma=None):
    """Population (m → ∞) error E‖ŵ_k − w‖² = ‖(I − Γ⁻¹Σ)^k‖_F² after k model applications.

    ``k`` may be an int (returns a float) or an array of ints (returns an array of the
    same shape). ``Sigma`` defaults to ``Lam`` (in distribution). One factorisation serves every k:

    * in distribution (Σ = Λ) Γ and Σ commute, so with λ_j the eigenvalues of Λ and
      μ_j = λ_j / ((1 + 1/n) λ_j + tr Λ / n) the error is Σ_j (1 − μ_j)^{2k}, with
      1 − μ_j = (λ_j + tr Λ)/((n + 1) λ_j + tr Λ): one ``eigvalsh``;
    * for any other Σ (commuting or not), with Γ = L Lᵀ (Cholesky) and
      S = L⁻¹ Σ L⁻ᵀ = Q M Qᵀ (the same spectrum as Γ^{−1/2}ΣΓ^{−1/2}),
      (I − Γ⁻¹Σ)^k = L⁻ᵀ Q (I − M)^k Qᵀ Lᵀ, so the squared Frobenius norm is
      Σ_ij ((1 − μ_i)(1 − μ_j))^k (YᵀY)_ij (UᵀU)_ij with Y = L Q = Γ U and U = L⁻ᵀ Q: one call of
      LAPACK's generalised eigensolver ``dsygvd`` (Σ U = Γ U M, UᵀΓU = I), about 1.3 ``eigh``.

    Λ and Σ are validated once per call.
    """
    ks = checks.steps(k, "k")
    checks.size(ks.size * max(np.shape(Lam)[0] if np.ndim(Lam) == 2 else 1, 1), "k", "the k-by-d table of powers")
    shifted = Sigma is not None
    Lam, Sigma = _lam_sigma(Lam, Sigma)
    n = checks.positive_int(n_train, "n_train")
    shifted = shifted and not np.array_equal(Lam, Sigma)
    Lam, Sigma = _rescaled(Lam, Sigma)
    kk = ks.reshape(-1, 1)
    with np.errstate(over="ignore", invalid="ignore"):
        if not shifted:
            lam, T = np.linalg.eigvalsh(Lam), np.trace(Lam)
            D = (lam + T) / ((n + 1) * lam + T)  # 1 − μ_j without cancelling when μ_j is near 1
            err = (D[None, :] ** (2 * kk)).sum(axis=1)
        else:
            from scipy.linalg import blas, lapack

            G = _gamma(Lam, n)
            # Σ U = Γ U diag(μ) with UᵀΓU = I (LAPACK's generalised symmetric-definite eigensolver:
            # Cholesky Γ = L Lᵀ, S = L⁻¹ΣL⁻ᵀ = Q M Qᵀ, U = L⁻ᵀQ), and Y = Γ U = L Q.
            mu, U, info = lapack.dsygvd(Sigma, G, itype=1, jobz="V", uplo="L")
            if info != 0:
                raise np.linalg.LinAlgError(f"the eigensolver for Gamma^-1 Sigma failed (LAPACK info {info})")
            Y = G @ U
            C = blas.dsyrk(1.0, Y.T, trans=0) * blas.dsyrk(1.0, U, trans=1)  # upper halves (zeros below)
            C += C.T
            C[np.diag_indices_from(C)] /= 2  # (YᵀY) ∘ (UᵀU), symmetric
            Dk = (1.0 - mu)[None, :] ** kk
            err = ((Dk @ C) * Dk).sum(axis=1)
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
    to ``inf``.
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
    k_max = int(ks.max()) if ks.size else 0
    fast = _map_error_symmetric(P, S, k_max)
    if fast is not None:
        out = fast[..., ks.reshape(-1)].reshape(fast.shape[:-1] + ks.shape)
        return float(out) if out.ndim == 0 else out
    B = np.eye(d) - P @ S
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


def _map_error_symmetric(P, S, k_max):
    """:func:`map_error` for steps 0…k_max by one eigendecomposition per Σ, or None where it does not apply.

    It applies to one symmetric positive-definite P (Γ⁻¹, the book's map; symmetric within 1e-12
    relative) and symmetric Σ (within 1e-12 relative; a stack too). With P = R Rᵀ (Cholesky) and
    Rᵀ Σ R = V diag(ν) Vᵀ, (I − PΣ)^k = R V (1 − ν)^k Vᵀ R⁻¹, so ‖(I − PΣ)^k‖_F² =
    Σ_ij ((1 − ν_i)(1 − ν_j))^k (YᵀY)_ij (UᵀU)_ij with Y = R V and U = R⁻ᵀ V, the cot_error
    identity: per step O(d²) work instead of a d × d matrix product. The sum is a quadratic
    form of the positive semi-definite (YᵀY) ∘ (UᵀU), so it does not cancel.
    """
    if P.ndim != 2:
        return None
    scale = max(np.abs(P).max(), np.finfo(float).tiny)
    if np.abs(P - P.T).max() > 1e-12 * scale:
        return None
    s_scale = max(np.abs(S).max(), np.finfo(float).tiny)
    if np.abs(S - np.swapaxes(S, -1, -2)).max() > 1e-12 * s_scale:
        return None
    try:
        R = np.linalg.cholesky((P + P.T) / 2)
    except np.linalg.LinAlgError:
        return None
    T = R.T @ S @ R
    nu, V = np.linalg.eigh((T + np.swapaxes(T, -1, -2)) / 2)
    Y = R @ V
    U = np.linalg.solve(R.T, V) if V.ndim == 2 else np.linalg.solve(R.T[None], V)
    C = (np.swapaxes(Y, -1, -2) @ Y) * (np.swapaxes(U, -1, -2) @ U)
    D = 1.0 - nu
    out = np.empty(nu.shape[:-1] + (k_max + 1,))
    Dk = np.ones_like(D)
    with np.errstate(over="ignore", invalid="ignore"):
        for j in range(k_max + 1):  # one step at a time, every Σ of the stack at once
            out[..., j] = (np.einsum("...i,...ij->...j", Dk, C) * Dk).sum(axis=-1)
            if j < k_max:
                Dk = Dk * D
    return np.where(np.isnan(out), np.inf, out)


def symmetrised_error(Lam, n_train: int, k, Sigma=None):
    """The paper's governing quantity tr((I − Γ^{−1/2}ΣΓ^{−1/2})^{2k}) = Σ_j (1 − μ_j)^{2k}.

    Equals :func:`cot_error` when Γ and Σ commute; otherwise a different (similar-matrix)
    norm of the same iteration.
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
    ``Sigma`` defaults to ``Lam`` (in distribution).
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
    """Theorem 3.3's upper bound (d/n²)(1 + H)² + (d/m)(1 + H), H = Hard(Λ)."""
    H = hardness(Lam)
    n = checks.positive_int(n_train, "n_train")
    m = checks.positive_int(m_test, "m_test")
    d = np.asarray(Lam).shape[0]
    return float(d / n**2 * (1 + H) ** 2 + d / m * (1 + H))


def cot_error_bound(Lam, n_train: int, k):
    """Corollary 3.5: E‖ŵ_k − w‖² <= d (1 + n/(1 + H))^{−2k} (up to 1 + o(1)); tight for Λ ∝ I.

    Vectorised over ``k`` like :func:`cot_error`.
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
    """
    Lam = checks.covariance(Lam, "Lam")
    ks = checks.steps(k, "k")
    target = checks.positive_real(target, "target")
    n_max = checks.positive_int(n_max, "n_max")
    checks.size(n_max * max(ks.size, 1) * Lam.shape[0], "n_max", "the n-by-k-by-d table of errors")
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


# --------------------------------------------------------------------------- finite test prompts

#: Largest k of the exact isotropic method (moments E tr W^j up to j = 2k).
ISOTROPIC_K_MAX = wishart.MAX_DEGREE // 2
#: Largest k of the exact method for general P and Sigma (Isserlis over 2k Ŝ factors).
GENERAL_K_MAX = wishart.MAX_FACTORS // 2


def _scalar_multiple(M):
    """Return c if the square matrix M equals c·I (relative tolerance 1e-12), else None."""
    d = M.shape[0]
    c = float(np.trace(M)) / d
    scale = max(np.abs(M).max(), np.finfo(float).tiny)
    if np.abs(M - c * np.eye(d)).max() <= 1e-12 * scale:
        return c
    return None


def finite_m_k_max(P, Sigma) -> int:
    """The largest k :func:`finite_m_error` computes for this pair: :data:`ISOTROPIC_K_MAX` when
    P and Σ are both multiples of I (the Wishart-moment method), else :data:`GENERAL_K_MAX`.

    For the book's chain pass P = Γ⁻¹, e.g. ``finite_m_k_max(np.linalg.inv(gamma(Lam, n)), Sigma)``.
    """
    P, Sigma, _, _, _ = _finite_m_args(P, Sigma, 1, 0, 0.0)
    isotropic = _scalar_multiple(P) is not None and _scalar_multiple(Sigma) is not None
    return ISOTROPIC_K_MAX if isotropic else GENERAL_K_MAX


def _finite_m_args(P, Sigma, m_test, k, noise):
    ks = checks.steps(k, "k")
    try:
        P = np.asarray(P, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("P must be a square matrix of real numbers") from None
    if P.ndim != 2 or P.shape[0] != P.shape[1] or P.shape[0] == 0:
        raise ValueError(f"P must be a non-empty square (d, d) matrix, got shape {P.shape}")
    if not np.all(np.isfinite(P)):
        raise ValueError("P must have finite entries (no NaN or inf)")
    d = P.shape[0]
    Sigma = checks.covariance(Sigma, "Sigma", d=d)
    m = checks.positive_int(m_test, "m_test")
    noise = checks.finite_real(noise, "noise")
    if noise < 0:
        raise ValueError(f"noise must be >= 0 (it is the label noise's standard deviation), got {noise!r}")
    return P, Sigma, m, ks, noise


def _iso_terms(d, m, p, s, ks, noise, moments):
    """Exact error for P = pI, Sigma = sI at every k of ``ks``; ``moments[j]`` = E tr W^j (exact)."""
    signal, coef = _iso_parts(d, m, p, s, tuple(int(k) for k in ks.reshape(-1)), tuple(moments))
    if noise == 0:
        return signal.copy()
    with np.errstate(over="ignore", invalid="ignore"):
        out = signal + noise**2 * coef  # two non-negative exact parts: no cancellation left
    return np.where(np.isnan(out), np.inf, out)


@lru_cache(maxsize=256)
def _iso_parts(d, m, p, s, ks, moments):
    """(E‖(I − PŜ)^k‖_F², the noise coefficient) per k, each summed exactly, then rounded once.

    The second part is (1/m) E tr(Q_k Ŝ Q_kᵀ), so the error at noise σ is first + σ² · second.
    """
    c = Fraction(p) * Fraction(s) / m  # P Ŝ = c W
    a, b = c.numerator, c.denominator
    big = Fraction(10) ** 300
    signal, coef = np.empty(len(ks)), np.empty(len(ks))
    top = 2 * max(ks, default=0)
    pa, pb = [1] * (top + 1), [1] * (top + 1)  # (−a)^j and b^j, exact, each made once
    for j in range(1, top + 1):
        pa[j], pb[j] = pa[j - 1] * -a, pb[j - 1] * b
    am = [pa[j] * moments[j] for j in range(min(top + 1, len(moments)))]  # (−a)^j E tr W^j
    for idx, kk in enumerate(ks):
        # E tr (I − cW)^{2k} = Σ_j C(2k, j) (−c)^j E tr W^j, summed exactly in integers over b^{2k}
        value = Fraction(sum(comb(2 * kk, j) * am[j] * pb[2 * kk - j]
                             for j in range(2 * kk + 1))) / pb[2 * kk]
        signal[idx] = float(value) if abs(value) < big else np.inf
        if kk == 0:
            coef[idx] = 0.0
            continue
        # (1/m) E tr(Q Ŝ Qᵀ), Q = Σ_{i<k} (I − A)^i P: per eigenvalue a of A = PŜ it is
        # p (1 − (1 − a)^k)² / a = p · a · q(a)², q(a) = Σ_{j=1}^k C(k, j) (−1)^{j+1} a^{j−1}
        q = [comb(kk, j + 1) * (-1) ** j for j in range(kk)]
        g = [0] * (2 * kk)
        for i, qi in enumerate(q):
            for j, qj in enumerate(q):
                g[i + j + 1] += qi * qj
        # a^l = (−1)^l (−a)^l
        nnum = sum((gl if l % 2 == 0 else -gl) * am[l] * pb[2 * kk - 1 - l] for l, gl in enumerate(g) if gl)
        value = Fraction(p) / m * (Fraction(nnum) / pb[2 * kk - 1])
        coef[idx] = float(value) if abs(value) < big else np.inf
    return signal, coef


def finite_m_error(P, Sigma, m_test: int, k, noise: float = 0.0):
    """Exact E‖ŵ_k − w‖² of the chain ŵ_{i+1} = ŵ_i − P(Ŝ_m ŵ_i − X y/m), ŵ_0 = 0, at finite m.

    Features x ~ N(0, Σ) (``m_test`` of them in the prompt, Ŝ_m = X Xᵀ/m), w ~ N(0, I_d),
    y = Xᵀ w + ε with ε ~ N(0, noise² I_m). The error vector is
    e_k = −(I − PŜ)^k w + Σ_{i<k} (I − PŜ)^i P X ε/m, so

        E‖e_k‖² = E‖(I − PŜ_m)^k‖_F² + (noise²/m) E tr(Q_k Ŝ_m Q_kᵀ),  Q_k = Σ_{i<k} (I − PŜ_m)^i P.

    Two exact methods (chapter {ref}`sec-finite-m`):

    * P = p·I and Σ = s·I (**isotropic**): PŜ = (ps/m) W with W a standard real Wishart matrix,
      and both terms are finite sums of the exact integer moments E tr W^j
      (:func:`ttscale.wishart.trace_moments`), taken in exact rational arithmetic because the
      alternating binomial sums cancel catastrophically in floating point. Any k <=
      :data:`ISOTROPIC_K_MAX`.
    * any other P and Σ (**general**, non-commuting allowed): each term is a sum of
      E tr(B_1 Ŝ ⋯ B_r Ŝ) over r <= 2k factors, by the Isserlis expansion
      (:func:`ttscale.wishart.trace_expectation`). k <= :data:`GENERAL_K_MAX`; a value at k = 3,
      d = 20 costs about 0.1–0.3 s.

    ``k`` an int (returns a float) or an array of ints (returns an array of its shape). A mean
    beyond 1e300 is returned as ``inf``.
    """
    P, Sigma, m, ks, noise = _finite_m_args(P, Sigma, m_test, k, noise)
    d = P.shape[0]
    k_max = int(ks.max()) if ks.size else 0
    p, s = _scalar_multiple(P), _scalar_multiple(Sigma)
    if p is not None and s is not None:
        if k_max > ISOTROPIC_K_MAX:
            raise ValueError(f"k must be <= {ISOTROPIC_K_MAX} for the exact isotropic method, got {k_max}")
        moments = wishart.trace_moments(d, m, 2 * k_max)
        out = _iso_terms(d, m, p, s, ks, noise, moments)
    else:
        if k_max > GENERAL_K_MAX:
            raise ValueError(
                f"k must be <= {GENERAL_K_MAX} for P and Sigma that are not both multiples of I "
                f"(the exact Gaussian expansion over 2k factors has (4k-1)!! terms), got {k_max}"
            )
        out = np.array([_general_error(P, Sigma, m, int(kk), noise) for kk in ks.reshape(-1)])
    return float(out[0]) if ks.ndim == 0 else out.reshape(ks.shape)


def _cyclic(tokens, d):
    """Turn a product of matrices and "S" tokens into the list B of tr(B_1 Ŝ ⋯ B_r Ŝ)."""
    last = max(i for i, t in enumerate(tokens) if isinstance(t, str))
    tokens = tokens[last + 1:] + tokens[: last + 1]  # rotate the cyclic trace to end on Ŝ
    out, M = [], None
    for t in tokens:
        if isinstance(t, str):
            out.append(np.eye(d) if M is None else M)
            M = None
        else:
            M = t if M is None else M @ t
    return out


def _general_error(P, Sigma, m, k, noise):
    d = P.shape[0]
    S = "S"

    def expect(tokens):
        if not any(isinstance(t, str) for t in tokens):
            M = np.eye(d)
            for t in tokens:
                M = M @ t
            return float(np.trace(M))
        return wishart.trace_expectation(_cyclic(list(tokens), d), Sigma, m)

    Pt = P.T
    total = 0.0
    for j in range(k + 1):
        for jj in range(k + 1):
            coef = comb(k, j) * comb(k, jj) * (-1) ** (j + jj)
            total += coef * expect([S, Pt] * j + [P, S] * jj + ([] if j + jj else [np.eye(d)]))
    if noise > 0 and k > 0:
        q = [comb(k, j + 1) * (-1) ** j for j in range(k)]  # Q_k = Σ_j q_j (PŜ)^j P
        acc = 0.0
        for j in range(k):
            for jj in range(k):
                acc += q[j] * q[jj] * expect([P, S] * j + [P, S, Pt] + [S, Pt] * jj)
        total += noise**2 / m * acc
    return total


def finite_m_cot_error(Lam, n_train: int, m_test: int, k, Sigma=None, noise: float = 0.0):
    """The book's CoT chain at finite m exactly: :func:`finite_m_error` with P = Γ⁻¹ (from Λ and n).

    ``Sigma`` defaults to ``Lam`` (in distribution). Isotropic (Λ ∝ I, Σ ∝ I): any k <=
    :data:`ISOTROPIC_K_MAX`; otherwise k <= :data:`GENERAL_K_MAX`.
    """
    Lam, Sigma = _lam_sigma(Lam, Sigma)
    P = np.linalg.inv(gamma(Lam, n_train))
    return finite_m_error(P, Sigma, m_test, k, noise)


def finite_m_conditional_sd(P, Sigma, m_test: int, k):
    """Standard deviation over prompts of E[‖ŵ_k − w‖² | X], exactly (isotropic P and Σ, no noise).

    Given a prompt's features the error averaged over w is tr (I − PŜ)^{2k}; its second moment is
    a sum of the mixed Wishart moments E[tr W^i tr W^j] (:func:`ttscale.wishart.mixed_moment`).
    It sizes a Monte Carlo: N prompts estimate the mean error with standard error at least this
    over √N. k <= ISOTROPIC_K_MAX // 2.
    """
    P, Sigma, m, ks, _ = _finite_m_args(P, Sigma, m_test, k, 0.0)
    d = P.shape[0]
    p, s = _scalar_multiple(P), _scalar_multiple(Sigma)
    if p is None or s is None:
        raise ValueError("P and Sigma must both be multiples of the identity for finite_m_conditional_sd")
    k_max = int(ks.max()) if ks.size else 0
    if 4 * k_max > wishart.MAX_DEGREE:
        raise ValueError(f"k must be <= {wishart.MAX_DEGREE // 4} for finite_m_conditional_sd, got {k_max}")
    c = Fraction(p) * Fraction(s) / m
    a, b = c.numerator, c.denominator
    out = np.empty(ks.size)
    top = 2 * k_max
    single = [wishart.mixed_moment(d, m, (j,)) for j in range(top + 1)]
    pair = [[None] * i + [wishart.mixed_moment(d, m, (i, j)) for j in range(i, top + 1)] for i in range(top + 1)]
    for idx, kk in enumerate(ks.reshape(-1)):
        n2 = 2 * int(kk)
        w = [comb(n2, j) * (-a) ** j * b ** (n2 - j) for j in range(n2 + 1)]
        first = sum(w[j] * single[j] for j in range(n2 + 1))
        # E[p_i p_j] is symmetric in (i, j): the diagonal once, each pair i < j twice (exact integers)
        second = sum(w[i] * (w[i] * pair[i][i] + 2 * sum(w[j] * pair[i][j] for j in range(i + 1, n2 + 1)))
                     for i in range(n2 + 1))
        var = Fraction(second, b ** (2 * n2)) - Fraction(first, b**n2) ** 2
        out[idx] = float(var) ** 0.5 if var < Fraction(10) ** 600 else np.inf
    return float(out[0]) if ks.ndim == 0 else out.reshape(ks.shape)


def proportional_limit_error(P, Sigma, m_test: int, k, noise: float = 0.0):
    """The Marchenko–Pastur (d, m → ∞, d/m fixed) prediction of :func:`finite_m_error`, isotropic.

    For P = p·I and Σ = s·I the empirical eigenvalue law of Ŝ/s tends to the Marchenko–Pastur law
    μ_γ of ratio γ = d/m, so E‖ŵ_k − w‖² ≈ d ∫ (1 − psλ)^{2k} dμ_γ(λ) + noise² p γ ∫ g_k(psλ) dμ_γ,
    g_k(a) = (1 − (1 − a)^k)²/a, evaluated exactly from the Narayana moments of μ_γ
    (:func:`ttscale.wishart.narayana_moments`). Any k <= ISOTROPIC_K_MAX. It sees only the bulk
    [(1 − √γ)², (1 + √γ)²], not the fluctuations of the largest eigenvalue beyond its edge, which
    is why it misses the finite-d mean's eventual rise.
    """
    P, Sigma, m, ks, noise = _finite_m_args(P, Sigma, m_test, k, noise)
    d = P.shape[0]
    p, s = _scalar_multiple(P), _scalar_multiple(Sigma)
    if p is None or s is None:
        raise ValueError("P and Sigma must both be multiples of the identity for proportional_limit_error")
    k_max = int(ks.max()) if ks.size else 0
    if k_max > ISOTROPIC_K_MAX:
        raise ValueError(f"k must be <= {ISOTROPIC_K_MAX}, got {k_max}")
    nar = wishart.narayana_moments(Fraction(d, m), 2 * k_max)
    # E tr W^j ≈ d m^j ∫ λ^j dμ_γ: reuse the exact-sum code with these "moments" (W/m ~ μ_γ)
    moments = [d * m**j * nar[j] for j in range(2 * k_max + 1)]
    out = _iso_terms(d, m, p, s, ks, noise, moments)
    return float(out[0]) if ks.ndim == 0 else out.reshape(ks.shape)


# --------------------------------------------------------------------------- task hardness (Theorem 3.3, Corollary 3.5)
def _eigenvalues(Lam) -> np.ndarray:
    """Eigenvalues of a non-singular covariance, decreasing; ValueError (via Hard) if singular."""
    hardness(Lam)  # the one place that decides "singular" and says so
    return np.linalg.eigvalsh(checks.covariance(Lam, "Lam"))[::-1].copy()


def skill_hardness(Lam) -> np.ndarray:
    """Per-skill hardness h_i = tr Λ / λ_i, one per eigen-direction, in increasing order.

    The last entry is Hard(Λ); all equal d iff Λ ∝ I. Raises ``ValueError`` for a singular
    Λ (a skill with λ_i = 0 has infinite hardness).
    """
    lam = _eigenvalues(Lam)
    return lam.sum() / lam


def hardness_elasticity(Lam) -> np.ndarray:
    """∂ log Hard / ∂ log λ_i for each eigenvalue (decreasing order of λ_i).

    For a simple smallest eigenvalue: λ_i / T for i ≠ min and λ_min/T − 1 = 1/Hard − 1 for the
    smallest, so the smallest eigenvalue moves Hard one-for-one (elasticity ≈ −1) while each
    other one moves it by its share of the trace. Requires λ_min to be simple (otherwise Hard
    is not differentiable there).
    """
    lam = _eigenvalues(Lam)
    if lam.size > 1 and np.isclose(lam[-1], lam[-2], rtol=1e-9, atol=0):
        raise ValueError("Lam's smallest eigenvalue is repeated, so Hard(Lam) is not differentiable there")
    e = lam / lam.sum()
    e[-1] -= 1.0
    return e


def steps_to_target(Lam, n_train: int, target: float, k_max: int = 10_000, Sigma=None):
    """Smallest number of model applications k with E‖ŵ_k − w‖² <= ``target`` (m → ∞).

    Exact, from :func:`cot_error` on k = 0…``k_max``; ``Sigma`` defaults to
    Λ (in distribution, where the error falls with k). Returns an ``int``, or ``nan`` when no
    k <= ``k_max`` reaches the target.
    """
    target = checks.positive_real(target, "target")
    k_max = checks.positive_int(k_max, "k_max")
    if k_max > 1_000_000:
        raise ValueError(f"k_max must be <= 1000000 (a million model applications), got {k_max}")
    err = cot_error(Lam, n_train, np.arange(k_max + 1), Sigma)
    from .simulation import first_below  # reading a curve off is simulation's; imported late (no cycle)

    return first_below(err, target)


def steps_to_target_bound(H, d: int, n_train: int, target: float):
    """Steps Corollary 3.5 guarantees: smallest k with d (1 + n/(1 + H))^{−2k} <= target.

    k = ⌈log(d/target) / (2 log(1 + n/(1 + H)))⌉ (0 when target >= d). Depends on Λ only
    through H; never below :func:`steps_to_target` because every ρ_i <= 1/(1 + n/(1 + H)).
    ``H`` may be an array (returns an int array).
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
    H_eff → Hard(Λ) as k → ∞. ``k`` >= 1, an int or an array.
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
    as k → ∞. ``k`` >= 1, an int or an array.
    """
    ks = checks.steps(k, "k")
    if ks.size and ks.min() < 1:
        raise ValueError("k must be >= 1 for a power-mean hardness")
    g = 1 + skill_hardness(Lam)
    gmax = g.max()
    kk = ks.reshape(-1, 1).astype(np.float64)
    out = gmax * np.mean((g / gmax)[None, :] ** (2 * kk), axis=1) ** (1 / (2 * kk[:, 0])) - 1
    return float(out[0]) if ks.ndim == 0 else out.reshape(ks.shape)



# --------------------------------------------------------------------------- divergence edges (m -> infinity and Marchenko-Pastur)
def mp_lambda_max(n_train, d: int, m_test):
    """Marchenko–Pastur prediction of λ_max(Γ⁻¹Ŝ_m) for Λ = Σ = I: (n/(n+d+1))(1 + √(d/m))².

    For Λ = I, Γ = ((n+d+1)/n) I, and the largest eigenvalue of a d × d sample covariance of
    m standard Gaussian vectors tends to (1 + √(d/m))² as d, m → ∞ with d/m fixed
    (Marchenko and Pastur 1967). The chain diverges when this exceeds 2. Vectorised over
    ``n_train`` and ``m_test`` (broadcast).
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
    1/(√2 − 1)² ≈ 5.83. Vectorised over ``n_train``.
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
    does not.
    """
    n_max = checks.positive_int(n_max, "n_max")

    def over(n):
        return preconditioned_spectrum(Lam, n, Sigma)[-1] > 2.0

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


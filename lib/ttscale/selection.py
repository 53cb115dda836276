"""Choosing the training mixture π on the probability simplex (paper Section 4).

Two objectives for a downstream task with covariance Σ (``Sigma``):

* the paper's quadratic surrogate ‖I − Σ⁻¹ Σ_ℓ π_ℓ Λ_ℓ‖_F², convex in π, solved as a QP with
  cvxpy (:func:`select_surrogate`); it does not depend on the prompt lengths n_ℓ;
* the exact m → ∞ downstream CoT error ‖(I − A(π)Σ)^k‖_F² of the LSA trained on the mixture,
  A(π) = Λ̄ M⁻¹ (:mod:`ttscale.mixtures`), smooth but not convex, minimised by SLSQP from
  several starting points with an analytic gradient (:func:`select_exact`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import checks, theory
from .mixtures import validate_tasks, validate_weights

__all__ = [
    "Selection",
    "SOLVERS",
    "surrogate_objective",
    "select_surrogate",
    "SurrogateSelector",
    "exact_objective",
    "exact_gradient",
    "select_exact",
]

#: Deterministic solvers the surrogate QP may use (all ship with cvxpy's default install).
SOLVERS = ("CLARABEL", "OSQP", "SCS")


class Selection(NamedTuple):
    """An optimal mixture: ``weights`` (on the simplex), the ``objective`` there, and how it was found."""

    weights: np.ndarray
    objective: float
    method: str


def _sigma_inverse(Sigma, d):
    Sigma = checks.covariance(Sigma, "Sigma", d=d, definite=True)
    return Sigma, np.linalg.inv(Sigma)


def surrogate_objective(Lams, weights, Sigma) -> float:
    """The paper's surrogate ‖I − Σ⁻¹ Σ_ℓ π_ℓ Λ_ℓ‖_F² (Σ must be invertible)."""
    Lams, _ = validate_tasks(Lams)
    pi = validate_weights(weights, len(Lams))
    d = Lams.shape[1]
    _, Si = _sigma_inverse(Sigma, d)
    R = np.eye(d) - Si @ np.einsum("l,lij->ij", pi, Lams)
    return float(np.sum(R * R))


class SurrogateSelector:
    """The surrogate QP for a fixed number of types and d, compiled once and re-solved.

    min_π ‖vec(I) − B π‖² s.t. π >= 0, Σ π = 1, with column ℓ of B = vec(Σ⁻¹Λ_ℓ). B is a cvxpy
    ``Parameter``, so a new set of tasks or a new target only updates numbers (DPP), which keeps
    hundreds of random draws cheap. ``solver`` is one of :data:`SOLVERS`.
    """

    def __init__(self, n_types: int, d: int, solver: str = "CLARABEL"):
        import cvxpy as cp

        self.n_types = checks.positive_int(n_types, "n_types")
        self.d = checks.positive_int(d, "d")
        self.solver = checks.one_of(solver, SOLVERS, "solver")
        self._B = cp.Parameter((self.d * self.d, self.n_types))
        self._pi = cp.Variable(self.n_types)
        target = np.eye(self.d).ravel()
        self._problem = cp.Problem(cp.Minimize(cp.sum_squares(target - self._B @ self._pi)),
                                   [self._pi >= 0, cp.sum(self._pi) == 1])

    def solve(self, Lams, Sigma) -> Selection:
        """The surrogate-optimal mixture for these tasks and this target."""
        import cvxpy as cp

        Lams, _ = validate_tasks(Lams)
        if Lams.shape[0] != self.n_types or Lams.shape[1] != self.d:
            raise ValueError(f"Lams must hold {self.n_types} tasks of dimension {self.d}, got {Lams.shape[0]} of {Lams.shape[1]}")
        _, Si = _sigma_inverse(Sigma, self.d)
        self._B.value = np.einsum("ij,ljk->ikl", Si, Lams).reshape(self.d * self.d, self.n_types)
        kwargs = {  # tight tolerances: the weights, not only the objective, are the answer
            "CLARABEL": {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12},
            "OSQP": {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iter": 200_000},
            "SCS": {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 200_000},
        }[self.solver]
        self._problem.solve(solver=getattr(cp, self.solver), **kwargs)
        if self._problem.status not in ("optimal", "optimal_inaccurate") or self._pi.value is None:
            raise RuntimeError(f"the surrogate QP did not solve ({self.solver}: {self._problem.status})")
        pi = np.clip(np.asarray(self._pi.value, dtype=np.float64), 0.0, None)
        pi = validate_weights(pi / pi.sum(), self.n_types, "surrogate weights")
        return Selection(pi, surrogate_objective(Lams, pi, Sigma), f"cvxpy/{self.solver}")


def select_surrogate(Lams, Sigma, solver: str = "CLARABEL") -> Selection:
    """Solve the paper's surrogate QP min_π ‖I − Σ⁻¹ Σ π_ℓ Λ_ℓ‖_F² over the simplex (cvxpy).

    Raises ``ValueError`` for no task, mismatched dimensions or a singular Σ.
    """
    Lams, _ = validate_tasks(Lams)
    return SurrogateSelector(len(Lams), Lams.shape[1], solver).solve(Lams, Sigma)


class _ExactProblem:
    """The exact objective and its gradient for fixed tasks, target and k, validated once.

    :func:`exact_objective`, :func:`exact_gradient` and :func:`select_exact` all evaluate
    through one instance, so the optimiser uses the same objective and gradient the tests check.
    Γ_ℓΛ_ℓ is computed once; ``terms`` caches the last point, because SLSQP asks for the value
    and the gradient at the same π.
    """

    def __init__(self, Lams, n_trains, Sigma, k: int):
        self.k = checks.positive_int(k, "k")
        self.Lams, self.ns = validate_tasks(Lams, n_trains)
        if self.ns is None:
            raise ValueError("n_trains must give one prompt length per task type, got None")
        self.d = self.Lams.shape[1]
        self.Sigma = checks.covariance(Sigma, "Sigma", d=self.d)
        self.GL = np.stack([theory.gamma(Lam, int(n)) @ Lam for Lam, n in zip(self.Lams, self.ns)])  # Γ_ℓΛ_ℓ
        self._last = None

    def terms(self, pi):
        """A = Λ̄M⁺, M⁺ and the powers E^j (j = 0…k) of E = I − AΣ at the probability vector π."""
        if self._last is not None and np.array_equal(self._last[0], pi):
            return self._last[1]
        Lbar = np.einsum("l,lij->ij", pi, self.Lams)
        M = np.einsum("l,lij->ij", pi, self.GL)
        Minv = np.linalg.pinv((M + M.T) / 2, rcond=1e-12, hermitian=True)
        A = Lbar @ Minv
        I = np.eye(self.d)
        E = I - A @ self.Sigma
        powers = [I]
        for _ in range(self.k):
            powers.append(powers[-1] @ E)
        self._last = (np.array(pi, copy=True), (A, Minv, powers))
        return A, Minv, powers

    def objective(self, pi) -> float:
        """‖E^k‖_F²."""
        F = self.terms(pi)[2][self.k]
        return float(np.sum(F * F))

    def gradient(self, pi) -> np.ndarray:
        """∂/∂π_ℓ of :meth:`objective`: −2⟨HΣ, ∂A/∂π_ℓ⟩ with ∂A/∂π_ℓ = (Λ_ℓ − AΓ_ℓΛ_ℓ)M⁻¹."""
        A, Minv, powers = self.terms(pi)
        k = self.k
        F = powers[k]
        HS = sum(powers[j].T @ F @ powers[k - 1 - j].T for j in range(k)) @ self.Sigma  # ⟨H, dA Σ⟩ = ⟨HΣ, dA⟩
        return np.array([-2.0 * np.sum(HS * ((self.Lams[l] - A @ self.GL[l]) @ Minv)) for l in range(len(self.Lams))])


def exact_objective(Lams, n_trains, weights, Sigma, k: int) -> float:
    """‖(I − A(π)Σ)^k‖_F²: downstream error after k CoT steps of the mixture-trained LSA.

    Equals :func:`ttscale.mixtures.mixture_cot_error` (A = :func:`ttscale.mixtures.mixture_map`),
    computed here by the same code :func:`select_exact` optimises.
    """
    problem = _ExactProblem(Lams, n_trains, Sigma, k)
    return problem.objective(validate_weights(weights, len(problem.Lams)))


def exact_gradient(Lams, n_trains, weights, Sigma, k: int) -> np.ndarray:
    """∂/∂π_ℓ of :func:`exact_objective` (where Λ̄ is invertible).

    With E = I − AΣ, F = E^k and H = Σ_{j<k} (E^j)ᵀ F (E^{k−1−j})ᵀ: ∂f = −2⟨H Σ, ∂A⟩ and
    ∂A/∂π_ℓ = (Λ_ℓ − A Γ_ℓΛ_ℓ) M⁻¹ (differentiating A M = Λ̄).
    """
    problem = _ExactProblem(Lams, n_trains, Sigma, k)
    return problem.gradient(validate_weights(weights, len(problem.Lams)))


def _starts(n_types: int, n_random: int, seed: int) -> np.ndarray:
    """Uniform, every vertex pulled 10% towards uniform, then seeded Dirichlet(1) draws."""
    L = n_types
    uniform = np.full(L, 1.0 / L)
    vertices = 0.9 * np.eye(L) + 0.1 * uniform
    rng = np.random.default_rng([seed, 11])
    return np.vstack([uniform[None, :], vertices, rng.dirichlet(np.ones(L), size=n_random)])


def select_exact(Lams, n_trains, Sigma, k: int, *, n_random_starts: int = 4, seed: int = 0,
                 tol: float = 1e-10, max_iter: int = 500) -> Selection:
    """Minimise the exact downstream CoT error ‖(I − A(π)Σ)^k‖_F² over the simplex.

    scipy's SLSQP (bounds 0 <= π_ℓ <= 1, equality Σ π_ℓ = 1, the analytic gradient of
    :func:`exact_gradient`) from 1 + L + ``n_random_starts`` deterministic starting points
    (uniform, near each vertex, seeded Dirichlet draws); the best local optimum wins, and every
    vertex itself is also evaluated so a corner optimum is never missed. SLSQP works on log f,
    whose scale does not change by orders of magnitude between targets, at q = p / Σp (p clipped
    at 0), because its iterates need not lie exactly on the simplex. Deterministic.
    """
    from scipy.optimize import minimize

    problem = _ExactProblem(Lams, n_trains, Sigma, k)
    n_random_starts = checks.nonnegative_int(n_random_starts, "n_random_starts")
    seed = checks.seed(seed)
    L = len(problem.Lams)

    def on_simplex(p):
        q = np.clip(p, 0.0, None)
        s = q.sum()
        return q / s, s

    def f(p):
        return problem.objective(on_simplex(p)[0])

    def log_f_and_gradient(p):
        q, s = on_simplex(p)
        fq = problem.objective(q)
        g = problem.gradient(q)
        return np.log(fq), (g - g @ q) / s / fq  # chain rule through q = p / Σp, then through log

    best_p = None
    best_f = np.inf
    for e in np.eye(L):  # the vertices (single task types)
        fe = f(e)
        if fe < best_f:
            best_p, best_f = e, fe
    for x0 in _starts(L, n_random_starts, seed):
        res = minimize(log_f_and_gradient, x0, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * L,
                       constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1.0, "jac": lambda p: np.ones_like(p)}],
                       options={"ftol": tol, "maxiter": max_iter})
        p = on_simplex(res.x)[0]
        fp = f(p)
        if fp < best_f * (1 - 1e-12):  # relative: errors can be far below 1 (long chains on easy targets)
            best_p, best_f = p, fp
    pi = validate_weights(best_p, L, "exact weights")
    return Selection(pi, float(best_f), "scipy/SLSQP")

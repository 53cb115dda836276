"""Choosing the training mixture π on the probability simplex (paper Section 4).

Two objectives for a downstream task with covariance Σ (``Sigma``):

* the paper's quadratic surrogate ‖I − Σ⁻¹ Σ_ℓ π_ℓ Λ_ℓ‖_F², convex in π, solved as a QP with
  cvxpy (:func:`select_surrogate`); it does not depend on the prompt lengths n_ℓ;
* the exact m → ∞ downstream CoT error ‖(I − A(π)Σ)^k‖_F² of the LSA trained on the mixture,
  A(π) = Λ̄ M⁻¹ (:mod:`ttscale.mixtures`), smooth but not convex, minimised by SLSQP from
  several starting points with an analytic gradient (:func:`select_exact`).

Used in {ref}`sec-task-selection`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import checks, theory
from .mixtures import mixture_map, mixture_moments, validate_tasks, validate_weights

__all__ = [
    "Selection",
    "SOLVERS",
    "surrogate_objective",
    "select_surrogate",
    "SurrogateSelector",
    "exact_objective",
    "exact_gradient",
    "select_exact",
    "draw_selections",
    "paper_order_holds",
    "four_type_experiment",
    "diversity_sweep",
    "relevance_sweep",
    "hardness_sweep",
    "plot_weights_by_target",
    "plot_diverse_relevant_hard",
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


def exact_objective(Lams, n_trains, weights, Sigma, k: int) -> float:
    """‖(I − A(π)Σ)^k‖_F²: downstream error after k CoT steps of the mixture-trained LSA."""
    k = checks.positive_int(k, "k")
    return theory.map_error(mixture_map(Lams, n_trains, weights), Sigma, k)


def exact_gradient(Lams, n_trains, weights, Sigma, k: int) -> np.ndarray:
    """∂/∂π_ℓ of :func:`exact_objective` (where Λ̄ is invertible).

    With E = I − AΣ, F = E^k and H = Σ_{j<k} (E^j)ᵀ F (E^{k−1−j})ᵀ: ∂f = −2⟨H Σ, ∂A⟩ and
    ∂A/∂π_ℓ = (Λ_ℓ − A Γ_ℓΛ_ℓ) M⁻¹ (differentiating A M = Λ̄).
    """

    k = checks.positive_int(k, "k")
    Lams, ns = validate_tasks(Lams, n_trains)
    Lbar, M = mixture_moments(Lams, ns, weights)
    d = Lbar.shape[0]
    Sigma = checks.covariance(Sigma, "Sigma", d=d)
    Minv = np.linalg.pinv(M, rcond=1e-12, hermitian=True)
    A = Lbar @ Minv
    E = np.eye(d) - A @ Sigma
    powers = [np.eye(d)]
    for _ in range(k):
        powers.append(powers[-1] @ E)
    F = powers[k]
    H = sum(powers[j].T @ F @ powers[k - 1 - j].T for j in range(k))
    HS = H @ Sigma  # ⟨H, dA Σ⟩ = ⟨H Σ, dA⟩ (Σ symmetric)
    grad = np.empty(len(Lams))
    for l, (L, n) in enumerate(zip(Lams, ns)):
        dA = (L - A @ theory.gamma(L, int(n)) @ L) @ Minv
        grad[l] = -2.0 * np.sum(HS * dA)
    return grad


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

    scipy's SLSQP (bounds 0 <= π_ℓ <= 1, equality Σ π_ℓ = 1, analytic gradient
    :func:`exact_gradient`) from 1 + L + ``n_random_starts`` deterministic starting points
    (uniform, near each vertex, seeded Dirichlet draws); the best local optimum wins, and every
    vertex itself is also evaluated so a corner optimum is never missed. SLSQP works on log f,
    whose scale does not change by orders of magnitude between targets. Deterministic.
    """
    from scipy.optimize import minimize


    k = checks.positive_int(k, "k")
    Lams, ns = validate_tasks(Lams, n_trains)
    d = Lams.shape[1]
    Sigma = checks.covariance(Sigma, "Sigma", d=d)
    n_random_starts = checks.nonnegative_int(n_random_starts, "n_random_starts")
    seed = checks.seed(seed)
    L = len(Lams)

    G = np.stack([theory.gamma(Lam, int(n)) @ Lam for Lam, n in zip(Lams, ns)])  # Γ_ℓΛ_ℓ, once
    I = np.eye(d)

    def parts(p):
        q = np.clip(p, 0.0, None)
        s = q.sum()
        q = q / s
        Lbar = np.einsum("l,lij->ij", q, Lams)
        M = np.einsum("l,lij->ij", q, G)
        Minv = np.linalg.pinv((M + M.T) / 2, rcond=1e-12, hermitian=True)
        A = Lbar @ Minv
        E = I - A @ Sigma
        powers = [I]
        for _ in range(k):
            powers.append(powers[-1] @ E)
        return q, s, A, Minv, powers

    def f(p):
        F = parts(p)[4][k]
        return float(np.sum(F * F))

    def g(p):
        q, s, A, Minv, powers = parts(p)
        F = powers[k]
        HS = sum(powers[j].T @ F @ powers[k - 1 - j].T for j in range(k)) @ Sigma
        gq = np.array([-2.0 * np.sum(HS * ((Lams[l] - A @ G[l]) @ Minv)) for l in range(L)])
        return (gq - gq @ q) / s  # chain rule through q = p / Σp

    best_p = None
    best_f = np.inf
    for l in range(L):  # the vertices (single task types)
        e = np.eye(L)[l]
        fe = f(e)
        if fe < best_f:
            best_p, best_f = e, fe
    for x0 in _starts(L, n_random_starts, seed):
        res = minimize(lambda p: np.log(f(p)), x0, jac=lambda p: g(p) / f(p), method="SLSQP", bounds=[(0.0, 1.0)] * L,
                       constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1.0, "jac": lambda p: np.ones_like(p)}],
                       options={"ftol": tol, "maxiter": max_iter})
        p = np.clip(res.x, 0.0, None)
        p = p / p.sum()
        fp = f(p)
        if fp < best_f - 1e-12 * max(1.0, abs(best_f)):
            best_p, best_f = p, fp
    pi = validate_weights(best_p, L, "exact weights")
    return Selection(pi, float(best_f), "scipy/SLSQP")


def draw_selections(alphas, n_trains, Sigma, k: int, *, rotate: bool, n_draws: int, seed: int = 0,
                    solver: str = "CLARABEL", n_random_starts: int = 2):
    """Optimal weights of both objectives over random draws of power-law task types.

    Type ℓ has spectrum λ_i ∝ i^(−α_ℓ) (tr = d) and prompt length n_ℓ; with ``rotate=True`` each
    draw gives every type its own Haar rotation (draw j uses seed ``(seed, j)``), with
    ``rotate=False`` all types are diagonal, aligned with the coordinates — then every draw is
    the same problem and one draw is solved. Returns (surrogate, exact), each (draws, L).
    """
    from .mixtures import _sub_seed, power_law_tasks

    Sigma = checks.covariance(Sigma, "Sigma", definite=True)
    d = Sigma.shape[0]
    n_draws = checks.positive_int(n_draws, "n_draws")
    seed = checks.seed(seed)
    alphas = list(alphas)
    selector = SurrogateSelector(len(alphas), d, solver)
    S, E = [], []
    for j in range(n_draws if rotate else 1):  # draws are separate optimisation problems
        Lams = power_law_tasks(d, alphas, rotate=rotate, seed=_sub_seed(seed, j))
        S.append(selector.solve(Lams, Sigma).weights)
        E.append(select_exact(Lams, n_trains, Sigma, k, n_random_starts=n_random_starts, seed=seed).weights)
    return np.array(S), np.array(E)


def paper_order_holds(mean_weights, order, strict: bool = True) -> bool:
    """Whether ``mean_weights[order[0]] > mean_weights[order[1]] > …`` (>= with ``strict=False``)."""
    w = np.asarray(mean_weights, dtype=np.float64)[list(order)]
    return bool(np.all(w[:-1] > w[1:]) if strict else np.all(w[:-1] >= w[1:]))


def four_type_experiment(d: int, names, alphas, n_trains, target_alphas, k: int, *, n_draws: int, seed: int = 0,
                         solver: str = "CLARABEL", n_random_starts: int = 2, paper_order=None):
    """The paper's task-selection experiment: mean and spread of the optimal weights per type.

    For every downstream decay in ``target_alphas`` (a diagonal d x d power law, tr = d), both
    settings (``aligned``, ``rotated``; see :func:`draw_selections`) and both objectives, one row
    of a DataFrame indexed by (target alpha, setting, objective): the mean weight of each type
    (columns ``names``), its standard deviation over draws (``sd <name>``; 0 for the single
    aligned draw), ``hard mass`` (total weight of the types with the largest decay) and
    ``paper order`` (mean weights strictly in the order ``paper_order``, a list of names).
    Used in {ref}`sec-task-selection`.
    """
    import pandas as pd

    from .covariances import power_law

    names, alphas, n_trains = list(names), list(alphas), list(n_trains)
    if not (len(names) == len(alphas) == len(n_trains)):
        raise ValueError("names, alphas and n_trains must have one entry per task type")
    order = [] if paper_order is None else list(paper_order)
    missing = [t for t in order if t not in names]
    if missing:
        raise ValueError(f"paper_order names {missing} are not task names {names}")
    hard = [l for l, a in enumerate(alphas) if a == max(alphas)]
    rows = []
    for a in target_alphas:
        Sigma = power_law(d, a)
        for setting in ("aligned", "rotated"):
            S, E = draw_selections(alphas, n_trains, Sigma, k, rotate=setting == "rotated", n_draws=n_draws,
                                   seed=seed, solver=solver, n_random_starts=n_random_starts)
            for objective, W in (("surrogate", S), ("exact", E)):
                mean = W.mean(axis=0)
                sd = W.std(axis=0, ddof=1) if len(W) > 1 else np.zeros(len(names))
                rows.append({"target alpha": a, "setting": setting, "objective": objective,
                             **dict(zip(names, mean)), **{f"sd {t}": v for t, v in zip(names, sd)},
                             "hard mass": float(mean[hard].sum()),
                             "paper order": paper_order_holds(mean, [names.index(t) for t in order]) if order else False})
    return pd.DataFrame(rows).set_index(["target alpha", "setting", "objective"])


def _pair_sweep(pools, n_trains, Sigma, k, watch, solver, n_random_starts, seed):
    """Both optima and two errors for a sequence of two-type pools (one row per pool)."""
    import pandas as pd

    from .mixtures import mixture_cot_error

    selector = None
    rows = []
    for pool in pools:  # each pool is a separate optimisation problem
        pool = np.asarray(pool)
        selector = selector or SurrogateSelector(len(pool), pool.shape[1], solver)
        s = selector.solve(pool, Sigma)
        e = select_exact(pool, n_trains, Sigma, k, n_random_starts=n_random_starts, seed=seed)
        rows.append({"surrogate weight": s.weights[watch], "exact weight": e.weights[watch],
                     "optimal error": e.objective,
                     "error without type 0": mixture_cot_error(pool, n_trains, [0.0, 1.0], Sigma, k),
                     "error with type 0 only": mixture_cot_error(pool, n_trains, [1.0, 0.0], Sigma, k)})
    return pd.DataFrame(rows)


def diversity_sweep(d: int, missing_counts, Sigma, k: int, *, easy=(0.2, 20), hard=(0.8, 100),
                    solver: str = "CLARABEL", n_random_starts: int = 2, seed: int = 0):
    """Diversity: pool = {full-rank easy type (type 0), hard type missing its r weakest skills}.

    ``easy`` and ``hard`` are (α, n). For each r in ``missing_counts`` the hard spectrum's last r
    eigenvalues are set to 0 and the rest renormalised to trace d. Rows: weight of the easy type
    under both objectives, the optimal error and the errors of each type alone, after k steps.
    Used in {ref}`sec-task-selection`.
    """
    from .covariances import power_law, power_law_spectrum

    d = checks.positive_int(d, "d")
    pools = []
    for r in missing_counts:
        r = checks.nonnegative_int(r, "missing_counts")
        if r >= d:
            raise ValueError(f"missing_counts must be < d = {d}, got {r}")
        lam = power_law_spectrum(d, hard[0])
        lam[d - r:] = 0.0
        pools.append([power_law(d, easy[0]), np.diag(lam * d / lam.sum())])
    out = _pair_sweep(pools, [easy[1], hard[1]], Sigma, k, 0, solver, n_random_starts, seed)
    out.index = list(missing_counts)
    return out


def relevance_sweep(d: int, thetas, Sigma, k: int, *, aligned=(0.2, 100), rotated=(0.8, 100),
                    solver: str = "CLARABEL", n_random_starts: int = 2, seed: int = 0):
    """Relevance: pool = {aligned type (type 0), type rotated by θ in the planes (i, d−1−i)}.

    ``aligned`` and ``rotated`` are (α, n); the rotation is :func:`ttscale.mixtures.pair_rotation`.
    Rows (one per θ): weight of the *rotated* type under both objectives, the optimal error and
    the errors of each type alone. Used in {ref}`sec-task-selection`.
    """
    from .covariances import power_law
    from .mixtures import pair_rotation

    pools = []
    for th in thetas:
        U = pair_rotation(d, th)
        pools.append([power_law(d, aligned[0]), U @ power_law(d, rotated[0]) @ U.T])
    out = _pair_sweep(pools, [aligned[1], rotated[1]], Sigma, k, 1, solver, n_random_starts, seed)
    out.index = list(thetas)
    return out


def hardness_sweep(d: int, alphas, n_train: int, target_alphas, k: int, *, solver: str = "CLARABEL",
                   n_random_starts: int = 2, seed: int = 0):
    """Hardness: one aligned type per decay in ``alphas`` (all with prompt length ``n_train``) in one pool.

    Returns (surrogate, exact): DataFrames of optimal weights, one row per target decay, one
    column per task decay. Used in {ref}`sec-task-selection`.
    """
    import pandas as pd

    from .covariances import power_law
    from .mixtures import power_law_tasks

    pool = power_law_tasks(d, alphas)
    ns = [n_train] * len(pool)
    selector = SurrogateSelector(len(pool), d, solver)
    S, E = [], []
    for a in target_alphas:
        Sigma = power_law(d, a)
        S.append(selector.solve(pool, Sigma).weights)
        E.append(select_exact(pool, ns, Sigma, k, n_random_starts=n_random_starts, seed=seed).weights)
    return (pd.DataFrame(S, index=list(target_alphas), columns=list(alphas)),
            pd.DataFrame(E, index=list(target_alphas), columns=list(alphas)))


def plot_weights_by_target(table, names, target_alphas, setting: str = "rotated"):
    """Bar chart of mean optimal weight per type (± sd) against target decay, one panel per objective.

    ``table`` is :func:`four_type_experiment`'s DataFrame. Returns the figure.
    Used in {ref}`sec-task-selection`.
    """
    import matplotlib.pyplot as plt

    from .plotting import series_colors

    names, L = list(names), len(names)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    colors = series_colors(L)
    x = np.arange(len(target_alphas))
    for ax, objective in zip(axes, ["surrogate", "exact"]):
        rows = [table.loc[(a, setting, objective)] for a in target_alphas]
        for l, t in enumerate(names):
            ax.bar(x + (l - (L - 1) / 2) * 0.8 / L, [r[t] for r in rows], 0.8 / L,
                   yerr=[r[f"sd {t}"] for r in rows], color=colors[l], label=t, capsize=2)
        ax.set_xticks(x, [f"{a:g}" for a in target_alphas])
        ax.set_xlabel(f"target decay alpha ({objective})")
    axes[0].set_ylabel("mean selected probability")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", ncol=L, bbox_to_anchor=(0.5, 1.06))
    return fig


def plot_diverse_relevant_hard(div, rel, hw_sur, hw_exa):
    """Three panels: :func:`diversity_sweep`, :func:`relevance_sweep` and :func:`hardness_sweep` results.

    Solid lines are the exact objective, dashed the surrogate. Returns the figure.
    Used in {ref}`sec-task-selection`.
    """
    import matplotlib.pyplot as plt

    from .plotting import series_colors

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for ax, df, xlabel, ylabel in [(axes[0], div, "skills missing from hard task", "weight on easy-short (full rank)"),
                                   (axes[1], rel, "rotation angle of hard task", "weight on rotated hard-long")]:
        ax.plot(df.index, df["surrogate weight"], "o--", label="surrogate")
        ax.plot(df.index, df["exact weight"], "o-", label="exact")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    axes[0].legend()
    ax = axes[2]
    for col, a in zip(series_colors(len(hw_exa)), hw_exa.index):
        ax.plot(hw_exa.columns, hw_exa.loc[a], "o-", color=col, label=f"target alpha {a:g}")
        ax.plot(hw_sur.columns, hw_sur.loc[a], "--", color=col, alpha=0.6)
    ax.set_xlabel("task decay alpha (harder to the right)")
    ax.set_ylabel("optimal weight")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig

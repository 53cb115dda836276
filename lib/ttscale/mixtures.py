"""Multi-task training: a mixture of task types, the map the LSA learns from it, and its error.

Task type ℓ has feature covariance Λ_ℓ (``Lams[l]``) and training prompt length n_ℓ
(``n_trains[l]``); a training prompt is of type ℓ with probability π_ℓ (``weights[l]``).
With W at its structure the LSA predicts ŵ = A Ŝ_n w (A = −c V_{w,x}), and the population
training loss Σ_ℓ π_ℓ E‖(I − A Ŝ_ℓ) w‖² is minimised by

    A = Λ̄ M⁻¹,   Λ̄ = Σ_ℓ π_ℓ Λ_ℓ,   M = Σ_ℓ π_ℓ Γ_ℓ Λ_ℓ,

Γ_ℓ = (1 + 1/n_ℓ) Λ_ℓ + (tr Λ_ℓ / n_ℓ) I. Test-time CoT then iterates ŵ ← ŵ − A Ŝ_m (ŵ − w)
and, with m → ∞, the downstream error after k model applications is ‖(I − AΣ)^k‖_F².
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from . import checks, prompts, theory

__all__ = [
    "WEIGHT_ATOL",
    "validate_tasks",
    "validate_weights",
    "mixture_moments",
    "mixture_map",
    "mixture_cot_error",
    "mixture_counts",
    "mixture_sampler",
    "power_law_tasks",
    "pair_rotation",
    "population_loss",
    "train_mixture",
]

#: Weights must sum to 1 within this absolute tolerance; entries above −WEIGHT_ATOL count as >= 0.
WEIGHT_ATOL = 1e-6


def validate_tasks(Lams, n_trains=None):
    """Check a list of task covariances (and their prompt lengths); return them as arrays.

    Rules: at least one task; every Λ_ℓ a d x d covariance (symmetric PSD, non-zero) with the
    same d; ``n_trains`` (when given) one integer >= 1 per task. Returns ``(Lams, n_trains)``
    with ``Lams`` of shape (L, d, d) and ``n_trains`` an int array (or None).
    """
    if isinstance(Lams, np.ndarray) and Lams.ndim == 2:
        raise ValueError("Lams must be a list of covariance matrices (one per task type), got a single matrix")
    try:
        items = list(Lams)
    except TypeError:
        raise ValueError("Lams must be a list of covariance matrices, one per task type") from None
    if not items:
        raise ValueError("Lams must hold at least one task type, got none")
    out = []
    for l, Lam in enumerate(items):
        Lam = checks.covariance(Lam, f"Lams[{l}]", d=None if not out else out[0].shape[0])
        if np.trace(Lam) <= 0:
            raise ValueError(f"Lams[{l}] must be non-zero (its trace is 0)")
        out.append(Lam)
    Lams = np.stack(out)
    if n_trains is None:
        return Lams, None
    ns = list(np.atleast_1d(np.asarray(n_trains, dtype=object)))
    if len(ns) != len(out):
        raise ValueError(f"n_trains must give one prompt length per task type ({len(out)}), got {len(ns)}")
    ns = np.array([checks.positive_int(n, f"n_trains[{l}]") for l, n in enumerate(ns)], dtype=np.int64)
    return Lams, ns


def validate_weights(weights, n_types: int, name: str = "weights", atol: float = WEIGHT_ATOL) -> np.ndarray:
    """Check mixture weights: ``n_types`` finite numbers, each >= 0, summing to 1 within ``atol``.

    Entries in (−atol, 0) (solver round-off) are set to 0 and the result renormalised to sum
    exactly to 1. Raises ``ValueError`` naming the rule otherwise.
    """
    n_types = checks.positive_int(n_types, "n_types")
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a list of {n_types} real numbers") from None
    if w.ndim != 1 or w.size != n_types:
        raise ValueError(f"{name} must hold one probability per task type ({n_types}), got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    if w.min() < -atol:
        raise ValueError(f"{name} must be non-negative, got minimum {w.min():.3g}")
    if abs(w.sum() - 1.0) > atol:
        raise ValueError(f"{name} must sum to 1 (a probability vector), got sum {w.sum():.6g}")
    w = np.clip(w, 0.0, None)
    return w / w.sum()


def mixture_moments(Lams, n_trains, weights):
    """(Λ̄, M) = (Σ π_ℓ Λ_ℓ, Σ π_ℓ Γ_ℓ Λ_ℓ): the two moments the population loss depends on.

    Γ_ℓ Λ_ℓ = E[Ŝ_ℓ²] is the second moment of a type-ℓ prompt's sample covariance (Wishart).
    """
    Lams, ns = validate_tasks(Lams, n_trains)
    if ns is None:
        raise ValueError("n_trains must give one prompt length per task type, got None")
    pi = validate_weights(weights, len(Lams))
    G = np.stack([theory.gamma(L, int(n)) for L, n in zip(Lams, ns)])
    Lbar = np.einsum("l,lij->ij", pi, Lams)
    M = np.einsum("l,lij,ljk->ik", pi, G, Lams)
    return Lbar, (M + M.T) / 2


def mixture_map(Lams, n_trains, weights) -> np.ndarray:
    """A = Λ̄ M⁺, the map ŵ = A Ŝ w the LSA learns from the mixture (m, training data → ∞).

    Where Λ̄ is invertible this is Λ̄ M⁻¹, the unique minimiser. Where it is singular (no task
    with positive weight exercises some skill), the loss does not see A on those directions,
    and M⁺ picks the minimum-norm minimiser, A = 0 there — which is what gradient descent from
    V = 0 reaches, because those columns of V never receive a gradient. With one task type,
    A = Γ⁻¹ (Γ⁻¹ restricted to the range of Λ if Λ is singular).
    """
    Lbar, M = mixture_moments(Lams, n_trains, weights)
    return Lbar @ np.linalg.pinv(M, rcond=1e-12, hermitian=True)


def mixture_cot_error(Lams, n_trains, weights, Sigma, k):
    """Downstream error ‖(I − AΣ)^k‖_F² of the LSA trained on the mixture (A = :func:`mixture_map`).

    With one type this equals :func:`ttscale.theory.cot_error` ``(Lam, n, k, Sigma)``.
    """
    A = mixture_map(Lams, n_trains, weights)
    return theory.map_error(A, Sigma, k)


def mixture_counts(weights, batch: int, seed: int, step: int) -> np.ndarray:
    """How many of ``batch`` prompts each type gets at one training step: Multinomial(batch, π).

    Deterministic in ``(seed, step)`` (numpy ``default_rng([seed, step])``).
    """
    batch = checks.positive_int(batch, "batch")
    seed = checks.seed(seed)
    step = checks.nonnegative_int(step, "step")
    pi = checks.finite_array(weights, "weights", ndim=1)
    if pi.size == 0 or pi.min() < 0 or pi.sum() <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {pi.tolist()}")
    return np.random.default_rng([seed, 7, step]).multinomial(batch, pi / pi.sum())


def mixture_sampler(Lams, n_trains, weights, batch: int, seed: int = 0, stream: str = "train") -> Callable:
    """step ↦ a list of :class:`~ttscale.prompts.Prompts`, one group per task type present.

    At each step the counts of each type are Multinomial(batch, π) (:func:`mixture_counts`),
    and type ℓ's prompts come from :func:`ttscale.prompts.sample` with its own (Λ_ℓ, n_ℓ) and
    step index ``step * L + ℓ``, so different types and steps never share draws. The result
    feeds :func:`ttscale.training.train_lsa`, whose loss averages over all prompts: the
    empirical loss is an unbiased estimate of the mixture loss Σ π_ℓ E‖(I − AŜ_ℓ) w‖².
    """
    Lams, ns = validate_tasks(Lams, n_trains)
    if ns is None:
        raise ValueError("n_trains must give one prompt length per task type, got None")
    pi = validate_weights(weights, len(Lams))
    batch = checks.positive_int(batch, "batch")
    seed = checks.seed(seed)
    checks.one_of(stream, prompts.STREAMS, "stream")
    L = len(Lams)
    import torch

    # What prompts.sample recomputes at every call, computed once per type: its validation of Λ_ℓ
    # and the square-root factor (an eigendecomposition). The draws below are prompts.sample's own
    # (same generator, same order of draws, same arithmetic), so the batches are identical to
    # prompts.sample's (tested); a training run calls the sampler hundreds of times.
    factors = [torch.as_tensor(prompts._sqrt_factor(checks.covariance(Lam, f"Lams[{l}]")), dtype=torch.float64)
               for l, Lam in enumerate(Lams)]
    probs = pi / pi.sum()   # as mixture_counts normalises
    d = Lams.shape[1]

    def draw(l: int, count: int, step: int) -> prompts.Prompts:
        checks.size(count * d * int(ns[l]), "batch", "the (batch, d, n) feature tensor")
        g = prompts.generator(seed, stream, step * L + l)
        w = torch.randn(count, d, generator=g, dtype=torch.float64)
        X = factors[l] @ torch.randn(count, d, int(ns[l]), generator=g, dtype=torch.float64)
        return prompts.Prompts(X, torch.einsum("bdn,bd->bn", X, w), w)

    def sampler(step: int):
        step = checks.nonnegative_int(step, "step")
        counts = np.random.default_rng([seed, 7, step]).multinomial(batch, probs)
        return [draw(l, int(c), step) for l, c in enumerate(counts) if c > 0]

    return sampler


def _sub_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def power_law_tasks(d: int, alphas: Sequence[float], *, rotate: bool = False, seed: int = 0) -> np.ndarray:
    """One power-law covariance per entry of ``alphas`` (tr = d), shape (L, d, d).

    ``rotate=False``: all diagonal, aligned with the coordinate basis (the target's eigenbasis
    when the target is diagonal). ``rotate=True``: type ℓ gets its own Haar rotation, seeded by
    ``(seed, ℓ)``, so types are independent random draws.
    """
    alphas = list(alphas)
    if not alphas:
        raise ValueError("alphas must hold at least one task type, got none")
    from .covariances import power_law

    return np.stack([power_law(d, a, rotate=rotate, seed=_sub_seed(checks.seed(seed), l)) for l, a in enumerate(alphas)])


def pair_rotation(d: int, theta: float) -> np.ndarray:
    """Rotation by ``theta`` in each coordinate plane (i, d−1−i), i < d/2.

    θ = 0 is the identity (aligned); θ = π/2 maps coordinate i to d−1−i, reversing the order
    of a decreasing spectrum: the strongest training skill lands on the weakest target skill.
    """
    d = checks.positive_int(d, "d")
    theta = checks.finite_real(theta, "theta")
    U = np.eye(d)
    c, s = np.cos(theta), np.sin(theta)
    for i in range(d // 2):
        j = d - 1 - i
        U[i, i], U[j, j], U[i, j], U[j, i] = c, c, -s, s
    return U


def train_mixture(Lams, n_trains, weights, *, batch: int = 256, lrs=(0.03, 0.01, 0.003, 0.001),
                  steps_per_lr: int = 150, c: float = 1.0, seed: int = 0):
    """Train an LSA (W fixed at its structure, V from 0) on the mixture; return (model, Â, losses).

    Adam in stages of ``steps_per_lr`` steps at each learning rate of ``lrs`` (a decreasing
    schedule: the loss is a convex quadratic in V, and a smaller step shrinks the stochastic-
    gradient noise floor around the optimum). Batches come from :func:`mixture_sampler`, one
    step index sequence across the stages, so no batch repeats. Â = −c V_{w,x}
    (:func:`ttscale.lsa.applied_map`) is what the model applies at test time.
    """
    import torch

    from . import lsa, training

    lrs = [checks.positive_real(lr, "lr") for lr in lrs]
    if not lrs:
        raise ValueError("lrs must hold at least one learning rate")
    steps_per_lr = checks.positive_int(steps_per_lr, "steps_per_lr")
    c = checks.positive_real(c, "c")
    sampler = mixture_sampler(Lams, n_trains, weights, batch, seed)
    d = validate_tasks(Lams)[0].shape[1]
    torch.manual_seed(seed)
    model = lsa.LSA(d, W=lsa.structured_W(d, c), train_W=False)
    hist = training.train_stages(model, sampler, [(steps_per_lr, lr) for lr in lrs])
    return model, lsa.applied_map(model, c), hist.loss


def population_loss(A, Lams, n_trains, weights) -> float:
    """E over the mixture of ‖(I − AŜ)w‖² = d − 2 tr(AΛ̄) + tr(A M Aᵀ) (twice the training loss)."""
    Lbar, M = mixture_moments(Lams, n_trains, weights)
    A = checks.finite_array(A, "A")
    if A.shape != Lbar.shape:
        raise ValueError(f"A must be {Lbar.shape[0]} x {Lbar.shape[0]}, got shape {A.shape}")
    return float(Lbar.shape[0] - 2 * np.trace(A @ Lbar) + np.trace(A @ M @ A.T))

"""Training the LSA by gradient descent on freshly sampled prompts (torch).

The paper's training objective (no chain of thought) is
½ E‖f(Z)[:, −1] − (0_d; 0; w; 1)‖² over prompts of length n. With ``W`` held at its
structure this is a convex quadratic in ``V`` ({ref}`sec-pseudo-newton`), so any standard
optimiser started at V = 0 should reach −Γ⁻¹/c; the book checks that it does.

A *sampler* maps a step index to a batch: either one :class:`~ttscale.prompts.Prompts`
(all prompts of one length) or a list of them (e.g. a mixture of task types with different
prompt lengths; the loss then averages over all prompts of all groups).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from . import checks, prompts
from .lsa import LSA, blocks
from .progress import bar

__all__ = ["target_column", "lsa_loss", "prompt_sampler", "History", "adam_step", "train_lsa", "train_stages"]


def target_column(w: torch.Tensor) -> torch.Tensor:
    """(0_d; 0; w; 1): the column the model's last output should equal, (batch, 2d+2)."""
    return prompts.estimate_token(w)[:, :, 0]


def _groups(batch) -> list:
    return [batch] if isinstance(batch, prompts.Prompts) else list(batch)


def _last_column_embedded(model: LSA, g) -> torch.Tensor:
    """f(Z)[:, −1] through the token embedding (any W, trainable or not)."""
    Z = prompts.embed(g.X.to(model.V.dtype), g.y.to(model.V.dtype))
    return model(Z, g.X.shape[2], last_only=True)


def _last_column_from_sums(model: LSA, g) -> torch.Tensor:
    """f(Z)[:, −1] at ŵ_0 = 0 without building Z: the same numbers up to rounding.

    The query token is e_1 (the constant-1 row), so the scores Zᵀ W z_T read only W's last
    column (a; b; ·; q): example t scores s_t = ⟨a, x_t⟩ + b y_t and the query q. Then
    Z (Zᵀ W z_T) = (X s; yᵀ s; 0; q), i.e. per prompt X Xᵀ a + b X y, (X y)ᵀ a + b yᵀy and q: with
    the structured W (a = 0) only the per-prompt sums X y and yᵀy enter.
    """
    V, W = model.V, model.W
    dt = V.dtype
    X, y = g.X.to(dt), g.y.to(dt)
    bl = blocks(model.d)
    col = W[:, bl.one]
    a, b, q = col[bl.x], col[bl.y], col[bl.one]
    Xy = torch.einsum("bdn,bn->bd", X, y)
    yy = (y * y).sum(dim=1)
    mixed_x, mixed_y = b * Xy, b * yy
    if bool(a.any()):  # a general W: the X Xᵀ a and (X y)ᵀ a terms, still O(d n) per prompt
        Xa = torch.einsum("bdn,d->bn", X, a)
        mixed_x = mixed_x + torch.einsum("bdn,bn->bd", X, Xa)
        mixed_y = mixed_y + Xy @ a
    out = (mixed_x @ V[:, bl.x].T + mixed_y[:, None] * V[:, bl.y] + q * V[:, bl.one]) / X.shape[2]
    z_T = torch.zeros(V.shape[0], dtype=dt)
    z_T[bl.one] = 1.0
    return z_T + out  # the residual connection adds the query token itself


def lsa_loss(model: LSA, batch) -> torch.Tensor:
    """½ mean over prompts of ‖f(Z)[:, −1] − (0; 0; w; 1)‖² (ŵ_0 = 0, N = prompt length).

    With W frozen (``model.W.requires_grad`` false, as in the paper's training) the last column
    is computed from per-prompt sums of X y and yᵀy without embedding the tokens
    (:func:`_last_column_from_sums`; equal to the embedded computation up to rounding, tested);
    with W trainable, through the embedding.
    """
    groups = _groups(batch)
    total = sum(g.X.shape[0] for g in groups)
    last_column = _last_column_embedded if model.W.requires_grad else _last_column_from_sums
    loss = 0.0
    for g in groups:  # one group per prompt length; each group is a vectorised batch
        out = last_column(model, g)
        loss = loss + 0.5 * ((out - target_column(g.w.to(model.V.dtype))) ** 2).sum()
    return loss / total


def prompt_sampler(Lam, n_train: int, batch: int, seed: int = 0) -> Callable[[int], prompts.Prompts]:
    """step ↦ a fresh batch from the ``train`` stream of ``seed`` (the same step, the same batch)."""
    Lam = checks.covariance(Lam, "Lam")
    n_train = checks.positive_int(n_train, "n_train")
    batch = checks.positive_int(batch, "batch")
    seed = checks.seed(seed)
    return lambda step: prompts.sample(Lam, n_train, batch, seed=seed, stream="train", step=step)


class History(NamedTuple):
    """Per-step training loss, and copies of V at the recorded steps."""

    loss: np.ndarray
    steps: np.ndarray
    V: np.ndarray  # (len(steps), 2d+2, 2d+2)


def adam_step(param, grad, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """One Adam step in place on ``param`` (state ``m``, ``v``; ``step`` counts from 1).

    The same operations in the same order as ``torch.optim.Adam``'s default (single-tensor) path on
    the CPU, so the same numbers (tested bit for bit), without the optimiser machinery: its first
    step imports torch's compiler (2-3 CPU-s per process) and its per-step overhead dominates the
    book's tiny models.
    """
    m.lerp_(grad, 1 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    step = float(step)
    bias1, bias2 = 1 - beta1**step, 1 - beta2**step
    denom = (v.sqrt() / bias2**0.5).add_(eps)
    param.addcdiv_(m, denom, value=-(lr / bias1))


def train_lsa(
    model: LSA,
    sampler: Callable[[int], object],
    steps: int,
    lr: float = 0.01,
    *,
    optimizer: str = "adam",
    record_every: int = 0,
    start_step: int = 0,
    progress: bool = True,
) -> History:
    """Train ``model`` in place for ``steps`` steps; returns the :class:`History`.

    ``optimizer`` is ``"adam"`` or ``"sgd"``. ``record_every > 0`` stores V every that many
    steps (and at step 0 and the end) so a chapter can plot its distance to −Γ⁻¹/c.
    ``start_step`` continues a prompt stream: batches are ``sampler(start_step + t)`` and the
    recorded steps count from it, so training in stages (a fresh optimiser at each learning rate
    of a decreasing schedule) never reuses a batch.
    Deterministic given the sampler's seed: the optimiser has no randomness of its own.
    """
    steps = checks.nonnegative_int(steps, "steps")
    lr = checks.positive_real(lr, "lr")
    checks.one_of(optimizer, ("adam", "sgd"), "optimizer")
    record_every = checks.nonnegative_int(record_every, "record_every")
    start_step = checks.nonnegative_int(start_step, "start_step")
    params = [p for p in model.parameters() if p.requires_grad]
    state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]  # Adam's moments
    losses = np.empty(steps)
    rec_steps, rec_V = [], []

    def record(t):
        rec_steps.append(start_step + t)
        rec_V.append(model.V.detach().cpu().numpy().copy())

    if record_every:
        record(0)
    for t in bar(range(steps), desc="training LSA") if progress else range(steps):
        for p in params:
            p.grad = None
        loss = lsa_loss(model, sampler(start_step + t))
        loss.backward()
        with torch.no_grad():  # torch.optim.Adam's / SGD's step, the same numbers
            for p, (m, v) in zip(params, state):
                if optimizer == "adam":
                    adam_step(p, p.grad, m, v, t + 1, lr)
                else:
                    p.add_(p.grad, alpha=-lr)
        losses[t] = loss.item()
        if record_every and ((t + 1) % record_every == 0 or t + 1 == steps) and (not rec_steps or rec_steps[-1] != start_step + t + 1):
            record(t + 1)
    D = 2 * model.d + 2
    V = np.stack(rec_V) if rec_V else np.empty((0, D, D))
    return History(losses, np.asarray(rec_steps, dtype=np.int64), V)


def train_stages(model: LSA, sampler: Callable[[int], object], stages: Sequence, *, record_every: int = 0,
                 progress: bool = False) -> History:
    """Train in stages, a fresh Adam at each learning rate of a schedule; returns the joined :class:`History`.

    ``stages`` is a sequence of ``(steps, lr)``. Each stage continues the sampler's step index
    where the previous one stopped (no batch is seen twice) and restarts the optimiser, so a
    decreasing schedule shrinks the stochastic-gradient noise floor around the optimum of the
    convex loss. ``record_every`` as in :func:`train_lsa` (each stage records its own first and
    last step, so a step between stages appears twice).
    """
    stages = [(checks.nonnegative_int(n, "steps"), checks.positive_real(lr, "lr")) for n, lr in stages]
    if not stages:
        raise ValueError("stages must hold at least one (steps, lr) pair")
    start, parts = 0, []
    for steps, lr in stages:
        parts.append(train_lsa(model, sampler, steps, lr, record_every=record_every, start_step=start,
                               progress=progress))
        start += steps
    D = 2 * model.d + 2
    return History(np.concatenate([h.loss for h in parts]), np.concatenate([h.steps for h in parts]),
                   np.concatenate([h.V for h in parts]) if record_every else np.empty((0, D, D)))

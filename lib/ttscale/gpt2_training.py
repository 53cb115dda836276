"""Training the GPT-2-style decoder on in-context weight prediction, with a checkpoint cache.

Objective: for a prompt of length n, run an unrolled chain of ``chain_train`` model
applications (each estimate appended as the token (0; 0; ŵ; 1) before the next one) and
minimise the mean over the chain of E‖ŵ_i − w‖² / d. ``chain_train = 1`` is *direct*
training, the paper's LSA objective: then the model never sees a non-zero estimate token
and nothing teaches it how to read one ({ref}`sec-pseudo-newton`).

Optimiser: Adam (AdamW with weight decay 0), linear warm-up over the first 5% of steps then cosine decay to 10% of
``lr``, gradients clipped at norm 1. Prompts come from the ``train`` stream of ``seed``
(:func:`ttscale.prompts.sample`), the initial weights from ``torch.manual_seed(seed)``.

A trained model is stored under ``cache_dir`` in a file named by a hash of the *full*
configuration (architecture, Λ, n, chain length, steps, batch, lr, seed, torch version),
so re-running a chapter with other test-time parameters (k, m_test, Σ) does not retrain,
and any change to training does.

Used in {ref}`sec-gpt2`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from . import checks, prompts
from .gpt2 import GPT2, GPT2Config, chain, cpu_threads, resolve_device
from .progress import bar

__all__ = ["TrainConfig", "Trained", "DEFAULT_CACHE", "cache_key", "chain_loss", "train", "load_or_train"]

#: Default checkpoint folder (git-ignored, under the repository's ``_build``).
DEFAULT_CACHE = Path(__file__).resolve().parents[2] / "_build" / ".ttscale_cache" / "gpt2"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model besides its architecture."""

    n_train: int
    chain_train: int = 3
    steps: int = 1000
    batch: int = 64
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        checks.positive_int(self.n_train, "n_train")
        checks.positive_int(self.chain_train, "chain_train")
        checks.nonnegative_int(self.steps, "train_steps")
        checks.positive_int(self.batch, "batch")
        checks.positive_real(self.lr, "lr")
        checks.seed(self.seed)


class Trained(NamedTuple):
    """A trained model, its per-step training loss, whether it came from the cache, and the training time."""

    model: GPT2
    loss: np.ndarray
    cached: bool
    seconds: float
    path: Path | None


def cache_key(config: GPT2Config, train_config: TrainConfig, Lam) -> str:
    """A short hex hash of the full configuration (Λ's entries included, to 12 significant digits)."""
    Lam = checks.covariance(Lam, "Lam", d=config.d)
    payload = {
        "model": config.as_dict(),
        "train": {k: getattr(train_config, k) for k in train_config.__dataclass_fields__},
        "Lam": [float(f"{v:.12g}") for v in Lam.ravel()],
        "torch": torch.__version__.split("+")[0],
        "version": 1,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def chain_loss(model: GPT2, batch: prompts.Prompts, chain_train: int) -> torch.Tensor:
    """Mean over the chain's ŵ_1 … ŵ_c and the prompts of ‖ŵ_i − w‖² / d."""
    est = chain(model, batch.X, batch.y, chain_train)  # (b, c, d)
    w = batch.w.to(est.device, est.dtype)[:, None, :]
    return ((est - w) ** 2).mean()


def _lr_factor(t: int, steps: int) -> float:
    warm = max(1, steps // 20)
    if t < warm:
        return (t + 1) / warm
    p = (t - warm) / max(1, steps - warm)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))


def train(config: GPT2Config, train_config: TrainConfig, Lam, *, device: str = "auto",
          progress: bool = True, threads: int | None = 1) -> Trained:
    """Train a fresh :class:`GPT2` (no cache); deterministic on the CPU for a fixed configuration.

    On the CPU, training uses ``threads`` intra-op threads (see :func:`ttscale.gpt2.cpu_threads`;
    ``None`` keeps torch's setting).
    """
    Lam = checks.covariance(Lam, "Lam", d=config.d)
    tc = train_config
    dev = resolve_device(device)
    torch.manual_seed(tc.seed)
    model = GPT2(config).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: _lr_factor(t, tc.steps))
    losses = np.empty(tc.steps)
    start = time.perf_counter()
    steps = range(tc.steps)
    it = bar(steps, desc=f"GPT-2 n={tc.n_train} chain={tc.chain_train}") if progress else steps
    model.train()
    with cpu_threads(threads if dev.type == "cpu" else None):
        _loop(model, opt, sched, it, tc, Lam, dev, losses)
    model.eval()
    return Trained(model, losses, False, time.perf_counter() - start, None)


def _loop(model, opt, sched, it, tc, Lam, dev, losses):
    for t in it:
        batch = prompts.sample(Lam, tc.n_train, tc.batch, seed=tc.seed, stream="train", step=t,
                               dtype=torch.float32)
        batch = prompts.Prompts(*(a.to(dev) for a in batch))
        opt.zero_grad(set_to_none=True)
        loss = chain_loss(model, batch, tc.chain_train)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses[t] = loss.item()


def load_or_train(config: GPT2Config, train_config: TrainConfig, Lam, *, cache_dir=None, cache: bool = True,
                  device: str = "auto", progress: bool = True, threads: int | None = 1) -> Trained:
    """The trained model for this configuration: from ``cache_dir`` if stored there, else trained and stored.

    ``cache_dir=None`` (or ``""``) means :data:`DEFAULT_CACHE`; ``cache=False`` always
    trains and stores nothing. The stored file holds the weights, the loss curve and the
    training time, and loads onto ``device`` (a CUDA checkpoint loads on a CPU-only machine).
    Used in {ref}`sec-gpt2`.
    """
    dev = resolve_device(device)
    folder = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    path = folder / f"{cache_key(config, train_config, Lam)}.pt"
    if cache and path.is_file():
        blob = torch.load(path, map_location=dev, weights_only=False)
        model = GPT2(config).to(dev)
        model.load_state_dict(blob["state_dict"])
        model.eval()
        return Trained(model, np.asarray(blob["loss"]), True, float(blob["seconds"]), path)
    out = train(config, train_config, Lam, device=device, progress=progress, threads=threads)
    if not cache:
        return out
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"state_dict": out.model.state_dict(), "loss": out.loss, "seconds": out.seconds,
                "config": config.as_dict(), "train_config": train_config.__dict__}, tmp)
    tmp.replace(path)  # atomic: a concurrent reader never sees half a file
    return out._replace(path=path)

"""A GPT-2-style decoder for in-context weight prediction, and its test-time CoT rollout (torch).

The model reads the LSA's own tokens ({ref}`sec-intro`): one (x_i; y_i; 0_d; 0)
per example and one (0_d; 0; ŵ; 1) per estimate, a sequence of shape (batch, 2d+2, T).
A linear read-in maps each token to the residual width, a stack of pre-LayerNorm blocks
(causal softmax self-attention and a GELU MLP, no dropout; torch's own
:class:`torch.nn.TransformerEncoderLayer` with ``norm_first=True``) processes the
sequence, a final LayerNorm and a linear read-out map the **last position** to ŵ ∈ R^d.

Positions: the model has **no position embedding at all**. The examples of a prompt are
exchangeable, so their order carries no information, and the causal mask already tells an
estimate token which tokens came before it. A learned absolute position table would leave
every position beyond the training chain untrained, and the estimate then breaks at the
first unseen step (the "position trap" of {ref}`sec-gpt2`); without one, a test chain longer
than the training chain feeds the model nothing it has never been shown a kind of.

Test-time chain of thought (:func:`rollout`): run the model, append (0; 0; ŵ; 1) as a new
token, run again, k times, exactly as for the LSA (:func:`ttscale.lsa.rollout`).

Training (:func:`train`, :func:`load_or_train`).

Objective: for a prompt of length n, run an unrolled chain of ``chain_train`` model
applications (each estimate appended as the token (0; 0; ŵ; 1) before the next one) and
minimise the mean over the chain of E‖ŵ_i − w‖² / d. ``chain_train = 1`` is *direct*
training, the paper's LSA objective: then the model never sees a non-zero estimate token
and nothing teaches it how to read one ({ref}`sec-pseudo-newton`).

Optimiser: Adam (AdamW with weight decay 0), linear warm-up over the first 5% of steps then cosine decay to 10% of
``lr``, gradients clipped at norm 1. Prompts come from the ``train`` stream of ``seed``
(:func:`ttscale.prompts.sample`), the initial weights from ``torch.manual_seed(seed)``.

A trained model is stored under the ``cache_dir`` the caller names in a file named by a hash of the *full*
configuration (architecture, Λ, n, chain length, steps, batch, lr, seed, torch version),
so re-running a chapter with other test-time parameters (k, m_test, Σ) does not retrain,
and any change to training does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

import torch
from torch import nn

from . import checks, prompts
from .progress import bar
from .prompts import embed, estimate_token

__all__ = ["GPT2Config", "SCALES", "config_for", "GPT2", "resolve_device", "cpu_threads", "chain", "rollout",
           "TrainConfig", "Trained", "cache_key", "chain_loss", "train", "load_or_train"]


@dataclass(frozen=True)
class GPT2Config:
    """Architecture of :class:`GPT2`: feature dimension ``d`` and the decoder's size.

    ``n_layer`` pre-LN blocks of width ``width`` with ``n_head`` heads (``width`` must be a
    multiple of ``n_head``) and an MLP of width ``mlp_ratio * width``.
    """

    d: int
    n_layer: int = 3
    n_head: int = 4
    width: int = 64
    mlp_ratio: int = 4

    def __post_init__(self):
        checks.positive_int(self.d, "d")
        checks.positive_int(self.n_layer, "n_layer")
        checks.positive_int(self.n_head, "n_head")
        checks.positive_int(self.width, "width")
        checks.positive_int(self.mlp_ratio, "mlp_ratio")
        if self.width % self.n_head:
            raise ValueError(f"width must be a multiple of n_head, got width = {self.width} and n_head = {self.n_head}")

    def as_dict(self) -> dict:
        return asdict(self)


#: Named sizes. ``paper`` is the paper's GPT-2 (12 layers, 8 heads, width 256); ``small``
#: trains on a 2-core CPU in about a minute per model; ``smoke`` only checks that things run.
SCALES = {
    "smoke": dict(n_layer=1, n_head=2, width=16),
    "small": dict(n_layer=3, n_head=4, width=64),
    "paper": dict(n_layer=12, n_head=8, width=256),
}


def config_for(d: int, scale: str = "small", **overrides) -> GPT2Config:
    """The :class:`GPT2Config` of a named ``scale`` (see :data:`SCALES`), with overrides.

    Overrides equal to ``None`` are ignored, so a chapter can pass its optional knobs through.
    """
    checks.one_of(scale, SCALES, "scale")
    kw = dict(SCALES[scale])
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return GPT2Config(d=d, **kw)


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; ``"cpu"``/``"cuda"`` as asked."""
    checks.one_of(device, ("auto", "cpu", "cuda"), "device")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device must be 'auto' or 'cpu' on a machine without CUDA, got 'cuda'")
    return torch.device(device)


@contextlib.contextmanager
def cpu_threads(n: int | None = 1):
    """Run the block with ``n`` intra-op CPU threads (``None``: leave torch's setting alone).

    The decoders of this book are small: each operation is too short to share between
    threads, and on a busy 2-core machine a second thread mostly waits for the first (measured:
    0.18 s per training step with one thread, 0.97 s with two, under a load of about 6).
    """
    if n is None:
        yield
        return
    n = checks.positive_int(n, "threads")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class GPT2(nn.Module):
    """Decoder-only transformer: read-in → pre-LN causal blocks → LayerNorm → read-out.

    ``forward(Z)`` takes tokens (batch, 2d+2, T) (the layout of :func:`ttscale.prompts.embed`)
    and returns the estimate read out at the last position, (batch, d). ``all_positions=True``
    returns the read-out at every position, (batch, T, d).
    """

    def __init__(self, config: GPT2Config):
        super().__init__()
        if not isinstance(config, GPT2Config):
            raise ValueError(f"config must be a GPT2Config, got {type(config).__name__}")
        self.config = config
        c = config
        self.read_in = nn.Linear(2 * c.d + 2, c.width)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                c.width, c.n_head, dim_feedforward=c.mlp_ratio * c.width, dropout=0.0,
                activation="gelu", batch_first=True, norm_first=True,
            )
            for _ in range(c.n_layer)
        )
        self.ln_f = nn.LayerNorm(c.width)
        self.read_out = nn.Linear(c.width, c.d)

    @property
    def d(self) -> int:
        return self.config.d

    def forward(self, Z: torch.Tensor, all_positions: bool = False) -> torch.Tensor:
        if Z.ndim != 3 or Z.shape[1] != 2 * self.d + 2:
            raise ValueError(f"Z must have shape (batch, 2d+2 = {2 * self.d + 2}, T), got {tuple(Z.shape)}")
        T = Z.shape[2]
        h = self.read_in(Z.transpose(1, 2))  # (batch, T, width); no position embedding
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=h.device, dtype=h.dtype)
        for block in self.blocks:
            h = block(h, src_mask=mask, is_causal=True)
        h = self.ln_f(h if all_positions else h[:, -1])
        return self.read_out(h)


def _dtype(model: GPT2) -> torch.dtype:
    return model.read_in.weight.dtype


def _device(model: GPT2) -> torch.device:
    return model.read_in.weight.device


def _prompt(model: GPT2, X, y, k: int):
    """Check a batch of prompts for the decoder (tensors or numpy arrays, finite) and the chain's length."""
    X = checks.tensor(X, "X", ndim=3)
    y = checks.tensor(y, "y", ndim=2, dtype=X.dtype)
    if X.shape[1] != model.d or y.shape != (X.shape[0], X.shape[2]):
        raise ValueError(f"X must have shape (batch, d = {model.d}, m) and y (batch, m), got "
                         f"{tuple(X.shape)} and {tuple(y.shape)}")
    checks.size(min(X.shape[0], 1024) * model.config.n_head * (X.shape[2] + k + 1) ** 2, "k",
                "the attention scores (chunk x heads x tokens²) of the chain's longest sequence")
    return X, y


def chain(model: GPT2, X: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """k model applications, each appending its estimate as a token; returns ŵ_1 … ŵ_k, (batch, k, d).

    Differentiable: gradients flow through every fed-back estimate (the unrolled chain used
    in training). :func:`rollout` is the same under ``no_grad`` with ŵ_0 = 0 prepended.
    """
    k = checks.positive_int(k, "k")
    X, y = _prompt(model, X, y, k)
    Z = embed(X.to(_device(model), _dtype(model)), y.to(_device(model), _dtype(model)))
    out = []
    for _ in range(k):  # sequential: each application reads the previous estimate
        w_hat = model(Z)
        out.append(w_hat)
        Z = torch.cat([Z, estimate_token(w_hat)], dim=2)
    return torch.stack(out, dim=1)


@torch.no_grad()
def rollout(model: GPT2, X: torch.Tensor, y: torch.Tensor, k: int, *, chunk: int = 1024,
            threads: int | None = 1) -> torch.Tensor:
    """Test-time chain of thought: ŵ_0 = 0, ŵ_1 … ŵ_k as float64 on the CPU, (batch, k+1, d).

    Each application runs the decoder on the whole current sequence and appends its
    estimate as the token (0; 0; ŵ; 1). Prompts are processed ``chunk`` at a time to bound
    memory; ``threads`` CPU threads are used (see :func:`cpu_threads`).
    """
    k = checks.nonnegative_int(k, "k")
    chunk = checks.positive_int(chunk, "chunk")
    X, y = _prompt(model, X, y, k)
    was_training = model.training
    model.eval()
    parts = []
    try:
        with cpu_threads(threads if _device(model).type == "cpu" else None):
            for s in range(0, X.shape[0], chunk):
                Xc, yc = X[s:s + chunk], y[s:s + chunk]
                w0 = torch.zeros(Xc.shape[0], 1, model.d, dtype=torch.float64)
                if k == 0:
                    parts.append(w0)
                    continue
                est = chain(model, Xc, yc, k).to("cpu", torch.float64)
                parts.append(torch.cat([w0, est], dim=1))
        return torch.cat(parts, dim=0)
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------- training and the checkpoint cache
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

    On the CPU, training uses ``threads`` intra-op threads (see :func:`cpu_threads`;
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

    ``cache=True`` needs a ``cache_dir`` (the chapter names one; the library guesses no paths);
    ``cache=False`` always trains and stores nothing. The stored file holds the weights, the loss curve and the
    training time, and loads onto ``device`` (a CUDA checkpoint loads on a CPU-only machine).
    """
    dev = resolve_device(device)
    if not cache:
        return train(config, train_config, Lam, device=device, progress=progress, threads=threads)
    if not cache_dir:
        raise ValueError("cache_dir must name a folder for the trained models when cache is True")
    folder = Path(cache_dir)
    path = folder / f"{cache_key(config, train_config, Lam)}.pt"
    if path.is_file():
        blob = torch.load(path, map_location=dev, weights_only=False)
        model = GPT2(config).to(dev)
        model.load_state_dict(blob["state_dict"])
        model.eval()
        return Trained(model, np.asarray(blob["loss"]), True, float(blob["seconds"]), path)
    out = train(config, train_config, Lam, device=device, progress=progress, threads=threads)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"state_dict": out.model.state_dict(), "loss": out.loss, "seconds": out.seconds,
                "config": config.as_dict(), "train_config": train_config.__dict__}, tmp)
    tmp.replace(path)  # atomic: a concurrent reader never sees half a file
    return out._replace(path=path)

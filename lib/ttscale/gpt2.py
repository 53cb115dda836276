"""A GPT-2-style decoder for in-context weight prediction, and its test-time CoT rollout (torch).

The model reads the LSA's own tokens ({ref}`sec-intro`): one (x_i; y_i; 0_d; 0)
per example and one (0_d; 0; ŵ; 1) per estimate, a sequence of shape (batch, 2d+2, T).
A linear read-in maps each token to the residual width, a stack of pre-LayerNorm blocks
(causal softmax self-attention and a GELU MLP, no dropout; the parameters are those of torch's
:class:`torch.nn.TransformerEncoderLayer` with ``norm_first=True``) processes the
sequence, a final LayerNorm and a linear read-out map the **last position** to ŵ ∈ R^d.

Options from the GPT-2 in-context-learning literature (:class:`GPT2Config`), all off by default:

* ``positions = "learned"``: a learned absolute position table of ``max_len`` rows added after the
  read-in (GPT-2's own). Default ``"none"``: the examples of a prompt are exchangeable and the causal
  mask already tells an estimate token which tokens came before it.
* ``tokens = "separate"``: each example becomes two tokens, (x_i; 0; 0_d; 0) then (0_d; y_i; 0_d; 0),
  the zero-padded x and y tokens of Garg et al. (2022). Without positions the model then cannot tell
  which y belongs to which x except through the causal order.
* ``init = "gpt2"``: GPT-2's initialisation, every weight N(0, 0.02²), biases zero, the residual
  projections (attention output and the MLP's second layer) N(0, (0.02/√(2L))²).

Test-time chain of thought (:func:`rollout`): run the model, append (0; 0; ŵ; 1) as a new
token, run again, k times, exactly as for the LSA (:func:`ttscale.lsa.rollout`). The rollout keeps
a key-value cache, so each application processes one new token (O(k) work instead of O(k²)); the
unrolled training chain (:func:`chain`, and the stacked trainer's own copy of the decoder) reuses
the prompt's keys and values the same way.
:meth:`GPT2.reference_forward` recomputes the whole sequence through torch's own
``TransformerEncoderLayer.forward``: the tests' independent oracle for the cached path.

Training (:func:`train`, :func:`load_or_train`).

Objective: for a prompt of length n, run an unrolled chain of model applications (each estimate
appended as the token (0; 0; ŵ; 1) before the next one) and minimise the mean of E‖ŵ_i − w‖² / d
over the chain's last ``loss_window`` estimates (0: all of them). ``chain_sampling = "fixed"`` runs
``chain_train`` applications on every batch; ``"random"`` draws the length uniformly from
1 … ``chain_train`` per batch, from the step alone, so training covers every chain length up to
``chain_train`` and every model sees the same sequence of lengths (common random numbers: seeds
differ in their initial weights and prompts, and a skewed model and its control are paired).
The applications before the window run without gradients (truncated backpropagation), but the
prompt's keys and values are trained through every application in the window.
``chain_train = 1`` is *direct* training, the paper's LSA objective: then the model never sees a non-zero estimate token and nothing teaches it how to read one
({ref}`sec-pseudo-newton`). ``prefix_loss = True`` adds the loss of the read-out at every example
token (the estimate from the first i examples, Garg et al.'s loss on every prefix).
``curriculum = True`` grows the active dimension from ⌈d/4⌉ to d and the prompt length in proportion
over the first half of training (the coordinates beyond the active dimension are zero in x and w).

Optimiser: Adam (the arithmetic of torch's AdamW with weight decay 0, :func:`ttscale.training.adam_step`),
linear warm-up over the first 5% of steps then cosine decay to 10% of ``lr``, gradients clipped at
norm 1 (torch's ``clip_grad_norm_`` arithmetic), model by model. Prompts come from the ``train`` stream of ``seed``
(:func:`ttscale.prompts.sample`), the initial weights from ``torch.manual_seed(seed)``.

A trained model is stored under the ``cache_dir`` the caller names in a file named by a hash of the *full*
configuration (architecture, Λ, n, chain, steps, batch, lr, seed, torch version),
so re-running a chapter with other test-time parameters (k, m_test, Σ) does not retrain,
and any change to training does. :func:`train_stack` trains models that differ only in seed and Λ
together, each bit for bit as alone; :func:`train_many` trains such stacks in parallel processes,
one intra-op thread each.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing as mp
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

import torch
import torch.nn.functional as F
from torch import nn

from . import checks, prompts, training
from .progress import bar
from .prompts import embed, estimate_token

__all__ = ["GPT2Config", "SCALES", "config_for", "GPT2", "resolve_device", "cpu_threads", "chain", "rollout",
           "rollout_uncached", "TrainConfig", "Trained", "cache_key", "chain_loss", "train", "load_or_train",
           "train_many", "train_stack", "state_hash"]

POSITIONS = ("none", "learned")
TOKENS = ("joint", "separate")
INITS = ("torch", "gpt2")


@dataclass(frozen=True)
class GPT2Config:
    """Architecture of :class:`GPT2`: feature dimension ``d`` and the decoder's size and options.

    ``n_layer`` pre-LN blocks of width ``width`` with ``n_head`` heads (``width`` must be a
    multiple of ``n_head``) and an MLP of width ``mlp_ratio * width``. ``positions``, ``max_len``,
    ``tokens`` and ``init`` are the literature's options (module docstring).
    """

    d: int
    n_layer: int = 3
    n_head: int = 4
    width: int = 64
    mlp_ratio: int = 4
    positions: str = "none"
    max_len: int = 0
    tokens: str = "joint"
    init: str = "torch"

    def __post_init__(self):
        checks.positive_int(self.d, "d")
        checks.positive_int(self.n_layer, "n_layer")
        checks.positive_int(self.n_head, "n_head")
        checks.positive_int(self.width, "width")
        checks.positive_int(self.mlp_ratio, "mlp_ratio")
        if self.width % self.n_head:
            raise ValueError(f"width must be a multiple of n_head, got width = {self.width} and n_head = {self.n_head}")
        checks.one_of(self.positions, POSITIONS, "positions")
        checks.one_of(self.tokens, TOKENS, "tokens")
        checks.one_of(self.init, INITS, "init")
        checks.nonnegative_int(self.max_len, "max_len")
        if self.positions == "learned" and self.max_len < 2:
            raise ValueError(f"max_len must be an integer >= 2 when positions is 'learned', got {self.max_len}")

    def as_dict(self) -> dict:
        return asdict(self)


#: Named sizes. ``paper`` is the paper's GPT-2 (12 layers, 8 heads, width 256); ``small``
#: trains on a 2-core CPU in seconds per model; ``medium`` is the stored larger run's size;
#: ``smoke`` only checks that things run.
SCALES = {
    "smoke": dict(n_layer=1, n_head=2, width=16),
    "small": dict(n_layer=3, n_head=4, width=64),
    "medium": dict(n_layer=4, n_head=4, width=128),
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
    Parallelism comes from independent models in separate processes (:func:`train_many`).
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


def _extend_cache(kv, k, v):
    """The cached keys and values with the new tokens' appended, built with gradients enabled.

    In an application run without gradients (before the loss window) the new tokens' keys and
    values are constants, but the cache must keep its history: the prompt's keys and values are
    trained through every later application that attends to them. Concatenating under ``no_grad``
    would silently cut that path.
    """
    with torch.enable_grad():
        return torch.cat([kv[0], k], dim=2), torch.cat([kv[1], v], dim=2)


def _attend(q, k, v, kv):
    """Causal attention of the new tokens' queries q (B, H, t, dh) to the cache kv and themselves.

    Returns the attention output and the longer cache (keys, values). One new token attends to
    everything before it; a whole prompt gets the causal mask; several new tokens after a cache
    get the causal mask shifted by the cache's length.
    """
    if kv is not None:
        k, v = _extend_cache(kv, k, v)
    t, T = q.shape[2], k.shape[2]
    if t == 1:
        o = F.scaled_dot_product_attention(q, k, v)
    elif kv is None:
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        mask = torch.ones(t, T, dtype=torch.bool, device=q.device).tril(T - t)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return o, k, v


class GPT2(nn.Module):
    """Decoder-only transformer: read-in → pre-LN causal blocks → LayerNorm → read-out.

    ``forward(Z)`` takes tokens (batch, 2d+2, T) (the layout of :func:`ttscale.prompts.embed`)
    and returns the estimate read out at the last position, (batch, d). ``all_positions=True``
    returns the read-out at every position of the model's own sequence, (batch, T', d) (T' = T,
    or T plus the number of examples for separate tokens). :meth:`start` and :meth:`extend` are the
    cached path: the prompt once, then one estimate token at a time.
    """

    def __init__(self, config: GPT2Config):
        super().__init__()
        if not isinstance(config, GPT2Config):
            raise ValueError(f"config must be a GPT2Config, got {type(config).__name__}")
        self.config = config
        c = config
        self.read_in = nn.Linear(2 * c.d + 2, c.width)
        if c.positions == "learned":
            self.pos = nn.Embedding(c.max_len, c.width)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                c.width, c.n_head, dim_feedforward=c.mlp_ratio * c.width, dropout=0.0,
                activation="gelu", batch_first=True, norm_first=True,
            )
            for _ in range(c.n_layer)
        )
        self.ln_f = nn.LayerNorm(c.width)
        self.read_out = nn.Linear(c.width, c.d)
        if c.init == "gpt2":
            self._gpt2_init()

    def _gpt2_init(self):
        std = 0.02
        resid = std / math.sqrt(2 * self.config.n_layer)
        for mod in self.modules():
            if isinstance(mod, nn.Linear):
                nn.init.normal_(mod.weight, 0.0, std)
                nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.Embedding):
                nn.init.normal_(mod.weight, 0.0, std)
        for block in self.blocks:
            nn.init.normal_(block.self_attn.in_proj_weight, 0.0, std)
            nn.init.zeros_(block.self_attn.in_proj_bias)
            nn.init.normal_(block.self_attn.out_proj.weight, 0.0, resid)
            nn.init.normal_(block.linear2.weight, 0.0, resid)

    @property
    def d(self) -> int:
        return self.config.d

    # ---- tokens
    def _sequence(self, Z: torch.Tensor) -> torch.Tensor:
        """(batch, 2d+2, T) in the embed layout → the model's token sequence (batch, T', 2d+2)."""
        if Z.ndim != 3 or Z.shape[1] != 2 * self.d + 2:
            raise ValueError(f"Z must have shape (batch, 2d+2 = {2 * self.d + 2}, T), got {tuple(Z.shape)}")
        seq = Z.transpose(1, 2)
        if self.config.tokens == "joint":
            return seq
        d = self.d
        is_example = Z[0, -1] == 0  # examples come first, estimate tokens carry the flag 1
        n = int(is_example.sum())
        ex, est = seq[:, :n], seq[:, n:]
        xs = torch.cat([ex[..., :d], torch.zeros_like(ex[..., d:])], dim=-1)
        ys = torch.cat([torch.zeros_like(ex[..., :d]), ex[..., d:d + 1], torch.zeros_like(ex[..., d + 1:])], dim=-1)
        pairs = torch.stack([xs, ys], dim=2).reshape(ex.shape[0], 2 * n, ex.shape[2])
        return torch.cat([pairs, est], dim=1)

    def _embed(self, seq: torch.Tensor, offset: int) -> torch.Tensor:
        h = self.read_in(seq)
        if self.config.positions == "learned":
            T = seq.shape[1]
            if offset + T > self.config.max_len:
                raise ValueError(f"k is too large for the learned position table: the sequence needs "
                                 f"{offset + T} positions, max_len is {self.config.max_len}")
            h = h + self.pos.weight[offset:offset + T]
        return h

    # ---- the blocks, with a key-value cache
    def _block(self, block: nn.TransformerEncoderLayer, h: torch.Tensor, kv):
        """One pre-LN block on the new tokens h (b, t, W), attending to the cached (K, V) and themselves."""
        attn = block.self_attn
        H = attn.num_heads
        b, t, W = h.shape
        a = block.norm1(h)
        q, k, v = F.linear(a, attn.in_proj_weight, attn.in_proj_bias).split(W, dim=-1)
        q, k, v = (z.view(b, t, H, W // H).transpose(1, 2) for z in (q, k, v))
        o, k, v = _attend(q, k, v, kv)
        h = h + attn.out_proj(o.transpose(1, 2).reshape(b, t, W))
        h = h + block.linear2(F.gelu(block.linear1(block.norm2(h))))
        return h, (k, v)

    def _run(self, seq: torch.Tensor, cache):
        offset = 0 if cache is None else cache[0][0].shape[2]
        h = self._embed(seq, offset)
        new = []
        for i, block in enumerate(self.blocks):
            h, kv = self._block(block, h, None if cache is None else cache[i])
            new.append(kv)
        return h, new

    def start(self, Z: torch.Tensor):
        """Run the prompt Z (embed layout, ending with its estimate token); the estimate at the last position and the cache."""
        h, cache = self._run(self._sequence(Z), None)
        return self.read_out(self.ln_f(h[:, -1])), cache

    def extend(self, w_hat: torch.Tensor, cache):
        """Append the token (0; 0; ŵ; 1) to a cached sequence; the next estimate and the longer cache."""
        h, cache = self._run(estimate_token(w_hat).transpose(1, 2), cache)
        return self.read_out(self.ln_f(h[:, -1])), cache

    def forward(self, Z: torch.Tensor, all_positions: bool = False) -> torch.Tensor:
        h, _ = self._run(self._sequence(Z), None)
        h = self.ln_f(h if all_positions else h[:, -1])
        return self.read_out(h)

    def reference_forward(self, Z: torch.Tensor) -> torch.Tensor:
        """The last position's estimate through torch's own ``TransformerEncoderLayer.forward``, uncached (an oracle)."""
        seq = self._sequence(Z)
        h = self._embed(seq, 0)
        T = h.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=h.device, dtype=h.dtype)
        for block in self.blocks:
            h = block(h, src_mask=mask, is_causal=True)
        return self.read_out(self.ln_f(h[:, -1]))


def _dtype(model: GPT2) -> torch.dtype:
    return model.read_in.weight.dtype


def _device(model: GPT2) -> torch.device:
    return model.read_in.weight.device


def _prompt(model: GPT2, X, y, k: int):
    """Check a batch of prompts for the decoder (tensors or numpy arrays, finite) and the chain's length."""
    return _prompt_for(model.config, X, y, k)


def _prompt_for(config: GPT2Config, X, y, k: int):
    X = checks.tensor(X, "X", ndim=3)
    y = checks.tensor(y, "y", ndim=2, dtype=X.dtype)
    if X.shape[1] != config.d or y.shape != (X.shape[0], X.shape[2]):
        raise ValueError(f"X must have shape (batch, d = {config.d}, m) and y (batch, m), got "
                         f"{tuple(X.shape)} and {tuple(y.shape)}")
    per = 2 if config.tokens == "separate" else 1
    T = per * X.shape[2] + k + 1
    checks.size(min(X.shape[0], 1024) * config.n_head * T ** 2, "k",
                "the attention scores (chunk x heads x tokens²) of the chain's longest sequence")
    if config.positions == "learned" and T - 1 > config.max_len:
        raise ValueError(f"k is too large for the learned position table: the chain needs {T - 1} positions, "
                         f"max_len is {config.max_len}")
    return X, y


def _estimates(model: GPT2, X: torch.Tensor, y: torch.Tensor, k: int, all_positions: bool = False,
               grad_from: int = 0):
    """ŵ_1 … ŵ_k through the cached path, (batch, k, d); with ``all_positions`` also the read-out at the prompt's tokens.

    Applications 2 … ``grad_from`` run without gradients (truncated backpropagation: only the
    later ones, and the prompt's keys and values, are trained through).
    """
    Z = embed(X.to(_device(model), _dtype(model)), y.to(_device(model), _dtype(model)))
    seq = model._sequence(Z)
    h, cache = model._run(seq, None)
    w_hat = model.read_out(model.ln_f(h[:, -1]))
    out = [w_hat]
    for i in range(1, k):  # sequential: each application reads the previous estimate
        with torch.set_grad_enabled(torch.is_grad_enabled() and i >= grad_from):
            w_hat, cache = model.extend(w_hat if i >= grad_from else w_hat.detach(), cache)
        out.append(w_hat)
    est = torch.stack(out, dim=1)
    if all_positions:
        return est, model.read_out(model.ln_f(h[:, :-1]))
    return est


def chain(model: GPT2, X: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """k model applications, each appending its estimate as a token; returns ŵ_1 … ŵ_k, (batch, k, d).

    Differentiable: gradients flow through every fed-back estimate (the unrolled chain used
    in training). The prompt's keys and values are computed once and reused by every later
    application. :func:`rollout` is the same under ``no_grad`` with ŵ_0 = 0 prepended.
    """
    k = checks.positive_int(k, "k")
    X, y = _prompt(model, X, y, k)
    return _estimates(model, X, y, k)


def _rollout(model, X, y, k, chunk, threads, step_fn):
    k = checks.nonnegative_int(k, "k")
    chunk = checks.positive_int(chunk, "chunk")
    X, y = _prompt(model, X, y, k)
    was_training = model.training
    model.eval()
    parts = []
    try:
        with torch.no_grad(), cpu_threads(threads if _device(model).type == "cpu" else None):
            for s in range(0, X.shape[0], chunk):
                Xc, yc = X[s:s + chunk], y[s:s + chunk]
                w0 = torch.zeros(Xc.shape[0], 1, model.d, dtype=torch.float64)
                if k == 0:
                    parts.append(w0)
                    continue
                est = step_fn(model, Xc, yc, k).to("cpu", torch.float64)
                parts.append(torch.cat([w0, est], dim=1))
        return torch.cat(parts, dim=0)
    finally:
        model.train(was_training)


def rollout(model: GPT2, X: torch.Tensor, y: torch.Tensor, k: int, *, chunk: int = 1024,
            threads: int | None = 1) -> torch.Tensor:
    """Test-time chain of thought: ŵ_0 = 0, ŵ_1 … ŵ_k as float64 on the CPU, (batch, k+1, d).

    Each application appends its estimate as the token (0; 0; ŵ; 1) and runs the decoder on that
    one new token against the cached keys and values of the sequence so far. Prompts are processed
    ``chunk`` at a time to bound memory; ``threads`` CPU threads are used (see :func:`cpu_threads`).
    """
    return _rollout(model, X, y, k, chunk, threads, _estimates)


def _uncached(model, X, y, k):
    Z = embed(X.to(_device(model), _dtype(model)), y.to(_device(model), _dtype(model)))
    out = []
    for _ in range(k):
        w_hat = model.reference_forward(Z)
        out.append(w_hat)
        Z = torch.cat([Z, estimate_token(w_hat)], dim=2)
    return torch.stack(out, dim=1)


def rollout_uncached(model: GPT2, X: torch.Tensor, y: torch.Tensor, k: int, *, chunk: int = 1024,
                     threads: int | None = 1) -> torch.Tensor:
    """:func:`rollout` recomputing the whole sequence through torch's module at every step (O(k²); the oracle)."""
    return _rollout(model, X, y, k, chunk, threads, _uncached)


# --------------------------------------------------------------------------- training and the checkpoint cache
@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model besides its architecture (module docstring)."""

    n_train: int
    chain_train: int = 3
    steps: int = 1000
    batch: int = 64
    lr: float = 1e-3
    seed: int = 0
    chain_sampling: str = "fixed"
    loss_window: int = 0
    prefix_loss: bool = False
    curriculum: bool = False

    def __post_init__(self):
        checks.positive_int(self.n_train, "n_train")
        checks.positive_int(self.chain_train, "chain_train")
        checks.nonnegative_int(self.steps, "train_steps")
        checks.positive_int(self.batch, "batch")
        checks.positive_real(self.lr, "lr")
        checks.seed(self.seed)
        checks.one_of(self.chain_sampling, ("fixed", "random"), "chain_sampling")
        checks.nonnegative_int(self.loss_window, "loss_window")
        for name in ("prefix_loss", "curriculum"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")


class Trained(NamedTuple):
    """A trained model, its per-step training loss, whether it came from the cache, the training time, its file.

    ``seconds`` is the wall-clock training time; for a model trained in a stack of K, the stack's time / K.

    ``estimates`` is the test-time rollout :func:`train_many` computed in the worker when asked (else None).
    """

    model: GPT2
    loss: np.ndarray
    cached: bool
    seconds: float
    path: Path | None
    estimates: torch.Tensor | None = None


def cache_key(config: GPT2Config, train_config: TrainConfig, Lam) -> str:
    """A short hex hash of the full configuration (Λ's entries included, to 12 significant digits)."""
    Lam = checks.covariance(Lam, "Lam", d=config.d)
    payload = {
        "model": config.as_dict(),
        "train": {k: getattr(train_config, k) for k in train_config.__dataclass_fields__},
        "Lam": [float(f"{v:.12g}") for v in Lam.ravel()],
        "torch": torch.__version__.split("+")[0],
        "version": 3,   # 3: models trained by the stacked trainer (train_stack)
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def state_hash(model: GPT2) -> str:
    """SHA-256 of a model's weights (names, shapes and float32 bytes in order): a checkpoint's fingerprint."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def chain_loss(model: GPT2, batch: prompts.Prompts, chain_train: int, loss_window: int = 0,
               prefix_loss: bool = False) -> torch.Tensor:
    """Mean over the chain's last ``loss_window`` estimates (0: all of ŵ_1 … ŵ_c) and the prompts of ‖ŵ_i − w‖² / d.

    With a window, the applications before it run without gradients (truncated backpropagation
    through the chain, as for looped transformers); their estimates still feed the window.

    ``prefix_loss`` adds the same mean over the read-outs at the prompt's example tokens.
    """
    chain_train = checks.positive_int(chain_train, "chain_train")
    loss_window = checks.nonnegative_int(loss_window, "loss_window")
    X, y = _prompt(model, batch.X, batch.y, chain_train)
    grad_from = chain_train - loss_window if loss_window else 0
    out = _estimates(model, X, y, chain_train, all_positions=prefix_loss, grad_from=grad_from)
    est, pre = out if prefix_loss else (out, None)
    if loss_window:
        est = est[:, -loss_window:]
    w = batch.w.to(est.device, est.dtype)[:, None, :]
    loss = ((est - w) ** 2).mean()
    if prefix_loss:
        loss = loss + ((pre - w) ** 2).mean()
    return loss


def _lr_factor(t: int, steps: int) -> float:
    warm = max(1, steps // 20)
    if t < warm:
        return (t + 1) / warm
    p = (t - warm) / max(1, steps - warm)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))


def _chain_length(tc: TrainConfig, t: int) -> int:
    if tc.chain_sampling == "fixed":
        return tc.chain_train
    g = np.random.default_rng([7, t])   # from the step alone: every model sees the same chain lengths
    return int(g.integers(1, tc.chain_train + 1))


def _curriculum(tc: TrainConfig, d: int, t: int) -> tuple[int, int]:
    """(active dimension, prompt length) at step t."""
    if not tc.curriculum:
        return d, tc.n_train
    f = min(1.0, t / max(1, tc.steps // 2))
    d0 = max(1, math.ceil(d / 4))
    d_t = int(round(d0 + f * (d - d0)))
    return d_t, max(1, int(round(tc.n_train * d_t / d)))


def _check_positions(config: GPT2Config, tc: TrainConfig):
    """A learned position table must cover the training chain: n_train examples and chain_train estimates."""
    if config.positions == "learned":
        need = (2 if config.tokens == "separate" else 1) * tc.n_train + tc.chain_train
        if need > config.max_len:
            raise ValueError(f"max_len must cover the training chain: n_train and chain_train need {need} "
                             f"positions, max_len is {config.max_len}")


def train(config: GPT2Config, train_config: TrainConfig, Lam, *, device: str = "auto",
          progress: bool = True, threads: int | None = 1, stop_after: int | None = None) -> Trained:
    """Train a fresh :class:`GPT2` (no cache); deterministic on the CPU for a fixed configuration.

    On the CPU, training uses ``threads`` intra-op threads (see :func:`cpu_threads`;
    ``None`` keeps torch's setting). ``stop_after`` runs only the first steps of the same schedule
    (its loss curve is then a prefix of the full run's; used to check stored runs). The arithmetic
    is that of a stack of one (:func:`train_stack`), so a model trained alone equals the same
    model trained in any stack, bit for bit.
    """
    return train_stack([(config, train_config, Lam)], device=device, progress=progress, threads=threads,
                       stop_after=stop_after)[0]


def train_stack(jobs, *, device: str = "auto", progress: bool = True, threads: int | None = 1,
                stop_after: int | None = None) -> list[Trained]:
    """Train the models ``jobs = [(config, train_config, Lam), …]`` together, as one stack (next section).

    Every job must have the same architecture and training settings except the seed and Λ (the
    chain, its sampling and loss window, n, steps, batch, learning rate, prefix loss, curriculum).
    Each result equals :func:`train` of that job alone, bit for bit; ``seconds`` is the stack's
    time divided by its size.
    """
    jobs = list(jobs)
    if not jobs:
        raise ValueError("jobs must hold at least one (config, train_config, Lam)")
    checked = []
    for i, job in enumerate(jobs):
        if not (isinstance(job, tuple) and len(job) == 3 and isinstance(job[0], GPT2Config)
                and isinstance(job[1], TrainConfig)):
            raise ValueError(f"each job must be a tuple (GPT2Config, TrainConfig, Lam); job {i} is not")
        c, tc, L = job
        L = checks.covariance(L, "Lam", d=c.d)
        _check_positions(c, tc)
        checked.append((c, tc, L))
    keys = {_stack_key(c, tc) for c, tc, _ in checked}
    if len(keys) > 1:
        raise ValueError("jobs of one stack must share the architecture and every training setting but the "
                         "seed, and differ only in seed and Lam (n_train, chain_train, chain_sampling, loss_window, "
                         "steps, batch, lr, prefix_loss and curriculum must be equal)")
    if stop_after is not None:
        stop_after = checks.nonnegative_int(stop_after, "stop_after")
    dev = resolve_device(device)
    config = checked[0][0]
    with cpu_threads(threads if dev.type == "cpu" else None):
        out = _train_stack(config, [tc for _, tc, _ in checked], [L for _, _, L in checked], dev,
                           progress=progress, stop_after=stop_after)
    return [Trained(m, loss, False, seconds, None) for m, loss, seconds in out]


# --------------------------------------------------------------------------- several models trained as one stack
# The book's decoders are so small that a training step is dominated by the fixed cost of each
# kernel call, not by arithmetic (measured: 1 000 kernel calls of a few microseconds of work each per
# chain application). K decoders of one architecture trained on prompts of one length are therefore
# trained together: their parameters are stacked along a leading axis of size K and each layer is one
# batched matrix product for all K. The models stay independent: each has its own prompts, loss,
# gradient clipping and Adam state, and the arithmetic on model j's slice is the same whatever else is
# in the stack (batched products, row-wise reductions and element-wise operations act slice by slice;
# tested bit for bit), so a model trained in a stack of K equals the same model trained alone, and the
# checkpoint cache stays keyed by one model's configuration.

def _stack_key(config: GPT2Config, tc: TrainConfig) -> tuple:
    """Models with equal keys share a stack: everything but the seed and Λ is equal, so every step
    runs the same chain length and loss window for all of them (:func:`_chain_length` draws the
    length from the step alone)."""
    return config, replace(tc, seed=0)


def _s_linear(P, weight, bias, h):
    """y = h Wᵀ + b for each model: h (K, …, in) → (K, …, out)."""
    K, shape = h.shape[0], h.shape[1:-1]
    out = torch.baddbmm(P[bias].unsqueeze(1), h.reshape(K, -1, h.shape[-1]), P[weight].mT)
    return out.view(K, *shape, out.shape[-1])


def _s_norm(P, name, h):
    """LayerNorm (ε = 1e-5, torch's default) with each model's own gain and bias."""
    view = (h.shape[0],) + (1,) * (h.ndim - 2) + (h.shape[-1],)
    return torch.addcmul(P[name + ".bias"].view(view), F.layer_norm(h, h.shape[-1:]), P[name + ".weight"].view(view))


def _s_block(P, i: int, H: int, h, kv):
    """Block i of every model on the new tokens h (K, b, t, W), against the cached keys and values kv."""
    pre = f"blocks.{i}."
    K, b, t, W = h.shape
    a = _s_norm(P, pre + "norm1", h)
    qkv = _s_linear(P, pre + "self_attn.in_proj_weight", pre + "self_attn.in_proj_bias", a)
    q, k, v = qkv.view(K * b, t, 3, H, W // H).permute(2, 0, 3, 1, 4)   # each (K·b, H, t, W/H)
    o, k, v = _attend(q, k, v, kv)
    o = o.transpose(1, 2).reshape(K, b, t, W)
    h = h + _s_linear(P, pre + "self_attn.out_proj.weight", pre + "self_attn.out_proj.bias", o)
    m = F.gelu(_s_linear(P, pre + "linear1.weight", pre + "linear1.bias", _s_norm(P, pre + "norm2", h)))
    return h + _s_linear(P, pre + "linear2.weight", pre + "linear2.bias", m), (k, v)


def _s_run(P, config: GPT2Config, seq, cache):
    """The stacked decoders on new tokens seq (K, b, t, 2d+2); the hidden states and the longer cache."""
    offset = 0 if cache is None else cache[0][0].shape[2]
    h = _s_linear(P, "read_in.weight", "read_in.bias", seq)
    if config.positions == "learned":
        h = h + P["pos.weight"][:, None, offset:offset + seq.shape[2]]
    new = []
    for i in range(config.n_layer):
        h, kv = _s_block(P, i, config.n_head, h, None if cache is None else cache[i])
        new.append(kv)
    return h, new


def _s_read(P, h):
    return _s_linear(P, "read_out.weight", "read_out.bias", _s_norm(P, "ln_f", h))


def _s_losses(P, template: GPT2, batches, chain_train: int, loss_window: int, prefix_loss: bool):
    """Each model's :func:`chain_loss` on its own batch, computed for the whole stack at once: (K,).

    The same chain for every model: ``chain_train`` applications, the loss on the last
    ``loss_window`` (0: all), the applications before the window without gradients.
    """
    config = template.config
    K, d, b = len(batches), config.d, batches[0].X.shape[0]
    seq = template._sequence(torch.cat([embed(bt.X, bt.y) for bt in batches]))
    h_prompt, cache = _s_run(P, config, seq.view(K, b, *seq.shape[1:]), None)
    w_hat = _s_read(P, h_prompt[:, :, -1])                           # (K, b, d)
    est = [w_hat]
    grad_from = chain_train - loss_window if loss_window else 0
    for i in range(1, chain_train):  # sequential: each application reads the previous estimate
        with torch.set_grad_enabled(torch.is_grad_enabled() and i >= grad_from):
            w_in = w_hat if i >= grad_from else w_hat.detach()
            tok = estimate_token(w_in.reshape(K * b, d)).transpose(1, 2).reshape(K, b, 1, -1)
            h, cache = _s_run(P, config, tok, cache)
            w_hat = _s_read(P, h[:, :, -1])
        est.append(w_hat)
    est = torch.stack(est, dim=2)[:, :, -loss_window if loss_window else 0:]   # (K, b, window, d)
    pre = _s_read(P, h_prompt[:, :, :-1]) if prefix_loss else None
    losses = []
    for j, bt in enumerate(batches):   # model by model: each loss's arithmetic is independent of the stack
        target = bt.w[:, None, :]
        loss = ((est[j] - target) ** 2).mean()
        if prefix_loss:
            loss = loss + ((pre[j] - target) ** 2).mean()
        losses.append(loss)
    return torch.stack(losses)


def _train_stack(config: GPT2Config, tcs, Lams, dev, *, progress: bool = False, stop_after: int | None = None):
    """Train len(tcs) models of one :func:`_stack_key` together; [(model, losses, seconds)], each as :func:`train` alone."""
    tc0 = tcs[0]
    K, d = len(tcs), config.d
    templates = []
    for tc in tcs:
        torch.manual_seed(tc.seed)
        templates.append(GPT2(config).to(dev))
    names = [n for n, _ in templates[0].named_parameters()]
    P = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in templates]).requires_grad_(True)
         for n in names}
    state = {n: (torch.zeros_like(p), torch.zeros_like(p)) for n, p in P.items()}
    n_steps = tc0.steps if stop_after is None else min(tc0.steps, stop_after)
    losses = np.empty((K, n_steps))
    start = time.perf_counter()
    steps = range(n_steps)
    it = bar(steps, desc=f"GPT-2 n={tc0.n_train}, {K} model{'s' * (K > 1)}") if progress else steps
    for t in it:
        d_t, n_t = _curriculum(tc0, d, t)
        batches = []
        for tc, L in zip(tcs, Lams):
            bt = prompts.sample(L, n_t, tc.batch, seed=tc.seed, stream="train", step=t, dtype=torch.float32)
            if d_t < d:
                X, w = bt.X.clone(), bt.w.clone()
                X[:, d_t:] = 0
                w[:, d_t:] = 0
                bt = prompts.Prompts(X, torch.einsum("bdn,bd->bn", X, w), w)
            batches.append(prompts.Prompts(*(a.to(dev) for a in bt)))
        c = _chain_length(tc0, t)
        for p in P.values():
            p.grad = None
        loss = _s_losses(P, templates[0], batches, c, min(tc0.loss_window, c), tc0.prefix_loss)
        loss.sum().backward()
        # gradient clipping at norm 1, model by model (torch.nn.utils.clip_grad_norm_'s arithmetic)
        norms = torch.stack([torch.linalg.vector_norm(p.grad.flatten(1), dim=1) for p in P.values()], dim=1)
        coef = (1.0 / (torch.linalg.vector_norm(norms, dim=1) + 1e-6)).clamp(max=1.0)
        lr_t = tc0.lr * _lr_factor(t, tc0.steps)
        with torch.no_grad():
            for n, p in P.items():
                g = p.grad.mul_(coef.view(K, *([1] * (p.ndim - 1))))
                training.adam_step(p, g, *state[n], t + 1, lr_t)
        losses[:, t] = loss.detach().cpu().numpy()
    seconds = (time.perf_counter() - start) / K
    out = []
    with torch.no_grad():
        for j, m in enumerate(templates):
            for n, p in m.named_parameters():
                p.copy_(P[n][j])
            m.eval()
            out.append((m, losses[j], seconds))
    return out


def _save(path: Path, out: Trained, config: GPT2Config, train_config: TrainConfig):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"state_dict": out.model.state_dict(), "loss": out.loss, "seconds": out.seconds,
                "config": config.as_dict(), "train_config": train_config.__dict__}, tmp)
    tmp.replace(path)  # atomic: a concurrent reader never sees half a file


def _load(path: Path, config: GPT2Config, dev) -> Trained:
    blob = torch.load(path, map_location=dev, weights_only=False)
    model = GPT2(config).to(dev)
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return Trained(model, np.asarray(blob["loss"]), True, float(blob["seconds"]), path)


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
    path = Path(cache_dir) / f"{cache_key(config, train_config, Lam)}.pt"
    if path.is_file():
        return _load(path, config, dev)
    out = train(config, train_config, Lam, device=device, progress=progress, threads=threads)
    _save(path, out, config, train_config)
    return out._replace(path=path)


def _worker(unit):
    """Train the missing models of one stack together, store them, and roll out every model when asked.

    ``unit`` is a list of jobs (config, train_config, Lam, cache_dir, device, test) of one
    :func:`_stack_key`; returns, per job, (whether it came from the cache, training seconds, estimates).
    """
    if mp.current_process().name != "MainProcess":   # a pool's worker: one intra-op thread
        torch.set_num_threads(1)
    paths = [Path(j[3]) / f"{cache_key(j[0], j[1], j[2])}.pt" for j in unit]
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    fresh = {}
    if missing:
        trained = train_stack([unit[i][:3] for i in missing], device=unit[0][4], progress=False, threads=1)
        for i, out in zip(missing, trained):
            _save(paths[i], out, unit[i][0], unit[i][1])
            fresh[i] = out
    results = []
    for i, (job, path) in enumerate(zip(unit, paths)):
        out = fresh[i] if i in fresh else _load(path, job[0], resolve_device(job[4]))
        test = job[5]
        est = None if test is None else rollout(out.model, *test, threads=1)
        results.append((i not in fresh, out.seconds, est))
    return results


def _cost(job) -> float:
    """A rough relative cost of training a job (0 when it is already stored): for longest-first scheduling."""
    c, tc, _, cache_dir, _, _ = job
    if (Path(cache_dir) / f"{cache_key(c, tc, job[2])}.pt").is_file():
        return 0.0
    mean_chain = (tc.chain_train + 1) / 2 if tc.chain_sampling == "random" else tc.chain_train
    return tc.steps * tc.batch * (tc.n_train + mean_chain) * c.n_layer * c.width


def _job_cost(job) -> float:
    """:func:`_cost` plus the test rollout's, when the worker is asked for one."""
    c, test = job[0], job[5]
    per = 2 if c.tokens == "separate" else 1
    roll = 0.0 if test is None else test[0].shape[0] * (per * test[0].shape[2] + test[2]) * c.n_layer * c.width
    return _cost(job) + roll


def _units(todo, processes: int):
    """The jobs as stacks (:func:`_stack_key`); a stack costing more than a process's share of the
    whole (training, and the test rollout when asked) is split in halves, down to single models, so
    that the processes can end together."""
    groups = {}
    for i, job in enumerate(todo):
        groups.setdefault(_stack_key(job[0], job[1]), []).append(i)
    units = list(groups.values())

    def cost(u):
        return sum(_job_cost(todo[i]) for i in u)

    share = sum(cost(u) for u in units) / processes
    while True:
        big = max(units, key=cost)
        if len(big) < 2 or cost(big) <= share:
            return units
        units.remove(big)
        units += [big[: len(big) // 2], big[len(big) // 2:]]


def _pool_context():
    """Fork, where that is safe: Linux, one intra-op thread (so torch has started no OpenMP pool a
    child would inherit broken) and CUDA untouched. A forked worker has torch and this module
    already imported, where a spawned one pays 3-4 CPU-seconds for them first; what it computes is
    the same, since every model's draws are seeded by its own job. Elsewhere, spawn."""
    if sys.platform.startswith("linux") and torch.get_num_threads() == 1 and not torch.cuda.is_initialized():
        return mp.get_context("fork")
    return mp.get_context("spawn")


def _plain_streams():
    """In a forked worker: write to file descriptors 1 and 2 directly. Forked from a Jupyter kernel,
    ``sys.stdout`` is ipykernel's stream, whose lock another thread of the kernel may have held at
    the fork, so the worker's first print or warning could wait forever; the kernel still forwards
    what reaches its descriptors to the notebook."""
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)


def train_many(jobs, *, cache_dir, processes: int = 2, device: str = "auto", test=None) -> list[Trained]:
    """:func:`load_or_train` for each ``(config, train_config, Lam)`` in ``jobs``, the missing ones in parallel.

    Models not in ``cache_dir`` are trained by ``processes`` worker processes (forked where that is
    safe, else spawned; one intra-op thread each) and stored there; then every model is loaded from
    the cache, in the order of ``jobs``.
    Jobs that differ only in their seed and Λ are trained together as one stack (:func:`train_stack`;
    a stack larger than a process's share of the work is split). Each model is trained exactly as
    :func:`train` would (same seed, same result, bit for bit). On a GPU the stacks are trained one
    after another in this process.

    ``test = (X, y, k)`` also runs :func:`rollout` of every model on those prompts inside the workers
    (stored models too), one thread each, and returns it as each result's ``estimates``: the same
    numbers as calling :func:`rollout` afterwards, computed in parallel.
    """
    processes = checks.positive_int(processes, "processes")
    if not cache_dir:
        raise ValueError("cache_dir must name a folder for the trained models")
    dev = resolve_device(device)
    jobs = [(c, tc, checks.covariance(L, "Lam", d=c.d)) for c, tc, L in jobs]
    for c, tc, _ in jobs:   # refused before any training, not inside a worker
        _check_positions(c, tc)
    if test is not None:
        if not (isinstance(test, tuple) and len(test) == 3):
            raise ValueError(f"test must be a tuple (X, y, k), got {type(test).__name__}")
        X, y, k = test
        k = checks.nonnegative_int(k, "k")
        for c in {c for c, _, _ in jobs}:   # bad test prompts are refused before any training
            X, y = _prompt_for(c, X, y, k)
        test = (X, y, k)
    paths = [Path(cache_dir) / f"{cache_key(c, tc, L)}.pt" for c, tc, L in jobs]
    todo, todo_paths = [], []
    for job, path in zip(jobs, paths):
        if (test is not None or not path.is_file()) and path not in todo_paths:
            todo_paths.append(path)
            todo.append((*job, str(cache_dir), device, test))
    fresh, estimates = set(), {}
    if todo:
        units = _units(todo, 1 if dev.type == "cuda" else processes)   # a GPU trains whole stacks in turn
        if processes == 1 or len(units) == 1 or dev.type == "cuda":
            with cpu_threads(None if dev.type == "cuda" else 1):
                done = [_worker([todo[i] for i in u]) for u in units]
        else:
            units.sort(key=lambda u: -sum(_job_cost(todo[i]) for i in u))   # longest first: the pool ends together
            ctx = _pool_context()
            init = _plain_streams if ctx.get_start_method() == "fork" else None
            with ctx.Pool(min(processes, len(units)), maxtasksperchild=None, initializer=init) as pool:
                done = pool.map(_worker, [[todo[i] for i in u] for u in units], chunksize=1)
        for u, results in zip(units, done):
            for i, (cached, _, est) in zip(u, results):   # the worker says whether it trained
                estimates[todo_paths[i]] = est
                if not cached:
                    fresh.add(todo_paths[i])
    return [_load(p, c, dev)._replace(cached=p not in fresh, estimates=estimates.get(p))
            for (c, _, _), p in zip(jobs, paths)]

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

Used in {ref}`sec-gpt2`.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch
from torch import nn

from . import checks
from .prompts import embed, estimate_token

__all__ = ["GPT2Config", "SCALES", "config_for", "GPT2", "resolve_device", "cpu_threads", "chain", "rollout"]


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
    returns the read-out at every position, (batch, T, d). Used in {ref}`sec-gpt2`.
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
    memory; ``threads`` CPU threads are used (see :func:`cpu_threads`). Used in {ref}`sec-gpt2`.
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

"""ttscale.chains training machinery against independent oracles: torch's own Adam and gradient
clipping (the hand-written step must give the same numbers), separate trainings (training side by
side must not change a model), the full-matrix layer formula (the stack's cheaper last layer), and
an explicit loop over the model's full forward (the memoryless ablation)."""

import numpy as np
import pytest
import torch
from torch import nn

from ttscale import chains, lsa, prompts, training


def torch_adam_training(model, sampler, stages, loss, clip=None):
    params = [p for p in model.parameters() if p.requires_grad]
    history, t = [], 0
    for steps, lr in stages:
        opt = torch.optim.Adam(params, lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            value = loss(model, sampler(t))
            value.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            history.append(value.item())
            t += 1
    return np.array(history)


def generic(d, scale, seed):
    g = torch.Generator().manual_seed(seed)
    D = 2 * d + 2
    return [scale * torch.randn(D, D, generator=g, dtype=torch.float64) for _ in range(2)]


@pytest.mark.parametrize("clip", [None, 0.05])
def test_train_chain_is_torch_adam_with_clipping(clip):
    d = 4
    V0, W0 = generic(d, 0.1, 0)
    sampler = training.prompt_sampler(np.eye(d), 7, 8, seed=3)
    stages = [(15, 0.02), (10, 0.005)]
    def loss(m, b):
        return chains.chain_loss(m, b, 3, every_step=True)
    ref, ours = lsa.LSA(d, V=V0, W=W0), lsa.LSA(d, V=V0, W=W0)
    h_ref = torch_adam_training(ref, sampler, stages, loss, clip)
    h_ours = chains.train_chain(ours, sampler, stages, loss, clip=clip)
    assert np.array_equal(h_ref, h_ours)
    assert torch.equal(ref.V, ours.V) and torch.equal(ref.W, ours.W)
    assert not torch.equal(ours.V, V0)              # it did train


def test_side_by_side_training_is_separate_training():
    d, L = 3, 2
    sampler = training.prompt_sampler(np.eye(d), 6, 5, seed=1)
    stages = [(12, 0.01)]
    D = 2 * d + 2
    g = torch.Generator().manual_seed(2)
    Vs, Ws = (0.1 * torch.randn(L, D, D, generator=g, dtype=torch.float64) for _ in range(2))
    alone = [chains.StackedLSA(d, L, Vs, Ws), chains.StackedLSA(d, L, Vs[:1], Ws[:1], tied=True)]
    hist_alone = [chains.train_chain(m, sampler, stages, chains.stacked_loss, clip=0.5) for m in alone]
    together = [chains.StackedLSA(d, L, Vs, Ws), chains.StackedLSA(d, L, Vs[:1], Ws[:1], tied=True)]
    hist = chains.train_chain(together, sampler, stages, [chains.stacked_loss] * 2, clip=0.5)
    assert hist.shape == (2, 12)
    for a, b, h_a, h_b in zip(alone, together, hist_alone, hist):
        assert np.array_equal(h_a, h_b)
        assert torch.equal(a.V, b.V) and torch.equal(a.W, b.W)


def test_stack_layers_follow_the_full_layer_formula():
    d, L, n = 3, 3, 5
    D = 2 * d + 2
    g = torch.Generator().manual_seed(4)
    V, W = (0.3 * torch.randn(L, D, D, generator=g, dtype=torch.float64) for _ in range(2))
    batch = prompts.sample(np.eye(d), n, 4, seed=0)
    Z = prompts.embed(batch.X, batch.y)
    lasts = []
    for l in range(L):                               # Z <- Z + V Z (Zᵀ W Z)/N, every column
        Z = Z + torch.einsum("ij,bjt,bts->bis", V[l], Z,
                             torch.einsum("bjt,jk,bks->bts", Z, W[l], Z)) / n
        lasts.append(Z[:, :, -1])
    model = chains.StackedLSA(d, L, V, W)
    out = model.layers(prompts.embed(batch.X, batch.y), n)
    assert torch.allclose(out, torch.stack(lasts, 1), rtol=1e-10, atol=1e-12)


def test_memoryless_rollout_drops_exactly_the_earlier_estimates():
    d, n, k = 3, 6, 4
    V, W = generic(d, 0.3, 5)
    model = lsa.LSA(d, V=V, W=W)
    batch = prompts.sample(np.eye(d), n, 5, seed=1)
    w = lsa.blocks(d).w
    E = prompts.embed(batch.X, batch.y)[:, :, :n]
    z = prompts.embed(batch.X, batch.y)[:, :, -1]
    expected = [z[:, w]]
    with torch.no_grad():
        for _ in range(k):                            # examples + one token, full forward
            z = model(torch.cat([E, z[:, :, None]], dim=2), n)[:, :, -1]
            expected.append(z[:, w])
    got = chains.memoryless_rollout(model, batch.X, batch.y, k)
    assert torch.allclose(got, torch.stack(expected, 1), rtol=1e-10, atol=1e-12)
    full = lsa.rollout(model, batch.X, batch.y, k)
    assert torch.allclose(got[:, :2], full[:, :2], rtol=1e-10, atol=1e-12)   # step 1 is shared
    assert not torch.allclose(got[:, -1], full[:, -1])                       # later ones differ
    # the structured construction gives estimate tokens zero attention: no memory to lose
    structured = lsa.closed_form(np.eye(d), 10)
    assert torch.allclose(chains.memoryless_rollout(structured, batch.X, batch.y, k),
                          lsa.rollout(structured, batch.X, batch.y, k), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("call, message", [
    (lambda: chains.train_chain([lsa.LSA(2)], lambda t: None, [(1, 0.1)], []), "one callable per model"),
    (lambda: chains.train_chain("x", lambda t: None, [(1, 0.1)], chains.chain_loss), "torch module"),
    (lambda: chains.memoryless_rollout(lsa.LSA(2), torch.zeros(1, 3, 4), torch.zeros(1, 4), 2),
     "feature dimension"),
    (lambda: chains.memoryless_rollout(lsa.LSA(2), torch.zeros(1, 2, 4), torch.zeros(1, 4), -1),
     "k must be an integer >= 0"),
])
def test_bad_arguments_name_the_argument(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value)

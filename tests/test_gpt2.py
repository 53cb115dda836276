"""Tests of ttscale.gpt2: the model, its rollout, training and the checkpoint cache."""

import numpy as np
import pytest
import torch

from ttscale import covariances, gpt2, prompts

D = 3


def tiny(d=D, **kw):
    return gpt2.config_for(d, "smoke", **kw)


def model(d=D, seed=0):
    torch.manual_seed(seed)
    return gpt2.GPT2(tiny(d)).eval()


def batch(d=D, n=5, b=4, seed=1):
    return prompts.sample(covariances.identity(d), n, b, seed=seed, stream="test", dtype=torch.float32)


# --- configuration --------------------------------------------------------------------------

def test_scales_paper_is_gpt2_size():
    cfg = gpt2.config_for(20, "paper")
    assert (cfg.n_layer, cfg.n_head, cfg.width) == (12, 8, 256)
    n_params = sum(p.numel() for p in gpt2.GPT2(cfg).parameters())
    assert 9.0e6 < n_params < 10.0e6  # the paper's "about 9.5M parameters"


def test_config_overrides_and_none():
    cfg = gpt2.config_for(4, "small", n_layer=2, width=None)
    assert cfg.n_layer == 2 and cfg.width == gpt2.SCALES["small"]["width"]


@pytest.mark.parametrize("kw, msg", [
    (dict(n_layer=0), "n_layer must be an integer >= 1"),
    (dict(n_head=0), "n_head must be an integer >= 1"),
    (dict(width=30, n_head=4), "width must be a multiple of n_head"),
    (dict(width=2.5), "width must be an integer >= 1"),
    (dict(mlp_ratio=0), "mlp_ratio must be an integer >= 1"),
])
def test_config_bad_parameters(kw, msg):
    with pytest.raises(ValueError, match=msg):
        gpt2.config_for(4, "small", **kw)


def test_config_bad_d_and_scale():
    with pytest.raises(ValueError, match="d must be an integer >= 1"):
        gpt2.config_for(0, "small")
    with pytest.raises(ValueError, match="scale must be one of"):
        gpt2.config_for(4, "huge")


def test_resolve_device():
    assert gpt2.resolve_device("cpu").type == "cpu"
    assert gpt2.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be one of"):
        gpt2.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="without CUDA"):
            gpt2.resolve_device("cuda")


def test_model_rejects_non_config():
    with pytest.raises(ValueError, match="config must be a GPT2Config"):
        gpt2.GPT2({"d": 3})


# --- model ----------------------------------------------------------------------------------

def test_forward_shapes():
    m, p = model(), batch()
    Z = prompts.embed(p.X, p.y)
    assert m(Z).shape == (4, D)
    assert m(Z, all_positions=True).shape == (4, 6, D)
    with pytest.raises(ValueError, match="Z must have shape"):
        m(Z[:, :-1])


def test_causal_mask_and_no_positions():
    """The output at position t ignores later tokens; no position table exists."""
    m, p = model(), batch()
    Z = prompts.embed(p.X, p.y)
    full = m(Z, all_positions=True)
    prefix = m(Z[:, :, :4], all_positions=True)
    torch.testing.assert_close(full[:, :4], prefix, atol=1e-5, rtol=1e-5)
    assert not any("pos" in name for name, _ in m.named_parameters())


def test_examples_are_exchangeable():
    """Without position embeddings, permuting the example tokens leaves the estimate unchanged."""
    m, p = model(), batch()
    perm = torch.tensor([3, 0, 4, 1, 2])
    a = m(prompts.embed(p.X, p.y))
    b = m(prompts.embed(p.X[:, :, perm], p.y[:, perm]))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# --- rollout --------------------------------------------------------------------------------

def test_rollout_appends_estimate_tokens():
    """Each step equals the model run on the prompt plus the previous estimates as tokens."""
    m, p = model(), batch()
    est = gpt2.rollout(m, p.X, p.y, 3)
    assert est.shape == (4, 4, D) and est.dtype == torch.float64
    assert torch.all(est[:, 0] == 0)
    Z = prompts.embed(p.X, p.y)  # ends with (0; 0; 0; 1)
    for i in range(1, 4):
        w_i = m(Z)
        torch.testing.assert_close(est[:, i], w_i.double(), atol=1e-5, rtol=1e-5)
        Z = torch.cat([Z, prompts.estimate_token(w_i)], dim=2)
    assert Z.shape[2] == 5 + 1 + 3


def test_rollout_chunks_and_k0():
    m, p = model(), batch(b=7)
    torch.testing.assert_close(gpt2.rollout(m, p.X, p.y, 2, chunk=3), gpt2.rollout(m, p.X, p.y, 2), atol=1e-5, rtol=1e-5)
    assert gpt2.rollout(m, p.X, p.y, 0).shape == (7, 1, D)
    with pytest.raises(ValueError, match="k must be an integer >= 0"):
        gpt2.rollout(m, p.X, p.y, -1)
    with pytest.raises(ValueError, match="X must have shape"):
        gpt2.rollout(m, p.X[:, :2], p.y, 1)


def test_chain_is_differentiable():
    m, p = model(), batch()
    m.train()
    est = gpt2.chain(m, p.X, p.y, 2)
    est.sum().backward()
    assert m.read_in.weight.grad is not None and torch.isfinite(m.read_in.weight.grad).all()
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        gpt2.chain(m, p.X, p.y, 0)


# --- training and cache ---------------------------------------------------------------------

def tc(**kw):
    base = dict(n_train=5, chain_train=2, steps=6, batch=8, lr=3e-3, seed=0)
    base.update(kw)
    return gpt2.TrainConfig(**base)


@pytest.mark.parametrize("kw, msg", [
    (dict(n_train=0), "n_train must be an integer >= 1"),
    (dict(chain_train=0), "chain_train must be an integer >= 1"),
    (dict(steps=-1), "train_steps must be an integer >= 0"),
    (dict(batch=0), "batch must be an integer >= 1"),
    (dict(lr=0.0), "lr must be > 0"),
    (dict(seed=-1), "seed must be an integer >= 0"),
])
def test_train_config_bad_parameters(kw, msg):
    with pytest.raises(ValueError, match=msg):
        tc(**kw)


def test_chain_loss_matches_definition():
    m, p = model(), batch()
    loss = gpt2.chain_loss(m, p, 2)
    est = gpt2.chain(m, p.X, p.y, 2)
    expected = ((est - p.w[:, None]) ** 2).sum(-1).mean() / D
    torch.testing.assert_close(loss, expected)


def test_training_lowers_loss_and_is_deterministic_on_cpu():
    Lam = covariances.identity(D)
    a = gpt2.train(tiny(), tc(steps=40), Lam, device="cpu", progress=False)
    b = gpt2.train(tiny(), tc(steps=40), Lam, device="cpu", progress=False)
    np.testing.assert_array_equal(a.loss, b.loss)
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    assert a.loss[-10:].mean() < a.loss[:5].mean()
    c = gpt2.train(tiny(), tc(steps=40, seed=1), Lam, device="cpu", progress=False)
    assert not np.array_equal(a.loss, c.loss)


def test_cache_key_depends_on_every_field():
    Lam = covariances.identity(D)
    k0 = gpt2.cache_key(tiny(), tc(), Lam)
    assert k0 == gpt2.cache_key(tiny(), tc(), Lam.copy())
    others = [gpt2.cache_key(tiny(n_layer=2), tc(), Lam), gpt2.cache_key(tiny(), tc(n_train=6), Lam),
              gpt2.cache_key(tiny(), tc(chain_train=1), Lam), gpt2.cache_key(tiny(), tc(steps=7), Lam),
              gpt2.cache_key(tiny(), tc(batch=9), Lam), gpt2.cache_key(tiny(), tc(lr=1e-3), Lam),
              gpt2.cache_key(tiny(), tc(seed=2), Lam), gpt2.cache_key(tiny(), tc(), 2 * Lam)]
    assert len({k0, *others}) == 1 + len(others)
    with pytest.raises(ValueError, match="Lam must be 3 x 3"):
        gpt2.cache_key(tiny(), tc(), covariances.identity(4))


def test_cache_miss_then_hit(tmp_path):
    Lam = covariances.identity(D)
    first = gpt2.load_or_train(tiny(), tc(), Lam, cache_dir=tmp_path, device="cpu", progress=False)
    assert not first.cached and first.path.is_file() and first.path.parent == tmp_path
    second = gpt2.load_or_train(tiny(), tc(), Lam, cache_dir=tmp_path, device="cpu", progress=False)
    assert second.cached and second.path == first.path
    np.testing.assert_array_equal(first.loss, second.loss)
    p = batch()
    torch.testing.assert_close(gpt2.rollout(first.model, p.X, p.y, 3), gpt2.rollout(second.model, p.X, p.y, 3))
    third = gpt2.load_or_train(tiny(), tc(steps=7), Lam, cache_dir=tmp_path, device="cpu", progress=False)
    assert not third.cached and len(list(tmp_path.glob("*.pt"))) == 2
    off = gpt2.load_or_train(tiny(), tc(steps=8), Lam, cache_dir=tmp_path, cache=False, device="cpu", progress=False)
    assert not off.cached and off.path is None and len(list(tmp_path.glob("*.pt"))) == 2
    with pytest.raises(ValueError, match="cache_dir must name a folder"):  # the library guesses no paths
        gpt2.load_or_train(tiny(), tc(), Lam, cache_dir="", device="cpu", progress=False)


def test_cpu_threads_sets_and_restores():
    before = torch.get_num_threads()
    with gpt2.cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with gpt2.cpu_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        with gpt2.cpu_threads(0):
            pass

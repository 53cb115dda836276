import numpy as np
import pytest
import torch

from ttscale import covariances as cv
from ttscale import estimators, lsa, prompts, theory


def test_forward_matches_formula_and_last_only():
    torch.manual_seed(0)
    d = 3
    model = lsa.LSA(d, V=torch.randn(8, 8), W=torch.randn(8, 8))
    Z = torch.randn(4, 8, 6, dtype=torch.float64)
    full = model(Z, 5)
    manual = Z + model.V @ Z @ (Z.transpose(1, 2) @ model.W @ Z) / 5
    assert torch.allclose(full, manual)
    assert torch.allclose(model(Z, 5, last_only=True), full[:, :, -1])


def test_closed_form_blocks():
    L = cv.power_law(4, 0.5, rotate=True, seed=0)
    m = lsa.closed_form(L, 10, c=2.0)
    b = lsa.blocks(4)
    V, W = m.V.detach().numpy(), m.W.detach().numpy()
    assert np.allclose(V[b.w, b.x], -np.linalg.inv(theory.gamma(L, 10)) / 2.0)
    assert np.count_nonzero(V) == 16
    assert np.allclose(W[b.x, b.w], 2.0 * np.eye(4)) and W[b.y, b.one] == -2.0
    assert np.count_nonzero(W) == 5
    assert not m.W.requires_grad


def test_rollout_appends_tokens_and_equals_recursion():
    L = cv.power_law(5, 0.8, rotate=True, seed=1)
    P = prompts.sample(L, 12, 64, seed=3, stream="test")
    model = lsa.closed_form(L, 20)
    r = lsa.rollout(model, P.X, P.y, 6)
    assert r.shape == (64, 7, 5)
    assert torch.all(r[:, 0] == 0)
    full = lsa.rollout(model, P.X, P.y, 6, last_only=False)
    assert torch.allclose(r, full, atol=1e-12)
    rec = estimators.pseudo_newton(P.X, P.y, L, 20, 6)
    assert (r - rec).abs().max() < 1e-10
    # independent closed form: w_k - w = -(I - Γ^{-1} S)^k w
    G_inv = torch.as_tensor(np.linalg.inv(theory.gamma(L, 20)))
    S = prompts.sample_covariance(P.X)
    M = torch.eye(5, dtype=torch.float64) - G_inv @ S
    closed = P.w - torch.einsum("bij,bj->bi", torch.linalg.matrix_power(M, 6), P.w)
    assert (r[:, 6] - closed).abs().max() < 1e-10


def test_rollout_really_uses_appended_tokens():
    # A W that lets appended estimate tokens attend changes the output: the tokens are there.
    L = np.eye(3)
    P = prompts.sample(L, 10, 8, seed=0)
    model = lsa.closed_form(L, 10)
    base = lsa.rollout(model, P.X, P.y, 3)
    b = lsa.blocks(3)
    with torch.no_grad():
        model.V[b.w, b.w] = 0.1 * torch.eye(3, dtype=torch.float64)
        model.W[b.w, b.w] = torch.eye(3, dtype=torch.float64)
    changed = lsa.rollout(model, P.X, P.y, 3)
    assert torch.allclose(base[:, 1], changed[:, 1])  # first application has no estimate tokens but ŵ_0 = 0
    assert not torch.allclose(base[:, 3], changed[:, 3])


def test_bad_inputs():
    with pytest.raises(ValueError, match="V must be"):
        lsa.LSA(3, V=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="Z must have shape"):
        lsa.LSA(3)(torch.zeros(1, 5, 2), 1)
    with pytest.raises(ValueError, match="n_examples must be"):
        lsa.LSA(3)(torch.zeros(1, 8, 2), 0)
    with pytest.raises(ValueError, match="c must be > 0"):
        lsa.closed_form(np.eye(3), 5, c=0.0)
    P = prompts.sample(np.eye(4), 5, 2)
    with pytest.raises(ValueError, match="feature dimension"):
        lsa.rollout(lsa.closed_form(np.eye(3), 5), P.X, P.y, 2)
    with pytest.raises(ValueError, match="k must be an integer >= 0"):
        lsa.rollout(lsa.closed_form(np.eye(4), 5), P.X, P.y, -1)


def test_from_map_and_applied_map_round_trip():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((3, 3))
    model = lsa.from_map(A, c=0.5)
    assert np.allclose(lsa.applied_map(model), A, atol=1e-12)  # c read from W
    assert np.allclose(lsa.applied_map(model, 0.5), A, atol=1e-12)
    L = cv.power_law(3, 1.0)
    assert np.allclose(lsa.applied_map(lsa.closed_form(L, 30, c=2.5)), np.linalg.inv(theory.gamma(L, 30)), rtol=1e-12)
    with pytest.raises(ValueError, match="finite square"):
        lsa.from_map(np.ones((2, 3)))
    with pytest.raises(ValueError, match="cannot read its own estimate"):
        lsa.applied_map(lsa.LSA(3))


def _structured_model(d, seed):
    """A model with the map form's zeros but nothing else special: random V_{w,x}, M and c_y."""
    g = torch.Generator().manual_seed(seed)
    b = lsa.blocks(d)
    V = torch.zeros(2 * d + 2, 2 * d + 2, dtype=torch.float64)
    W = torch.zeros_like(V)
    V[b.w, b.x] = -0.3 * torch.eye(d, dtype=torch.float64) + 0.05 * torch.randn(d, d, generator=g, dtype=torch.float64)
    W[b.x, b.w] = torch.eye(d, dtype=torch.float64) + 0.1 * torch.randn(d, d, generator=g, dtype=torch.float64)
    W[b.y, b.one] = -1.3
    return lsa.LSA(d, V, W)


def test_map_path_equals_the_token_chain():
    L = cv.power_law(6, 0.8, rotate=True, seed=2)
    P = prompts.sample(L, 15, 40, seed=4, stream="test")
    rng = np.random.default_rng(0)
    models = [lsa.closed_form(L, 20), lsa.closed_form(L, 20, c=3.0), lsa.from_map(rng.standard_normal((6, 6)) / 6, c=0.5),
              _structured_model(6, 1)]
    for model in models:
        assert lsa.chain_map(model) is not None
        tokens = lsa.rollout(model, P.X, P.y, 12)
        full = lsa.rollout(model, P.X, P.y, 12, last_only=False)
        for method in ("map", "auto"):
            fast = lsa.rollout(model, P.X, P.y, 12, method=method)
            assert fast.shape == tokens.shape == (40, 13, 6)
            scale = tokens.abs().amax(dim=2, keepdim=True).clamp_min(1.0)
            assert ((fast - tokens).abs() / scale).max() < 1e-11
            assert ((fast - full).abs() / scale).max() < 1e-11
    # the map A itself, independently: ŵ_{i+1} = ŵ_i − A(Ŝŵ_i − b)
    A = rng.standard_normal((6, 6)) / 6
    S = prompts.sample_covariance(P.X)
    bvec = torch.einsum("bim,bm->bi", P.X, P.y) / 15
    w_hat = torch.zeros(40, 6, dtype=torch.float64)
    At = torch.as_tensor(A)
    for _ in range(5):
        w_hat = w_hat - (torch.einsum("bij,bj->bi", S, w_hat) - bvec) @ At.T
    assert torch.allclose(lsa.rollout(lsa.from_map(A), P.X, P.y, 5, method="map")[:, 5], w_hat, rtol=0, atol=1e-12)


def test_map_path_in_float32_and_refused_for_a_general_model():
    L = np.eye(4)
    P = prompts.sample(L, 10, 16, seed=0)
    m32 = lsa.closed_form(L, 10, dtype=torch.float32)
    fast = lsa.rollout(m32, P.X, P.y, 6, method="map")
    assert fast.dtype == torch.float32
    assert torch.allclose(fast, lsa.rollout(m32, P.X, P.y, 6), rtol=1e-5, atol=1e-6)
    model = lsa.closed_form(L, 10)
    b = lsa.blocks(4)
    with torch.no_grad():
        model.W[b.w, b.w] = 0.1 * torch.eye(4, dtype=torch.float64)  # estimate tokens now attend to each other
    assert lsa.chain_map(model) is None
    with pytest.raises(ValueError, match="method='map' needs a model"):
        lsa.rollout(model, P.X, P.y, 3, method="map")
    assert torch.equal(lsa.rollout(model, P.X, P.y, 3, method="auto"), lsa.rollout(model, P.X, P.y, 3))
    with pytest.raises(ValueError, match="method must be"):
        lsa.rollout(model, P.X, P.y, 3, method="fast")


def test_token_path_equals_the_growing_matrix_for_a_general_model():
    torch.manual_seed(3)
    d = 3
    model = lsa.LSA(d, V=0.1 * torch.randn(8, 8, dtype=torch.float64), W=0.1 * torch.randn(8, 8, dtype=torch.float64))
    P = prompts.sample(np.eye(d), 7, 5, seed=1)
    # oracle: the definition, written out on a growing token matrix
    Z = prompts.embed(P.X, P.y)
    want = [Z[:, d + 1: 2 * d + 1, -1]]
    for _ in range(6):
        out = Z + model.V @ Z @ (Z.transpose(1, 2) @ model.W @ Z) / 7
        Z = torch.cat([Z, out[:, :, -1:]], dim=2)
        want.append(out[:, d + 1: 2 * d + 1, -1])
    want = torch.stack(want, dim=1).detach()
    assert torch.allclose(lsa.rollout(model, P.X, P.y, 6), want, rtol=1e-12, atol=1e-14)
    assert torch.allclose(lsa.rollout(model, P.X, P.y, 6, method="auto"), want, rtol=1e-12, atol=1e-14)

import numpy as np
import pytest
import torch

from ttscale import covariances as cv
from ttscale import prompts


def test_shapes_and_labels():
    P = prompts.sample(cv.identity(5), 7, 3, seed=0)
    assert P.X.shape == (3, 5, 7) and P.y.shape == (3, 7) and P.w.shape == (3, 5)
    assert torch.allclose(P.y, torch.einsum("bdn,bd->bn", P.X, P.w))


def test_determinism_and_stream_independence():
    L = cv.power_law(4, 0.5)
    a = prompts.sample(L, 6, 2, seed=1, stream="train", step=5)
    b = prompts.sample(L, 6, 2, seed=1, stream="train", step=5)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    for other in [dict(seed=2, stream="train", step=5), dict(seed=1, stream="eval", step=5),
                  dict(seed=1, stream="train", step=6)]:
        c = prompts.sample(L, 6, 2, **other)
        assert not torch.allclose(a.X, c.X)


def test_covariance_of_samples():
    L = cv.power_law(4, 1.0, rotate=True, seed=2)
    P = prompts.sample(L, 50, 400, seed=0)
    emp = prompts.sample_covariance(P.X).mean(0).numpy()
    assert np.abs(emp - L).max() < 0.05  # 20 000 draws; sd of entries ~ 0.01
    w_cov = (P.w.T @ P.w / 400).numpy()
    assert np.abs(w_cov - np.eye(4)).max() < 0.2


def test_singular_covariance_samples_stay_in_its_range():
    P = prompts.sample(cv.missing_skills(6, 2), 10, 5, seed=0)
    assert P.X[:, 4:, :].abs().max() < 1e-12


def test_embedding_layout():
    P = prompts.sample(cv.identity(3), 4, 2, seed=0)
    Z = prompts.embed(P.X, P.y)
    assert Z.shape == (2, 8, 5)
    assert torch.equal(Z[:, :3, :4], P.X) and torch.equal(Z[:, 3, :4], P.y)
    assert torch.all(Z[:, 4:, :4] == 0)
    assert torch.equal(Z[:, :, 4], torch.tensor([0, 0, 0, 0, 0, 0, 0, 1.0]).expand(2, 8).double())
    w0 = torch.ones(2, 3, dtype=torch.float64)
    assert torch.equal(prompts.embed(P.X, P.y, w0)[:, 4:7, 4], w0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        prompts.sample(cv.identity(3), 0, 2)
    with pytest.raises(ValueError, match="stream must be one of"):
        prompts.sample(cv.identity(3), 2, 2, stream="valid")
    with pytest.raises(ValueError, match="Lam must be positive semi-definite"):
        prompts.sample(-np.eye(3), 2, 2)
    with pytest.raises(ValueError, match="seed must be"):
        prompts.sample(cv.identity(3), 2, 2, seed=-1)
    with pytest.raises(ValueError, match="w0 must have shape"):
        P = prompts.sample(cv.identity(3), 2, 2)
        prompts.embed(P.X, P.y, torch.zeros(2, 4))

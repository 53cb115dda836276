import numpy as np
import pytest
import torch

from ttscale import covariances as cv
from ttscale import estimators, montecarlo, prompts, theory


def test_squared_errors_shapes():
    w = torch.ones(3, 2)
    assert np.allclose(montecarlo.squared_errors(torch.zeros(3, 2), w), 2.0)
    assert montecarlo.squared_errors(torch.zeros(3, 4, 2), w).shape == (3, 4)
    with pytest.raises(ValueError, match="w_hat must be"):
        montecarlo.squared_errors(torch.zeros(3, 2), torch.zeros(4, 2))


def test_bootstrap_mean_se_and_coverage():
    rng = np.random.default_rng(0)
    e = rng.exponential(2.0, size=(4000, 3))
    band = montecarlo.bootstrap(e, n_boot=500, seed=1)
    assert np.allclose(band.mean, e.mean(0))
    assert np.allclose(band.se, e.std(0, ddof=1) / np.sqrt(4000))
    assert np.all(band.lo < band.mean) and np.all(band.mean < band.hi)
    # a 95% band is about 2 × 1.96 standard errors wide
    assert np.allclose((band.hi - band.lo) / band.se, 3.92, rtol=0.2)
    again = montecarlo.bootstrap(e, n_boot=500, seed=1)
    assert np.array_equal(band.lo, again.lo)


@pytest.mark.parametrize("kw,msg", [(dict(n_boot=0), "n_boot"), (dict(level=1.0), "level"),
                                    (dict(seed=-1), "seed")])
def test_bootstrap_rules(kw, msg):
    with pytest.raises(ValueError, match=msg):
        montecarlo.bootstrap(np.ones(10), **kw)


def test_bootstrap_rejects_too_few_and_nonfinite():
    with pytest.raises(ValueError, match="at least 2"):
        montecarlo.bootstrap(np.ones(1))
    with pytest.raises(ValueError, match="finite"):
        montecarlo.bootstrap(np.array([1.0, np.inf]))


def test_recursion_errors_match_pseudo_newton_steps():
    Lam = cv.power_law(5, 0.8)
    P = prompts.sample(Lam, 9, 7, seed=0, stream="test")
    G_inv = np.linalg.inv(theory.gamma(Lam, 12))
    ref = montecarlo.squared_errors(estimators.pseudo_newton(P.X, P.y, Lam, 12, 4), P.w)
    got = montecarlo.recursion_errors(prompts.sample_covariance(P.X), P.w, G_inv, 4)
    assert np.allclose(got, ref, rtol=1e-10)
    # a per-prompt stack of preconditioners is applied prompt by prompt
    stack = torch.stack([torch.as_tensor(G_inv) * (1 + i / 10) for i in range(7)])
    got = montecarlo.recursion_errors(prompts.sample_covariance(P.X), P.w, stack, 2)
    for i in range(7):
        one = montecarlo.recursion_errors(prompts.sample_covariance(P.X[i:i + 1]), P.w[i:i + 1], stack[i], 2)
        assert np.allclose(got[i], one[0])


def test_recursion_errors_shape_rule():
    with pytest.raises(ValueError, match="P must be"):
        montecarlo.recursion_errors(torch.eye(3), torch.zeros(2, 3), torch.eye(4), 1)


def test_cot_errors_population_and_one_step_agree_with_theory():
    Lam = cv.power_law(8, 1.0)
    ks = np.arange(6)
    e = montecarlo.cot_errors(Lam, 10, None, 5, 3000, seed=0)
    band = montecarlo.bootstrap(e, n_boot=100)
    assert np.all(np.abs(band.mean - theory.cot_error(Lam, 10, ks)) < 5 * band.se)
    e = montecarlo.cot_errors(Lam, 10, 12, 1, 3000, seed=0, batch=700)
    assert abs(e[:, 1].mean() - theory.one_step_error(Lam, 10, 12)) < 5 * e[:, 1].std() / np.sqrt(3000)


def test_cot_errors_deterministic_and_chunking_invariant_in_shape():
    Lam = cv.identity(4)
    a = montecarlo.cot_errors(Lam, 5, 6, 3, 50, seed=1, batch=20)
    b = montecarlo.cot_errors(Lam, 5, 6, 3, 50, seed=1, batch=20)
    assert a.shape == (50, 4) and np.array_equal(a, b)


def test_cot_errors_out_of_distribution_uses_sigma():
    Lam, Sigma = cv.power_law(6, 1.0), cv.identity(6)
    e = montecarlo.cot_errors(Lam, 20, None, 3, 3000, Sigma=Sigma, seed=0)
    ref = theory.cot_error(Lam, 20, np.arange(4), Sigma=Sigma)
    assert np.all(np.abs(e.mean(0) - ref) < 5 * e.std(0) / np.sqrt(3000) + 1e-12)


@pytest.mark.parametrize("kw,msg", [(dict(m_test=0), "m_test"), (dict(n_prompts=0), "n_prompts"),
                                    (dict(k=-1), "k must")])
def test_cot_errors_rules(kw, msg):
    args = dict(Lam=cv.identity(3), n_train=5, m_test=4, k=2, n_prompts=10)
    args.update(kw)
    with pytest.raises(ValueError, match=msg):
        montecarlo.cot_errors(**args)


def test_smallest_n_reaching_matches_theory_on_theory_grid():
    Lam = cv.identity(20)
    ns = np.arange(1, 201)
    ks = np.array([1, 2, 3, 5, 10, 20])
    grid = np.stack([theory.cot_error(Lam, int(n), ks) for n in ns])
    got = montecarlo.smallest_n_reaching(ns, grid, 1.0)
    assert np.array_equal(got, [73, 24, 14, 8, 4, 2])
    assert np.isnan(montecarlo.smallest_n_reaching(ns[:5], grid[:5], 1.0)[0])
    with pytest.raises(ValueError, match="errors must have shape"):
        montecarlo.smallest_n_reaching(ns, grid[:3], 1.0)
    with pytest.raises(ValueError, match="target"):
        montecarlo.smallest_n_reaching(ns, grid, 0.0)

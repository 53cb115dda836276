import numpy as np
import pytest
import torch

from ttscale import covariances as cv
from ttscale import estimators, lsa, prompts, simulation, theory


def test_squared_errors_shapes():
    w = torch.ones(3, 2)
    assert np.allclose(simulation.squared_errors(torch.zeros(3, 2), w), 2.0)
    assert simulation.squared_errors(torch.zeros(3, 4, 2), w).shape == (3, 4)
    with pytest.raises(ValueError, match="w_hat must be"):
        simulation.squared_errors(torch.zeros(3, 2), torch.zeros(4, 2))


def test_bootstrap_mean_se_and_coverage():
    rng = np.random.default_rng(0)
    e = rng.exponential(2.0, size=(4000, 3))
    band = simulation.bootstrap(e, n_boot=500, seed=1)
    assert np.allclose(band.mean, e.mean(0))
    assert np.allclose(band.se, e.std(0, ddof=1) / np.sqrt(4000))
    assert np.all(band.lo < band.mean) and np.all(band.mean < band.hi)
    # a 95% band is about 2 × 1.96 standard errors wide
    assert np.allclose((band.hi - band.lo) / band.se, 3.92, rtol=0.2)
    again = simulation.bootstrap(e, n_boot=500, seed=1)
    assert np.array_equal(band.lo, again.lo)


def test_bootstrap_resamples_prompts_like_a_fresh_multinomial_draw():
    # the resampling counts are shared between calls with the same (prompts, n_boot, seed);
    # the band must be what a fresh multinomial draw from that seed gives, whatever came before
    e = np.random.default_rng(3).normal(size=(50, 2))
    simulation.bootstrap(np.ones((50, 1)) + np.arange(50)[:, None], n_boot=40, seed=7)
    band = simulation.bootstrap(e, n_boot=40, seed=7)
    counts = np.random.default_rng(7).multinomial(50, np.full(50, 1 / 50), size=40)
    lo, hi = np.quantile(counts @ e / 50, [0.025, 0.975], axis=0)
    assert np.allclose(band.lo, lo) and np.allclose(band.hi, hi)
    other = simulation.bootstrap(e, n_boot=40, seed=8)  # another seed, other resamples
    assert not np.allclose(other.lo, band.lo)


@pytest.mark.parametrize("kw,msg", [(dict(n_boot=0), "n_boot"), (dict(level=1.0), "level"),
                                    (dict(seed=-1), "seed")])
def test_bootstrap_rules(kw, msg):
    with pytest.raises(ValueError, match=msg):
        simulation.bootstrap(np.ones(10), **kw)


def test_bootstrap_rejects_too_few_and_nonfinite():
    with pytest.raises(ValueError, match="at least 2"):
        simulation.bootstrap(np.ones(1))
    with pytest.raises(ValueError, match="finite"):
        simulation.bootstrap(np.array([1.0, np.inf]))


def test_recursion_errors_match_pseudo_newton_steps():
    Lam = cv.power_law(5, 0.8)
    P = prompts.sample(Lam, 9, 7, seed=0, stream="test")
    G_inv = np.linalg.inv(theory.gamma(Lam, 12))
    ref = simulation.squared_errors(estimators.pseudo_newton(P.X, P.y, Lam, 12, 4), P.w)
    got = simulation.recursion_errors(prompts.sample_covariance(P.X), P.w, G_inv, 4)
    assert np.allclose(got, ref, rtol=1e-10)
    # a per-prompt stack of preconditioners is applied prompt by prompt
    stack = torch.stack([torch.as_tensor(G_inv) * (1 + i / 10) for i in range(7)])
    got = simulation.recursion_errors(prompts.sample_covariance(P.X), P.w, stack, 2)
    for i in range(7):
        one = simulation.recursion_errors(prompts.sample_covariance(P.X[i:i + 1]), P.w[i:i + 1], stack[i], 2)
        assert np.allclose(got[i], one[0])


def test_recursion_errors_shape_rule():
    with pytest.raises(ValueError, match="P must be"):
        simulation.recursion_errors(torch.eye(3), torch.zeros(2, 3), torch.eye(4), 1)


def test_cot_errors_population_and_one_step_agree_with_theory():
    Lam = cv.power_law(8, 1.0)
    ks = np.arange(6)
    e = simulation.cot_errors(Lam, 10, None, 5, 3000, seed=0)
    band = simulation.bootstrap(e, n_boot=100)
    assert np.all(np.abs(band.mean - theory.cot_error(Lam, 10, ks)) < 5 * band.se)
    e = simulation.cot_errors(Lam, 10, 12, 1, 3000, seed=0, batch=700)
    assert abs(e[:, 1].mean() - theory.one_step_error(Lam, 10, 12)) < 5 * e[:, 1].std() / np.sqrt(3000)


def test_cot_errors_deterministic_and_chunking_invariant_in_shape():
    Lam = cv.identity(4)
    a = simulation.cot_errors(Lam, 5, 6, 3, 50, seed=1, batch=20)
    b = simulation.cot_errors(Lam, 5, 6, 3, 50, seed=1, batch=20)
    assert a.shape == (50, 4) and np.array_equal(a, b)


def test_cot_errors_out_of_distribution_uses_sigma():
    Lam, Sigma = cv.power_law(6, 1.0), cv.identity(6)
    e = simulation.cot_errors(Lam, 20, None, 3, 3000, Sigma=Sigma, seed=0)
    ref = theory.cot_error(Lam, 20, np.arange(4), Sigma=Sigma)
    assert np.all(np.abs(e.mean(0) - ref) < 5 * e.std(0) / np.sqrt(3000) + 1e-12)


@pytest.mark.parametrize("kw,msg", [(dict(m_test=0), "m_test"), (dict(n_prompts=0), "n_prompts"),
                                    (dict(k=-1), "k must")])
def test_cot_errors_rules(kw, msg):
    args = dict(Lam=cv.identity(3), n_train=5, m_test=4, k=2, n_prompts=10)
    args.update(kw)
    with pytest.raises(ValueError, match=msg):
        simulation.cot_errors(**args)


def test_smallest_n_reaching_matches_theory_on_theory_grid():
    Lam = cv.identity(20)
    ns = np.arange(1, 201)
    ks = np.array([1, 2, 3, 5, 10, 20])
    grid = np.stack([theory.cot_error(Lam, int(n), ks) for n in ns])
    got = simulation.smallest_n_reaching(ns, grid, 1.0)
    assert np.array_equal(got, [73, 24, 14, 8, 4, 2])
    assert np.isnan(simulation.smallest_n_reaching(ns[:5], grid[:5], 1.0)[0])
    with pytest.raises(ValueError, match="errors must have shape"):
        simulation.smallest_n_reaching(ns, grid[:3], 1.0)
    with pytest.raises(ValueError, match="target"):
        simulation.smallest_n_reaching(ns, grid, 0.0)


def test_averaging_over_w_keeps_the_mean():
    # the same prompts' features: drawing w (recursion) and averaging it out exactly (map_error) agree in mean
    Lam = cv.power_law(5, 1.0)
    drawn = simulation.cot_errors(Lam, 10, 12, 4, 4000, seed=3)
    averaged = simulation.cot_errors(Lam, 10, 12, [0, 2, 4], 4000, average_w=True, seed=3)
    assert averaged.shape == (4000, 3)
    np.testing.assert_allclose(averaged[:, 0], 5.0)  # ‖I‖_F² = d at k = 0, for every prompt
    for j, k in enumerate([0, 2, 4]):
        m_d, se_d = simulation.mean_se(drawn[:, k])
        m_a, se_a = simulation.mean_se(averaged[:, j])
        assert abs(m_d - m_a) < 5 * np.hypot(se_d, se_a)
    # and both agree with the exact finite-m error (k <= 3 for any spectrum)
    exact = theory.finite_m_cot_error(Lam, 10, 12, 2)
    m_a, se_a = simulation.mean_se(averaged[:, 1])
    assert abs(m_a - exact) < 5 * se_a
    # per prompt, averaging over w is exactly ‖(I − Γ⁻¹Ŝ)^k‖_F² of that prompt's features
    pr = prompts.sample(Lam, 12, 2000, seed=3, stream="test", step=0)  # the first chunk of 2000
    B = np.eye(5) - np.linalg.inv(theory.gamma(Lam, 10)) @ prompts.sample_covariance(pr.X[:3]).numpy()
    np.testing.assert_allclose(averaged[:3, 2], [np.sum(np.linalg.matrix_power(b, 4) ** 2) for b in B], rtol=1e-10)


def test_cot_errors_step_offsets_the_stream():
    Lam = cv.identity(3)
    a = simulation.cot_errors(Lam, 5, 6, 2, 10, seed=0, step=7)
    b = simulation.cot_errors(Lam, 5, 6, 2, 20, seed=0, step=6, batch=10)
    np.testing.assert_array_equal(a, b[10:])


def test_rollout_errors_equal_the_recursion():
    Lam = cv.power_law(4, 0.5)
    pr = prompts.sample(Lam, 9, 50, seed=1, stream="test")
    S = prompts.sample_covariance(pr.X)
    via_model = simulation.rollout_errors(lsa.closed_form(Lam, 7), pr, 5)
    via_recursion = simulation.recursion_errors(S, pr.w, np.linalg.inv(theory.gamma(Lam, 7)), 5)
    np.testing.assert_allclose(via_model, via_recursion, rtol=1e-9)


def test_mean_se_first_below_and_best_k():
    e = np.array([[1.0, 3.0], [3.0, 5.0], [5.0, 7.0]])
    m, se = simulation.mean_se(e)
    np.testing.assert_allclose(m, [3.0, 5.0])
    np.testing.assert_allclose(se, [2.0 / np.sqrt(3), 2.0 / np.sqrt(3)])
    with pytest.raises(ValueError, match="at least 2 prompts"):
        simulation.mean_se(e[:1])
    assert simulation.first_below([5.0, 2.0, 0.5, 0.1], 1.0) == 2
    assert np.isnan(simulation.first_below([5.0, np.inf], 1.0))
    curves = np.array([[5.0, 0.5, 0.1], [5.0, 4.0, 3.0], [0.9, 0.5, 0.1]])
    np.testing.assert_array_equal(simulation.first_below(curves, 1.0), [1.0, np.nan, 0.0])
    np.testing.assert_array_equal(simulation.first_below(curves, 1.0, axis=0), [2.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="NaN"):
        simulation.first_below([1.0, np.nan], 1.0)
    assert list(simulation.best_k(np.array([[3.0, 1.0, np.inf], [np.nan, 2.0, 1.0]]))) == [1, 2]


def test_spectral_radius_is_the_largest_contraction_factor():
    P = np.diag([1.0, 0.5])
    S = np.stack([np.diag([1.0, 1.0]), np.diag([3.0, 1.0]), np.diag([0.2, 6.0])])
    np.testing.assert_allclose(simulation.spectral_radius(P, S), [0.5, 2.0, 2.0])


def test_squared_errors_compare_in_the_wider_dtype():
    w = torch.tensor([[1.0 + 1e-9, 0.0]], dtype=torch.float64)
    w_hat = torch.tensor([[[1.0, 0.0]]], dtype=torch.float32)
    e = simulation.squared_errors(w_hat, w)
    assert e.dtype == np.float64 and e[0, 0] == pytest.approx(1e-18, rel=1e-6)  # float32 would give 0

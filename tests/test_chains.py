"""ttscale.chains against oracles that do not share its code: closed-form Wishart moments, Monte Carlo
draws, numpy's pseudo-inverse, the library's no-grad rollout and an explicit recursion."""

import numpy as np
import pytest
import torch

from ttscale import chains, lsa, prompts, theory, training


def wishart_draws(d, n, count, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((count, d, n))
    return X @ X.transpose(0, 2, 1) / n


@pytest.mark.parametrize("d, n, p", [(5, 3, 0.4), (6, 12, 0.7)])
def test_power_traces_closed_forms_and_monte_carlo(d, n, p):
    t = chains.isotropic_power_traces(d, n, p, 4)
    assert t[0] == d
    assert t[1] == pytest.approx(d - p * d, rel=1e-12)                       # E tr Ŝ = d
    assert t[2] == pytest.approx(d - 2 * p * d + p**2 * d * (n + d + 1) / n, rel=1e-12)   # E tr Ŝ² = d(n+d+1)/n
    S = wishart_draws(d, n, 40000, seed=1)
    B = np.eye(d) - p * S
    for j in (3, 4):
        v = np.trace(np.linalg.matrix_power(B, j), axis1=1, axis2=2)
        assert abs(v.mean() - t[j]) < 5 * v.std() / np.sqrt(v.size), j


def test_chain_error_with_target_gain_against_simulation():
    d, n, p, k, s = 4, 6, 0.5, 3, 1.3
    exact = chains.isotropic_chain_error(d, n, p, k, s)
    rng = np.random.default_rng(2)
    S = wishart_draws(d, n, 40000, seed=3)
    w = rng.standard_normal((S.shape[0], d))
    w_hat = np.zeros_like(w)
    for _ in range(k):                      # ŵ ← ŵ − p(Ŝŵ − sŜw), by hand
        w_hat = w_hat - p * (np.einsum("bij,bj->bi", S, w_hat) - s * np.einsum("bij,bj->bi", S, w))
    e = ((w_hat - w) ** 2).sum(1)
    assert abs(e.mean() - exact) < 5 * e.std() / np.sqrt(e.size)
    every = chains.isotropic_chain_error(d, n, p, k, s, every_step=True)
    assert every == pytest.approx(sum(chains.isotropic_chain_error(d, n, p, i, s) for i in range(1, k + 1)), rel=1e-12)


def test_one_step_optimum_is_gamma_inverse():
    for d, n in [(20, 10), (5, 40)]:
        p, s, value = chains.optimal_isotropic_step(d, n, 1)
        assert p == pytest.approx(n / (n + d + 1), abs=1e-8)
        assert value == pytest.approx(theory.one_step_error(np.eye(d), n, n), rel=1e-9)
        coef, steps, v = chains.optimal_polynomial(d, n, 1)
        assert steps[0] == pytest.approx(n / (n + d + 1), rel=1e-12) and v == pytest.approx(value, rel=1e-9)


def test_k_step_optimum_beats_a_grid_of_monte_carlo_steps():
    d, n, k = 6, 8, 4
    p_star, _, value = chains.optimal_isotropic_step(d, n, k)
    S = wishart_draws(d, n, 20000, seed=4)
    lam = np.linalg.eigvalsh(S)                                   # tr (I − pŜ)^{2k} from the eigenvalues
    grid = np.linspace(0.05, 1.0, 96)
    mc = np.array([((1 - p * lam) ** (2 * k)).sum(1).mean() for p in grid])
    assert abs(grid[np.argmin(mc)] - p_star) < 0.05             # the sample's argmin near the exact one
    assert value <= mc.min() * 1.05 and value == pytest.approx(chains.isotropic_chain_error(d, n, p_star, k), rel=1e-12)


def test_best_degree_two_polynomial_is_the_best_target_gain_chain():
    # two separate routes: a 2 x 2 linear system in the coefficients, and a search over (p, s)
    for d, n in [(20, 20), (4, 10)]:
        _, _, poly = chains.optimal_polynomial(d, n, 2)
        _, _, gain = chains.optimal_isotropic_step(d, n, 2, shrink=True)
        assert gain == pytest.approx(poly, rel=1e-6)


def test_optimal_polynomial_value_matches_its_steps_by_simulation():
    d, n, L = 5, 10, 3
    coef, steps, value = chains.optimal_polynomial(d, n, L)
    assert np.all(np.isreal(steps)) and np.all(steps > 0)
    S = wishart_draws(d, n, 40000, seed=5)
    R = np.broadcast_to(np.eye(d), S.shape).copy()
    for p in steps:
        R = (np.eye(d) - p * S) @ R
    e = (R * R).sum((1, 2))
    assert abs(e.mean() - value) < 5 * e.std() / np.sqrt(e.size)


def test_sample_average_preconditioner_isotropic_and_one_step():
    d, n = 6, 10
    P, _ = chains.k_step_preconditioner(np.eye(d), n, 2, n_prompts=3000, max_iter=100, seed=0)
    p_star = chains.optimal_isotropic_step(d, n, 2)[0]
    assert np.linalg.norm(P - p_star * np.eye(d)) / np.linalg.norm(p_star * np.eye(d)) < 0.1
    Lam = np.diag([2.0, 1.0, 0.5, 0.25])
    P1, _ = chains.k_step_preconditioner(Lam, 15, 1, n_prompts=4000, diagonal=True, max_iter=100, seed=1)
    G_inv = np.linalg.inv(theory.gamma(Lam, 15))
    assert np.allclose(np.diag(P1), np.diag(G_inv), rtol=0.05)
    assert np.allclose(P1, np.diag(np.diag(P1)), atol=1e-12)


def _loop_errors(p, S, k):
    """The oracle: k − 1 plain products per matrix, one matrix at a time."""
    B = [np.eye(len(p)) - np.diag(p) @ s for s in S]
    return np.array([np.linalg.norm(np.linalg.matrix_power(b, k)) ** 2 for b in B])


@pytest.mark.parametrize("k", [1, 2, 3, 5, 6, 7, 8, 11])
def test_diagonal_chain_errors_against_plain_products_and_autograd(k):
    rng = np.random.default_rng(k)
    d = 5
    X = rng.standard_normal((30, d, 8))
    S = X @ X.transpose(0, 2, 1) / 8
    p = rng.uniform(0.1, 0.6, d)
    e, g = chains.diagonal_chain_errors(p, S, k, grad=True)
    assert np.allclose(e, _loop_errors(p, S, k), rtol=1e-11, atol=0)
    x = torch.tensor(p, requires_grad=True)        # autograd through torch's own matrix power
    R = torch.linalg.matrix_power(torch.eye(d, dtype=torch.float64) - torch.diag(x) @ torch.as_tensor(S), k)
    (R * R).sum(dim=(1, 2)).mean().backward()
    assert np.allclose(g, x.grad.numpy(), rtol=1e-10, atol=1e-12 * np.abs(g).max())
    e32, g32 = chains.diagonal_chain_errors(p, S.astype(np.float32), k, grad=True)   # single precision
    assert e32.dtype == np.float64 and np.allclose(e32, e, rtol=1e-5)
    assert np.allclose(g32, g, rtol=1e-4, atol=1e-5 * np.abs(g).max())
    assert np.array_equal(chains.diagonal_chain_errors(p, S, k), e)


def test_diagonal_chain_errors_mean_is_the_exact_finite_m_error():
    # an independent sampler (the prompts' features) and the exact Isserlis value, for k <= 3
    Lam = np.diag([2.0, 1.0, 0.5, 0.25])
    n, p = 12, np.array([0.3, 0.5, 0.8, 1.1])
    S = prompts.sample_covariance(prompts.sample(Lam, n, 40000, seed=3).X).numpy()
    for k in (1, 2, 3):
        e = chains.diagonal_chain_errors(p, S, k)
        exact = theory.finite_m_error(np.diag(p), Lam, n, k)
        assert abs(e.mean() - exact) < 5 * e.std(ddof=1) / np.sqrt(e.size), k


def test_diagonal_chain_errors_overflow_is_inf():
    S = np.broadcast_to(10.0 * np.eye(3), (2, 3, 3)).astype(np.float32)
    assert np.all(chains.diagonal_chain_errors(np.full(3, 1e3), S, 16) == np.inf)
    rng = np.random.default_rng(0)                  # an overflow with mixed signs: inf − inf inside the products
    X = rng.standard_normal((1, 4, 6))
    S = (X @ X.transpose(0, 2, 1) / 6).astype(np.float32)
    p = rng.uniform(-1, 1, 4) * 10.0 ** rng.uniform(1, 10)
    assert chains.diagonal_chain_errors(p, S, 16)[0] == np.inf


def test_chain_outputs_are_the_rollout_and_one_step_is_direct_training():
    d, n, k = 3, 7, 4
    g = torch.Generator().manual_seed(0)
    D = 2 * d + 2
    model = lsa.LSA(d, V=0.3 * torch.randn(D, D, generator=g, dtype=torch.float64),
                    W=0.3 * torch.randn(D, D, generator=g, dtype=torch.float64))
    batch = prompts.sample(np.eye(d), n, 5, seed=0)
    outs = chains.chain_outputs(model, batch.X, batch.y, k)
    ref = lsa.rollout(model, batch.X, batch.y, k, last_only=False)
    assert torch.allclose(outs[:, :, lsa.blocks(d).w], ref[:, 1:], rtol=1e-10, atol=1e-12)
    assert torch.allclose(chains.chain_loss(model, batch, 1), training.lsa_loss(model, batch), rtol=1e-12)


def test_stacked_construction_is_preconditioned_gradient_descent():
    d, n, L = 4, 9, 3
    rng = np.random.default_rng(0)
    Ps = [np.diag(rng.uniform(0.2, 0.8, d)) for _ in range(L)]
    b, D = lsa.blocks(d), 2 * d + 2
    V = torch.zeros(L, D, D, dtype=torch.float64)
    for l, P in enumerate(Ps):
        V[l, b.w, b.x] = -torch.as_tensor(P)
    W = lsa.structured_W(d)[None].repeat(L, 1, 1)
    model = chains.StackedLSA(d, L, V, W)
    batch = prompts.sample(np.eye(d), n, 6, seed=2)
    est = model.estimates(batch.X, batch.y).detach().numpy()
    S, w = prompts.sample_covariance(batch.X).numpy(), batch.w.numpy()
    w_hat = np.zeros_like(w)
    for l, P in enumerate(Ps):
        w_hat = w_hat - np.einsum("ij,bjk,bk->bi", P, S, w_hat - w)
        assert np.allclose(est[:, l + 1], w_hat, rtol=1e-10, atol=1e-12)
    tied = chains.StackedLSA(d, L, V[:1], W[:1], tied=True)
    assert tied.estimates(batch.X, batch.y).shape == (6, L + 1, d)


def test_newton_schulz_squares_the_residual_and_finds_the_pseudo_inverse():
    d = 5
    for m in (12, 3):                                   # full rank, then rank-deficient (m < d)
        X = torch.as_tensor(np.random.default_rng(m).standard_normal((2, d, m)))
        S = prompts.sample_covariance(X)
        M = chains.newton_schulz(S, 30)   # more steps double the rounding noise on a null space (m < d)
        R = torch.eye(d, dtype=torch.float64) - M @ S[:, None]
        assert torch.allclose(R[:, 1:], R[:, :-1] @ R[:, :-1], atol=1e-10)
        assert np.allclose(M[:, -1].numpy(), np.linalg.pinv(S.numpy()), rtol=1e-6, atol=1e-6)
        err = chains.residual_errors(M, S)[:, -1]
        assert np.allclose(err, max(d - m, 0), atol=1e-6)


@pytest.mark.parametrize("call, message", [
    (lambda: chains.isotropic_power_traces(0, 5, 0.5, 2), "d must be an integer >= 1"),
    (lambda: chains.isotropic_chain_error(5, 5, 0.5, 0), "k must be an integer >= 1"),
    (lambda: chains.optimal_isotropic_step(5, 5, 61), "too long for the exact moments"),
    (lambda: chains.optimal_isotropic_step(5, 5, 2, shrink=1), "shrink must be True or False"),
    (lambda: chains.optimal_polynomial(5, 5, 0), "L must be an integer >= 1"),
    (lambda: chains.k_step_preconditioner(np.eye(3), 5, 2, n_prompts=0), "n_prompts must be an integer >= 1"),
    (lambda: chains.diagonal_chain_errors(np.ones(3), np.zeros((2, 3, 3)), 0), "k must be an integer >= 1"),
    (lambda: chains.diagonal_chain_errors(np.ones(2), np.zeros((2, 3, 3)), 2), "p must hold one entry per row"),
    (lambda: chains.diagonal_chain_errors(np.ones(3), np.zeros((3, 3)), 2), "S must be a (batch, d, d) stack"),
    (lambda: chains.diagonal_chain_errors(np.ones(3), np.full((1, 3, 3), np.nan), 2), "S must have finite"),
    (lambda: chains.diagonal_chain_errors(np.ones(3), np.zeros((1, 3, 3)), 2, grad=1), "grad must be True or False"),
    (lambda: chains.newton_schulz(torch.zeros(2, 3, 3), 2), "S must be non-zero"),
    (lambda: chains.StackedLSA(2, 2, torch.zeros(1, 6, 6), torch.zeros(1, 6, 6)), "V must have shape (2, 6, 6)"),
    (lambda: chains.train_chain(lsa.LSA(2), lambda t: None, [], chains.chain_loss), "stages must hold"),
])
def test_bad_arguments_name_the_argument_and_the_rule(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value)

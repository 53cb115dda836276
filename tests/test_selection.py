"""Tests for ttscale.selection: the surrogate QP (cvxpy) and the exact CoT-error optimiser (scipy)."""

from itertools import product

import numpy as np
import pytest

from ttscale import covariances, mixtures, selection

D = 6


def simplex_grid(L, steps):
    pts = np.array([p for p in product(range(steps + 1), repeat=L - 1) if sum(p) <= steps])
    return np.column_stack([pts, steps - pts.sum(axis=1)]) / steps


@pytest.fixture
def problem():
    Lams = mixtures.power_law_tasks(D, [0.2, 0.8, 0.5], rotate=True, seed=4)
    return Lams, np.array([10, 40, 25]), covariances.power_law(D, 0.6)


@pytest.mark.parametrize("solver", selection.SOLVERS)
def test_surrogate_beats_grid(problem, solver):
    Lams, _, Sigma = problem
    sel = selection.select_surrogate(Lams, Sigma, solver)
    assert sel.weights.min() >= 0 and sel.weights.sum() == pytest.approx(1.0, abs=1e-12)
    grid = min(selection.surrogate_objective(Lams, p, Sigma) for p in simplex_grid(3, 40))
    assert sel.objective <= grid + 1e-6


def test_surrogate_solvers_agree(problem):
    Lams, _, Sigma = problem
    w = [selection.select_surrogate(Lams, Sigma, s).weights for s in selection.SOLVERS]
    for other in w[1:]:
        np.testing.assert_allclose(other, w[0], atol=1e-3)


def test_surrogate_closed_form_two_tasks():
    """Two tasks: the QP optimum is the clipped 1-d least-squares solution along b1 − b2."""
    Lams = [covariances.power_law(4, 0.0), covariances.power_law(4, 1.0)]
    Sigma = covariances.power_law(4, 0.4)
    Si = np.linalg.inv(Sigma)
    b1, b2, e = (Si @ Lams[0]).ravel(), (Si @ Lams[1]).ravel(), np.eye(4).ravel()
    t = np.clip((e - b2) @ (b1 - b2) / ((b1 - b2) @ (b1 - b2)), 0, 1)
    sel = selection.select_surrogate(Lams, Sigma)
    np.testing.assert_allclose(sel.weights, [t, 1 - t], atol=1e-6)


def test_surrogate_recovers_exact_match():
    """If Σ is one of the tasks, the surrogate puts all mass on it (objective 0)."""
    Lams = [covariances.power_law(5, a) for a in (0.0, 0.5, 1.0)]
    sel = selection.select_surrogate(Lams, Lams[1])
    np.testing.assert_allclose(sel.weights, [0, 1, 0], atol=2e-5)  # interior point: ~sqrt(tol) at a zero residual
    assert sel.objective == pytest.approx(0.0, abs=1e-9)


def test_selector_reuse(problem):
    Lams, _, Sigma = problem
    sel = selection.SurrogateSelector(3, D)
    a = sel.solve(Lams, Sigma).weights
    sel.solve(Lams[::-1], Sigma)
    np.testing.assert_allclose(sel.solve(Lams, Sigma).weights, a, atol=1e-8)


def test_exact_gradient_matches_finite_differences(problem):
    Lams, ns, Sigma = problem
    p = np.array([0.2, 0.3, 0.5])
    g = selection.exact_gradient(Lams, ns, p, Sigma, 4)
    assert g @ p == pytest.approx(0.0, abs=1e-8 * np.abs(g).max())  # f is constant along rays
    eps = 1e-7
    for v in (np.array([1.0, -1.0, 0.0]), np.array([0.0, 1.0, -1.0])):
        fd = (selection.exact_objective(Lams, ns, p + eps * v, Sigma, 4)
              - selection.exact_objective(Lams, ns, p - eps * v, Sigma, 4)) / (2 * eps)
        assert g @ v == pytest.approx(fd, rel=1e-5)


def test_exact_beats_grid_and_is_deterministic(problem):
    Lams, ns, Sigma = problem
    sel = selection.select_exact(Lams, ns, Sigma, 5)
    grid = min(selection.exact_objective(Lams, ns, p, Sigma, 5) for p in simplex_grid(3, 40))
    assert sel.objective <= grid * (1 + 1e-9)
    again = selection.select_exact(Lams, ns, Sigma, 5)
    np.testing.assert_array_equal(sel.weights, again.weights)
    assert sel.objective == pytest.approx(selection.exact_objective(Lams, ns, sel.weights, Sigma, 5), rel=1e-12)


def test_exact_prefers_long_prompts_for_same_covariance():
    """Same Λ, n = 10 or 200, in distribution: the exact objective picks the long prompts."""
    Lam = covariances.power_law(D, 0.5)
    sel = selection.select_exact([Lam, Lam], [10, 200], Lam, 3)
    assert sel.weights[1] > 0.99


def test_draw_selections_shapes_and_aligned_is_one_draw():
    Sigma = covariances.power_law(5, 0.5)
    S, E = selection.draw_selections([0.2, 0.8], [10, 50], Sigma, 3, rotate=False, n_draws=7)
    assert S.shape == (1, 2) and E.shape == (1, 2)
    S, E = selection.draw_selections([0.2, 0.8], [10, 50], Sigma, 3, rotate=True, n_draws=3)
    assert S.shape == (3, 2)
    np.testing.assert_allclose(S.sum(axis=1), 1.0)


def test_paper_order():
    assert selection.paper_order_holds([0.1, 0.2, 0.3, 0.4], [3, 2, 1, 0])
    assert not selection.paper_order_holds([0.0, 0.0, 0.0, 1.0], [3, 2, 1, 0])
    assert selection.paper_order_holds([0.0, 0.0, 0.0, 1.0], [3, 2, 1, 0], strict=False)


# ---- validation ----

def test_singular_sigma_surrogate():
    with pytest.raises(ValueError, match="Sigma must be positive definite"):
        selection.select_surrogate([np.eye(3)], covariances.missing_skills(3, 1))


def test_no_task_surrogate():
    with pytest.raises(ValueError, match="at least one task"):
        selection.select_surrogate([], np.eye(3))


def test_mismatched_dimension_exact():
    with pytest.raises(ValueError, match="Sigma must be 3 x 3"):
        selection.select_exact([np.eye(3)], [5], np.eye(4), 2)


def test_exact_k_positive():
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        selection.select_exact([np.eye(3)], [5], np.eye(3), 0)


def test_unknown_solver():
    with pytest.raises(ValueError, match="solver must be one of"):
        selection.select_surrogate([np.eye(3)], np.eye(3), "MOSEK")


def test_surrogate_objective_weights_validated():
    with pytest.raises(ValueError, match="sum to 1"):
        selection.surrogate_objective([np.eye(3), np.eye(3)], [0.3, 0.3], np.eye(3))


def test_selector_shape_mismatch():
    sel = selection.SurrogateSelector(2, 3)
    with pytest.raises(ValueError, match="must hold 2 tasks of dimension 3"):
        sel.solve([np.eye(3)], np.eye(3))


def test_exact_objective_is_not_convex():
    """Along some segment of the simplex the exact error has a negative second difference."""
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 41)
    for trial in range(12):
        Sigma = covariances.power_law(10, [0.0, 0.5, 1.0][trial % 3])
        Lams = mixtures.power_law_tasks(10, [0.2, 0.8, 0.2, 0.8], rotate=trial % 2 == 0, seed=trial)
        p, q = rng.dirichlet(np.ones(4)), rng.dirichlet(np.ones(4))
        f = np.array([selection.exact_objective(Lams, [20, 20, 100, 100], (1 - x) * p + x * q, Sigma, [1, 3, 10][trial % 3])
                      for x in t])
        if (np.diff(f, 2) < -1e-7 * np.abs(f).max()).any():
            return
    pytest.fail("no non-convex segment found")


def test_four_type_experiment_table():
    names = ["Easy-Short", "Hard-Short", "Easy-Long", "Hard-Long"]
    t = selection.four_type_experiment(5, names, [0.2, 0.8, 0.2, 0.8], [10, 10, 50, 50], [0.0, 1.0], 3, n_draws=2,
                                       paper_order=names[::-1])
    assert len(t) == 8 and set(t.index.get_level_values("setting")) == {"aligned", "rotated"}
    np.testing.assert_allclose(t[names].sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(t["hard mass"], t["Hard-Short"] + t["Hard-Long"])
    assert (t.xs("aligned", level="setting")[[f"sd {n}" for n in names]] == 0).all().all()
    with pytest.raises(ValueError, match="paper_order names"):
        selection.four_type_experiment(5, names, [0.2, 0.8, 0.2, 0.8], [10, 10, 50, 50], [0.0], 3, n_draws=1,
                                       paper_order=["Medium"])


def test_diversity_sweep_missing_skills_cost_error():
    out = selection.diversity_sweep(6, [0, 1, 3], covariances.power_law(6, 0.5), 4)
    assert list(out.index) == [0, 1, 3]
    assert np.all(out["error without type 0"].to_numpy() >= np.array([0, 1, 3]) - 1e-9)
    assert np.all(out["optimal error"] <= out[["error without type 0", "error with type 0 only"]].min(axis=1) + 1e-12)
    with pytest.raises(ValueError, match="missing_counts must be < d"):
        selection.diversity_sweep(6, [6], np.eye(6), 2)


def test_relevance_sweep_drops_misaligned_task():
    out = selection.relevance_sweep(6, [0.0, np.pi / 2], covariances.power_law(6, 0.8), 4)
    assert out["surrogate weight"].iloc[0] > 0.99 and out["surrogate weight"].iloc[1] < 0.01


def test_hardness_sweep_surrogate_matches_target():
    S, E = selection.hardness_sweep(6, [0.0, 0.5, 1.0], 50, [0.5], 3)
    np.testing.assert_allclose(S.loc[0.5].to_numpy(), [0, 1, 0], atol=2e-5)
    np.testing.assert_allclose(E.sum(axis=1), 1.0)


def test_plots_build_figures():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["Easy-Short", "Hard-Short", "Easy-Long", "Hard-Long"]
    t = selection.four_type_experiment(4, names, [0.2, 0.8, 0.2, 0.8], [10, 10, 50, 50], [0.5], 2, n_draws=2)
    assert len(selection.plot_weights_by_target(t, names, [0.5]).axes) == 2
    div = selection.diversity_sweep(4, [0, 1], np.eye(4), 2)
    rel = selection.relevance_sweep(4, [0.0, 1.0], np.eye(4), 2)
    S, E = selection.hardness_sweep(4, [0.0, 1.0], 20, [0.0], 2)
    assert len(selection.plot_diverse_relevant_hard(div, rel, S, E).axes) == 3
    plt.close("all")

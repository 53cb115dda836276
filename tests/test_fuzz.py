"""Bad calls to the public library: each must raise ValueError naming the argument at fault.

Not a numpy or torch traceback, not a silent NaN, not a MemoryError or a hang. Each case is
(function, arguments, the argument's name that the message must contain).
"""

import numpy as np
import pytest
import torch

from ttscale import (covariances, estimators, gpt2, lsa, mixtures, prompts, selection, simulation, theory, training,
                     wishart)

NAN = float("nan")
d = 3
I = np.eye(d)
NAN_M = np.full((d, d), NAN)
INF_M = np.diag([1.0, np.inf, 1.0])
pr = prompts.sample(I, 5, 4, seed=0)
X, y, w = pr.X, pr.y, pr.w
X_nan = X.clone()
X_nan[0, 0, 0] = NAN
y_inf = y.clone()
y_inf[1, 2] = float("inf")
S = prompts.sample_covariance(X)
S_nan = S.clone()
S_nan[0, 0, 0] = NAN
MODEL = lsa.closed_form(I, 4)
GPT = gpt2.GPT2(gpt2.config_for(d, "smoke"))
LAMS = [I, np.diag([2.0, 1.0, 0.5])]
HUGE = 10**7

CASES = [
    # theory
    (theory.gamma, (NAN_M, 4), "Lam"),
    (theory.gamma, (I, 0), "n_train"),
    (theory.hardness, (INF_M,), "Lam"),
    (theory.cot_error, (I, 4, -1), "k"),
    (theory.cot_error, (I, 4, 2.5), "k"),
    (theory.cot_error, (I, 4, 3, NAN_M), "Sigma"),
    (theory.cot_error, (I, 4, np.arange(HUGE * 10)), "k"),
    (theory.map_error, (NAN_M, I, 2), "P"),
    (theory.map_error, (I, -I, 2), "Sigma"),
    (theory.one_step_error, (I, 4, 0), "m_test"),
    (theory.one_step_bound, (I, 4, -2), "m_test"),
    (theory.cot_error_bound, (I, 0, 2), "n_train"),
    (theory.smallest_n_train, (I, 2, 0.0), "target"),
    (theory.smallest_n_train, (I, 2, 1.0, 10**9), "n_max"),
    (theory.symmetrised_error, (I, 4, 2, np.eye(2)), "Sigma"),
    (theory.preconditioned_spectrum, (np.zeros((d, d)), 4), "Lam"),
    (theory.finite_m_error, (I, I, 5, 2, -0.1), "noise"),
    (theory.finite_m_error, (I, I, 0, 2), "m_test"),
    (theory.finite_m_error, (NAN_M, I, 5, 2), "P"),
    (theory.finite_m_error, (I, np.diag([1.0, 2, 3]), 5, 4), "k"),
    (theory.finite_m_cot_error, (I, 4, 5, 61), "k"),
    (theory.finite_m_conditional_sd, (I, np.diag([1.0, 2, 3]), 5, 2), "Sigma"),
    (theory.proportional_limit_error, (I, I, 5, 2, NAN), "noise"),
    # wishart
    (wishart.trace_moments, (0, 4, 3), "d"),
    (wishart.trace_moments, (3, 4, 10**6), "j_max"),
    (wishart.mixed_moment, (3, 4, (1, -1)), "powers"),
    (wishart.trace_expectation, ([NAN_M], I, 3), "B"),
    (wishart.trace_expectation, ([I], I, 0), "m"),
    (wishart.narayana_moments, (-1, 3), "gamma"),
    # covariances
    (covariances.identity, (0,), "d"),
    (covariances.power_law_spectrum, (d, NAN), "alpha"),
    (covariances.power_law_spectrum, (d, 1.0, "nope"), "normalise"),
    (covariances.random_rotation, (d, -1), "seed"),
    (covariances.from_spectrum, ([1.0, NAN, 2.0],), "eigenvalues"),
    (covariances.from_spectrum, ([1.0, -1.0],), "eigenvalues"),
    (covariances.power_law, (HUGE, 1.0), "d"),
    (covariances.missing_skills, (d, d), "r"),
    (covariances.spectrum, (NAN_M,), "Lam"),
    # prompts
    (prompts.sample, (I, 0, 3), "n"),
    (prompts.sample, (I, 5, -1), "batch"),
    (prompts.sample, (I, 10**5, 10**5), "batch"),
    (prompts.sample, (NAN_M, 5, 3), "Lam"),
    (prompts.generator, (0, "nope"), "stream"),
    (prompts.generator, (-1,), "seed"),
    (prompts.embed, (X_nan, y), "X"),
    (prompts.embed, (X, y[:, :2]), "y"),
    (prompts.estimate_token, (torch.full((2, d), NAN),), "w_hat"),
    (prompts.sample_covariance, (X_nan,), "X"),
    # lsa
    (lsa.blocks, (0,), "d"),
    (lsa.structured_W, (d, -1.0), "c"),
    (lsa.from_map, (NAN_M,), "A"),
    (lsa.closed_form, (I, 0), "n_train"),
    (lsa.rollout, (MODEL, X_nan, y, 2), "X"),
    (lsa.rollout, (MODEL, X, y_inf, 2), "y"),
    (lsa.rollout, (MODEL, X, y, -1), "k"),
    (lsa.rollout, (MODEL, X, y, HUGE), "k"),
    (lsa.rollout, (MODEL, X.numpy()[:, :2], y.numpy(), 2), "X"),
    (lsa.applied_map, (MODEL, NAN), "c"),
    # estimators and Monte Carlo
    (estimators.preconditioned_steps, (X, y, NAN_M, 2), "P"),
    (estimators.preconditioned_steps, (X_nan, y, I, 2), "X"),
    (estimators.preconditioned_steps, (X, y_inf, I, 2), "y"),
    (estimators.pseudo_newton, (X, y, I, 0, 2), "n_train"),
    (simulation.recursion_errors, (S_nan, w, I, 2), "S"),
    (simulation.recursion_errors, (S, w, NAN_M, 2), "P"),
    (simulation.recursion_errors, (S, torch.full_like(w, NAN), I, 2), "w"),
    (simulation.bootstrap, (np.array([[1.0, NAN]]),), "errors"),
    (simulation.bootstrap, (np.ones((3, 2)), 0), "n_boot"),
    (simulation.cot_errors, (I, 4, 5, 2, 0), "n_prompts"),
    (simulation.smallest_n_reaching, ([1, 2], np.ones((2, 3)), -1.0), "target"),
    # baselines and the estimated preconditioner
    (estimators.ols, (X_nan, y), "X"),
    (estimators.ridge, (X, y, -1.0), "penalty"),
    (estimators.ridge, (X, y_inf, 1.0), "y"),
    (estimators.gradient_descent, (X, y, -2), "k"),
    (estimators.newton, (X, y, NAN_M, 2), "Lam"),
    (estimators.plugin_gamma_inverse, (X_nan[None], 4), "X"),
    (estimators.plugin_gamma_inverse, (X[None], 0), "n_train"),
    (estimators.erm_preconditioner, (X[None], torch.full_like(w, NAN)[None]), "w"),
    # training
    (training.prompt_sampler, (I, 0, 4), "n_train"),
    (training.prompt_sampler, (I, 4, 0), "batch"),
    # hardness
    (theory.skill_hardness, (NAN_M,), "Lam"),
    (covariances.power_law_alpha_for_hardness, (d, 1.0), "H"),
    (covariances.equal_hardness_spectrum, (d, 10.0, "weak_skills", d), "r"),
    (covariances.weak_skill_spectrum, (d, 1, NAN), "level"),
    (theory.steps_to_target, (I, 4, 1.0, 10**8), "k_max"),
    (simulation.first_below, (np.ones((2, 0)), 1.0), "errors"),
    (simulation.first_below, ([1.0, NAN], 1.0), "errors"),
    (theory.effective_hardness, (I, 4, -1), "k"),
    # overthinking
    (simulation.spectral_radius, (NAN_M, S), "P"),
    (simulation.spectral_radius, (I, S_nan), "S"),
    (theory.mp_lambda_max, (4, 0, 5), "d"),
    (theory.critical_n_train, (I, NAN_M), "Sigma"),
    (simulation.best_k, ([],), "errors"),
    # mixtures and selection
    (mixtures.validate_weights, ([0.5, NAN], 2), "weights"),
    (mixtures.validate_weights, ([1.5, -0.5], 2), "weights"),
    (mixtures.mixture_map, (LAMS, [4, 4], [-0.5, 1.5]), "weights"),
    (mixtures.mixture_counts, ([NAN, 1.0], 8, 0, 0), "weights"),
    (mixtures.mixture_counts, ([-1.0, 2.0], 8, 0, 0), "weights"),
    (mixtures.population_loss, (NAN_M, LAMS, [4, 4], [0.5, 0.5]), "A"),
    (mixtures.population_loss, (I, LAMS, [4, 4], [0.5, NAN]), "weights"),
    (mixtures.mixture_cot_error, (LAMS, [4, 0], [0.5, 0.5], I, 2), "n_trains"),
    (mixtures.power_law_tasks, (d, []), "alphas"),
    (selection.surrogate_objective, (LAMS, [0.5, 0.5], NAN_M), "Sigma"),
    (selection.exact_objective, (LAMS, [4, 4], [NAN, 1.0], I, 2), "weights"),
    (selection.select_surrogate, ([], I), "Lams"),
    (selection.select_exact, (LAMS, [4, 4], I, -1), "k"),
    # gpt2
    (gpt2.config_for, (0,), "d"),
    (gpt2.config_for, (d, "huge"), "scale"),
    (gpt2.rollout, (GPT, X_nan.float(), y.float(), 2), "X"),
    (gpt2.rollout, (GPT, X.float(), y_inf.float(), 2), "y"),
    (gpt2.rollout, (GPT, X, y, HUGE), "k"),
    (gpt2.chain, (GPT, X, y, 0), "k"),
]


@pytest.mark.parametrize("fn, args, name", CASES, ids=[f"{c[0].__module__.split('.')[-1]}.{c[0].__name__}-{c[2]}-{i}"
                                                         for i, c in enumerate(CASES)])
def test_bad_call_raises_value_error_naming_the_argument(fn, args, name):
    with pytest.raises(ValueError) as info:
        fn(*args)
    assert name in str(info.value), str(info.value)


def test_the_fuzz_is_large():
    assert len(CASES) >= 80


def test_numpy_input_is_accepted_where_tensors_are_expected():
    ref = lsa.rollout(MODEL, X, y, 3)
    assert torch.allclose(lsa.rollout(MODEL, X.numpy(), y.numpy(), 3), ref)
    ref = estimators.preconditioned_steps(X, y, I, 2)
    assert torch.allclose(estimators.preconditioned_steps(X.numpy(), y.numpy(), I, 2), ref)


@pytest.mark.parametrize("scale", [1e-310, 1e-200, 1e200, 1e307])
def test_cot_error_is_scale_invariant_at_extreme_scales(scale):
    Lam = covariances.power_law(d, 1.0)
    ks = np.arange(6)
    ref = theory.cot_error(Lam, 4, ks)
    assert np.allclose(theory.cot_error(scale * Lam, 4, ks), ref, rtol=1e-10)
    Sigma = covariances.power_law(d, 0.3, rotate=True, seed=1)
    ref = theory.cot_error(Lam, 4, ks, Sigma)
    assert np.allclose(theory.cot_error(scale * Lam, 4, ks, scale * Sigma), ref, rtol=1e-10)

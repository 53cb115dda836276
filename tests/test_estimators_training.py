import numpy as np
import pytest
import torch

from ttscale import covariances as cv
from ttscale import estimators, lsa, prompts, theory, training


def test_preconditioned_steps_newton_converges_to_truth():
    # Noiseless, m > d: exact Newton with P = Ŝ⁻¹ recovers w in one step.
    P = prompts.sample(cv.identity(4), 30, 16, seed=0)
    S_inv = torch.linalg.inv(prompts.sample_covariance(P.X))
    out = estimators.preconditioned_steps(P.X, P.y, S_inv, 2)
    assert (out[:, 1] - P.w).abs().max() < 1e-9


def test_preconditioned_steps_bad_P():
    P = prompts.sample(cv.identity(4), 5, 2, seed=0)
    with pytest.raises(ValueError, match="P must be"):
        estimators.preconditioned_steps(P.X, P.y, torch.eye(3), 1)


def test_loss_at_closed_form_equals_theory():
    # ½ E‖f(Z)_last − (0;0;w;1)‖² = ½ ‖I − Γ⁻¹Λ‖² + ½ (finite-n variance) = ½ one_step_error(n = m)
    L = cv.power_law(4, 0.6)
    n = 8
    model = lsa.closed_form(L, n)
    batch = prompts.sample(L, n, 100_000, seed=1)
    loss = training.lsa_loss(model, batch).item()
    assert loss == pytest.approx(0.5 * theory.one_step_error(L, n, n), rel=0.02)


def test_training_reaches_gamma_inverse_and_is_deterministic():
    d, n = 3, 10
    L = cv.power_law(d, 0.5)
    runs = []
    for _ in range(2):
        model = lsa.LSA(d, W=lsa.structured_W(d), train_W=False)
        h = training.train_lsa(model, training.prompt_sampler(L, n, 256, seed=0), 400, lr=0.02,
                               record_every=100, progress=False)
        runs.append((model.V.detach().clone(), h))
    assert torch.equal(runs[0][0], runs[1][0])
    b = lsa.blocks(d)
    learned = runs[0][0].numpy()[b.w, b.x]
    target = -np.linalg.inv(theory.gamma(L, n))
    dist = [np.linalg.norm(V[b.w, b.x] - target) for V in runs[0][1].V]
    assert dist[-1] < 0.25 * dist[0]
    assert np.abs(learned - target).max() < 0.1
    assert list(runs[0][1].steps) == [0, 100, 200, 300, 400]


def test_mixture_batches_and_bad_args():
    L = cv.identity(3)
    model = lsa.closed_form(L, 5)
    mix = [prompts.sample(L, 5, 4, seed=0), prompts.sample(L, 9, 2, seed=1)]
    separate = [training.lsa_loss(model, g).item() for g in mix]
    assert training.lsa_loss(model, mix).item() == pytest.approx((4 * separate[0] + 2 * separate[1]) / 6)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        training.train_lsa(model, training.prompt_sampler(L, 5, 4), 1, optimizer="lbfgs")
    with pytest.raises(ValueError, match="lr must be > 0"):
        training.train_lsa(model, training.prompt_sampler(L, 5, 4), 1, lr=-1.0)


def test_start_step_continues_the_prompt_stream():
    # Training in two stages with start_step equals feeding the offset sampler by hand, and the
    # recorded steps count from start_step.
    d, L = 3, cv.power_law(3, 0.5)
    sampler = training.prompt_sampler(L, 6, 32, seed=2)
    a = lsa.LSA(d, W=lsa.structured_W(d), train_W=False)
    b = lsa.LSA(d, W=lsa.structured_W(d), train_W=False)
    training.train_lsa(a, sampler, 20, lr=0.02, progress=False)
    h = training.train_lsa(a, sampler, 20, lr=0.005, start_step=20, record_every=10, progress=False)
    training.train_lsa(b, sampler, 20, lr=0.02, progress=False)
    training.train_lsa(b, lambda t: sampler(20 + t), 20, lr=0.005, progress=False)
    assert torch.equal(a.V, b.V)
    assert list(h.steps) == [20, 30, 40]
    with pytest.raises(ValueError, match="start_step must be an integer >= 0"):
        training.train_lsa(a, sampler, 1, start_step=-1)


def test_train_stages_is_the_hand_written_schedule():
    # stages = one train_lsa per learning rate, a fresh optimiser each, the prompt stream continued
    d, L = 3, cv.power_law(3, 0.5)
    sampler = training.prompt_sampler(L, 6, 16, seed=4)
    a = lsa.LSA(d, W=lsa.structured_W(d), train_W=False)
    b = lsa.LSA(d, W=lsa.structured_W(d), train_W=False)
    h = training.train_stages(a, sampler, [(10, 0.03), (6, 0.01)], record_every=5)
    h1 = training.train_lsa(b, sampler, 10, 0.03, record_every=5, progress=False)
    h2 = training.train_lsa(b, lambda t: sampler(t), 6, 0.01, start_step=10, record_every=5, progress=False)
    assert torch.equal(a.V, b.V)
    np.testing.assert_array_equal(h.loss, np.concatenate([h1.loss, h2.loss]))
    assert list(h.steps) == [0, 5, 10, 10, 15, 16] and h.V.shape == (6, 2 * d + 2, 2 * d + 2)
    with pytest.raises(ValueError, match="stages must hold at least one"):
        training.train_stages(a, sampler, [])
    with pytest.raises(ValueError, match="lr must be > 0"):
        training.train_stages(a, sampler, [(3, 0.0)])


@pytest.mark.parametrize("structured", [True, False])
def test_frozen_W_loss_from_sums_equals_the_embedded_loss(structured):
    """With W frozen the loss skips the token embedding; loss and V-gradient equal the full f(Z)."""
    d = 4
    gen = torch.Generator().manual_seed(3)
    W = lsa.structured_W(d, 0.7) if structured else torch.randn(2 * d + 2, 2 * d + 2, generator=gen, dtype=torch.float64)
    V = torch.randn(2 * d + 2, 2 * d + 2, generator=gen, dtype=torch.float64)
    batch = [prompts.sample(cv.power_law(d, 0.5), 7, 5, seed=1), prompts.sample(cv.identity(d), 3, 2, seed=2)]
    fast = lsa.LSA(d, V, W, train_W=False)
    loss = training.lsa_loss(fast, batch)
    loss.backward()
    # oracle: the whole output f(Z) = Z + V Z (Zᵀ W Z) / N written out, its last column against (0; 0; w; 1)
    Vr = V.clone().requires_grad_(True)
    ref = 0.0
    for g in batch:
        Z = prompts.embed(g.X, g.y)
        out = (Z + Vr @ Z @ (Z.transpose(1, 2) @ W @ Z) / g.X.shape[2])[:, :, -1]
        target = torch.cat([torch.zeros(g.w.shape[0], d + 1, dtype=torch.float64), g.w,
                            torch.ones(g.w.shape[0], 1, dtype=torch.float64)], dim=1)
        ref = ref + 0.5 * ((out - target) ** 2).sum()
    ref = ref / 7
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    torch.testing.assert_close(fast.V.grad, Vr.grad, rtol=1e-10, atol=1e-12)
    trainable = lsa.LSA(d, V, W, train_W=True)   # the embedded path, taken when W is trained
    assert training.lsa_loss(trainable, batch).item() == pytest.approx(ref.item(), rel=1e-12)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_train_lsa_steps_exactly_as_torch_optim(optimizer):
    """The hand-written step (no torch.optim, whose first use imports torch's compiler) gives
    torch.optim.Adam's / SGD's numbers bit for bit, on the same batches."""
    L = cv.power_law(3, 0.5)
    sampler = training.prompt_sampler(L, 6, 32, seed=4)
    ours = lsa.LSA(3, W=lsa.structured_W(3), train_W=False)
    training.train_lsa(ours, sampler, 25, lr=0.05, optimizer=optimizer, progress=False)
    ref = lsa.LSA(3, W=lsa.structured_W(3), train_W=False)
    params = [p for p in ref.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=0.05) if optimizer == "adam" else torch.optim.SGD(params, lr=0.05)
    for t in range(25):
        opt.zero_grad()
        training.lsa_loss(ref, sampler(t)).backward()
        opt.step()
    start = lsa.LSA(3, W=lsa.structured_W(3), train_W=False).V
    assert torch.equal(ours.V, ref.V) and not torch.equal(ours.V, start)

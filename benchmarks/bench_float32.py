"""Would float32 pay for the book's Monte Carlo? Speed ratio and result shift, per primitive, in one run.

The chapters' Monte Carlo runs in float64. For each primitive they spend their time in, at the
sizes of a chapter's default parameters, this script measures

* the float64 / float32 time ratio (how many times faster float32 is), the two run in alternation
  in one process; the ratio printed is the median of the per-repeat ratios (a burst of load
  elsewhere on this shared 2-core machine hits both alike), never an absolute time;
* how far the float32 result moves from the float64 one, in units of the Monte Carlo standard error
  of that result: the largest |mean₃₂ − mean₆₄| / SE₆₄ over the steps k the chapter reads (and the
  same shift relative to |mean₆₄|). Both runs see the same random draws (drawn in float64, cast),
  so the shift is the arithmetic's alone. A step where one is finite and the other is not (float32
  overflows at 3.4e38, float64 at 1.8e308) counts as an infinite shift;
* how the float64 time splits: time per sequential step, and the arithmetic rate reached against a
  large matrix product's in the same dtype (near 1: compute-bound, float32's twice-as-wide SIMD can
  pay; far below: overhead- or memory-bound, it cannot pay twice).

The decision rule, the "target" of each line: float32 is worth it for a primitive where it is at
least 1.3× faster AND moves the result by less than 0.01 standard errors at every chapter size.
Each line prints PASS or FAIL; the script exits non-zero only when a measurement misses its own
sanity check (the float64 replica of a primitive not equal to the library's), not on a FAIL verdict:
a FAIL is a finding.

Primitives (d = 20 in every chapter):

* ``lsa.rollout``, the token-appending chain (``method="tokens"``, the default the chapters use):
  hardness (m = 400, sim_batch = 256 prompts, a long chain), finite_m (m = 40, 800 prompts,
  k = 20), overthinking's test size (m = d = 20, 1000 prompts, k = 20). float32 by the rollout's
  opt-in ``dtype=torch.float32`` (the model and prompts cast to it: its cost is in the timing).
* ``theory.map_error`` on a stack of sample covariances (what ``simulation.cot_errors(...,
  average_w=True)`` and the hardness chapter's Wishart reference call): hardness's reference
  (2000 Wishart draws, m = 400, k ≤ 100), overthinking's missing-skills curves (1000 prompts,
  m = 200, k ≤ 200) and its short-prompt slice (m = 40, n = 200: chains that diverge). The
  library's function is float64 only; its symmetric fast path (one eigendecomposition per prompt)
  is replicated here in a given dtype (:func:`map_error_sym`), its float64 replica checked equal
  to the library's.
* ``simulation.recursion_errors`` (``cot_errors(average_w=False)``, the pseudo-Newton chain on
  drawn w): 2000 prompts (its chunk), m = 40, k = 20. float32 by passing float32 tensors.

Where a chapter's time goes (cProfile of the hardness chapter's step-count comparison, its six
power laws × n ∈ {20, 100} at the default sizes, when this script was written): ``theory.map_error``
on the Wishart reference 39% (its batched ``eigh`` 21%), ``theory.finite_m_cot_error`` 27%,
``lsa.rollout`` 14%, drawing the prompts (``prompts.sample``) 13%, the Wishart draws 5%. So a
float32 rollout, 1.8-2.3× faster itself, would save under a tenth of that chapter; the larger
parts are float64-only numpy (``eigh`` of 20 × 20 matrices: LAPACK's float32 is no faster) or
random draws whose float32 stream would be a different sample, not a rounding of this one.

One intra-op thread. Run: ``.venv/bin/python benchmarks/bench_float32.py`` (about two minutes).
"""

from __future__ import annotations

import os
import sys
import time

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # before numpy and torch start their pools

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ttscale import covariances, lsa, prompts, simulation, theory, wishart  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_core import paired_ratio  # noqa: E402  (median of back-to-back pairs, shared)

MIN_SPEEDUP = 1.3  # float32 must be at least this many times faster ...
MAX_SHIFT_SE = 0.01  # ... and move the result by less than this many standard errors


def shift_in_se(e64: np.ndarray, e32: np.ndarray) -> tuple[float, float]:
    """Largest |mean₃₂ − mean₆₄| / SE₆₄ and |mean₃₂ − mean₆₄| / |mean₆₄| over the steps.

    Both means are taken in float64 over the same prompts, so only the primitive's arithmetic
    differs. A step where exactly one of the two means is finite is an infinite shift; a step
    where both are infinite (a chain that overflows in float64 too) is no shift. A step whose
    float64 values do not vary over the prompts (k = 0 of ``map_error``: ‖I‖_F² = d for every
    prompt) has no standard error to measure by and enters only the relative shift.
    """
    e64 = np.asarray(e64, dtype=np.float64)
    e32 = np.asarray(e32, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        m64, m32 = e64.mean(0), e32.mean(0)
        fin64, fin32 = np.isfinite(m64), np.isfinite(m32)
        if np.any(fin64 != fin32):
            return float("inf"), float("inf")
        se = e64[:, fin64].std(0, ddof=1) / np.sqrt(e64.shape[0])
        diff = np.abs(m32[fin64] - m64[fin64])
        scale = np.abs(m64[fin64])
    rel = diff / np.maximum(scale, np.finfo(float).tiny)
    random = se > 1e-9 * scale  # a step without Monte Carlo error (k = 0 of map_error: ‖I‖² = d) has no SE
    z = diff[random] / se[random]
    return float(z.max(initial=0.0)), float(rel.max(initial=0.0))


def map_error_sym(P, S, k_max: int, dtype) -> np.ndarray:
    """The symmetric fast path of :func:`ttscale.theory.map_error` (one P, a stack of Σ), in ``dtype``.

    The same arithmetic as ``theory._map_error_symmetric``: P = R Rᵀ, Rᵀ Σ R = V diag(ν) Vᵀ, error
    after j steps Σ_ab ((1 − ν_a)(1 − ν_b))^j (YᵀY ∘ UᵀU)_ab with Y = R V, U = R⁻ᵀ V. Shape
    (batch, k_max + 1).
    """
    P = np.asarray(P, dtype=dtype)
    S = np.asarray(S, dtype=dtype)
    R = np.linalg.cholesky((P + P.T) / 2)
    T = R.T @ S @ R
    nu, V = np.linalg.eigh((T + np.swapaxes(T, -1, -2)) / 2)
    Y = R @ V
    U = np.linalg.solve(R.T[None], V)
    C = (np.swapaxes(Y, -1, -2) @ Y) * (np.swapaxes(U, -1, -2) @ U)
    D = 1 - nu
    out = np.empty(nu.shape[:-1] + (k_max + 1,), dtype=dtype)
    Dk = np.ones_like(D)
    with np.errstate(over="ignore", invalid="ignore"):
        for j in range(k_max + 1):
            out[..., j] = (np.einsum("...i,...ij->...j", Dk, C) * Dk).sum(axis=-1)
            if j < k_max:
                Dk = Dk * D
    return np.where(np.isnan(out), np.inf, out)


def gemm_rate(dtype, n: int = 512) -> float:
    """Best flop rate of an n × n torch matrix product in ``dtype`` (the compute-bound ceiling)."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


class Case:
    """One primitive at one chapter size: float64 and float32 callables returning (prompts, steps) errors."""

    def __init__(self, primitive, label, f64, f32, flops, steps, ops, reference=None, in_verdict=True, part=None):
        self.primitive, self.label = primitive, label
        self.f64, self.f32, self.flops, self.steps, self.reference = f64, f32, flops, steps, reference
        self.ops = ops  # library (torch/numpy) calls per sequential step: the dispatch count
        self.part = part  # (name, float64 callable, float32 callable) of the dominant sub-step, or None
        self.in_verdict = in_verdict  # False: a stress size beyond what any chapter reads, reported only


def rollout_case(label, Lam, n, m, batch, k, step, in_verdict=True):
    test = prompts.sample(Lam, m, batch, seed=0, stream="test", step=step)
    m64 = lsa.closed_form(Lam, n)
    D = 2 * Lam.shape[0] + 2
    # per step and prompt: W z (D²), the T scores (D T), the mix (D T), V times it (D²); T ≈ m + k/2
    flops = 2 * batch * k * (2 * D * D + 2 * D * (m + k / 2))
    return Case("lsa.rollout", label,
                lambda: simulation.squared_errors(lsa.rollout(m64, test.X, test.y, k), test.w),
                lambda: simulation.squared_errors(lsa.rollout(m64, test.X, test.y, k, dtype=torch.float32), test.w),
                flops, k, ops=10, in_verdict=in_verdict)


def map_error_case(label, Lam, Sigma, n, m, batch, k, *, wishart_draws: bool, step):
    d = Lam.shape[0]
    if wishart_draws:
        S = wishart.sample_covariances(Sigma, m, batch, step=step)
    else:
        S = prompts.sample_covariance(prompts.sample(Sigma, m, batch, seed=0, stream="test", step=step).X).numpy()
    P = np.linalg.inv(theory.gamma(Lam, n))
    S32 = S.astype(np.float32)
    # eigh ≈ 9 d³, four d³ products; then 2 d² per step (the einsum and the product)
    flops = batch * (13 * d**3 * 2 + 2 * 2 * d * d * (k + 1))
    return Case("theory.map_error", label,
                lambda: map_error_sym(P, S, k, np.float64),
                lambda: map_error_sym(P, S32, k, np.float32),
                flops, k + 1, ops=4, reference=lambda: theory.map_error(P, S, np.arange(k + 1)),
                part=("the batched eigh", lambda: np.linalg.eigh(S), lambda: np.linalg.eigh(S32)))


def recursion_case(label, Lam, n, m, batch, k, step):
    test = prompts.sample(Lam, m, batch, seed=0, stream="test", step=step)
    S = prompts.sample_covariance(test.X)
    P = torch.as_tensor(np.linalg.inv(theory.gamma(Lam, n)))
    S32, w32, P32 = S.float(), test.w.float(), P.float()
    d = Lam.shape[0]
    flops = batch * (2 * d**3 + 2 * k * d * d)
    return Case("simulation.recursion_errors", label,
                lambda: simulation.recursion_errors(S, test.w, P, k),
                lambda: simulation.recursion_errors(S32, w32, P32, k),
                flops, k, ops=4)


def cases() -> list[Case]:
    d = 20
    I = covariances.identity(d)
    # the hardness chapter's hardest power law, H/d = 10: its longest chains (the rollout runs to
    # k_run = 16 at n = 20, the Wishart reference to k_ref = 4 k_bound + 20 = 84)
    Lam_pl = covariances.power_law(d, covariances.power_law_alpha_for_hardness(d, 10.0 * d))
    Lam_missing = covariances.missing_skills(d, 5)  # overthinking's missing skills, r = 5
    return [
        rollout_case("hardness: H/d=10, m=400, 256 prompts, n=20, k=16", Lam_pl, 20, 400, 256, 16, 0),
        rollout_case("finite_m: m=40, 800 prompts, n=20, k=20", I, 20, 40, 800, 20, 1),
        rollout_case("overthinking: m=20, 1000 prompts, n=20, k=20", I, 20, 20, 1000, 20, 2),
        rollout_case("stress, not read by any chapter: hardness size to k=100", Lam_pl, 20, 400, 256, 100, 0,
                     in_verdict=False),
        map_error_case("hardness reference: H/d=10, 2000 Wishart, m=400, k<=84", Lam_pl, Lam_pl, 20, 400, 2000, 84,
                       wishart_draws=True, step=3),
        map_error_case("overthinking missing: n=10, 1000 prompts, m=200, k<=20", Lam_missing, I, 10, 200, 1000, 20,
                       wishart_draws=False, step=4),
        map_error_case("overthinking short: n=200, 1000 prompts, m=40, k<=20", I, I, 200, 40, 1000, 20,
                       wishart_draws=False, step=5),
        recursion_case("cot_errors(average_w=False): 2000 prompts, m=40, k=20", I, 20, 40, 2000, 20, 6),
    ]


def main(argv=None) -> int:
    torch.set_num_threads(1)
    print(f"threads: torch {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    peak = {"64": gemm_rate(torch.float64), "32": gemm_rate(torch.float32)}
    print(f"  (512x512 gemm: float32 / float64 rate {peak['32'] / peak['64']:.2f}x: the most float32 can give a "
          f"compute-bound primitive)")
    print(f"rule: float32 worth it where >= {MIN_SPEEDUP}x faster AND shift < {MAX_SHIFT_SE} SE at every size\n")
    sane = True
    verdicts: dict[str, list[bool]] = {}
    for c in cases():
        e64, e32 = c.f64(), c.f32()
        if c.reference is not None:
            ref = c.reference()
            same = np.allclose(e64, ref, rtol=1e-9, atol=0) and np.array_equal(np.isinf(e64), np.isinf(ref))
            if not same:
                print(f"{c.primitive}: the float64 replica differs from the library's  MISS")
                sane = False
        z, rel = shift_in_se(e64, e32)
        t64 = timed(c.f64)
        share = c.flops / t64 / peak["64"]
        speedup = paired_ratio(c.f64, c.f32)
        ok = speedup >= MIN_SPEEDUP and z < MAX_SHIFT_SE
        if c.in_verdict:
            verdicts.setdefault(c.primitive, []).append(ok)
        print(f"{c.primitive} [{c.label}]")
        print(f"    float64/float32 time {speedup:5.2f}x (target >= {MIN_SPEEDUP})   shift {z:.2e} SE "
              f"(target < {MAX_SHIFT_SE}), {rel:.1e} relative   "
              f"{('PASS' if ok else 'FAIL') if c.in_verdict else ('pass' if ok else 'fail') + ' (not in the verdict)'}")
        per_op = 1e6 * t64 / c.steps / c.ops
        kind = ("dispatch-overhead-bound" if per_op < 50 else "compute-bound" if share > 0.5 else
                "bound by small-matrix kernels and memory, not by dispatch")
        print(f"    float64: {1e6 * t64 / c.steps:.0f} us per sequential step, ~{per_op:.0f} us per op "
              f"({c.ops} ops/step), {share:.0%} of the gemm flop rate -> {kind}")
        if c.part is not None:
            name, p64, p32 = c.part
            print(f"    {name}: {timed(p64) / t64:.0%} of the float64 time, float64/float32 "
                  f"{paired_ratio(p64, p32, repeat=5):.2f}x")
    print()
    for primitive, oks in verdicts.items():
        print(f"verdict {primitive:30s} {'float32 pays (every size passes)' if all(oks) else 'keep float64'}"
              f"  ({sum(oks)}/{len(oks)} sizes pass)")
    if not sane:
        print("a float64 replica missed its library function")
    return 0 if sane else 1


if __name__ == "__main__":
    sys.exit(main())

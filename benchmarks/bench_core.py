"""Speed of the core: population theory and the batched LSA rollout.

Targets (checked here, not in the test suite, because timings depend on the machine):
`theory.cot_error` for d = 100 and k = 0…100 in under 50 ms; the exact finite-m error
`theory.finite_m_error` for an isotropic curve k = 0…30 (cold moment cache) and for a general
(non-commuting) value at k = 3, d = 20, each in under 1 s. The rollout's throughput is
reported in prompt-steps per second. Run: `make bench` or `.venv/bin/python benchmarks/bench_core.py`.
"""

import sys
import time

import numpy as np
import torch

from ttscale import covariances, lsa, prompts, theory, wishart


def best_of(fn, repeat=7):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    ok = True
    Lam = covariances.power_law(100, 0.8, rotate=True, seed=0)
    Sigma = covariances.power_law(100, 0.3, rotate=True, seed=1)
    ks = np.arange(101)
    for label, kwargs in [("in distribution", {}), ("shifted Sigma", {"Sigma": Sigma})]:
        t = best_of(lambda: theory.cot_error(Lam, 50, ks, **kwargs))
        status = "ok" if t < 0.05 else "SLOW"
        ok &= t < 0.05
        print(f"cot_error d=100, k=0..100, {label:16s}: {1e3 * t:7.2f} ms  (target < 50 ms) {status}")

    def iso_cold():
        wishart._equations.cache_clear()  # cold: the Wishart moments and exact sums are recomputed
        theory._iso_parts.cache_clear()
        theory.finite_m_cot_error(np.eye(20), 20, 40, np.arange(31), noise=0.5)

    Lam20 = covariances.power_law(20, 0.8, rotate=True, seed=0)
    Sig20 = covariances.power_law(20, 0.3, rotate=True, seed=1)
    for label, fn in [
        ("isotropic, d=20, m=40, k=0..30, cold", iso_cold),
        ("general (rotated), d=20, m=40, k=3 ", lambda: theory.finite_m_cot_error(Lam20, 20, 40, 3, Sigma=Sig20, noise=0.5)),
    ]:
        t = best_of(fn, repeat=3)
        status = "ok" if t < 1.0 else "SLOW"
        ok &= t < 1.0
        print(f"finite_m_error {label}: {1e3 * t:7.1f} ms  (target < 1000 ms) {status}")

    for d, m, batch, k in [(20, 40, 2000, 20), (20, 200, 500, 20)]:
        L = covariances.identity(d)
        P = prompts.sample(L, m, batch, seed=0, stream="test")
        model = lsa.closed_form(L, 20)
        t = best_of(lambda: lsa.rollout(model, P.X, P.y, k), repeat=3)
        print(f"LSA rollout d={d}, m={m}, batch={batch}, k={k}: {t:6.3f} s = "
              f"{batch * k / t:,.0f} prompt-steps/s  (threads: {torch.get_num_threads()})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

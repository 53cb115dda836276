"""Speed of the core: population theory and the batched LSA rollout.

Targets (checked here, not in the test suite, because timings depend on the machine):
`theory.cot_error` for d = 100 and k = 0…100 in under 50 ms. The rollout's throughput is
reported in prompt-steps per second. Run: `make bench` or `.venv/bin/python benchmarks/bench_core.py`.
"""

import sys
import time

import numpy as np
import torch

from ttscale import covariances, lsa, prompts, theory


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

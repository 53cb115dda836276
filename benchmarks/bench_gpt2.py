"""Speed of the GPT-2 chapter's decoder as ratios measured side by side in one process.

Absolute times on this shared 2-core machine move with a neighbour's load, so each line is a ratio
of two timings taken in alternation, with its target and ok/MISS; the script exits non-zero only
when a ratio misses.

* The key-value-cached :func:`ttscale.gpt2.rollout` against :func:`ttscale.gpt2.rollout_uncached`
  (torch's ``TransformerEncoderLayer`` re-run on the whole sequence every step) for the chapter's
  default decoder (3 layers, width 64, d = 8), 1000 prompts of length 32, k = 20: ≤ 0.25×
  (measured about 0.1×). The two are also checked equal to float32 rounding.
* One training step of the chapter's default covered chain (random length 1 … 20, a loss window of
  4, batch 64, n = 16) against one step of a fixed chain of 3 with the whole chain recomputed at
  every application, the chapter's former training (:func:`reference_chain_loss`), both batch 64:
  ≤ 1.5× (the covered chain trains every test step for about the cost of the former three).
* The chapter's six covered models at n = 16 (three seeds, in distribution and skewed) trained as
  one stack (:func:`ttscale.gpt2.train_stack`) against the same six trained one at a time: ≤ 0.85×
  (measured 0.66-0.77 at a load of about 5; the results are equal bit for bit, tested).
* ``--chapter`` also times the default chapter from a cold cache (``python -m ttbook run gpt2``
  with an empty ``cache_dir``) against the target of 90 s on an idle 2-core machine; the time is
  reported, not judged, because a busy machine cannot hold it.

One intra-op thread. Run: ``.venv/bin/python benchmarks/bench_gpt2.py [--chapter]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ttscale import covariances, gpt2, prompts  # noqa: E402


from bench_core import paired  # noqa: E402  (this folder is on sys.path when run as a script)


def reference_chain_loss(model, batch, c):
    """The former training objective: c applications, each re-running the decoder on the whole sequence."""
    Z = prompts.embed(batch.X, batch.y)
    out = []
    for _ in range(c):
        w = model.reference_forward(Z)
        out.append(w)
        Z = torch.cat([Z, prompts.estimate_token(w)], dim=2)
    return ((torch.stack(out, 1) - batch.w[:, None]) ** 2).mean()


def covered_six(config, steps: int) -> list:
    """The chapter's six covered-chain jobs at n = 16 (three seeds, in distribution and skewed),
    ``steps`` optimiser steps each: the stack timed here and by ``host_speed.py``."""
    d = config.d
    tasks = (covariances.identity(d), covariances.power_law(d, 1.0, normalise="max"))
    return [(config, gpt2.TrainConfig(16, 20, steps, 32, 2e-3, s, chain_sampling="random", loss_window=4), L)
            for s in range(3) for L in tasks]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    torch.set_num_threads(1)
    d = 8
    torch.manual_seed(0)
    model = gpt2.GPT2(gpt2.config_for(d, "small")).eval()
    test = prompts.sample(covariances.identity(d), 32, 1000, seed=0, stream="test", dtype=torch.float32)
    a = gpt2.rollout(model, test.X, test.y, 20)
    b = gpt2.rollout_uncached(model, test.X, test.y, 20)
    diff = float((a - b).abs().max())
    ok = True
    t = paired({"cached": lambda: gpt2.rollout(model, test.X, test.y, 20),
                "uncached": lambda: gpt2.rollout_uncached(model, test.X, test.y, 20)}, repeat=2)
    r = t["cached"] / t["uncached"]
    ok &= r <= 0.25 and diff < 1e-4
    print(f"rollout cached/uncached, 1000 prompts, k = 20: {r:.3f} (target ≤ 0.25; {t['cached']:.2f} s against "
          f"{t['uncached']:.2f} s; max difference {diff:.1e}) {'ok' if r <= 0.25 and diff < 1e-4 else 'MISS'}")

    Lam = covariances.identity(d)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    covered = gpt2.TrainConfig(16, 20, 100, 64, 2e-3, 0, chain_sampling="random", loss_window=4)
    state = {"t": 0}

    def step_covered():
        batch = prompts.sample(Lam, 16, 64, seed=0, stream="train", step=state["t"], dtype=torch.float32)
        c = gpt2._chain_length(covered, state["t"])
        state["t"] += 1
        opt.zero_grad()
        gpt2.chain_loss(model, batch, c, min(4, c)).backward()
        opt.step()

    def step_former():
        batch = prompts.sample(Lam, 16, 64, seed=0, stream="train", step=0, dtype=torch.float32)
        opt.zero_grad()
        reference_chain_loss(model, batch, 3).backward()
        opt.step()

    t = paired({"covered": lambda: [step_covered() for _ in range(20)],
                "former": lambda: [step_former() for _ in range(20)]}, repeat=2)
    r = t["covered"] / t["former"]
    ok &= r <= 1.5
    print(f"training step, covered chain (1…20, window 4) / former fixed chain of 3 (batch 64): {r:.2f} "
          f"(target ≤ 1.5; {t['covered'] / 20 * 1e3:.0f} ms against {t['former'] / 20 * 1e3:.0f} ms) {'ok' if r <= 1.5 else 'MISS'}")

    # the stacked trainer: the chapter's six covered models at n = 16 (three seeds, in distribution and
    # skewed) as one stack, against the same six trained one at a time
    six = covered_six(model.config, 12)
    t = paired({"stack": lambda: gpt2.train_stack(six, device="cpu", progress=False),
                "alone": lambda: [gpt2.train(*job, device="cpu", progress=False) for job in six]},
               repeat=2, budget=60.0)
    r = t["stack"] / t["alone"]
    ok &= r <= 0.85
    print(f"training six models as one stack / one at a time (12 steps each, covered chains, n = 16): {r:.2f} "
          f"(target ≤ 0.85; {t['stack']:.1f} s against {t['alone']:.1f} s) {'ok' if r <= 0.85 else 'MISS'}")

    if "--chapter" in argv:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ttbook", "run", "gpt2", "-p", "cache_dir", repr(tmp),
                            "-o", os.path.join(tmp, "out.ipynb")], check=True, capture_output=True)
            print(f"default chapter from a cold cache: {time.perf_counter() - start:.0f} s (target ≤ 90 s on an idle machine)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

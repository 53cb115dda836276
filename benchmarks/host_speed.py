"""How fast this host is right now: one fixed piece of the book's heaviest work, timed.

The other benchmarks report ratios, which hold on a shared machine. Wall-clock times of the book
(`make book`, CI) do not: the same clean-clone build took 198 s and 248 s on the same machine kind
within two hours. This script times one fixed workload so that such a time can be quoted with the
host's speed beside it: 40 training steps of the GPT-2 chapter's six covered decoders at n = 16
(three seeds, in distribution and skewed) as one stack, one intra-op thread, the chapter's default
decoder. It has no target; it prints the seconds and the first model's weight hash (the same on
every run: the workload is fixed). The README's timings give this number for the host they were
measured on.

Run: ``.venv/bin/python benchmarks/host_speed.py`` (about 8-15 s).
"""

from __future__ import annotations

import os
import sys
import time

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import torch  # noqa: E402

from ttscale import gpt2  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_gpt2 import covered_six  # noqa: E402  (the same six jobs bench_gpt2 times)

STEPS = 40


def main() -> int:
    torch.set_num_threads(1)
    jobs = covered_six(gpt2.config_for(8, "small"), 400)   # the chapter's schedule, its first 40 steps
    start = time.perf_counter()
    out = gpt2.train_stack(jobs, device="cpu", progress=False, stop_after=STEPS)
    seconds = time.perf_counter() - start
    print(f"host speed: {STEPS} training steps of the GPT-2 chapter's six-model stack on one thread took "
          f"{seconds:.1f} s (weights {gpt2.state_hash(out[0].model)[:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

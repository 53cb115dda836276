"""Train the GPT-2 chapter's larger stored run once and write its results under data/gpt2/<scale>/.

One documented command (from the repository root):

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python tools/gpt2_stored_run.py --scale medium --processes 2   # CPU
    .venv/bin/python tools/gpt2_stored_run.py --scale paper --device cuda                    # GPU, under 10 min
    .venv/bin/python tools/gpt2_stored_run.py --scale tiny --out /tmp/x                      # seconds: the path's test

It trains (in ``--processes`` worker processes, one intra-op thread each; on a GPU one after another)
the models of :func:`runs` (in distribution at the paper's three n; skewed training, λ_1 = 1, against the
in-distribution control at the longest n, over several seeds), every one with random chain
lengths 1 … ``chain_train`` per batch so that training covers the test chain, evaluates each on
the same isotropic test prompts for k = 0 … ``k_max`` and writes

* ``config.json``: the exact configuration (model, training, test, torch version, command);
* ``models.json``: per model its setting, n, seed, cache key, the SHA-256 of its weights
  (:func:`ttscale.gpt2.state_hash`), training seconds and final loss;
* ``curves.csv``: mean error and its standard error over the test prompts, per model and k;
* ``loss.csv``: every model's training loss per step.

Checkpoints go to ``--cache`` (default ``_build/.ttscale_cache/gpt2_stored``), not to the repository.
``tests/test_gpt2.py`` retrains the first steps of the first model and checks ``loss.csv``'s prefix.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The stored runs' sizes. ``medium`` was sized to about 45 CPU-minutes of the project's shared 2-core
#: machine (measurements below); ``paper`` is the paper's GPT-2
#: and task sizes on a GPU (8 models of 2000 steps, estimated, not measured, at under 10 minutes on one GPU);
#: ``tiny`` is the seconds-long check of this path.
PRESETS = {
    "tiny": dict(scale="smoke", d=3, n_train=[4, 6, 8], seeds=[0, 1], steps=12, batch=16, lr=3e-3,
                 chain_train=4, loss_window=2, k_max=4, m_test=12, n_test=50),
    # eight models: n 20, 30, 40 in distribution and the skewed experiment against its control at n 40, three
    # seeds. Measured with the stacked trainer (ttscale.gpt2.train_stack) at a load of about 3: 0.24 CPU-s per
    # step at n 20, 0.33 per model-step at n 40 in a stack of four, so about 37 CPU-minutes in all; with
    # --processes 2 the six models at n 40 train as two stacks of three, one per process.
    "medium": dict(scale="medium", d=10, n_train=[20, 30, 40], seeds=[0, 1, 2], steps=1000, batch=32, lr=1e-3,
                   chain_train=20, loss_window=4, k_max=20, m_test=40, n_test=1000),
    "paper": dict(scale="paper", d=20, n_train=[20, 30, 40], seeds=[0, 1, 2], steps=2000, batch=64, lr=3e-4,
                  chain_train=20, loss_window=4, k_max=20, m_test=80, n_test=2000),
}


def runs(p: dict) -> list[tuple[str, int, int]]:
    """(setting, n, seed): in distribution at every n with the first seed; skewed and its control at the longest n, every seed."""
    n_long = max(p["n_train"])
    out = [("in", n, p["seeds"][0]) for n in p["n_train"]]
    out += [("skewed", n_long, s) for s in p["seeds"]]
    out += [("in", n_long, s) for s in p["seeds"][1:]]
    return out


def setup(preset: str):
    """The preset's configuration and, per run, (setting, n, seed, GPT2Config, TrainConfig, Λ)."""
    from ttscale import covariances, gpt2

    if preset not in PRESETS:
        raise ValueError(f"scale must be one of {sorted(PRESETS)}, got {preset!r}")
    p = PRESETS[preset]
    config = gpt2.config_for(p["d"], p["scale"])
    Lam = {"in": covariances.identity(p["d"]), "skewed": covariances.power_law(p["d"], 1.0, normalise="max")}
    jobs = []
    for setting, n, seed in runs(p):
        tc = gpt2.TrainConfig(n, p["chain_train"], p["steps"], p["batch"], p["lr"], seed,
                              chain_sampling="random", loss_window=p["loss_window"])
        jobs.append((setting, n, seed, config, tc, Lam[setting]))
    return p, config, jobs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="medium", help="one of " + ", ".join(PRESETS))
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--out", default=None, help="folder for the data files (default data/gpt2/<scale>)")
    ap.add_argument("--cache", default=str(ROOT / "_build" / ".ttscale_cache" / "gpt2_stored"))
    ap.add_argument("--processes", type=int, default=1, help="train the models in this many processes (CPU)")
    a = ap.parse_args(argv)

    import numpy as np
    import torch

    from ttscale import covariances, gpt2, prompts, simulation

    if a.scale not in PRESETS:  # refused before anything is trained
        raise SystemExit(f"scale must be one of {', '.join(PRESETS)}, got {a.scale!r}")
    dev = gpt2.resolve_device(a.device)  # "cuda" without one: refused here, naming the parameter
    torch.set_num_threads(1)
    p, config, jobs = setup(a.scale)
    out = Path(a.out or ROOT / "data" / "gpt2" / a.scale)
    out.mkdir(parents=True, exist_ok=True)
    test = prompts.sample(covariances.identity(p["d"]), p["m_test"], p["n_test"], seed=0, stream="test")
    t0 = time.perf_counter()
    # fill the cache: stacks of models differing only in seed and covariance, in parallel processes
    # (each model trained exactly as alone)
    gpt2.train_many([job[3:] for job in jobs], cache_dir=a.cache, processes=a.processes, device=str(dev))
    models, curves, losses = [], [], []
    for i, (setting, n, seed, cfg, tc, Lam) in enumerate(jobs):
        tr = gpt2.load_or_train(cfg, tc, Lam, cache_dir=a.cache, device=str(dev), progress=True)
        est = gpt2.rollout(tr.model, test.X, test.y, p["k_max"])
        sq = simulation.squared_errors(est, test.w)
        mean, se = sq.mean(0), sq.std(0, ddof=1) / np.sqrt(sq.shape[0])
        models.append({"id": i, "setting": setting, "n": n, "seed": seed, "key": gpt2.cache_key(cfg, tc, Lam),
                       "sha256": gpt2.state_hash(tr.model), "seconds": round(tr.seconds, 2),
                       "final_loss": float(tr.loss[-1])})
        curves += [(i, setting, n, seed, k, f"{mean[k]:.6g}", f"{se[k]:.4g}") for k in range(len(mean))]
        losses += [(i, t, f"{v:.7g}") for t, v in enumerate(tr.loss)]
        print(f"[{i + 1}/{len(jobs)}] {setting} n={n} seed={seed}: {tr.seconds:.0f} s, error k=1 {mean[1]:.4g}, "
              f"k={p['k_max']} {mean[-1]:.4g}", flush=True)
    config_json = {"preset": a.scale, **p, "model": config.as_dict(), "device": dev.type,
                   "skewed": "power law, alpha 1, lambda_1 = 1 (normalise='max')", "test_seed": 0,
                   "chain_sampling": "random", "torch": torch.__version__, "python": sys.version.split()[0],
                   "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                   "command": f"tools/gpt2_stored_run.py --scale {a.scale} --device {a.device} --processes {a.processes}",
                   "wall_seconds": round(time.perf_counter() - t0, 1),
                   "train_seconds": round(sum(m["seconds"] for m in models), 1)}
    (out / "config.json").write_text(json.dumps(config_json, indent=1) + "\n")
    (out / "models.json").write_text(json.dumps(models, indent=1) + "\n")
    with open(out / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "setting", "n", "seed", "k", "mean", "se"])
        w.writerows(curves)
    with open(out / "loss.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "step", "loss"])
        w.writerows(losses)
    print(f"wrote {out} in {config_json['wall_seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

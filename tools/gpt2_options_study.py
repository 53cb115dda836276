"""Run the GPT-2 chapter once per convention of the literature and store what each finds.

One documented command (from the repository root):

    OMP_NUM_THREADS=1 .venv/bin/python tools/gpt2_options_study.py --jobs 2

It executes ``book/gpt2.md`` at its default parameters (``python -m ttbook run gpt2``), once as it
is and once with each option of :data:`OPTIONS` switched on alone, ``--jobs`` runs side by side
(each training its decoders in one process, one intra-op thread), every run with its own empty model
cache so that each run's models are trained from scratch. From every run it keeps the three
verdicts the chapter records (finding (a), finding (b), direct training) and the numbers behind
them, and writes

* ``data/gpt2/options/results.csv``: one row per run, its option, the verdicts' statuses and
  sentences, and the numbers (late-rise factors, the direct decoder's errors, run seconds);
* ``data/gpt2/options/config.json``: the chapter's default parameters the runs used (so a later
  change of the defaults is detected by ``tests/test_chapter_gpt2.py``), the torch version, the
  command and the commit.

The chapter's section on the literature's conventions shows the table, labelled as stored.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Each convention of the GPT-2 in-context-learning literature, switched on alone (chapter parameters).
OPTIONS = {
    "none (the chapter's default)": {},
    "separate x and y tokens": {"tokens": "separate"},
    "learned positions": {"positions": "learned"},
    "loss on every prefix": {"prefix_loss": True},
    "curriculum on d and n": {"curriculum": True},
    "GPT-2 initialisation": {"init": "gpt2"},
}

#: Glued numbers kept from each run, beside the three verdicts.
NUMBERS = ["gpt2_long_k1", "gpt2_in_rise", "gpt2_skew_rise", "gpt2_diff_rise", "gpt2_diff_rise_lo",
           "gpt2_diff_rise_hi", "gpt2_direct_in_k1", "gpt2_direct_in_k2", "gpt2_fixed_in_rise",
           "gpt2_covered_in_rise"]
VERDICTS = ["gpt2_a", "gpt2_b", "gpt2_direct"]


def run_one(name: str, params: dict, workdir: Path, smoke: bool = False) -> dict:
    """One chapter run with ``params`` on top of the defaults; the row of results.csv."""
    out = workdir / f"run{list(OPTIONS).index(name)}.ipynb"
    cmd = [sys.executable, "-m", "ttbook", "run", "gpt2", "-o", str(out), "-p", "processes", "1",
           "-p", "cache_dir", repr(str(workdir / f"cache{list(OPTIONS).index(name)}"))]
    for k, v in params.items():
        cmd += ["-p", k, repr(v)]   # read back as a Python literal
    if smoke:
        cmd.append("--smoke")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    report = json.loads(out.with_suffix(".json").read_text())
    if report["status"] != "ok":
        raise SystemExit(f"the run with {name} failed: {report.get('error')}\n{proc.stderr[-2000:]}")
    res = report["results"]
    row = {"option": name, "parameters": json.dumps(params, sort_keys=True), "seconds": round(report["seconds"], 1)}
    for v in VERDICTS:
        rec = json.loads(res[f"verdict_{v}"])
        row[f"{v}_status"] = rec["status"]
        row[f"{v}_finding"] = rec["finding"]
    for k in NUMBERS:
        row[k] = f"{float(res[k]):.6g}"
    print(f"{name}: {row['seconds']:.0f} s; (a) {row['gpt2_a_status']}, (b) {row['gpt2_b_status']}, "
          f"direct {row['gpt2_direct_status']}", flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2, help="chapter runs side by side")
    ap.add_argument("--out", default=str(ROOT / "data" / "gpt2" / "options"))
    ap.add_argument("--smoke", action="store_true", help="the chapter's smoke parameters (checks this path)")
    a = ap.parse_args(argv)
    if a.jobs < 1:
        raise SystemExit(f"jobs must be an integer >= 1, got {a.jobs}")
    sys.path.insert(0, str(ROOT / "lib"))
    import torch

    from ttbook import parameters

    defaults = {p.name: p.default for p in parameters.describe("gpt2")}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(a.jobs) as pool:
        rows = list(pool.map(lambda item: run_one(*item, Path(tmp), a.smoke), OPTIONS.items()))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    config = {"chapter": "gpt2", "smoke": a.smoke, "defaults": defaults, "options": OPTIONS, "torch": torch.__version__,
              "command": f"tools/gpt2_options_study.py --jobs {a.jobs}" + " --smoke" * a.smoke, "commit": commit,
              "wall_seconds": round(time.perf_counter() - t0, 1)}
    (out / "config.json").write_text(json.dumps(config, indent=1, default=str) + "\n")
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out} in {config['wall_seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

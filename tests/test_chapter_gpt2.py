"""The GPT-2 chapter runs with its smoke parameters (training, then a cache hit), and stops early on bad ones."""

import papermill
import pytest
import torch

from ttbook import chapters, parameters
from ttbook.results import glued as _glued

pytestmark = pytest.mark.slow


def test_smoke_run_trains_then_hits_the_cache(tmp_path):
    params = {"cache_dir": str(tmp_path)}
    first = _glued(chapters.execute("gpt2", params, smoke=True))
    assert int(first["gpt2_n_cached"]) == 0
    n_runs = int(first["gpt2_n_runs"])
    assert len(list(tmp_path.glob("*.pt"))) == n_runs
    # a test-time-only change (longer chains, other test prompts) reuses every trained model
    second = _glued(chapters.execute("gpt2", dict(params, k_max=8, n_test=100), smoke=True))
    assert int(second["gpt2_n_cached"]) == n_runs
    assert float(second["gpt2_train_seconds"]) == pytest.approx(float(first["gpt2_train_seconds"]))


@pytest.mark.parametrize("params,msg", [
    ({"m_test": 0}, "parameter 'm_test' must be an int ≥ 1, got 0"),
    ({"scale": "huge"}, "parameter 'scale' must be one of"),
    ({"chain_train": 0}, "parameter 'chain_train' must be an int ≥ 1, got 0"),
    ({"lr": 0.0}, "parameter 'lr' must be a float > 0, got 0.0"),
    ({"n_train": [4, 0]}, "parameter 'n_train' must be a non-empty list of int ≥ 1"),
    ({"device": "tpu"}, "parameter 'device' must be one of"),
    ({"n_seeds": 1}, "parameter 'n_seeds' must be an int ≥ 2, got 1"),
    ({"processes": 0}, "parameter 'processes' must be an int in [1, 16], got 0"),
    ({"skew_normalise": "sum"}, "parameter 'skew_normalise' must be one of"),
    ({"chain_sampling": "poisson"}, "parameter 'chain_sampling' must be one of"),
    ({"loss_window": -1}, "parameter 'loss_window' must be an int ≥ 0, got -1"),
    ({"tokens": "pairs"}, "parameter 'tokens' must be one of"),
    ({"positions": "sinusoid"}, "parameter 'positions' must be one of"),
    ({"init": "xavier"}, "parameter 'init' must be one of"),
    ({"prefix_loss": 1}, "parameter 'prefix_loss' must be"),
])
def test_bad_parameter_is_refused(params, msg):
    with pytest.raises(ValueError) as err:  # decided before a kernel starts (tests/test_domains.py: and in the chapter)
        parameters.resolve("gpt2", params, smoke=True)
    assert msg in str(err.value)


def test_a_width_that_is_not_a_multiple_of_the_heads_stops_at_the_top():
    with pytest.raises(papermill.PapermillExecutionError, match="width must be a multiple of n_head") as info:
        chapters.execute("gpt2", {"width": 30, "n_head": 4}, smoke=True)
    assert info.value.exec_count <= 4  # imports, parameters, injected parameters, validation


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for a machine without CUDA")
def test_cuda_without_a_gpu_stops_at_the_top():
    with pytest.raises(papermill.PapermillExecutionError, match="device must be 'auto' or 'cpu' on a machine without CUDA") as info:
        chapters.execute("gpt2", {"device": "cuda"}, smoke=True)
    assert info.value.exec_count <= 4


def test_literature_options_run_and_are_reported(tmp_path):
    """Every option of the literature on at once, at smoke size: the chapter completes and says which are on."""
    params = {"cache_dir": str(tmp_path), "tokens": "separate", "positions": "learned", "prefix_loss": True,
              "curriculum": True, "init": "gpt2"}
    got = _glued(chapters.execute("gpt2", params, smoke=True))
    for name in ("tokens = 'separate'", "positions = 'learned'", "prefix_loss = True", "curriculum = True", "init = 'gpt2'"):
        assert name in got["gpt2_options"]


def test_the_stored_options_study_is_of_this_chapters_defaults():
    """data/gpt2/options: one row per option of the study's tool, run at the chapter's present defaults.

    A change of the chapter's defaults (or of the option list) makes the stored table describe
    another configuration; this test then fails and says to re-run the documented command.
    """
    import csv
    import importlib.util
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    folder = root / "data" / "gpt2" / "options"
    if not (folder / "results.csv").is_file():
        pytest.skip("the options study has not been stored")
    spec = importlib.util.spec_from_file_location("gpt2_options_study", root / "tools" / "gpt2_options_study.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cfg = json.loads((folder / "config.json").read_text())
    defaults = {p.name: p.default for p in parameters.describe("gpt2")}
    rerun = "re-run tools/gpt2_options_study.py"
    assert not cfg["smoke"], rerun
    assert cfg["defaults"] == defaults, rerun
    assert cfg["options"] == tool.OPTIONS, rerun
    assert all(set(o) <= set(defaults) for o in tool.OPTIONS.values())
    with open(folder / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["option"] for r in rows] == list(tool.OPTIONS)
    assert [json.loads(r["parameters"]) for r in rows] == list(tool.OPTIONS.values())
    from ttbook.verdicts import STATUSES

    for r in rows:
        for v in tool.VERDICTS:
            assert r[f"{v}_status"] in STATUSES and r[f"{v}_finding"]

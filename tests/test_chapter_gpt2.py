"""The GPT-2 chapter runs with its smoke parameters (training, then a cache hit), and stops early on bad ones."""

import papermill
import pytest

from ttbook import chapters
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
    ({"m_test": 0}, "m_test must be an integer >= 1"),
    ({"scale": "huge"}, "scale must be one of"),
    ({"width": 30, "n_head": 4}, "width must be a multiple of n_head"),
    ({"chain_train": 0}, "chain_train must be an integer >= 1"),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"n_train": [4, 0]}, "n_train must be an integer >= 1"),
    ({"device": "tpu"}, "device must be one of"),
])
def test_bad_parameter_stops_at_the_top(params, msg):
    with pytest.raises(papermill.PapermillExecutionError, match=msg) as info:
        chapters.execute("gpt2", params, smoke=True)
    assert info.value.exec_count <= 4  # imports, parameters, injected parameters, validation

"""The GPT-2 chapter runs with its smoke parameters (training, then a cache hit), and stops early on bad ones."""

import papermill
import pytest

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
])
def test_bad_parameter_is_refused(params, msg):
    with pytest.raises(ValueError) as err:  # decided before a kernel starts (tests/test_domains.py: and in the chapter)
        parameters.resolve("gpt2", params, smoke=True)
    assert msg in str(err.value)


def test_a_width_that_is_not_a_multiple_of_the_heads_stops_at_the_top():
    with pytest.raises(papermill.PapermillExecutionError, match="width must be a multiple of n_head") as info:
        chapters.execute("gpt2", {"width": 30, "n_head": 4}, smoke=True)
    assert info.value.exec_count <= 4  # imports, parameters, injected parameters, validation

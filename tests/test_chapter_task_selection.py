"""The task-selection chapter runs with its smoke parameters and stops early on a bad parameter."""

import pytest

from ttbook import chapters, parameters
from ttbook.results import glued


@pytest.mark.slow
def test_smoke_run():
    nb = chapters.execute("task_selection", smoke=True)
    assert any("trained vs A" in "".join(o.get("text", "") for o in c.get("outputs", [])) for c in nb.cells)
    g = glued(nb)
    # the pool reading's verdict is computed from its map, and names the chapter's own setting
    assert g["ts_map_verdict"].startswith("Under the pool reading, with 6 prompts per type at d = 8")
    assert g["ts_tr_pool_rank"].endswith("of 5")
    assert abs(g["ts_even_z"]) <= g["ts_even_tol"]       # the noise formula, asserted in the chapter too
    # the loss-formula check is sized to refuse the naive moment E S^2 = Lambda^2
    assert g["ts_mc_n"] >= g["ts_mc_needed"] and g["ts_mc_z_naive"] > 5
    assert g["ts_mc_power"] == "so the check refuses the naive moment"
    # the rotated rows' standard errors are what the prose says n_draws buys
    assert g["ts_rot_se_max"] > 0 and 0 <= g["ts_rot_n_clear"] <= g["ts_rot_n_rows"]
    # the pool counts: the sentence names the smoke sizes, and "enough" follows the need
    assert g["ts_size_pool"].startswith("With 4 pools")
    assert g["ts_size_map"].startswith("With 3 pools per cell")
    for key, need, n in (("ts_size_pool", "ts_pool_need", 4), ("ts_size_map", "ts_map_need", 3)):
        if "needs" in g[key]:
            assert ("is enough" in g[key]) == (int(g[need]) <= n), g[key]


@pytest.mark.slow
@pytest.mark.parametrize("params, message", [
    ({"k_select": 0}, "parameter 'k_select' must be an int ≥ 1, got 0"),
    ({"task_n": [20, 20, 100]}, "one entry per task type"),
    ({"task_names": ["Easy-Short", "Hard-Short", "Easy-Long", "Medium"]}, "parameter 'task_names' must be a non-empty list of one of"),
    ({"task_n": [20, 0, 100, 100]}, "parameter 'task_n' must be a non-empty list of int ≥ 1"),
    ({"solver": "MOSEK"}, "parameter 'solver' must be one of"),
    ({"missing_counts": [0, 8]}, "every missing_counts must be < d"),
    ({"map_dims": [1, 10]}, "parameter 'map_dims' must be a non-empty list of int ≥ 2"),
    ({"pool_draws": 1}, "parameter 'pool_draws' must be an int ≥ 2"),
])
def test_bad_parameter_fails_fast(params, message):
    with pytest.raises(ValueError) as err:  # decided before a kernel starts (tests/test_domains.py: and in the chapter)
        parameters.resolve("task_selection", params, smoke=True)
    assert message in str(err.value)

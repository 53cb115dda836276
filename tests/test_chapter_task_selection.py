"""The task-selection chapter runs with its smoke parameters and stops early on a bad parameter."""

import papermill
import pytest

from ttbook import chapters


@pytest.mark.slow
def test_smoke_run():
    nb = chapters.execute("task_selection", smoke=True)
    assert any("trained vs A" in "".join(o.get("text", "") for o in c.get("outputs", [])) for c in nb.cells)


@pytest.mark.slow
@pytest.mark.parametrize("params, message", [
    ({"k_select": 0}, "k_select must be an integer >= 1"),
    ({"task_n": [20, 20, 100]}, "one entry per task type"),
    ({"task_n": [20, 0, 100, 100]}, "n_trains[1] must be an integer >= 1"),
    ({"solver": "MOSEK"}, "solver must be one of"),
    ({"missing_counts": [0, 8]}, "missing_counts must be < d"),
])
def test_bad_parameter_fails_fast(params, message):
    with pytest.raises(papermill.PapermillExecutionError) as err:
        chapters.execute("task_selection", params, smoke=True)
    assert message in str(err.value)

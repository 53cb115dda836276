"""Every chapter of the book runs end to end with its smoke parameters (papermill).

A chapter that raises in any cell fails here, so ``make test`` catches what the book build
would. The bad-parameter test checks the promise that a nonsensical parameter stops a chapter
at its top with the library's sentence.
"""

from pathlib import Path

import pytest

from ttbook import chapters

pytestmark = pytest.mark.slow


TESTS = Path(__file__).parent


def _without_own_test():
    """Chapters whose own tests/test_chapter_NAME.py does not already run them with smoke
    parameters (running a chapter twice would only double the suite's time)."""
    def own(name):
        f = TESTS / f"test_chapter_{name}.py"
        return f.is_file() and "smoke=True" in f.read_text()

    return [n for n in chapters.chapters() if not own(n)]


@pytest.mark.parametrize("name", _without_own_test())
def test_chapter_runs_with_smoke_parameters(name, tmp_path):
    nb = chapters.execute(name, smoke=True, output=tmp_path / f"{name}.ipynb")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert chapters.smoke_parameters(name), f"chapter {name} declares no smoke parameters"


def test_every_chapter_declares_its_parameters():
    for name in chapters.chapters():
        params = chapters.default_parameters(name)
        assert "seed" in params, f"{name}: no seed parameter"
        unknown = set(chapters.smoke_parameters(name)) - set(params)
        assert not unknown, f"{name}: smoke parameters {unknown} are not in its parameters cell"


def test_bad_parameter_stops_intro_with_library_message():
    import papermill

    with pytest.raises(papermill.PapermillExecutionError) as info:
        chapters.execute("intro", {"m_test": 0}, smoke=True)
    assert "parameter 'm_test' must be an int ≥ 1, got 0" in str(info.value)
    # ...and it stops in the validation cell, before any simulation
    assert info.value.exec_count <= 3


def test_rerun_gives_identical_numbers():
    # Determinism is what makes the execution cache sound: same parameters and seed,
    # the same glued numbers, bit for bit.
    from ttbook.results import glued

    first = glued(chapters.execute("intro", smoke=True))
    second = glued(chapters.execute("intro", smoke=True))
    assert first and first == second
    other = glued(chapters.execute("intro", {"seed": 1}, smoke=True))
    assert other["intro_worst_z"] != first["intro_worst_z"]

"""Parameter domains (ttbook.domains) and their enforcement by the CLI and the chapters."""

import pytest

from ttbook import domains as D
from ttbook import parameters as P


@pytest.mark.parametrize("text, good, bad", [
    ("int >= 1", [1, 7], [0, -3, 2.5, True, "3", None]),
    ("int > 0", [1], [0]),
    ("float > 0", [0.5, 2, 1e300], [0.0, -1.0, float("nan"), float("inf"), True]),
    ("float in [0, 1]", [0.0, 1, 0.5], [-0.1, 1.5]),
    ("float in (0, 1)", [0.5], [0.0, 1.0]),
    ("int <= 60", [60, -4], [61]),
    ("bool", [True, False], [1, 0, "true", None]),
    ("str", ["a"], [1]),
    ('one of "power_law", "identity"', ["identity"], ["Identity", 1]),
    ("non-empty list of int >= 1", [[1], [3, 4]], [[], [0], 5, [1.5]]),
    ("list of float >= 0", [[], [0.0, 2]], [[-1.0]]),
    ("int >= 1 or None", [None, 3], [0]),
])
def test_domains_accept_and_refuse(text, good, bad):
    dom = D.parse_domain(text)
    for v in good:
        dom.check("x", v)
    for v in bad:
        with pytest.raises(ValueError, match=r"parameter 'x' must be .*got"):
            dom.check("x", v)


def test_int_is_accepted_for_float_and_converted():
    assert D.parse_domain("float > 0").check("x", 2) == 2.0 and isinstance(D.parse_domain("float > 0").check("x", 2), float)
    assert D.parse_domain("list of float >= 0").check("x", [1, 2]) == [1.0, 2.0]


def test_a_bound_may_name_another_parameter():
    doms = {"d": D.parse_domain("int >= 1"), "H": D.parse_domain("list of float >= d")}
    assert D.check({"d": 20, "H": [20, 30.0]}, doms)["H"] == [20.0, 30.0]
    with pytest.raises(ValueError, match=r"parameter 'H' must be a list of float >= d = 20, got \[10.0\]"):
        D.check({"d": 20, "H": [10.0]}, doms)


def test_requirements_name_the_rule_and_the_values():
    req = D.parse_requirement("all(k <= k_max for k in frontier_k) -> every frontier_k must be <= k_max")
    assert req.names == ("k_max", "frontier_k")  # in the order they are written
    req.check({"frontier_k": [1, 5], "k_max": 5})
    with pytest.raises(ValueError, match=r"every frontier_k must be <= k_max \(got k_max = 10, frontier_k = \[1, 20\]\)"):
        req.check({"frontier_k": [1, 20], "k_max": 10})
    broken = D.parse_requirement("max(xs) < 3 -> xs must stay below 3")
    with pytest.raises(ValueError, match="xs must stay below 3 .*raised ValueError"):
        broken.check({"xs": []})
    for bad in ["k < 3", "k <<< 3 -> nonsense"]:
        with pytest.raises(ValueError, match="requirement"):
            D.parse_requirement(bad)


@pytest.mark.parametrize("text", ["integer >= 1", "int >=", "int in [1, 2", "non-empty int", "one of [", "float ~ 3"])
def test_malformed_domains_are_refused(text):
    with pytest.raises(ValueError, match="domain"):
        D.parse_domain(text)


def test_the_cell_declares_domains_and_requirements():
    src = ("d = 20  # dimension | int >= 2\n"
           "rs = [1, 3]  # weak-skill counts, each < d | non-empty list of int >= 1\n"
           "plain = 3  # no domain: only its type is checked\n"
           "# require: all(r < d for r in rs) -> every rs must be < d\n")
    params = {p.name: p for p in P.describe_source(src)}
    assert params["d"].meaning == "dimension" and params["d"].domain.text == "int >= 2"
    assert params["rs"].meaning == "weak-skill counts, each < d" and params["plain"].domain is None
    (req,) = P.requirements_source(src)
    assert req.rule == "every rs must be < d"


def test_every_chapter_declares_a_domain_for_every_parameter_and_its_defaults_and_smoke_values_pass():
    from ttbook import chapters

    for name in chapters.chapters():
        params = P.describe(name)
        undeclared = [p.name for p in params if p.domain is None]
        assert not undeclared, f"{name}: no domain for {undeclared}"
        P.validate(name, {})
        P.resolve(name, smoke=True)


@pytest.mark.parametrize("overrides, message", [
    ({"d": "-3"}, "parameter 'd' must be an int ≥ 1, got -3"),
    ({"n_train": "[]"}, "parameter 'n_train' must be a non-empty list of int ≥ 1, got []"),
    ({"seed": "-1"}, "parameter 'seed' must be an int ≥ 0, got -1"),
])
def test_resolve_refuses_values_outside_their_domain(overrides, message):
    with pytest.raises(ValueError) as info:
        P.resolve("intro", overrides)
    assert str(info.value) == message


def test_enforce_writes_back_converted_values_and_refuses_bad_ones():
    ns = {"d": 4, "n_train": [5], "m_test": 8, "k_max": 3, "n_prompts": 10, "seed": 0}
    P.enforce("intro", ns)
    with pytest.raises(ValueError, match="parameter 'k_max' must be an int ≥ 1, got 0"):
        P.enforce("intro", dict(ns, k_max=0))
    with pytest.raises(ValueError, match="has not run"):
        P.enforce("intro", {"d": 4})


def test_papermill_reads_every_parameter_of_every_chapter():
    # papermill's own reader of a parameters cell gives up on a line with "=" in its comment (then it
    # warns "Passed unknown parameter" on every run): domains are written with ≥ and ≤
    from papermill.translators import PythonTranslator

    from ttbook import chapters

    for name in chapters.chapters():
        seen = {p.name for p in PythonTranslator.inspect({"source": chapters.parameters_cell(name)})}
        assert seen == {p.name for p in P.describe(name)}, name


def test_relations_between_knobs_are_refused_before_a_kernel_starts():
    with pytest.raises(ValueError, match=r"every frontier_k must be ≤ k_max \(got k_max = 10, frontier_k = \[1, 2, 3, 5, 10, 20\]\)"):
        P.resolve("pseudo_newton", {"k_max": "10"})
    with pytest.raises(ValueError, match="parameter 'rotate' must be a bool"):
        P.resolve("pseudo_newton", {"rotate": "1"})  # an int is not a bool
    assert P.resolve("pseudo_newton", {"k_max": "10", "frontier_k": "[1, 5, 10]"})["frontier_k"] == [1, 5, 10]


@pytest.mark.slow
@pytest.mark.parametrize("name", __import__("ttbook.chapters").chapters.chapters())
def test_a_plain_papermill_run_stops_in_the_cell_after_the_parameters(name, tmp_path):
    # the chapter enforces its own domains, so papermill without the CLI stops there, before any work
    import jupytext
    import papermill

    from ttbook import chapters

    nb = jupytext.read(chapters.chapter_path(name))
    path = tmp_path / f"{name}.ipynb"
    jupytext.write(nb, path)
    with pytest.raises(papermill.PapermillExecutionError) as info:
        papermill.execute_notebook(str(path), str(tmp_path / "out.ipynb"), parameters={"seed": -1},
                                   cwd=str(chapters.BOOK), progress_bar=False, kernel_name="python3")
    assert "parameter 'seed' must be an int ≥ 0, got -1" in str(info.value)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    first = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    enforcing = next(i for i, c in enumerate(cells) if "enforce(" in c.source)
    assert enforcing <= first + 2  # the parameters cell, at most one import cell, then the check
    assert info.value.exec_count <= enforcing + 2  # + the injected cell

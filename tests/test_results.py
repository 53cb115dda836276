"""Reading the glued (declared) results back from an executed notebook."""

import nbformat
from nbformat.v4 import new_code_cell, new_notebook, new_output

from ttbook import results

PREFIX = "application/papermill.record/"


def _glue(name, plain, display=False, extra=None):
    prefix = "" if display else PREFIX
    data = {prefix + "text/plain": plain, **{prefix + k: v for k, v in (extra or {}).items()}}
    return new_output("display_data", data=data, metadata={"scrapbook": {"name": name, "mime_prefix": prefix}})


def _nb():
    cell = new_code_cell("glue(...)", outputs=[
        _glue("ch_err", "0.125"), _glue("ch_n", "40"), _glue("ch_name", "'isotropic'"),
        _glue("ch_flag", "True", display=True), _glue("ch_np", "np.float64(2.5)"),
        _glue("ch_df", "   a  b\n0  1  2", extra={"text/html": "<table></table>"}),
        _glue("ch_fig", "<Figure size 640x480 with 1 Axes>", extra={"image/png": "iVBOR"}),
        new_output("stream", name="stdout", text="0.5\n"),
        new_output("display_data", data={"text/plain": "7"}),  # not glued: ignored
    ])
    later = new_code_cell("glue again", outputs=[_glue("ch_n", "80")])
    return new_notebook(cells=[cell, nbformat.v4.new_markdown_cell("text"), later])


def test_glued_reads_scalars_and_skips_figures_and_tables():
    assert results.glued(_nb()) == {"ch_err": 0.125, "ch_n": 80, "ch_name": "isotropic", "ch_flag": True,
                                    "ch_np": 2.5}


def test_glued_survives_a_round_trip_through_json(tmp_path):
    path = tmp_path / "x.ipynb"
    nbformat.write(_nb(), path)
    assert results.glued(nbformat.read(path, as_version=4))["ch_err"] == 0.125


def test_scalar():
    assert results.scalar("1e-3") == 1e-3 and results.scalar("nan") != results.scalar("nan")
    assert results.scalar("[1, 2]") is None and results.scalar("<object at 0x1>") is None
    assert results.scalar("np.int64(3)") == 3


def test_meanings_are_the_sentences_that_quote_each_number(tmp_path):
    from ttbook.results import meanings

    page = tmp_path / "c.md"
    page.write_text("---\nsmoke: {}\n---\n# T\n\nThe error is {glue:text}`c_err:.3f` at $k$ = {glue:text}`c_k`. "
                    "Next sentence.\n\n```{code-cell} ipython3\nglue('c_hidden', 1)  # {glue:text}`c_code`\n```\n")
    m = meanings(page)
    assert m["c_err"] == "The error is ▢ at k = …."
    assert m["c_k"] == "The error is … at k = ▢."
    assert "c_code" not in m and "c_hidden" not in m  # code is not prose


def test_glued_names_include_figures_and_text():
    assert results.glued_names(_nb()) == {"ch_err", "ch_n", "ch_name", "ch_flag", "ch_np", "ch_df", "ch_fig"}


def test_quoted_keys_reads_prose_and_directives_but_not_code(tmp_path):
    page = tmp_path / "c.md"
    page.write_text("# T\n\nSee {glue:text}`c_a:.2f` and {glue}`c_b`.\n\n```{note}\nInside {glue:text}`c_note`.\n```\n\n"
                    "```{code-cell} ipython3\nprint('{glue:text}`c_code`')\n```\n")
    assert results.quoted_keys(page) == {"c_a", "c_b", "c_note"}

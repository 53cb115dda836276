"""The Sphinx extension that puts each chapter's .ipynb in the book's download menu."""

import json
from types import SimpleNamespace

from ttbook import chapters, sphinx_notebooks


def _app(tmp_path, metadata):
    env = SimpleNamespace(metadata=metadata, doc2path=lambda name: str(chapters.ROOT / f"{name}.md"))
    return SimpleNamespace(env=env, outdir=str(tmp_path / "_build" / "html"), builder=SimpleNamespace(format="html"))


def test_notebook_page_gets_a_converted_notebook(tmp_path):
    app, context = _app(tmp_path, {"book/intro": {"kernelspec": {"name": "python3"}}}), {}
    sphinx_notebooks.add_notebook_download(app, "book/intro", "page.html", context, doctree=object())
    assert context["ipynb_source"] == "book/intro.ipynb"
    nb = json.loads((tmp_path / "_build/html/_sources/book/intro.ipynb").read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1 and "seed" in "".join(tagged[0]["source"])


def test_executed_notebook_is_preferred(tmp_path):
    executed = tmp_path / "_build/jupyter_execute/book/intro.ipynb"
    executed.parent.mkdir(parents=True)
    executed.write_text('{"executed": true}')
    app, context = _app(tmp_path, {"book/intro": {"kernelspec": {}}}), {}
    sphinx_notebooks.add_notebook_download(app, "book/intro", "page.html", context, doctree=object())
    nb = json.loads((tmp_path / "_build/html/_sources/book/intro.ipynb").read_text())
    assert nb["executed"] is True and nb["cells"][0]["id"] == sphinx_notebooks.INSTALL_CELL_ID


def test_downloaded_notebook_says_how_to_install_its_code(tmp_path):
    app, context = _app(tmp_path, {"book/intro": {"kernelspec": {}}}), {}
    sphinx_notebooks.add_notebook_download(app, "book/intro", "page.html", context, doctree=object())
    nb = json.loads((tmp_path / "_build/html/_sources/book/intro.ipynb").read_text())
    first = "".join(nb["cells"][0]["source"])
    assert nb["cells"][0]["cell_type"] == "markdown" and 'pip install "ttscale-source.tar.gz[run]"' in first
    assert sum(c.get("id") == sphinx_notebooks.INSTALL_CELL_ID for c in nb["cells"]) == 1
    again = sphinx_notebooks.with_install_cell(nb, "https://example.org/book", "b" * 40, "A Book")
    assert "chapter of the book *A Book*, built from commit `bbbbbbbbbb`" in again["cells"][0]["source"]
    assert len(again["cells"]) == len(nb["cells"])  # replaced, not added twice
    assert f'git+https://example.org/book@{"b" * 40}' in again["cells"][0]["source"]


def test_plain_pages_and_non_html_builders_are_left_alone(tmp_path):
    app, context = _app(tmp_path, {"book/references": {}}), {}
    sphinx_notebooks.add_notebook_download(app, "book/references", "page.html", context, doctree=object())
    assert context == {}
    app = _app(tmp_path, {"book/intro": {"kernelspec": {}}})
    app.builder.format = "latex"
    sphinx_notebooks.add_notebook_download(app, "book/intro", "page.html", context, doctree=object())
    assert context == {} and not (tmp_path / "_build").exists()

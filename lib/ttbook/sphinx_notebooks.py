"""Sphinx extension: a ".ipynb" download for every chapter of the rendered book.

The chapters are MyST-Markdown notebooks; readers who want to re-run one in Jupyter want the
notebook itself. sphinx-book-theme already shows a ".ipynb" entry in its download menu for any
page whose HTML context has ``ipynb_source``, but sets it only when launch buttons (Binder,
Colab, ...) are configured. This extension sets it for every page that is a notebook (a
``kernelspec`` in its metadata) and puts the notebook at ``_sources/PAGE.ipynb`` in the HTML
output: the executed notebook myst-nb wrote under ``_build/jupyter_execute`` (outputs included),
or, if there is none, the jupytext conversion of the source. Its first cell says how to install
the code it imports (:func:`install_line`: from the repository at the commit the book was built
from when ``repository: url:`` is set in ``_config.yml``, else from the source archive that
comes with the book). Registered in ``_config.yml`` (``sphinx: extra_extensions``); it runs
before the theme builds its header buttons.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from . import __version__

__all__ = ["setup", "add_notebook_download", "install_line", "with_install_cell"]

INSTALL_CELL_ID = "ttbook-install"


def install_line(url: str = "", commit: str = "unknown") -> str:
    """The one line that installs the code a downloaded chapter imports (Python 3.11)."""
    if url and commit != "unknown":
        return f'pip install "ttscale[run] @ git+{url}@{commit}"'
    return 'pip install "ttscale-source.tar.gz[run]"'


def with_install_cell(nb: dict, url: str = "", commit: str = "unknown", title: str = "") -> dict:
    """``nb`` with a first Markdown cell that says how to install what the notebook imports."""
    where = ("" if url and commit != "unknown" else
             " (`ttscale-source.tar.gz` is linked in the footer of every page of the book; in a clone "
             'of the repository, `pip install -e ".[run]"` does the same)')
    built = f", built from commit `{commit[:10]}`" if commit != "unknown" else ""
    book = f"the book *{title}*" if title else "the book"
    text = (f"*This notebook is a chapter of {book}{built}. "
            f"To run it outside the book's repository, first install the code it imports "
            f"(Python 3.11){where}:*\n\n```bash\n{install_line(url, commit)}\n```")
    cells = [c for c in nb.get("cells", []) if c.get("id") != INSTALL_CELL_ID]
    cell = {"cell_type": "markdown", "id": INSTALL_CELL_ID, "metadata": {"tags": ["remove-cell"]}, "source": text}
    return {**nb, "cells": [cell, *cells]}


def add_notebook_download(app, pagename, templatename, context, doctree):
    """``html-page-context`` handler: write ``_sources/PAGE.ipynb`` and point the menu at it."""
    if doctree is None or getattr(app.builder, "format", "") != "html":
        return
    if "kernelspec" not in app.env.metadata.get(pagename, {}):
        return
    source = Path(app.env.doc2path(pagename))
    if source.suffix == ".ipynb":  # the source itself is the notebook: the theme links it already
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    executed = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if executed.is_file():
        shutil.copyfile(executed, target)
    else:
        import jupytext

        jupytext.write(jupytext.read(source), target, fmt="ipynb")
    info = getattr(app, "_ttbook_info", None) or {}
    config = getattr(app, "config", None)
    url = ""
    if config is not None:
        from .sphinx_book import source_url

        url = source_url(getattr(config, "html_theme_options", {}) or {})
    nb = json.loads(target.read_text())
    title = getattr(config, "html_title", "") or ""  # Jupyter Book puts the book's title there
    nb = with_install_cell(nb, url, info.get("commit", "unknown"), title)
    target.write_text(json.dumps(nb, indent=1, ensure_ascii=False))
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app):
    """Register the extension with Sphinx (listed in ``_config.yml`` under ``extra_extensions``)."""
    app.connect("html-page-context", add_notebook_download, priority=450)
    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True}

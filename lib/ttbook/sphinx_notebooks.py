"""Sphinx extension: a ".ipynb" download for every chapter of the rendered book.

The chapters are MyST-Markdown notebooks; readers who want to re-run one in Jupyter want the
notebook itself. sphinx-book-theme already shows a ".ipynb" entry in its download menu for any
page whose HTML context has ``ipynb_source``, but sets it only when launch buttons (Binder,
Colab, ...) are configured. This extension sets it for every page that is a notebook (a
``kernelspec`` in its metadata) and puts the notebook at ``_sources/PAGE.ipynb`` in the HTML
output: the executed notebook myst-nb wrote under ``_build/jupyter_execute`` (outputs included),
or, if there is none, the jupytext conversion of the source. Registered in ``_config.yml``
(``sphinx: extra_extensions``); it runs before the theme builds its header buttons.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from . import __version__

__all__ = ["setup", "add_notebook_download"]


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
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app):
    """Register the extension with Sphinx (listed in ``_config.yml`` under ``extra_extensions``)."""
    app.connect("html-page-context", add_notebook_download, priority=450)
    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True}

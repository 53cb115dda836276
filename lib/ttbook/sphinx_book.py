"""Sphinx extension: what ties each rendered page to the code and the paper it came from.

* **Author–year bibliography labels.** The text cites with sphinxcontrib-bibtex's
  ``author_year`` style ("Javanmard et al., 2025"); the bibliography's default labels are
  alphanumeric ("JMM25"). :class:`AuthorYearLabelStyle` gives each entry the label the text
  shows, registered as the pybtex formatting style ``ttbook`` (``bibtex_default_style`` in
  ``_config.yml``).
* **Version and commit on every page.** The footer names the package version (``pyproject.toml``)
  and the git commit the book was built from (``git rev-parse``; "unknown" outside git, with
  "+ local changes" when the work tree differs from it), links the source archive of that commit
  and, when ``repository: url:`` is set in ``_config.yml``, the commit in the repository.
* **Substitutions** ``{{ ttbook_version }}`` and ``{{ ttbook_commit }}`` for the pages (the
  "How to cite" section).
* **The source of this build.** ``_static/ttscale-source.tar.gz``, the files the book was built
  from (git's tracked and unignored files, uncommitted edits included; every file outside git),
  so an offline copy of the book carries the code that made it and ``pip install
  "ttscale-source.tar.gz[run]"`` installs it.

Registered in ``_config.yml`` (``sphinx: extra_extensions``).
"""

from __future__ import annotations

import html
import subprocess
from pathlib import Path

from . import __version__

__all__ = ["setup", "build_info", "footer_html", "source_url", "source_files", "write_source_archive",
           "author_year_label", "AuthorYearLabelStyle"]

UNSET_URLS = {"", "https://github.com/executablebooks/jupyter-book"}  # Jupyter Book's placeholder
ARCHIVE = "_static/ttscale-source.tar.gz"


def _git(root, *args) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def build_info(root) -> dict:
    """``version``, ``commit`` (full hash or "unknown"), ``short`` and ``dirty`` of the tree at ``root``."""
    commit = _git(root, "rev-parse", "HEAD") or "unknown"
    status = _git(root, "status", "--porcelain", "--untracked-files=no") if commit != "unknown" else None
    return {"version": __version__, "commit": commit, "short": commit[:10], "dirty": bool(status)}


def source_url(theme_options: dict) -> str:
    """The repository URL set in ``_config.yml`` (``repository: url:``), or "" if none was set."""
    url = (theme_options or {}).get("repository_url") or ""
    return "" if url.rstrip("/") in UNSET_URLS else url.rstrip("/")


def footer_html(info: dict, url: str = "", archive: str | None = ARCHIVE, prefix: str = "../") -> str:
    """The footer line: version, commit (linked in the repository if ``url``), source, how to cite."""
    commit = html.escape(info["short"]) + (" + local changes" if info["dirty"] else "")
    if url and info["commit"] != "unknown":
        commit = f'<a href="{html.escape(url)}/tree/{html.escape(info["commit"])}">{commit}</a>'
    parts = [f"ttscale {html.escape(info['version'])}, commit {commit}"]
    if url:
        parts.append(f'source: <a href="{html.escape(url)}">{html.escape(url)}</a>')
    if archive:
        parts.append(f'<a href="{prefix}{archive}">source archive of this build</a>')
    parts.append(f'<a href="{prefix}book/references.html#sec-how-to-cite">how to cite</a>')
    return '<p class="ttbook-build">' + " · ".join(parts) + "</p>"


def author_year_label(entry) -> str:
    """The label the text cites an entry by: "Smith, 2020", "Smith and Jones, 2020", "Smith et al., 2020"."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    last = [" ".join(p.prelast_names + p.last_names) for p in people]
    last = [_plain(n) for n in last]
    names = (last[0] if len(last) == 1 else f"{last[0]} and {last[1]}" if len(last) == 2
             else f"{last[0]} et al." if last else entry.fields.get("title", entry.key))
    return f"{names}, {entry.fields.get('year', 'n.d.')}"


def _plain(name: str) -> str:
    """A BibTeX name as text: LaTeX accents decoded (latexcodec comes with pybtex), braces dropped."""
    import codecs

    try:
        import latexcodec  # noqa: F401  (registers the codec)

        name = codecs.decode(name, "ulatex")
    except (ImportError, ValueError, LookupError):
        pass
    return name.replace("{", "").replace("}", "")


def _label_style():
    from pybtex.style.labels import BaseLabelStyle

    class AuthorYear(BaseLabelStyle):
        """pybtex label style: author–year labels, made unique with a, b, ... where they clash."""

        def format_labels(self, sorted_entries):
            labels = [author_year_label(e) for e in sorted_entries]
            for i, label in enumerate(labels):
                same = [j for j, other in enumerate(labels) if other == label]
                yield label if len(same) == 1 else label + "abcdefghijklmnopqrstuvwxyz"[same.index(i)]

    return AuthorYear


def _formatting_style():
    from pybtex.style.formatting.unsrt import Style

    class AuthorYearStyle(Style):
        default_label_style = _label_style()
        default_sorting_style = "author_year_title"

    return AuthorYearStyle


def __getattr__(name):  # the pybtex classes, built on first use (pybtex is a book dependency only)
    if name == "AuthorYearLabelStyle":
        return _label_style()
    raise AttributeError(name)


def _config_inited(app, config):
    root = Path(app.srcdir)
    info = build_info(root)
    app._ttbook_info = info
    options = dict(config.html_theme_options or {})
    extra = options.get("extra_footer") or ""
    options["extra_footer"] = extra + footer_html(info, source_url(options))
    config.html_theme_options = options
    context = dict(config.html_context or {})
    context.update(ttbook_version=info["version"], ttbook_commit=info["commit"])
    config.html_context = context
    commit = info["short"] + (" + local changes" if info["dirty"] else "")
    subs = dict(getattr(config, "myst_substitutions", None) or {})
    subs.update(ttbook_version=info["version"], ttbook_commit=commit)  # {{ ttbook_version }} in a page
    config.myst_substitutions = subs


SKIP = ("_build/", ".venv/", ".git/", "runs/", "sweeps/", "_static/mathjax/")  # not needed to install or run


def source_files(root) -> list[str]:
    """The files of the book's source at ``root``: git's tracked and unignored ones, else a walk."""
    root = Path(root)
    listed = _git(root, "ls-files", "-co", "--exclude-standard")
    if listed is not None and _git(root, "rev-parse", "--show-toplevel") == str(root.resolve()):
        names = listed.splitlines()
    else:
        names = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]
    return sorted(n for n in names if not n.startswith(SKIP) and "__pycache__" not in n
                  and not n.endswith((".pyc", ".ipynb")) and (root / n).is_file())


def write_source_archive(root, target) -> Path:
    """``target``, a ``.tar.gz`` of :func:`source_files` under ``ttscale/``: what this build was made from."""
    import tarfile

    root, target = Path(root), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w:gz") as tar:
        for name in source_files(root):
            tar.add(root / name, arcname=f"ttscale/{name}", recursive=False)
    return target


def _write_archive(app, exception):
    if exception is not None or getattr(app.builder, "format", "") != "html":
        return
    write_source_archive(app.srcdir, Path(app.outdir) / ARCHIVE)


def setup(app):
    """Register the extension (listed in ``_config.yml`` under ``extra_extensions``)."""
    from pybtex.plugin import register_plugin

    register_plugin("pybtex.style.formatting", "ttbook", _formatting_style(), force=True)
    app.connect("config-inited", _config_inited)
    app.connect("build-finished", _write_archive)
    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True}

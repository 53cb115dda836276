"""Find, inspect and execute the book's chapters (jupytext MyST notebooks) with papermill.

A chapter is a MyST-Markdown notebook under ``book/`` with a ``kernelspec`` in its front
matter, a code cell tagged ``parameters``, and (optionally) a ``smoke:`` mapping in its
front matter: the small parameters that make it run in about a minute, used by the tests.

Used by the tests (every chapter runs with its smoke parameters) and by ``python -m ttbook``.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

__all__ = ["ROOT", "BOOK", "chapter_path", "chapters", "front_matter", "title", "smoke_parameters",
           "default_parameters", "parameters_cell", "execute", "THREAD_VARIABLES", "one_thread_env"]

#: The variables that size the intra-op thread pools of OpenMP, MKL and OpenBLAS (and torch,
#: which reads ``OMP_NUM_THREADS`` when it starts). A kernel started by :func:`execute` gets each
#: set to 1 unless the caller's environment already sets it: on the book's 2-core machines two
#: threads per process ran torch and BLAS 2.6-6x slower than one, and runs go side by side.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def one_thread_env(env=None) -> dict:
    """A copy of ``env`` (default ``os.environ``) with every :data:`THREAD_VARIABLES` entry that
    is not already set put to ``"1"``: the environment of a kernel or worker process."""
    out = dict(os.environ if env is None else env)
    for name in THREAD_VARIABLES:
        out.setdefault(name, "1")
    return out



def find_root(start=None) -> Path:
    """The book's source folder: the one holding ``_toc.yml`` and ``book/``.

    Looked for in ``$TTBOOK_ROOT`` if set, else in ``start`` (default: the working directory)
    and its parents, else beside this package (an editable install inside the repository).
    Raises ValueError saying where it looked when none of them is a book.
    """
    def is_book(p: Path) -> bool:
        return (p / "_toc.yml").is_file() and (p / "book").is_dir()

    env = os.environ.get("TTBOOK_ROOT")
    if env:
        if not is_book(Path(env)):
            raise ValueError(f"TTBOOK_ROOT={env!r} must name a folder holding _toc.yml and book/")
        return Path(env).resolve()
    here = Path(start or Path.cwd()).resolve()
    for p in (here, *here.parents, Path(__file__).resolve().parents[2]):
        if is_book(p):
            return p
    raise ValueError(f"no book found: neither {here} nor its parents hold _toc.yml and book/ "
                     "(run from the book's folder or set TTBOOK_ROOT)")


ROOT = find_root()
BOOK = ROOT / "book"


def chapter_path(name) -> Path:
    """Resolve ``intro``, ``intro.md`` or ``book/intro.md`` to the chapter's source file."""
    p = Path(name)
    candidates = [p, ROOT / p, BOOK / p, BOOK / f"{p}.md", ROOT / f"{p}.md"]
    for c in candidates:
        if c.is_file() and c.suffix == ".md":
            return c.resolve()
    raise ValueError(f"chapter must name a notebook in book/ (one of {', '.join(chapters())}), got {str(name)!r}")


def chapters() -> list[str]:
    """Names of the executable chapters, in table-of-contents order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for c in _walk(toc)]
    out = []
    for f in files:
        path = ROOT / f"{f}.md"
        if path.is_file() and "kernelspec" in front_matter(path):
            out.append(Path(f).name)
    return out


def _walk(node):
    for key in ("parts", "chapters", "sections"):
        for child in node.get(key, []) or []:
            if "file" in child:
                yield child
            yield from _walk(child)


def front_matter(path) -> dict:
    """The YAML front matter of a chapter (empty dict if it has none)."""
    text = Path(path).read_text()
    if not text.startswith("---"):
        return {}
    end = text.index("\n---", 3)
    return yaml.safe_load(text[3:end]) or {}


def title(name) -> str:
    """The chapter's title: its first level-1 heading."""
    for line in chapter_path(name).read_text().splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return chapter_path(name).stem


def smoke_parameters(name) -> dict:
    """The chapter's ``smoke:`` parameters (front matter); {} if it declares none."""
    return dict(front_matter(chapter_path(name)).get("smoke") or {})


def parameters_cell(name) -> str:
    """The source of the chapter's code cell tagged ``parameters`` (read, not run)."""
    import jupytext

    nb = jupytext.read(chapter_path(name))
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            return cell.source
    raise ValueError(f"chapter {str(name)!r} has no code cell tagged 'parameters'")


def default_parameters(name) -> dict:
    """Name → default value of every assignment in the chapter's ``parameters`` cell."""
    from . import parameters  # the one reader of a parameters cell (it imports this module)

    return {p.name: p.default for p in parameters.describe(name)}


def execute(name, parameters: dict | None = None, *, smoke: bool = False, output=None, progress: bool = False):
    """Execute a chapter with papermill and return the executed notebook.

    ``smoke=True`` starts from the chapter's smoke parameters; ``parameters`` override.
    The kernel runs in the chapter's folder, as in the book build. ``output`` (a path) keeps
    the executed ``.ipynb``; otherwise it goes to a temporary file.
    """
    import jupytext
    import nbformat
    import papermill as pm
    import tempfile

    path = chapter_path(name)
    params = smoke_parameters(path) if smoke else {}
    params.update(parameters or {})
    nb = jupytext.read(path)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(output) if output is not None else Path(tmp) / f"{path.stem}.ipynb"
        # the kernel inherits this process's environment: progress bars quiet under papermill,
        # one intra-op thread (unless the caller chose otherwise)
        wanted = {**{n: "1" for n in THREAD_VARIABLES if n not in os.environ}, "TTSCALE_QUIET": "1"}
        before = {n: os.environ.get(n) for n in wanted}
        os.environ.update(wanted)
        try:
            # the kernel's own log (e.g. "running over TCP without encryption" on a local
            # loopback connection) is not the chapter's output; errors inside cells still surface
            pm.execute_notebook(nb, str(out), parameters=params, kernel_name="python3",
                                cwd=str(path.parent), progress_bar=progress, log_output=False,
                                extra_arguments=["--IPKernelApp.log_level=ERROR"])
        finally:
            for n, value in before.items():
                if value is None:
                    os.environ.pop(n, None)
                else:
                    os.environ[n] = value
        return nbformat.read(str(out), as_version=4)

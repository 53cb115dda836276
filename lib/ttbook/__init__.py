"""ttbook: the machinery that builds and re-runs the book; no mathematics lives here.

- ``chapters``: find the book's chapters and execute one with papermill;
- ``parameters``, ``domains``: a chapter's parameters cell, read without running it, the domain each
  knob declares and the rules between knobs, enforced by the CLI and by the chapter itself;
- ``results``: the numbers a run glued, with the sentence of the page that quotes each;
- ``runs``: one recorded run (notebook + JSON report); ``sweeps``: grids of runs, local or on Dask,
  that keep going when a run fails (``sweep_worker``: one run in its own process);
- ``cli``: ``python -m ttbook {list,params,run,sweep}``;
- ``sphinx_notebooks``: the .ipynb download in the rendered book.

The mathematics and models are in :mod:`ttscale`, which imports nothing from here.
"""

from ttscale import __version__  # one version for the distribution

__all__ = ["__version__"]

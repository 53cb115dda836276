import os

# Chapters and library code keep progress bars quiet under tests.
os.environ.setdefault("TTSCALE_QUIET", "1")


import pytest

from fake_chapters import front_matter


def pytest_configure(config):
    config.addinivalue_line("markers", "pdf: builds and reads the whole book's PDF (make check-pdf; minutes)")


_WARM = {}


def _runs_tests(config) -> bool:
    """A process that runs tests: an xdist worker, or pytest without workers."""
    return hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None)


def pytest_sessionstart(session):
    """One warm kernel server per test process (ttbook.warm): the chapters' kernels fork from it
    instead of importing torch and matplotlib afresh, dozens of times. TTBOOK_WARM=0 turns it off."""
    if os.environ.get("TTBOOK_WARM", "1") == "0" or not _runs_tests(session.config):
        return
    import tempfile

    from ttbook import warm

    folder = tempfile.mkdtemp(prefix="ttbook-warm-")
    _WARM["server"] = warm.start(folder)
    _WARM["folder"] = folder
    os.environ.update(_WARM["server"]["env"])


def pytest_sessionfinish(session, exitstatus):
    if "server" in _WARM:
        import shutil

        from ttbook import warm

        warm.stop(_WARM.pop("server"))
        shutil.rmtree(_WARM.pop("folder"), ignore_errors=True)

BOOM = front_matter("smoke:\n  d: 3\n") + '''
# A chapter that fails when asked to

```{code-cell} ipython3
:tags: [parameters]

d = 4          # a size | int ≥ 1
fail_at = 0    # the d whose run raises (0: none) | int ≥ 0
seed = 0       # seed | int ≥ 0
nap = 0.0      # seconds the run sleeps first (a run long enough to interrupt) | float ≥ 0
```

```{code-cell} ipython3
import time

from myst_nb import glue
from ttbook.parameters import enforce

enforce("boom", globals())
time.sleep(nap)
if d == fail_at:
    raise ValueError(f"d = {d} fails on purpose")
glue("boom_d", d, display=False)
```

The run had $d$ = {glue:text}`boom_d`.
'''


@pytest.fixture
def failing_book(tmp_path):
    """A one-chapter book (found from the working directory) whose chapter raises for d == fail_at:
    what the CLI and the sweeps do with a run that fails in the chapter, all of whose parameters are valid."""
    root = tmp_path / "boombook"
    (root / "book").mkdir(parents=True)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/boom\n")
    (root / "book" / "boom.md").write_text(BOOM)
    return root

import os

# Chapters and library code keep progress bars quiet under tests.
os.environ.setdefault("TTSCALE_QUIET", "1")


import pytest

from fake_chapters import front_matter


def pytest_configure(config):
    config.addinivalue_line("markers", "pdf: builds and reads the whole book's PDF (make check-pdf; minutes)")

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

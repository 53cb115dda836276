# The book's two front-door commands: `make book` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JOBS   ?= 2
# One intra-op thread per process (torch, OpenMP, MKL, OpenBLAS): on the 2-core machines two threads
# per process ran 2.6-6x slower than one, and the book, the tests and the benchmarks run processes side by side.
THREADS := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

.PHONY: book test check-render pdf check-pdf bench clean help

help:
	@echo "make book          build the executed book into _build/html (strict: warnings are errors)"
	@echo "make test          unit tests + every chapter run with its smoke parameters"
	@echo "make check-render  headless-Chromium checks of the built book (after make book)"
	@echo "make pdf           the whole book as one PDF, _build/pdf/book.pdf (after make book; nothing re-runs)"
	@echo "make check-pdf     build that PDF into a temporary folder and check it (pages, maths, figures, uncut code)"
	@echo "make bench         speed benchmarks (benchmarks/)"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[book,test]"
	touch $(STAMP)

# The chapters needing execution run first, $(JOBS) at a time, longest first, into the jupyter-cache the
# build reads (tools/execute_parallel.py); the build then finds them cached. A cell error stops here, with its traceback.
book: $(STAMP)
	$(THREADS) $(PY) tools/execute_parallel.py --jobs $(JOBS)
	$(THREADS) $(VENV)/bin/jupyter-book build -W -n --keep-going .
	@echo "open _build/html/index.html"

test: $(STAMP)
	$(THREADS) $(PY) -m pytest -n $(JOBS) -m "not browser and not pdf" --durations=15

check-render: $(STAMP)
	$(PY) -m pytest -m browser -p no:xdist

# The whole book as one PDF: Jupyter Book's one-page build from the execution cache of the last
# `make book` (nothing executes; a changed chapter stops it), printed by headless Chromium.
pdf: $(STAMP)
	$(THREADS) tools/book_pdf.sh

check-pdf: $(STAMP)
	$(THREADS) $(PY) -m pytest -m pdf -p no:xdist

bench: $(STAMP)
	$(THREADS) $(PY) benchmarks/bench_core.py

clean:
	rm -rf _build

# The book's two front-door commands: `make book` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JOBS   ?= 2
# One intra-op thread per process (torch, OpenMP, MKL, OpenBLAS): on the 2-core machines two threads
# per process ran 2.6-6x slower than one, and the book, the tests and the benchmarks run processes side by side.
# Bytecode is written on first import even where the environment asks Python not to (this machine
# kind sets PYTHONDONTWRITEBYTECODE=1): otherwise every kernel would recompile torch, about 10 s each.
RUNENV  := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE=

.PHONY: book test check-render pdf check-pdf bench clean help

help:
	@echo "make book          build the executed book into _build/html (strict: warnings are errors)"
	@echo "make test          unit tests + every chapter run with its smoke parameters"
	@echo "make check-render  headless-Chromium checks of the built book (after make book)"
	@echo "make pdf           the whole book as one PDF, _build/pdf/book.pdf (after make book; nothing re-runs)"
	@echo "make check-pdf     build that PDF into a temporary folder and check it (pages, maths, figures, uncut code)"
	@echo "make bench         speed benchmarks with targets (benchmarks/bench_core, _chains, _gpt2)"

# The install: uv, given the machine's local CPU build of torch as a file, where the machine keeps one
# (pip finds it through its find-links; uv does not look there, and without the file would fetch a CUDA
# build of several GB); otherwise pip. Measured on a fresh 2-core machine: 15-30 s with uv against
# 125 s with pip, same versions. uv compiles no bytecode; with PYTHONDONTWRITEBYTECODE emptied below,
# each module is compiled once, on its first import, instead of all of them up front.
TORCH_VERSION := $(shell sed -n 's/.*"torch==\([0-9.]*\)".*/\1/p' pyproject.toml)
TORCH_WHEEL := $(firstword $(wildcard /opt/wheels/torch-$(TORCH_VERSION)+cpu-cp311-*.whl))

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	if [ -n "$(TORCH_WHEEL)" ] && $(PY) -m pip install --quiet uv 2>/dev/null \
	   && $(VENV)/bin/uv pip install --quiet --python $(PY) "$(TORCH_WHEEL)" -e ".[book,test]"; then :; \
	else \
	  echo "installing with pip"; \
	  $(PY) -m pip install --quiet --upgrade pip && $(PY) -m pip install --quiet -e ".[book,test]"; \
	fi
	touch $(STAMP)

# The chapters needing execution run first, $(JOBS) at a time, longest first, into the jupyter-cache the
# build reads (tools/execute_parallel.py); the build then finds them cached. A cell error stops here, with its traceback.
book: $(STAMP)
	$(RUNENV) $(PY) tools/execute_parallel.py --jobs $(JOBS)
	$(RUNENV) $(VENV)/bin/jupyter-book build -W -n --keep-going .
	@echo "open _build/html/index.html"

test: $(STAMP)
	$(RUNENV) $(PY) -m pytest -n $(JOBS) -m "not browser and not pdf" --durations=15

check-render: $(STAMP)
	$(RUNENV) $(PY) -m pytest -m browser -p no:xdist

# The whole book as one PDF: Jupyter Book's one-page build from the execution cache of the last
# `make book` (nothing executes; a changed chapter stops it), printed by headless Chromium.
pdf: $(STAMP)
	$(RUNENV) tools/book_pdf.sh

check-pdf: $(STAMP)
	$(RUNENV) $(PY) -m pytest -m pdf -p no:xdist

# Every benchmark with targets runs (about 1.5 min), even after a miss; the command fails if any ratio missed.
bench: $(STAMP)
	@status=0; for b in core chains gpt2; do \
	  echo "== benchmarks/bench_$$b.py"; $(RUNENV) $(PY) benchmarks/bench_$$b.py || status=1; \
	done; exit $$status

clean:
	rm -rf _build

"""The whole book as one PDF (``tools/book_pdf.sh``), printed from the last ``make book``.

Needs the execution cache of a full build (``make book``); skipped without one. ``make check-pdf``
runs it (``-m pdf``; it takes minutes, so neither ``make test`` nor ``make check-render`` does). ``TTBOOK_ROOT=DIR`` points it at another book folder (as everywhere in
ttbook: one holding ``_toc.yml`` and ``book/``; it needs ``_build/.jupyter_cache`` too). The PDF is made into a temporary folder; the script's
scratch copy of the source goes to ``_build/pdf/work``. Reads the PDF with poppler's ``pdftotext``,
``pdfinfo`` and ``pdfimages`` (Debian's poppler-utils, installed if absent) and checks: one page or
more per chapter, each chapter starting a page, in the order of the table of contents; no maths left
as TeX; at least as many images as the one-page HTML has figures; no line of code or output cut off
at the right edge (every long line of every ``<pre>`` block is in the PDF's text, to its end).
"""

import html
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ttbook.chapters import ROOT

pytestmark = [pytest.mark.pdf, pytest.mark.slow]

BOOK = ROOT  # the book's folder: this repository, or $TTBOOK_ROOT (ttbook.chapters.find_root)
SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "book_pdf.sh"


def _poppler():
    if shutil.which("pdftotext") is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "poppler-utils"], check=True, env=env)
    assert shutil.which("pdftotext"), "poppler-utils could not be installed"


@pytest.fixture(scope="module")
def pdf(tmp_path_factory):
    if not (BOOK / "_build" / ".jupyter_cache" / "global.db").is_file():
        pytest.skip(f"no execution cache in {BOOK}/_build: run `make book` first")
    _poppler()
    out = tmp_path_factory.mktemp("pdf") / "book.pdf"
    run = subprocess.run(["bash", str(SCRIPT), "--root", str(BOOK), "--out", str(out)],
                         capture_output=True, text=True, timeout=1800)
    if "execution cache is out of date" in run.stderr:
        pytest.skip(f"the book changed since the last `make book`: {run.stderr.strip()}")
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def _text(pdf, *args) -> str:
    return subprocess.run(["pdftotext", *args, str(pdf), "-"], capture_output=True, text=True, check=True).stdout


def _pages(pdf) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))


def _one_page_html() -> str:
    return (BOOK / "_build" / "pdf" / "work" / "_build" / "singlehtml" / "book-print.html").read_text("utf8")


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _letters(text: str) -> str:
    """``text`` without white space and hyphens: pdftotext joins a line wrapped after a hyphen without it."""
    return re.sub(r"[\s\-\u2010\u00ad]+", "", text)


def _titles() -> list[str]:
    """Each chapter's title, as its one-page HTML section heads it (table-of-contents order)."""
    found = re.findall(r'<span id="document-[^"]+"></span><section[^>]*>\s*(?:<span[^>]*></span>)?\s*<h[12][^>]*>(.*?)<',
                       _one_page_html(), re.S)
    return [html.unescape(t).strip() for t in found]


def test_pages_and_chapter_starts(pdf):
    titles = _titles()
    assert len(titles) >= 3, titles
    pages = _pages(pdf)
    assert pages > len(titles), f"{pages} pages for {len(titles)} chapters"
    tops = [_squash(" ".join(page.split()[:40])) for page in _text(pdf).split("\f")]
    assert len(tops) >= pages
    last = 1
    for title in titles:
        key = _squash(title)[:30]
        starts = [i for i, top in enumerate(tops, 1) if top.startswith(key) and i > last]
        assert starts, f"no page after page {last} starts with the chapter title {title!r}"
        last = starts[0]


def test_no_tex_left(pdf):
    text = _text(pdf)
    for delimiter in ("\\(", "\\)", "\\[", "\\]", "\\begin{"):
        i = text.find(delimiter)
        assert i < 0, f"untypeset maths in the PDF ({delimiter!r}): ...{text[max(0, i - 80):i + 80]}..."


def test_figures_present(pdf):
    figures = len(set(re.findall(r'<img[^>]*src="(_images/[^"]+)"', _one_page_html())))
    listing = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True).stdout
    images = sum(1 for line in listing.splitlines()[2:] if line.split()[2:3] == ["image"])
    assert figures > 0
    assert images >= figures, f"{images} images in the PDF, {figures} figures in the HTML"


def _without_page_numbers(text: str) -> str:
    """pdftotext's pages without the number at each one's foot, so a line continued over a page break joins up."""
    pages = text.split("\f")
    for i, page in enumerate(pages):
        rows = page.rstrip().splitlines()
        if rows and rows[-1].strip() == str(i + 1):
            pages[i] = "\n".join(rows[:-1])
    return "\n".join(pages)


class _Pre(HTMLParser):
    """The text of every ``<pre>`` block the PDF shows (not those in a closed ``<details>``: hidden cells)."""

    def __init__(self):
        super().__init__()
        self.depth, self.hidden, self.blocks = 0, 0, []

    def handle_starttag(self, tag, attrs):
        if tag == "details" and "open" not in dict(attrs):
            self.hidden += 1
        elif tag == "pre":
            self.depth += 1
            if self.depth == 1:
                self.blocks.append(("", self.hidden > 0))

    def handle_endtag(self, tag):
        if tag == "details" and self.hidden:
            self.hidden -= 1
        elif tag == "pre" and self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            text, hidden = self.blocks[-1]
            self.blocks[-1] = (text + data, hidden)


def test_code_not_cut_off(pdf):
    parser = _Pre()
    parser.feed(_one_page_html())
    # A line wrapped over a page break, or a comment set beside the code, comes out of pdftotext in
    # another order in one mode or another: a line's end counts as printed if either order has it.
    texts = [_letters(_without_page_numbers(_text(pdf, mode))) for mode in ("-layout", "-raw")]
    long_lines = [line for block, hidden in parser.blocks if not hidden
                  for line in block.splitlines() if len(line.strip()) > 70]
    assert long_lines, "no long code lines found: the check would check nothing"
    cut = [line for line in long_lines if all(_letters(line)[-25:] not in text for text in texts)]
    assert not cut, f"{len(cut)} of {len(long_lines)} long code or output lines cut off, e.g. {cut[:3]}"

"""The rendered book, read by a real (headless) browser.

Needs the built HTML (``make book``); ``make check-render`` runs it. ``TTBOOK_HTML=DIR`` points it
at another build (for example a one-chapter build of ``tools/build_one.sh``: ``DIR`` is its
``_build/html``). Installs Debian's chromium if absent. Every page is loaded with a small script
that measures the layout (:data:`ttbook.render_check.MEASURE_JS`), and the DOM after JavaScript
ran is judged by :func:`ttbook.render_check.page_problems`: maths typeset by the vendored
MathJax and no TeX, Greek letters or maths symbols left in prose, no list made from formula
lines, no unresolved glue or reference, no code or output wider than the column at the default
window size, every figure with an image that exists, no Python traceback. Saves a screenshot
under ``_build/``.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from ttbook import render_check
from ttbook.chapters import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HTML = Path(os.environ.get("TTBOOK_HTML", ROOT / "_build" / "html")).resolve()
WINDOW = "--window-size=1280,900"  # the default width a reader on a laptop sees
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         WINDOW, "--virtual-time-budget=15000"]

# Working notes that must never reach a reader: the project's planning documents and build chatter.
WORDING = ("the brief", "project's brief", "paper.md", "the project's", "came from the cache")

# Rules switched off for one page, each with the defect it would report. Every entry is a
# known defect of a page whose owner has been told; delete the entry when the page is fixed.
ALLOW: dict[str, dict[str, str]] = {}


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}  # CI has no terminal to answer prompts
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env)
        exe = shutil.which("chromium")
    assert exe, "chromium could not be installed"
    return exe


def _pages():
    if not (HTML / "index.html").is_file():
        pytest.skip(f"no built book in {HTML}: run `make book` first")
    pages = sorted((HTML / "book").glob("*.html"))
    return [p for p in pages if p.name not in {"search.html", "genindex.html"} and not p.name.startswith(".")]


def dump(exe, page: Path, measure: bool = True) -> str:
    """The DOM of ``page`` after its JavaScript ran (with the layout measured, if ``measure``)."""
    target = page
    if measure:  # a measured copy beside the page, so its relative links still resolve
        target = page.with_name(f".measured-{page.name}")
        target.write_text(render_check.with_measurement(page.read_text()))
    try:
        with tempfile.TemporaryDirectory() as profile:
            out = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", target.as_uri()],
                                 capture_output=True, text=True, timeout=120)
    finally:
        if measure:
            target.unlink()
    assert out.returncode == 0, out.stderr[-2000:]
    assert not measure or 'data-measured="yes"' in out.stdout, f"{page.name}: the layout was not measured"
    return out.stdout


def test_rendered_pages():
    exe = _chromium()
    pages = _pages()
    assert len(pages) >= 2
    # two pages at a time: a page's chromium spends about half its wall time waiting, not computing
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        doms = list(pool.map(lambda page: dump(exe, page), pages))
    problems = []
    for page, dom in zip(pages, doms):
        problems += render_check.page_problems(dom, page.name, source_html=page.read_text(),
                                               page_dir=page.parent, allow=ALLOW.get(page.stem), wording=WORDING)
    assert not problems, "\n".join(problems)


def test_allow_list_names_real_pages_and_rules():
    assert all(set(rules) <= set(render_check.RULES) for rules in ALLOW.values()), ALLOW
    pages = {p.stem for p in _pages()}
    assert set(ALLOW) <= pages, set(ALLOW) - pages


def test_screenshot():
    exe = _chromium()
    _pages()
    shot = ROOT / "_build" / "screenshot.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                        (HTML / "book" / "intro.html").as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.is_file() and shot.stat().st_size > 10_000

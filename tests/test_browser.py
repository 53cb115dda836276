"""The rendered book, read by a real (headless) browser.

Needs the built HTML (``make book``); ``make check-render`` runs it. Installs Debian's
chromium if absent. Asserts from the DOM after JavaScript ran: every page's maths was typeset
by the vendored MathJax (no raw ``$$`` or ``\\[`` left in the text), every figure has an image
that exists, and no page shows a Python traceback. Saves a screenshot under ``_build/``.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from ttbook.chapters import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HTML = ROOT / "_build" / "html"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,900", "--virtual-time-budget=15000"]


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
        pytest.skip("no built book: run `make book` first")
    pages = sorted((HTML / "book").glob("*.html"))
    return [p for p in pages if p.name not in {"search.html", "genindex.html"}]


def _dump(exe, page: Path) -> str:
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_rendered_pages():
    from bs4 import BeautifulSoup

    exe = _chromium()
    pages = _pages()
    assert len(pages) >= 2
    problems = []
    for page in pages:
        soup = BeautifulSoup(_dump(exe, page), "html.parser")
        main = soup.find("main") or soup
        typeset = main.find("mjx-container") is not None
        for tag in main.find_all(["script", "style", "mjx-container", "pre", "code"]):
            tag.decompose()
        has_math = 'class="math' in page.read_text()
        text = main.get_text(" ")
        if has_math:
            if not typeset:
                problems.append(f"{page.name}: maths present but MathJax typeset nothing")
            for raw in ("$$", "\\[", "\\begin{"):
                if raw in text:
                    problems.append(f"{page.name}: raw TeX {raw!r} left in the text")
        for fig in main.find_all("figure"):
            img = fig.find("img")
            if img is None or not img.get("src"):
                problems.append(f"{page.name}: a figure without an image")
            elif not img["src"].startswith("data:") and not (page.parent / img["src"]).resolve().is_file():
                problems.append(f"{page.name}: figure image {img['src']} missing")
        if "Traceback (most recent call last)" in soup.get_text(" ") or soup.select(".output.traceback"):
            problems.append(f"{page.name}: shows a Python traceback")
    assert not problems, "\n".join(problems)


def test_screenshot():
    exe = _chromium()
    _pages()
    shot = ROOT / "_build" / "screenshot.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                        (HTML / "book" / "intro.html").as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.is_file() and shot.stat().st_size > 10_000

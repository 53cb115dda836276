"""What a reader would see wrong on a rendered page: the rules of ``make check-render``.

:func:`page_problems` takes the DOM that headless Chromium dumped *after* the page's JavaScript
ran (MathJax typeset the maths, and :data:`MEASURE_JS` measured the layout) and returns one
sentence per defect:

* maths left as source: a raw ``$``, ``$$``, ``\\[``, ``\\begin{``, a TeX command such as
  ``\\operatorname`` or an escaped ``\\_``, or ``^{`` / ``_{`` anywhere outside typeset maths
  and code;
* pseudo-maths in prose: a Greek letter or a mathematical symbol (``∝ ∂ Σ ≤ ≥ ‖ − →`` ...) in a
  paragraph, list item, heading or caption, outside typeset maths and code;
* a list made from formula lines: a list that continues a paragraph cut mid-sentence (a source
  line that starts with ``+ `` or ``- `` inside a formula becomes a bullet), or an item that
  starts with an operator or a TeX command;
* an unresolved glue placeholder (``{glue:...}`` left as text) or reference (``??``);
* working notes that reach the reader: phrases the caller names in ``wording`` (the book's own list
  is in ``tests/test_browser.py``);
* code, output or a displayed equation wider than the column: a ``pre``, output table or display
  (``div.math``, MathJax's display container) that :data:`MEASURE_JS` found scrolling sideways
  at the window size of the check;
* a maths page that MathJax did not typeset, a figure without its image, a Python traceback.

The rules work on plain HTML, so ``tests/test_render_check.py`` injects each defect into a small
synthetic page and checks that the rule fires; ``tests/test_browser.py`` runs them over every
page of the built book.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["RULES", "MEASURE_JS", "with_measurement", "page_problems", "typeset_count", "GREEK_AND_SYMBOLS"]

# Marks every code block, output table and displayed equation that is wider than the space it is given. Runs after
# load (MathJax has typeset by then in a --virtual-time-budget run); the result is read from the
# dumped DOM as a data attribute, so the check needs no DevTools protocol.
MEASURE_JS = """
<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    document.querySelectorAll("article pre, article .cell_output table, article .cell_output .output, article div.math, article mjx-container[display='true']").forEach(function (el) {
      var over = el.scrollWidth - el.clientWidth;
      var box = el.closest(".bd-article") || document.body;
      var out = el.getBoundingClientRect().right - box.getBoundingClientRect().right;
      if (over > 2 || out > 2) { el.setAttribute("data-overflow", Math.round(Math.max(over, out))); }
    });
    document.body.setAttribute("data-measured", "yes");
  }, 500);
});
</script>
"""

GREEK_AND_SYMBOLS = ("αβγδεζηθικλμνξπρστυφχψωΓΔΘΛΞΠΣΦΨΩϵϑϕ"
                     "∝∂∑∏∫≤≥≠≈≡∞−‖∈∉⊂⊆∪∩∇√⊤ᵀ⁻¹²³⁰₀₁₂ᵢₖₘₙ→←↦⟨⟩×·")
_SYMBOLS = re.compile("[" + re.escape(GREEK_AND_SYMBOLS) + "]")
_TEX = re.compile(r"\\(?:[A-Za-z]{2,}|[_{}\[\]()$%&#,;!])")
_TEXT_ESCAPE = re.compile(r"\\(?:texttt|text|textrm|mathrm|textit)\{[^}]*\\_[^}]*\}")
_SCRIPT = re.compile(r"[\^_]\{")
RULES = ("mathjax", "figure", "traceback", "overflow", "tex", "script", "placeholder", "wording", "symbols",
         "formula-list")
_PROSE = ["p", "li", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "figcaption", "caption", "th"]
_NOT_PROSE = ["script", "style", "mjx-container", "pre", "code", "kbd", "samp", "math"]


def with_measurement(html: str) -> str:
    """``html`` with :data:`MEASURE_JS` inserted before ``</body>``."""
    at = html.rfind("</body>")
    return html + MEASURE_JS if at < 0 else html[:at] + MEASURE_JS + html[at:]


def typeset_count(dom: str) -> int:
    """How many maths elements MathJax typeset in the page's main content."""
    soup = _soup(dom)
    main = soup.select_one("article.bd-article") or soup.find("main") or soup
    return len(main.find_all("mjx-container"))


def _soup(dom):
    from bs4 import BeautifulSoup

    return BeautifulSoup(dom, "html.parser")


def _text(node) -> str:
    return " ".join(node.get_text(" ").split())


def _snippet(text: str, at: int, width: int = 40) -> str:
    return text[max(0, at - width):at + width].strip()


def page_problems(dom: str, name: str, *, source_html: str | None = None, page_dir: Path | None = None,
                  allow: dict[str, str] | None = None, wording: tuple[str, ...] = ()) -> list[str]:
    """The defects a reader would see on page ``name``, one sentence each.

    ``dom`` is the page after JavaScript ran (Chromium's ``--dump-dom``), ideally of the page
    with :func:`with_measurement` applied; ``source_html`` the page as built (to tell whether it
    has maths at all); ``page_dir`` the folder of the page, to check that figure images exist.
    ``allow`` maps a rule's name (``"tex"``, ``"script"``, ``"symbols"``, ``"formula-list"``,
    ``"placeholder"``, ``"wording"``, ``"overflow"``) to the reason it is switched off for this page;
    ``wording`` lists phrases (lower case) that must not reach a reader.
    """
    allow = allow or {}
    soup = _soup(dom)
    main = soup.select_one("article.bd-article") or soup.find("main") or soup  # the page, not its sidebars
    problems: list[tuple[str, str]] = []

    def add(rule, sentence):
        if rule not in allow:
            problems.append((rule, f"{name}: {sentence}"))

    typeset = main.find("mjx-container") is not None
    has_math = 'class="math' in (source_html if source_html is not None else dom)
    if has_math and not typeset:
        add("mathjax", "maths present but MathJax typeset nothing")
    for fig in main.find_all("figure"):
        img = fig.find("img")
        if img is None or not img.get("src"):
            add("figure", "a figure without an image")
        elif page_dir is not None and not img["src"].startswith("data:") \
                and not (page_dir / img["src"]).resolve().is_file():
            add("figure", f"figure image {img['src']} missing")
    if "Traceback (most recent call last)" in soup.get_text(" ") or soup.select(".output.traceback"):
        add("traceback", "shows a Python traceback")
    for el in main.select("[data-overflow]"):
        what = ("an output table" if el.name == "table" else "a code block" if el.name == "pre" else
                "a displayed equation" if el.name == "mjx-container" or "math" in (el.get("class") or [])
                else "an output")
        first = (el.get_text().strip().splitlines() or [""])[0][:60]
        add("overflow", f"{what} is {el['data-overflow']} px wider than the column: {first!r}")

    for el in (_soup(source_html) if source_html is not None else main).select(".math"):
        hit = _TEXT_ESCAPE.search(el.get_text())
        if hit:
            add("tex", f"{hit.group()!r} shows its backslash (MathJax's text mode does not read \\_)")
            break
    for tag in main.find_all(_NOT_PROSE):
        tag.decompose()
    for tag in main.select(".cell_output > .output, .highlight, .headerlink, .math"):  # figure captions stay
        tag.decompose()
    text = _text(main)
    for raw in ("$$", "\\[", "\\begin{"):
        if raw in text:
            add("tex", f"raw TeX {raw!r} left in the text: {_snippet(text, text.index(raw))!r}")
    if "$" in text.replace("$$", ""):
        add("tex", f"a raw '$' outside typeset maths: {_snippet(text, text.index('$'))!r}")
    hit = _TEX.search(text)
    if hit:
        add("tex", f"TeX command {hit.group()!r} outside maths: {_snippet(text, hit.start())!r}")
    hit = _SCRIPT.search(text)
    if hit:
        add("script", f"{hit.group()!r} outside maths: {_snippet(text, hit.start())!r}")
    for raw in ("{glue", "glue:text", "glue:md", "{eq}`", "{ref}`", "{numref}`", "{cite}`"):
        if raw in text:
            add("placeholder", f"unresolved role {raw!r}: {_snippet(text, text.index(raw))!r}")
    for phrase in wording:
        if phrase in text.lower():
            add("wording", f"internal wording {phrase!r}: {_snippet(text, text.lower().index(phrase))!r}")
    if "??" in text:
        add("placeholder", f"an unresolved reference '??': {_snippet(text, text.index('??'))!r}")

    seen = set()
    for el in main.find_all(_PROSE):
        if el.find(_PROSE) is not None and el.name != "li":  # judge the innermost prose element
            continue
        own = _text(el)
        hit = _SYMBOLS.search(own)
        if hit and own not in seen:
            seen.add(own)
            add("symbols", f"maths symbol {hit.group()!r} in prose outside typeset maths: "
                           f"{_snippet(own, hit.start())!r}")
    for lst in main.find_all(["ul", "ol"]):
        items = lst.find_all("li", recursive=False)
        if not items:
            continue
        first = _text(items[0])
        prev = lst.find_previous_sibling()
        if lst.name == "ul" and prev is not None and prev.name == "p":  # "1." lists may follow "It shows"
            before = _text(prev)
            if before and before[-1] not in ".:;?!)" and not lst.find_parent("nav"):
                add("formula-list", f"a list continues a sentence cut off at {before[-40:]!r}: {first[:40]!r}")
                continue
        for li in items:
            own = _text(li)
            if own[:1] in "+−-=<>\\^_" and own[:2] != "--":
                add("formula-list", f"a list item made from a formula line: {own[:50]!r}")
                break
    return [sentence for _, sentence in problems]

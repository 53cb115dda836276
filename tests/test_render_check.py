"""The render check's rules, each shown to fire on a defect injected into a small synthetic page.

The pages imitate what Sphinx, myst-nb and MathJax produce (an ``article.bd-article``, maths in
``span.math`` typeset into ``mjx-container``, outputs in ``div.cell_output``), so the rules run
here in milliseconds; ``tests/test_browser.py`` runs them over the real built book. The layout
rule needs a browser and is tested there too, on a synthetic page (``-m browser``).
"""

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from ttbook import render_check

pytest.importorskip("bs4")  # comes with the book's theme (pydata-sphinx-theme)

CLEAN_BODY = """
<h2>The error after <span class="math"><mjx-container>k</mjx-container></span> steps</h2>
<p>Write <span class="math notranslate nohighlight"><mjx-container>Λ = U D U^T</mjx-container></span>
with eigenvalues sorted, so that the hardness is <span class="pasted-text">71.95</span>:</p>
<ul><li><p><span class="math"><mjx-container>\\operatorname{Hard}</mjx-container></span> is the
largest per-skill hardness.</p></li><li><p>It is at least d.</p></li></ul>
<div class="math notranslate nohighlight"><mjx-container>\\sum_i \\rho_i^{2k}</mjx-container></div>
<div class="cell docutils container"><div class="cell_input"><pre>x = lam ** 2  # λ_i^{2}, Σ ≤ ‖w‖</pre></div>
<div class="cell_output docutils container"><div class="output text_plain"><pre>{10: np.float64(-0.87)} $ \\frac ^{</pre></div>
<div class="output text_html"><table><caption>Steps, α and ε</caption><tr><td>1</td></tr></table></div>
<figure><img src="data:image/png;base64,AAAA"/><figcaption><p><span class="caption-number">Fig. 1 </span>
<span class="caption-text">Error against <span class="math"><mjx-container>k</mjx-container></span>.</span></p>
</figcaption></figure></div></div>
<p>A brief look: see <a href="#x">Fig. 1</a> and <a href="#eq">(3)</a>; code such as <code>ŵ_k − w</code> is fine.</p>
"""


def page(body: str = CLEAN_BODY) -> str:
    return f"<html><body><main><article class='bd-article'>{body}</article></main></body></html>"


WORDING = ("project's brief", "came from the cache")   # as the book's own check passes its list


def problems(body, **kw):
    html = page(body)
    return render_check.page_problems(html, "synthetic.html", source_html=html, wording=WORDING, **kw)


def test_a_clean_page_passes():
    assert problems(CLEAN_BODY) == []


@pytest.mark.parametrize("defect, expected", [
    ("<p>the error is $\\|I - \\Gamma\\|$ here.</p>", "raw '$'"),
    ("<p>the error is $$x$$ here.</p>", "raw TeX '$$'"),
    ("<p>so \\operatorname{tr} A is small.</p>", "TeX command '\\\\operatorname'"),
    ("<p>the knob ablation\\_scale sets it.</p>", "TeX command '\\\\_'"),
    ("<p>the theory d rho^{2k} falls.</p>", "'^{' outside maths"),
    ("<p>the estimate w_{k} falls.</p>", "'_{' outside maths"),
    ("<p>On the power law with exponent α the tail starves.</p>", "maths symbol 'α'"),
    ("<p>the derivative ∂ log Hard is small.</p>", "maths symbol '∂'"),
    ("<p>it grows like i to the power −2.</p>", "maths symbol '−'"),
    ("<p>as m → infinity it settles.</p>", "maths symbol '→'"),
    ("<h3>A bound set by h and ρ</h3>", "maths symbol 'ρ'"),
    ("<div class='cell_output'><figure><img src='data:x'/><figcaption><p>theory d ρ</p></figcaption>"
     "</figure></div>", "maths symbol 'ρ'"),
    ("<p>for one step the exact error is</p><ul><li><p>the trace of the second part.</p></li></ul>",
     "a list continues a sentence cut off"),
    ("<p>A list follows:</p><ul><li><p>\\operatorname{tr}(A) B</p></li></ul>", "a list item made from a formula"),
    ("<p>A list follows:</p><ul><li><p>+ the trace of B</p></li></ul>", "a list item made from a formula"),
    ("<p>as quoted in {glue:text}`hard_d` above.</p>", "unresolved role '{glue'"),
    ("<p>see {numref}`fig-x` above.</p>", "unresolved role '{numref}`'"),
    ("<p>as Figure ?? shows.</p>", "unresolved reference '??'"),
    ("<p>as the project's brief says.</p>", "internal wording \"project's brief\""),
    ("<p>(0 of them came from the cache in this run)</p>", "internal wording 'came from the cache'"),
    ("<div class='cell_input'><pre data-overflow='120'>x = 1</pre></div>", "a code block is 120 px wider"),
    ("<div class='cell_output'><table data-overflow='30'><tr><td>1</td></tr></table></div>",
     "an output table is 30 px wider"),
    ("<div class='math'><mjx-container display='true' data-overflow='40'>x</mjx-container></div>",
     "a displayed equation is 40 px wider"),
    ("<p>printed</p><pre>Traceback (most recent call last):</pre>", "Python traceback"),
    ("<figure><figcaption>no image</figcaption></figure>", "a figure without an image"),
])
def test_each_defect_is_caught(defect, expected):
    found = problems(CLEAN_BODY + defect)
    assert any(expected in p for p in found), found


def test_backslash_in_text_mode_maths_is_caught():
    html = page('<p>entries <span class="math">\\(N(0, \\texttt{ablation\\_scale}^2)\\)</span>.</p>')
    found = render_check.page_problems(html, "p.html", source_html=html)
    assert any("shows its backslash" in p for p in found), found


def test_untypeset_maths_is_caught():
    html = page('<p>so <span class="math">\\(x\\)</span> holds.</p>')
    found = render_check.page_problems(html, "p.html", source_html=html)
    assert any("MathJax typeset nothing" in p for p in found), found


def test_missing_figure_file_is_caught(tmp_path):
    html = page('<figure><img src="../_images/none.png"/><figcaption>c</figcaption></figure>')
    found = render_check.page_problems(html, "p.html", page_dir=tmp_path)
    assert any("missing" in p for p in found), found


def test_allow_switches_off_only_the_named_rule():
    body = CLEAN_BODY + "<p>exponent α</p><p>Figure ??</p>"
    found = problems(body, allow={"symbols": "known defect, owner told"})
    assert not any("maths symbol" in p for p in found) and any("??" in p for p in found)


def test_every_rule_a_problem_can_name_is_listed():
    import inspect

    used = set(re.findall(r'add\("([a-z-]+)"', inspect.getsource(render_check.page_problems)))
    assert used == set(render_check.RULES), used ^ set(render_check.RULES)


def test_sidebars_are_not_judged():
    html = ("<html><body><main><nav><p>α ≤ β</p></nav><article class='bd-article'><p>plain.</p></article>"
            "</main></body></html>")
    assert render_check.page_problems(html, "p.html") == []


def test_measurement_script_goes_before_body_end():
    html = render_check.with_measurement("<html><body><p>x</p></body></html>")
    assert html.index("data-overflow") < html.index("</body>")


@pytest.mark.browser
def test_layout_rule_measures_a_real_page():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (make check-render installs it)")
    wide = "x = [" + ", ".join(str(i) for i in range(80)) + "]"
    body = (f"<div class='cell_input'><pre>{wide}</pre></div><div class='cell_input'><pre>y = 1</pre></div>"
            "<div class='cell_output'><table><tr>" + "<td>123456789</td>" * 40 + "</tr></table></div>"
            "<div class='math' style='overflow-x: auto'><span style='display: inline-block; width: 900px'>"
            "wide equation</span></div>")
    html = ("<html><body><main><article class='bd-article' style='width: 500px; overflow: hidden'>"
            f"{body}</article></main></body></html>")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.html"
        path.write_text(render_check.with_measurement(html))
        out = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              "--disable-background-networking", f"--user-data-dir={tmp}/profile",
                              "--window-size=1280,900", "--virtual-time-budget=3000", "--dump-dom", path.as_uri()],
                             capture_output=True, text=True, timeout=120)
    found = render_check.page_problems(out.stdout, "p.html")
    assert any("a code block is" in p and "x = [0, 1" in p for p in found), found
    assert any("an output table is" in p for p in found), found
    assert any("a displayed equation is" in p and "wide equation" in p for p in found), found
    assert not any("'y = 1'" in p for p in found), found

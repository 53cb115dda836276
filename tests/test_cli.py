"""``python -m ttbook`` driven as a user would: list, params, run, and the bad-input cases."""

import json
import os
import subprocess
import sys

import pytest

from ttbook import parameters
from fake_chapters import front_matter


def cli(*args, cwd, timeout=600):
    return subprocess.run([sys.executable, "-m", "ttbook", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_list_names_each_chapter_with_title_and_run_time(tmp_path):
    from ttbook import chapters

    out = cli("list", cwd=tmp_path)
    assert out.returncode == 0 and "intro" in out.stdout.split()
    for name in chapters.chapters():
        row = next(line for line in out.stdout.splitlines() if line.split()[:1] == [name])
        assert chapters.title(name) in row and row.count(" s") + row.count(" min") >= 2, row


def test_a_closed_pipe_is_quiet(tmp_path):
    out = subprocess.run(f"{sys.executable} -m ttbook list | head -n 1", shell=True, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stderr == "" and out.stdout.startswith("chapter")


def test_a_misspelt_parameter_gets_a_suggestion(tmp_path):
    out = cli("run", "intro", "-p", "n_prompt", "10", "-o", str(tmp_path / "x.ipynb"), cwd=tmp_path)
    assert out.returncode == 2 and "unknown parameter 'n_prompt' for chapter 'intro' (did you mean 'n_prompts'?)" in out.stderr


def test_params_lists_every_parameter_with_default_and_meaning(tmp_path):
    out = cli("params", "intro", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for p in parameters.describe("intro"):
        row = next(line for line in lines if line.split()[:1] == [p.name])
        assert parameters.format_value(p.default) in row and p.meaning in row


def test_params_json(tmp_path):
    out = cli("params", "intro", "--json", cwd=tmp_path)
    rows = json.loads(out.stdout)
    assert {"d", "seed"} <= {r["name"] for r in rows}
    d = next(r for r in rows if r["name"] == "d")
    assert d["type"] == "int" and isinstance(d["default"], int) and d["meaning"]


@pytest.mark.parametrize("args, message", [
    (["run", "intro", "-p", "dimension", "4"], "unknown parameter 'dimension' for chapter 'intro'; valid parameters: d, "),
    (["run", "intro", "-p", "d", "2.5"], "parameter 'd' must be an int (default "),
    (["run", "intro", "-p", "d", "four"], "parameter 'd' must be an int"),
    (["run", "intro", "-p", "seed", "1", "-p", "seed", "2"], "parameter 'seed' given twice"),
    (["run", "no_such_chapter"], "chapter must name a notebook in book/"),
    (["params", "no_such_chapter"], "chapter must name a notebook in book/"),
    (["sweep", "intro", "-p", "d", "4,2.5"], "parameter 'd' must be an int"),
    (["sweep", "intro", "-p", "nope", "1,2"], "unknown parameter 'nope'"),
    (["sweep", "intro", "-p", "d", "4,,5"], "-p d: empty value in the list"),
    (["sweep", "intro"], "a sweep needs at least one -p NAME VALUES axis"),
])
def test_bad_input_is_rejected_before_any_kernel_starts(tmp_path, args, message):
    where = {"run": ["-o", str(tmp_path / "x.ipynb")], "sweep": ["--dir", str(tmp_path / "sw")]}.get(args[0], [])
    out = cli(*args, *where, cwd=tmp_path)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "python -m ttbook: error: " + message in out.stderr
    assert "running" not in out.stderr
    assert list(tmp_path.iterdir()) == []  # no notebook, no report, no run directory


def test_run_needs_an_ipynb_output(tmp_path):
    out = cli("run", "intro", "-o", "x.txt", cwd=tmp_path)
    assert out.returncode == 2 and "output must end in .ipynb" in out.stderr


@pytest.mark.slow
def test_run_writes_notebook_and_report(tmp_path):
    out = cli("run", "intro", "--smoke", "-p", "seed", "3", "-o", "mine/seed3.ipynb", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "mine/seed3.json").read_text())
    assert (tmp_path / "mine/seed3.ipynb").is_file()
    smoke = parameters.resolve("intro", smoke=True)
    assert report["status"] == "ok" and report["overrides"] == {**smoke, "seed": 3}
    defaults = {p.name: p.default for p in parameters.describe("intro")}
    assert report["parameters"] == {**defaults, **smoke, "seed": 3}
    assert report["results"] and all(isinstance(v, (int, float, str, bool)) for v in report["results"].values())
    for key, value in report["results"].items():  # the results are printed too
        assert key in out.stdout
    assert "▢" in out.stdout  # ...with the sentence that quotes them
    assert "without encryption" not in out.stderr  # the kernel's own log stays quiet
    # papermill injected the parameters into the executed notebook
    nb = json.loads((tmp_path / "mine/seed3.ipynb").read_text())
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and "seed = 3" in "".join(injected[0]["source"])


@pytest.mark.slow
def test_run_default_output_and_failure_report(failing_book):
    out = cli("run", "boom", "--smoke", "-p", "fail_at", "3", cwd=failing_book)
    assert out.returncode == 1
    assert "FAILED boom" in out.stderr and "d = 3 fails on purpose" in out.stderr
    reports = list((failing_book / "runs" / "boom").glob("*.json"))
    assert len(reports) == 1 and "fail_at=3" in reports[0].name
    report = json.loads(reports[0].read_text())
    assert report["status"] == "failed" and report["error"]["ename"] == "ValueError"
    assert "Traceback" in report["error"]["traceback"] or "ValueError" in report["error"]["traceback"]


def test_a_value_outside_its_domain_is_refused_before_a_kernel_starts(tmp_path):
    out = cli("run", "intro", "--smoke", "-p", "d", "0", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip() == "python -m ttbook: error: parameter 'd' must be an int ≥ 1, got 0"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("chapter", __import__("ttbook.chapters").chapters.chapters())
def test_every_chapter_documents_its_parameters(chapter):
    """``params`` shows each knob's meaning: the trailing ``# comment`` on its line."""
    missing = [p.name for p in parameters.describe(chapter) if not p.meaning]
    assert not missing, (f"{chapter}: parameters without a '# meaning' comment on their line in the "
                         f"parameters cell: {', '.join(missing)}")


def test_the_former_command_name_forwards(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ttscale", "list"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "intro" in out.stdout.split(), out.stderr


def test_the_book_is_found_from_the_environment_and_bad_roots_are_named(tmp_path, monkeypatch):
    from ttbook import chapters

    monkeypatch.setenv("TTBOOK_ROOT", str(chapters.ROOT))
    assert chapters.find_root(tmp_path) == chapters.ROOT
    monkeypatch.setenv("TTBOOK_ROOT", str(tmp_path))
    with pytest.raises(ValueError, match="TTBOOK_ROOT=.* must name a folder holding _toc.yml and book/"):
        chapters.find_root()
    monkeypatch.delenv("TTBOOK_ROOT")
    (tmp_path / "book").mkdir()
    (tmp_path / "_toc.yml").write_text("root: book/intro\n")
    assert chapters.find_root(tmp_path / "book") == tmp_path.resolve()


THREADS = front_matter() + '''
# A chapter that reports its kernel's thread settings

```{code-cell} ipython3
:tags: [parameters]

seed = 0       # seed | int ≥ 0
```

```{code-cell} ipython3
import os
import torch
from myst_nb import glue

for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    glue(name, os.environ.get(name, "unset"), display=False)
glue("torch_threads", torch.get_num_threads(), display=False)
```
'''


@pytest.mark.slow
@pytest.mark.parametrize("preset", [None, "2"])
def test_a_kernel_runs_one_intra_op_thread_unless_the_caller_chose(tmp_path, preset):
    root = tmp_path / "threadbook"
    (root / "book").mkdir(parents=True)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/threads\n")
    (root / "book" / "threads.md").write_text(THREADS)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    if preset is not None:  # torch reads both
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = preset
    out = subprocess.run([sys.executable, "-m", "ttbook", "run", "threads", "-o", "t.ipynb"], cwd=root,
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    got = json.loads((root / "t.json").read_text())["results"]
    want = preset or "1"
    assert got["OMP_NUM_THREADS"] == want and got["MKL_NUM_THREADS"] == want and got["OPENBLAS_NUM_THREADS"] == "1"
    assert got["torch_threads"] == int(want)  # torch sizes its pool from OMP_NUM_THREADS

"""tools/execute_parallel.py: chapters executed in parallel into the cache that jupyter-book build reads."""

import subprocess
import sys
from pathlib import Path

import pytest

from fake_chapters import front_matter

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "execute_parallel.py"

CHAPTER = front_matter() + '''
# Chapter {name}

```{{code-cell}} ipython3
import os, time
time.sleep({sleep})  # chapter {name}
{extra}
print("threads", os.environ.get("OMP_NUM_THREADS"))
```
'''


def book(root: Path, chapters: dict) -> Path:
    (root / "book").mkdir(parents=True, exist_ok=True)
    (root / "_static").mkdir(exist_ok=True)  # html_static_path must exist under -W
    config = (ROOT / "_config.yml").read_text()
    (root / "_config.yml").write_text(config)
    (root / "references.bib").write_text((ROOT / "references.bib").read_text())
    names = list(chapters)
    toc = f"format: jb-book\nroot: book/{names[0]}\nchapters:\n" + "".join(f"  - file: book/{n}\n" for n in names[1:])
    (root / "_toc.yml").write_text(toc + "  - file: book/notes\n")
    (root / "book" / "notes.md").write_text("# Notes\n\nA page that is not a notebook.\n")
    for name, (sleep, extra) in chapters.items():
        (root / "book" / f"{name}.md").write_text(CHAPTER.format(name=name, sleep=sleep, extra=extra))
    return root


def tool(root, *args):
    return subprocess.run([sys.executable, str(TOOL), "--root", str(root), *args], capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_chapters_run_in_parallel_and_the_build_executes_nothing(tmp_path):
    root = book(tmp_path / "b", {"a": (5, ""), "b": (5, ""), "c": (0, "")})
    assert "3 chapter(s) to execute" in tool(root, "--dry-run").stdout
    out = tool(root, "--jobs", "2")
    assert out.returncode == 0, out.stderr
    wall = float(out.stdout.split("done in ")[1].split()[0])
    seconds = [float(line.split(" executed in ")[1].split()[0]) for line in out.stdout.splitlines() if " executed in " in line]
    assert len(seconds) == 3 and wall < sum(seconds)  # two at a time
    again = tool(root)
    assert again.returncode == 0 and "nothing to execute" in again.stdout
    build = subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", "-W", "-n", "--keep-going", "."],
                           cwd=root, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert build.stdout.count("Using cached notebook") == 3
    assert "Executing notebook" not in build.stdout


@pytest.mark.slow
def test_a_failing_cell_fails_with_its_traceback_and_the_others_are_cached(tmp_path):
    root = book(tmp_path / "b", {"a": (0, ""), "b": (0, 'raise ValueError("b fails on purpose")')})
    out = tool(root)
    assert out.returncode == 1
    assert "book/b.md FAILED" in out.stderr and "b fails on purpose" in out.stderr and "Traceback" in out.stderr
    assert "book/a.md executed in" in out.stdout
    again = tool(root, "--dry-run")
    assert "1 chapter(s) to execute" in again.stdout and "book/b.md" in again.stdout


def test_only_the_cache_mode_is_accepted(tmp_path):
    root = book(tmp_path / "b", {"a": (0, "")})
    cfg = root / "_config.yml"
    cfg.write_text(cfg.read_text().replace("execute_notebooks: cache", "execute_notebooks: force"))
    out = tool(root)
    assert out.returncode != 0 and "must set execute: execute_notebooks: cache" in out.stderr


PRIORITY = '''
# Chapter {name}

```{{code-cell}} ipython3
import os  # chapter {name}
try:
    group = open("/proc/self/autogroup").read().split()[-1]
except OSError:
    group = "none"
print("priority", os.getpriority(os.PRIO_PROCESS, 0), group)
```
'''


@pytest.mark.slow
def test_the_longest_chapter_keeps_its_priority_and_the_others_yield(tmp_path):
    """The critical path first: the chapter expected to take longest runs at this process's
    niceness, every other at the lowest priority, its kernel's session included (warm kernels)."""
    import os

    from jupyter_cache import get_cache

    root = book(tmp_path / "b", {"a": (0, ""), "b": (0, ""), "c": (0, "")})
    for name, seconds in (("a", 1), ("b", 90), ("c", 2)):
        (root / "book" / f"{name}.md").write_text(
            front_matter(f"runtime:\n  default: {seconds}\n") + PRIORITY.format(name=name))
    out = tool(root, "--jobs", "2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.index("book/b.md (~90 s)") < out.stdout.index("book/c.md (~2 s)")
    cache = get_cache(str(root / "_build" / ".jupyter_cache"))
    seen = {}
    for record in cache.list_cache_records():
        nb = cache.get_cache_bundle(record.pk).nb
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        _, nice, group = text.split()
        seen[Path(record.uri).stem] = (int(nice), group)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    low = max(base, 19)
    assert {k: v[0] for k, v in seen.items()} == {"a": low, "b": base, "c": low}
    if os.path.exists("/proc/self/autogroup") and os.environ.get("TTBOOK_WARM", "1") != "0":
        assert seen["a"][1] == seen["c"][1] == str(low)
    # one chapter at a time: nothing to yield to, so nothing is lowered
    for name in "abc":
        path = root / "book" / f"{name}.md"
        path.write_text(path.read_text().replace("# chapter", "# again, chapter"))
    assert tool(root, "--jobs", "1").returncode == 0
    cache = get_cache(str(root / "_build" / ".jupyter_cache"))
    nices = set()
    for record in cache.list_cache_records():
        nb = cache.get_cache_bundle(record.pk).nb
        if "again" in "".join(c.source for c in nb.cells):
            text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
            nices.add(int(text.split()[1]))
    assert nices == {base}


def test_the_order_comes_from_the_front_matter_before_a_cached_time(tmp_path):
    """A cached time was measured beside another chapter, maybe at the lowest priority: the front
    matter's time alone comes first; the cached time only where the front matter has none."""
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("execute_parallel", TOOL)
    tool_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool_module)
    timed, untimed = tmp_path / "timed.md", tmp_path / "untimed.md"
    timed.write_text(front_matter("runtime:\n  default: 7\n") + "# Timed\n")
    untimed.write_text(front_matter() + "# Untimed\n")

    class Cache:
        def list_cache_records(self):
            return [SimpleNamespace(uri=str(p), data={"execution_seconds": 99.0}) for p in (timed, untimed)]

    class Empty:
        def list_cache_records(self):
            return []

    assert tool_module.expected_seconds(timed, Cache()) == 7.0
    assert tool_module.expected_seconds(untimed, Cache()) == 99.0
    assert tool_module.expected_seconds(untimed, Empty()) == 0.0

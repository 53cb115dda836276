"""Execute the book's chapters in parallel into the jupyter-cache that ``jupyter-book build`` reads.

Jupyter Book 1 (myst-nb, ``execute_notebooks: cache``) executes the chapters one after another
while it reads them. This step runs first (``make book``): it reads each chapter of ``_toc.yml``
exactly as myst-nb does (its own MyST-notebook reader with the book's MyST extensions), asks the
cache (``_build/.jupyter_cache``) whether that notebook is already there, and executes the ones
that are not, ``--jobs`` at a time (default 2), longest first (by its front matter's ``runtime:
default``, else the time of the chapter's previous cached run), each in its own process with
the settings the build would use (``execute: timeout`` and ``allow_errors`` from ``_config.yml``,
the kernel in the chapter's folder). Each executed notebook is stored in the cache as myst-nb
stores it, so the build that follows finds every chapter cached and executes nothing.

A chapter whose cell raises is reported with its traceback; the others still run and are cached.
The exit status is then 1 (``make book`` stops before the build: fix the chapter and run it
again; only changed chapters are executed). Kernels inherit this process's environment (``make
book`` sets one intra-op thread per process), and fork from a warm server that has already
imported torch and matplotlib (:mod:`ttbook.warm`; ``TTBOOK_WARM=0`` starts each one cold).

With more than one job, the longest chapter keeps this process's priority and every other runs
at the lowest (niceness 19, for its kernel's session too: see :func:`ttbook.warm.session_priority`),
so the critical path is never slowed by the chapters beside it; they take the cores it leaves
idle. Measured in clean-clone CI runs on the 2-core machine: without the priorities the GPT-2
chapter's two training processes shared one core with the next chapter's kernel (Linux shares the
CPUs between sessions first), and it took 208-227 s, the chapters 228-231 s; with them (and its
worker pool forked instead of spawned), GPT-2 took 119 s and the chapters 182 s.

Usage: ``python tools/execute_parallel.py [--root DIR] [--jobs N] [--dry-run]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

READ_DATA = {"name": "myst_nb_md", "type": "plugin"}  # myst-nb's jupyter-cache reader of MyST notebooks
LOW_PRIORITY = 19  # the niceness of every chapter but the longest when chapters run side by side


def toc_files(root: Path) -> list[Path]:
    """Every document of ``_toc.yml`` (root first), as source paths that exist."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())

    def walk(node):
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key, []) or []:
                if "file" in child:
                    yield child["file"]
                yield from walk(child)

    out = []
    for f in [toc["root"], *walk(toc)]:
        for suffix in ("", ".md", ".ipynb"):
            p = root / f"{f}{suffix}"
            if p.is_file():
                out.append(p.resolve())
                break
    return out


def settings(root: Path) -> dict:
    """The execution settings of ``_config.yml`` that decide what the build would do."""
    cfg = yaml.safe_load((root / "_config.yml").read_text()) or {}
    execute = cfg.get("execute") or {}
    mode = execute.get("execute_notebooks", "auto")
    if mode != "cache":
        raise SystemExit(f"execute_parallel: _config.yml must set execute: execute_notebooks: cache (got {mode!r}); "
                         "only the cache mode lets the build reuse what this step executes")
    if execute.get("run_in_temp"):
        raise SystemExit("execute_parallel: execute: run_in_temp is not supported (the build runs chapters in their folder)")
    return {"timeout": execute.get("timeout", 30), "allow_errors": bool(execute.get("allow_errors", False)),
            "extensions": list((cfg.get("parse") or {}).get("myst_enable_extensions") or []),
            "cache": root / "_build" / ".jupyter_cache"}


def read_notebook(path: Path, extensions):
    """The chapter as myst-nb reads it in the build (None if it is not a MyST notebook)."""
    from myst_nb.core.read import is_myst_markdown_notebook, read_myst_markdown_notebook
    from myst_parser.config.main import MdParserConfig

    text = path.read_text("utf8")
    if path.suffix == ".ipynb":
        import nbformat

        return nbformat.reads(text, as_version=4)
    if not is_myst_markdown_notebook(text):
        return None
    return read_myst_markdown_notebook(text, config=MdParserConfig(enable_extensions=set(extensions)),
                                       add_source_map=True, path=str(path))


def _execute(path: str, nb_json: str, timeout, allow_errors: bool, nice: int = 0):
    """Worker process: execute one notebook in its folder; (executed notebook JSON, seconds, error text).

    ``nice`` > 0 lowers this process's scheduling priority first; the kernel it starts inherits it.
    """
    import nbformat

    if nice > 0:
        os.nice(nice)
    from jupyter_cache.executors.utils import single_nb_execution

    nb = nbformat.reads(nb_json, as_version=4)
    result = single_nb_execution(nb, cwd=str(Path(path).parent), timeout=timeout, allow_errors=allow_errors,
                                 meta_override=True)
    error = None if result.err is None else (result.exc_string or repr(result.err))
    return nbformat.writes(nb), result.time, error


def expected_seconds(path: Path, cache) -> float:
    """How long the chapter takes alone: its front matter's ``runtime: default`` (measured so), else
    its last cached run. A cached time is second choice because it was measured beside another
    chapter, and at the lowest priority for all but the longest one."""
    try:
        from ttbook import chapters

        runtime = chapters.front_matter(path).get("runtime") or {}
        if isinstance(runtime.get("default"), (int, float)):
            return float(runtime["default"])
    except Exception:  # noqa: BLE001 - only an ordering hint
        pass
    times = [r.data.get("execution_seconds") for r in cache.list_cache_records() if Path(r.uri) == path]
    times = [t for t in times if isinstance(t, (int, float))]
    return float(times[-1]) if times else 0.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=".", help="the book's folder (holding _config.yml and _toc.yml)")
    ap.add_argument("--jobs", type=int, default=2, help="chapters executed at once (default 2)")
    ap.add_argument("--dry-run", action="store_true", help="list what would be executed, execute nothing")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error("--jobs must be >= 1")
    root = Path(args.root).resolve()
    conf = settings(root)
    conf["cache"].parent.mkdir(parents=True, exist_ok=True)
    server = None
    if (not args.dry_run and os.environ.get("TTBOOK_WARM", "1") != "0"
            and not os.path.exists(os.environ.get("TTBOOK_WARM_SOCKET", ""))):
        # the kernels fork from one process that has imported torch and matplotlib (ttbook.warm);
        # it imports them while the chapters are read below (a server this process inherited,
        # the test suite's, is used as it is)
        from ttbook import warm

        server = warm.start(tempfile.mkdtemp(prefix="ttbook-warm-"))
    try:
        return _main(args, root, conf, server)
    finally:
        if server is not None:
            warm.stop(server)
            shutil.rmtree(server["folder"], ignore_errors=True)


def _main(args, root, conf, server) -> int:
    from jupyter_cache import get_cache

    cache = get_cache(str(conf["cache"]))
    todo = []
    for path in toc_files(root):
        nb = read_notebook(path, conf["extensions"])
        if nb is None:
            continue
        try:
            cache.match_cache_notebook(nb)
        except KeyError:
            todo.append((expected_seconds(path, cache), path, nb))
    todo.sort(key=lambda t: -t[0])  # longest first: the last one to finish starts early
    rel = {p: str(p.relative_to(root)) for _, p, _ in todo}
    if not todo:
        print("execute_parallel: every chapter is cached; nothing to execute")
        return 0
    print(f"execute_parallel: {len(todo)} chapter(s) to execute, {args.jobs} at a time: "
          + ", ".join(f"{rel[p]} (~{s:.0f} s)" for s, p, _ in todo), flush=True)
    if args.dry_run:
        return 0
    if server is not None:
        from ttbook import warm

        warm.wait_ready(server)   # the first two chapters are the longest: warm them too
        os.environ.update(server["env"])   # the workers below inherit what routes kernels there
    start = time.perf_counter()
    failed = _run(todo, conf, cache, rel, start, args.jobs)
    print(f"execute_parallel: done in {time.perf_counter() - start:.0f} s"
          + (f"; {len(failed)} chapter(s) failed: {', '.join(rel[p] for p in failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


def _run(todo, conf, cache, rel, start, jobs) -> list:
    """Execute the chapters ``jobs`` at a time and store each in the cache; the ones that failed."""
    import nbformat
    from jupyter_cache.base import CacheBundleIn
    from jupyter_cache.cache.db import NbProjectRecord

    failed = []
    # workers forked from a fresh server process (no inherited DB handles) that has imported what
    # _execute needs: a spawned worker per chapter would pay that again, 1.2 CPU-s each
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["nbformat", "jupyter_cache.executors.utils"])
    # The longest chapter (the first: todo is longest first) is the build's critical path: it runs
    # at normal priority and every other at the lowest, so that they use the cores it leaves idle
    # (its serial cells) instead of slowing it down, e.g. the GPT-2 chapter's two training processes.
    # A fresh worker per chapter, since a process cannot raise its priority again.
    nice = [0] + [LOW_PRIORITY if jobs > 1 else 0] * (len(todo) - 1)
    with cf.ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = {pool.submit(_execute, str(p), nbformat.writes(nb), conf["timeout"], conf["allow_errors"], n): p
                   for (_, p, nb), n in zip(todo, nice)}
        for fut in cf.as_completed(futures):
            path = futures[fut]
            try:
                executed, seconds, error = fut.result()
            except Exception as exc:  # noqa: BLE001 - a worker that died
                executed, seconds, error = None, None, f"{type(exc).__name__}: {exc}"
            stage = cache.add_nb_to_project(str(path), read_data=READ_DATA)
            if error is None:
                cache.cache_notebook_bundle(
                    CacheBundleIn(nbformat.reads(executed, as_version=4), stage.uri,
                                  data={"execution_seconds": seconds}),
                    check_validity=False, overwrite=True)
                print(f"execute_parallel: {rel[path]} executed in {seconds:.1f} s and cached "
                      f"({time.perf_counter() - start:.0f} s elapsed)", flush=True)
            else:
                NbProjectRecord.set_traceback(stage.uri, error, cache.db)
                failed.append(path)
                print(f"execute_parallel: {rel[path]} FAILED\n{error}", file=sys.stderr, flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())

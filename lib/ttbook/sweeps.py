"""Parameter sweeps: a grid of chapter runs, in parallel, resumable, collected in one table.

A sweep of chapter ``C`` over axes ``{"n_train": [10, 20], "seed": [0, 1]}`` is the product
of the axes. Each point is one run (:func:`ttbook.runs.execute`) kept in its own directory
``DIR/runs/KEY/`` (``KEY`` names the point's parameters, e.g. ``n_train=10,seed=0``) as
``C.ipynb`` plus the report ``C.json``, which is written only once the run has finished. So a
re-run of the sweep skips every point whose report says ``ok`` for the same parameters and the
same chapter source, and re-runs failed, interrupted or stale points. Runs go to a local process
pool (default) or to a Dask distributed cluster (``scheduler=ADDRESS``; the run directories must
then be on a file system the workers share). The results the chapters glue become the columns of
a tidy table (one row per run, failed runs with their error), merged into ``DIR/results.csv`` by
run key, so sweeps of other values in the same folder add rows instead of replacing the table.
Used by ``python -m ttbook sweep``.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ttscale import checks

from . import chapters, parameters as _parameters, runs, warm

__all__ = ["Point", "Sweep", "grid", "plan", "run", "table", "merge_csv", "default_directory"]


@dataclass(frozen=True)
class Point:
    """One run of a sweep: its overrides, key, and where its notebook and report live."""

    chapter: str
    overrides: dict
    key: str
    notebook: Path

    @property
    def report(self) -> Path:
        return runs.report_path(self.notebook)


@dataclass
class Sweep:
    """What :func:`run` did: every point's record (in grid order), and which it skipped/ran."""

    points: list
    records: dict = field(default_factory=dict)  # key -> record
    skipped: list = field(default_factory=list)  # keys finished before this sweep
    ran: list = field(default_factory=list)  # keys run now

    @property
    def failed(self) -> list:
        return [p for p in self.points if self.records.get(p.key, {}).get("status") != "ok"]


def grid(axes: dict) -> list[dict]:
    """Every combination of the axes' values (first axis varies slowest), as override dicts."""
    names = list(axes)
    return [dict(zip(names, combo)) for combo in itertools.product(*(list(axes[n]) for n in names))]


def default_directory(name, root=".") -> Path:
    """Where a sweep of chapter ``name`` keeps its runs by default: ``sweeps/CHAPTER``."""
    return Path(root) / "sweeps" / chapters.chapter_path(name).stem


def plan(name, axes: dict, *, fixed: dict | None = None, smoke: bool = False, directory=None) -> list[Point]:
    """The points of a sweep, with every value checked against the chapter's parameters.

    ``axes`` maps a parameter to its list of values (text as typed, or values); ``fixed`` holds
    single-valued overrides. Raises ValueError (unknown name, wrong type, empty axis) before
    anything runs.
    """
    stem = chapters.chapter_path(name).stem
    directory = Path(directory) if directory is not None else default_directory(name)
    for axis, values in axes.items():
        if len(values) == 0:
            raise ValueError(f"sweep axis {axis!r} must have at least one value")
    points, seen = [], set()
    for combo in grid(axes):
        overrides = _parameters.resolve(name, {**(fixed or {}), **combo}, smoke=smoke)
        key = runs.run_key(overrides)
        if key in seen:
            continue
        seen.add(key)
        points.append(Point(stem, overrides, key, directory / "runs" / key / f"{stem}.ipynb"))
    return points


def finished(point: Point, source_sha256: str) -> dict | None:
    """The point's report if it finished ``ok`` with these parameters and this chapter source."""
    record = runs.read_report(point.report)
    if (record and record.get("status") == "ok" and record.get("overrides") == point.overrides
            and record.get("source_sha256") == source_sha256):
        return record
    return None


def _execute(chapter: str, overrides: dict, notebook: str) -> dict:
    """Worker entry point (module level so that process pools and Dask can pickle it)."""
    return runs.execute(chapter, overrides, notebook)


def _failure(point: Point, exc: BaseException) -> dict:
    return {"chapter": point.chapter, "overrides": point.overrides, "notebook": str(point.notebook),
            "status": "failed", "results": {}, "seconds": None,
            "error": {"ename": type(exc).__name__, "evalue": str(exc), "cell": None,
                      "traceback": "".join(traceback.format_exception(exc))}}


def run(name, points: list[Point], *, workers: int | None = None, scheduler: str | None = None,
        force: bool = False, retries: int = 1, echo: Callable[[str], None] = print) -> Sweep:
    """Run the points not yet finished, in parallel; return every point's record.

    ``workers``: size of the local process pool (default: the number of cores). ``scheduler``:
    address of a Dask distributed scheduler (``tcp://host:8786``), or ``local`` to start a
    ``LocalCluster`` with ``workers`` single-threaded workers. ``force`` re-runs finished points.
    Locally every run has its own worker process; one that dies costs only its run, which is
    started again up to ``retries`` times (Dask restarts dead workers itself).
    Each record is written to its report as soon as its run ends, so an interrupted sweep loses
    only the runs in flight. ``echo`` receives one line per finished run.
    """
    workers = checks.positive_int(workers if workers is not None else (os.cpu_count() or 1), "workers")
    retries = checks.nonnegative_int(retries, "retries")
    sha = runs.source_hash(name)
    sweep = Sweep(points)
    todo = []
    for p in points:
        record = None if force else finished(p, sha)
        if record is not None:
            sweep.records[p.key] = record
            sweep.skipped.append(p.key)
        else:
            todo.append(p)
    if sweep.skipped:
        echo(f"skipping {len(sweep.skipped)} finished run(s); running {len(todo)}")
    if not todo:
        return sweep

    done = 0

    def collect(p: Point, record: dict):
        nonlocal done
        done += 1
        runs.write_report(record, p.report)
        sweep.records[p.key] = record
        sweep.ran.append(p.key)
        secs = record.get("seconds")
        took = f" in {secs:.1f} s" if isinstance(secs, (int, float)) else ""
        echo(f"[{done}/{len(todo)}] {record['status']:6s} {p.key}{took}")

    if scheduler:
        _run_dask(name, todo, scheduler, workers, collect, echo=echo)
    else:
        _run_local(name, todo, workers, collect, retries=retries, echo=echo)
    return sweep


def _died(point: Point, returncode, attempts: int) -> dict:
    how = f"killed by signal {-returncode}" if returncode is not None and returncode < 0 else f"exit status {returncode}"
    return {"chapter": point.chapter, "overrides": point.overrides, "notebook": str(point.notebook),
            "status": "failed", "results": {}, "seconds": None,
            "error": {"ename": "WorkerDied", "cell": None, "traceback": "",
                      "evalue": f"the worker process running this point died ({how}) on each of {attempts} attempt(s)"}}


def _run_local(name, todo: list[Point], workers: int, collect, *, retries: int, echo, poll: float = 0.2) -> None:
    """Each run in its own worker process (:mod:`ttbook.sweep_worker`), at most ``workers`` at once.

    A worker that dies before writing its result costs only its own run, which is started again
    up to ``retries`` times. On Ctrl-C (or any error here) the workers in flight get SIGTERM, which
    they turn into a clean stop that shuts their kernels down, then SIGKILL after 10 s.
    """
    chapter = str(chapters.chapter_path(name))
    pending = collections.deque(todo)
    attempts = collections.Counter()
    running = {}  # Popen -> (point, result path, log file)
    scratch = Path(tempfile.mkdtemp(prefix="ttbook-sweep-"))
    env = chapters.one_thread_env()  # runs go side by side: one intra-op thread each
    server = None
    if len(todo) > 1 and env.get("TTBOOK_WARM", "1") != "0" and not os.path.exists(env.get(warm.SOCKET_VARIABLE, "")):
        # the runs' kernels fork from one process that imported torch and matplotlib once
        server = warm.start(scratch / "warm", env=env, wait=True)   # ~ one cold kernel's imports
        env.update(server["env"])
    try:
        while pending or running:
            while pending and len(running) < workers:
                p = pending.popleft()
                attempts[p.key] += 1
                result = scratch / f"{p.key}.{attempts[p.key]}.json"
                p.notebook.parent.mkdir(parents=True, exist_ok=True)
                log = open(p.notebook.with_suffix(".log"), "w")
                proc = subprocess.Popen(
                    [sys.executable, "-m", "ttbook.sweep_worker", chapter, json.dumps(p.overrides),
                     str(p.notebook), str(result)],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True)  # the terminal's Ctrl-C reaches only this process
                running[proc] = (p, result, log)
            for proc in [q for q in running if q.poll() is not None]:
                p, result, log = running.pop(proc)
                log.close()
                record = runs.read_report(result)
                if proc.returncode == 0 and record is not None:
                    collect(p, record)
                elif attempts[p.key] <= retries:
                    echo(f"worker for {p.key} died (exit status {proc.returncode}); starting it again "
                         f"(attempt {attempts[p.key] + 1} of {retries + 1})")
                    pending.appendleft(p)
                else:
                    collect(p, _died(p, proc.returncode, attempts[p.key]))
            time.sleep(poll)
    finally:  # normal exit: nothing left; Ctrl-C or an error: stop the runs in flight
        for proc in running:
            proc.terminate()
        deadline = time.monotonic() + 10
        for proc in running:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for _, _, log in running.values():
            log.close()
        if server is not None:
            warm.stop(server)
        shutil.rmtree(scratch, ignore_errors=True)


def _run_dask(name, todo: list[Point], scheduler: str, workers: int, collect, connect_timeout="10s",
              echo: Callable[[str], None] = print) -> None:
    import contextlib
    import logging

    from distributed import Client, LocalCluster, as_completed as dask_completed

    quiet = [logging.getLogger(n) for n in ("distributed", "distributed.nanny", "distributed.worker",
                                             "distributed.scheduler", "tornado")]
    levels = [lg.level for lg in quiet]
    cluster = None
    try:
        if scheduler == "local":
            for lg in quiet:  # a local cluster's start-up and shutdown chatter is not the sweep's output
                lg.setLevel(logging.ERROR)
            dashboard = ":0" if _have("bokeh") else None
            cluster = LocalCluster(n_workers=min(workers, len(todo)), threads_per_worker=1, processes=True,
                                   dashboard_address=dashboard)
            scheduler = cluster.scheduler_address
        try:
            client = Client(scheduler, timeout=connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise ValueError(f"could not connect to the Dask scheduler at {scheduler!r}: {exc}") from None
        with client:
            link = client.dashboard_link if (cluster is None or cluster.dashboard_link) else None
            echo(f"Dask dashboard: {link}" if link else
                 "Dask dashboard: not available (install bokeh to get one)")
            futures = {}
            for p in todo:
                fut = client.submit(_execute, str(chapters.chapter_path(name)), p.overrides, str(p.notebook.resolve()),
                                    pure=False, key=f"ttbook-{p.chapter}-{p.key}-{os.getpid()}")
                futures[fut.key] = (fut, p)
            for fut in dask_completed([f for f, _ in futures.values()]):
                p = futures[fut.key][1]
                try:
                    record = fut.result()
                except Exception as exc:  # noqa: BLE001
                    record = _failure(p, exc)
                collect(p, record)
            for lg in quiet:  # closing the client and cluster kills workers on purpose: say nothing
                lg.setLevel(logging.CRITICAL)
    finally:
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def table(sweep: Sweep, axes: list[str] | None = None):
    """A tidy pandas DataFrame, one row per point: parameters, status, seconds, results.

    Parameter columns come first (``axes`` first, then other overrides), then ``status`` and
    ``seconds``, then one column per glued result in order of first appearance; ``run`` is the
    point's key.
    """
    import pandas as pd

    names = list(axes or [])
    for p in sweep.points:
        for k in p.overrides:
            if k not in names:
                names.append(k)
    rows, result_names = [], []
    for p in sweep.points:
        record = sweep.records.get(p.key, {})
        row = {k: _cell(p.overrides.get(k)) for k in names}
        row["status"] = record.get("status", "not run")
        row["seconds"] = record.get("seconds")
        err = record.get("error") or {}
        row["error"] = (f"{err.get('ename')}: {str(err.get('evalue', '')).strip().splitlines()[0] if err.get('evalue') else ''}"
                        [:300] if err else "")
        for k, v in (record.get("results") or {}).items():
            if k not in result_names:
                result_names.append(k)
            row[k] = v
        row["run"] = p.key
        rows.append(row)
    df = pd.DataFrame(rows, columns=names + ["status", "seconds", "error"] + result_names + ["run"])
    return df.convert_dtypes()  # integer results stay integers beside a failed run's blanks


def merge_csv(df, path) -> int:
    """Write ``df`` to the CSV at ``path``, keeping the rows of earlier sweeps stored there.

    Rows are matched by their run key (``run``, which names the parameters): this sweep's rows
    replace earlier rows of the same parameters, and rows of other parameters stay (the table of a
    folder never loses a finished run). Returns how many earlier rows were kept.
    """
    import pandas as pd

    path = Path(path)
    kept = 0
    if path.is_file():
        try:
            old = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            old = None
        if old is not None and "run" in old.columns:
            old = old[~old["run"].isin(set(df["run"].astype(str)))]
            kept = len(old)
            if kept:
                df = pd.concat([old, df.astype(object)], ignore_index=True, sort=False)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return kept


def _cell(value):
    return repr(value) if isinstance(value, (list, dict, tuple)) else value

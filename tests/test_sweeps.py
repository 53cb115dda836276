"""Parameter sweeps: the grid, run keys, resuming, the table; and the CLI on a process pool,
on a Dask LocalCluster, with a failing point, and after an interrupted sweep."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from ttbook import parameters, runs, sweeps


def cli(*args, cwd, timeout=900):
    return subprocess.run([sys.executable, "-m", "ttbook", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


# --- fast: the pieces ---------------------------------------------------------------------

def test_grid_is_the_product_first_axis_slowest():
    assert sweeps.grid({"a": [1, 2], "b": ["x", "y", "z"]}) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 1, "b": "z"},
        {"a": 2, "b": "x"}, {"a": 2, "b": "y"}, {"a": 2, "b": "z"}]
    assert sweeps.grid({}) == [{}]


def test_run_key_is_readable_and_distinct():
    assert runs.run_key({}) == "defaults"
    assert runs.run_key({"seed": 1, "d": 4}) == "d=4,seed=1"
    keys = {runs.run_key(o) for o in [{"a": 1}, {"a": "1"}, {"a": [1, 2]}, {"a": [1, 2, 3]}, {"a": 1.0},
                                      {"a": "x/y"}, {"a": "x_y"}, {"a": "x" * 100}, {"a": "x" * 101}]}
    assert len(keys) == 9
    assert all("/" not in k and len(k) <= 80 for k in keys)


def test_plan_checks_values_and_keys_points(tmp_path):
    points = sweeps.plan("intro", {"seed": ["0", "1"], "d": ["4"]}, directory=tmp_path)
    assert [p.overrides for p in points] == [{"seed": 0, "d": 4}, {"seed": 1, "d": 4}]
    assert points[0].notebook == tmp_path / "runs" / "d=4,seed=0" / "intro.ipynb"
    assert points[0].report == tmp_path / "runs" / "d=4,seed=0" / "intro.json"
    smoke = parameters.resolve("intro", smoke=True)
    assert sweeps.plan("intro", {"seed": [5]}, smoke=True, directory=tmp_path)[0].overrides == {**smoke, "seed": 5}
    with pytest.raises(ValueError, match="parameter 'd' must be an int"):
        sweeps.plan("intro", {"d": ["4", "x"]}, directory=tmp_path)
    with pytest.raises(ValueError, match="unknown parameter 'q'"):
        sweeps.plan("intro", {"q": [1]}, directory=tmp_path)
    with pytest.raises(ValueError, match="sweep axis 'd' must have at least one value"):
        sweeps.plan("intro", {"d": []}, directory=tmp_path)
    assert len(sweeps.plan("intro", {"d": ["4", " 4", 4]}, directory=tmp_path)) == 1  # same point once


def _fake_record(point, sha, status="ok", **results):
    return {"chapter": "intro", "overrides": point.overrides, "source_sha256": sha, "status": status,
            "seconds": 1.5, "results": results, "error": None if status == "ok" else {"ename": "E", "evalue": "x"}}


def test_finished_needs_ok_same_parameters_and_same_source(tmp_path):
    p = sweeps.plan("intro", {"seed": [0]}, directory=tmp_path)[0]
    sha = runs.source_hash("intro")
    assert sweeps.finished(p, sha) is None
    runs.write_report(_fake_record(p, sha), p.report)
    assert sweeps.finished(p, sha)["status"] == "ok"
    assert sweeps.finished(p, "0" * 64) is None  # the chapter changed: stale
    runs.write_report(_fake_record(p, sha, status="failed"), p.report)
    assert sweeps.finished(p, sha) is None
    p.report.write_text("{ half written")
    assert sweeps.finished(p, sha) is None


def test_run_skips_finished_points_without_starting_anything(tmp_path):
    points = sweeps.plan("intro", {"seed": [0, 1]}, directory=tmp_path)
    sha = runs.source_hash("intro")
    for i, p in enumerate(points):
        runs.write_report(_fake_record(p, sha, ch_err=0.5 * i, ch_n=3), p.report)
    lines = []
    result = sweeps.run("intro", points, workers=1, echo=lines.append)
    assert result.skipped == [p.key for p in points] and result.ran == [] and result.failed == []
    assert lines == ["skipping 2 finished run(s); running 0"]
    df = sweeps.table(result, axes=["seed"])
    assert list(df.columns) == ["seed", "status", "seconds", "error", "ch_err", "ch_n", "run"]
    assert df["ch_err"].tolist() == [0.0, 0.5] and df["seed"].tolist() == [0, 1]


def test_table_keeps_failed_rows_and_integer_results():
    pts = [sweeps.Point("intro", {"seed": s}, f"seed={s}", None) for s in (0, 1)]
    sw = sweeps.Sweep(pts, records={"seed=0": {"status": "ok", "seconds": 2.0, "results": {"n": 3}},
                                    "seed=1": {"status": "failed", "seconds": 1.0, "results": {}}})
    df = sweeps.table(sw, axes=["seed"])
    assert df["status"].tolist() == ["ok", "failed"] and df["n"].iloc[0] == 3 and pd.isna(df["n"].iloc[1])
    assert str(df["n"].dtype) == "Int64"
    assert [p.key for p in sw.failed] == ["seed=1"]


def test_workers_must_be_positive(tmp_path):
    points = sweeps.plan("intro", {"seed": [0]}, directory=tmp_path)
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        sweeps.run("intro", points, workers=0)


# --- slow: the command line, as a user runs it ----------------------------------------------

@pytest.mark.slow
def test_unreachable_scheduler_is_a_usage_error(tmp_path):
    out = cli("sweep", "intro", "-p", "seed", "0", "--scheduler", "tcp://127.0.0.1:9", "--dir", "sw", cwd=tmp_path,
              timeout=120)
    assert out.returncode == 2
    assert "could not connect to the Dask scheduler at 'tcp://127.0.0.1:9'" in out.stderr


def _table(path):
    return pd.read_csv(path)


@pytest.mark.slow
def test_local_two_point_sweep_with_a_failing_point_then_resume(failing_book):
    tmp_path = failing_book
    out = cli("sweep", "boom", "--smoke", "-p", "d", "3,4", "-p", "fail_at", "3", "--workers", "2", "--dir", "sw",
              cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    df = _table(tmp_path / "sw/results.csv")
    assert df["d"].tolist() == [3, 4] and df["status"].tolist() == ["failed", "ok"]
    assert df.loc[1, "boom_d"] == 4  # the good run's results survive
    assert "d = 3 fails on purpose" in df.loc[0, "error"] and pd.isna(df.loc[1, "error"])
    # the failure is reported with its parameters and the chapter's own traceback
    assert 'FAILED boom with {' in out.stderr and '"d": 3' in out.stderr
    assert "d = 3 fails on purpose" in out.stderr and "Traceback" in out.stderr
    assert "d" in out.stdout and "failed" in out.stdout  # the table is printed
    ok_report = tmp_path / "sw/runs" / df.loc[1, "run"] / "boom.json"
    mtime = ok_report.stat().st_mtime_ns
    # re-running skips the finished point and retries only the failed one
    again = cli("sweep", "boom", "--smoke", "-p", "d", "3,4", "-p", "fail_at", "3", "--dir", "sw", cwd=tmp_path)
    assert again.returncode == 1
    assert "skipping 1 finished run(s); running 1" in again.stderr
    assert ok_report.stat().st_mtime_ns == mtime
    assert _table(tmp_path / "sw/results.csv")["status"].tolist() == ["failed", "ok"]


@pytest.fixture
def local_cluster():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


@pytest.mark.slow
def test_two_point_sweep_on_a_dask_local_cluster(failing_book, local_cluster):
    tmp_path = failing_book   # a made-up one-cell chapter: the sweep machinery, not a chapter, is under test
    out = cli("sweep", "boom", "--smoke", "-p", "seed", "0,1", "--scheduler", local_cluster, "--dir", "sw",
              "--csv", "table.csv", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"on the Dask scheduler {local_cluster}" in out.stderr
    assert "Dask dashboard: " in out.stderr
    df = _table(tmp_path / "table.csv")
    assert df["seed"].tolist() == [0, 1] and (df["status"] == "ok").all()
    assert df["boom_d"].tolist() == [3, 3]   # the smoke d, glued by the chapter in each run
    from distributed import Client

    with Client(local_cluster) as client:
        worker_pids = set(client.run(os.getpid).values())
    for run in df["run"]:
        report = json.loads((tmp_path / "sw/runs" / run / "boom.json").read_text())
        assert report["status"] == "ok" and report["pid"] in worker_pids  # ran in a Dask worker
        assert (tmp_path / "sw/runs" / run / "boom.ipynb").is_file()


@pytest.mark.slow
def test_resume_after_an_interrupted_sweep(failing_book):
    tmp_path = failing_book   # the made-up chapter, each run sleeping long enough to be interrupted
    args = [sys.executable, "-m", "ttbook", "sweep", "boom", "--smoke", "-p", "seed", "0,1,2", "-p", "nap", "1.5",
            "--workers", "1", "--dir", "sw"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,  # Ctrl-C as a terminal sends it, even when pytest itself runs
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # in the background
    reports = lambda: sorted((tmp_path / "sw/runs").glob("*/boom.json"))  # noqa: E731
    deadline = time.time() + 600
    kernels = set()
    while not reports() and proc.poll() is None and time.time() < deadline:
        kernels |= _kernels_of_workers(tmp_path)
        time.sleep(0.2)
    assert reports(), "no run finished"
    while not kernels and proc.poll() is None and time.time() < deadline:  # the next run's kernel
        kernels |= _kernels_of_workers(tmp_path)
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    assert "Traceback" not in err and "interrupted; finished runs are kept" in err, err
    assert kernels, "never saw a kernel"
    gone = time.time() + 20
    while any(_alive(k) for k in kernels) and time.time() < gone:
        time.sleep(0.2)
    assert not any(_alive(k) for k in kernels), "a kernel outlived the interrupted sweep"
    finished = [r for r in reports() if json.loads(r.read_text())["status"] == "ok"]
    assert 1 <= len(finished) <= 3
    mtimes = {r: r.stat().st_mtime_ns for r in finished}
    assert not (tmp_path / "sw/results.csv").exists() or len(finished) == 3
    out = cli(*args[3:], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"skipping {len(finished)} finished run(s); running {3 - len(finished)}" in out.stderr
    assert all(r.stat().st_mtime_ns == m for r, m in mtimes.items())  # finished runs were not re-run
    df = _table(tmp_path / "sw/results.csv")
    assert df["seed"].tolist() == [0, 1, 2] and (df["status"] == "ok").all()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its reaper is not running
        return open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    except OSError:
        return False


def _kernels_of_workers(root) -> set:
    """PIDs of the kernels that the sweep workers under ``root`` have started (children of a worker)."""
    found = set()
    for marker in root.glob("sw/runs/*/*.running"):
        try:
            worker = json.loads(marker.read_text())["pid"]
            children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(worker)], capture_output=True, text=True)
        except (OSError, ValueError, KeyError):
            continue
        found |= {int(x) for x in children.stdout.split()}
    return found


@pytest.mark.slow
def test_a_killed_worker_costs_nothing_but_a_retry(failing_book):
    tmp_path = failing_book
    args = [sys.executable, "-m", "ttbook", "sweep", "boom", "--smoke", "-p", "seed", "0,1", "-p", "nap", "2.0",
            "--workers", "2", "--dir", "sw"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, victim = time.time() + 300, None
    while victim is None and proc.poll() is None and time.time() < deadline:
        for marker in (tmp_path / "sw/runs").glob("*/boom.running"):
            try:
                victim = json.loads(marker.read_text())["pid"]
                break
            except (OSError, ValueError):
                pass
        time.sleep(0.1)
    assert victim is not None, "no worker started"
    os.kill(victim, signal.SIGKILL)  # kill one pool worker by its PID, mid-run
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "died (exit status -9); starting it again" in err
    df = _table(tmp_path / "sw/results.csv")
    assert df["seed"].tolist() == [0, 1] and (df["status"] == "ok").all()


@pytest.mark.slow
def test_negative_values_parse_and_sweeps_in_one_folder_merge(tmp_path, failing_book):
    refused = cli("sweep", "intro", "--smoke", "-p", "d", "-3,4", "--dir", "sw", cwd=tmp_path)
    assert refused.returncode == 2  # d = -3 is read as a value, and refused before any run starts
    assert "parameter 'd' must be an int ≥ 1, got -3" in refused.stderr and not (tmp_path / "sw").exists()
    first = cli("sweep", "boom", "--smoke", "-p", "d", "2,4", "-p", "fail_at", "2", "--dir", "sw", cwd=failing_book)
    assert first.returncode == 1
    second = cli("sweep", "boom", "--smoke", "-p", "seed", "5", "--dir", "sw", cwd=failing_book)
    assert second.returncode == 0, second.stderr
    assert "with 2 row(s) of earlier sweeps" in second.stdout
    df = _table(failing_book / "sw/results.csv")
    assert len(df) == 3 and sorted(df["status"].tolist()) == ["failed", "ok", "ok"]
    failed = df[df["status"] == "failed"].iloc[0]
    assert failed["d"] == 2 and "d = 2 fails on purpose" in failed["error"]
    assert "columns (▢ marks where the page quotes the number):" in second.stdout
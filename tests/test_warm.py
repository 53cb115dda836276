"""Warm kernels (ttbook.warm): a kernel forked from the warm server computes what a cold one does.

The oracle is a cold kernel (``python -m ipykernel_launcher``, as Jupyter starts one) running the
same notebook: every output must be equal, byte for byte, figures included. The warm one must
also really be warm (its parent is the server) and behave as a kernel under Jupyter's control:
interrupted by Jupyter's interrupt, gone when its launcher is killed.
"""

import os
import signal
import sys
import time

import pytest

from fake_chapters import front_matter
from ttbook import chapters, warm

def _probe(title: str, report: str, unseeded: str) -> str:
    """A chapter of the probe's shape: a parameter, a cell that reports, a cell of unseeded draws,
    a last cell that prints the kernel's parent (what :func:`_run` reads)."""
    return front_matter() + f'''
# {title}

```{{code-cell}} ipython3
:tags: [parameters]

scale = 1.0    # a number | float
```

```{{code-cell}} ipython3
{report}
```

```{{code-cell}} ipython3
{unseeded}
```

```{{code-cell}} ipython3
print("parent", os.getppid())
```
'''


PROBE = _probe("A chapter that reports its process", '''import os, sys

import numpy as np
import torch
import matplotlib.pyplot as plt

print(np.random.default_rng(0).normal(size=2), torch.randn(2, generator=torch.Generator().manual_seed(0)))
print(torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS"), os.environ.get("WARM_PROBE"))
print(os.path.basename(os.getcwd()), sys.path[:3], sys.argv[0], sys.argv[1])
print(plt.get_backend())
fig, ax = plt.subplots(figsize=(2, 2))
_ = ax.plot([0, 1], [0, scale])''', "print(torch.randn(2), np.random.rand(2))   # unseeded: fresh in every process")

#: for the tests that only ask who started the kernel: nothing heavy to import when it starts cold
TINY = _probe("A chapter that only reports its process", '''import os

print(os.environ.get("OMP_NUM_THREADS"), os.environ.get("WARM_PROBE"))''', 'print("nothing unseeded here")')


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = warm.start(tmp_path_factory.mktemp("warm"), wait=True)
    assert os.path.exists(srv["env"][warm.SOCKET_VARIABLE]), "the server never listened"
    yield srv
    warm.stop(srv)


def _run(path, env):
    """Execute the probe chapter with exactly these routing variables; (outputs, kernel's parent pid)."""
    saved = {k: os.environ.get(k) for k in (warm.SOCKET_VARIABLE, "JUPYTER_PATH", "WARM_PROBE")}
    for k in saved:
        os.environ.pop(k, None)
    os.environ.update(env)
    try:
        nb = chapters.execute(path, {"scale": 2.0})
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v
    outs = [[(o.get("output_type"), o.get("text"), dict(o.get("data", {}))) for o in c.get("outputs", [])]
            for c in nb.cells if c.cell_type == "code"]
    parent = int(outs[-1][0][1].split()[1])
    return outs[:-2], outs[-2][0][1], parent


def test_a_warm_kernel_computes_what_a_cold_one_does(tmp_path, server):
    chapter = tmp_path / "probe" / "probe.md"
    chapter.parent.mkdir()
    chapter.write_text(PROBE)
    cold, cold_draw, cold_parent = _run(chapter, {"WARM_PROBE": "x"})
    hot, hot_draw, hot_parent = _run(chapter, {**server["env"], "WARM_PROBE": "x"})
    _, hot_draw_2, _ = _run(chapter, {**server["env"], "WARM_PROBE": "x"})
    assert cold_parent == os.getpid()                 # papermill's own child
    assert hot_parent == server["process"].pid        # forked by the server: really warm
    assert hot == cold                                # every output, the figure's PNG bytes too
    # unseeded generators are seeded afresh in each kernel, as in each cold interpreter
    assert len({cold_draw, hot_draw, hot_draw_2}) == 3
    images = [o for cell in hot for (_, _, data) in cell for o in data if o == "image/png"]
    assert images, "the figure must reach the notebook (the inline backend is set up after the fork)"
    text = "".join(o[1] or "" for cell in hot for o in cell)
    assert "\n1 1 x\nprobe [" in text


def test_a_launch_whose_imports_would_differ_starts_cold(tmp_path, server):
    chapter = tmp_path / "probe" / "probe.md"
    chapter.parent.mkdir()
    chapter.write_text(TINY)
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "2" if before != "2" else "3"
    try:
        outs, _, parent = _run(chapter, server["env"])
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = before
    assert parent == os.getpid()        # cold: torch and BLAS size their pools from it at import
    threads = "2" if before != "2" else "3"
    assert outs[2][0][1] == f"{threads} None\n"   # the variable reached the cold kernel


def test_no_server_means_a_cold_kernel(tmp_path):
    chapter = tmp_path / "probe" / "probe.md"
    chapter.parent.mkdir()
    chapter.write_text(TINY)
    spec = warm.start(tmp_path / "w2", wait=True)
    sock = spec["env"][warm.SOCKET_VARIABLE]
    assert os.path.exists(sock)
    warm.stop(spec)                     # the kernelspec stays; the server and its socket are gone
    assert spec["process"].poll() is not None and not os.path.exists(sock)
    _, _, parent = _run(chapter, spec["env"])
    assert parent == os.getpid()


def _wait_gone(pid, seconds=10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _kernel(env, monkeypatch):
    """A kernel Jupyter starts with these routing variables, and its client, ready."""
    from jupyter_client.manager import KernelManager

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    km = KernelManager(kernel_name="python3")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
    except BaseException:
        _close(km, kc)
        raise
    return km, kc


def _close(km, kc):
    """Stop the client and the kernel, if it is still there."""
    kc.stop_channels()
    try:
        km.shutdown_kernel(now=True)
    except Exception:  # noqa: BLE001 - already gone
        pass


def test_interrupt_and_kill_reach_the_forked_kernel(server, monkeypatch):
    km, kc = _kernel(server["env"], monkeypatch)
    try:
        kc.execute("import os; print(os.getpid(), os.getppid())")
        child = parent = None
        while child is None:
            msg = kc.get_iopub_msg(timeout=30)
            if msg["msg_type"] == "stream":
                child, parent = map(int, msg["content"]["text"].split())
        assert parent == server["process"].pid
        launcher = km.provisioner.process.pid
        assert launcher != child
        # Jupyter's interrupt (SIGINT to the launcher's process group) reaches the running cell
        kc.execute("import time; time.sleep(60)")
        time.sleep(1.0)
        t0 = time.monotonic()
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=30)
        while reply["content"].get("status") == "ok" and "sleep" not in str(reply):
            reply = kc.get_shell_msg(timeout=30)
        assert time.monotonic() - t0 < 20
        errors = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not errors:
            msg = kc.get_iopub_msg(timeout=20)
            if msg["msg_type"] == "error":
                errors.append(msg["content"]["ename"])
        assert errors == ["KeyboardInterrupt"]
        # a launcher killed outright takes its kernel with it
        os.kill(launcher, signal.SIGKILL)
        assert _wait_gone(child), "the forked kernel outlived its launcher"
    finally:
        _close(km, kc)


def test_the_launcher_refuses_unknown_commands():
    assert warm.main(["nonsense"]) == 2


WHO = front_matter() + '''
# A chapter that says who started its kernel

```{code-cell} ipython3
:tags: [parameters]

x = 0          # a number | int ≥ 0
seed = 0       # seed | int ≥ 0
```

```{code-cell} ipython3
import os

from myst_nb import glue

with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
    parent = f.read().replace(b"\\0", b" ").decode()
glue("who_warm", "ttbook.warm serve" in parent, display=False)
```
'''


def test_a_local_sweep_forks_its_runs_kernels_from_its_own_server(tmp_path):
    import subprocess

    import pandas as pd

    root = tmp_path / "whobook"
    (root / "book").mkdir(parents=True)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/who\n")
    (root / "book" / "who.md").write_text(WHO)
    env = {k: v for k, v in os.environ.items() if k not in (warm.SOCKET_VARIABLE, "JUPYTER_PATH")}
    out = subprocess.run([sys.executable, "-m", "ttbook", "sweep", "who", "-p", "x", "1,2", "--workers", "2",
                          "--dir", "sw"], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    df = pd.read_csv(root / "sw" / "results.csv")
    assert df["status"].tolist() == ["ok", "ok"] and df["who_warm"].tolist() == [True, True]


def _say(kc, code) -> str:
    """Run ``code`` in the kernel; its printed text."""
    kc.execute(code)
    while True:
        msg = kc.get_iopub_msg(timeout=30)
        if msg["msg_type"] == "stream":
            return msg["content"]["text"]
        if msg["msg_type"] == "error":
            raise AssertionError(msg["content"]["evalue"])


def test_lifecycle_a_broken_launch_and_a_stopped_server_leave_kernels_alone(tmp_path, monkeypatch):
    import socket as so
    import subprocess

    srv = warm.start(tmp_path / "w4", wait=True)
    sock = srv["env"][warm.SOCKET_VARIABLE]
    # a launcher that vanishes before the reply does not take the server down
    c = so.socket(so.AF_UNIX, so.SOCK_STREAM)
    c.connect(sock)
    c.sendall(b'{"half": ')
    c.close()
    km, kc = _kernel(srv["env"], monkeypatch)
    try:
        kid, parent = map(int, _say(kc, "import os; print(os.getpid(), os.getppid())").split())
        assert parent == srv["process"].pid          # served after the broken launch: still warm
        # the kernel leads its own group, so what it starts goes with it
        assert os.getpgid(kid) == kid
        child = int(_say(kc, "import subprocess; p = subprocess.Popen(['sleep', '300']); print(p.pid)"))
        # stopping the server leaves the running kernel alone
        warm.stop(srv)
        time.sleep(2.5)   # ipykernel's parent poller looks once a second
        assert _say(kc, "print(6 * 7)").strip() == "42"
        launcher = km.provisioner.process
        # a shutdown request: the kernel ends itself (or, if slower than Jupyter's wait, is
        # terminated through its launcher), and the launcher ends with it
        km.shutdown_kernel(now=False)
        assert launcher.wait(timeout=30) in (0, 1)
        assert _wait_gone(kid)
    finally:
        _close(km, kc)
        warm.stop(srv)
    # a kernel that ends itself leaves what it started running, warm or cold
    subprocess.run(["kill", "-9", str(child)], capture_output=True)


def test_killing_a_warm_kernel_takes_what_it_started(server, monkeypatch):
    km, kc = _kernel(server["env"], monkeypatch)
    try:
        child = int(_say(kc, "import subprocess; p = subprocess.Popen(['sleep', '300']); print(p.pid)"))
        kid = int(_say(kc, "import os; print(os.getpid())"))
        km.shutdown_kernel(now=True)   # SIGKILL to the launcher's group, as for a cold kernel
        assert _wait_gone(kid) and _wait_gone(child), "the kernel or its subprocess outlived the kill"
    finally:
        kc.stop_channels()


def test_a_matplotlibrc_in_the_folder_means_a_cold_kernel(tmp_path, server):
    chapter = tmp_path / "probe" / "probe.md"
    chapter.parent.mkdir()
    chapter.write_text(TINY)
    (chapter.parent / "matplotlibrc").write_text("lines.linewidth: 7\n")
    _, _, parent = _run(chapter, server["env"])
    assert parent == os.getpid()


def test_a_server_whose_starter_dies_exits(tmp_path):
    import subprocess

    starter = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
sys.path.insert(0, {str(warm.__file__.rsplit('/ttbook/', 1)[0])!r})
from ttbook import warm
srv = warm.start({str(tmp_path / 'w5')!r}, wait=True)
print(srv["process"].pid, flush=True)
time.sleep(600)
"""], stdout=subprocess.PIPE, text=True)
    pid = int(starter.stdout.readline())
    starter.kill()
    starter.wait()
    assert _wait_gone(pid, 15), "the server outlived its starter"
    assert not (tmp_path / "w5" / "warm.sock").exists()


NICE_PROBE = _probe("A chapter that reports its priority", '''import os

try:
    group = open("/proc/self/autogroup").read().split()[-1]
except OSError:
    group = "none"
print(os.getpriority(os.PRIO_PROCESS, 0), group)''', 'print("nothing unseeded here")')


def test_a_kernel_takes_its_launchers_priority_warm_or_cold(tmp_path, server):
    """``make book`` lowers the priority of every chapter but the longest (tools/execute_parallel.py);
    a cold kernel inherits its launcher's niceness, so a forked one must take it too."""
    import json
    import subprocess

    chapter = tmp_path / "probe" / "probe.md"
    chapter.parent.mkdir()
    chapter.write_text(NICE_PROBE)
    script = f'''
import json, os, sys
sys.path.insert(0, {os.path.dirname(__file__)!r})
from test_warm import _run
env = json.loads(sys.argv[1])
out = {{}}
threads = os.environ.get("OMP_NUM_THREADS")
for name, routing in (("cold", {{}}), ("warm", env), ("launcher, cold", env)):
    if name == "launcher, cold":   # the server refuses it (other thread variables): the launcher execs
        os.environ["OMP_NUM_THREADS"] = "2" if threads != "2" else "3"
    outs, _, parent = _run({str(chapter)!r}, routing)
    nice, group = outs[2][0][1].split()
    out[name] = [int(nice), parent, group]
print(json.dumps([os.getpriority(os.PRIO_PROCESS, 0), os.getpid(), out]))
'''
    base = os.getpriority(os.PRIO_PROCESS, 0)
    done = subprocess.run([sys.executable, "-c", script, json.dumps(server["env"])], capture_output=True,
                          text=True, timeout=240, preexec_fn=lambda: os.nice(3))
    assert done.returncode == 0, done.stderr[-3000:]
    nice, _, out = json.loads(done.stdout.strip().splitlines()[-1])
    assert nice == base + 3
    assert out["warm"][:2] == [base + 3, server["process"].pid]    # forked by the server, same priority
    assert out["cold"][0] == base + 3 and out["cold"][1] != server["process"].pid   # the oracle: inherited
    assert out["launcher, cold"][:2] == out["cold"][:2]
    # where the scheduler groups by session (Linux autogroups), the launcher gives the session of
    # its kernel, warm or cold, that niceness too (a kernel Jupyter starts directly keeps its own)
    if os.path.exists("/proc/self/autogroup"):
        assert out["warm"][2] == out["launcher, cold"][2] == str(base + 3)


def test_a_server_with_a_lower_priority_than_the_launch_refuses_it(tmp_path):
    """A forked kernel cannot raise its priority above the server's (only privilege can): such a
    launch starts cold, at the launcher's priority, as a kernel Jupyter starts directly would."""
    chapter = tmp_path / "probe" / "probe.md"
    chapter.parent.mkdir()
    chapter.write_text(NICE_PROBE)
    srv = warm.start(tmp_path / "w", wait=True)
    try:
        base = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, srv["process"].pid, base + 4)   # the server yields, we do not
        outs, _, parent = _run(chapter, srv["env"])
    finally:
        warm.stop(srv)
    assert parent == os.getpid()                        # cold: papermill's own child
    assert int(outs[2][0][1].split()[0]) == base


def test_a_refused_session_change_is_tried_again(monkeypatch):
    """Without CAP_SYS_ADMIN Linux takes one autogroup change per 0.1 s, machine-wide (EAGAIN)."""
    import io

    written, refusals = [], [2]

    class Group(io.StringIO):
        def __init__(self, mode="r"):
            super().__init__("/autogroup-7 nice 0\n" if mode == "r" else "")
            self.mode_ = mode

        def write(self, text):
            if refusals[0]:
                refusals[0] -= 1
                raise BlockingIOError(11, "Resource temporarily unavailable")
            written.append(text)
            return len(text)

    monkeypatch.setattr(warm, "open", lambda path, mode="r": Group(mode), raising=False)
    monkeypatch.setattr(warm.time, "sleep", lambda s: None)
    warm.session_priority(19)
    assert written == ["19"] and refusals == [0]
    written.clear()
    warm.session_priority(0)     # already the session's: nothing written
    assert written == []

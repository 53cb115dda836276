"""Warm kernels: the chapters' heavy imports paid once per session, then a fork per kernel.

Every chapter's kernel imports torch, matplotlib, seaborn, scipy and IPython before its first
cell runs: about 5 CPU-seconds on this book's 2-core machines, paid again by every kernel the test
suite and the book build start (dozens). A *warm server* (``python -m ttbook.warm serve SOCKET``)
imports them once and waits on a Unix socket. The kernelspec that :func:`start` puts first on
``JUPYTER_PATH`` replaces ``python -m ipykernel_launcher`` by ``python -m ttbook.warm launch``: the
launcher hands its standard streams, its working directory, its environment and its command line
to the server, which forks; the child becomes an ordinary ipykernel (``ipykernel_launcher``'s own
entry point) in that folder, with that environment.

What the child cannot change after the fork is what the imports read when they ran: the thread
variables (torch and BLAS size their pools from them), ``PYTHONPATH``, ``PYTHONHASHSEED``,
matplotlib's configuration and the interpreter. A launch whose values differ from the server's,
or one that finds no server, starts the kernel cold, exactly as before, so a warm kernel is
only ever a faster way to the same process. The child also takes the launcher's scheduling
priority (its niceness), as a cold kernel inherits it; a launch with a higher priority than the
server's starts cold. The forked child, and the launcher before it execs a cold kernel, give the
kernel's session that niceness too (:func:`session_priority`): Linux's autogrouping shares the
CPUs between sessions before niceness counts. Nothing here is imported by the chapters; only the
standard library is imported by the launcher.

The launcher stays alive as the process Jupyter manages: it forwards the signals Jupyter sends
(interrupt, terminate) to the child's process group, as Jupyter would signal a cold kernel's, and
exits when the child ends (a pipe only the child holds closes), with the kernel's exit status when
it ends through ipykernel's own exit, else 1 (the launcher cannot wait for a process it did not
start). The
child leads its own session, like a cold kernel, so its own workers go with it. It exits, with its
whole group, when the launcher dies (a pipe the launcher holds closes), and the launcher ends it
when whoever started the launcher dies, so no kernel outlives its manager. A kernel does not
depend on the server once it runs: stopping or losing the server leaves running kernels alone,
and a server whose starter dies exits.

One difference is by design: the kernel starts with the server's modules already imported, the
book's own (every chapter imports them through :mod:`ttscale.plotting`). A notebook that relies
on one of them *not* being imported (a seaborn colour map not yet registered, say) can behave
differently warm; ``TTBOOK_WARM=0`` runs it cold.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["PRELOAD", "FROZEN", "start", "wait_ready", "stop", "serve", "launch", "session_priority"]

#: Modules the server imports before it forks: what every chapter's first cell pays for.
PRELOAD = ("numpy", "scipy.linalg", "scipy.optimize", "scipy.stats", "pandas", "torch",
           "matplotlib", "matplotlib.pyplot", "seaborn", "IPython", "ipykernel.kernelapp", "myst_nb")

#: Environment read at interpreter start or while those modules were imported; a launch must match
#: the server on each, and on every variable starting with one of :data:`FROZEN_PREFIXES`.
FROZEN = ("PYTHONPATH", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV", "PYTHONHOME",
          "PYTHONWARNINGS", "PYTHONUTF8", "PYTHONIOENCODING", "PYTHONOPTIMIZE", "PYTHONDEVMODE",
          "PYTHONFAULTHANDLER", "PYTHONTRACEMALLOC", "PYTHONSAFEPATH", "PYTHONNOUSERSITE",
          "PYTHONINTMAXSTRDIGITS", "LC_ALL", "LC_CTYPE", "LANG", "HOME", "XDG_CONFIG_HOME",
          "MPLBACKEND", "MPLCONFIGDIR", "MATPLOTLIBRC")
#: Thread pools and torch's own switches, read when torch, OpenMP and the BLAS libraries load.
FROZEN_PREFIXES = ("OMP_", "MKL_", "OPENBLAS_", "GOMP_", "KMP_", "TORCH_", "PYTORCH_", "NUMEXPR_")

SOCKET_VARIABLE = "TTBOOK_WARM_SOCKET"
_INLINE = "module://matplotlib_inline.backend_inline"
_SERVER_CWD = ""
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def _frozen(env, executable, cwd) -> dict:
    out = {name: env.get(name) for name in FROZEN}
    out.update({name: value for name, value in env.items() if name.startswith(FROZEN_PREFIXES)})
    # matplotlib reads a matplotlibrc in the working directory first, when it is imported
    return out | {"executable": executable, "matplotlibrc here": os.path.exists(os.path.join(cwd, "matplotlibrc"))}


# --------------------------------------------------------------------------- server


def _child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the kernel the launcher asked for. Never returns.

    When the kernel ends, the child runs the interpreter's exit handlers (atexit: multiprocessing's
    clean-up, IPython's history) as a cold kernel would, reports its exit status to the launcher,
    and leaves without tearing its modules down one by one (measured: that teardown took the
    forked kernel 2 s longer to exit).
    """
    try:
        os.setsid()   # its own session and process group, as Jupyter starts a cold kernel
        for sig in _SIGNALS + (signal.SIGCHLD,):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        stdin, stdout, stderr, alive, done = fds
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, target)
            os.close(fd)
        os.set_inheritable(alive, False)
        os.set_inheritable(done, False)

        def watch():   # the launcher's end closes when it exits, however it exits
            while os.read(alive, 1):
                pass
            os.killpg(0, signal.SIGKILL)   # the kernel and whatever it started

        threading.Thread(target=watch, name="ttbook-warm-launcher", daemon=True).start()
        # the launcher's scheduling priority, as a cold kernel would inherit it (the server
        # refuses a launch that asks for a higher priority than its own, which only privilege gives)
        nice = int(request.get("nice", 0))
        if nice != os.getpriority(os.PRIO_PROCESS, 0):
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        session_priority(nice)   # setsid() above made a new scheduling group: give it the kernel's
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        time.tzset()
        # what `python -m ipykernel_launcher` does: `-m` put the working directory first on
        # sys.path (the server's: it ran `python -m ttbook.warm`), and the launcher removes it
        if sys.path and (sys.path[0] == "" or os.path.abspath(sys.path[0]) == _SERVER_CWD):
            del sys.path[0]
        # ipykernel's parent poller would end the kernel when the *server* goes (it reads
        # JPY_PARENT_PID at import, in the server, and then watches for a change of parent);
        # parent_handle = 1 switches it off, and with it the banner a handle of 0 prints. The
        # launcher does that watching instead: it ends the kernel when its own parent dies.
        handles = {"parent_handle": 1, "interrupt": int(os.environ.get("JPY_INTERRUPT_EVENT") or 0)}
        import ipykernel_launcher   # the entry point's file, as sys.argv[0] names it in a cold kernel

        sys.argv = [ipykernel_launcher.__file__, *request["args"]]
        # a fresh interpreter seeds torch's default generator and numpy's global one from the OS;
        # without this every forked kernel would share the server's draws (Python's own random
        # module reseeds itself after a fork)
        sys.modules["torch"].seed()
        sys.modules["numpy"].random.seed()
        from ipykernel import kernelapp
    except BaseException:  # noqa: BLE001 - reported on the launcher's stderr
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    code = 0
    try:
        kernelapp.launch_new_instance(**handles)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - as an uncaught error would end a cold kernel
        import traceback

        traceback.print_exc()
        code = 1
    import atexit

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.write(done, bytes([code & 0xFF]))
    except OSError:
        pass
    os._exit(code)


def _reply(conn, message: dict) -> None:
    try:
        conn.sendall(json.dumps(message).encode())
    except OSError:   # the launcher gave up waiting: it starts cold, or is gone
        pass


def _close(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def serve(path: str) -> None:
    """Import :data:`PRELOAD`, listen on the Unix socket ``path`` and fork a kernel per launch.

    Single-threaded, so that every fork is of a process with one thread. It exits when the
    process that started it dies (checked every second), or on SIGTERM.
    """
    import importlib

    global _SERVER_CWD
    _SERVER_CWD = os.path.abspath(os.getcwd())
    starter = os.getppid()
    mine = _frozen(os.environ, sys.executable, _SERVER_CWD)   # before the backend is set for the imports
    os.environ.setdefault("MPLBACKEND", _INLINE)   # as ipykernel sets it before any user code
    for name in PRELOAD:
        importlib.import_module(name)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)    # children are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = f"{path}.{os.getpid()}"
    listener.bind(tmp)
    listener.listen(16)
    listener.settimeout(1.0)
    os.replace(tmp, path)            # the socket appears only once it accepts
    signal.signal(signal.SIGTERM, lambda *_: (_remove(path), os._exit(0)))
    while True:
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            if os.getppid() != starter:   # orphaned: nobody will stop us
                _remove(path)
                os._exit(0)
            continue
        fds = []
        with conn:
            try:
                conn.settimeout(30)
                msg, fds, _, _ = socket.recv_fds(conn, 1 << 16, 8)
                msg += b"".join(iter(lambda: conn.recv(1 << 16), b""))   # the rest, to the launcher's EOF
                request = json.loads(msg)
                if len(fds) != 5:
                    raise ValueError(f"a launch hands over 5 file descriptors, got {len(fds)}")
                theirs = _frozen(request["env"], request["executable"], request["cwd"])
            except Exception as exc:  # noqa: BLE001 - a bad launch must not stop the server
                _close(fds)
                _reply(conn, {"ok": False, "why": repr(exc)})
                continue
            differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            if int(request.get("nice", 0)) < os.getpriority(os.PRIO_PROCESS, 0):
                differ.append("niceness below the server's")
            if differ:
                _close(fds)
                _reply(conn, {"ok": False, "why": f"environment differs on {differ}"})
                continue
            pid = os.fork()
            if pid == 0:
                listener.close()
                conn.close()
                _child(request, fds)
            _close(fds)
            _reply(conn, {"ok": True, "pid": pid})


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------- launcher


def session_priority(nice: int) -> None:
    """Give this process's session the niceness ``nice`` as well, where Linux groups by session.

    With autogrouping (``/proc/sys/kernel/sched_autogroup_enabled``), the scheduler first shares
    the CPUs equally between sessions and applies a process's niceness only inside its own. Jupyter
    starts every kernel in a new session, so a kernel's niceness alone would not lower its share
    against another kernel's; the session's niceness does. Best effort: without autogrouping, or
    when the kernel refuses the change, nothing happens. Without CAP_SYS_ADMIN, Linux accepts one
    such change every 0.1 s on the whole machine and refuses the others with EAGAIN, so a refused
    write is tried again, for up to a second.
    """
    for _ in range(20):
        try:
            with open("/proc/self/autogroup") as f:
                if int(f.read().split()[-1]) == nice:
                    return
            with open("/proc/self/autogroup", "w") as f:
                f.write(str(nice))
            return
        except BlockingIOError:   # another session's change came less than 0.1 s ago
            time.sleep(0.05)
        except (OSError, ValueError, IndexError):
            return


def _cold(args) -> None:
    # Jupyter started this launcher in a new session, which the kernel exec'd here runs in
    session_priority(os.getpriority(os.PRIO_PROCESS, 0))
    os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", *args])


def launch(args: list[str]) -> int:
    """The kernelspec's command: a kernel forked by the warm server, else a cold one (exec)."""
    import select

    path = os.environ.get(SOCKET_VARIABLE)
    if not path or not os.path.exists(path):
        _cold(args)
    alive_r, alive_w = os.pipe()   # the child watches alive_r: EOF when this process is gone
    done_r, done_w = os.pipe()     # only the child holds done_w: EOF (after its status) when it ends
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(30)
            conn.connect(path)
            request = {"args": list(args), "cwd": os.getcwd(), "env": dict(os.environ),
                       "executable": sys.executable, "nice": os.getpriority(os.PRIO_PROCESS, 0)}
            socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2, alive_r, done_w])
            conn.shutdown(socket.SHUT_WR)
            reply = json.loads(b"".join(iter(lambda: conn.recv(65536), b"")) or b"{}")
    except (OSError, ValueError):
        reply = {"ok": False}
    os.close(alive_r)
    os.close(done_w)
    if not reply.get("ok"):
        os.close(alive_w)
        os.close(done_r)
        _cold(args)
    pid = int(reply["pid"])   # the leader of the kernel's process group

    def forward(sig, _frame):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    for sig in _SIGNALS:
        signal.signal(sig, forward)
    # Wait for the child's end (its status, then EOF on done_r). If whoever started us dies,
    # end the kernel, as a cold kernel's parent poller would.
    parent = os.getppid()
    while True:
        try:
            ready, _, _ = select.select([done_r], [], [], 0.5)
        except InterruptedError:
            continue
        if ready:   # the status byte comes just before the child's _exit; EOF alone: it died
            chunk = os.read(done_r, 16)
            return chunk[-1] if chunk else 1
        elif os.getppid() != parent:
            forward(signal.SIGKILL, None)
            return 1


# --------------------------------------------------------------------------- session


def start(folder, *, env=None, wait: bool = False, timeout: float = 120.0) -> dict:
    """Start a warm server for this session; the environment variables that route kernels to it.

    ``folder`` (created) gets the socket and a ``python3`` kernelspec calling the launcher. Put
    the returned variables into the environment of whatever starts kernels (they inherit it).
    ``env`` is the server's environment (default this process's): the kernels it can fork are those
    launched with the same import-time variables (:data:`FROZEN`). ``wait=True`` blocks until the
    server accepts; otherwise launches that come first start cold.
    Returns ``{"env": {...}, "process": Popen, "folder": str}``; :func:`wait_ready` waits later.
    """
    folder = Path(folder)
    spec = folder / "share" / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ttbook.warm", "launch", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python",
        "metadata": {"debugger": True}, "kernel_protocol_version": "5.5"}, indent=1))
    sock = str(folder / "warm.sock")
    _remove(sock)
    proc = subprocess.Popen([sys.executable, "-m", "ttbook.warm", "serve", sock], stdout=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    jupyter_path = os.pathsep.join(filter(None, [str(folder / "share"), os.environ.get("JUPYTER_PATH")]))
    server = {"env": {SOCKET_VARIABLE: sock, "JUPYTER_PATH": jupyter_path}, "process": proc, "folder": str(folder)}
    if wait:
        wait_ready(server, timeout)
    return server


def wait_ready(server: dict, timeout: float = 120.0) -> bool:
    """Block until a server :func:`start` returned accepts launches (True), or has died or
    ``timeout`` seconds have passed (False: launches then start cold)."""
    sock, proc = server["env"][SOCKET_VARIABLE], server["process"]
    deadline = time.monotonic() + timeout
    while not os.path.exists(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stop(server: dict) -> None:
    """Stop a server :func:`start` returned (kernels it forked keep running until they end)."""
    proc = server["process"]
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    _remove(server["env"][SOCKET_VARIABLE])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"] and len(argv) == 2:
        serve(argv[1])
        return 0
    if argv[:1] == ["launch"]:
        return launch(argv[1:])
    print("usage: python -m ttbook.warm serve SOCKET | launch -f CONNECTION_FILE [ARGS]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

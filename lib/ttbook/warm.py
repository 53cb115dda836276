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
only ever a faster way to the same process. Nothing here is imported by the chapters; only the
standard library is imported by the launcher.

The launcher stays alive as the process Jupyter manages: it forwards the signals Jupyter sends
(interrupt, terminate) to the child and exits when the child does. The child exits when the
launcher dies (a pipe the launcher holds closes), so a killed launcher never leaves a kernel behind.
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

__all__ = ["PRELOAD", "FROZEN", "start", "stop", "serve", "launch"]

#: Modules the server imports before it forks: what every chapter's first cell pays for.
PRELOAD = ("numpy", "scipy.linalg", "scipy.optimize", "scipy.stats", "pandas", "torch",
           "matplotlib", "matplotlib.pyplot", "seaborn", "IPython", "ipykernel.kernelapp", "myst_nb")

#: Environment read while those modules were imported; a launch must match the server on each.
FROZEN = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONPATH", "PYTHONHASHSEED",
          "MPLBACKEND", "MPLCONFIGDIR", "PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV")

SOCKET_VARIABLE = "TTBOOK_WARM_SOCKET"
_INLINE = "module://matplotlib_inline.backend_inline"
_SERVER_CWD = ""
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def _frozen(env, executable) -> dict:
    return {name: env.get(name) for name in FROZEN} | {"executable": executable}


# --------------------------------------------------------------------------- server


def _child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the kernel the launcher asked for.

    When the kernel ends, the child runs the interpreter's exit handlers (atexit: multiprocessing's
    clean-up, IPython's history) as a cold kernel would, then leaves without tearing its modules
    down one by one (measured: that teardown took the forked kernel 2 s longer to exit).
    """
    try:
        for sig in _SIGNALS + (signal.SIGCHLD,):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        stdin, stdout, stderr, alive = fds
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, target)
            os.close(fd)
        os.set_inheritable(alive, False)

        def watch():   # the launcher's end closes when it exits, however it exits
            while os.read(alive, 1):
                pass
            os._exit(1)

        threading.Thread(target=watch, name="ttbook-warm-launcher", daemon=True).start()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        # what `python -m ipykernel_launcher` does: `-m` put the working directory first on
        # sys.path (the server's: it ran `python -m ttbook.warm`), and the launcher removes it
        if sys.path and (sys.path[0] == "" or os.path.abspath(sys.path[0]) == _SERVER_CWD):
            del sys.path[0]
        # ipykernel reads these two at import, in the server; a cold kernel would have read them here
        handles = {trait: int(os.environ.get(var) or 0)
                   for trait, var in (("parent_handle", "JPY_PARENT_PID"), ("interrupt", "JPY_INTERRUPT_EVENT"))}
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
    os._exit(code)


def serve(path: str) -> None:
    """Import :data:`PRELOAD`, listen on the Unix socket ``path`` and fork a kernel per launch."""
    import importlib

    global _SERVER_CWD
    _SERVER_CWD = os.path.abspath(os.getcwd())
    mine = _frozen(os.environ, sys.executable)     # before the backend is set for the imports
    os.environ.setdefault("MPLBACKEND", _INLINE)   # as ipykernel sets it before any user code
    for name in PRELOAD:
        importlib.import_module(name)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)    # children are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = f"{path}.{os.getpid()}"
    listener.bind(tmp)
    listener.listen(16)
    os.replace(tmp, path)            # the socket appears only once it accepts
    signal.signal(signal.SIGTERM, lambda *_: (_remove(path), os._exit(0)))
    while True:
        conn, _ = listener.accept()
        with conn:
            try:
                msg, fds, _, _ = socket.recv_fds(conn, 1 << 16, 8)
                msg += b"".join(iter(lambda: conn.recv(1 << 16), b""))   # the rest, to the launcher's EOF
                request = json.loads(msg)
                if len(fds) != 4:
                    raise ValueError(f"a launch hands over 4 file descriptors, got {len(fds)}")
            except Exception as exc:  # noqa: BLE001 - a bad launch must not stop the server
                conn.sendall(json.dumps({"ok": False, "why": repr(exc)}).encode())
                continue
            differ = [k for k, v in _frozen(request["env"], request["executable"]).items() if v != mine[k]]
            if differ:
                for fd in fds:
                    os.close(fd)
                conn.sendall(json.dumps({"ok": False, "why": f"environment differs on {differ}"}).encode())
                continue
            pid = os.fork()
            if pid == 0:
                listener.close()
                conn.close()
                _child(request, fds)
            for fd in fds:
                os.close(fd)
            conn.sendall(json.dumps({"ok": True, "pid": pid}).encode())


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------- launcher


def _cold(args) -> None:
    os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", *args])


def launch(args: list[str]) -> int:
    """The kernelspec's command: a kernel forked by the warm server, else a cold one (exec)."""
    path = os.environ.get(SOCKET_VARIABLE)
    if not path or not os.path.exists(path):
        _cold(args)
    alive_r, alive_w = os.pipe()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(30)
            conn.connect(path)
            request = {"args": list(args), "cwd": os.getcwd(), "env": dict(os.environ),
                       "executable": sys.executable}
            socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2, alive_r])
            conn.shutdown(socket.SHUT_WR)
            reply = json.loads(b"".join(iter(lambda: conn.recv(65536), b"")) or b"{}")
    except (OSError, ValueError):
        reply = {"ok": False}
    os.close(alive_r)
    if not reply.get("ok"):
        os.close(alive_w)
        _cold(args)
    pid = int(reply["pid"])

    def forward(sig, _frame):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    for sig in _SIGNALS:
        signal.signal(sig, forward)
    # The child is the server's, not ours: poll for it. And if whoever started us dies, end the
    # kernel, as a cold kernel's parent poller would.
    parent = os.getppid()
    while True:
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return 0
        if os.getppid() != parent:
            forward(signal.SIGKILL, None)
            return 1
        time.sleep(0.05)


# --------------------------------------------------------------------------- session


def start(folder, *, env=None, wait: bool = False, timeout: float = 120.0) -> dict:
    """Start a warm server for this session; the environment variables that route kernels to it.

    ``folder`` (created) gets the socket and a ``python3`` kernelspec calling the launcher. Put
    the returned variables into the environment of whatever starts kernels (they inherit it).
    ``env`` is the server's environment (default this process's): the kernels it can fork are those
    launched with the same import-time variables (:data:`FROZEN`). ``wait=True`` blocks until the
    server accepts; otherwise launches that come first start cold.
    Returns ``{"env": {...}, "process": Popen}``.
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
    if wait:
        deadline = time.monotonic() + timeout
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    jupyter_path = os.pathsep.join(filter(None, [str(folder / "share"), os.environ.get("JUPYTER_PATH")]))
    return {"env": {SOCKET_VARIABLE: sock, "JUPYTER_PATH": jupyter_path}, "process": proc}


def stop(server: dict) -> None:
    """Stop a server :func:`start` returned (its running kernels are not touched)."""
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

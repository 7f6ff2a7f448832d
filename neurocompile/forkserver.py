"""A fork server: one clean interpreter per process that runs workers.  It imports the heavy modules
(numpy, torch, Lava, our compiler and targets) once, then forks a worker (``neurocompile.worker``) for
each task: a worker starts in milliseconds instead of the ~3 s a fresh interpreter spends importing
torch and Lava.

Forking is safe only from a process that runs one thread (a child inherits every lock another thread
held: see ``neurocompile.worker``).  The server is itself a fresh interpreter (posix_spawn), starts
numpy's BLAS with one thread (``OPENBLAS_NUM_THREADS=1``: its pool would otherwise start at import),
and checks after its imports that it runs exactly one thread; where it does not, it refuses every
request and the requester starts a fresh interpreter per worker, as before.

It runs in a session of its own (a Ctrl-C to the terminal reaches the requester, which kills its
workers' groups) and dies with the requester (``PR_SET_PDEATHSIG``); its workers die with it.

Protocol, over a ``SOCK_SEQPACKET`` socket pair (a message per packet, pickled):

* request ``(folder, cwd, environ)`` with three descriptors attached (``SCM_RIGHTS``): the worker's log
  (its stdout and stderr), its progress pipe and its error pipe;
* reply ``("started", pid)`` once the worker leads its own process group (so ``killpg`` reaches it),
  or ``("refused", why)``;
* later, ``("exited", pid, exitcode)`` when a worker ends (the server reaps it).
"""
from __future__ import annotations

import os
import pickle
import selectors
import signal
import socket
import sys
import threading
import time

# imported before the first fork, with each built-in target's ``worker_modules``: what a worker would
# otherwise import itself (one that fails to import, e.g. Lava on a current Python, is skipped)
PRELOAD = ("numpy", "torch", "neurocompile.program", "neurocompile.emulator", "neurocompile.validate")
START_TIMEOUT_S = 120           # the first reply waits for the imports
MAX_MESSAGE = 1 << 20           # a request holds the environment


# ------------------------------------------------------------------------------------- the server
def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _preload() -> str:
    """Import PRELOAD; '' when this process still runs one thread, else why it may not fork."""
    import importlib

    from .target import TARGET_NAMES, get_target
    for name in PRELOAD + tuple(m for t in TARGET_NAMES for m in get_target(t).worker_modules):
        try:
            importlib.import_module(name)
        except Exception:                               # noqa: BLE001 - the worker imports it, or says why
            pass
    n = _threads()
    return "" if n == 1 else f"the fork server runs {n} threads after its imports"


def _worker(sock, others, folder, cwd, environ, fds, server) -> None:
    """In the forked child: become the worker of ``folder`` (never returns)."""
    from . import worker
    try:
        sock.close()
        for fd in others:
            os.close(fd)
        os.setsid()
        log, prog_w, err_w = fds
        for target in (1, 2):
            os.dup2(log, target)
        os.close(log)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environ)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    except BaseException:                               # noqa: BLE001 - nothing to report to yet
        os._exit(1)
    worker.main(folder, parent=server, pipes=(prog_w, err_w))


def serve(sock: socket.socket) -> None:
    """Answer requests until the requester closes its end."""
    from .execute import _set_parent_death_signal
    _set_parent_death_signal()
    refusal = _preload()
    import gc
    gc.freeze()          # the imports' objects are never collected: a worker (and Lava's forks) never scans them
    sys.stdout.flush()
    sys.stderr.flush()
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, None)
    pidfds = {}                                          # pidfd -> pid
    me = os.getpid()
    while True:
        for key, _ in sel.select():
            if key.data is not None:                     # a worker ended
                pid = pidfds.pop(key.fd)
                sel.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                sock.send(pickle.dumps(("exited", pid, os.waitstatus_to_exitcode(status))))
                continue
            try:
                msg, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 3)
            except OSError:
                os._exit(0)
            if not msg:
                os._exit(0)                              # the requester closed its end
            try:
                folder, cwd, environ = pickle.loads(msg)
                if refusal or len(fds) != 3:
                    sock.send(pickle.dumps(("refused", refusal or "three descriptors expected")))
                    continue
                pid = os.fork()
                if pid == 0:
                    _worker(sock, [*pidfds, sel.fileno()], folder, cwd, environ, fds, me)
                fd = os.pidfd_open(pid)
                pidfds[fd] = pid
                sel.register(fd, selectors.EVENT_READ, pid)
                _await_group(pid)
                sock.send(pickle.dumps(("started", pid)))
            finally:
                for fd in fds:
                    os.close(fd)


def _await_group(pid: int, wait_s: float = 5.0) -> None:
    """Wait until the child leads its own process group (its ``setsid``), or has ended."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            if os.getpgid(pid) == pid:
                return
        except ProcessLookupError:
            return
        time.sleep(0.001)


# ------------------------------------------------------------------------------------ the requester
class ForkServer:
    """The requester's handle: ``start`` a worker, read its ``exitcode``."""

    def __init__(self):
        self.owner = os.getpid()
        self.lock = threading.Lock()
        self.exits = {}                                  # pid -> exit code, reported by the server
        self.alive = True
        self.refused = False                             # it may not fork here: no server is started again
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        fd = theirs.fileno()
        os.set_inheritable(fd, True)
        try:
            self.pid = os.posix_spawn(sys.executable, [sys.executable, "-m", "neurocompile.forkserver", str(fd)], env,
                                      file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                                                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                                                    (os.POSIX_SPAWN_DUP2, 1, 2)],
                                      setsid=True)
        finally:
            theirs.close()

    def start(self, folder: str, environ: dict, log: int, prog_w: int, err_w: int) -> int | None:
        """The pid of a worker forked for ``folder``, or None (refused, or the server is gone: start a
        fresh interpreter instead)."""
        with self.lock:
            if not self.alive:
                return None
            try:
                socket.send_fds(self.sock, [pickle.dumps((folder, os.getcwd(), environ))], [log, prog_w, err_w])
                deadline = time.monotonic() + START_TIMEOUT_S
                while True:
                    reply = self._receive(deadline - time.monotonic())
                    if reply is None:
                        raise OSError("no reply")
                    if reply[0] == "started":          # an exit filed under this pid was an earlier process's
                        self.exits.pop(reply[1], None)
                        return reply[1]
                    if reply[0] == "refused":
                        self.refused = True
                        self._stop()
                        return None
            except (OSError, EOFError, pickle.UnpicklingError):
                self._stop()
                return None

    def exitcode(self, pid: int) -> int | None:
        """The worker's exit code once it has ended, else None."""
        with self.lock:
            while self.alive and self._receive(0) is not None:
                pass
            if pid in self.exits:
                return self.exits.pop(pid)
            if not self.alive:                           # the server died: so did its workers (death signal)
                return -signal.SIGKILL
            return None

    def _receive(self, timeout: float):
        """One message (exits are filed away and returned too), or None when none came in time."""
        self.sock.settimeout(max(0.0, timeout))
        try:
            data = self.sock.recv(MAX_MESSAGE)
        except (BlockingIOError, socket.timeout):
            return None
        except OSError:
            data = b""
        if not data:                                     # the server died (its workers with it)
            self._stop()
            return None
        msg = pickle.loads(data)
        if msg[0] == "exited":
            self.exits[msg[1]] = msg[2]
        return msg

    def _stop(self) -> None:
        """Kill and reap the server (no zombie is left), once."""
        if not self.alive:
            return
        self.alive = False
        try:
            self.sock.close()
        except OSError:
            pass
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


_server: ForkServer | None = None
_server_lock = threading.Lock()


def server() -> ForkServer | None:
    """This process's fork server (started on first use; a forked process starts its own), or None
    where there is none to be had (no ``pidfd_open``: Linux < 5.3, or another OS)."""
    global _server
    if not hasattr(os, "pidfd_open") or not hasattr(socket, "send_fds"):
        return None
    with _server_lock:
        if _server is not None and _server.refused:
            return None
        if _server is None or _server.owner != os.getpid() or not _server.alive:
            try:
                _server = ForkServer()
            except OSError:
                return None
        return _server


def fork_worker(folder: str, environ: dict, log: int, prog_w: int, err_w: int):
    """``(server, pid)`` of a worker forked for ``folder``, or None (start a fresh interpreter).  A
    server found dead (killed since its last task) is replaced once."""
    for _ in range(2):
        srv = server()
        if srv is None:
            return None
        pid = srv.start(folder, environ, log, prog_w, err_w)
        if pid is not None:
            return srv, pid
        if srv.refused:
            return None
    return None


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))

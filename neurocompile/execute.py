"""Executors: run shards of a validation (Lava, float, emulator) in killable worker processes on this
machine or as tasks of a Ray cluster, and keep finished shards in a resumable store.

A task is a module-level function, its arguments and a key; it returns a dict of numpy arrays (and
takes a ``progress(done, total)`` keyword).  The parent takes a result as soon as the child has
written it (the child's own exit, and that of the processes it forked, is not waited for).  Both executors return the results in task order, so
what the caller computes from them does not depend on the number of workers or on the order in
which shards finish.

Local workers (``neurocompile.worker``) are forks of a fork server (``neurocompile.forkserver``: one
clean thread, torch and Lava imported once) or fresh interpreters started by posix_spawn, never forks
of this process and its threads' locks, each in its own process group (never a multiprocessing pool:
importing Lava fixes multiprocessing's start method to ``fork``, which breaks loky and
``ProcessPoolExecutor``; and a Lava process model that raises leaves ``run()`` waiting forever):

* a child writes a one-line error to a pipe before it dies (Lava's process models do the same
  through ``ERROR_FD_ENV``); the parent then kills the child's group;
* a timeout, a death, or an exception in the parent (Ctrl-C, SIGTERM) kills the group the same way;
  a failed shard is retried ``retries`` times, then ``ShardError`` names it;
* a child dies with its parent (PR_SET_PDEATHSIG), and so does every process multiprocessing forks
  inside it (Lava's runtime), so a parent killed with SIGKILL leaves no simulation running;
* every shared-memory segment a child's run creates is logged in the child's scratch folder and
  unlinked when the shard ends, however it ends; scratch folders of a parent that was SIGKILLed
  are found by the next run with the same scratch place (``--work-dir``) and cleaned then.

Ray (``pip install neurocompile[ray]``) runs each task in a Ray worker through the same killable
child (timeouts and clean-up as above); a worker or node that dies is retried by Ray.
"""
from __future__ import annotations

import ctypes
import io
import os
import pickle
import selectors
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
import typing
from typing import Callable

import numpy as np

from .errors import NeurocompileError

ERROR_FD_ENV = "NEUROCOMPILE_LAVA_ERROR_FD"
FORK_SERVER_ENV = "NEUROCOMPILE_FORK_SERVER"        # "0": a fresh interpreter per worker (benchmarks compare)
SHM_LOG = "shared-memory.log"
SHM_DIR = "/dev/shm"
SCRATCH_PREFIX = "shard-"
RAY_EXTRA = "ray: pip install 'neurocompile[ray]'"


class ShardError(NeurocompileError):
    """A shard failed on every try: ``reason`` of the last one is "error" (its worker raised:
    ``detail`` is the message), "timeout" (``detail``: where it was stuck, or '') or "died"
    (``detail``: the exit status)."""

    def __init__(self, message: str, reason: str = "error", detail: str = ""):
        super().__init__(message)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Task:
    key: str                       # what the shard is (store key and messages): e.g. "lava 0-15"
    fn: Callable                   # module-level: fn(*args, progress=callback) -> {name: ndarray}
    args: tuple = ()
    size: int = 1                  # samples (progress)


# ------------------------------------------------------------------------------ the killable child
def _set_parent_death_signal() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)          # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _Child:
    """One task in a fresh worker interpreter (``neurocompile.worker``), in its own process group, with a
    private scratch folder."""

    def __init__(self, task: Task, scratch_root: str | None):
        self.task = task
        clear_stale_scratch(tempfile.gettempdir())
        check_run_environment(tempfile.gettempdir())
        # the scratch folder is short-named in the system temp folder (multiprocessing puts sockets
        # there, and their paths must stay under ~100 bytes); a pointer to it in ``scratch_root``
        # lets a later run clean it up if this parent is SIGKILLed
        self.tmp = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")
        self.pointer = None
        if scratch_root:
            self.pointer = os.path.join(scratch_root, os.path.basename(self.tmp))
            with open(self.pointer, "w") as fh:
                fh.write(self.tmp)
        self.output = os.path.join(self.tmp, "out.npz")
        self.done = 0
        prog_r, prog_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            self.pid = self._spawn(prog_w, err_w)
        finally:
            os.close(prog_w)
            os.close(err_w)
        self.prog_r, self.err_r, self.pending = prog_r, err_r, b""
        self.error = ""
        self.delivered = False                                   # the result file is complete

    def _spawn(self, prog_w: int, err_w: int) -> int:
        """Start a worker on the task (see ``neurocompile.worker``), never a fork of this process, whose
        threads' locks it would inherit: a fork of this process's fork server (``neurocompile.forkserver``,
        one thread, the heavy modules imported) or, where there is none, a fresh interpreter started by
        posix_spawn (no Python code runs between fork and exec).  Either way it leads its own session,
        hence its own process group, and its stdout and stderr go to the scratch folder's log."""
        from . import forkserver, worker
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        if getattr(self.task.fn, "__module__", None) != "__main__":
            main_file = None
        with open(os.path.join(self.tmp, worker.TASK_FILE), "wb") as fh:
            pickle.dump((os.getpid(), list(sys.path), main_file and os.path.abspath(main_file), prog_w, err_w), fh)
            pickle.dump((self.task.fn, tuple(self.task.args)), fh, protocol=pickle.HIGHEST_PROTOCOL)
        log = os.open(os.path.join(self.tmp, OUTPUT_LOG), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        # one BLAS thread: numpy's pool would start at import and be running when Lava forks
        env = dict(os.environ, TMPDIR=self.tmp, PYTHONUNBUFFERED="1", OPENBLAS_NUM_THREADS="1")
        os.set_inheritable(prog_w, True)
        os.set_inheritable(err_w, True)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            forked = os.environ.get(FORK_SERVER_ENV, "1") != "0" and forkserver.fork_worker(self.tmp, env, log,
                                                                                          prog_w, err_w)
            self.server, pid = forked or (None, None)
            if forked:
                return pid
            return os.posix_spawn(sys.executable, [sys.executable, "-m", "neurocompile.worker", self.tmp], env,
                                  file_actions=[(os.POSIX_SPAWN_DUP2, log, 1), (os.POSIX_SPAWN_DUP2, log, 2),
                                                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)],
                                  setsid=True)
        finally:
            os.close(log)

    def read_progress(self, on_step) -> bool:
        """Read the progress pipe, calling ``on_step()`` after each step it reports (several may have
        arrived at once); False at its end."""
        chunk = os.read(self.prog_r, 4096)
        self.pending += chunk
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            parts = line.decode(errors="replace").split()
            if parts and parts[0] == "progress":
                self.done = int(parts[1])
                on_step()
            elif parts == ["done"]:
                self.delivered = True
        return bool(chunk)

    def read_error(self) -> bool:
        """Read the error pipe; True when it had a message (the child failed)."""
        msg = _read_line(self.err_r, block=False)
        if msg:
            self.error = self.error or msg
        return bool(msg)

    def finished(self):
        """None while running, else the exit status (0: the result is there, also when the child
        delivered it and is still cleaning up: ``close`` kills it)."""
        if self.delivered:
            return 0
        if self.server:                                  # the fork server's child: it reaps it
            return self.server.exitcode(self.pid)
        done, status = os.waitpid(self.pid, os.WNOHANG)
        return os.waitstatus_to_exitcode(status) if done else None

    def where(self, wait_s: float = 3.0) -> str:
        """Where a running child is stuck (from its stack dump), or ''."""
        log = os.path.join(self.tmp, OUTPUT_LOG)
        try:
            start = os.path.getsize(log)
            os.kill(self.pid, STACK_SIGNAL)
        except OSError:
            return ""
        deadline, dump = time.monotonic() + wait_s, ""
        while time.monotonic() < deadline:
            time.sleep(0.2)
            with open(log, "rb") as fh:
                fh.seek(start)
                new = fh.read().decode(errors="replace")
            if new == dump and "Current thread" in new:
                break                                            # the dump is written
            dump = new
        return _where(dump)

    def result(self) -> dict:
        with np.load(self.output, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def close(self) -> None:
        """Kill the child's group (its Lava processes included), reap it, unlink its shared memory,
        remove its scratch folder.  Safe to call twice."""
        if self.pid is None:
            return
        _kill_group(self.pid)
        self.pid = None
        for fd in (self.prog_r, self.err_r):
            try:
                os.close(fd)
            except OSError:
                pass
        release_shared_memory(os.path.join(self.tmp, SHM_LOG))
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.pointer:
            try:
                os.unlink(self.pointer)
            except FileNotFoundError:
                pass


OUTPUT_LOG = "output.log"
STACK_SIGNAL = signal.SIGUSR2


def _our_folders() -> tuple:
    """The folders of neurocompile's three package roots (neurocompile, .models, .targets: in a
    checkout they are separate top-level folders)."""
    import importlib.util
    return tuple(os.path.join(folder, "") for name in ("neurocompile", "neurocompile.models", "neurocompile.targets")
                 for folder in importlib.util.find_spec(name).submodule_search_locations)


def _where(dump: str) -> str:
    """faulthandler's dump of every thread, summed up: for the main thread, then each thread running
    code of ours, its innermost frame and the innermost frame of ours."""
    import re

    def short(frame):
        path, line, fn = frame
        return f"{fn} ({'/'.join(path.split(os.sep)[-2:])}:{line})"
    places, folders = [], _our_folders()
    for block in re.split(r"\n\s*\n", dump):
        frames = re.findall(r'File "([^"]+)", line (\d+) in (\S+)', block)
        ours = next((fr for fr in frames if fr[0].startswith(folders)), None)
        main = block.lstrip().startswith("Current thread")
        if not frames or not (main or ours):
            continue
        text = short(frames[0]) + (f" from {short(ours)}" if ours and ours != frames[0] else "")
        places.insert(0, "main thread: " + text) if main else places.append("thread: " + text)
    return "; ".join(places[:3])
MIN_TMP_FREE = 64 << 20         # a shard's outputs (a few MB) and multiprocessing's sockets
MAX_SOCKET_PATH = 107 - 60      # AF_UNIX paths hold 107 bytes; the scratch folder and multiprocessing add ~60
MIN_OPEN_FILES = 1024           # a 2-layer network's Lava processes and channels need ~300-500 descriptors


def check_run_environment(tmpdir: str) -> None:
    """Refuse, before forking, a run that would fail inside Lava's processes with tracebacks: the
    temp folder too full or its path too long for sockets, too few open files (``ulimit -n``; the
    soft limit is raised towards the hard one when that is enough)."""
    import resource

    if len(os.fsencode(tmpdir)) > MAX_SOCKET_PATH:
        raise NeurocompileError(f"TMPDIR {tmpdir}: the path is too long for Lava's sockets (at most "
                                f"{MAX_SOCKET_PATH} bytes); set TMPDIR to a shorter folder")
    try:
        free = shutil.disk_usage(tmpdir).free
    except OSError as exc:
        raise NeurocompileError(f"TMPDIR {tmpdir}: cannot use it ({exc.strerror or exc})") from None
    if free < MIN_TMP_FREE:
        raise NeurocompileError(f"TMPDIR {tmpdir}: only {free >> 20} MiB free; a run needs {MIN_TMP_FREE >> 20} MiB")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < MIN_OPEN_FILES:
        if hard == resource.RLIM_INFINITY or hard >= MIN_OPEN_FILES:
            resource.setrlimit(resource.RLIMIT_NOFILE, (MIN_OPEN_FILES, hard))
        else:
            raise NeurocompileError(f"a Lava run needs {MIN_OPEN_FILES} open files, the limit is {soft} "
                                    "(raise ulimit -n)")


def clear_stale_scratch(folder: str) -> list:
    """Scratch folders in ``folder`` whose parent process is gone (SIGKILLed): their shared memory
    unlinked (by the names they logged), then the folders removed."""
    from .fileio import clear_stale, stale_entries
    for path in stale_entries(folder, SCRATCH_PREFIX):
        _release_logged(path)
    return clear_stale(folder, SCRATCH_PREFIX)


def _release_logged(scratch: str) -> None:
    """Unlink the shared memory a dead run's scratch folder logged; a log that is not a regular file is
    not read (the folder is removed anyway)."""
    from .fileio import InputFileError
    try:
        release_shared_memory(os.path.join(scratch, SHM_LOG))
    except (OSError, InputFileError):
        pass


def _last_line(path: str) -> str:
    from .fileio import InputFileError, open_input
    try:
        with open_input(path, "log", follow_links=False) as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - 4096))
            lines = [ln for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
        return lines[-1].strip()[:300] if lines else ""
    except (OSError, InputFileError):
        return ""


def _read_line(fd: int, block: bool = True) -> str:
    """The first line available on fd ('' at EOF or when nothing is there and not blocking)."""
    if not block:
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        ready = sel.select(timeout=0)
        sel.close()
        if not ready:
            return ""
    try:
        data = os.read(fd, 65536)
    except OSError:
        return ""
    return data.decode(errors="replace").strip().splitlines()[0] if data.strip() else ""


def _kill_group(pid: int) -> None:
    """SIGKILL a child's process group and reap the child."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def log_shared_memory(log: str) -> None:
    """From now on (in this process and the processes it forks), append the name of every shared
    memory segment created to ``log``."""
    from multiprocessing import shared_memory

    original = shared_memory.SharedMemory.__init__

    def logged(self, name=None, create=False, size=0):
        original(self, name, create, size)
        if create:
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (self.name.lstrip("/") + "\n").encode())
            finally:
                os.close(fd)
    shared_memory.SharedMemory.__init__ = logged


def release_shared_memory(log: str) -> None:
    """Unlink every segment named in ``log`` that still exists (a finished run unlinked its own).
    A log that is not a regular file is refused (``fileio.InputFileError``), never opened."""
    from .fileio import open_input
    if not os.path.lexists(log):
        return
    with open_input(log, "shared-memory log", follow_links=False) as fh:
        names = {line.strip() for line in fh.read().decode(errors="replace").splitlines() if line.strip()}
    for name in names:
        if "/" not in name:
            try:
                os.unlink(os.path.join(SHM_DIR, name))
            except FileNotFoundError:
                pass


def reap_stale_scratch(root: str) -> int:
    """Clean the scratch folders that the pointers under ``root`` name, left by parents that no
    longer run (SIGKILL): their shared memory is unlinked, the folders and pointers removed.
    Returns how many were cleaned.  Every pointer is read only if it is a regular file, and ``root``
    must be a folder, not a link to one: anything else ends the run with one line."""
    import stat
    from .fileio import _kind, open_input
    cleaned = 0
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        raise NeurocompileError(f"{root}: is {_kind(st.st_mode)}, not a folder; refusing to use it for scratch")
    names = os.listdir(root)
    for name in names:
        if not name.startswith(SCRATCH_PREFIX):
            continue
        try:
            owner = int(name[len(SCRATCH_PREFIX):].split("-")[0])
            os.kill(owner, 0)
            continue                                             # its parent still runs
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        pointer = os.path.join(root, name)
        with open_input(pointer, "scratch pointer", follow_links=False) as fh:
            folder = fh.read(4096).decode(errors="replace").strip()
        if os.path.basename(folder) == name and os.path.dirname(folder) == tempfile.gettempdir():
            _release_logged(folder)
            shutil.rmtree(folder, ignore_errors=True)
        os.unlink(pointer)
        cleaned += 1
    return cleaned


# ----------------------------------------------------------------------------------- executors
@dataclass
class LocalExecutor:
    """``workers`` worker processes at a time on this machine."""
    workers: int = 1
    timeout_s: float = 1800
    retries: int = 2
    scratch: str | None = None          # where children's scratch folders go (default: the temp folder)
    name: str = "local"

    def run(self, tasks: list, progress=None, on_result=None) -> list:
        """Results in task order; ``on_result(i, result)`` as each shard finishes (any order)."""
        if self.scratch:
            try:
                os.makedirs(self.scratch, exist_ok=True)
            except OSError as exc:
                if not os.path.lexists(self.scratch):
                    raise NeurocompileError(f"{self.scratch}: cannot create the scratch folder "
                                            f"({exc.strerror or exc})") from None
            reap_stale_scratch(self.scratch)        # not a folder (a file, a FIFO, a link): one line naming it
        results, tries = [None] * len(tasks), [0] * len(tasks)
        waiting = list(range(len(tasks)))
        running = {}                                             # index -> (child, deadline)
        finished = reported = 0
        total = sum(t.size for t in tasks)
        sel = selectors.DefaultSelector()

        def report():                                            # every step, none coalesced
            nonlocal reported
            now = finished + sum(c.done for c, _ in running.values())
            if progress and now != reported:
                progress(now, total)
                reported = now
        try:
            while waiting or running:
                while waiting and len(running) < self.workers:
                    i = waiting.pop(0)
                    child = _Child(tasks[i], self.scratch)
                    running[i] = (child, time.monotonic() + self.timeout_s)
                    sel.register(child.prog_r, selectors.EVENT_READ, i)
                for key, _ in sel.select(timeout=0.2):
                    child = running[key.data][0]
                    if not child.read_progress(report):
                        sel.unregister(key.fd)
                for i, (child, deadline) in list(running.items()):
                    failed = child.read_error()
                    status = None if failed else child.finished()
                    late = status is None and not failed and time.monotonic() > deadline
                    if status is None and not failed and not late:
                        continue
                    if status == 0:
                        results[i] = child.result()
                        finished += tasks[i].size
                        if on_result:
                            on_result(i, results[i])
                    else:
                        reason = "error" if child.error else "timeout" if late else "died"
                        where = child.where() if reason == "timeout" else ""
                        why = (child.error or (_late(self.timeout_s, where) if late else
                                               f"its worker exited with status {status} and no message"))
                        tries[i] += 1
                        if tries[i] > self.retries:
                            raise ShardError(f"shard {tasks[i].key} failed {tries[i]} times; last: {why}", reason,
                                             child.error or where or str(status))
                        waiting.insert(0, i)
                    try:
                        sel.unregister(child.prog_r)
                    except (KeyError, ValueError):
                        pass
                    child.close()
                    del running[i]
                report()
        finally:
            for child, _ in running.values():
                child.close()
            sel.close()
        return results


def _late(timeout_s: float, where: str) -> str:
    return f"ran past its {timeout_s:g} s timeout" + (f" (stuck in {where})" if where else "")


def run_in_child(fn, args=(), timeout_s: float = 1800, progress=None, size: int = 1, scratch: str | None = None) -> dict:
    """``fn(*args, progress=...)`` in one killable child, no retry; ``size``: the samples it reports."""
    return LocalExecutor(1, timeout_s, retries=0, scratch=scratch).run([Task("run", fn, tuple(args), size)], progress)[0]


def _ray_entry(fn, args, timeout_s):
    """A Ray task: the shard in a killable child of the Ray worker (timeouts, Lava clean-up)."""
    try:
        return LocalExecutor(1, timeout_s, retries=0).run([Task("ray", fn, tuple(args), 1)])[0]
    except ShardError as exc:          # the cause alone: the Ray side names the shard and counts the tries
        raise NeurocompileError(str(exc).split("; last: ", 1)[-1]) from None


def import_ray():
    try:
        import ray
    except ImportError:
        raise NeurocompileError(f"Ray is not installed; it is an optional extra ({RAY_EXTRA})") from None
    return ray


def _innermost(exc: BaseException) -> str:
    """The last line of the innermost message, without class names ("ShardError: ...", "RayTaskError(...)")."""
    while getattr(exc, "cause", None) is not None and exc.cause is not exc:       # RayTaskError wraps the cause
        exc = exc.cause
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    line = lines[-1] if lines else type(exc).__name__
    while True:                                           # "pkg.mod.SomeError: msg" -> "msg"
        head, sep, rest = line.partition(": ")
        if not sep or " " in head or not head[:1].isalpha():
            return line
        line = rest


RAY_LOG = "ray.log"


def _through_ray(call, *args, **kwargs):
    """``call`` of Ray's: a signal handler that raised inside its C++ code (SIGTERM's Terminated, Ctrl-C)
    surfaces as that exception, not as the SystemError Cython wraps it in."""
    try:
        return call(*args, **kwargs)
    except SystemError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, BaseException) and not isinstance(cause, Exception):
            raise cause from None
        raise


@dataclass
class RayExecutor:
    """Tasks on a Ray cluster: a local one of ``workers`` CPUs (started offline, no dashboard), or
    the existing cluster at ``address`` (or at ``RAY_ADDRESS``, as Ray's users expect).  Ray retries a
    task whose worker or node died.

    Joining waits at most ``connect_timeout_s``.  Ray's own output (C++ warnings, state dumps of a lost
    raylet) goes to a log file (``log_dir``/ray.log, else a temp file kept when an error names it):
    file descriptor 2 points there while Ray runs, and ``sys.stderr`` keeps the terminal.  The Python
    signal handlers in force before Ray started are put back once it has (Ray's own abort with a C++
    stack dump on SIGTERM)."""
    workers: int | None = None
    address: str | None = None
    timeout_s: float = 1800
    retries: int = 2
    name: str = "ray"
    connect_timeout_s: float = 30
    log_dir: str | None = None
    _started: bool = field(default=False, repr=False)
    _log: str | None = field(default=None, repr=False)
    _keep_log: bool = field(default=False, repr=False)
    _terminal: int | None = field(default=None, repr=False)
    _stderr: object = field(default=None, repr=False)
    _hung: bool = field(default=False, repr=False)
    left_hanging: typing.ClassVar[bool] = False    # a join that timed out: the process must end by os._exit

    def _fail(self, message: str, cls=NeurocompileError, *details) -> NeurocompileError:
        self._keep_log = True
        return cls(f"{message} (Ray's output: {self._log})" if self._log else message, *details)

    def _capture(self) -> None:
        if self.log_dir:
            self._log = os.path.join(self.log_dir, RAY_LOG)
        else:
            fd, self._log = tempfile.mkstemp(prefix="neurocompile-ray-", suffix=".log")
            os.close(fd)
        log = os.open(self._log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        self._terminal = os.dup(2)
        os.dup2(log, 2)
        os.close(log)

    def _release(self) -> None:
        if self._terminal is None:
            return
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        if self._hung:                         # fd 2 stays on the log until exit; our lines go to the terminal
            try:
                sys.stderr = open(self._terminal, "w", buffering=1, errors="backslashreplace")
            except (OSError, ValueError):
                pass
            self._terminal = None
            return
        if self._stderr is not None:
            sys.stderr = self._stderr
            self._stderr = None
        os.dup2(self._terminal, 2)
        os.close(self._terminal)
        self._terminal = None
        if self._log and not self._keep_log and not self.log_dir:
            try:
                os.unlink(self._log)
            except OSError:
                pass

    def _start(self, ray) -> None:
        import logging
        import threading
        address = self.address
        env = os.environ.get("RAY_ADDRESS")
        if not address and env and env != "local":
            address = env
            print(f"neurocompile: joining the Ray cluster at {env} named by RAY_ADDRESS (unset it for a local "
                  "cluster)", file=sys.stderr)
        kwargs = dict(logging_level=logging.WARNING, log_to_driver=False)
        if address:
            kwargs["address"] = address
        else:                                  # "local": a new cluster even where RAY_ADDRESS names one
            kwargs.update(address="local", num_cpus=self.workers or os.cpu_count(), include_dashboard=False)
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"):
                signum = getattr(signal, name, None)
                if signum is not None:
                    handlers[signum] = signal.getsignal(signum)
        self._capture()
        done, box = threading.Event(), {}

        def init():
            try:
                ray.init(**kwargs)
            except BaseException as exc:       # noqa: BLE001 - handed to the waiting thread
                box["error"] = exc
            finally:
                done.set()
        if address:       # a thread: ray.init has no bound of its own (a closed port retries for minutes)
            threading.Thread(target=init, name="ray-init", daemon=True).start()
            finished = done.wait(self.connect_timeout_s)
        else:             # in this thread: the processes a local start forks die with the thread that forked them
            init()
            finished = True
        for signum, handler in handlers.items():       # Ray's C++ handlers replaced by those in force before
            if handler is not None:
                signal.signal(signum, handler)
        if not finished:
            self._hung = RayExecutor.left_hanging = True    # its thread goes on trying; its output stays in the log
            raise self._fail(f"{address}: no Ray cluster answered within {self.connect_timeout_s:g} s "
                             "(--ray-connect-timeout)")
        if "error" in box:
            raise self._fail(f"{address}: could not join its Ray cluster: {_innermost(box['error'])}" if address
                             else f"could not start a local Ray cluster: {_innermost(box['error'])}")
        self._started = True
        try:
            if sys.stderr.fileno() == 2:       # our own lines (errors, progress) still reach the terminal
                self._stderr = sys.stderr
                sys.stderr = open(self._terminal, "w", buffering=1, encoding=sys.stderr.encoding,
                                  errors="backslashreplace", closefd=False)
        except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
            pass

    def run(self, tasks: list, progress=None, on_result=None) -> list:
        ray = import_ray()
        if not ray.is_initialized():
            self._start(ray)
        remote = ray.remote(num_cpus=1, max_retries=self.retries, retry_exceptions=True)(_ray_entry)
        refs = {remote.remote(t.fn, t.args, self.timeout_s): i for i, t in enumerate(tasks)}
        results = [None] * len(tasks)
        finished = 0
        total = sum(t.size for t in tasks)
        pending = list(refs)
        try:
            while pending:
                ready, pending = _through_ray(ray.wait, pending, num_returns=1, timeout=1.0)
                if not ready:
                    continue
                i = refs[ready[0]]
                try:
                    results[i] = _through_ray(ray.get, ready[0])
                except Exception as exc:                         # noqa: BLE001 - Ray wraps every failure
                    tries = self.retries + 1
                    cause = _innermost(exc)
                    raise self._fail(f"shard {tasks[i].key} failed {tries} time{'s' if tries > 1 else ''} on Ray: "
                                     f"{cause}", ShardError, "error", cause) from None
                finished += tasks[i].size
                if on_result:
                    on_result(i, results[i])
                if progress:
                    progress(finished, total)
        except Exception:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        # (a signal skips the cancels: racing a task that completes, Ray aborts the driver in a failed check;
        # the shutdown that follows ends the tasks of a local cluster, the cluster those of a driver gone)
        return results

    def close(self) -> None:
        try:
            if self._started:
                import_ray().shutdown()
                self._started = False
        finally:
            self._release()


# ------------------------------------------------------------------------------------ the store
from .shard_store import ShardStore, digest_arrays, run_shards  # noqa: E402,F401 - its callers import it from here

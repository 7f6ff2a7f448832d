"""run_lava: simulate a Program on Lava in a forked child that can always be stopped.

Lava forks one OS process per Lava process, and a process model that raises leaves ``run()``
waiting forever.  So the whole run happens in a child forked into its own process group:

* our process models write a one-line error to a pipe before they re-raise (``processes/_base``);
  the parent reads it, kills the child's whole process group and raises ``LavaRunError`` with it;
* a timeout kills the group the same way; so does any exception (KeyboardInterrupt included)
  in the parent while it waits;
* the child always ``stop()``s the Lava runtime, sends progress lines, and writes its result
  into a private temporary folder (also the child's TMPDIR, so multiprocessing's ``pymp-*``
  folders of a killed run are removed with it);
* every shared-memory segment the run creates (Lava's channels, ``/dev/shm/psm_*``) is logged by
  name in that folder, and the parent unlinks them all when the run ends, however it ends: a
  killed run leaves no shared memory behind.
"""
from __future__ import annotations

import os
import selectors
import signal
import sys
import tempfile
import time

import numpy as np

from ...errors import LavaRunError
from ...program import Program
from . import require_lava

require_lava()              # one line naming the extra, not an import traceback

from .processes._base import ERROR_FD_ENV  # noqa: E402

BACKENDS = ("sim", "hw")
MODES = ("fixed_pt", "floating_pt")


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise LavaRunError(f"unknown Lava back end {backend!r} (choose from {', '.join(BACKENDS)})")
    if backend == "hw":
        try:
            from lava.utils import loihi
            installed = loihi.is_installed()
        except Exception:                                  # noqa: BLE001 - any import problem means absent
            installed = False
        if not installed:
            raise LavaRunError("backend 'hw' runs on Loihi2HwCfg, which needs Intel's lava-loihi extension "
                               "(INRC members only); it is not installed here: use backend 'sim'")


def run_lava(program: Program, levels, mode: str = "fixed_pt", backend: str = "sim", record: bool = True,
             timeout_s: float = 600, progress=None, seed: int = 0) -> dict:
    """Run (n, L, d_in) raw input levels on Lava; samples run back to back in one built network.

    Returns ``logits`` (n, d_out) (int64 in fixed_pt, float64 in floating_pt) and, with ``record``,
    every node's output by node name, (n, channels, L) in logical time (delays removed; spikes as
    bool), plus ``seconds`` (wall time of the Lava run itself, build and start-up excluded).
    ``progress(done, total)`` is called after every sample.  Raises ``LavaRunError`` on a timeout, an
    error in the run (with its message) or a missing back end; never hangs.  ``seed`` keys the PRNG of
    stochastic samplers (the emulator with the same seed gives the same spikes).
    """
    check_backend(backend)
    if mode not in MODES:
        raise LavaRunError(f"unknown Lava mode {mode!r} (choose from {', '.join(MODES)})")
    from ...program import raw_inputs
    try:
        raw_inputs(program, levels)                        # shape and range, before forking
    except ValueError as exc:
        raise LavaRunError(f"Lava run: {exc}") from None
    levels = np.asarray(levels)
    with tempfile.TemporaryDirectory(prefix="neurocompile-lava-") as tmp:
        output = os.path.join(tmp, "out.npz")
        prog_r, prog_w = os.pipe()
        err_r, err_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:                                       # child: never returns
            os.close(prog_r)
            os.close(err_r)
            _child(program, levels, mode, backend, record, seed, output, tmp, prog_w, err_w)
        os.close(prog_w)
        os.close(err_w)
        try:
            os.setpgid(pid, pid)                           # also done by the child: no race either way
        except OSError:
            pass
        try:
            status = _follow(pid, prog_r, err_r, timeout_s, progress)
        finally:
            _kill_group(pid)
            os.close(prog_r)
            os.close(err_r)
            release_shared_memory(os.path.join(tmp, SHM_LOG))
        if status != 0:
            raise LavaRunError(f"Lava run failed: the worker exited with status {status} and no message")
        with np.load(output) as data:
            flat = {k: data[k] for k in data.files}
    flat["seconds"] = float(flat["seconds"])
    return flat


def _child(program, levels, mode, backend, record, seed, output, tmp, prog_w, err_w) -> None:
    code = 1
    try:
        os.setpgid(0, 0)
        os.environ[ERROR_FD_ENV] = str(err_w)
        os.environ["TMPDIR"] = tmp
        tempfile.tempdir = tmp
        log_shared_memory(os.path.join(tmp, SHM_LOG))
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)       # the CLI's handler is for the parent only
        # Lava calls multiprocessing.set_start_method('fork') when it is imported, which raises if
        # the parent already fixed a start method (tqdm's lock, torch, ...): forget it in the child.
        import multiprocessing.context
        multiprocessing.context._default_context._actual_context = None
        from .lowering import simulate

        def report(done, total):
            os.write(prog_w, f"progress {done} {total}\n".encode())

        out = simulate(program, levels, mode=mode, backend=backend, record=record, progress=report, seed=seed)
        np.savez(output, **out)
        os.write(prog_w, b"done\n")
        code = 0
    except BaseException as exc:                           # noqa: BLE001 - reported, then exit
        try:
            os.write(err_w, f"{type(exc).__name__}: {exc}".replace("\n", " ").encode(errors="replace") + b"\n")
        except OSError:
            pass
    finally:
        os._exit(code)


SHM_LOG = "shared-memory.log"
SHM_DIR = "/dev/shm"


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
    """Unlink every segment named in ``log`` that still exists (a finished run unlinked its own)."""
    try:
        with open(log) as fh:
            names = {line.strip() for line in fh if line.strip()}
    except FileNotFoundError:
        return
    for name in names:
        if "/" not in name:
            try:
                os.unlink(os.path.join(SHM_DIR, name))
            except FileNotFoundError:
                pass


def _follow(pid: int, prog_r: int, err_r: int, timeout_s: float, progress) -> int:
    """Wait for the child; return its exit status, or raise LavaRunError (the caller kills the group)."""
    deadline = time.monotonic() + timeout_s
    sel = selectors.DefaultSelector()
    sel.register(prog_r, selectors.EVENT_READ, "progress")
    sel.register(err_r, selectors.EVENT_READ, "error")
    pending = b""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LavaRunError(f"Lava run exceeded its {timeout_s:g} s timeout and was stopped")
            for key, _ in sel.select(timeout=min(left, 0.5)):
                if key.data == "error":
                    msg = _read_line(err_r)
                    if msg:
                        raise LavaRunError(f"Lava run failed: {msg}")
                    sel.unregister(err_r)                  # EOF: the child and its processes are gone
                    continue
                chunk = os.read(prog_r, 4096)
                if not chunk:
                    sel.unregister(prog_r)
                    continue
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    parts = line.decode().split()
                    if parts and parts[0] == "progress" and progress is not None:
                        progress(int(parts[1]), int(parts[2]))
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                msg = _read_line(err_r, block=False)
                if msg:
                    raise LavaRunError(f"Lava run failed: {msg}")
                return os.waitstatus_to_exitcode(status)
    finally:
        sel.close()


def _read_line(fd: int, block: bool = True) -> str:
    """The first line available on fd ('' at EOF or when nothing is there and not blocking)."""
    if not block:
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        ready = sel.select(timeout=0)
        sel.close()
        if not ready:
            return ""
    data = os.read(fd, 65536)
    return data.decode(errors="replace").strip().splitlines()[0] if data.strip() else ""


def _kill_group(pid: int) -> None:
    """SIGKILL the child's process group (Lava's processes included) and reap the child."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass

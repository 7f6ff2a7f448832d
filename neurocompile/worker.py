"""The entry of a local worker: a fork of the fork server (``neurocompile.forkserver``) or a fresh
interpreter (``python -m neurocompile.worker FOLDER``) that runs one task of ``execute.LocalExecutor``
and writes its result to ``FOLDER/out.npz``.

Never a fork of the requester: a child forked from a process that has started threads inherits
every lock another thread held at that moment and can hang on it.  The hang seen in the test suite
(``test_a_process_forked_after_an_emulator_run_can_emulate``, reproduced 1 in 40-60 forks with a
second thread doing torch matmuls in the parent) is MKL's: gdb on the hung child shows its only
thread spinning in ``mm_account_ptr_by_tid`` <- ``mkl_serv_malloc`` <- ``DftiCreateDescriptor``
(torch.fft.rfft in ``emulator.kernel_spectrum``), MKL's allocator lock taken by a parent thread that
does not exist in the child; ``torch.set_num_threads(1)`` does not help.  A worker runs one thread
when its task starts (the fork server checks it of itself), so the processes Lava forks inside it
start clean too.

``FOLDER/task.pickle`` holds, in order: the parent's pid, ``sys.path``, the file of the parent's
``__main__`` (or None), the progress and error pipe descriptors, then the task (function, args).
The worker writes ``progress DONE TOTAL`` and ``done`` lines to the progress pipe and one line of
error to the error pipe.  stdout and stderr are already the folder's log (set by the spawn).
"""
from __future__ import annotations

import os
import pickle
import sys

TASK_FILE = "task.pickle"
OUTPUT_FILE = "out.npz"


def _load_main(path: str) -> None:
    """Make the parent's script importable as ``__main__`` (functions pickled from it), as
    multiprocessing's spawn does: its ``if __name__ == "__main__"`` block does not run."""
    import runpy
    import types
    module = types.ModuleType("__mp_main__")
    module.__dict__.update(runpy.run_path(path, run_name="__mp_main__"))
    sys.modules["__main__"] = sys.modules["__mp_main__"] = module


def main(folder: str, parent: int | None = None, pipes: tuple | None = None) -> None:
    """Run the task of ``folder``.  A worker forked by ``neurocompile.forkserver`` has the server as
    its ``parent`` and its ``pipes`` (progress, error) under other numbers than the requester's."""
    from .execute import _set_parent_death_signal
    code, err_w = 1, None
    try:
        _set_parent_death_signal()
        with open(os.path.join(folder, TASK_FILE), "rb") as fh:
            requester, path, main_file, prog_w, err_w = pickle.load(fh)
            if pipes:
                prog_w, err_w = pipes
            if os.getppid() != (requester if parent is None else parent):    # it died before the death signal was set
                os._exit(1)
            sys.path[:] = path
            if main_file:
                _load_main(main_file)
            fn, args = pickle.load(fh)
        _run(folder, fn, args, prog_w, err_w)
        code = 0
    except BaseException as exc:                        # noqa: BLE001 - reported, then exit
        from .execute import OUTPUT_LOG, _last_line
        try:
            msg = f"{type(exc).__name__}: {exc}"
            last = _last_line(os.path.join(folder, OUTPUT_LOG))
            if last and len(str(exc)) < 20:             # e.g. "EOFError: " from a process that died
                msg += f" (a Lava process reported: {last})"
            if err_w is not None:
                os.write(err_w, msg.replace("\n", " ").encode(errors="replace") + b"\n")
        except OSError:
            pass
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _run(folder, fn, args, prog_w, err_w) -> None:
    import faulthandler
    import multiprocessing.util
    import signal
    import tempfile

    import numpy as np

    from .execute import ERROR_FD_ENV, SHM_LOG, STACK_SIGNAL, _set_parent_death_signal, log_shared_memory
    faulthandler.register(STACK_SIGNAL, file=2, all_threads=True)    # the parent's question on a timeout
    os.environ[ERROR_FD_ENV] = str(err_w)
    tempfile.tempdir = folder
    log_shared_memory(os.path.join(folder, SHM_LOG))
    # the processes Lava forks here (its start method is 'fork', set when it is imported) die with
    # this worker
    multiprocessing.util.register_after_fork(_set_parent_death_signal, lambda _: _set_parent_death_signal())
    if "torch" in sys.modules:       # Lava forks after torch ran here: no OpenMP pool to inherit
        sys.modules["torch"].set_num_threads(1)

    def report(done, total):
        os.write(prog_w, f"progress {done} {total}\n".encode())

    out = fn(*args, progress=report)
    np.savez(os.path.join(folder, OUTPUT_FILE), **out)
    os.write(prog_w, b"done\n")


if __name__ == "__main__":
    main(sys.argv[1])

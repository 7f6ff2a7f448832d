"""run_lava: simulate a Program on Lava in a child process that can always be stopped.

Lava forks one OS process per Lava process; a model that raises can leave ``run()`` waiting
forever.  So the run happens in a worker started in its own session: a timeout or a failure kills
the whole process group, and the caller gets a one-line ``LavaRunError`` instead of a hang.
"""
from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from ...artifact import save_program
from ...errors import LavaRunError
from ...program import Program

BACKENDS = ("sim", "hw")


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise LavaRunError(f"unknown Lava back end {backend!r} (choose from {', '.join(BACKENDS)})")
    if backend == "hw":
        from lava.utils import loihi

        if not loihi.is_installed():
            raise LavaRunError("--backend hw runs on Loihi2HwCfg, which needs Intel's lava-loihi extension "
                               "(INRC members only); it is not installed here: use --backend sim")


def run_lava(program: Program, levels, mode: str = "fixed_pt", backend: str = "sim", record: bool = True,
             timeout_s: float = 600, progress=None) -> dict:
    """Run (n, L, d_in) raw input levels; return logits and, with ``record``, per-layer traces
    (n, channels, L) in logical time: ``stream_in``, ``ssm``, ``spikes``, ``stream`` (lists per layer)."""
    check_backend(backend)
    levels = np.asarray(levels)
    with tempfile.TemporaryDirectory(prefix="neurocompile-lava-") as tmp:
        artifact, inputs, output = (os.path.join(tmp, f) for f in ("net.loihi2", "in.npz", "out.npz"))
        save_program(program, artifact)
        np.savez(inputs, levels=levels.astype(np.int64))
        err_path = os.path.join(tmp, "stderr.txt")
        cmd = [sys.executable, "-m", "neurocompile.targets.loihi2.worker", artifact, inputs, output, mode, backend,
               "1" if record else "0"]
        with open(err_path, "w") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                    start_new_session=True, text=True)
            _follow(proc, timeout_s, progress)
        if proc.returncode != 0:
            raise LavaRunError(f"Lava run failed: {_last_error(err_path)}")
        with np.load(output) as data:
            result = {k: data[k] for k in data.files}
    return _group_layers(result, program.n_layers, record)


def _follow(proc, timeout_s, progress) -> None:
    deadline = time.monotonic() + timeout_s
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                _kill(proc)
                raise LavaRunError(f"Lava run exceeded its {timeout_s:g} s timeout and was stopped")
            if not sel.select(timeout=min(left, 1.0)):
                if proc.poll() is not None:
                    break
                continue
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("progress ") and progress:
                done, total = map(int, line.split()[1:3])
                progress(done, total)
        proc.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise LavaRunError(f"Lava run exceeded its {timeout_s:g} s timeout and was stopped") from None
    except BaseException:
        _kill(proc)
        raise
    finally:
        sel.close()


def _kill(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _last_error(path: str) -> str:
    with open(path, errors="replace") as fh:
        lines = [l.strip() for l in fh if l.strip()]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line:
            return line
    return lines[-1] if lines else "no message (the worker exited abnormally)"


def _group_layers(flat: dict, n_layers: int, record: bool) -> dict:
    out = {"logits": flat["logits"]}
    if record:
        out["stream_in"] = flat["stream_in"]
        for key in ("ssm", "spikes", "stream"):
            out[key] = [flat[f"{key}.{i}"] for i in range(n_layers)]
    return out

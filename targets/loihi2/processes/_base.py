"""Shared pieces of our process models: the per-sample window, typed ports, error reporting.

Error reporting: a Lava process model that raises leaves ``run()`` waiting forever with no
traceback.  Our models therefore run their step inside ``WindowedModel.run_spk``, which, before
re-raising, writes ``<ExceptionType>: <message>`` to the file descriptor named by the environment
variable ``NEUROCOMPILE_LAVA_ERROR_FD`` (set by ``runner.run_lava`` for its child; Lava's forked
processes inherit it).  The runner reads that pipe and stops the run at once.
"""
import os
import traceback

import numpy as np

from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType

INT_IN = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
INT_OUT = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
FLOAT_IN = LavaPyType(PyInPort.VEC_DENSE, float)
FLOAT_OUT = LavaPyType(PyOutPort.VEC_DENSE, float)

from neurocompile.execute import ERROR_FD_ENV  # noqa: E402 - one name for the runner and the models


def report_error(where: str, exc: BaseException) -> None:
    """Write one line describing ``exc`` to the runner's error pipe, if there is one."""
    fd = os.environ.get(ERROR_FD_ENV)
    if not fd:
        return
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" (at {os.path.basename(last[0].filename)}:{last[0].lineno})" if last else ""
    line = f"{where}: {type(exc).__name__}: {exc}{at}".replace("\n", " ") + "\n"
    try:
        os.write(int(fd), line.encode(errors="replace"))
    except OSError:
        pass


class WindowedModel(PyLoihiProcessModel):
    """Samples run back to back, ``window`` steps each.  A stage's input for logical step 0 arrives
    ``delay`` steps into the window (set by the compiler's time alignment), it is live for the
    ``length`` steps that follow, and it outputs zeros otherwise.

    Subclasses implement ``step()`` (receive, then send); ``run_spk`` wraps it for error reports."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.window = proc_params["window"]
        self.delay = proc_params["delay"]
        self.length = proc_params["length"]

    def local_step(self) -> int:
        """0-based step inside the current sample's window (Lava time starts at 1)."""
        return (self.time_step - 1) % self.window

    def logical(self, offset: int = 0) -> int:
        """The logical step this stage's input (offset 0) or output (offset lag) is at now."""
        return self.local_step() - self.delay - offset

    def live(self, offset: int = 0) -> bool:
        return 0 <= self.logical(offset) < self.length

    def step(self):
        raise NotImplementedError

    def run_spk(self):
        try:
            self.step()
        except BaseException as exc:
            report_error(f"{type(self).__name__} at Lava step {self.time_step}", exc)
            raise


class DelayLine:
    """Holds a port's values ``depth`` steps so they meet a later-arriving input (depth 0: none)."""

    def __init__(self, depth: int, size: int, dtype):
        self.buffer = np.zeros((depth + 1, size), dtype=dtype)
        self.head = 0

    def push(self, value) -> np.ndarray:
        """Store this step's value and return the one from ``depth`` steps ago."""
        depth = self.buffer.shape[0] - 1
        self.buffer[self.head] = value
        out = self.buffer[(self.head - depth) % (depth + 1)].copy()
        self.head = (self.head + 1) % (depth + 1)
        return out


def float_glu_residual(skip, dense, bias):
    """The floating_pt mixer: x + a * sigmoid(g), with [a, g] = dense + bias (GLU convention)."""
    z = dense + bias
    H = skip.shape[0]
    return skip + z[:H] / (1.0 + np.exp(-z[H:]))

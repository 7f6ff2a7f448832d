"""Faults injected into a Lava run where it runs: in the worker interpreter.

Workers are fresh interpreters (``neurocompile.worker``), so a monkeypatch in the test's process does
not reach the Lava network.  A test replaces ``runner.simulate_task`` (the task ``run_lava`` hands to
its worker, pickled by name) with one of these: the worker imports this module, applies the fault,
then runs the real task.  Lava's own processes are forked inside the worker after that, so they
carry the fault too."""
import os
import time

from neurocompile.targets.loihi2 import runner

SIMULATE = runner.simulate_task          # the real task (this module is imported before any patch)


def glu_raises(*args, **kwargs):
    from neurocompile.targets.loihi2.processes import glu_residual

    def boom(self, skip, dense):  # noqa: ARG001
        raise ValueError("injected failure in GLU")
    glu_residual.GLUResidualFixed.mix = boom
    return SIMULATE(*args, **kwargs)


def convolution_hangs(*args, **kwargs):
    from neurocompile.targets.loihi2.processes import ssm_conv
    ssm_conv.SSMConvFixed.convolve = lambda self, rows, taps, t: time.sleep(3600)
    return SIMULATE(*args, **kwargs)


def teardown_hangs(*args, **kwargs):
    from lava.magma.core.process.process import AbstractProcess

    from neurocompile.targets.loihi2 import lowering
    AbstractProcess.wait = lambda self: time.sleep(3600)
    lowering.TEARDOWN_S = 2
    return SIMULATE(*args, **kwargs)


def _unmapped_new_segments(before: set) -> set:
    new = {n for n in set(os.listdir("/dev/shm")) - before if n.startswith("psm_")}
    mapped = set()
    for pid in filter(str.isdigit, os.listdir("/proc") if new else ()):
        try:
            with open(f"/proc/{pid}/maps") as f:
                mapped |= {line.rsplit("/dev/shm/", 1)[1].split()[0] for line in f if "/dev/shm/psm_" in line}
        except OSError:                                   # the process ended meanwhile, or is not ours to read
            continue
    return new - mapped


def leaked_lava_segments(before: set, settle_s: float = 3.0) -> set:
    """Lava channel segments created since ``before`` that no live process maps and that stay: leaked
    ones.  Another Lava run on the machine (a second test suite) creates segments too: its live processes
    map them, and at its end they exist unmapped for a moment before its parent unlinks them."""
    left = _unmapped_new_segments(before)
    deadline = time.monotonic() + settle_s
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left &= _unmapped_new_segments(before)
    return left

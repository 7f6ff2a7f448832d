"""Faults injected into a Lava run where it runs: in the worker interpreter.

Workers are fresh interpreters (``neurocompile.worker``), so a monkeypatch in the test's process does
not reach the Lava network.  A test replaces ``runner.simulate_task`` (the task ``run_lava`` hands to
its worker, pickled by name) with one of these: the worker imports this module, applies the fault,
then runs the real task.  Lava's own processes are forked inside the worker after that, so they
carry the fault too."""
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

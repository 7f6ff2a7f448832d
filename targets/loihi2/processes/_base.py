"""Shared pieces of our process models: the per-sample window and typed ports."""
import numpy as np

from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType

INT_IN = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
INT_OUT = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
FLOAT_IN = LavaPyType(PyInPort.VEC_DENSE, float)
FLOAT_OUT = LavaPyType(PyOutPort.VEC_DENSE, float)


class WindowedModel(PyLoihiProcessModel):
    """Samples run back to back, ``window`` steps each; a stage is live for ``L`` steps starting
    ``delay`` steps into the window (the Dense hops before it) and outputs zeros otherwise."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.window = proc_params["window"]
        self.delay = proc_params["delay"]
        self.length = proc_params["length"]

    def local_step(self) -> int:
        """0-based step inside the current sample's window (Lava time starts at 1)."""
        return (self.time_step - 1) % self.window

    def live(self, offset: int = 0) -> bool:
        tau = self.local_step() - self.delay - offset
        return 0 <= tau < self.length

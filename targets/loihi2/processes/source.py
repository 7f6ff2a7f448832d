"""SampleSource: plays preloaded samples back to back, one input vector per step."""
import numpy as np

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.process.ports.ports import OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neurocompile.targets.loihi2.processes._base import INT_OUT, WindowedModel


class SampleSource(AbstractProcess):
    def __init__(self, *, levels: np.ndarray, window: int):
        n, L, d_in = levels.shape
        super().__init__(levels=levels, window=window, delay=0, length=L)
        self.levels_out = OutPort(shape=(d_in,))


class _SourceModel(WindowedModel):
    levels_out = INT_OUT

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.levels = np.asarray(proc_params["levels"]).astype(np.int32)    # the port's type, once
        self.rest = np.zeros(self.levels.shape[2], dtype=np.int32)

    def step(self):
        sample = (self.time_step - 1) // self.window
        live = self.live() and sample < len(self.levels)
        self.levels_out.send(self.levels[sample, self.local_step()] if live else self.rest)


@implements(proc=SampleSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class SampleSourceFixed(_SourceModel):
    pass


@implements(proc=SampleSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class SampleSourceFloat(_SourceModel):
    pass

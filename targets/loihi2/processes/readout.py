"""Readout: sums the final stream over the sample, then the decoder gives the logits.

The time sum is the on-chip part; the decoder product runs once per sample (host core).  The
logits are sent on the window's last step and zeros on every other step."""
import numpy as np

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neurocompile import arith

from ._base import FLOAT_IN, FLOAT_OUT, INT_IN, WindowedModel
from lava.magma.core.model.py.ports import PyOutPort
from lava.magma.core.model.py.type import LavaPyType


class Readout(AbstractProcess):
    def __init__(self, *, weight, bias, weight_float, bias_float, window, delay, length):
        super().__init__(weight=weight, bias=bias, weight_float=weight_float, bias_float=bias_float,
                         window=window, delay=delay, length=length)
        self.stream_in = InPort(shape=(weight.shape[1],))
        self.logits_out = OutPort(shape=(weight.shape[0],))


class _ReadoutModel(WindowedModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.total = np.zeros(proc_params["weight"].shape[1], dtype=self.dtype)

    def run_spk(self):
        x = self.stream_in.recv()
        tau = self.local_step() - self.delay
        if tau == 0:
            self.total[:] = 0
        if self.live():
            self.total += x.astype(self.dtype)
        last = tau == self.length - 1
        self.logits_out.send(self.logits() if last else np.zeros(self.proc_params["weight"].shape[0]))


@implements(proc=Readout, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class ReadoutFixed(_ReadoutModel):
    stream_in = INT_IN
    logits_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=64)   # host-side values
    dtype = np.int64

    def logits(self):
        return arith.readout_logits(self.total, self.proc_params["weight"], self.proc_params["bias"])


@implements(proc=Readout, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class ReadoutFloat(_ReadoutModel):
    stream_in = FLOAT_IN
    logits_out = FLOAT_OUT
    dtype = np.float64

    def logits(self):
        return self.proc_params["weight_float"] @ (self.total / self.length) + self.proc_params["bias_float"]

"""Readout: sums the final stream over the sample, then the decoder gives the logits.

The time sum is the on-chip part; the decoder product runs once per sample (host core).  The
logits are sent on the window's last step and zeros on every other step.

The port carries 2 * d_out words: fixed_pt sends the int64 logits split in a high and a low 24-bit
part (each exact in the float64 buffer of Lava's Extractor; ``decode_logits`` joins them), the
floating_pt model sends the logits followed by zeros."""
import numpy as np

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neurocompile import arith

from neurocompile.targets.loihi2.processes._base import FLOAT_IN, FLOAT_OUT, INT_IN, WindowedModel
from lava.magma.core.model.py.ports import PyOutPort
from lava.magma.core.model.py.type import LavaPyType

LOW_BITS = 24


def decode_logits(words: np.ndarray, fixed: bool) -> np.ndarray:
    """(..., 2 * d_out) words from the Readout port -> (..., d_out) logits."""
    d = words.shape[-1] // 2
    if not fixed:
        return words[..., :d].astype(np.float64)
    hi = np.rint(words[..., :d]).astype(np.int64)
    lo = np.rint(words[..., d:]).astype(np.int64)
    return (hi << LOW_BITS) + lo


class Readout(AbstractProcess):
    def __init__(self, *, weight, bias, pre_shift, weight_float, bias_float, window, delay, length):
        super().__init__(weight=weight, bias=bias, pre_shift=pre_shift, weight_float=weight_float,
                         bias_float=bias_float, window=window, delay=delay, length=length)
        self.stream_in = InPort(shape=(weight.shape[1],))
        self.logits_out = OutPort(shape=(2 * weight.shape[0],))


class _ReadoutModel(WindowedModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        D, H = proc_params["weight"].shape
        self.total = np.zeros(H, dtype=self.dtype)
        self.rest = np.zeros(2 * D, dtype=self.dtype)

    def step(self):
        x = self.stream_in.recv()
        t = self.logical()
        if t == 0:
            self.total[:] = 0
        if 0 <= t < self.length:                                     # live
            self.total = self.accumulate(x.astype(self.dtype))
        self.logits_out.send(self.logits() if t == self.length - 1 else self.rest)


@implements(proc=Readout, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class ReadoutFixed(_ReadoutModel):
    stream_in = INT_IN
    logits_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=64)   # host-side values
    dtype = np.int64

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.pre_shift = proc_params["pre_shift"]

    def accumulate(self, x):
        return arith.readout_accumulate(self.total, x, self.pre_shift)

    def logits(self):
        logits = arith.readout_logits(self.total, self.proc_params["weight"], self.proc_params["bias"])
        return np.concatenate([logits >> LOW_BITS, logits & ((1 << LOW_BITS) - 1)])


@implements(proc=Readout, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class ReadoutFloat(_ReadoutModel):
    stream_in = FLOAT_IN
    logits_out = FLOAT_OUT
    dtype = np.float64

    def accumulate(self, x):
        return self.total + x

    def logits(self):
        logits = self.proc_params["weight_float"] @ (self.total / self.length) + self.proc_params["bias_float"]
        return np.concatenate([logits, np.zeros_like(logits)])

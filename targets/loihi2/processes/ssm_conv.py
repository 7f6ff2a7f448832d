"""SSMConv: causal L-tap depthwise convolution of the residual stream, accumulate-only.

fixed_pt: a history of the stream; each step, for every bit plane of the history the taps where
the bit is set are summed, and the plane sums are shifted and added (arith.conv_taps_bit_serial),
then rescaled to the LIF input (arith.shift_round).  floating_pt: the float kernel."""
import numpy as np

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neurocompile import arith

from neurocompile.targets.loihi2.processes._base import FLOAT_IN, FLOAT_OUT, INT_IN, INT_OUT, WindowedModel


class SSMConv(AbstractProcess):
    def __init__(self, *, kernel, shift, stream_bits, kernel_float, window, delay, length):
        super().__init__(kernel=kernel, shift=shift, stream_bits=stream_bits, kernel_float=kernel_float,
                         window=window, delay=delay, length=length)
        self.stream_in = InPort(shape=(kernel.shape[0],))
        self.current_out = OutPort(shape=(kernel.shape[0],))


class _ConvModel(WindowedModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        H, L = proc_params["kernel"].shape
        self.history = np.zeros((L, H), dtype=self.dtype)

    def step(self):
        x = self.stream_in.recv()
        if self.local_step() == 0:
            self.history[:] = 0                      # a new sample starts
        if self.live():
            self.history[1:] = self.history[:-1]
            self.history[0] = x
            y = self.convolve()
        else:
            y = np.zeros(self.history.shape[1], dtype=self.dtype)
        self.current_out.send(y)


@implements(proc=SSMConv, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class SSMConvFixed(_ConvModel):
    stream_in = INT_IN
    current_out = INT_OUT
    dtype = np.int64

    def convolve(self):
        p = self.proc_params
        acc = arith.conv_taps_bit_serial(self.history, p["kernel"], p["stream_bits"])
        return arith.shift_round(acc, p["shift"]).astype(np.int32)


@implements(proc=SSMConv, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class SSMConvFloat(_ConvModel):
    stream_in = FLOAT_IN
    current_out = FLOAT_OUT
    dtype = np.float64

    def convolve(self):
        return (self.proc_params["kernel_float"] * self.history.T).sum(1)

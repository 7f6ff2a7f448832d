"""SSMConv: causal L-tap depthwise convolution of the residual stream, accumulate-only.

fixed_pt: a history of the stream; each step, for every bit plane of the history the taps where
the bit is set are summed, and the plane sums are shifted and added (arith.conv_taps_bit_serial),
then rescaled to the LIF input (arith.shift_round).  floating_pt: the float kernel.

The history is kept in arrival order (row j = x[j], j = 0..tau) and only the tau + 1 rows written
so far in this sample are used, against the taps reversed (kernel[:, tau::-1]):
sum_l kernel[h, l] x[tau - l] over l <= tau, the same integers as a full, zero-padded history of
x[tau], x[tau-1], ... but without shifting the buffer and without the rows that are all zero."""
import numpy as np

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neurocompile import arith

from neurocompile.targets.loihi2.processes._base import FLOAT_IN, FLOAT_OUT, INT_IN, INT_OUT, WindowedModel


class SSMConv(AbstractProcess):
    def __init__(self, *, kernel, shift, stream_bits, acc_split, kernel_float, window, delay, length):
        super().__init__(kernel=kernel, shift=shift, stream_bits=stream_bits, acc_split=acc_split,
                         kernel_float=kernel_float, window=window, delay=delay, length=length)
        self.stream_in = InPort(shape=(kernel.shape[0],))
        self.current_out = OutPort(shape=(kernel.shape[0],))


class _ConvModel(WindowedModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        H, L = proc_params["kernel"].shape
        self.history = np.zeros((L, H), dtype=self.dtype)

    def step(self):
        x = self.stream_in.recv()
        tau = self.local_step() - self.delay
        if 0 <= tau < self.length:
            self.history[tau] = x                    # rows > tau are stale or zero: never read
            y = self.convolve(tau)
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

    def convolve(self, tau):
        p = self.proc_params
        hi, lo = arith.conv_taps_bit_serial(self.history[:tau + 1], p["kernel"][:, tau::-1], p["stream_bits"],
                                            p["acc_split"])
        return arith.ssm_current(hi, lo, p["acc_split"], p["shift"]).astype(np.int32)


@implements(proc=SSMConv, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class SSMConvFloat(_ConvModel):
    stream_in = FLOAT_IN
    current_out = FLOAT_OUT
    dtype = np.float64

    def convolve(self, tau):
        return (self.proc_params["kernel_float"][:, tau::-1] * self.history[:tau + 1].T).sum(1)

"""SSMConv: depthwise L-sample convolution of the stream, streamed causally, accumulate-only.

fixed_pt: a history of the stream; each live output step, for every bit plane of the history the
taps where the bit is set are summed, and the plane sums are shifted and added into two
accumulators (arith.conv_taps_bit_serial), then rescaled, plus the step's bias (arith.ssm_current).
floating_pt: the float kernel.

Timing: input sample s arrives at window step delay + s (s < L) and is kept at history row s.  At
window step delay + c the causal result is sum_j kernel[h, j] x[c - j] over the rows that exist;
it is the output for logical step t = c - lag (a two-sided kernel is read lag = L - 1 steps late),
so the process keeps running for lag steps after its last input."""
import numpy as np

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neurocompile import arith

from neurocompile.targets.loihi2.processes._base import FLOAT_IN, FLOAT_OUT, INT_IN, INT_OUT, WindowedModel


class SSMConv(AbstractProcess):
    def __init__(self, *, kernel, shift, bias, stream_bits, acc_split, lag, kernel_float, bias_float, window, delay,
                 length):
        super().__init__(kernel=kernel, shift=shift, bias=bias, stream_bits=stream_bits, acc_split=acc_split,
                         lag=lag, kernel_float=kernel_float, bias_float=bias_float, window=window, delay=delay,
                         length=length)
        self.stream_in = InPort(shape=(kernel.shape[0],))
        self.current_out = OutPort(shape=(kernel.shape[0],))


class _ConvModel(WindowedModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        H = proc_params["kernel"].shape[0]
        self.history = np.zeros((self.length, H), dtype=self.dtype)

    def step(self):
        x = self.stream_in.recv()
        c = self.logical()                               # causal index of this step
        if 0 <= c < self.length:
            self.history[c] = x                          # rows > c are stale or zero: never read
        t = c - self.proc_params["lag"]
        if 0 <= t < self.length:
            K = self.proc_params["kernel"].shape[1]
            rows = np.arange(max(0, c - K + 1), min(c, self.length - 1) + 1)
            y = self.convolve(rows, c - rows, t)
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

    def convolve(self, rows, taps, t):
        p = self.proc_params
        hi, lo = arith.conv_taps_bit_serial(self.history[rows], p["kernel"][:, taps], p["stream_bits"],
                                            p["acc_split"])
        bias = p["bias"][:, t] if p["bias"].shape[1] else 0
        return arith.ssm_current(hi, lo, p["acc_split"], p["shift"], bias).astype(np.int32)


@implements(proc=SSMConv, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class SSMConvFloat(_ConvModel):
    stream_in = FLOAT_IN
    current_out = FLOAT_OUT
    dtype = np.float64

    def convolve(self, rows, taps, t):
        p = self.proc_params
        bias = p["bias_float"][:, t] if p["bias_float"].shape[1] else 0.0
        return (p["kernel_float"][:, taps] * self.history[rows].T).sum(1) + bias

"""StreamEncoder: raw input levels -> residual stream (bit-serial shift-add, no multiplier)."""
import numpy as np

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neurocompile import arith

from neurocompile.targets.loihi2.processes._base import FLOAT_OUT, INT_IN, INT_OUT, WindowedModel


class StreamEncoder(AbstractProcess):
    """Raw levels p (C unsigned integers of ``input_bits`` bits) -> the stream, per step:

        acc[h] = bias[h] + sum_j sum_i bit_j(p[i]) * (weight[h, i] << j)     (bit planes j, no product)
        out[h] = shift_round(acc[h], shift[h])                               (onto the stream's scale)
    """

    def __init__(self, *, weight, bias, shift, input_bits, weight_float, bias_float, window, delay, length):
        super().__init__(weight=weight, bias=bias, shift=shift, input_bits=input_bits, weight_float=weight_float,
                         bias_float=bias_float, window=window, delay=delay, length=length)
        self.levels_in = InPort(shape=(weight.shape[1],))
        self.stream_out = OutPort(shape=(weight.shape[0],))


@implements(proc=StreamEncoder, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class StreamEncoderFixed(WindowedModel):
    levels_in = INT_IN
    stream_out = INT_OUT

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.weight, self.bias, self.shift = proc_params["weight"], proc_params["bias"], proc_params["shift"]
        self.bits = proc_params["input_bits"]
        self.rest = np.zeros(self.bias.shape, np.int32)

    def step(self):
        p = self.levels_in.recv().astype(np.int64)
        live = self.live()
        self.stream_out.send(arith.encode_bit_serial(p, self.weight, self.bias, self.shift, self.bits).astype(np.int32) if live
                             else self.rest)


@implements(proc=StreamEncoder, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class StreamEncoderFloat(WindowedModel):
    levels_in = INT_IN
    stream_out = FLOAT_OUT

    def step(self):
        p = self.levels_in.recv().astype(np.float64)
        w, b = self.proc_params["weight_float"], self.proc_params["bias_float"]
        self.stream_out.send(w @ p + b if self.live() else 0 * b)

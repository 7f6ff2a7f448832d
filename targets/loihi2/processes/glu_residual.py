"""GLUResidual: x_next = x + GLU(Dense(spikes) + bias), the mixer's neuron side and the residual add.

The Dense output reaches this process later than the stream it is added to (one synapse hop, plus
the lag of a two-sided convolution), so the skip input goes through a delay line of
``skip_depth`` steps (from the compiler's time alignment) to meet it."""
import numpy as np

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neurocompile.targets.loihi2.processes._base import (FLOAT_IN, FLOAT_OUT, INT_IN, INT_OUT, DelayLine,
                                                        WindowedModel, float_glu_residual)


class GLUResidual(AbstractProcess):
    def __init__(self, *, mix_bias, value_shift, gate_shift, out_shift, sigmoid_lut, mix_bias_float,
                 skip_depth, window, delay, length):
        super().__init__(mix_bias=mix_bias, value_shift=value_shift, gate_shift=gate_shift, out_shift=out_shift,
                         sigmoid_lut=sigmoid_lut, mix_bias_float=mix_bias_float, skip_depth=skip_depth,
                         window=window, delay=delay, length=length)
        H = value_shift.shape[0]
        self.dense_in = InPort(shape=(2 * H,))
        self.skip_in = InPort(shape=(H,))
        self.stream_out = OutPort(shape=(H,))


class _GLUModel(WindowedModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        H = proc_params["value_shift"].shape[0]
        self.skip_line = DelayLine(proc_params["skip_depth"], H, self.dtype)

    def step(self):
        dense, skip = self.dense_in.recv(), self.skip_in.recv()
        held = self.skip_line.push(skip)
        out = self.mix(held, dense) if self.live() else np.zeros_like(held)
        self.stream_out.send(out)


@implements(proc=GLUResidual, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class GLUResidualFixed(_GLUModel):
    dense_in = INT_IN
    skip_in = INT_IN
    stream_out = INT_OUT
    dtype = np.int64

    def __init__(self, proc_params):
        super().__init__(proc_params)
        from neurocompile.compiled_pointwise import glu_residual_step
        # arith.glu_residual in one compiled loop over the channels: a step is one call, not ~15
        # numpy operations (~40 us at H = 256); the machine code is loaded here, not in a timed step
        self.compiled = glu_residual_step
        self.rule = tuple(np.ascontiguousarray(proc_params[k], np.int64)
                          for k in ("mix_bias", "value_shift", "gate_shift", "out_shift", "sigmoid_lut"))
        self.out = np.zeros(proc_params["value_shift"].shape[0], np.int64)
        self.compiled(self.out.copy(), np.zeros(2 * self.out.shape[0], np.int64), *self.rule, self.out.copy())

    def mix(self, skip, dense):
        self.compiled(np.ascontiguousarray(skip, np.int64), np.ascontiguousarray(dense, np.int64), *self.rule, self.out)
        return self.out.astype(np.int32)


@implements(proc=GLUResidual, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class GLUResidualFloat(_GLUModel):
    dense_in = FLOAT_IN
    skip_in = FLOAT_IN
    stream_out = FLOAT_OUT
    dtype = np.float64

    def mix(self, skip, dense):
        return float_glu_residual(skip, dense, self.proc_params["mix_bias_float"])

"""GELU and GELUResidual: y = GELU(x + bias), and x_next = skip + GELU(main + bias), as value x
Phi-table[value] (arith.gelu / arith.gelu_residual).  The residual form holds its skip input in a
delay line of ``skip_depth`` steps (from the compiler's time alignment) to meet the later input."""
import numpy as np

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neurocompile import arith
from neurocompile.quant import gelu as float_gelu

from neurocompile.targets.loihi2.processes._base import (FLOAT_IN, FLOAT_OUT, INT_IN, INT_OUT, DelayLine,
                                                        WindowedModel)


class GELU(AbstractProcess):
    def __init__(self, *, bias, value_shift, gate_shift, out_shift, lut, bias_float, window, delay, length):
        super().__init__(bias=bias, value_shift=value_shift, gate_shift=gate_shift, out_shift=out_shift, lut=lut,
                         bias_float=bias_float, window=window, delay=delay, length=length)
        self.value_in = InPort(shape=(bias.shape[0],))
        self.value_out = OutPort(shape=(bias.shape[0],))


class GELUResidual(AbstractProcess):
    def __init__(self, *, bias, value_shift, gate_shift, out_shift, lut, bias_float, skip_depth, window, delay,
                 length):
        super().__init__(bias=bias, value_shift=value_shift, gate_shift=gate_shift, out_shift=out_shift, lut=lut,
                         bias_float=bias_float, skip_depth=skip_depth, window=window, delay=delay, length=length)
        self.value_in = InPort(shape=(bias.shape[0],))
        self.skip_in = InPort(shape=(bias.shape[0],))
        self.stream_out = OutPort(shape=(bias.shape[0],))


class _GELUModel(WindowedModel):
    def step(self):
        z = self.value_in.recv().astype(self.dtype) + self.proc_params["bias" if self.dtype == np.int64 else "bias_float"]
        self.value_out.send(self.gelu(z) if self.live() else np.zeros_like(z))


class _GELUResidualModel(WindowedModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.skip_line = DelayLine(proc_params["skip_depth"], proc_params["bias"].shape[0], self.dtype)

    def step(self):
        z = self.value_in.recv().astype(self.dtype) + self.proc_params["bias" if self.dtype == np.int64 else "bias_float"]
        held = self.skip_line.push(self.skip_in.recv())
        self.stream_out.send(self.residual(held, z) if self.live() else np.zeros_like(held))


def _int_gelu(self, z):
    p = self.proc_params
    return arith.gelu(z, p["value_shift"], p["gate_shift"], p["out_shift"], p["lut"]).astype(np.int32)


def _int_residual(self, skip, z):
    p = self.proc_params
    return arith.gelu_residual(skip, z, p["value_shift"], p["gate_shift"], p["out_shift"], p["lut"]).astype(np.int32)


@implements(proc=GELU, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class GELUFixed(_GELUModel):
    value_in = INT_IN
    value_out = INT_OUT
    dtype = np.int64
    gelu = _int_gelu


@implements(proc=GELU, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class GELUFloat(_GELUModel):
    value_in = FLOAT_IN
    value_out = FLOAT_OUT
    dtype = np.float64
    gelu = staticmethod(float_gelu)


@implements(proc=GELUResidual, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class GELUResidualFixed(_GELUResidualModel):
    value_in = INT_IN
    skip_in = INT_IN
    stream_out = INT_OUT
    dtype = np.int64
    residual = _int_residual


@implements(proc=GELUResidual, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class GELUResidualFloat(_GELUResidualModel):
    value_in = FLOAT_IN
    skip_in = FLOAT_IN
    stream_out = FLOAT_OUT
    dtype = np.float64

    def residual(self, skip, z):
        return skip + float_gelu(z)

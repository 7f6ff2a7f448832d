"""ChannelAffine: y = channel_affine(x) per channel (an unfolded BatchNorm on the stream):
fixed_pt arith.channel_affine, floating_pt scale * x + shift."""
import numpy as np

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neurocompile import arith

from neurocompile.targets.loihi2.processes._base import FLOAT_IN, FLOAT_OUT, INT_IN, INT_OUT, WindowedModel


class ChannelAffine(AbstractProcess):
    def __init__(self, *, in_shift, mult, offset, out_shift, scale_float, shift_float, window, delay, length):
        super().__init__(in_shift=in_shift, mult=mult, offset=offset, out_shift=out_shift, scale_float=scale_float,
                         shift_float=shift_float, window=window, delay=delay, length=length)
        self.value_in = InPort(shape=(mult.shape[0],))
        self.value_out = OutPort(shape=(mult.shape[0],))


class _AffineModel(WindowedModel):
    def step(self):
        x = self.value_in.recv()
        self.value_out.send(self.affine(x) if self.live() else np.zeros(x.shape, self.dtype))


@implements(proc=ChannelAffine, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class ChannelAffineFixed(_AffineModel):
    value_in = INT_IN
    value_out = INT_OUT
    dtype = np.int32

    def affine(self, x):
        p = self.proc_params
        return arith.channel_affine(x.astype(np.int64), p["in_shift"], p["mult"], p["offset"],
                                    p["out_shift"]).astype(np.int32)


@implements(proc=ChannelAffine, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class ChannelAffineFloat(_AffineModel):
    value_in = FLOAT_IN
    value_out = FLOAT_OUT
    dtype = np.float64

    def affine(self, x):
        return self.proc_params["scale_float"] * x + self.proc_params["shift_float"]

"""Concat: the channels of two inputs side by side (wiring for the forward and reverse spikes of a
bidirectional block); each input is held in a delay line to meet the later one."""
import numpy as np

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neurocompile.targets.loihi2.processes._base import FLOAT_IN, FLOAT_OUT, INT_IN, INT_OUT, DelayLine, WindowedModel


class Concat(AbstractProcess):
    def __init__(self, *, sizes, depths, window, delay, length):
        super().__init__(sizes=sizes, depths=depths, window=window, delay=delay, length=length)
        self.main_in = InPort(shape=(sizes[0],))
        self.rest_in = InPort(shape=(sizes[1],))
        self.joined_out = OutPort(shape=(sizes[0] + sizes[1],))


class _ConcatModel(WindowedModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.lines = [DelayLine(d, n, self.dtype) for d, n in zip(proc_params["depths"], proc_params["sizes"])]

    def step(self):
        parts = [line.push(port.recv()) for line, port in zip(self.lines, (self.main_in, self.rest_in))]
        joined = np.concatenate(parts)
        self.joined_out.send(joined if self.live() else np.zeros_like(joined))


@implements(proc=Concat, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class ConcatFixed(_ConcatModel):
    main_in = INT_IN
    rest_in = INT_IN
    joined_out = INT_OUT
    dtype = np.int32


@implements(proc=Concat, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class ConcatFloat(_ConcatModel):
    main_in = FLOAT_IN
    rest_in = FLOAT_IN
    joined_out = FLOAT_OUT
    dtype = np.float64

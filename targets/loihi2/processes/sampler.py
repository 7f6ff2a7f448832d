"""Sampler: stochastic spikes.  fixed_pt: p = clip(channel_affine(clip(x >> in_shift, lo, hi) - lo), 0,
2**bits) (the input held to the window where p is not clamped, centred on it), spike when p exceeds
a uniform from the counter-based PRNG keyed by (run seed, stream, sample, neuron, step) -- arith.sample and
arith.uniform_bits, the emulator's very rule, so the same seed gives the same spikes.  floating_pt:
the float affine against the same uniforms, as (u + 1/2) / 2**bits.  Samples play back to back,
one window each: the sample's index in the data file is ``first_sample`` plus the window's number."""
import numpy as np

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neurocompile import arith

from neurocompile.targets.loihi2.processes._base import FLOAT_IN, FLOAT_OUT, INT_IN, INT_OUT, WindowedModel


class Sampler(AbstractProcess):
    def __init__(self, *, in_shift, lo, hi, mult, offset, out_shift, prob_bits, stream, seed, first_sample,
                 scale_float, shift_float, window, delay, length):
        super().__init__(in_shift=in_shift, lo=lo, hi=hi, mult=mult, offset=offset, out_shift=out_shift,
                         prob_bits=prob_bits,
                         stream=stream, seed=seed, first_sample=first_sample, scale_float=scale_float,
                         shift_float=shift_float, window=window, delay=delay, length=length)
        self.value_in = InPort(shape=(mult.shape[0],))
        self.spikes_out = OutPort(shape=(mult.shape[0],))


class _SamplerModel(WindowedModel):
    def step(self):
        x = self.value_in.recv()
        p = self.proc_params
        H = p["mult"].shape[0]
        if self.live():
            sample = p["first_sample"] + (self.time_step - 1) // self.window    # live steps lie inside one window
            u = arith.uniform_bits(p["seed"], p["stream"], sample, np.arange(H, dtype=np.int64), self.logical(),
                                   p["prob_bits"])
            spikes = self.spikes(x, u)
        else:
            spikes = np.zeros(H, dtype=bool)
        self.spikes_out.send(spikes.astype(self.dtype))


@implements(proc=Sampler, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class SamplerFixed(_SamplerModel):
    value_in = INT_IN
    spikes_out = INT_OUT
    dtype = np.int32

    def spikes(self, x, u):
        p = self.proc_params
        _, s = arith.sample(x.astype(np.int64), p["in_shift"], p["lo"], p["hi"], p["mult"], p["offset"], p["out_shift"],
                            p["prob_bits"], u)
        return s


@implements(proc=Sampler, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class SamplerFloat(_SamplerModel):
    value_in = FLOAT_IN
    spikes_out = FLOAT_OUT
    dtype = np.float64

    def spikes(self, x, u):
        p = self.proc_params
        return p["scale_float"] * x + p["shift_float"] > (u + 0.5) / 2.0 ** p["prob_bits"]

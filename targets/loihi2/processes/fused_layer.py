"""FusedLayer: one whole SpikingSSM layer (SSM conv -> LIF -> Dense -> GLU + residual) in one
process, for fast CPU simulation (``lowering='fused'``).  Not the hardware-shaped graph: the stock
LIFReset and Dense are replaced by the same integer rule (arith.lif_step is the stock LIF with
du=4095; the Dense weights go through Lava's own clip_weights / truncate_weights, and the spike sum
is Dense's ``weights[:, s].sum(1)``), so the result is bit-exact with the hardware-shaped graph.

No synapse hop inside: the layer's output stream leaves on the step its input arrived, so every
layer is live on window steps 0..L-1.  Also sends, for recording, the LIF input and the spikes."""
import numpy as np

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights

from neurocompile import arith

from neurocompile.targets.loihi2.processes._base import (FLOAT_IN, FLOAT_OUT, INT_IN, INT_OUT, WindowedModel,
                                                        float_glu_residual)


class FusedLayer(AbstractProcess):
    def __init__(self, *, kernel, shift, stream_bits, acc_split, dv, vth, mix_weight, mix_bias, value_shift, gate_shift,
                 out_shift, sigmoid_lut, kernel_float, mix_weight_float, mix_bias_float, tau, window, delay,
                 length):
        super().__init__(kernel=kernel, shift=shift, stream_bits=stream_bits, acc_split=acc_split, dv=dv, vth=vth, mix_weight=mix_weight,
                         mix_bias=mix_bias, value_shift=value_shift, gate_shift=gate_shift, out_shift=out_shift,
                         sigmoid_lut=sigmoid_lut, kernel_float=kernel_float, mix_weight_float=mix_weight_float,
                         mix_bias_float=mix_bias_float, tau=tau, window=window, delay=delay, length=length)
        H = kernel.shape[0]
        self.stream_in = InPort(shape=(H,))
        self.stream_out = OutPort(shape=(H,))
        self.current_out = OutPort(shape=(H,))
        self.spikes_out = OutPort(shape=(H,))


class _FusedModel(WindowedModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        H, L = proc_params["kernel"].shape
        self.history = np.zeros((L, H), dtype=self.dtype)
        self.v = np.zeros(H, dtype=self.dtype)

    def step(self):
        x = self.stream_in.recv().astype(self.dtype)
        tau = self.local_step() - self.delay
        H = self.history.shape[1]
        if 0 <= tau < self.length:
            if tau == 0:
                self.v[:] = 0                                  # LIFReset at the window start
            self.history[tau] = x
            a, s, out = self.layer(tau, x)
        else:
            a, s, out = np.zeros(H, self.dtype), np.zeros(H, bool), np.zeros(H, self.dtype)
        self.stream_out.send(out)
        self.current_out.send(a)
        self.spikes_out.send(s.astype(self.dtype))


@implements(proc=FusedLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class FusedLayerFixed(_FusedModel):
    stream_in = INT_IN
    stream_out = INT_OUT
    current_out = INT_OUT
    spikes_out = INT_OUT
    dtype = np.int64

    def __init__(self, proc_params):
        super().__init__(proc_params)
        w = np.asarray(proc_params["mix_weight"])
        mode = determine_sign_mode(w)                          # exactly what stock Dense does to them
        self.weights = truncate_weights(clip_weights(w, mode, num_bits=8), mode, 8).astype(np.int64)

    def layer(self, tau, x):
        p = self.proc_params
        hi, lo = arith.conv_taps_bit_serial(self.history[:tau + 1], p["kernel"][:, tau::-1], p["stream_bits"],
                                            p["acc_split"])
        a = arith.ssm_current(hi, lo, p["acc_split"], p["shift"])
        self.v, s = arith.lif_step(self.v, a, p["dv"], p["vth"])
        dense = self.weights[:, s].sum(axis=1)
        out = arith.glu_residual(x, dense, p["mix_bias"], p["value_shift"], p["gate_shift"], p["out_shift"],
                                 p["sigmoid_lut"])
        return a, s, out


@implements(proc=FusedLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class FusedLayerFloat(_FusedModel):
    stream_in = FLOAT_IN
    stream_out = FLOAT_OUT
    current_out = FLOAT_OUT
    spikes_out = FLOAT_OUT
    dtype = np.float64

    def layer(self, tau, x):
        p = self.proc_params
        a = (p["kernel_float"][:, tau::-1] * self.history[:tau + 1].T).sum(1)
        self.v = self.v * (1 - (1.0 - p["tau"])) + a + 0.0       # stock float LIF, du=1, dv=1-tau, bias 0
        s = self.v > 1.0
        self.v[s] = 0
        return a, s, float_glu_residual(x, p["mix_weight_float"][:, s].sum(axis=1), p["mix_bias_float"])

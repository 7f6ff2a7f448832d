"""SSMRecurrent: a causal diagonal SSM as three neurocore pieces, shaped like Intel's
``lava.proc.s4d.SigmaS4dDeltaLayer`` (Sparse fan-out -> one S4D neuron per mode -> Sparse reduction):

* ``SSMFanOut``   a synapse H -> H*M*2 (+ H): each channel's input times the (re, im) input gains b of
                  its M modes, and times D for the direct term (arith.ssm_fan_out); graded payloads.
* ``SSMModes``    one neuron per complex mode, state (re, im) in two 24-bit registers, s <- a s + x + e
                  (arith.ssm_mode_step), sending its state rescaled (arith.ssm_message).  No stock Loihi 2
                  neuron does a complex multiply: on the chip this piece needs a microcode neuron program.
* ``SSMReduce``   a synapse H*M*2 -> H summing Re(2c m) over the modes (arith.ssm_reduce_term), plus the
                  direct term and the folded constant (arith.ssm_recurrent_output).

Each piece is its own Process with fixed_pt and floating_pt models, so each maps to a neurocore kind;
``SSMRecurrent`` is the hierarchical process the lowering builds, wiring them inside.  The compiler's
range proof (intervals.ssm_recurrent_interval) bounds every graded payload below 2**23: they fit
Lava's 24-bit messages.  The pieces pass their messages within the step (no synapse hop), like the
convolution process they replace; the state is zero at each sample's first live step.
Per step the cost is O(H M): vectorised over channels and modes, no Python loop."""
import numpy as np

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.sub.model import AbstractSubProcessModel
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neurocompile import arith

from neurocompile.targets.loihi2.processes._base import FLOAT_IN, FLOAT_OUT, INT_IN, INT_OUT, WindowedModel

TIMING = ("window", "delay", "length")


def _timing(p) -> dict:
    return {k: p[k] for k in TIMING}


# ------------------------------------------------------------------ fan-out synapse
class SSMFanOut(AbstractProcess):
    def __init__(self, *, gain_in, in_shift, direct, direct_shift, gain_in_float, direct_float, window, delay,
                 length):
        super().__init__(gain_in=gain_in, in_shift=in_shift, direct=direct, direct_shift=direct_shift,
                         gain_in_float=gain_in_float, direct_float=direct_float, window=window, delay=delay,
                         length=length)
        H = gain_in.shape[0]
        self.stream_in = InPort(shape=(H,))
        self.modes_out = OutPort(shape=(gain_in.size,))
        self.direct_out = OutPort(shape=(H,))


class _FanOutModel(WindowedModel):
    def step(self):
        u = self.stream_in.recv()
        if self.live():
            x, d = self.fan_out(u)
        else:
            x, d = np.zeros(self.modes_out.shape, self.dtype), np.zeros(u.shape, self.dtype)
        self.modes_out.send(x)
        self.direct_out.send(d)


@implements(proc=SSMFanOut, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class SSMFanOutFixed(_FanOutModel):
    stream_in = INT_IN
    modes_out = INT_OUT
    direct_out = INT_OUT
    dtype = np.int32

    def fan_out(self, u):
        p, u = self.proc_params, u.astype(np.int64)
        x = arith.ssm_fan_out(u[:, None, None], p["gain_in"], p["in_shift"][:, None, None])
        return x.reshape(-1).astype(np.int32), arith.ssm_fan_out(u, p["direct"], p["direct_shift"]).astype(np.int32)


@implements(proc=SSMFanOut, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class SSMFanOutFloat(_FanOutModel):
    stream_in = FLOAT_IN
    modes_out = FLOAT_OUT
    direct_out = FLOAT_OUT
    dtype = np.float64

    def fan_out(self, u):
        b = self.proc_params["gain_in_float"]                        # (H, M, 2): b u, as (re, im)
        return (b * u[:, None, None]).reshape(-1), self.proc_params["direct_float"] * u


# ------------------------------------------------------------------ mode neurons (microcode)
class SSMModes(AbstractProcess):
    def __init__(self, *, decay, decay_shift, state_bias, send_shift, decay_float, state_bias_float, window, delay,
                 length):
        super().__init__(decay=decay, decay_shift=decay_shift, state_bias=state_bias, send_shift=send_shift,
                         decay_float=decay_float, state_bias_float=state_bias_float, window=window, delay=delay,
                         length=length)
        self.drive_in = InPort(shape=(decay.size,))
        self.msg_out = OutPort(shape=(decay.size,))


class _ModesModel(WindowedModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        shape = proc_params["decay"].shape[:2]
        self.s_re, self.s_im = np.zeros(shape, self.state_dtype), np.zeros(shape, self.state_dtype)

    def step(self):
        x = self.drive_in.recv().reshape(self.s_re.shape + (2,))
        if self.live():
            out = self.advance(x)
        else:                                                        # between samples: state at rest
            self.s_re[:] = 0
            self.s_im[:] = 0
            out = np.zeros(x.shape, self.msg_dtype)
        self.msg_out.send(out.reshape(-1))


@implements(proc=SSMModes, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class SSMModesFixed(_ModesModel):
    drive_in = INT_IN
    msg_out = INT_OUT
    state_dtype = np.int64
    msg_dtype = np.int32

    def advance(self, x):
        p, x = self.proc_params, x.astype(np.int64)
        a, e = p["decay"], p["state_bias"]
        self.s_re, self.s_im = arith.ssm_mode_step(self.s_re, self.s_im, x[..., 0], x[..., 1], a[..., 0], a[..., 1],
                                                   int(p["decay_shift"]), e[..., 0], e[..., 1])
        send = p["send_shift"][:, None]
        return np.stack([arith.ssm_message(self.s_re, send), arith.ssm_message(self.s_im, send)], -1).astype(np.int32)


@implements(proc=SSMModes, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class SSMModesFloat(_ModesModel):
    drive_in = FLOAT_IN
    msg_out = FLOAT_OUT
    state_dtype = np.float64
    msg_dtype = np.float64

    def advance(self, x):
        a, e = self.proc_params["decay_float"], self.proc_params["state_bias_float"]
        re = a[..., 0] * self.s_re - a[..., 1] * self.s_im + x[..., 0] + e[..., 0]
        self.s_im = a[..., 0] * self.s_im + a[..., 1] * self.s_re + x[..., 1] + e[..., 1]
        self.s_re = re
        return np.stack([self.s_re, self.s_im], -1)


# ------------------------------------------------------------------ reduction synapse
class SSMReduce(AbstractProcess):
    def __init__(self, *, gain_out, out_shift, out_bias, gain_out_float, out_bias_float, window, delay, length):
        super().__init__(gain_out=gain_out, out_shift=out_shift, out_bias=out_bias, gain_out_float=gain_out_float,
                         out_bias_float=out_bias_float, window=window, delay=delay, length=length)
        H = gain_out.shape[0]
        self.msg_in = InPort(shape=(gain_out.size,))
        self.direct_in = InPort(shape=(H,))
        self.current_out = OutPort(shape=(H,))


class _ReduceModel(WindowedModel):
    def step(self):
        m, d = self.msg_in.recv(), self.direct_in.recv()
        g = self.proc_params["gain_out"]
        y = self.reduce(m.reshape(g.shape), d) if self.live() else np.zeros(d.shape, self.dtype)
        self.current_out.send(y)


@implements(proc=SSMReduce, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class SSMReduceFixed(_ReduceModel):
    msg_in = INT_IN
    direct_in = INT_IN
    current_out = INT_OUT
    dtype = np.int32

    def reduce(self, m, d):
        p, m = self.proc_params, m.astype(np.int64)
        g = p["gain_out"]
        acc = arith.ssm_reduce_term(m[..., 0], m[..., 1], g[..., 0], g[..., 1]).sum(-1)
        return arith.ssm_recurrent_output(acc, p["out_shift"], d.astype(np.int64), p["out_bias"]).astype(np.int32)


@implements(proc=SSMReduce, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class SSMReduceFloat(_ReduceModel):
    msg_in = FLOAT_IN
    direct_in = FLOAT_IN
    current_out = FLOAT_OUT
    dtype = np.float64

    def reduce(self, m, d):
        g = self.proc_params["gain_out_float"]                       # 2c: Re(2c s) summed over modes
        return (g[..., 0] * m[..., 0] - g[..., 1] * m[..., 1]).sum(-1) + d + self.proc_params["out_bias_float"]


# ------------------------------------------------------------------ the layer
class SSMRecurrent(AbstractProcess):
    """Fan-out -> mode neurons -> reduction, wired by ``SSMRecurrentModel``; keywords are the
    IntSSMRecurrent node's fields plus the timing."""

    def __init__(self, **params):
        super().__init__(**params)
        H = params["decay"].shape[0]
        self.stream_in = InPort(shape=(H,))
        self.current_out = OutPort(shape=(H,))


@implements(proc=SSMRecurrent, protocol=LoihiProtocol)
class SSMRecurrentModel(AbstractSubProcessModel):
    def __init__(self, proc):
        p = proc.proc_params
        pick = lambda *names: {n: p[n] for n in names}
        self.fan_out = SSMFanOut(**pick("gain_in", "in_shift", "direct", "direct_shift", "gain_in_float",
                                        "direct_float", *TIMING))
        self.modes = SSMModes(**pick("decay", "decay_shift", "state_bias", "send_shift", "decay_float",
                                     "state_bias_float", *TIMING))
        self.reduce = SSMReduce(**pick("gain_out", "out_shift", "out_bias", "gain_out_float", "out_bias_float",
                                       *TIMING))
        proc.in_ports.stream_in.connect(self.fan_out.in_ports.stream_in)
        self.fan_out.out_ports.modes_out.connect(self.modes.in_ports.drive_in)
        self.fan_out.out_ports.direct_out.connect(self.reduce.in_ports.direct_in)
        self.modes.out_ports.msg_out.connect(self.reduce.in_ports.msg_in)
        self.reduce.out_ports.current_out.connect(proc.out_ports.current_out)


# one hierarchical model serves both modes: its pieces carry the fixed_pt and floating_pt models
SSMRecurrentFixed = SSMRecurrentFloat = SSMRecurrentModel

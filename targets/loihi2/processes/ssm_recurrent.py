"""SSMRecurrent: a causal diagonal SSM, shaped like Intel's ``lava.proc.s4d.SigmaS4dDeltaLayer``
(Sparse fan-out -> one S4D neuron per mode -> Sparse reduction), in three pieces:

* ``SSMFanOut``   a synapse H -> H*M*2 (+ H): each channel's input times the (re, im) input gains b of
                  its M modes, and times D for the direct term (arith.ssm_fan_out); graded payloads.
* ``SSMModes``    one neuron per complex mode, state (re, im) in two 24-bit registers, s <- a s + x + e
                  (arith.ssm_mode_step), sending its state rescaled (arith.ssm_message).  No stock Loihi 2
                  neuron does a complex multiply: on the chip this piece needs a microcode neuron program.
* ``SSMReduce``   a synapse H*M*2 -> H summing Re(2c m) over the modes (arith.ssm_reduce_term), plus the
                  direct term and the folded constant (arith.ssm_recurrent_output).

``SSMRecurrent`` (the process the lowering builds) has two kinds of model per mode, and which one
runs is chosen by ``lowering.run_config`` (argument ``pieces``), never by Lava's defaults:

* ``SSMRecurrentPieces``, a SubProcessModel wiring the three pieces, each its own Process with
  fixed_pt and floating_pt models: how the layer maps to neurocores (``plan`` names the three
  pieces), so ``Loihi2HwCfg`` runs it (``pieces=None`` with backend ``hw``), and any run may ask
  for it (``pieces=True``).
* ``SSMRecurrentFixed`` / ``SSMRecurrentFloat``, one PyLoihiProcessModel doing the three pieces'
  steps in order inside one Lava process: the default of the CPU simulator (``Loihi2SimCfg``,
  ``pieces=None`` with backend ``sim``; hosted in the network's Cluster, ``processes/cluster.py``).
  Each Lava process costs the simulator a phase synchronisation per step and the pieces form a chain
  within the step, so one process instead of three is what makes the recurrence cheap to simulate;
  the integers are the same.

The pieces' models call ``FanOut*``, ``Modes*`` and ``Reduce*`` below (one per piece and mode,
constants prepared once, then one ``arith`` call sequence per step; a piece's model only adds its
ports).  The fused float model calls the same three objects in order (``RecurrenceFloat``); the
fused fixed_pt model runs the step as one compiled loop over channels and modes calling the same
``arith`` functions on scalars (``RecurrenceFixed``; the emulator's compiled recurrence shares the
loop).  The fused models equal the pieces bit for bit (tests/test_ssm_recurrent.py).

The compiler's range proof (intervals.ssm_recurrent_interval) bounds every graded payload below
2**23: they fit Lava's 24-bit messages.  The pieces pass their messages within the step (no synapse
hop), like the convolution process they replace; the state is zero at each sample's first live step.
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


# ------------------------------------------------------------------ the arithmetic of each piece
# Built once from the (piece's or layer's) parameters: the (re, im) halves split into contiguous
# arrays and the shifts broadcast to their operands, so a step is the arith calls and nothing else.
# Messages between pieces are (re, im) pairs of (H, M) arrays.
def _halves(pair, dtype):
    return np.ascontiguousarray(pair[..., 0], dtype), np.ascontiguousarray(pair[..., 1], dtype)


class FanOutFixed:
    def __init__(self, p):
        self.b_re, self.b_im = _halves(p["gain_in"], np.int64)
        self.shift = np.asarray(p["in_shift"], np.int64)[:, None]
        self.direct, self.direct_shift = np.asarray(p["direct"], np.int64), np.asarray(p["direct_shift"], np.int64)

    def __call__(self, u):
        """u (H,) -> the modes' drive (re, im) and the direct term D u (int64: the gains are)."""
        col = u[:, None]
        return (arith.ssm_fan_out(col, self.b_re, self.shift), arith.ssm_fan_out(col, self.b_im, self.shift),
                arith.ssm_fan_out(u, self.direct, self.direct_shift))


class FanOutFloat:
    def __init__(self, p):
        self.b_re, self.b_im = _halves(p["gain_in_float"], np.float64)
        self.direct = p["direct_float"]

    def __call__(self, u):
        col = u[:, None]
        return self.b_re * col, self.b_im * col, self.direct * u


class _ModeState:
    """The mode neurons' state (re, im); ``reset`` puts it at rest (between samples)."""

    def reset(self):
        self.s_re[:] = 0
        self.s_im[:] = 0


class ModesFixed(_ModeState):
    def __init__(self, p):
        self.a_re, self.a_im = _halves(p["decay"], np.int64)
        self.e_re, self.e_im = _halves(p["state_bias"], np.int64)
        self.shift = int(p["decay_shift"])
        self.send = np.asarray(p["send_shift"], np.int64)[:, None]
        self.s_re, self.s_im = np.zeros_like(self.a_re), np.zeros_like(self.a_re)

    def __call__(self, x_re, x_im):
        self.s_re, self.s_im = arith.ssm_mode_step(self.s_re, self.s_im, x_re, x_im, self.a_re, self.a_im,
                                                   self.shift, self.e_re, self.e_im)
        return arith.ssm_message(self.s_re, self.send), arith.ssm_message(self.s_im, self.send)


class ModesFloat(_ModeState):
    def __init__(self, p):
        self.a_re, self.a_im = _halves(p["decay_float"], np.float64)
        self.e_re, self.e_im = _halves(p["state_bias_float"], np.float64)
        self.s_re, self.s_im = np.zeros_like(self.a_re), np.zeros_like(self.a_re)

    def __call__(self, x_re, x_im):
        re = self.a_re * self.s_re - self.a_im * self.s_im + x_re + self.e_re
        self.s_im = self.a_re * self.s_im + self.a_im * self.s_re + x_im + self.e_im
        self.s_re = re
        return self.s_re, self.s_im


class ReduceFixed:
    def __init__(self, p):
        self.g_re, self.g_im = _halves(p["gain_out"], np.int64)
        self.shift, self.bias = np.asarray(p["out_shift"], np.int64), np.asarray(p["out_bias"], np.int64)

    def __call__(self, m_re, m_im, direct):
        """The modes' messages (re, im) and the direct term -> the output current (H,), int32."""
        acc = arith.ssm_reduce_term(m_re, m_im, self.g_re, self.g_im).sum(-1)
        return arith.ssm_recurrent_output(acc, self.shift, direct, self.bias).astype(np.int32)


class ReduceFloat:
    def __init__(self, p):
        self.g_re, self.g_im = _halves(p["gain_out_float"], np.float64)     # 2c: Re(2c s) summed over modes
        self.bias = p["out_bias_float"]

    def __call__(self, m_re, m_im, direct):
        return (self.g_re * m_re - self.g_im * m_im).sum(-1) + direct + self.bias


def _interleave(re, im, dtype):
    """(re, im) (H, M) -> the flat (H*M*2) payload of a piece's port."""
    return np.stack([re, im], -1).reshape(-1).astype(dtype, copy=False)


def _split(flat, shape):
    pair = flat.reshape(shape + (2,))
    return pair[..., 0], pair[..., 1]


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
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.fan_out = self.arithmetic(proc_params)
        gain = proc_params["gain_in"]
        self.rest = np.zeros(gain.size, self.dtype), np.zeros(gain.shape[0], self.dtype)

    def step(self):
        u = self.stream_in.recv()
        if self.live():
            x_re, x_im, d = self.fan_out(u)
            x, d = _interleave(x_re, x_im, self.dtype), d.astype(self.dtype, copy=False)
        else:
            x, d = self.rest
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
    arithmetic = FanOutFixed


@implements(proc=SSMFanOut, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class SSMFanOutFloat(_FanOutModel):
    stream_in = FLOAT_IN
    modes_out = FLOAT_OUT
    direct_out = FLOAT_OUT
    dtype = np.float64
    arithmetic = FanOutFloat


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
        self.modes = self.arithmetic(proc_params)
        self.rest = np.zeros(proc_params["decay"].size, self.dtype)

    def step(self):
        x = self.drive_in.recv()
        if self.live():
            out = _interleave(*self.modes(*_split(x, self.modes.a_re.shape)), self.dtype)
        else:                                                        # between samples: state at rest
            self.modes.reset()
            out = self.rest
        self.msg_out.send(out)


@implements(proc=SSMModes, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class SSMModesFixed(_ModesModel):
    drive_in = INT_IN
    msg_out = INT_OUT
    dtype = np.int32
    arithmetic = ModesFixed


@implements(proc=SSMModes, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class SSMModesFloat(_ModesModel):
    drive_in = FLOAT_IN
    msg_out = FLOAT_OUT
    dtype = np.float64
    arithmetic = ModesFloat


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
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.reduce = self.arithmetic(proc_params)
        self.rest = np.zeros(proc_params["gain_out"].shape[0], self.dtype)

    def step(self):
        m, d = self.msg_in.recv(), self.direct_in.recv()
        self.current_out.send(self.reduce(*_split(m, self.reduce.g_re.shape), d) if self.live() else self.rest)


@implements(proc=SSMReduce, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class SSMReduceFixed(_ReduceModel):
    msg_in = INT_IN
    direct_in = INT_IN
    current_out = INT_OUT
    dtype = np.int32
    arithmetic = ReduceFixed


@implements(proc=SSMReduce, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class SSMReduceFloat(_ReduceModel):
    msg_in = FLOAT_IN
    direct_in = FLOAT_IN
    current_out = FLOAT_OUT
    dtype = np.float64
    arithmetic = ReduceFloat


# ------------------------------------------------------------------ the layer
class SSMRecurrent(AbstractProcess):
    """Fan-out -> mode neurons -> reduction; keywords are the IntSSMRecurrent node's fields plus the
    timing.  Runs as one fused model or as its three pieces (module docstring)."""

    def __init__(self, **params):
        super().__init__(**params)
        H = params["decay"].shape[0]
        self.stream_in = InPort(shape=(H,))
        self.current_out = OutPort(shape=(H,))


class RecurrenceFixed:
    """The fused fixed_pt step: fan-out, mode neurons and reduction of every channel in one compiled
    loop (``compiled_pointwise.ssm_recurrence_step``: per channel and mode the same ``arith``
    functions as the pieces, on scalars; the emulator's compiled recurrence shares the loop), the
    (H, M) state kept here.  A step is one call: numpy's per-operation overhead made the three
    vectorised pieces ~0.25 ms per step at H = 256, M = 64."""

    def __init__(self, p):
        from neurocompile import compiled_pointwise
        i64 = lambda key: np.ascontiguousarray(p[key], np.int64)                       # noqa: E731
        self.step = compiled_pointwise.ssm_recurrence_step
        self.params = (i64("decay"), i64("gain_in"), i64("in_shift"), i64("state_bias"), int(p["decay_shift"]),
                       i64("send_shift"), i64("gain_out"), i64("out_shift"), i64("direct"), i64("direct_shift"),
                       i64("out_bias"))
        self.s_re, self.s_im = np.zeros(p["decay"].shape[:2], np.int64), np.zeros(p["decay"].shape[:2], np.int64)
        self.out = np.zeros(p["decay"].shape[0], np.int64)
        # load (or compile) the machine code now, while Lava builds the process, not in a timed step
        self.step(np.zeros_like(self.out), self.s_re.copy(), self.s_im.copy(), *self.params, self.out.copy())

    def __call__(self, u):
        self.step(np.ascontiguousarray(u, np.int64), self.s_re, self.s_im, *self.params, self.out)
        return self.out.astype(np.int32)

    def reset(self):
        self.s_re[:] = 0
        self.s_im[:] = 0


class RecurrenceFloat:
    """The fused floating_pt step: the three pieces' arithmetic objects called in their order."""

    def __init__(self, p):
        self.fan_out, self.modes, self.reduce = FanOutFloat(p), ModesFloat(p), ReduceFloat(p)

    def __call__(self, u):
        x_re, x_im, d = self.fan_out(u)
        return self.reduce(*self.modes(x_re, x_im), d)

    def reset(self):
        self.modes.reset()


class _FusedModel(WindowedModel):
    """The three pieces' steps in one process (``arithmetic``: RecurrenceFixed or RecurrenceFloat)."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.layer = self.arithmetic(proc_params)
        self.rest = np.zeros(proc_params["decay"].shape[0], self.dtype)

    def step(self):
        u = self.stream_in.recv()
        if self.live():
            y = self.layer(u)
        else:                                                        # between samples: state at rest
            self.layer.reset()
            y = self.rest
        self.current_out.send(y)


@implements(proc=SSMRecurrent, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class SSMRecurrentFixed(_FusedModel):
    stream_in = INT_IN
    current_out = INT_OUT
    dtype = np.int32
    arithmetic = RecurrenceFixed


@implements(proc=SSMRecurrent, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class SSMRecurrentFloat(_FusedModel):
    stream_in = FLOAT_IN
    current_out = FLOAT_OUT
    dtype = np.float64
    arithmetic = RecurrenceFloat


@implements(proc=SSMRecurrent, protocol=LoihiProtocol)
class SSMRecurrentPieces(AbstractSubProcessModel):
    """The neurocore mapping: the three pieces as their own processes (one model for both modes:
    the pieces carry the fixed_pt and floating_pt models)."""

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

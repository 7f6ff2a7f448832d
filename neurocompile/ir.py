"""A tiny IR: one frozen dataclass per primitive, held in a graph of named nodes and port edges.

Float nodes describe the trained model; integer nodes (``Int*``) describe what runs on the chip
and are what a compiled ``Program`` is made of.  Passes (``neurocompile.passes``) are plain
functions ``Graph -> Graph`` that swap nodes for other nodes; the graph is copied, never mutated
in place.  An edge carries one node's output into a named input port of another (``main``, or
``skip`` for the residual stream of a mixer).

Every integer node declares its array fields with ``arr(kind, *dims)``: the artifact writer, the
loader and the verifier read these declarations instead of knowing node types by name, and
``channels()`` checks a node against the channel counts of its inputs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterator

import networkx as nx
import numpy as np


def _node(cls):
    return dataclass(frozen=True, eq=False)(cls)


def arr(kind: str, *dims: str):
    """An array field of an integer node: ``kind`` 'int' (stored int64) or 'float' (float64)."""
    return field(metadata={"kind": kind, "dims": dims})


class ShapeError(ValueError):
    """An integer node whose arrays do not fit each other or its inputs."""


# ------------------------------------------------------------------ float (trained model) nodes
@_node
class Input:
    """Raw model input, one vector per step.  ``fmt`` is the input format (``InputFormat.to_dict``)."""
    channels: int
    length: int
    fmt: dict


@_node
class LinearEncoder:
    """y = weight @ x + bias at every step, x the model's float input."""
    weight: np.ndarray         # (H, d_in)
    bias: np.ndarray           # (H,)


@_node
class Embedding:
    """y = table[token] at every step."""
    table: np.ndarray          # (V, H)


@_node
class ChannelAffine:
    """y[h] = scale[h] * x[h] + shift[h]: a BatchNorm in eval mode, or the division by exp(ln_vth)."""
    scale: np.ndarray
    shift: np.ndarray


@_node
class LayerNorm:
    """Per-step normalisation over channels (needs per-step statistics: not accumulate-only)."""
    weight: np.ndarray
    bias: np.ndarray
    position: str = "prenorm"


@_node
class DPLRKernelParams:
    """An S4 DPLR layer's parameters as trained (P-SpikeSSM); materialised like ``S4DKernelParams``."""
    params: dict               # name -> float64 array (inv_dt, C, B, A_real, A_imag, P, l_kernel)
    bidirectional: bool
    D: np.ndarray


@_node
class S4DKernelParams:
    """SSM parameters as trained; ``materialize_kernels`` turns them into an ``SSMConv``."""
    params: dict               # name -> float64 array, names as in the checkpoint (C, log_dt, ...)
    variant: str               # 's4d' (trainable_B=False) or 'diag_b' (trainable_B=True)
    bidirectional: bool
    D: np.ndarray              # (H,)


@_node
class SSMConv:
    """Depthwise convolution, streamed causally: out[h, t] = sum_j kernel[h, j] x[h, t + lag - j] + bias[h, t].

    A causal SSM has ``lag`` 0 and L taps; a two-sided (bidirectional) SSM becomes a causal kernel
    of 2L - 1 taps whose output is read ``lag = L - 1`` steps late.  ``bias`` is (H, L) or (H, 0)."""
    kernel: np.ndarray
    lag: int
    bias: np.ndarray


@_node
class SSMRecurrent:
    """A causal diagonal SSM run as its recurrence (``--ssm-lowering recurrent``), M complex modes
    per channel: s <- a s + b u + e;  y = 2 Re(sum_m c s) + D u + d0.  ``e`` (a constant input per mode)
    and ``d0`` (a constant output) hold folded BatchNorm and threshold shifts; all (H, M) complex
    but D and d0 (H,).  Its kernel is K[l] = 2 Re(sum_m c b a**l) + D [l == 0]."""
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    D: np.ndarray
    e: np.ndarray
    d0: np.ndarray


@_node
class SDNNeuron:
    """The surrogate dynamic network used in training; deployment replaces it with ``LIF``."""
    tau: float


@_node
class LIF:
    """Iterative LIF: u = tau*u + x; s = u >= threshold; u = 0 where s."""
    tau: float
    threshold: float = 1.0


@_node
class Dense:
    """y = weight @ spikes (a synapse: no bias; the neuron after it adds one)."""
    weight: np.ndarray         # (M, N)


@_node
class GLUResidual:
    """x_next = skip + a * sigmoid(g), [a, g] = main + bias (the SpikingSSM mixer and residual)."""
    bias: np.ndarray           # (2H,)


@_node
class Sampler:
    """Stochastic spikes (P-SpikeSSM): s = (scale * x + shift > U), U uniform in [0, 1) from the
    uniform source ``stream`` (one per layer and uniform tensor; sources are shared by samplers)."""
    scale: np.ndarray
    shift: np.ndarray
    stream: int


@_node
class GELU:
    """y = GELU(x + bias) (erf form).  ``to_stream``: the output is the residual stream itself (a
    block without a residual connection)."""
    bias: np.ndarray
    to_stream: bool = False


@_node
class GELUResidual:
    """x_next = skip + GELU(main + bias) (the P-SpikeSSM mixer and residual)."""
    bias: np.ndarray


@_node
class Concat:
    """Channels of ``main`` then ``rest`` (the forward and reverse spikes of a bidirectional block)."""


@_node
class Readout:
    """logits = weight @ mean_t(x) + bias."""
    weight: np.ndarray         # (d_out, H)
    bias: np.ndarray


# ------------------------------------------------------------------ integer (chip) nodes
class IntNode:
    """Base of the integer nodes.  Class attributes: ``PORTS`` the input ports, ``TRACE`` the kind of
    its output for recording ('stream', 'current', 'spikes', 'dense', 'logits' or '')."""
    PORTS: tuple = ("main",)
    TRACE: str = ""

    def channels(self, ins: dict, length: int) -> int:
        """Output channel count, checking the node's arrays against its inputs' channel counts."""
        raise NotImplementedError


def _want(cond: bool, what: str) -> None:
    if not cond:
        raise ShapeError(what)


@_node
class IntInput(IntNode):
    """Raw integers entering the chip each step: levels 0..levels, or token ids 0..levels."""
    PORTS = ()
    n_channels: int
    levels: int
    tokens: bool

    def channels(self, ins, length):
        _want(self.n_channels >= 1 and self.levels >= 1, "input needs >= 1 channel and >= 1 level")
        _want(not self.tokens or self.n_channels == 1, "token input has one channel")
        return self.n_channels


@_node
class IntEncoder(IntNode):
    """Linear encoder on raw levels, formed bit-serially and rounded onto the stream by one shift per
    channel: out = shift_round(weight @ levels + bias, shift) (arith.encode_bit_serial)."""
    TRACE = "stream"
    weight: np.ndarray = arr("int", "H", "C")
    bias: np.ndarray = arr("int", "H")
    shift: np.ndarray = arr("int", "H")
    input_bits: int
    weight_float: np.ndarray = arr("float", "H", "C")
    bias_float: np.ndarray = arr("float", "H")

    def channels(self, ins, length):
        H, C = self.weight.shape
        _want(C == ins["main"], f"encoder weight has {C} inputs, the input has {ins['main']}")
        _want(self.bias.shape == (H,) and self.shift.shape == (H,) and self.weight_float.shape == (H, C)
              and self.bias_float.shape == (H,),
              "encoder arrays disagree on H")
        return H


@_node
class IntEmbedding(IntNode):
    """Token -> table row (a one-hot spike into a synapse: a row select, accumulate-only)."""
    TRACE = "stream"
    table: np.ndarray = arr("int", "V", "H")
    table_float: np.ndarray = arr("float", "V", "H")

    def channels(self, ins, length):
        _want(ins["main"] == 1, "an embedding reads one token channel")
        _want(self.table_float.shape == self.table.shape and self.table.shape[0] >= 1, "embedding tables disagree")
        return self.table.shape[1]


@_node
class IntSSMConv(IntNode):
    """Depthwise integer convolution of the stream, bit-serial (accumulate-only), into two 24-bit
    accumulators split at bit plane ``split``; out = rescaled sum + bias[h, t] (arith.ssm_current).
    Output for logical step t is the causal result at t + lag."""
    TRACE = "current"
    kernel: np.ndarray = arr("int", "H", "K")
    shift: np.ndarray = arr("int", "H")
    bias: np.ndarray = arr("int", "H", "T")
    stream_bits: int
    split: int
    lag: int
    kernel_float: np.ndarray = arr("float", "H", "K")
    bias_float: np.ndarray = arr("float", "H", "T")

    def channels(self, ins, length):
        H, K = self.kernel.shape
        _want(H == ins["main"], f"SSM kernel has {H} channels, its input {ins['main']}")
        _want(self.shift.shape == (H,) and self.kernel_float.shape == (H, K), "SSM arrays disagree on H or K")
        _want(self.bias.shape in ((H, 0), (H, length)) and self.bias_float.shape == self.bias.shape,
              f"SSM bias must be ({H}, 0) or ({H}, {length})")
        _want(1 <= K <= 2 * length - 1 and 0 <= self.lag < K and self.lag <= length - 1,
              f"SSM kernel of {K} taps with lag {self.lag} does not fit sequences of {length}")
        return H


@_node
class IntSSMRecurrent(IntNode):
    """A causal diagonal SSM as an integer recurrence, M complex modes per channel, each (H, M, 2)
    array holding (re, im) mantissas.  Per step (arith.ssm_fan_out, ssm_mode_step, ssm_message,
    ssm_reduce_term, ssm_recurrent_output):
      fan-out synapse   x = shift_round(gain_in * u, in_shift)            (and D u likewise)
      mode neuron       s <- shift_round(decay * s, decay_shift) + x + state_bias   (complex product)
      message           m = shift_round(s, send_shift)                    (graded payload)
      reduction synapse y = shift_round(sum_m Re(gain_out * m), out_shift) + shift_round(direct * u,
                        direct_shift) + out_bias
    ``gain_out`` holds 2c (so the sum of the real parts is 2 Re(c s))."""
    TRACE = "current"
    decay: np.ndarray = arr("int", "H", "M", "2")
    gain_in: np.ndarray = arr("int", "H", "M", "2")
    in_shift: np.ndarray = arr("int", "H")
    state_bias: np.ndarray = arr("int", "H", "M", "2")
    send_shift: np.ndarray = arr("int", "H")
    gain_out: np.ndarray = arr("int", "H", "M", "2")
    out_shift: np.ndarray = arr("int", "H")
    direct: np.ndarray = arr("int", "H")
    direct_shift: np.ndarray = arr("int", "H")
    out_bias: np.ndarray = arr("int", "H")
    decay_shift: int
    decay_float: np.ndarray = arr("float", "H", "M", "2")
    gain_in_float: np.ndarray = arr("float", "H", "M", "2")
    state_bias_float: np.ndarray = arr("float", "H", "M", "2")
    gain_out_float: np.ndarray = arr("float", "H", "M", "2")
    direct_float: np.ndarray = arr("float", "H")
    out_bias_float: np.ndarray = arr("float", "H")

    def channels(self, ins, length):
        H = self.decay.shape[0]
        _want(H == ins["main"], f"recurrent SSM has {H} channels, its input {ins['main']}")
        _want(self.decay.ndim == 3 and self.decay.shape[2] == 2 and self.decay.shape[1] >= 1,
              "recurrent SSM decay must be (H, M, 2) with M >= 1")
        _want(all(a.shape == self.decay.shape for a in (self.gain_in, self.state_bias, self.gain_out, self.decay_float,
                                                         self.gain_in_float, self.state_bias_float,
                                                         self.gain_out_float)), "recurrent SSM mode arrays disagree")
        _want(all(a.shape == (H,) for a in (self.in_shift, self.send_shift, self.out_shift, self.direct,
                                            self.direct_shift, self.out_bias, self.direct_float, self.out_bias_float)),
              "recurrent SSM channel arrays disagree on H")
        return H


@_node
class IntLIF(IntNode):
    """Loihi 2 LIF (stock Lava fixed_pt, du = 4095): spikes on v > vth << 6."""
    TRACE = "spikes"
    dv: int
    vth: int
    tau: float                 # float retention, for the floating_pt model

    def channels(self, ins, length):
        return ins["main"]


@_node
class IntDense(IntNode):
    """Synapse over binary spikes: out = weight @ s (Lava Dense, 8-bit weights)."""
    TRACE = "dense"
    weight: np.ndarray = arr("int", "M", "N")
    weight_float: np.ndarray = arr("float", "M", "N")

    def channels(self, ins, length):
        M, N = self.weight.shape
        _want(N == ins["main"], f"Dense has {N} inputs, it is fed {ins['main']}")
        _want(self.weight_float.shape == (M, N), "Dense float weights disagree")
        return M


@_node
class IntGLUResidual(IntNode):
    """x_next = x + (a * sigmoid_lut[g]) rescaled, [a, g] = Dense output + bias (arith.glu_residual)."""
    PORTS = ("skip", "main")
    TRACE = "stream"
    bias: np.ndarray = arr("int", "2H")
    value_shift: np.ndarray = arr("int", "H")
    gate_shift: np.ndarray = arr("int", "H")
    out_shift: np.ndarray = arr("int", "H")
    lut: np.ndarray = arr("int", "n")
    bias_float: np.ndarray = arr("float", "2H")

    def channels(self, ins, length):
        H = self.value_shift.shape[0]
        _want(ins["skip"] == H and ins["main"] == 2 * H, f"GLU over {H} channels needs a {H}-channel skip and "
              f"{2 * H} Dense outputs, got {ins['skip']} and {ins['main']}")
        _want(self.bias.shape == (2 * H,) and self.bias_float.shape == (2 * H,) and self.gate_shift.shape == (H,)
              and self.out_shift.shape == (H,), "GLU arrays disagree on H")
        n = self.lut.shape[0]
        _want(n >= 2 and n % 2 == 0, f"sigmoid table needs an even length >= 2, has {n}")
        return H


@_node
class IntReadout(IntNode):
    """Time sum of the final stream on chip, decoder once per sample on the host (arith.readout_*)."""
    TRACE = "logits"
    weight: np.ndarray = arr("int", "D", "H")
    bias: np.ndarray = arr("int", "D")
    pre_shift: np.ndarray = arr("int", "H")
    logit_frac_bits: int       # integer logits ~ float logits * L * 2**logit_frac_bits
    weight_float: np.ndarray = arr("float", "D", "H")
    bias_float: np.ndarray = arr("float", "D")

    def channels(self, ins, length):
        D, H = self.weight.shape
        _want(H == ins["main"], f"readout reads {H} channels, it is fed {ins['main']}")
        _want(self.bias.shape == (D,) and self.pre_shift.shape == (H,) and self.weight_float.shape == (D, H)
              and self.bias_float.shape == (D,), "readout arrays disagree")
        return D


@_node
class IntChannelAffine(IntNode):
    """y = channel_affine(x): a per-channel multiply and add (an unfolded BatchNorm) (arith.channel_affine)."""
    TRACE = "stream"
    in_shift: np.ndarray = arr("int", "H")
    mult: np.ndarray = arr("int", "H")
    offset: np.ndarray = arr("int", "H")
    out_shift: np.ndarray = arr("int", "H")
    scale_float: np.ndarray = arr("float", "H")
    shift_float: np.ndarray = arr("float", "H")

    def channels(self, ins, length):
        H = self.mult.shape[0]
        _want(ins["main"] == H, f"affine over {H} channels is fed {ins['main']}")
        _want(all(a.shape == (H,) for a in (self.in_shift, self.offset, self.out_shift, self.scale_float,
                                             self.shift_float)), "affine arrays disagree on H")
        return H


@_node
class IntSampler(IntChannelAffine):
    """Bernoulli spikes: p = clip(channel_affine(clip(x >> in_shift, lo, hi) - lo), 0, 2**prob_bits)
    (the affine's own in_shift is 0), spike when p > a prob_bits-bit uniform from the counter-based
    PRNG keyed by (run seed, stream, sample, neuron, step) (arith.sample).  [lo, hi]: the pre-shifted
    input's window where the probability is not clamped."""
    TRACE = "spikes"
    prob_bits: int
    stream: int
    lo: np.ndarray = arr("int", "H")
    hi: np.ndarray = arr("int", "H")

    def channels(self, ins, length):
        H = super().channels(ins, length)
        _want(self.lo.shape == (H,) and self.hi.shape == (H,), "sampler window arrays disagree on H")
        return H


@_node
class IntGELU(IntNode):
    """y = GELU(x + bias) as value x Phi-table[value] (arith.gelu)."""
    TRACE = "current"
    bias: np.ndarray = arr("int", "H")
    value_shift: np.ndarray = arr("int", "H")
    gate_shift: np.ndarray = arr("int", "H")
    out_shift: np.ndarray = arr("int", "H")
    lut: np.ndarray = arr("int", "n")
    bias_float: np.ndarray = arr("float", "H")

    def channels(self, ins, length):
        H = self.value_shift.shape[0]
        _want(ins["main"] == H, f"GELU over {H} channels is fed {ins['main']}")
        _want(all(a.shape == (H,) for a in (self.bias, self.gate_shift, self.out_shift, self.bias_float)),
              "GELU arrays disagree on H")
        _want(self.lut.shape[0] >= 2 and self.lut.shape[0] % 2 == 0, "GELU table needs an even length >= 2")
        return H


@_node
class IntGELUResidual(IntGELU):
    """x_next = x + GELU(main + bias) at the stream's scale (arith.gelu_residual)."""
    PORTS = ("skip", "main")
    TRACE = "stream"

    def channels(self, ins, length):
        H = IntGELU.channels(self, {"main": ins["main"]}, length)
        _want(ins["skip"] == H, f"GELU residual over {H} channels has a {ins['skip']}-channel skip")
        return H


@_node
class IntConcat(IntNode):
    """The channels of ``main`` followed by those of ``rest`` (wiring: no arithmetic)."""
    PORTS = ("main", "rest")

    def channels(self, ins, length):
        return ins["main"] + ins["rest"]


INT_NODES = {cls.__name__: cls for cls in (IntInput, IntEncoder, IntEmbedding, IntSSMConv, IntSSMRecurrent, IntLIF, IntDense,
                                           IntGLUResidual, IntReadout, IntChannelAffine, IntSampler, IntGELU,
                                           IntGELUResidual, IntConcat)}


def array_fields(cls) -> list:
    """(name, kind) of the array fields of an integer node type, in declaration order."""
    return [(f.name, f.metadata["kind"]) for f in dataclasses.fields(cls) if "kind" in f.metadata]


def scalar_fields(cls) -> list:
    """(name, type) of the scalar fields of an integer node type."""
    return [(f.name, f.type) for f in dataclasses.fields(cls) if "kind" not in f.metadata]


# ------------------------------------------------------------------ the graph
@dataclass
class Graph:
    """Named nodes, edges into named ports, plus model-level facts every pass may need."""
    g: nx.DiGraph
    meta: dict = field(default_factory=dict)

    def copy(self) -> "Graph":
        return Graph(self.g.copy(), dict(self.meta))

    def op(self, name: str):
        return self.g.nodes[name]["op"]

    def set_op(self, name: str, op) -> None:
        self.g.nodes[name]["op"] = op

    def topo(self) -> list:
        return list(nx.lexicographical_topological_sort(self.g, key=lambda n: self.g.nodes[n]["order"]))

    def nodes_of(self, *types) -> Iterator[str]:
        for name in self.topo():
            if isinstance(self.op(name), types):
                yield name

    def layer_of(self, name: str):
        return self.g.nodes[name].get("layer")

    def inputs(self, name: str) -> dict:
        """{port: source node}."""
        return {self.g.edges[src, name]["port"]: src for src in self.g.predecessors(name)}

    def consumers(self, name: str) -> list:
        return sorted(self.g.successors(name), key=lambda n: self.g.nodes[n]["order"])

    def bypass(self, name: str) -> None:
        """Remove a single-input node, wiring its input straight into its consumers' ports."""
        (src,) = self.g.predecessors(name)
        for dst in list(self.g.successors(name)):
            self.g.add_edge(src, dst, **self.g.edges[name, dst])
        self.g.remove_node(name)

    def summary(self) -> str:
        return "\n".join(f"{name:<18} {type(self.op(name)).__name__:<16} <- "
                         + (", ".join(f"{p}={s}" for p, s in sorted(self.inputs(name).items())) or "-")
                         for name in self.topo())


def new_graph(meta: dict) -> Graph:
    return Graph(nx.DiGraph(), meta)


def add(graph: Graph, name: str, op, inputs=(), layer=None, ports=None) -> str:
    """Add ``op`` as ``name`` fed by ``inputs`` (into ``ports``, default 'main'); returns the name."""
    order = max((d["order"] for _, d in graph.g.nodes(data=True)), default=-1) + 1
    graph.g.add_node(name, op=op, layer=layer, order=order)
    for i, src in enumerate(inputs):
        graph.g.add_edge(src, name, port=(ports[i] if ports else "main"))
    return name

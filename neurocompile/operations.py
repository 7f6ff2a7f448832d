"""What each integer node costs per time step on the chip, as numbers that add up, and how it does it.

One row rule per integer node type (``OPERATION``) returns an ``Operation``: a human ``how`` text and
its ``Costs``, worst case per step (every input spiking, every bit plane set), plus what it costs
once per sample (the readout's decoder on the host).  Bit-plane counts and widths come from the
proven ranges the nodes carry (``stream_bits``, ``input_bits``, the integers' own magnitudes), so a
plan's totals are sums, never parsed strings.  ``export`` prints the table and the artifact keeps it.
"Accumulate-only" means no multiplier: additions, shifts, comparisons, table lookups -- a node is
accumulate-only exactly when its ``multiplies`` are 0, per step and per sample.
Memory: the artifact's table counts every array in whole bytes; the plan passes its target, and a
target that packs narrow synaptic weights (``Target.packed_weight_bits``: Loihi 2 stores 1-8-bit
weights in b/8 bytes) has the arrays ``SYNAPSE_WEIGHTS`` names counted at their width.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .arith import ARITHMETIC
from .ir import (IntChannelAffine, IntConcat, IntDense, IntEmbedding, IntEncoder, IntGELU, IntGELUResidual,
                 IntGLUResidual, IntInput, IntLIF, IntReadout, IntSampler, IntSSMConv, IntSSMRecurrent)

REGISTER_BYTES = ARITHMETIC.register_bits // 8     # a 24-bit neuron register (state, accumulator)


@dataclass(frozen=True)
class Costs:
    """Operations (per step, or per sample where stated) and the memory a node holds.  Adding two
    Costs adds every field; ``scaled(k)`` multiplies the operation counts (not the memory) by k."""
    accumulates: int = 0          # additions into an accumulator (synaptic or neuron-level)
    multiplies: int = 0           # neuron-level multiplies (not accumulate-only)
    neuron_updates: int = 0       # neurons whose state is updated
    synaptic_events: int = 0      # weights read because an input spiked (or a bit plane was set)
    messages: int = 0             # spikes or graded messages sent
    state_bytes: int = 0          # neuron state, histories and tables the node holds
    synapse_bytes: int = 0        # weights and taps

    OPERATIONS = ("accumulates", "multiplies", "neuron_updates", "synaptic_events", "messages")

    def __add__(self, other: "Costs") -> "Costs":
        return Costs(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)})

    def scaled(self, k: int) -> "Costs":
        return dataclasses.replace(self, **{f: getattr(self, f) * k for f in self.OPERATIONS})

    def to_dict(self) -> dict:
        return {f.name: int(getattr(self, f.name)) for f in dataclasses.fields(self)}


def total(costs) -> Costs:
    return sum(costs, Costs())


@dataclass(frozen=True)
class Operation:
    how: str
    per_step: Costs
    per_sample: Costs = Costs()    # once per sample, besides the steps (host decoder)

    @property
    def ac_only(self) -> bool:
        return self.per_step.multiplies == 0 and self.per_sample.multiplies == 0


def int_bits(values) -> int:
    """Bits of the narrowest signed mantissa (sign included) that holds every value of an integer array
    sharing one exponent (the trailing zero bits every value has are the exponent); 0 when empty."""
    a = np.abs(np.asarray(values, dtype=np.int64))
    if a.size == 0:
        return 0
    common = np.bitwise_or.reduce(a.ravel())
    zeros = (int(common) & -int(common)).bit_length() - 1 if common else 0
    return (int(a.max()) >> zeros).bit_length() + 1


def stored_bits(bits: int, packed_bits: int = 0) -> int:
    """Bits one value of ``bits`` takes in memory: its own width where the target packs values that
    narrow (``Target.packed_weight_bits``), else whole bytes."""
    return bits if bits <= packed_bits else -(-bits // 8) * 8


def bits_bytes(n_values: int, bits: int) -> int:
    """Bytes that hold ``n_values`` values of ``bits`` bits each, packed (the last byte rounded up)."""
    return -(-n_values * bits // 8)


def int_bytes(values, packed_bits: int = 0) -> int:
    """Bytes of a signed integer array held as mantissas with one shared exponent, at the narrowest
    width that holds them all: whole bytes, or packed at that width when it is <= ``packed_bits``."""
    return bits_bytes(int(np.asarray(values).size), stored_bits(int_bits(values), packed_bits))


# The synaptic weight arrays of each node type: what a target that packs narrow weights stores at their width.
SYNAPSE_WEIGHTS = {IntEncoder: ("weight",), IntEmbedding: ("table",), IntSSMConv: ("kernel",), IntDense: ("weight",),
                   IntSSMRecurrent: ("gain_in", "direct", "gain_out")}


def weight_bits(op) -> int:
    """The widest of a node's synaptic weight arrays, in bits (0: the node has no synapses)."""
    return max((int_bits(getattr(op, a)) for a in SYNAPSE_WEIGHTS.get(type(op), ())), default=0)


def weight_bytes(op, packed_bits: int = 0) -> int:
    """Bytes of a node's synaptic weights, each array at its own width (packed up to ``packed_bits``)."""
    return sum(int_bytes(getattr(op, a), packed_bits) for a in SYNAPSE_WEIGHTS.get(type(op), ()))


def _encoder(name, op: IntEncoder, L, graph, packed=0):
    H = op.weight.shape[0]
    taps = op.input_bits * int(np.count_nonzero(op.weight))
    return Operation(f"bit-serial shift-add over {op.input_bits} input bit planes",
                     Costs(accumulates=taps + H, synaptic_events=taps, neuron_updates=H, messages=H,
                           synapse_bytes=weight_bytes(op, packed) + int_bytes(op.bias)))


def _embedding(name, op: IntEmbedding, L, graph, packed=0):
    V, H = op.table.shape
    return Operation(f"one-hot token spike into a {V}-row synapse (a row select)",
                     Costs(accumulates=H, synaptic_events=H, neuron_updates=H, messages=H,
                           synapse_bytes=weight_bytes(op, packed)))


def ssm_input_bits(op: IntSSMConv, graph, name) -> int:
    """Bit planes of the convolution's input: 1 over spikes, the stream's proven width otherwise."""
    return 1 if type(graph.op(graph.inputs(name)["main"])).TRACE == "spikes" else int(op.stream_bits)


def _ssm(name, op: IntSSMConv, L, graph, packed=0):
    H, K = op.kernel.shape
    side = (f"two-sided kernel streamed as {K} causal taps, output {op.lag} steps late" if op.lag
            else f"{K}-tap causal kernel")
    bias = ", plus a per-step bias (folded BatchNorm shift)" if op.bias.shape[1] else ""
    taps = int(np.count_nonzero(op.kernel))
    bits = ssm_input_bits(op, graph, name)
    costs = Costs(accumulates=bits * taps + H, synaptic_events=bits * taps, neuron_updates=H, messages=H,
                  state_bytes=bits_bytes(H * K, bits) + 2 * H * REGISTER_BYTES,      # input history, two accumulators
                  synapse_bytes=weight_bytes(op, packed) + int_bytes(op.bias) + int_bytes(op.shift))
    if bits == 1:
        return Operation(f"{side} over binary spikes: the taps that meet a spike are summed{bias}", costs)
    return Operation(f"{side}, bit-serial over {op.stream_bits} stream bit planes (taps summed where a bit is set), "
                     f"planes < {op.split} in a second accumulator{bias}", costs)


def _ssm_recurrent(name, op: IntSSMRecurrent, L, graph, packed=0):
    """Per mode and step: fan-out b u (2 multiplies), a s (4), Re(2c m) (2); per channel D u (1)."""
    H, M = op.decay.shape[:2]
    modes = H * M
    bias = ", plus a per-mode bias (folded BatchNorm shift)" if op.state_bias.any() else ""
    costs = Costs(multiplies=8 * modes + H,
                  accumulates=6 * modes + 2 * modes + 2 * H,     # mode update (3 per component), reduction, D u + bias
                  synaptic_events=2 * modes + H + 2 * modes,    # fan-out (re, im) and D, reduction (re, im)
                  neuron_updates=modes, messages=2 * modes + H + 2 * modes + H,
                  state_bytes=2 * modes * REGISTER_BYTES + int_bytes(op.decay) + int_bytes(op.state_bias)
                  + H * REGISTER_BYTES,
                  synapse_bytes=weight_bytes(op, packed) + int_bytes(op.out_bias))
    return Operation(f"diagonal recurrence, {M} complex modes per channel, state independent of L: fan-out synapse "
                     f"x = b u, mode neurons s <- a s + x{bias} (microcode: a complex multiply rounded once per "
                     f"component), reduction synapse 2 Re(c s) + D u; 8 multiplies per mode and step", costs)


def _lif(name, op: IntLIF, L, graph, packed=0):
    H = graph.channel_counts()[name]
    return Operation("stock Lava LIF (decay is a shift)",
                     Costs(accumulates=H, neuron_updates=H, messages=H, state_bytes=2 * H * REGISTER_BYTES))


def _dense(name, op: IntDense, L, graph, packed=0):
    M, N = op.weight.shape
    return Operation("binary spikes: the weight rows of the spiking inputs are summed",
                     Costs(accumulates=M * N, synaptic_events=M * N, synapse_bytes=weight_bytes(op, packed)))


def _glu(name, op: IntGLUResidual, L, graph, packed=0):
    H = op.value_shift.shape[0]
    return Operation("value x sigmoid-LUT: one neuron-level multiply per channel, then the residual add",
                     Costs(accumulates=3 * H, multiplies=H, neuron_updates=H, messages=H,
                           state_bytes=int_bytes(op.lut), synapse_bytes=int_bytes(op.bias)))


def _readout(name, op: IntReadout, L, graph, packed=0):
    D, H = op.weight.shape
    return Operation("time sum on chip, decoder MACs once per sample on the host core",
                     Costs(accumulates=H, neuron_updates=H, state_bytes=H * REGISTER_BYTES),
                     Costs(accumulates=D * H, multiplies=D * H, messages=H,
                           synapse_bytes=int_bytes(op.weight) + int_bytes(op.bias)))


def _affine_costs(op: IntChannelAffine) -> Costs:
    H = op.mult.shape[0]
    return Costs(accumulates=H, multiplies=H, neuron_updates=H, messages=H,
                 synapse_bytes=int_bytes(op.mult) + int_bytes(op.offset))


def _sampler(name, op: IntSampler, L, graph, packed=0):
    return Operation(f"firing probability by one neuron-level multiply-add per channel, compared "
                     f"with a {op.prob_bits}-bit counter-based PRNG uniform (stream {op.stream})", _affine_costs(op))


def _affine(name, op: IntChannelAffine, L, graph, packed=0):
    return Operation("per-channel affine (a BatchNorm that cannot fold): one multiply per channel", _affine_costs(op))


def _gelu(name, op, L, graph, packed=0):
    H = op.value_shift.shape[0]
    residual = isinstance(op, IntGELUResidual)
    text = ", then the residual add" if residual else ""
    return Operation(f"GELU as value x Phi-table[value] ({op.lut.shape[0]} entries): one "
                     f"neuron-level multiply per channel{text}",
                     Costs(accumulates=(2 + residual) * H, multiplies=H, neuron_updates=H, messages=H,
                           state_bytes=int_bytes(op.lut), synapse_bytes=int_bytes(op.bias)))


def _concat(name, op, L, graph, packed=0):
    return Operation("wiring: forward and reverse spikes side by side", Costs())


OPERATION = {
    IntEncoder: _encoder,
    IntEmbedding: _embedding,
    IntSSMConv: _ssm,
    IntSSMRecurrent: _ssm_recurrent,
    IntLIF: _lif,
    IntDense: _dense,
    IntGLUResidual: _glu,
    IntReadout: _readout,
    IntSampler: _sampler,
    IntChannelAffine: _affine,
    IntGELU: _gelu,
    IntGELUResidual: _gelu,
    IntConcat: _concat,
}
NO_OPERATION = {IntInput: "raw integers entering the chip: the source computes nothing"}


def operations(graph, L: int, target=None) -> dict:
    """{node name: Operation} for every node that computes (the input node does not).  Synaptic weights
    are counted in whole bytes, or at their width where ``target`` packs narrow weights (the plan)."""
    packed = target.packed_weight_bits if target is not None else 0
    return {name: OPERATION[type(graph.op(name))](name, graph.op(name), L, graph, packed)
            for name in graph.topo() if type(graph.op(name)) not in NO_OPERATION}


def operation_summary(graph, L: int) -> list:
    """[{stage, ac_only, how, per_step, per_sample}] (the report's rows: plain JSON numbers)."""
    return [{"stage": name, "ac_only": op.ac_only, "how": op.how, "per_step": op.per_step.to_dict(),
             "per_sample": op.per_sample.to_dict()}
            for name, op in operations(graph, L).items()]

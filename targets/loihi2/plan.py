"""Program -> Plan: what runs where on Loihi 2, before anything is built (no Lava import here).

A plan has one ``ProcessPlan`` per Program node (the Lava process ``lowering.build_network`` builds
for it, with the timing it is built with) grouped into units: a neuron population together with the
synapses that feed it (on Loihi 2 a synapse's weights live in the cores of its postsynaptic neurons,
so an ``IntDense`` joins its consumer's unit).  One row per integer node type (``PLACE``) says, for
each lowering the target names for that type (``Target.lowerings``), where its process goes:

* ``neurocore``: a stock neuron or synapse type (LIF, Dense/Sparse, graded spikes), or a NAMED
  microcode neuron program (``microcode:<name>``) that a neurocore would run -- the Lava process we
  ship runs that same arithmetic on the CPU; the name says what has to be written for the chip;
* ``host``: the host CPU, with the bytes per step that cross the chip boundary.

No node is planned on the chip's embedded x86 cores: none of our processes has a C model for them
(the decoder, once per sample, stays on the host), so a placement there would be a promise.

Units are split over cores by the target's budgets (neurons per core, memory per core) and the
cores over chips (the planned cores per chip of Lava's mapper).  What cannot be placed at all is a
``PlacementError`` naming the process, the resource, what it needs and what a core (or the system)
has.  All figures are estimates from the Program's arrays and proven widths, not measurements.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from ...errors import PlacementError
from ...ir import (IntChannelAffine, IntConcat, IntDense, IntEmbedding, IntEncoder, IntGELU, IntGELUResidual,
                   IntGLUResidual, IntInput, IntLIF, IntReadout, IntSampler, IntSSMConv, IntSSMRecurrent)
from ...operations import REGISTER_BYTES, Costs, bits_bytes, operations, ssm_input_bits, stored_bits, total, weight_bits
from ...program import Program
from .target import LOIHI2

PLACEMENTS = ("neurocore", "host")


@dataclass(frozen=True)
class Placement:
    """Where one node's process goes and what it needs (before splitting over cores)."""
    where: str                     # neurocore | host
    program: str                   # stock Lava type or microcode:<name> (neurocore), or what runs it
    reason: str
    neurons: int = 0
    state_bytes: int = 0
    synapse_bytes: int = 0
    host_bytes_per_step: int = 0   # crossing the chip boundary, both ways (host fallbacks)
    weight_bits: int = 0           # width its synaptic weights were counted at (0: no synapses)


@dataclass(frozen=True)
class ProcessPlan:
    """One node's process: its lowering, placement, resources and the timing it is built with."""
    name: str
    node_type: str
    layer: object
    unit: str                      # the unit (population + its incoming synapses) it belongs to
    lowering: str
    process: str                   # the Lava process class lowering.build_network builds
    placement: Placement
    costs: Costs                   # worst case per step (operations.OPERATION)
    delay: int                     # window step at which its latest input for logical step 0 arrives
    arrivals: dict                 # port -> window step of that input's logical step 0
    channels: int
    in_channels: dict
    cores: int = 0
    chips: tuple = ()              # the chips its cores lie on

    def to_dict(self) -> dict:
        p = self.placement
        return {"name": self.name, "type": self.node_type, "layer": self.layer, "unit": self.unit,
                "lowering": self.lowering, "process": self.process, "placement": p.where, "program": p.program,
                "reason": p.reason, "neurons": p.neurons, "synapse_bytes": p.synapse_bytes,
                "state_bytes": p.state_bytes, "weight_bits": p.weight_bits, "cores": self.cores,
                "chips": list(self.chips),
                "host_bytes_per_step": p.host_bytes_per_step, "per_step": self.costs.to_dict()}


@dataclass(frozen=True)
class Plan:
    target: str
    system: str
    system_chips: int
    processes: tuple               # of ProcessPlan, in the Program's topological order
    units: dict                    # unit name -> names of its processes
    cores: int
    chips: int
    latency_steps: int
    window: int
    per_step: Costs                # worst-case operations per step, summed
    per_sample: Costs              # once per sample (host decoder)
    budgets: dict = field(default_factory=dict)
    packed_weight_bits: int = 0    # the target stores synaptic weights up to this width packed (b/8 bytes)

    def process(self, name: str) -> ProcessPlan:
        return next(p for p in self.processes if p.name == name)

    def to_dict(self) -> dict:
        host = [p for p in self.processes if p.placement.where == "host"]
        return {"estimate": "an estimate: resources from the Program's arrays and Loihi 2's public budgets (not a hardware "
                            "compile)",
                "target": self.target, "system": self.system, "system_chips": self.system_chips,
                "chips": self.chips, "cores": self.cores,
                "latency_steps": self.latency_steps, "window_steps": self.window,
                "host_bytes_per_step": sum(p.placement.host_bytes_per_step for p in host),
                "worst_case_per_step": self.per_step.to_dict(), "per_sample": self.per_sample.to_dict(),
                "packed_weight_bits": self.packed_weight_bits, "budgets": self.budgets,
                "units": {k: list(v) for k, v in self.units.items()},
                "processes": [p.to_dict() for p in self.processes]}


# ---------------------------------------------------------------------------------- the table
def _crossing(ins: int, in_bits: int, outs: int, out_bits: int) -> int:
    """Bytes per step a host process exchanges with the chip: its inputs in, its outputs back."""
    return bits_bytes(ins, in_bits) + bits_bytes(outs, out_bits)


def _message_bits(ctx, port="main") -> int:
    """Bits per value a node receives on ``port``: 1 for spikes, else a graded message."""
    return 1 if ctx.in_trace[port] == "spikes" else ctx.target.message_bits


def _source(op: IntInput, ctx) -> Placement:
    bits = max(int(op.levels).bit_length(), 1)
    return Placement("host", "SampleSource (Python)", "raw samples come from the host, one vector per step",
                     host_bytes_per_step=bits_bytes(op.n_channels, bits))


def _encoder(op: IntEncoder, ctx) -> Placement:
    H, C = op.weight.shape
    return Placement("neurocore", "microcode:bit-serial-encoder",
                     f"{C} graded inputs of {op.input_bits} bits into {H} integrator neurons; a weight fan-in per "
                     "bit plane (shift-add), no multiplier", neurons=H, state_bytes=H * REGISTER_BYTES,
                     synapse_bytes=ctx.costs.synapse_bytes)


def _embedding(op: IntEmbedding, ctx) -> Placement:
    V, H = op.table.shape
    return Placement("neurocore", "stock Sparse (one-hot token row) + graded relay neurons",
                     f"a token is one spike into a {V}-row synapse: its row reaches {H} neurons that send it on",
                     neurons=H, state_bytes=H * REGISTER_BYTES, synapse_bytes=ctx.costs.synapse_bytes)


def _ssm_conv(op: IntSSMConv, ctx) -> Placement:
    """On neurocores the input history is held by delayed synapses: one per tap and bit plane (a weight
    and a delay byte) into an integrator per channel (two accumulators in its state); a graded stream is
    first split into bit-plane spikes, and kernels longer than the 0..63 delays are fed by relay stages
    that re-send the spikes 64 steps later.  Placed so when every integrator's fan-in fits a core and
    the convolution fits one chip's planned cores (its relays and taps exchange spikes every step);
    otherwise on the host, with what the neurocore form would have needed."""
    H, K = op.kernel.shape
    bits = ssm_input_bits(op, ctx.program, ctx.name)
    budgets = ctx.target.budgets
    stages = math.ceil(K / (budgets.max_delay_steps + 1)) - 1
    splitters = H * bits if bits > 1 else 0
    relays = H * bits * stages
    neurons = H + splitters + relays
    # per delayed synapse: the tap's weight at its width (packed where the target packs it) and a delay byte
    synapse_bits = stored_bits(weight_bits(op), ctx.target.packed_weight_bits) + 8
    synapse_bytes, state_bytes = bits_bytes(H * K * bits, synapse_bits), (neurons + H) * REGISTER_BYTES
    fan_in = bits_bytes(K * bits, synapse_bits) + 2 * REGISTER_BYTES
    cores = max(math.ceil(neurons / budgets.neurons_per_core),
                math.ceil((synapse_bytes + state_bytes) / budgets.memory_per_core_bytes))
    form = (f"{H * K * bits:,} delayed synapses ({synapse_bytes:,} bytes, {fan_in:,} per integrator), "
            f"{stages} relay stage(s) ({relays:,} neurons){f', {splitters:,} bit-plane splitters' if splitters else ''}"
            f": ~{cores:,} cores")
    if fan_in <= budgets.memory_per_core_bytes and cores <= budgets.cores_planned_per_chip:
        pieces = ["stock DelaySparse taps"] + (["relay neurons"] if stages else []) + \
                 (["microcode:bit-plane-splitter"] if splitters else []) + ["microcode:conv-integrator"]
        return Placement("neurocore", " + ".join(pieces),
                         f"{K} taps held by synaptic delays (0..{budgets.max_delay_steps}, relays beyond): {form}",
                         neurons=neurons, state_bytes=state_bytes, synapse_bytes=synapse_bytes)
    history = bits_bytes(H * K, bits)
    limit = (f"one integrator's fan-in ({fan_in:,} bytes) exceeds a core ({budgets.memory_per_core_bytes:,})"
             if fan_in > budgets.memory_per_core_bytes else
             f"more than one chip's {budgets.cores_planned_per_chip} planned cores")
    return Placement("host", "SSMConv (Python)",
                     f"a {K}-tap kernel needs an input history of {K} steps ({history:,} bytes for {H} channels); "
                     f"with synaptic delays of at most {budgets.max_delay_steps} steps the neurocore form takes {form}, "
                     f"{limit}: kept on the host (the recurrent lowering holds O(modes) state instead)",
                     state_bytes=ctx.costs.state_bytes, synapse_bytes=ctx.costs.synapse_bytes,
                     host_bytes_per_step=_crossing(H, _message_bits(ctx), H, ctx.target.message_bits))


def _ssm_recurrent(op: IntSSMRecurrent, ctx) -> Placement:
    H, M = op.decay.shape[:2]
    return Placement("neurocore", "stock Sparse fan-out (graded, b and D) -> microcode:s4d-mode-neuron -> stock Sparse "
                     "reduction (graded, 2c)",
                     f"{H * M:,} mode neurons ({M} per channel) hold their complex state in two 24-bit registers, "
                     "independent of L; no stock neuron multiplies complex numbers, so the mode neuron is a "
                     "microcode program; both synapses carry graded messages proven within 24 bits",
                     neurons=H * M, state_bytes=ctx.costs.state_bytes, synapse_bytes=ctx.costs.synapse_bytes)


def _lif(op: IntLIF, ctx) -> Placement:
    H = ctx.channels
    return Placement("neurocore", "stock LIF (LIFReset)", "Lava's stock LIF is bit-exact with the rule (du = 4095)",
                     neurons=H, state_bytes=ctx.costs.state_bytes)


def _dense(op: IntDense, ctx) -> Placement:
    return Placement("neurocore", f"stock Dense (binary spikes, {weight_bits(op)}-bit weights)",
                     f"weights live in the cores of {ctx.consumer}'s neurons", synapse_bytes=ctx.costs.synapse_bytes)


def _skip_relays(ctx, H: int) -> int:
    """Relay neurons the residual skip needs to wait ``depth`` steps with delays of at most 63."""
    depth = ctx.delay - ctx.arrivals.get("skip", ctx.delay)
    return H * max(0, math.ceil(depth / (ctx.target.budgets.max_delay_steps + 1)) - 1)


def _multiply_neuron(program: str, what: str):
    def rule(op, ctx) -> Placement:
        H = ctx.channels
        relays = _skip_relays(ctx, H) if "skip" in type(op).PORTS else 0
        skip = f"; the skip waits {ctx.delay - ctx.arrivals['skip']} steps ({relays:,} relay neurons)" if relays else ""
        return Placement("neurocore", f"microcode:{program}",
                         f"{what}: one multiply per neuron and step, which stock neurons do not have{skip}",
                         neurons=H + relays, state_bytes=(H + relays) * REGISTER_BYTES + ctx.costs.state_bytes,
                         synapse_bytes=ctx.costs.synapse_bytes)
    return rule


def _readout(op: IntReadout, ctx) -> Placement:
    D, H = op.weight.shape
    return Placement("neurocore", "microcode:readout-time-sum (decoder on the host)",
                     f"{H} non-leaking integrators sum the stream over the sample (a per-channel shift first); the "
                     f"{D} x {H} decoder runs once per sample on the host", neurons=H,
                     state_bytes=ctx.costs.state_bytes, host_bytes_per_step=0)


def _wiring(op: IntConcat, ctx) -> Placement:
    return Placement("neurocore", "wiring (no process on chip)",
                     "the forward and reverse populations' axons route to the same consumers")


# node type -> {lowering name (Target.lowerings): (Lava process class, placement rule)}
PLACE = {
    IntInput: {"source": ("SampleSource", _source)},
    IntEncoder: {"bit-serial-encoder": ("StreamEncoder", _encoder)},
    IntEmbedding: {"token-synapse": ("TokenEncoder", _embedding)},
    IntSSMConv: {"conv": ("SSMConv", _ssm_conv)},
    IntSSMRecurrent: {"recurrent": ("SSMRecurrent", _ssm_recurrent)},
    IntLIF: {"lif": ("LIFReset", _lif)},
    IntDense: {"dense": ("Dense", _dense)},
    IntGLUResidual: {"glu-neuron": ("GLUResidual", _multiply_neuron("glu-sigmoid-multiply",
                                                                    "value x sigmoid table, then the residual add"))},
    IntReadout: {"readout": ("Readout", _readout)},
    IntChannelAffine: {"affine-neuron": ("ChannelAffine", _multiply_neuron("channel-affine", "per-channel affine"))},
    IntSampler: {"sampler-neuron": ("Sampler", _multiply_neuron(
        "bernoulli-sampler", "multiply-add, then a compare with a counter-based PRNG uniform (32-bit hash)"))},
    IntGELU: {"gelu-neuron": ("GELU", _multiply_neuron("gelu-phi-multiply", "value x Phi table"))},
    IntGELUResidual: {"gelu-neuron": ("GELUResidual", _multiply_neuron(
        "gelu-phi-multiply", "value x Phi table, then the residual add"))},
    IntConcat: {"wiring": ("Concat", _wiring)},
}


@dataclass(frozen=True)
class _Ctx:
    """What a placement rule sees of its node."""
    program: Program
    name: str
    target: object
    channels: int
    in_trace: dict                 # port -> TRACE kind of the source
    costs: Costs
    delay: int
    arrivals: dict
    consumer: str


# ---------------------------------------------------------------------------------- planning
def _unit_of(program: Program, name: str) -> str:
    """Synapses join the population they feed (their weights live in its cores)."""
    consumers = program.consumers(name)
    if isinstance(program.op(name), IntDense) and len(consumers) == 1:
        return consumers[0]
    return name


def _cores_for(unit: str, members: list, budgets) -> int:
    """Cores a unit needs: neurons per core and memory per core, one neuron never split."""
    neurons = sum(p.placement.neurons for p in members)
    memory = sum(p.placement.state_bytes + p.placement.synapse_bytes for p in members)
    if neurons == 0:
        return 0
    per_neuron = memory / neurons
    if per_neuron > budgets.memory_per_core_bytes:
        worst = max(members, key=lambda p: p.placement.synapse_bytes + p.placement.state_bytes)
        raise PlacementError(f"cannot place {worst.name} ({worst.placement.program}): one neuron of unit {unit} needs "
                             f"{per_neuron:,.0f} bytes of core memory (its fan-in synapses and state), a neurocore "
                             f"has {budgets.memory_per_core_bytes:,}")
    return max(math.ceil(neurons / budgets.neurons_per_core), math.ceil(memory / budgets.memory_per_core_bytes))


def plan_processes(program: Program, lowerings: dict | None = None, target=LOIHI2) -> tuple:
    """One ProcessPlan per node, in topological order: lowering, process, placement and timing, before
    any splitting over cores (so a Lava simulation of a model too large for any system still builds).
    ``lowerings``: node name -> lowering name where the target offers more than one (default: the first)."""
    channels = program.channel_counts()
    ops = operations(program, program.seq_len, target)
    plans = []
    for name in program.topo():
        op = program.op(name)
        candidates = target.lowerings[type(op).__name__]
        lowering = (lowerings or {}).get(name, candidates[0])
        if lowering not in candidates:
            raise PlacementError(f"{name}: lowering {lowering!r} is not one of {', '.join(candidates)}")
        process, rule = PLACE[type(op)][lowering]
        ins = program.inputs(name)
        arrivals = {port: program.delays[src] for port, src in ins.items()}
        consumers = program.consumers(name)
        costs = ops[name].per_step if name in ops else Costs()
        ctx = _Ctx(program, name, target, channels[name], {p: type(program.op(s)).TRACE for p, s in ins.items()},
                   costs, max(arrivals.values(), default=0), arrivals, consumers[0] if consumers else "")
        placement = replace(rule(op, ctx), weight_bits=weight_bits(op))
        assert placement.where in PLACEMENTS, (name, placement.where)
        plans.append(ProcessPlan(name, type(op).__name__, program.layer_of(name), _unit_of(program, name), lowering,
                                 process, placement, costs, ctx.delay, arrivals, channels[name],
                                 {p: channels[s] for p, s in ins.items()}))
    return tuple(plans)


def plan_program(program: Program, system: str | None = None, lowerings: dict | None = None,
                 target=LOIHI2) -> Plan:
    """Plan ``program`` on ``system`` (default: the smallest that holds it): the processes of
    ``plan_processes`` split over cores and chips.  Raises ``PlacementError`` for a process no core can
    hold or a plan larger than the system."""
    budgets = target.budgets
    plans = plan_processes(program, lowerings, target)
    ops = operations(program, program.seq_len, target)
    units = {}
    for p in plans:
        units.setdefault(p.unit, []).append(p.name)
    by_name = {p.name: p for p in plans}
    placed, next_core = [], 0
    for p in plans:
        if p.unit != p.name or p.placement.where == "host":
            placed.append(p)
            continue
        cores = _cores_for(p.unit, [by_name[n] for n in units[p.unit]], budgets)
        first, last = next_core // budgets.cores_planned_per_chip, (next_core + cores - 1) // budgets.cores_planned_per_chip
        next_core += cores
        placed.append(replace(p, cores=cores, chips=tuple(range(first, last + 1)) if cores else ()))
    chips = max(math.ceil(next_core / budgets.cores_planned_per_chip), 1)
    system, system_chips = _system(chips, system, budgets, placed)
    op_costs = list(ops.values())
    return Plan(target.name, system, system_chips, tuple(placed), {k: tuple(v) for k, v in units.items()},
                next_core, chips, program.latency, program.window,
                total(o.per_step for o in op_costs), total(o.per_sample for o in op_costs),
                budgets=budget_table(budgets), packed_weight_bits=target.packed_weight_bits)


def _system(chips: int, system, budgets, placed) -> tuple:
    if system is None:
        fits = [(n, s) for s, n in budgets.systems.items() if n >= chips]
        if not fits:
            biggest = max(budgets.systems, key=budgets.systems.get)
            raise PlacementError(f"the plan needs {chips:,} chips; the largest system, {biggest}, has "
                                 f"{budgets.systems[biggest]:,}")
        n, s = min(fits)
        return s, n
    if system not in budgets.systems:
        raise PlacementError(f"unknown system {system!r} (choose from {', '.join(budgets.systems)})")
    if chips > budgets.systems[system]:
        largest = max((p for p in placed if p.cores), key=lambda p: p.cores)
        raise PlacementError(f"cannot place the network on {system}: it needs {chips:,} chips "
                             f"({sum(p.cores for p in placed):,} neurocores at {budgets.cores_planned_per_chip} "
                             f"per chip), {system} has {budgets.systems[system]:,} (largest process: {largest.name}, "
                             f"{largest.cores:,} cores)")
    return system, budgets.systems[system]


def budget_table(budgets) -> dict:
    return {"neurons_per_core": budgets.neurons_per_core, "memory_per_core_bytes": budgets.memory_per_core_bytes,
            "cores_per_chip": budgets.cores_per_chip, "cores_planned_per_chip": budgets.cores_planned_per_chip,
            "max_delay_steps": budgets.max_delay_steps, "message_bits": budgets.message_bits,
            "systems": dict(budgets.systems)}

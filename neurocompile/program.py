"""The compiled program: a typed graph of integer nodes (``neurocompile.ir.Int*``) and port edges.

This is what ``export`` writes, what the artifact loader verifies and what every back end runs:
each later stage dispatches on node type through its own table (``intervals.INTERVAL``,
``emulator.EMULATE``, ``targets.loihi2.lowering.LOWER``).  A Program is plain numpy (no torch),
so the Lava runtime loads it without the training stack.

Time: ``delays[name]`` is the step, counted from the first input step of a sample, at which the
node's output for logical time 0 appears on the target (one step per synapse hop, ``lag`` steps
per two-sided convolution; computed by ``passes.align_time_steps``).  The emulator works in
logical time; the Lava runner shifts traces back by these delays.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from .ir import IntInput, IntReadout


@dataclass(frozen=True)
class ProgramNode:
    name: str
    op: object
    layer: int | None = None


@dataclass(frozen=True)
class Program:
    """A compiled integer program: its nodes (integer ops) in a topological order, the edges between
    them, the model's description, the delays of its edges and the compiler's report; saved as a
    ``.loihi2`` artifact by ``save_program``."""

    nodes: tuple                # of ProgramNode, in a topological order
    edges: tuple                # of (source, destination, port)
    model: dict                 # kind, sizes, l_max, input format, ...
    delays: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)   # range analysis, operation summary, options

    def __post_init__(self):
        object.__setattr__(self, "_by_name", {n.name: n for n in self.nodes})
        ins = {n.name: {} for n in self.nodes}
        for src, dst, port in self.edges:
            ins[dst][port] = src
        object.__setattr__(self, "_inputs", ins)

    # the graph protocol shared with ir.Graph
    def topo(self) -> list:
        return [n.name for n in self.nodes]

    def op(self, name: str):
        return self._by_name[name].op

    def inputs(self, name: str) -> dict:
        return dict(self._inputs[name])

    def layer_of(self, name: str):
        return self._by_name[name].layer

    def consumers(self, name: str) -> list:
        return [dst for src, dst, _ in self.edges if src == name]

    def nodes_of(self, *types) -> Iterator[str]:
        return (n.name for n in self.nodes if isinstance(n.op, types))

    # model-level facts
    @property
    def input_node(self) -> str:
        (name,) = self.nodes_of(IntInput)
        return name

    @property
    def output_node(self) -> str:
        (name,) = self.nodes_of(IntReadout)
        return name

    @property
    def spike_nodes(self) -> list:
        """Nodes whose output is spikes (LIF populations, stochastic samplers), in order."""
        return [n.name for n in self.nodes if type(n.op).TRACE == "spikes"]

    def channel_counts(self) -> dict:
        """Output channels of every node (each node checks its arrays against its inputs' counts).
        Computed once: the program is frozen, and per-node callers (operation counts) made it quadratic."""
        if "_channel_counts" not in self.__dict__:
            counts, L = {}, self.seq_len
            for name in self.topo():
                counts[name] = self.op(name).channels({p: counts[s] for p, s in self._inputs[name].items()}, L)
            object.__setattr__(self, "_channel_counts", counts)
        return dict(self._channel_counts)

    @property
    def seq_len(self) -> int:
        return int(self.model["l_max"])

    @property
    def n_classes(self) -> int:
        return self.op(self.output_node).weight.shape[0]

    @property
    def input_channels(self) -> int:
        return self.op(self.input_node).n_channels

    @property
    def latency(self) -> int:
        """Steps from a sample's first input to its readout's first input on the target."""
        return int(self.delays.get(self.inputs(self.output_node)["main"], 0))

    @property
    def window(self) -> int:
        """Target steps per sample: the sequence plus the pipeline's latency."""
        return self.seq_len + self.latency


def raw_inputs(program: Program, levels) -> np.ndarray:
    """(n, L, C) or (n, L) raw integers -> (n, C, L) int64, checked against the input node."""
    raw = np.asarray(levels)
    if raw.ndim == 2:
        raw = raw[..., None]
    C, L = program.input_channels, program.seq_len
    if raw.ndim != 3 or raw.shape[1:] != (L, C):
        raise ValueError(f"inputs must be (n, {L}, {C}) raw integers, got {tuple(np.shape(levels))}")
    top = program.op(program.input_node).levels
    if raw.size and (not np.issubdtype(raw.dtype, np.integer) or raw.min() < 0 or raw.max() > top):
        raise ValueError(f"inputs must be integers in 0..{top}")
    return np.ascontiguousarray(raw.transpose(0, 2, 1), dtype=np.int64)

"""A tiny IR: one frozen dataclass per primitive, held in a networkx graph of named nodes.

Float nodes describe the trained model; integer nodes (``Int*``) describe what runs on Loihi 2.
Passes (``neurocompile.passes``) are plain functions ``Graph -> Graph`` that swap nodes for other
nodes; the graph is copied, never mutated in place.  Edges carry data; an edge attribute ``port``
names the input it feeds when a node has several (the residual add).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import networkx as nx
import numpy as np


def _node(cls):
    return dataclass(frozen=True, eq=False)(cls)


# ------------------------------------------------------------------ float (trained model) nodes
@_node
class Input:
    d_input: int
    length: int
    levels: int                # raw inputs are integers 0..levels, the model sees x / levels


@_node
class Affine:
    """y = weight @ x + bias over channels, at every time step (encoder, mixer, decoder)."""
    weight: np.ndarray
    bias: np.ndarray


@_node
class S4DKernelParams:
    """SSM parameters as trained; ``materialize_kernels`` turns them into an ``SSMConv``."""
    params: dict               # name -> float64 array, names as in the checkpoint (C, log_dt, ...)
    variant: str               # 's4d' (trainable_B=False) or 'diag_b' (trainable_B=True)
    bidirectional: bool
    D: np.ndarray              # (H,)


@_node
class SSMConv:
    """Causal depthwise convolution y[h,t] = sum_l kernel[h,l] x[h,t-l]; D already in tap 0."""
    kernel: np.ndarray         # (H, L) float64


@_node
class ChannelScale:
    """y[h] = x[h] * scale[h] (the division by the learnable threshold exp(ln_vth))."""
    scale: np.ndarray


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
class GLU:
    """a * sigmoid(b) with a = first half of the channels."""


@_node
class ResidualAdd:
    """x_next = x (port 'skip') + y (port 'main')."""


@_node
class MeanOverTime:
    pass


# ------------------------------------------------------------------ integer (Loihi 2) nodes
@_node
class IntEncoder:
    weight: np.ndarray         # (H, d_in) stream units per input level
    bias: np.ndarray
    input_bits: int


@_node
class IntSSMConv:
    kernel: np.ndarray         # (H, L) int taps
    shift: np.ndarray          # (H,) shift_round to the LIF input scale
    stream_bits: int           # bit planes of the stream it reads
    split: int                 # planes below it accumulate apart (two 24-bit accumulators)


@_node
class IntLIF:
    dv: int
    vth: int


@_node
class IntDense:
    weight: np.ndarray         # (2H, H) even ints, Lava Dense weights


@_node
class IntGLUResidual:
    bias: np.ndarray           # (2H,)
    value_shift: np.ndarray
    gate_shift: np.ndarray
    out_shift: np.ndarray


@_node
class IntReadout:
    weight: np.ndarray         # (d_out, H)
    bias: np.ndarray           # (d_out,) already times L
    logit_frac_bits: int       # integer logits ~ float logits * L * 2**logit_frac_bits
    pre_shift: np.ndarray      # (H,) the time sum adds shift_round(x, pre_shift)


@dataclass
class Graph:
    """Named nodes in data-flow order plus model-level facts every pass may need."""
    g: nx.DiGraph
    meta: dict = field(default_factory=dict)

    def copy(self) -> "Graph":
        return Graph(self.g.copy(), dict(self.meta))

    def op(self, name: str):
        return self.g.nodes[name]["op"]

    def set_op(self, name: str, op) -> None:
        self.g.nodes[name]["op"] = op

    def nodes_of(self, *types) -> Iterator[str]:
        for name in nx.topological_sort(self.g):
            if isinstance(self.op(name), types):
                yield name

    def layer_of(self, name: str):
        return self.g.nodes[name].get("layer")

    def successors(self, name: str) -> list:
        return list(self.g.successors(name))

    def predecessors(self, name: str) -> list:
        return list(self.g.predecessors(name))

    def bypass(self, name: str) -> None:
        """Remove a single-input node, wiring its input straight to its outputs."""
        (src,) = self.predecessors(name)
        for dst in self.successors(name):
            self.g.add_edge(src, dst, **self.g.edges[name, dst])
        self.g.remove_node(name)

    def summary(self) -> str:
        lines = []
        for name in nx.topological_sort(self.g):
            op = self.op(name)
            lines.append(f"{name:<18} {type(op).__name__:<16} <- {', '.join(self.predecessors(name)) or '-'}")
        return "\n".join(lines)


def new_graph(meta: dict) -> Graph:
    return Graph(nx.DiGraph(), meta)


def add(graph: Graph, name: str, op, inputs=(), layer=None, ports=None) -> str:
    graph.g.add_node(name, op=op, layer=layer)
    for i, src in enumerate(inputs):
        graph.g.add_edge(src, name, port=(ports[i] if ports else "main"))
    return name

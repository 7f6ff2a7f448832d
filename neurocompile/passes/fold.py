"""Fold the per-channel threshold scale 1/exp(ln_vth) into the SSM kernel before it.

The LIF then has threshold 1 in every channel, so one scalar threshold serves the whole
population (Lava's LIF has a single vth per process).
"""
from ..ir import ChannelScale, Graph, SSMConv


def fold_thresholds(graph: Graph) -> Graph:
    graph = graph.copy()
    for name in list(graph.nodes_of(ChannelScale)):
        (src,) = graph.predecessors(name)
        conv = graph.op(src)
        assert isinstance(conv, SSMConv), f"{name} must follow an SSM convolution"
        graph.set_op(src, SSMConv(conv.kernel * graph.op(name).scale[:, None]))
        graph.bypass(name)
    return graph

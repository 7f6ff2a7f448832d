"""Time alignment: when does each node's output for logical step 0 appear on the target?

A node's output lags its latest input by the target's latency for it (one step per synapse hop on
Lava, ``lag`` steps for a two-sided convolution streamed causally, none otherwise).  The lowering
sizes the per-sample window and holds earlier inputs of multi-input nodes from these delays; the
runner shifts traces back to logical time with them.
"""
from ..ir import Graph


def node_delays(graph, target) -> dict:
    delay = {}
    for name in graph.topo():
        arrival = max((delay[src] for src in graph.inputs(name).values()), default=0)
        delay[name] = arrival + target.latency(graph.op(name))
    return delay


def align_time_steps(graph: Graph, target=None) -> Graph:
    from ..target import get_target
    graph = graph.copy()
    graph.meta["delays"] = node_delays(graph, target or get_target())
    return graph

"""Time alignment: on Lava every Dense synapse delays by one step (it sends at t what it got at
t-1); LIF and our own processes add none.  Record, per node, how many steps it lags the input, so
the lowering can size the per-sample window and the runner can shift traces back to logical time.
"""
import networkx as nx

from ..ir import Graph, IntDense


def align_time_steps(graph: Graph) -> Graph:
    graph = graph.copy()
    delay = {}
    for name in nx.topological_sort(graph.g):
        ins = graph.predecessors(name)
        lag = max((delay[s] + isinstance(graph.op(s), IntDense) for s in ins), default=0)
        delay[name] = lag
    graph.meta["delays"] = delay
    graph.meta["window_extra_steps"] = max(delay.values())
    return graph

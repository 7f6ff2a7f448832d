"""The SDN only imitates LIF for parallel training: deployment runs the exact iterative LIF."""
from ..ir import LIF, Graph, SDNNeuron


def replace_sdn_with_lif(graph: Graph) -> Graph:
    graph = graph.copy()
    for name in list(graph.nodes_of(SDNNeuron)):
        graph.set_op(name, LIF(tau=graph.op(name).tau, threshold=1.0))
    return graph

"""Refuse, with a reason, what the Loihi 2 lowering cannot run (yet)."""
from ..errors import UnsupportedModelError
from ..ir import Graph, LayerNorm


def check_lowerable(graph: Graph) -> Graph:
    where = graph.meta.get("source") or "model"
    for name in graph.nodes_of(LayerNorm):
        raise UnsupportedModelError(
            f"{where}: {name} is a {graph.op(name).position} LayerNorm: it needs each step's mean and variance over all "
            "channels (a division and square root per step), which is neither accumulate-only nor foldable "
            "into the SSM; only BatchNorm prenorm (eval statistics, folded) and postnorm (unused) are lowered")
    return graph

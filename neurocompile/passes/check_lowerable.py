"""Refuse, with a reason, what the Loihi 2 lowering cannot run (yet)."""
from ..errors import UnsupportedModelError
from ..ir import Graph, S4DKernelParams


def check_lowerable(graph: Graph) -> Graph:
    cfg = graph.meta["config"]
    where = graph.meta.get("source") or "model"
    if cfg.get("prenorm", False):
        raise UnsupportedModelError(f"{where}: prenorm={True} applies a {cfg.get('norm', 'layer')} norm before every SSM; "
                                    "normalisation is not lowered to integer Loihi 2 arithmetic yet")
    if graph.meta.get("embedding"):
        raise UnsupportedModelError(f"{where}: an Embedding encoder is not lowered yet (Linear encoders are)")
    for name in graph.nodes_of(S4DKernelParams):
        if graph.op(name).bidirectional:
            raise UnsupportedModelError(f"{where}: {name} is bidirectional (two-sided kernel): it needs the whole "
                                        "sequence and cannot stream on Loihi 2; only causal models are lowered")
    return graph

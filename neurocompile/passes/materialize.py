"""Turn each SSM's trained parameters into its length-L causal kernel (float64), D in tap 0."""
import numpy as np

from ..ir import Graph, SSMConv, S4DKernelParams


def materialize_kernels(graph: Graph) -> Graph:
    import torch

    from ..models.ssm_kernel import materialize_kernel

    graph = graph.copy()
    L = int(graph.meta["config"]["l_max"])
    for name in list(graph.nodes_of(S4DKernelParams)):
        op = graph.op(name)
        params = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in op.params.items()}
        k = materialize_kernel(params, op.variant, L, dtype=torch.float64).numpy()[0].copy()   # causal half
        k[:, 0] += op.D                       # y = K*u + D u == (K + D delta) * u
        graph.set_op(name, SSMConv(k))
    return graph

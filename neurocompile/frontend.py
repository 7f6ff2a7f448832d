"""Checkpoint -> float IR graph, following the official SpikingSSM forward exactly.

With ``prenorm=False`` the official code computes the post-norm and discards it, so the norms are
never applied: the graph has no norm nodes (their weights stay unused in the checkpoint).
"""
from __future__ import annotations

import numpy as np

from .ir import (GLU, Affine, ChannelScale, Graph, Input, MeanOverTime, ResidualAdd, S4DKernelParams,
                 SDNNeuron, add, new_graph)

_BACKBONE = "backbone.s4_layers.{i}."


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy() if hasattr(t, "detach") else np.asarray(t, dtype=np.float64)


def import_spikingssm(config: dict, state_dict: dict, source: str = "") -> Graph:
    H = int(config["d_model"])
    graph = new_graph({"config": dict(config), "source": source})
    x = add(graph, "input", Input(int(config["d_input"]), int(config["l_max"]), int(config["input_levels"])))
    if config.get("encoder", "linear") == "linear":
        x = add(graph, "encoder", Affine(_np(state_dict["encoder.weight"]), _np(state_dict["encoder.bias"])), [x])
    else:
        x = add(graph, "encoder", Affine(_np(state_dict["encoder.weight"]).T, np.zeros(H)), [x])
        graph.meta["embedding"] = True
    for i in range(int(config["n_layers"])):
        p = _BACKBONE.format(i=i)
        kernel = {k[len(p + "kernel."):]: _np(v) for k, v in state_dict.items() if k.startswith(p + "kernel.")}
        ssm = add(graph, f"layer{i}.ssm", S4DKernelParams(kernel, config.get("kernel", "s4d"),
                                                          bool(config.get("bidirectional", False)),
                                                          _np(state_dict[p + "D"]).reshape(-1)), [x], layer=i)
        y = ssm
        if config.get("learnable_vth", True):
            ln_vth = _np(state_dict[p + "ln_vth"]).reshape(-1)
            y = add(graph, f"layer{i}.vth", ChannelScale(np.broadcast_to(np.exp(-ln_vth), (H,)).copy()), [y], layer=i)
        s = add(graph, f"layer{i}.neuron", SDNNeuron(float(config.get("tau", 0.125))), [y], layer=i)
        w = _np(state_dict[p + "output_linear.0.weight"])[..., 0]
        m = add(graph, f"layer{i}.mixer", Affine(w, _np(state_dict[p + "output_linear.0.bias"])), [s], layer=i)
        gl = add(graph, f"layer{i}.glu", GLU(), [m], layer=i)
        x = add(graph, f"layer{i}.residual", ResidualAdd(), [x, gl], layer=i, ports=["skip", "main"])
    pool = add(graph, "pool", MeanOverTime(), [x])
    add(graph, "decoder", Affine(_np(state_dict["decoder.weight"]), _np(state_dict["decoder.bias"])), [pool])
    return graph

"""Checkpoint -> float IR graph, one frontend per model kind (``FRONTENDS``).

Each frontend follows its model's official forward exactly and names the graph's nodes the way
the float model's ``record`` names its traces, so float and integer runs can be compared node by
node.  SpikingSSM: with ``prenorm=False`` the official code computes the post-norm and discards
it, so the graph has no norm nodes (their weights stay unused in the checkpoint).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import UnsupportedModelError
from .input_format import InputFormat
from .ir import (ChannelAffine, Dense, Embedding, GLUResidual, Graph, Input, LayerNorm, LinearEncoder, Readout,
                 S4DKernelParams, SDNNeuron, add, new_graph)

_BACKBONE = "backbone.s4_layers.{i}."
BATCHNORM_EPS = 1e-5                  # torch.nn.BatchNorm1d's default, as the official models build it


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy() if hasattr(t, "detach") else np.asarray(t, dtype=np.float64)


def batchnorm_affine(sd: dict, prefix: str):
    """Eval-mode BatchNorm as y = scale * x + shift per channel."""
    scale = _np(sd[prefix + "weight"]) / np.sqrt(_np(sd[prefix + "running_var"]) + BATCHNORM_EPS)
    return scale, _np(sd[prefix + "bias"]) - _np(sd[prefix + "running_mean"]) * scale


def default_input_format(config: dict) -> InputFormat:
    """Tokens for an Embedding encoder; otherwise the checkpoint's own levels over [0, 1]."""
    if config.get("encoder") == "embedding":
        return InputFormat(kind="tokens", vocab=int(config["n_tokens"]))
    return InputFormat(levels=int(config.get("input_levels", 255)))


def import_spikingssm(config: dict, state_dict: dict, fmt: InputFormat, source: str = "") -> Graph:
    H, L = int(config["d_model"]), int(config["l_max"])
    graph = new_graph({"config": dict(config), "source": source, "kind": "spikingssm", "input_format": fmt.to_dict()})
    if config.get("encoder", "linear") == "embedding":
        x = add(graph, "input", Input(1, L, fmt.to_dict()))
        x = add(graph, "encoder", Embedding(_np(state_dict["encoder.weight"])), [x])
    else:
        x = add(graph, "input", Input(int(config["d_input"]), L, fmt.to_dict()))
        x = add(graph, "encoder", LinearEncoder(_np(state_dict["encoder.weight"]), _np(state_dict["encoder.bias"])), [x])
    for i in range(int(config["n_layers"])):
        p = _BACKBONE.format(i=i)
        z = x
        if config.get("prenorm", False):
            norm = f"backbone.norms.{i}."
            if config.get("norm", "layer") == "batch":
                z = add(graph, f"layer{i}.norm", ChannelAffine(*batchnorm_affine(state_dict, norm)), [x], layer=i)
            else:
                z = add(graph, f"layer{i}.norm", LayerNorm(_np(state_dict[norm + "weight"]),
                                                           _np(state_dict[norm + "bias"])), [x], layer=i)
        kernel = {k[len(p + "kernel."):]: _np(v) for k, v in state_dict.items() if k.startswith(p + "kernel.")}
        y = add(graph, f"layer{i}.ssm", S4DKernelParams(kernel, config.get("kernel", "s4d"),
                                                        bool(config.get("bidirectional", False)),
                                                        _np(state_dict[p + "D"]).reshape(-1)), [z], layer=i)
        if config.get("learnable_vth", True):
            with np.errstate(over="ignore"):
                inv = np.broadcast_to(np.exp(-_np(state_dict[p + "ln_vth"]).reshape(-1)), (H,)).copy()
            if not np.isfinite(inv).all() or not inv.all():
                raise UnsupportedModelError(f"{source}: {p}ln_vth: exp(ln_vth) over- or underflows float64 "
                                            "(the threshold cannot be represented)")
            y = add(graph, f"layer{i}.vth", ChannelAffine(inv, np.zeros(H)), [y], layer=i)
        s = add(graph, f"layer{i}.neuron", SDNNeuron(float(config.get("tau", 0.125))), [y], layer=i)
        m = add(graph, f"layer{i}.mixer", Dense(_np(state_dict[p + "output_linear.0.weight"])[..., 0]), [s], layer=i)
        x = add(graph, f"layer{i}.residual", GLUResidual(_np(state_dict[p + "output_linear.0.bias"])), [x, m],
                layer=i, ports=["skip", "main"])
    add(graph, "decoder", Readout(_np(state_dict["decoder.weight"]), _np(state_dict["decoder.bias"])), [x])
    return graph


def spikingssm_float_run(model, x, device, neurons=("lif", "sdn")):
    """The float model on model values x: (logits, {neuron: {spike node name: (B, H, L) bool}})."""
    import torch

    xt = torch.as_tensor(x, device=device)
    if not (xt.dtype == torch.int64):
        xt = xt.float()
    out = {}
    with torch.no_grad():
        for neuron in neurons:
            logits, rec = model(xt, neuron=neuron, record=True)
            out[neuron] = {f"layer{i}.neuron": s.bool().cpu().numpy() for i, s in enumerate(rec["spikes"])}
            if neuron == neurons[0]:
                first = logits.double().cpu().numpy()
    return first, out


@dataclass(frozen=True)
class Frontend:
    import_graph: Callable          # (config dict, state_dict, InputFormat, source) -> float Graph
    default_format: Callable        # config dict -> InputFormat
    float_run: Callable             # (model, model values, device) -> (logits, {neuron: {node: spikes}})


FRONTENDS = {
    "spikingssm": Frontend(import_spikingssm, default_input_format, spikingssm_float_run),
}


def frontend_for(kind: str) -> Frontend:
    if kind not in FRONTENDS:
        raise UnsupportedModelError(f"model kind {kind!r} has no compiler frontend (available: {', '.join(FRONTENDS)})")
    return FRONTENDS[kind]

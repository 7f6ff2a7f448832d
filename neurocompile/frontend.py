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
from .ir import (GELU, ChannelAffine, Concat, Dense, DPLRKernelParams, Embedding, GELUResidual, GLUResidual, Graph,
                 Input, LayerNorm, LinearEncoder, Readout, S4DKernelParams, Sampler, SDNNeuron, add, new_graph)

_BACKBONE = "backbone.s4_layers.{i}."
BATCHNORM_EPS = 1e-5                  # torch.nn.BatchNorm1d's default, as the official models build it


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy() if hasattr(t, "detach") else np.asarray(t, dtype=np.float64)


def batchnorm_affine(sd: dict, prefix: str):
    """Eval-mode BatchNorm as y = scale * x + shift per channel."""
    scale = _np(sd[prefix + "weight"]) / np.sqrt(_np(sd[prefix + "running_var"]) + BATCHNORM_EPS)
    if not np.isfinite(scale).all():
        raise UnsupportedModelError(f"{prefix}running_var: the BatchNorm scale is not finite")
    return scale, _np(sd[prefix + "bias"]) - _np(sd[prefix + "running_mean"]) * scale


def default_input_format(config: dict) -> InputFormat:
    """Tokens for an Embedding encoder; otherwise the checkpoint's own levels over [0, 1]."""
    if config.get("encoder") == "embedding":
        return InputFormat(kind="tokens", vocab=int(config["n_tokens"]))
    return InputFormat(levels=int(config.get("input_levels", 255)))


def threshold_gain(ln_vth: np.ndarray, H: int) -> np.ndarray:
    """The LIF threshold folded into its input: 1 / exp(ln_vth) per channel (a shared threshold
    broadcast to the H channels); inf or 0 where exp over- or underflows float64."""
    with np.errstate(over="ignore"):
        return np.broadcast_to(np.exp(-np.asarray(ln_vth).reshape(-1)), (H,)).copy()


def import_spikingssm(config: dict, state_dict: dict, fmt: InputFormat, source: str = "") -> Graph:
    H, L = int(config["d_model"]), int(config["l_max"])
    graph = new_graph({"config": dict(config), "source": source, "kind": "spikingssm", "input_format": fmt.to_dict()})
    x = _encoder(graph, config, state_dict, fmt, L)
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
            inv = threshold_gain(_np(state_dict[p + "ln_vth"]), H)
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


def import_pspikessm(config: dict, state_dict: dict, fmt: InputFormat, source: str = "") -> Graph:
    """P-SpikeSSM as its official code computes it (models/pspikessm.py documents every op).  The
    uniforms U1 / U2 of layer i are the PRNG streams 2i / 2i + 1, so samplers that share a uniform
    tensor in the official code (U1: the input, forward and reverse output spikes of a bidirectional
    block) share a stream."""
    H, L = int(config["d_model"]), int(config["l_max"])
    sd = {k: _np(v) for k, v in state_dict.items()}
    graph = new_graph({"config": dict(config), "source": source, "kind": "pspikessm", "input_format": fmt.to_dict()})
    x = _encoder(graph, config, sd, fmt, L)
    norm, prenorm = config.get("norm", "batch"), bool(config.get("prenorm", False))

    def kernel(prefix):
        k = prefix + "layer.kernel."
        return DPLRKernelParams({n[len(k):]: v for n, v in sd.items() if n.startswith(k)},
                                bool(config.get("ssm_bidirectional", True)), sd[prefix + "layer.D"].reshape(-1))

    for i in range(int(config["n_layers"])):
        p = f"backbone.layers.{i}."
        u1, u2 = pspikessm_uniform_source(i, 1), pspikessm_uniform_source(i, 2)
        scale, shift = sd[p + "inp_a"], sd[p + "inp_b"]
        if prenorm and norm == "batch":
            bn_scale, bn_shift = batchnorm_affine(sd, p + "norm.norm.")
            scale, shift = bn_scale * scale, bn_scale * shift + bn_shift
        src = x
        if prenorm and norm == "layer":
            src = add(graph, f"layer{i}.norm", LayerNorm(sd[p + "norm.norm.weight"], sd[p + "norm.norm.bias"]), [x], layer=i)
        s_in = add(graph, f"layer{i}.s_in", Sampler(scale, shift, u1), [src], layer=i)
        y = add(graph, f"layer{i}.ssm", kernel(p + "layer."), [s_in], layer=i)
        y = add(graph, f"layer{i}.gelu", GELU(np.zeros(H)), [y], layer=i)
        if config.get("bidirectional", False):
            s_ssm = add(graph, f"layer{i}.s_ssm", Sampler(sd[p + "out_a"], sd[p + "out_b"], u1), [y], layer=i)
            s_rev = add(graph, f"layer{i}.s_in_rev", Sampler(sd[p + "inp2_a"], sd[p + "inp2_b"], u2), [x], layer=i)
            r = add(graph, f"layer{i}.ssm_rev", kernel(p + "reverse_layer."), [s_rev], layer=i)
            r = add(graph, f"layer{i}.gelu_rev", GELU(np.zeros(H)), [r], layer=i)
            r = add(graph, f"layer{i}.s_ssm_rev", Sampler(np.ones(H), np.zeros(H), u1), [r], layer=i)
            spikes = add(graph, f"layer{i}.concat", Concat(), [s_ssm, r], layer=i, ports=["main", "rest"])
            linear = p + "bidirectional_linear."
        else:
            spikes = add(graph, f"layer{i}.s_ssm", Sampler(sd[p + "out_a"], sd[p + "out_b"], u2), [y], layer=i)
            linear = p + "bidirectional_linear1."
        m = add(graph, f"layer{i}.mixer", Dense(sd[linear + "weight"]), [spikes], layer=i)
        if config.get("residual", True):
            x = add(graph, f"layer{i}.residual", GELUResidual(sd[linear + "bias"]), [x, m], layer=i,
                    ports=["skip", "main"])
        else:
            x = add(graph, f"layer{i}.residual", GELU(sd[linear + "bias"], to_stream=True), [m], layer=i)
        if not prenorm and norm == "batch":
            x = add(graph, f"layer{i}.norm", ChannelAffine(*batchnorm_affine(sd, p + "norm.norm.")), [x], layer=i)
        elif not prenorm and norm == "layer":
            x = add(graph, f"layer{i}.norm", LayerNorm(sd[p + "norm.norm.weight"], sd[p + "norm.norm.bias"],
                                                       "postnorm"), [x], layer=i)
    if prenorm and norm == "batch":
        x = add(graph, "norm", ChannelAffine(*batchnorm_affine(sd, "backbone.norm.norm.")), [x])
    elif prenorm and norm == "layer":
        x = add(graph, "norm", LayerNorm(sd["backbone.norm.norm.weight"], sd["backbone.norm.norm.bias"], "final"), [x])
    add(graph, "decoder", Readout(sd["decoder.weight"], sd["decoder.bias"]), [x])
    return graph


def _encoder(graph: Graph, config: dict, sd: dict, fmt: InputFormat, L: int) -> str:
    if config.get("encoder", "linear") == "embedding":
        x = add(graph, "input", Input(1, L, fmt.to_dict()))
        return add(graph, "encoder", Embedding(_np(sd["encoder.weight"])), [x])
    x = add(graph, "input", Input(int(config["d_input"]), L, fmt.to_dict()))
    return add(graph, "encoder", LinearEncoder(_np(sd["encoder.weight"]), _np(sd["encoder.bias"])), [x])


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


def pspikessm_float_run(model, x, device, uniforms=None):
    """One stochastic pass: (logits, {spike node: spikes (B, H, L) bool}, {spike node: firing
    probability clamp(p, 0, 1)}).  ``uniforms(layer, which, shape)`` replaces torch's RNG."""
    import torch

    xt = torch.as_tensor(x, device=device)
    xt = xt if xt.dtype == torch.int64 else xt.float()
    with torch.no_grad():
        logits, rec = model(xt, record=True, uniforms=uniforms)
    spikes = {k: v.bool().cpu().numpy() for k, v in rec.items() if ".s_" in k}
    probs = {k.replace(".p_", ".s_"): v.clamp(0, 1).double().cpu().numpy() for k, v in rec.items() if ".p_" in k}
    return logits.double().cpu().numpy(), spikes, probs


def pspikessm_uniform_source(layer: int, which: int) -> int:
    """The PRNG stream of the official uniform tensor U1 (which=1) or U2 of a layer."""
    return 2 * layer + which - 1


@dataclass(frozen=True)
class Frontend:
    import_graph: Callable          # (config dict, state_dict, InputFormat, source) -> float Graph
    default_format: Callable        # config dict -> InputFormat
    float_run: Callable             # model on model values: see spikingssm_float_run / pspikessm_float_run
    stochastic: bool = False        # spikes are sampled: parity is a Monte-Carlo comparison


FRONTENDS = {
    "spikingssm": Frontend(import_spikingssm, default_input_format, spikingssm_float_run),
    "pspikessm": Frontend(import_pspikessm, default_input_format, pspikessm_float_run, stochastic=True),
}


def frontend_for(kind: str) -> Frontend:
    if kind not in FRONTENDS:
        raise UnsupportedModelError(f"model kind {kind!r} has no compiler frontend (available: {', '.join(FRONTENDS)})")
    return FRONTENDS[kind]

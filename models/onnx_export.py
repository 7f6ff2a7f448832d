"""ONNX export of the float SpikingSSM with the SDN neuron (an interchange artifact, not what runs on Loihi).

The ONNX graph is built directly with ``onnx.helper`` (no tracing, so the file is deterministic):
the SSM kernels are materialised (float64 -> float32) and applied as depthwise 1-D convolutions.
Input ``x`` (B, L, d_input) float32 = levels / input_levels; output ``logits`` (B, d_output).
Linear encoder only; LIF-free (spikes come from the SDN: (mem + y - 1) >= 0).
"""
from __future__ import annotations

import numpy as np
import torch

from .ssm_kernel import materialize_kernel

OPSET = 17


def _build_graph(model, L: int):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cfg = model.config
    if cfg.encoder != "linear":
        raise ValueError("ONNX export supports the linear encoder only")
    if cfg.prenorm:
        raise ValueError("ONNX export does not support prenorm=True")
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    H = cfg.d_model
    inits, nodes = [], []

    def const(name, arr, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(np.asarray(arr, dtype=dtype)), name))
        return name

    def node(op, ins, out, **attrs):
        nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out

    # encoder: (B,L,d_in) @ W^T + b -> (B,L,H) -> (B,H,L)
    h = node("MatMul", ["x", const("encoder.WT", sd["encoder.weight"].numpy().T)], "enc_mm")
    h = node("Add", [h, const("encoder.b", sd["encoder.bias"].numpy())], "enc")
    h = node("Transpose", [h], "stream_in", perm=[0, 2, 1])
    shape_bh1l = const("shape_bh1l", [-1, 1, L], np.int64)
    one = const("one", 1.0)
    const("zero_i", [0], np.int64), const("len_L", [L], np.int64), const("axis2", [2], np.int64)
    for i, layer in enumerate(model.backbone.s4_layers):
        p = f"backbone.s4_layers.{i}."
        params = {k[len(p + "kernel."):]: v.double() for k, v in sd.items() if k.startswith(p + "kernel.")}
        K = materialize_kernel(params, cfg.kernel, L, dtype=torch.float64).numpy()    # (ch,H,L)
        D = sd[p + "D"].double().numpy().reshape(H)
        if K.shape[0] == 2:   # two-sided: causal taps k0 (incl. s = t) and anti-causal k1 shifted by one
            w = np.zeros((H, 2 * L - 1))
            w[:, :L] = K[0][:, ::-1]                      # taps for s = t-L+1 .. t
            w[:, L:] = K[1][:, :L - 1]                    # taps for s = t+1 .. t+L-1
            w[:, L - 1] += D
            pads = [L - 1, L - 1]
        else:
            w = K[0][:, ::-1].copy()
            w[:, L - 1] += D
            pads = [L - 1, 0]
        scale = np.ones(H)
        if cfg.learnable_vth:
            scale = np.broadcast_to(np.exp(-sd[p + "ln_vth"].double().numpy().reshape(-1)), (H,))
        w = w * scale[:, None]
        y = node("Conv", [h, const(p + "ssm_w", w[:, None, :])], f"l{i}.y", group=H, pads=pads)
        # SDN on every channel: (B,H,L) -> (B*H,1,L)
        sdn = p + "neuron.model."
        z = node("Reshape", [y, shape_bh1l], f"l{i}.y_flat")
        c1 = node("Conv", [z, const(sdn + "conv1.weight", sd[sdn + "conv1.weight"].numpy()),
                           const(sdn + "conv1.bias", sd[sdn + "conv1.bias"].numpy())], f"l{i}.c1", pads=[8, 0])
        c1 = node("Slice", [c1, "zero_i", "len_L", "axis2"], f"l{i}.c1t")     # causal: keep the first L
        h1 = node("Relu", [c1], f"l{i}.h1")
        c2 = node("Conv", [h1, const(sdn + "conv2.weight", sd[sdn + "conv2.weight"].numpy()),
                           const(sdn + "conv2.bias", sd[sdn + "conv2.bias"].numpy())], f"l{i}.c2")
        h2 = node("Relu", [node("Add", [c2, h1], f"l{i}.c2r")], f"l{i}.h2")
        mem = node("Conv", [h2, const(sdn + "conv3.weight", sd[sdn + "conv3.weight"].numpy()),
                            const(sdn + "conv3.bias", sd[sdn + "conv3.bias"].numpy())], f"l{i}.mem_flat")
        mem = node("Reshape", [mem, node("Shape", [y], f"l{i}.yshape")], f"l{i}.mem")
        v = node("Sub", [node("Add", [mem, y], f"l{i}.v1"), one], f"l{i}.v")
        s = node("Cast", [node("GreaterOrEqual", [v, const("zero", 0.0) if i == 0 else "zero"], f"l{i}.ge")],
                 f"l{i}.spikes", to=TensorProto.FLOAT)
        m = node("Conv", [s, const(p + "mix_w", sd[p + "output_linear.0.weight"].numpy()),
                          const(p + "mix_b", sd[p + "output_linear.0.bias"].numpy())], f"l{i}.mix")
        a = node("Slice", [m, const(f"l{i}.s0", [0], np.int64), const(f"l{i}.s1", [H], np.int64),
                           const(f"l{i}.ax", [1], np.int64)], f"l{i}.a")
        b = node("Slice", [m, const(f"l{i}.s2", [H], np.int64), const(f"l{i}.s3", [2 * H], np.int64),
                           f"l{i}.ax"], f"l{i}.b")
        g = node("Mul", [a, node("Sigmoid", [b], f"l{i}.sig")], f"l{i}.glu")
        h = node("Add", [h, g], f"l{i}.stream")
    pooled = node("ReduceMean", [h], "pooled", axes=[2], keepdims=0)
    logits = node("Gemm", [pooled, const("decoder.weight", sd["decoder.weight"].numpy()),
                           const("decoder.bias", sd["decoder.bias"].numpy())], "logits", transB=1)
    graph = helper.make_graph(
        nodes, "spikingssm_sdn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", L, cfg.d_input])],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["batch", cfg.d_output])], inits)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                   producer_name="neurocompile", producer_version="0.1.0")
    onnx.checker.check_model(onnx_model)
    return onnx_model


def export_onnx(model, path: str, L: int | None = None) -> str:
    """Write the float SDN model as ONNX (opset 17) to ``path``; returns the path."""
    import onnx

    L = int(L or model.config.l_max)
    onnx.save_model(_build_graph(model.eval(), L), path)
    return path

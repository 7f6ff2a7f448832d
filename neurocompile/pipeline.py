"""The compiler, top to bottom: checkpoint -> float graph -> passes -> integer Program."""
from __future__ import annotations

import hashlib
import os

import numpy as np

from . import passes
from .frontend import import_spikingssm
from .ir import Graph, IntDense, IntEncoder, IntGLUResidual, IntLIF, IntReadout, IntSSMConv
from .options import CompileOptions
from .program import EncoderParams, LayerParams, Program, ReadoutParams


def compile_graph(graph: Graph, options: CompileOptions = CompileOptions()) -> Graph:
    graph = passes.check_lowerable(graph)       # causal, Linear encoder, no prenorm
    graph = passes.replace_sdn_with_lif(graph)  # the SDN was a training device: deploy exact LIF
    graph = passes.materialize_kernels(graph)   # S4D parameters -> length-L kernel, D in tap 0
    graph = passes.fold_thresholds(graph)       # 1/exp(ln_vth) into the kernel: threshold 1 everywhere
    graph = passes.quantize(graph, options)     # integers; scales chosen so every register fits
    graph = passes.analyze_ranges(graph)        # the proof, recorded in the report
    graph = passes.align_time_steps(graph)      # one step per Dense hop
    return graph


def file_sha256(path: str) -> str:
    """Checksum recorded in the artifact, so `validate` can tell which checkpoint it came from."""
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def compile_checkpoint(path: str, options: CompileOptions = CompileOptions(), progress=None) -> Program:
    from .models.checkpoint import load_checkpoint

    kind, config, state_dict, meta = load_checkpoint(path)
    if kind != "spikingssm":
        from .errors import UnsupportedModelError
        raise UnsupportedModelError(f"{path}: model kind {kind!r} cannot be compiled to Loihi 2 yet "
                                    "(only 'spikingssm')")
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    graph = import_spikingssm(cfg, state_dict, source=os.path.basename(path))
    graph = compile_graph(graph, options)
    return to_program(graph, {"kind": kind, "checkpoint": os.path.basename(path), "checkpoint_sha256": file_sha256(path),
                              "train_metrics": meta.get("metrics", {}) if isinstance(meta, dict) else {}})


def to_program(graph: Graph, source: dict) -> Program:
    cfg = graph.meta["config"]
    node = graph.g.nodes
    enc, enc_f = node["encoder"]["op"], node["encoder"]["float_op"]
    levels = int(cfg["input_levels"])
    assert isinstance(enc, IntEncoder)
    encoder = EncoderParams(enc.weight, enc.bias, enc.input_bits, enc_f.weight / levels, enc_f.bias)
    layers = []
    for i in range(int(cfg["n_layers"])):
        conv, lif = node[f"layer{i}.ssm"], node[f"layer{i}.neuron"]["op"]
        dense, glu = node[f"layer{i}.mixer"]["op"], node[f"layer{i}.residual"]
        assert isinstance(conv["op"], IntSSMConv) and isinstance(lif, IntLIF) and isinstance(dense, IntDense)
        assert isinstance(glu["op"], IntGLUResidual)
        mixer_f = glu["float_op"]
        layers.append(LayerParams(
            kernel=conv["op"].kernel, kernel_shift=conv["op"].shift, stream_bits=int(conv["op"].stream_bits),
            dv=int(lif.dv), vth=int(lif.vth), mix_weight=dense.weight, mix_bias=glu["op"].bias,
            value_shift=glu["op"].value_shift, gate_shift=glu["op"].gate_shift, out_shift=glu["op"].out_shift,
            kernel_float=conv["float_op"].kernel, mix_weight_float=mixer_f.weight, mix_bias_float=mixer_f.bias,
            tau=float(cfg.get("tau", 0.125)), acc_split=int(conv["op"].split)))
    ro, ro_f = node["decoder"]["op"], node["decoder"]["float_op"]
    assert isinstance(ro, IntReadout)
    readout = ReadoutParams(ro.weight, ro.bias, int(ro.logit_frac_bits), ro.pre_shift, ro_f.weight, ro_f.bias)
    opts = graph.meta["options"]
    model = {"kind": "spikingssm", **{k: cfg[k] for k in ("d_input", "d_output", "d_model", "n_layers", "d_state",
                                                             "l_max", "input_levels", "tau")}}
    report = {"source": source, "options": opts, "ranges": graph.meta["ranges"],
              "delays": graph.meta["delays"], "operations": operation_summary(layers, encoder, cfg)}
    return Program(model=model, stream_frac_bits=np.asarray(graph.meta["stream_frac_bits"], dtype=np.int64), encoder=encoder,
                   layers=tuple(layers), readout=readout, sigmoid_lut=graph.meta["sigmoid_lut"],
                   sigmoid_in_frac_bits=opts["sigmoid_in_frac_bits"],
                   sigmoid_out_frac_bits=opts["sigmoid_out_frac_bits"], report=_plain(report))


def operation_summary(layers, encoder, cfg) -> list:
    """What each stage does per time step, and whether it is accumulate-only (no multiplier)."""
    H, L = int(cfg["d_model"]), int(cfg["l_max"])
    rows = [{"stage": "encoder", "ac_only": True,
             "how": f"bit-serial shift-add over {encoder.input_bits} input bit planes", "adds_per_step": encoder.input_bits * H}]
    for i, layer in enumerate(layers):
        nz = int(np.count_nonzero(layer.kernel))
        rows += [
            {"stage": f"layer{i}.ssm", "ac_only": True,
             "how": f"{L}-tap causal conv, bit-serial over {layer.stream_bits} stream bit planes (taps summed where a "
                    f"bit is set), planes < {layer.acc_split} in a second accumulator",
             "adds_per_step": layer.stream_bits * nz},
            {"stage": f"layer{i}.lif", "ac_only": True, "how": "stock Lava LIF (decay is a shift)", "adds_per_step": H},
            {"stage": f"layer{i}.dense", "ac_only": True, "how": "binary spikes: weights of the spiking inputs summed",
             "adds_per_step": f"{2 * H} x spikes"},
            {"stage": f"layer{i}.glu", "ac_only": False,
             "how": "value x sigmoid-LUT: one neuron-level multiply per channel", "multiplies_per_step": H},
        ]
    rows.append({"stage": "readout", "ac_only": False, "how": "time sum on chip, decoder MACs once per sample on the host core",
                 "macs_per_sample": int(cfg["d_output"]) * H})
    return rows


def _plain(obj):
    """JSON-safe copy (numpy scalars -> Python)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj

"""Program -> a network of Lava processes, shaped like the hardware mapping.

Per layer: SSMConv (ours) -> LIFReset (stock) -> Dense (stock) -> GLUResidual (ours), with the
stream also fed to GLUResidual as the skip.  Encoder and Readout (ours) at the ends, a
SampleSource feeding preloaded samples back to back, and Extractors where traces are recorded.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.dense.process import Dense
from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel
from lava.proc.lif.process import LIFReset

from ...program import Program
from .processes import encoder, glu_residual, readout, source, ssm_conv

MODES = ("fixed_pt", "floating_pt")

_MODELS = {
    "fixed_pt": {source.SampleSource: source.SampleSourceFixed, encoder.StreamEncoder: encoder.StreamEncoderFixed,
                 ssm_conv.SSMConv: ssm_conv.SSMConvFixed, glu_residual.GLUResidual: glu_residual.GLUResidualFixed,
                 readout.Readout: readout.ReadoutFixed},
    "floating_pt": {source.SampleSource: source.SampleSourceFloat, encoder.StreamEncoder: encoder.StreamEncoderFloat,
                    ssm_conv.SSMConv: ssm_conv.SSMConvFloat, glu_residual.GLUResidual: glu_residual.GLUResidualFloat,
                    readout.Readout: readout.ReadoutFloat},
}


@dataclass
class Network:
    source: object
    taps: dict = field(default_factory=dict)    # trace name -> (Extractor, lag in steps)
    processes: list = field(default_factory=list)


def run_config(mode: str, backend: str = "sim"):
    """Loihi2SimCfg for the CPU simulator; Loihi2HwCfg (needs lava-loihi) for the chip."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    models = {**_MODELS[mode], Extractor: PyLoihiExtractorModel}
    if backend == "hw":
        from lava.magma.core.run_configs import Loihi2HwCfg
        return Loihi2HwCfg(select_tag=mode, exception_proc_model_map=models)
    return Loihi2SimCfg(select_tag=mode, exception_proc_model_map=models)


def _lif(layer, H: int, window: int, mode: str) -> LIFReset:
    # reset_offset 1: u and v are zeroed on the first step of every window (time starts at 1)
    if mode == "fixed_pt":
        return LIFReset(shape=(H,), du=4095, dv=int(layer.dv), vth=int(layer.vth), bias_mant=0, bias_exp=0,
                        reset_interval=window, reset_offset=1)
    return LIFReset(shape=(H,), du=1.0, dv=1.0 - float(layer.tau), vth=1.0, bias_mant=0.0, bias_exp=0.0,
                    reset_interval=window, reset_offset=1)


def build_network(program: Program, levels: np.ndarray, mode: str = "fixed_pt", record: bool = True) -> Network:
    W, L, H = program.window, program.seq_len, program.d_model
    fixed = mode == "fixed_pt"
    src = source.SampleSource(levels=np.asarray(levels, dtype=np.int64), window=W)
    e = program.encoder
    enc = encoder.StreamEncoder(weight=e.weight, bias=e.bias, input_bits=e.input_bits, weight_float=e.weight_float,
                                bias_float=e.bias_float, window=W, length=L)
    src.levels_out.connect(enc.levels_in)
    net = Network(source=src, processes=[src, enc])

    def tap(name, port, lag, size):
        ext = Extractor(shape=(size,), buffer_size=max(4 * W, 64))
        port.connect(ext.in_port)
        net.taps[name] = (ext, lag)

    stream = enc.stream_out
    if record:
        tap("stream_in", stream, 0, H)
    for i, layer in enumerate(program.layers):
        d = program.layer_delay(i)
        conv = ssm_conv.SSMConv(kernel=layer.kernel, shift=layer.kernel_shift, stream_bits=layer.stream_bits,
                                kernel_float=layer.kernel_float, window=W, delay=d, length=L)
        lif = _lif(layer, H, W, mode)
        dense = Dense(weights=layer.mix_weight if fixed else layer.mix_weight_float, num_message_bits=0)
        glu = glu_residual.GLUResidual(mix_bias=layer.mix_bias, value_shift=layer.value_shift,
                                       gate_shift=layer.gate_shift, out_shift=layer.out_shift,
                                       sigmoid_lut=program.sigmoid_lut, mix_bias_float=layer.mix_bias_float,
                                       window=W, delay=d, length=L)
        stream.connect(conv.stream_in)
        stream.connect(glu.skip_in)
        conv.current_out.connect(lif.a_in)
        lif.s_out.connect(dense.s_in)
        dense.a_out.connect(glu.dense_in)
        if record:
            tap(f"ssm.{i}", conv.current_out, d, H)
            tap(f"spikes.{i}", lif.s_out, d, H)
            tap(f"stream.{i}", glu.stream_out, d + 1, H)
        net.processes += [conv, lif, dense, glu]
        stream = glu.stream_out
    r = program.readout
    ro = readout.Readout(weight=r.weight, bias=r.bias, weight_float=r.weight_float, bias_float=r.bias_float,
                         window=W, delay=program.n_layers, length=L)
    stream.connect(ro.stream_in)
    tap("logits", ro.logits_out, W - 1, program.n_classes)         # sent on the window's last step
    net.processes.append(ro)
    return net

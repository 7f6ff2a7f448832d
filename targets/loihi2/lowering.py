"""Program -> a network of Lava processes, shaped like the hardware mapping.

Per layer: SSMConv (ours) -> LIFReset (stock) -> Dense (stock) -> GLUResidual (ours), with the
stream also fed to GLUResidual as the skip.  Encoder and Readout (ours) at the ends, a
SampleSource feeding preloaded samples back to back, and Extractors where traces are recorded.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field

import numpy as np

from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.dense.process import Dense
from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel
from lava.proc.lif.process import LIFReset

from ...program import Program
from .processes import encoder, fused_layer, glu_residual, readout, source, ssm_conv

MODES = ("fixed_pt", "floating_pt")
LOWERINGS = ("hardware", "fused")

_MODELS = {
    "fixed_pt": {source.SampleSource: source.SampleSourceFixed, encoder.StreamEncoder: encoder.StreamEncoderFixed,
                 ssm_conv.SSMConv: ssm_conv.SSMConvFixed, glu_residual.GLUResidual: glu_residual.GLUResidualFixed,
                 readout.Readout: readout.ReadoutFixed, fused_layer.FusedLayer: fused_layer.FusedLayerFixed},
    "floating_pt": {source.SampleSource: source.SampleSourceFloat, encoder.StreamEncoder: encoder.StreamEncoderFloat,
                    ssm_conv.SSMConv: ssm_conv.SSMConvFloat, glu_residual.GLUResidual: glu_residual.GLUResidualFloat,
                    readout.Readout: readout.ReadoutFloat, fused_layer.FusedLayer: fused_layer.FusedLayerFloat},
}


@dataclass
class Network:
    """Handles of a built network.  ``taps``: trace name -> (Extractor, lag in steps), the lag being
    the Lava step (0-based, inside a window) that carries logical time 0 of that trace."""
    source: object
    mode: str
    n_samples: int
    window: int
    taps: dict = field(default_factory=dict)
    processes: list = field(default_factory=list)
    layers: list = field(default_factory=list)   # per layer: dict conv, lif, dense, glu


def run_config(mode: str, backend: str = "sim"):
    """Loihi2SimCfg for the CPU simulator; Loihi2HwCfg (needs lava-loihi) for the chip."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    models = {**_MODELS[mode], Extractor: PyLoihiExtractorModel}
    if backend == "hw":
        from lava.magma.core.run_configs import Loihi2HwCfg
        return Loihi2HwCfg(select_tag=mode, exception_proc_model_map=models)
    return Loihi2SimCfg(select_tag=mode, exception_proc_model_map=models)


def _stock(cls, **kwargs):
    """Build a stock Lava process, refusing keywords its constructors do not name (Lava silently
    accepts unknown ones, e.g. ``LIF(bias=...)`` runs with bias 0), then check the Vars took them."""
    known = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            known |= {p.name for p in inspect.signature(init).parameters.values()
                      if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"{cls.__name__} does not take {', '.join(unknown)}")
    proc = cls(**kwargs)
    for name, value in kwargs.items():
        var = getattr(proc, name, None)
        if var is not None and hasattr(var, "init") and name != "shape":
            if not np.array_equal(np.broadcast_to(np.asarray(var.init), np.shape(value)), value):
                raise ValueError(f"{cls.__name__}.{name} did not take the value passed")
    return proc


def _lif(layer, H: int, window: int, mode: str) -> LIFReset:
    # LIFReset zeroes u and v, before integrating, when time_step % reset_interval == reset_offset:
    # offset 1 is the first step of every window (Lava time starts at 1); the tests check no leak.
    if mode == "fixed_pt":
        return _stock(LIFReset, shape=(H,), du=4095, dv=int(layer.dv), vth=int(layer.vth), bias_mant=0, bias_exp=0,
                      reset_interval=window, reset_offset=1)
    return _stock(LIFReset, shape=(H,), du=1.0, dv=1.0 - float(layer.tau), vth=1.0, bias_mant=0.0, bias_exp=0.0,
                  reset_interval=window, reset_offset=1)


def build_network(program: Program, mode: str = "fixed_pt", n_samples: int = None, record: bool = True, *,
                  levels, lowering: str = "hardware") -> Network:
    """Lower ``program`` to Lava processes for ``levels`` (n, L, d_in) raw input integers, played back
    to back one window per sample.  ``n_samples`` (optional) must be n.

    ``lowering='hardware'``: per layer SSMConv -> stock LIFReset -> stock Dense -> GLUResidual, window
    ``program.window`` (L + one step per Dense hop).  ``lowering='fused'``: one FusedLayer process per
    layer with the same integers (bit-exact, faster on CPU), window L."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    if lowering not in LOWERINGS:
        raise ValueError(f"unknown lowering {lowering!r} (choose from {', '.join(LOWERINGS)})")
    fused = lowering == "fused"
    levels = np.asarray(levels, dtype=np.int64)
    W, L, H = (program.seq_len if fused else program.window), program.seq_len, program.d_model
    if levels.ndim != 3 or levels.shape[1] != L or levels.shape[2] != program.encoder.weight.shape[1]:
        raise ValueError(f"levels must be (n, {L}, {program.encoder.weight.shape[1]}), got {levels.shape}")
    if n_samples is not None and n_samples != len(levels):
        raise ValueError(f"n_samples={n_samples} but {len(levels)} samples of levels were given")
    fixed = mode == "fixed_pt"
    src = source.SampleSource(levels=levels, window=W)
    e = program.encoder
    enc = encoder.StreamEncoder(weight=e.weight, bias=e.bias, input_bits=e.input_bits, weight_float=e.weight_float,
                                bias_float=e.bias_float, window=W, length=L)
    src.levels_out.connect(enc.levels_in)
    net = Network(source=src, mode=mode, n_samples=len(levels), window=W, processes=[src, enc])

    def tap(name, port, lag, size):
        ext = _stock(Extractor, shape=(size,), buffer_size=max(4 * W, 64))
        port.connect(ext.in_port)
        net.taps[name] = (ext, lag)

    stream = enc.stream_out
    if record:
        tap("stream_in", stream, 0, H)
    for i, layer in enumerate(program.layers):
        if fused:
            fl = fused_layer.FusedLayer(
                kernel=layer.kernel, shift=layer.kernel_shift, stream_bits=layer.stream_bits,
                acc_split=int(layer.acc_split), dv=int(layer.dv),
                vth=int(layer.vth), mix_weight=layer.mix_weight, mix_bias=layer.mix_bias,
                value_shift=layer.value_shift, gate_shift=layer.gate_shift, out_shift=layer.out_shift,
                sigmoid_lut=program.sigmoid_lut, kernel_float=layer.kernel_float,
                mix_weight_float=layer.mix_weight_float, mix_bias_float=layer.mix_bias_float, tau=float(layer.tau),
                window=W, delay=0, length=L)
            stream.connect(fl.stream_in)
            if record:
                tap(f"ssm.{i}", fl.current_out, 0, H)
                tap(f"spikes.{i}", fl.spikes_out, 0, H)
                tap(f"stream.{i}", fl.stream_out, 0, H)
            net.processes.append(fl)
            net.layers.append(dict(fused=fl))
            stream = fl.stream_out
            continue
        d = program.layer_delay(i)
        conv = ssm_conv.SSMConv(kernel=layer.kernel, shift=layer.kernel_shift, stream_bits=layer.stream_bits,
                                acc_split=int(layer.acc_split), kernel_float=layer.kernel_float, window=W, delay=d,
                                length=L)
        lif = _lif(layer, H, W, mode)
        dense = _stock(Dense, weights=layer.mix_weight if fixed else layer.mix_weight_float, num_message_bits=0)
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
        net.layers.append(dict(conv=conv, lif=lif, dense=dense, glu=glu))
        stream = glu.stream_out
    r = program.readout
    ro_delay = 0 if fused else program.n_layers
    ro = readout.Readout(weight=r.weight, bias=r.bias, pre_shift=r.pre_shift, weight_float=r.weight_float,
                         bias_float=r.bias_float,
                         window=W, delay=ro_delay, length=L)
    stream.connect(ro.stream_in)
    tap("logits", ro.logits_out, ro_delay + L - 1, 2 * program.n_classes)    # the window's last step
    net.processes.append(ro)
    return net


def simulate(program: Program, levels, mode: str = "fixed_pt", backend: str = "sim", record: bool = True,
             progress=None, lowering: str = "hardware") -> dict:
    """Build, run and read back in THIS process (``runner.run_lava`` calls it in a killable child).

    The run is non-blocking and the host drains every Extractor each step, so no buffer ever fills.
    Returns the flat result: ``logits`` and, with ``record``, ``stream_in``, ``ssm.i``, ``spikes.i``,
    ``stream.i`` as (n, channels, L) in logical time, plus ``seconds`` (wall time of the run)."""
    from lava.magma.core.run_conditions import RunSteps

    net = build_network(program, mode=mode, record=record, levels=levels, lowering=lowering)
    n, W, L = net.n_samples, net.window, program.seq_len
    steps = n * W
    cfg = run_config(mode, backend)
    taps = list(net.taps.items())
    buffers = {name: np.empty((steps, ext.in_port.shape[0])) for name, (ext, _) in taps}
    t0 = time.perf_counter()
    net.source.run(condition=RunSteps(num_steps=steps, blocking=False), run_cfg=cfg)
    try:
        for t in range(steps):
            for name, (ext, _) in taps:
                buffers[name][t] = ext.receive()
            if progress is not None and (t + 1) % W == 0:
                progress((t + 1) // W, n)
        net.source.wait()
    finally:
        net.source.stop()
    seconds = time.perf_counter() - t0
    fixed = mode == "fixed_pt"
    out = {"seconds": np.float64(seconds)}
    for name, (_, lag) in taps:
        per_sample = buffers[name].reshape(n, W, -1)
        if name == "logits":
            out[name] = readout.decode_logits(per_sample[:, lag], fixed)
            continue
        trace = per_sample[:, lag:lag + L].transpose(0, 2, 1)       # (n, channels, time)
        if name.startswith("spikes"):
            trace = trace != 0
        elif fixed:
            trace = np.rint(trace).astype(np.int64)
        out[name] = trace
    return out

"""Program -> a network of Lava processes, shaped like the hardware mapping.

One row per integer node type (``LOWER``): how to build its process, which of the process's ports
each graph port feeds, and which port carries its output.  Our own processes (``processes/``)
implement the encoders, the SSM convolution, the GLU mixer and the readout; the LIF and the Dense
synapse are Lava's stock ``LIFReset`` and ``Dense``.  Samples play back to back, one window each;
every stage knows from the compiler's time alignment (``Program.delays``) when its input arrives,
and multi-input stages hold their earlier inputs to meet the later ones.  Extractors read every
node's output when traces are recorded.  In the CPU simulator the processes run hosted in one
``Cluster`` (``processes/cluster.py``: the same bits at the same steps, one Lava process instead of
one per node), which the host reads directly.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import require_lava

require_lava()              # one line naming the extra, not an import traceback

from lava.magma.core.run_configs import Loihi2SimCfg  # noqa: E402
from lava.proc.dense.process import Dense
from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel
from lava.proc.lif.process import LIFReset

from ...arith import LIF_DU_NO_MEMORY
from ...ir import (IntChannelAffine, IntConcat, IntDense, IntEmbedding, IntEncoder, IntGELU, IntGELUResidual,
                   IntGLUResidual, IntInput, IntLIF, IntReadout, IntSampler, IntSSMConv, IntSSMRecurrent)
from ...program import Program
from .processes import (channel_affine, cluster, concat, encoder, gelu, glu_residual, readout, sampler, source, ssm_conv,
                        ssm_recurrent, token_encoder)
from .processes.cluster import cluster_of  # noqa: E402 - a name apart: build_network's ``cluster`` is a flag

MODES = ("fixed_pt", "floating_pt")

_OURS = (source.SampleSource, encoder.StreamEncoder, token_encoder.TokenEncoder, ssm_conv.SSMConv,
         glu_residual.GLUResidual, readout.Readout, sampler.Sampler, gelu.GELU, gelu.GELUResidual,
         channel_affine.ChannelAffine, concat.Concat, ssm_recurrent.SSMRecurrent, ssm_recurrent.SSMFanOut,
         ssm_recurrent.SSMModes, ssm_recurrent.SSMReduce, cluster.Cluster)


# hierarchical processes -> the SubProcessModel that wires their neurocore pieces (the plan's mapping)
PIECES = {ssm_recurrent.SSMRecurrent: ssm_recurrent.SSMRecurrentPieces}


def _models(mode: str, pieces: bool) -> dict:
    """Our process classes -> their model for ``mode`` (each module defines <Process>Fixed / Float,
    one PyLoihiProcessModel each), hierarchical ones -> their pieces when ``pieces``."""
    suffix = "Fixed" if mode == "fixed_pt" else "Float"
    models = {cls: getattr(inspect.getmodule(cls), cls.__name__ + suffix) for cls in _OURS}
    return {**models, **PIECES} if pieces else models


def run_config(mode: str, backend: str = "sim", pieces: bool | None = None):
    """Loihi2SimCfg for the CPU simulator; Loihi2HwCfg (needs lava-loihi) for the chip.

    Every process of ours gets its model from the map given to the RunConfig (Lava's rule 1), not
    from Lava's defaults.  ``pieces``: a hierarchical process (``PIECES``) runs as its SubProcessModel,
    the pieces that map to neurocores, instead of its one fused model; ``None`` takes the pieces on
    the chip (``hw``) and the fused model in the simulator (``sim``: one Lava process, not three,
    each paying the simulator's per-step synchronisation; the same integers)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    models = {**_models(mode, backend == "hw" if pieces is None else pieces), Extractor: PyLoihiExtractorModel}
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


@dataclass(frozen=True)
class Stage:
    """What a builder knows of its node: when its inputs arrive and the sample layout."""
    name: str
    fixed: bool
    window: int
    length: int
    delay: int                   # window step at which its latest input for logical step 0 arrives
    arrivals: dict               # port -> window step of that input's logical step 0
    channels: int                # of its output
    raw: np.ndarray              # (n, L, C) raw inputs (the source plays them)
    seed: int                    # keys the PRNG of stochastic samplers
    in_channels: dict            # port -> channel count of that input
    first_sample: int = 0        # data-file index of the first sample played (keys the PRNG too)


@dataclass(frozen=True)
class Lowering:
    build: Callable              # (op, Stage) -> Lava process
    inputs: dict                 # graph port -> the process's InPort attribute
    output: str                  # the process's OutPort attribute


def _timing(st: Stage) -> dict:
    return dict(window=st.window, delay=st.delay, length=st.length)


def _source(op: IntInput, st: Stage):
    return source.SampleSource(levels=st.raw, window=st.window)


def _encoder(op: IntEncoder, st: Stage):
    return encoder.StreamEncoder(weight=op.weight, bias=op.bias, shift=op.shift, input_bits=op.input_bits,
                                 weight_float=op.weight_float, bias_float=op.bias_float, **_timing(st))


def _token_encoder(op: IntEmbedding, st: Stage):
    return token_encoder.TokenEncoder(table=op.table, table_float=op.table_float, **_timing(st))


def _ssm_conv(op: IntSSMConv, st: Stage):
    return ssm_conv.SSMConv(kernel=op.kernel, shift=op.shift, bias=op.bias, stream_bits=op.stream_bits,
                            acc_split=int(op.split), lag=int(op.lag), kernel_float=op.kernel_float,
                            bias_float=op.bias_float, **_timing(st))


def _ssm_recurrent(op: IntSSMRecurrent, st: Stage):
    from ...ir import array_fields
    arrays = {f: getattr(op, f) for f, _ in array_fields(IntSSMRecurrent)}
    return ssm_recurrent.SSMRecurrent(decay_shift=int(op.decay_shift), **arrays, **_timing(st))


def _lif(op: IntLIF, st: Stage):
    # LIFReset zeroes u and v, before integrating, when time_step % reset_interval == reset_offset:
    # offset 1 is the first step of every window (Lava time starts at 1); the tests check no leak.
    H = st.channels
    if st.fixed:
        return _stock(LIFReset, shape=(H,), du=LIF_DU_NO_MEMORY, dv=int(op.dv), vth=int(op.vth), bias_mant=0, bias_exp=0,
                      reset_interval=st.window, reset_offset=1)
    return _stock(LIFReset, shape=(H,), du=1.0, dv=1.0 - float(op.tau), vth=1.0, bias_mant=0.0, bias_exp=0.0,
                  reset_interval=st.window, reset_offset=1)


def _dense(op: IntDense, st: Stage):
    return _stock(Dense, weights=op.weight if st.fixed else op.weight_float, num_message_bits=0)


def _glu_residual(op: IntGLUResidual, st: Stage):
    return glu_residual.GLUResidual(mix_bias=op.bias, value_shift=op.value_shift, gate_shift=op.gate_shift,
                                    out_shift=op.out_shift, sigmoid_lut=op.lut, mix_bias_float=op.bias_float,
                                    skip_depth=st.delay - st.arrivals["skip"], **_timing(st))


def _readout(op: IntReadout, st: Stage):
    return readout.Readout(weight=op.weight, bias=op.bias, pre_shift=op.pre_shift, weight_float=op.weight_float,
                           bias_float=op.bias_float, **_timing(st))


def _sampler(op: IntSampler, st: Stage):
    return sampler.Sampler(in_shift=op.in_shift, lo=op.lo, hi=op.hi, mult=op.mult, offset=op.offset, out_shift=op.out_shift,
                           prob_bits=int(op.prob_bits), stream=int(op.stream), seed=int(st.seed),
                           first_sample=int(st.first_sample), scale_float=op.scale_float, shift_float=op.shift_float, **_timing(st))


def _gelu(op: IntGELU, st: Stage):
    return gelu.GELU(bias=op.bias, value_shift=op.value_shift, gate_shift=op.gate_shift, out_shift=op.out_shift,
                     lut=op.lut, bias_float=op.bias_float, **_timing(st))


def _gelu_residual(op: IntGELUResidual, st: Stage):
    return gelu.GELUResidual(bias=op.bias, value_shift=op.value_shift, gate_shift=op.gate_shift,
                             out_shift=op.out_shift, lut=op.lut, bias_float=op.bias_float,
                             skip_depth=st.delay - st.arrivals["skip"], **_timing(st))


def _channel_affine(op: IntChannelAffine, st: Stage):
    return channel_affine.ChannelAffine(in_shift=op.in_shift, mult=op.mult, offset=op.offset, out_shift=op.out_shift,
                                        scale_float=op.scale_float, shift_float=op.shift_float, **_timing(st))


def _concat(op: IntConcat, st: Stage):
    ports = ("main", "rest")
    return concat.Concat(sizes=[st.in_channels[p] for p in ports], depths=[st.delay - st.arrivals[p] for p in ports],
                         **_timing(st))


LOWER = {
    IntInput: Lowering(_source, {}, "levels_out"),
    IntEncoder: Lowering(_encoder, {"main": "levels_in"}, "stream_out"),
    IntEmbedding: Lowering(_token_encoder, {"main": "tokens_in"}, "stream_out"),
    IntSSMConv: Lowering(_ssm_conv, {"main": "stream_in"}, "current_out"),
    IntSSMRecurrent: Lowering(_ssm_recurrent, {"main": "stream_in"}, "current_out"),
    IntLIF: Lowering(_lif, {"main": "a_in"}, "s_out"),
    IntDense: Lowering(_dense, {"main": "s_in"}, "a_out"),
    IntGLUResidual: Lowering(_glu_residual, {"skip": "skip_in", "main": "dense_in"}, "stream_out"),
    IntReadout: Lowering(_readout, {"main": "stream_in"}, "logits_out"),
    IntSampler: Lowering(_sampler, {"main": "value_in"}, "spikes_out"),
    IntGELU: Lowering(_gelu, {"main": "value_in"}, "value_out"),
    IntGELUResidual: Lowering(_gelu_residual, {"skip": "skip_in", "main": "value_in"}, "stream_out"),
    IntChannelAffine: Lowering(_channel_affine, {"main": "value_in"}, "value_out"),
    IntConcat: Lowering(_concat, {"main": "main_in", "rest": "rest_in"}, "joined_out"),
}


@dataclass
class Network:
    """Handles of a built network.  ``taps``: node name -> (reader, lag, columns): the reader (an
    Extractor, or the Cluster) has ``receive()``; the lag is the window step that carries that node's
    logical step 0 (for the readout: its logits); the columns, its slice of what the reader receives.  ``source``: the process to run.
    ``processes``: node name -> its process (in a Cluster: built, hosted, never run itself)."""
    source: object
    mode: str
    n_samples: int
    window: int
    taps: dict = field(default_factory=dict)
    processes: dict = field(default_factory=dict)


def build_network(program: Program, mode: str = "fixed_pt", record: bool = True, *, levels, seed: int = 0,
                  first_sample: int = 0, plan=None, cluster: bool = False) -> Network:
    """Lower ``program`` to Lava processes for ``levels`` (n, L, C) raw inputs, played back to back,
    one window of ``program.window`` steps per sample; ``seed`` keys stochastic samplers.  The
    network is built from the plan (``plan.plan_program``): one process per planned process, with
    the lowering, timing and channel counts the plan holds.  ``cluster``: the CPU simulator runs
    them all in one Lava process (``processes/cluster.py``; each its own process otherwise)."""
    from ...program import raw_inputs
    from .plan import plan_processes

    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    raw = raw_inputs(program, levels).transpose(0, 2, 1)                 # (n, L, C)
    W, L = program.window, program.seq_len
    net = Network(source=None, mode=mode, n_samples=len(raw), window=W)
    tapped = []                                                          # (name, lag), in order
    out = lambda node: LOWER[type(program.op(node))].output                # noqa: E731 - a node's output port
    feeds = {}                                                           # name -> {in-port: (source, out-port)}
    for spec in (plan.processes if plan is not None else plan_processes(program)):
        name, op = spec.name, program.op(spec.name)
        st = Stage(name, mode == "fixed_pt", W, L, spec.delay, spec.arrivals, spec.channels, raw, seed,
                   spec.in_channels, first_sample)
        rule = LOWER[type(op)]
        proc = rule.build(op, st)
        if type(proc).__name__ != spec.process:
            raise TypeError(f"{name}: the plan's process {spec.process} is not the {type(proc).__name__} built")
        feeds[name] = {rule.inputs[port]: (src, out(src)) for port, src in program.inputs(name).items()}
        if not cluster:
            for port, (src, src_port) in feeds[name].items():
                getattr(net.processes[src], src_port).connect(getattr(proc, port))
        net.processes[name] = proc
        if isinstance(op, IntInput):
            net.source = proc
        elif isinstance(op, IntReadout) or record:
            tapped.append((name, program.delays[name] + (L - 1 if isinstance(op, IntReadout) else 0)))
    outputs = {name: getattr(net.processes[name], out(name)) for name, _ in tapped}
    if cluster:                      # the host reads every tapped output, side by side, from the Cluster
        net.source = cluster_of(net.processes, feeds, [(name, out(name)) for name in outputs],
                                run_config(mode, "sim", pieces=False), buffer_size=max(4 * W, 64))
        column = 0
        for name, lag in tapped:
            net.taps[name] = (net.source, lag, slice(column, column + outputs[name].shape[0]))
            column += outputs[name].shape[0]
    else:
        for name, lag in tapped:
            net.taps[name] = (_extractor(outputs[name], W), lag, slice(None))
    return net


def _extractor(port, window: int):
    ext = _stock(Extractor, shape=port.shape, buffer_size=max(4 * window, 64))
    port.connect(ext.in_port)
    return ext


def simulate(program: Program, levels, mode: str = "fixed_pt", backend: str = "sim", record: bool = True,
             progress=None, seed: int = 0, first_sample: int = 0, pieces: bool | None = None,
             cluster: bool | None = None) -> dict:
    """Build, run and read back in THIS process (``runner.run_lava`` calls it in a killable child).

    The run is non-blocking and the host drains every Extractor each step, so no buffer ever fills.
    Returns the flat result: ``logits`` and, with ``record``, every node's output by node name as
    (n, channels, L) in logical time, plus ``seconds`` (wall time of the run up to the last step
    read, Lava's teardown not included).  ``pieces``: as in ``run_config``.  ``cluster``: every
    process in one Lava process (``build_network``); default: ``runner.resolve_cluster``."""
    from lava.magma.core.run_conditions import RunSteps

    from .runner import resolve_cluster
    cluster = resolve_cluster(backend, pieces, cluster, program)
    net = build_network(program, mode=mode, record=record, levels=levels, seed=seed, first_sample=first_sample,
                        cluster=cluster)
    n, W = net.n_samples, net.window
    steps = n * W
    cfg = run_config(mode, backend, pieces)
    readers = list({id(reader): reader for reader, _, _ in net.taps.values()}.values())   # Extractors or a Cluster
    received = [np.empty((steps, (r.in_port if isinstance(r, Extractor) else r.taps_out).shape[0])) for r in readers]
    t0 = time.perf_counter()
    net.source.run(condition=RunSteps(num_steps=steps, blocking=False), run_cfg=cfg)
    try:
        for t in range(steps):
            for reader, buffer in zip(readers, received):
                buffer[t] = reader.receive()
            if progress is not None and (t + 1) % W == 0:
                progress((t + 1) // W, n)
    except BaseException:
        net.source.stop()
        raise
    seconds = time.perf_counter() - t0
    by_reader = {id(reader): buffer for reader, buffer in zip(readers, received)}
    buffers = {name: by_reader[id(reader)][:, columns] for name, (reader, _, columns) in net.taps.items()}
    out = _read_back(program, net, buffers, mode, seconds)
    _teardown(net.source)
    return out


TEARDOWN_S = 120         # Lava's wait + stop of a finished run take ~1 s


def _teardown(source) -> None:
    """Lava's ``wait`` and ``stop`` of a run whose every step has been read, in a thread given
    ``TEARDOWN_S``: they hung once in CI (30 min, the results complete).  An error they raise is
    raised here; a hang is reported and left behind (in ``run_lava``'s child, its processes die with it)."""
    import threading
    import warnings

    raised = []

    def stop():
        for step in (source.wait, source.stop):
            try:
                step()
            except BaseException as exc:                             # noqa: BLE001 - re-raised below
                raised.append(exc)

    thread = threading.Thread(target=stop, name="lava-teardown", daemon=True)
    thread.start()
    thread.join(TEARDOWN_S)
    if thread.is_alive():
        warnings.warn(f"Lava's wait/stop did not return in {TEARDOWN_S} s after the last step was read; "
                      "the results are complete", RuntimeWarning)
    elif raised:
        raise raised[0]


def _read_back(program: Program, net, buffers: dict, mode: str, seconds: float) -> dict:
    """The drained Extractor buffers as the flat result of ``simulate``."""
    n, W, L = net.n_samples, net.window, program.seq_len
    fixed = mode == "fixed_pt"
    out = {"seconds": np.float64(seconds)}
    for name, (_, lag, _) in net.taps.items():
        per_sample = buffers[name].reshape(n, W, -1)
        op = program.op(name)
        if isinstance(op, IntReadout):
            out["logits"] = readout.decode_logits(per_sample[:, lag], fixed)
            continue
        trace = per_sample[:, lag:lag + L].transpose(0, 2, 1)       # (n, channels, time)
        if type(op).TRACE == "spikes":
            trace = trace != 0
        elif fixed:
            trace = np.rint(trace).astype(np.int64)
        out[name] = trace
    return out

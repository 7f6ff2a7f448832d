"""Measured activity of the integer run, and an energy ESTIMATE from it (the seed papers' 45 nm method).

Activity is counted from the integer run's own traces (each node's recorded output, and the raw
input), one rule per integer node type (``ACTIVITY``): spikes that reach a synapse, bit planes that
are set in a graded value, taps a spike actually meets inside the window, neurons updated, messages
sent (spikes, or graded values that are not zero).  The float model's MACs are counted from the same
Program (its float copies define the float model) by a second per-type table (``FLOAT_MACS``): what a
dense float evaluation of each node multiplies, per sample.

Energy (an estimate, not a measurement of any chip): the seed papers' 45 nm CMOS method.  The
figures are the 45 nm table of Horowitz (ISSCC 2014); P-SpikeSSM (appendix F) cites them through Han
et al. 2015 ("Learning both weights and connections", ref. [32]: ACC 0.9 pJ, MAC 4.6 pJ); the
SpikingSSM poster prints the table (FAdd 0.4/0.9 pJ, FMult 1.1/3.7 pJ, 16/32-bit) citing no source --
a 32-bit float accumulate 0.9 pJ, a multiply-accumulate 4.6 pJ (3.7 pJ multiply + 0.9 pJ add).  Compiled program: accumulates x 0.9 pJ + multiplies x 4.6 pJ;
float model: MACs x 4.6 pJ.  Beside it, each paper's own per-layer formula evaluated with the measured
firing rates: P-SpikeSSM (appendix F) IFR_in * L^2 + IFR_o * L * N^2 accumulates against
L^2 + L * N^2 MACs per layer; SpikingSSM (poster, "Energy efficiency") the feature-mix layer's
accumulates at the measured spike density against its MACs.
"""
from __future__ import annotations

import numpy as np

from .ir import (IntChannelAffine, IntConcat, IntDense, IntEmbedding, IntEncoder, IntGELU, IntGELUResidual,
                 IntGLUResidual, IntInput, IntLIF, IntReadout, IntSampler, IntSSMConv, IntSSMRecurrent)
from .operations import Costs, total

PJ_PER_ACCUMULATE = 0.9        # 32-bit float add, 45 nm: P-SpikeSSM app. F (citing Han et al. 2015); SpikingSSM poster (no source)
PJ_PER_MAC = 4.6               # 32-bit float multiply 3.7 pJ + add 0.9 pJ (same sources)


def _nonzero(x) -> int:
    return int(np.count_nonzero(x))


def bits_set(x, n_bits: int) -> np.ndarray:
    """Bit planes set per value, in the ``n_bits``-bit two's complement the bit-serial rules use."""
    x = np.asarray(x, dtype=np.int64)
    return sum(((x >> j) & 1) for j in range(n_bits))


def taps_reached(kernel, lag: int, L: int) -> np.ndarray:
    """(H, L): how many non-zero taps an input at step t meets within the window: out[t'] sums
    kernel[j] * x[t' + lag - j], so x[t] reaches t' = t - lag + j for 0 <= t' < L."""
    nz = np.concatenate([np.zeros((kernel.shape[0], 1), np.int64), np.cumsum(kernel != 0, 1)], 1)
    t = np.arange(L)
    lo = np.clip(lag - t, 0, kernel.shape[1])
    hi = np.clip(L - 1 + lag - t + 1, 0, kernel.shape[1])
    return nz[:, hi] - nz[:, lo]


def _per_step_neurons(out, extra_acc: int = 1, multiplies: int = 0) -> Costs:
    n_updates = int(np.prod(out.shape))
    return Costs(accumulates=extra_acc * n_updates, multiplies=multiplies * n_updates, neuron_updates=n_updates,
                 messages=_nonzero(out))


def _encoder(op: IntEncoder, ins, out, L):
    fan = np.count_nonzero(op.weight, 0)                                   # (C,) synapses per input channel
    events = int((bits_set(ins["main"], op.input_bits) * fan[None, :, None]).sum())
    return Costs(synaptic_events=events) + _per_step_neurons(out) + Costs(accumulates=events)


def _embedding(op: IntEmbedding, ins, out, L):
    H = op.table.shape[1]
    steps = ins["main"].shape[0] * L
    return Costs(synaptic_events=H * steps, accumulates=H * steps) + Costs(neuron_updates=H * steps,
                                                                          messages=_nonzero(out))


def _ssm(op: IntSSMConv, ins, out, L):
    x = ins["main"]
    planes = x.astype(np.int64) if x.dtype == bool else bits_set(x, op.stream_bits)
    events = int((planes * taps_reached(op.kernel, int(op.lag), L)[None]).sum())
    return Costs(synaptic_events=events, accumulates=events) + _per_step_neurons(out)


def _ssm_recurrent(op: IntSSMRecurrent, ins, out, L):
    """A non-zero input reaches its channel's 2M fan-out synapses and D (a multiply each); every mode
    neuron updates each step (4 multiplies, 6 adds) and sends (re, im), which the reduction weighs
    (2 multiplies): the mode messages are counted every step (a driven state is rarely exactly 0)."""
    H, M = op.decay.shape[:2]
    fan = _nonzero(ins["main"]) * (2 * M + 1)
    updates = ins["main"].shape[0] * L * H * M
    return Costs(synaptic_events=fan + 2 * updates, multiplies=fan + 6 * updates, accumulates=fan + 8 * updates,
                 neuron_updates=updates, messages=fan + 2 * updates + _nonzero(out))


def _lif(op: IntLIF, ins, out, L):
    return _per_step_neurons(out)


def _dense(op: IntDense, ins, out, L):
    fan = np.count_nonzero(op.weight, 0)                                   # (N,) rows each input spike reaches
    events = int((ins["main"].astype(np.int64) * fan[None, :, None]).sum())
    return Costs(synaptic_events=events, accumulates=events)


def _glu(op, ins, out, L):
    return _per_step_neurons(out, extra_acc=3, multiplies=1)


def _readout(op: IntReadout, ins, out, L):
    D, H = op.weight.shape
    n = ins["main"].shape[0]
    return Costs(accumulates=H * L * n + D * H * n, multiplies=D * H * n, neuron_updates=H * L * n, messages=H * n)


def _affine(op, ins, out, L):
    return _per_step_neurons(out, extra_acc=1, multiplies=1)


def _gelu(op, ins, out, L):
    return _per_step_neurons(out, extra_acc=2 + isinstance(op, IntGELUResidual), multiplies=1)


def _concat(op, ins, out, L):
    return Costs()


# one row per integer node type: (op, {port: input trace (n, C, L)}, output trace (n, C', L), L) -> Costs
ACTIVITY = {
    IntEncoder: _encoder,
    IntEmbedding: _embedding,
    IntSSMConv: _ssm,
    IntSSMRecurrent: _ssm_recurrent,
    IntLIF: _lif,
    IntDense: _dense,
    IntGLUResidual: _glu,
    IntReadout: _readout,
    IntChannelAffine: _affine,
    IntSampler: _affine,
    IntGELU: _gelu,
    IntGELUResidual: _gelu,
    IntConcat: _concat,
}
NO_ACTIVITY = {IntInput: "the raw input is counted by the encoder that reads it"}


def _conv_macs(op: IntSSMConv, L: int) -> int:
    """A dense float convolution multiplies every kernel tap that lands inside the window."""
    return int(taps_reached(np.ones_like(op.kernel), int(op.lag), L).sum())


# float MACs per sample of each node type, evaluated densely (the float model's arithmetic)
FLOAT_MACS = {
    IntInput: lambda op, H, L: 0,
    IntEncoder: lambda op, H, L: op.weight.size * L,
    IntEmbedding: lambda op, H, L: 0,                      # a table lookup
    IntSSMConv: lambda op, H, L: _conv_macs(op, L),
    IntSSMRecurrent: lambda op, H, L: H * L * (L + 1) // 2,   # the float model's causal L-tap convolution
    IntLIF: lambda op, H, L: H * L,                        # tau * u
    IntDense: lambda op, H, L: op.weight.size * L,
    IntGLUResidual: lambda op, H, L: H * L,                # a * sigmoid(g)
    IntReadout: lambda op, H, L: op.weight.size,           # decoder on the time mean
    IntChannelAffine: lambda op, H, L: H * L,
    IntSampler: lambda op, H, L: H * L,
    IntGELU: lambda op, H, L: H * L,
    IntGELUResidual: lambda op, H, L: H * L,
    IntConcat: lambda op, H, L: 0,
}


def measure_activity(program, traces: dict, raw) -> tuple:
    """From one integer run (``traces`` of ``emulate(..., record=True)`` or a Lava run, over ``raw``
    (n, C, L) raw inputs): ({node: Costs summed over the samples}, {node: (non-zero outputs, outputs)})."""
    outputs = {**traces, program.input_node: np.asarray(raw)}
    L = program.seq_len
    counts, density = {}, {}
    for name in program.topo():
        op = program.op(name)
        if name in outputs:
            density[name] = (_nonzero(outputs[name]), int(np.size(outputs[name])))
        if type(op) in NO_ACTIVITY:
            continue
        ins = {port: outputs[src] for port, src in program.inputs(name).items()}
        counts[name] = ACTIVITY[type(op)](op, ins, outputs.get(name), L)
    return counts, density


def fft_conv_macs(H: int, L: int, taps: int) -> int:
    """Real multiplies of H channels' length-L convolutions with ``taps``-tap kernels done by FFT: the
    input's real FFT and the product's inverse, each of size n (the power of two >= L + taps - 1) as a
    complex radix-2 FFT of n/2 points, (n/4) log2(n/2) complex multiplies (Cooley & Tukey 1965) of 4
    real multiplies, plus the n/2 + 1 pointwise complex products; the kernel's FFT is precomputed."""
    n = 1 << max(1, int(L + taps - 2).bit_length())
    per_channel = 2 * 4 * (n // 4) * (n.bit_length() - 2) + 4 * (n // 2 + 1)
    return H * per_channel


def _ssm_taps(op, L: int) -> int:
    return op.kernel.shape[-1] if isinstance(op, IntSSMConv) else L


def float_macs(program, ssm: str = "direct") -> int:
    """The float model's MACs per sample; ``ssm="fft"`` counts its SSM convolutions as FFTs instead."""
    channels, L = program.channel_counts(), program.seq_len
    total_macs = 0
    for n in program.topo():
        op = program.op(n)
        if ssm == "fft" and isinstance(op, (IntSSMConv, IntSSMRecurrent)):
            total_macs += min(FLOAT_MACS[type(op)](op, channels[n], L), fft_conv_macs(channels[n], L, _ssm_taps(op, L)))
        else:
            total_macs += FLOAT_MACS[type(op)](op, channels[n], L)
    return int(total_macs)


def _rate(density: dict, node: str) -> float:
    nonzero, size = density.get(node, (0, 0))
    return nonzero / size if size else 0.0


def _paper_formula(program, density: dict) -> dict:
    """The seed papers' own per-layer counts with the measured rates (their formulas as written)."""
    L, N = program.seq_len, int(program.model.get("d_model") or 0)
    rate = {name: _rate(density, program.inputs(name)["main"])
            for name in program.topo() if isinstance(program.op(name), (IntSSMConv, IntDense))}
    spiking_input = {n: type(program.op(program.inputs(n)["main"])).TRACE == "spikes"
                     or isinstance(program.op(program.inputs(n)["main"]), IntConcat) for n in rate}
    mixers = [n for n in rate if isinstance(program.op(n), IntDense)]
    if program.model.get("kind") == "pspikessm":
        ssms = [n for n in rate if isinstance(program.op(n), IntSSMConv) and spiking_input[n]]
        acc = sum(rate[n] * L * L for n in ssms) + sum(rate[n] * L * program.op(n).weight.size for n in mixers)
        macs = len(ssms) * L * L + sum(L * program.op(n).weight.size for n in mixers)
        formula = ("P-SpikeSSM appendix F: per SSM IFR_in * L^2, per SpikeMixer IFR_o * L * N_in * N_out "
                   "accumulates (N^2 for a square mixer), against L^2 + L * N_in * N_out MACs")
        rates = {"IFR_in": {n: rate[n] for n in ssms}, "IFR_o": {n: rate[n] for n in mixers}}
    else:
        acc = sum(rate[n] * L * program.op(n).weight.size for n in mixers)
        macs = sum(L * program.op(n).weight.size for n in mixers)
        formula = ("SpikingSSM poster: the feature-mix layers' accumulates at the measured spike density "
                   "(1 - sparsity) against their L * d_in * d_out MACs")
        rates = {"mixer_input_density": {n: rate[n] for n in mixers}}
    snn, ann = acc * PJ_PER_ACCUMULATE, macs * PJ_PER_MAC
    return {"formula": formula, "L": L, "N": N, "accumulates": acc, "macs": macs, "snn_pJ": snn, "ann_pJ": ann,
            "ratio": ann / snn if snn else None, **rates}


def activity_and_energy(program, traces: dict, levels) -> dict:
    """The ``activity`` and ``energy`` sections of a report, per sample, from one integer run's traces
    (every node recorded) over ``levels``, the raw inputs it was given ((n, L, C) or (n, L))."""
    from .program import raw_inputs
    counts, density = measure_activity(program, traces, raw_inputs(program, levels))
    return energy_report(program, len(levels), counts, density)


def measured(program, levels, seed: int = 0, batch_size: int = 32, device: str = "cpu") -> dict:
    """``activity_and_energy`` of the emulator's run over ``levels``, in batches (traces of every node
    for a long sequence do not fit memory all at once); same seed, same counts: each batch draws the
    random numbers of its own samples (``first_sample``), as one run over all of them would."""
    from .emulator import emulate
    from .program import raw_inputs
    counts, density = {}, {}
    for start in range(0, len(levels), batch_size):
        chunk = levels[start:start + batch_size]
        traces = emulate(program, chunk, record=True, device=device, seed=seed, first_sample=start)
        add_activity(counts, density, program, traces, raw_inputs(program, chunk))
    return energy_report(program, len(levels), counts, density)


def add_activity(counts: dict, density: dict, program, traces: dict, raw) -> None:
    """Add one batch's ``measure_activity`` to the running ``counts`` and ``density`` (in place)."""
    c, d = measure_activity(program, traces, raw)
    for k, v in c.items():
        counts[k] = counts.get(k, Costs()) + v
    for k, (nz, size) in d.items():
        a, b = density.get(k, (0, 0))
        density[k] = (a + nz, b + size)


def energy_report(program, n: int, counts: dict, density: dict) -> dict:
    measured_total = total(counts.values())
    per_sample = {k: v / n for k, v in measured_total.to_dict().items() if k in Costs.OPERATIONS}
    macs = float_macs(program)
    snn = per_sample["accumulates"] * PJ_PER_ACCUMULATE + per_sample["multiplies"] * PJ_PER_MAC
    ann = macs * PJ_PER_MAC
    ann_fft = float_macs(program, ssm="fft") * PJ_PER_MAC
    activity = {"samples": n, "per_sample": per_sample, "float_macs_per_sample": macs,
                "firing_rates": {name: _rate(density, name) for name in program.spike_nodes},
                "per_node": {k: {f: v / n for f, v in c.to_dict().items() if f in Costs.OPERATIONS}
                             for k, c in counts.items()}}
    energy = {"estimate": "45 nm CMOS figures (P-SpikeSSM appendix F, citing Han et al. 2015; the SpikingSSM "
                          "poster's table, no source cited), not a Loihi 2 measurement: no per-operation energy of Loihi 2 is published",
              "pJ_per_accumulate": PJ_PER_ACCUMULATE, "pJ_per_mac": PJ_PER_MAC,
              "paper_45nm": {"snn_pJ": snn, "ann_pJ": ann, "ratio": ann / snn if snn else None,
                             "snn": "measured accumulates x 0.9 pJ + measured multiplies x 4.6 pJ, per sample",
                             "ann": "the float model's MACs x 4.6 pJ, per sample, its SSM counted as a "
                                    "direct convolution (every tap a MAC), as the seed papers count it"},
              "fft_baseline": {"snn_pJ": snn, "ann_pJ": ann_fft, "ratio": ann_fft / snn if snn else None,
                               "ann": "the float model's MACs x 4.6 pJ with each SSM convolution done by FFT "
                                      "(real multiplies of radix-2 FFTs, Cooley & Tukey 1965; the cheaper of "
                                      "FFT and direct per layer): what a GPU implementation computes"},
              "paper_formula": _paper_formula(program, density)}
    return {"activity": activity, "energy": energy}


def energy_text(section: dict) -> str:
    """Three lines for the validate / simulate printout."""
    a, e = section["activity"], section["energy"]
    p, f = e["paper_45nm"], e["paper_formula"]
    ps = a["per_sample"]
    return "\n".join([
        f"activity (integer run, {a['samples']} samples, per sample): {ps['synaptic_events']:,.0f} synaptic events, "
        f"{ps['accumulates']:,.0f} accumulates, {ps['multiplies']:,.0f} multiplies, {ps['neuron_updates']:,.0f} "
        f"neuron updates, {ps['messages']:,.0f} messages; float model {a['float_macs_per_sample']:,} MACs",
        f"energy ESTIMATE per sample (45 nm CMOS figures as the seed papers use them, not Loihi 2): compiled {p['snn_pJ'] / 1e3:,.1f} nJ vs float "
        f"{p['ann_pJ'] / 1e3:,.1f} nJ, ratio {p['ratio']:.2f}x (float SSM as a direct convolution; with FFT "
        f"convolutions float {e['fft_baseline']['ann_pJ'] / 1e3:,.1f} nJ, ratio {e['fft_baseline']['ratio']:.2f}x)"
        if p["ratio"] else "energy: no operations counted",
        f"  paper formula ({f['formula'].split(':')[0]}): {f['snn_pJ'] / 1e3:,.1f} nJ vs {f['ann_pJ'] / 1e3:,.1f} nJ, "
        f"ratio {f['ratio']:.2f}x" if f["ratio"] else f"  paper formula: no spikes counted"])

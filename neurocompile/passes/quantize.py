"""Quantize the float graph to integer nodes, choosing every scale so the registers fit.

The residual stream (analog in the model) becomes an integer at one scale 2**f for the whole
network.  We try the finest f first and step down until the range analysis proves every 24-bit
register safe; with an explicit ``act_bits`` only that width is tried, and a misfit is an error.
Per-layer choices for a given f:
  * kernel: 8-bit mantissa per channel (quant.quantize_kernel), D and 1/Vth already folded;
  * LIF input scale 2**g_i: the finest g (threshold vth = 2**g <= 2**16) whose u and v fit;
  * mixer: Lava Dense weights 2*m (m an 8-bit mantissa per output row: Dense drops the LSB of
    mixed-sign weights, so even weights pass through it unchanged);
  * GLU: the value is pre-shifted just enough that value * sigmoid_lut fits a register.
"""
from __future__ import annotations

import numpy as np

from ..arith import REGISTER_MAX
from ..errors import RangeError
from ..intervals import (bits_for, conv_interval, lif_ranges, magnitude, product_interval, shift_interval,
                         spike_dense_interval, split_intervals, ssm_intervals)
from ..ir import (LIF, Affine, Graph, IntDense, IntEncoder, IntGLUResidual, IntLIF, IntReadout, IntSSMConv,
                  ResidualAdd, SSMConv)
from ..options import CompileOptions
from ..quant import quantize_kernel, quantize_rows, quantize_scalar_scale, sigmoid_lut, to_fixed
from .ranges import Violation, range_violations

MAX_VTH_BITS = 16          # vth = 2**g must fit Lava's 17-bit unsigned threshold


def lif_decay(tau: float) -> int:
    """dv such that (4096 - dv) / 4096 == tau (0.125 -> 3584, exact)."""
    return int(min(max(round((1.0 - tau) * 4096), 0), 4095))


def float_stream_bounds(graph: Graph) -> list:
    """Worst-case |x| per channel of the residual stream entering each layer, and leaving the last."""
    enc = graph.op("encoder")
    lo = enc.bias + np.minimum(enc.weight, 0).sum(1)          # model inputs lie in [0, 1]
    hi = enc.bias + np.maximum(enc.weight, 0).sum(1)
    bounds = [magnitude(lo, hi)]
    for name in graph.nodes_of(ResidualAdd):
        mixer = graph.op(name.replace("residual", "mixer"))
        H = mixer.weight.shape[1]
        w = mixer.weight[:H]
        lo = lo + np.minimum(mixer.bias[:H] + np.minimum(w, 0).sum(1), 0)    # GLU out lies between 0 and a
        hi = hi + np.maximum(mixer.bias[:H] + np.maximum(w, 0).sum(1), 0)
        bounds.append(magnitude(lo, hi))
    return [np.maximum(b, 1e-12) for b in bounds]


def channel_frac_bits(graph: Graph, opt: CompileOptions) -> np.ndarray:
    """Fixed-point position of each residual-stream channel: as fine as its registers allow.

    A channel's stream meets only its own SSM taps, its own GLU output and (once per sample) the
    decoder, so every channel can have its own scale.  Its finest scale is limited by the stream
    width (--act-bits), by each layer's SSM accumulator (sum of |taps| x stream bound), and by the
    readout's time sum; all three are estimated here from float bounds and proven afterwards.
    """
    bounds = float_stream_bounds(graph)
    peak = np.max(bounds, axis=0)
    top = opt.act_bits or opt.max_act_bits
    f = np.floor(np.log2(((1 << (top - 1)) - 1) / peak))
    why = np.array(["--act-bits"] * len(f), dtype=object)

    def limit(candidate, reason):
        nonlocal f
        tighter = candidate < f
        why[tighter] = reason
        f = np.minimum(f, candidate)

    if opt.act_bits is None:
        # two accumulators of 24 bits hold taps * |x| when taps * 2**split and taps * |x| / 2**split
        # both fit, i.e. when taps**2 * |x| <= REGISTER_MAX**2
        slack = 1.0 + 2.0 ** -4
        for i, name in enumerate(graph.nodes_of(SSMConv)):
            kq, _ = quantize_kernel(graph.op(name).kernel, opt.kernel_bits)
            taps = np.maximum(np.abs(kq).sum(1), 1).astype(np.float64)
            limit(np.floor(np.log2(REGISTER_MAX ** 2 / (taps ** 2 * bounds[i] * slack + 1))), f"{name} accumulators")
    return f.astype(np.int64), why


class _Misfit(Exception):
    def __init__(self, violation: Violation):
        self.violation = violation


def quantize(graph: Graph, options: CompileOptions = CompileOptions()) -> Graph:
    f, why = channel_frac_bits(graph, options)
    where = graph.meta.get("source") or "model"
    if options.act_bits is None:
        peak = np.max(float_stream_bounds(graph), axis=0)
        width = np.floor(np.log2(peak * 2.0 ** f)) + 2
        if width.min() < options.min_act_bits:
            h = int(width.argmin())
            raise RangeError(f"{where}: residual-stream channel {h} keeps only {int(width[h])} bits before the "
                             f"{why[h]} overflows its 24-bit register (worst-case |x| {peak[h]:.3g}; "
                             f"need >= {options.min_act_bits} bits)")
    last = None
    for step_down in ([0] if options.act_bits else [0, 1, 2, 3]):   # float estimates can miss by a rounding
        try:
            q = quantize_at(graph, f - step_down, options, act_bits=options.act_bits)
        except _Misfit as exc:
            last = exc.violation
            continue
        problems = range_violations(q)
        if not problems:
            return q
        last = problems[0]
    hint = "use a smaller --act-bits or leave it automatic" if options.act_bits else "automatic scaling"
    raise RangeError(f"{where}: {last.node} {last.register} can reach {last.bound}, beyond the 24-bit register "
                     f"limit {last.limit} ({hint})")


READOUT_BITS = 16          # decoder weights live on the host core, not in a synapse


def quantize_at(graph: Graph, f: np.ndarray, opt: CompileOptions, act_bits=None) -> Graph:
    """Quantize with stream channel h at fixed point 2**-f[h]."""
    q = graph.copy()
    f = np.asarray(f, dtype=np.int64)
    q.meta.update(stream_frac_bits=f, act_bits=act_bits, options=opt.to_dict())
    lut = sigmoid_lut(opt.sigmoid_in_frac_bits, opt.sigmoid_lut_bits, opt.sigmoid_out_frac_bits)
    q.meta["sigmoid_lut"] = lut
    lut_max = int(lut.max())
    L = int(q.meta["config"]["l_max"])

    inp, enc = q.op("input"), q.op("encoder")
    w_enc = to_fixed(enc.weight / inp.levels, f[:, None])
    b_enc = to_fixed(enc.bias, f)
    _replace(q, "encoder", IntEncoder(w_enc, b_enc, int(inp.levels).bit_length()))
    lo = b_enc + np.minimum(w_enc * inp.levels, 0).sum(1)
    hi = b_enc + np.maximum(w_enc * inp.levels, 0).sum(1)

    for name in list(q.nodes_of(ResidualAdd)):
        layer = name.split(".")[0]
        conv, lif, mixer = (q.op(f"{layer}.{part}") for part in ("ssm", "neuron", "mixer"))
        assert isinstance(conv, SSMConv) and isinstance(lif, LIF) and isinstance(mixer, Affine), \
            f"{layer}: expected SSMConv -> LIF -> Affine (run the earlier passes first)"
        H = conv.kernel.shape[0]
        # SSM convolution and the LIF input scale
        kq, e = quantize_kernel(conv.kernel, opt.kernel_bits)
        split = accumulator_split(kq, lo, hi)
        if split is None:
            acc = conv_interval(kq, lo, hi)
            raise _Misfit(Violation(f"{layer}.ssm", "accumulators (even split in two)", int(magnitude(*acc).max())))
        dv = lif_decay(lif.tau)
        for g in range(MAX_VTH_BITS, 0, -1):
            shift = e + f - g
            _, _, (a_lo, a_hi) = ssm_intervals(kq, lo, hi, split, shift)
            (u_lo, u_hi), (v_lo, v_hi) = lif_ranges(a_lo, a_hi, dv, 1 << g)
            if max(int(magnitude(u_lo, u_hi).max()), int(magnitude(v_lo, v_hi).max())) <= REGISTER_MAX:
                break
        else:
            raise _Misfit(Violation(f"{layer}.neuron", "LIF current/voltage", int(magnitude(v_lo, v_hi).max())))
        _replace(q, f"{layer}.ssm", IntSSMConv(kq, shift, bits_for(lo, hi), split))
        _replace(q, f"{layer}.neuron", IntLIF(dv, 1 << g))
        # mixer: Dense weights 2*m, one exponent per output row
        m, em = quantize_rows(mixer.weight, opt.weight_bits)
        scale = em + 1
        bias = to_fixed(mixer.bias, scale)
        _replace(q, f"{layer}.mixer", IntDense(2 * m))
        d_lo, d_hi = spike_dense_interval(2 * m, bias)
        value_shift = np.zeros(H, dtype=np.int64)
        while True:
            s_lo, s_hi = shift_interval(d_lo[:H], d_hi[:H], value_shift)
            too_big = magnitude(s_lo, s_hi) * lut_max > REGISTER_MAX
            if not too_big.any():
                break
            value_shift = value_shift + too_big
        gate_shift = scale[H:] - opt.sigmoid_in_frac_bits
        out_shift = scale[:H] - value_shift + opt.sigmoid_out_frac_bits - f
        _replace(q, name, IntGLUResidual(bias, value_shift, gate_shift, out_shift), float_op=mixer)
        q.bypass(f"{layer}.glu")
        p_lo, p_hi = product_interval(s_lo, s_hi, lut_max)
        o_lo, o_hi = shift_interval(p_lo, p_hi, out_shift)
        lo, hi = lo + o_lo, hi + o_hi

    # readout: the time sum adds x_h >> r_h (r_h just enough for 24 bits over L steps), so
    # logits * 2**E * L = sum_h W[c,h] 2**(E - f_h + r_h) * sum_t (x_h[t] 2**(f_h - r_h)) + bias * 2**E * L
    pre = np.zeros_like(f)
    while True:
        s_lo, s_hi = shift_interval(lo, hi, pre)
        over = magnitude(s_lo, s_hi) * L > REGISTER_MAX
        if not over.any():
            break
        pre = pre + over
    dec = q.op("decoder")
    per_unit = dec.weight * np.exp2((pre - f).astype(np.float64))[None]
    E = quantize_scalar_scale(per_unit, READOUT_BITS)
    wq = to_fixed(per_unit, E)
    bq = np.round(dec.bias * 2.0 ** E * L).astype(np.int64)
    _replace(q, "decoder", IntReadout(wq, bq, E, pre))
    q.bypass("pool")
    return q


def accumulator_split(kernel, lo, hi):
    """Smallest split putting both SSM accumulators inside 24 bits for a stream in [lo, hi], or None."""
    for split in range(0, bits_for(lo, hi)):
        (h_lo, h_hi), (l_lo, l_hi) = split_intervals(lo, hi, split)
        if magnitude(*conv_interval(kernel, l_lo, l_hi)).max() > REGISTER_MAX:
            return None                     # the low part only grows with the split
        if magnitude(*conv_interval(kernel, h_lo, h_hi)).max() <= REGISTER_MAX:
            return split
    return None


def _replace(graph: Graph, name: str, op, float_op=None) -> None:
    graph.g.nodes[name]["float_op"] = float_op if float_op is not None else graph.op(name)
    graph.set_op(name, op)

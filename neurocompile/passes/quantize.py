"""Quantize the float graph to integer nodes, choosing every scale so the registers fit.

One rule per float node type (``RULES``).  A rule turns its float node into an integer node given
its inputs, already quantized (their integer node, exact integer interval and fixed-point
position ``frac``: value ~ integer * 2**-frac, per channel), and says at which ``frac`` its own
output lies.  Intervals come from the interval rules (``neurocompile.intervals``), the same ones
the range analysis proves the result with.

The residual stream (analog in the model) gets one fixed point per channel for the whole network,
``stream_frac``: as fine as that channel's registers allow.  It is estimated from float bounds
(``Rule.bound``) and per-op limits (``Rule.frac_limit``); then the whole graph is quantized and
proved, stepping the stream down a bit when the estimate was a rounding too fine.  With an explicit
``act_bits`` only that width is tried, and a misfit is an error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..errors import RangeError
from ..input_format import InputFormat
from ..intervals import (Context, bits_for, conv_interval, magnitude, mode_state_bound, node_interval, register_table,
                         shift_interval, split_intervals)
from ..ir import (GELU, LIF, ChannelAffine, Concat, Dense, Embedding, GELUResidual, GLUResidual, Graph, Input,
                  IntChannelAffine, IntConcat, IntDense, IntEmbedding, IntEncoder, IntGELU, IntGELUResidual,
                  IntGLUResidual, IntInput, IntLIF, IntReadout, IntSampler, IntSSMConv, IntSSMRecurrent, LinearEncoder,
                  Readout, Sampler, SSMConv, SSMRecurrent)
from ..options import CompileOptions
from ..arith import shift_round
from ..quant import encoder_integers, gelu, phi_lut, quantize_kernel, quantize_rows, quantize_scalar_scale, sigmoid_lut, to_fixed
from ..ssm_kernels import kernel_errors, measured_recurrent_kernel, modal_kernel, relative_l2
from ..target import Target

READOUT_BITS = 16          # decoder weights live on the host core, not in a synapse
STREAM_FRAC_LIMIT = 32     # the stream's fixed point 2**-f must leave every rescaling shift within +-40


@dataclass(frozen=True)
class Quantized:
    op: object                 # the integer node
    interval: tuple            # (lo, hi) int64 per output channel
    frac: np.ndarray           # value ~ integer * 2**-frac, per output channel


@dataclass(frozen=True)
class Violation:
    node: str
    register: str
    bound: int
    limit: int


class _Misfit(Exception):
    def __init__(self, violation: Violation):
        self.violation = violation


class State:
    """What rules see: the float graph, options, target, the stream's fixed point, finished nodes."""

    def __init__(self, graph: Graph, options: CompileOptions, target: Target, stream_frac: np.ndarray):
        self.graph, self.options, self.target = graph, options, target
        self.L = int(graph.meta["config"]["l_max"])
        self.stream_frac = np.asarray(stream_frac, dtype=np.int64)
        self.ctx = Context(self.L, target)
        self.done: dict = {}
        self.errors: dict = {}       # node -> relative error of its quantized weights, for the report
        self.kernels: dict = {}      # SSM node -> {lowering: kernel errors}, for the report

    def error(self, name: str, exact, approx) -> None:
        """Record ||approx - exact|| / ||exact|| (the weights a node's integers stand for)."""
        self.errors[name] = relative_l2(exact, approx)

    def finish(self, name: str, op, frac, ins: dict) -> Quantized:
        interval, rows = node_interval(op, {p: v.interval for p, v in ins.items()}, self.ctx)
        return Quantized(op, interval, np.broadcast_to(np.asarray(frac, dtype=np.int64), interval[0].shape).copy())

    def fits_consumers(self, name: str, candidate: Quantized) -> Optional[Violation]:
        """First register overflow in ``name``'s consumers if ``name`` were quantized to ``candidate``."""
        for dst in self.graph.consumers(name):
            srcs = self.graph.inputs(dst)
            if any(src != name and src not in self.done for src in srcs.values()):
                continue                            # decided when its other inputs are known
            ins = {p: (candidate if src == name else self.done[src]) for p, src in srcs.items()}
            op, _ = RULES[type(self.graph.op(dst))].quantize(self.graph.op(dst), ins, self, dst)
            _, rows = node_interval(op, {p: v.interval for p, v in ins.items()}, self.ctx)
            for reg, worst, limit in rows:
                if worst > limit:
                    return Violation(dst, reg, worst, limit)
        return None


@dataclass(frozen=True)
class Rule:
    quantize: Callable                   # (float op, {port: Quantized}, State, name) -> (int op, output frac)
    bound: Optional[Callable] = None     # (float op, {port: (lo, hi) floats}) -> (lo, hi) of the float output
    on_stream: object = False            # the output is at the stream's fixed point (or a predicate on the op)
    frac_limit: Optional[Callable] = None  # (float op, input bound, options, target) -> max stream frac per channel


def synapse_weight_bits(options: CompileOptions, target: Target) -> int:
    """``weight_bits`` as synapses store it: capped at the target's synaptic weight width."""
    return min(options.weight_bits, target.weight_bits)


def lif_decay(tau: float, target: Target) -> int:
    """dv such that (4096 - dv) / 4096 == tau (0.125 -> 3584, exact)."""
    unity = target.arithmetic.lif_decay_unity
    return int(min(max(round((1.0 - tau) * unity), 0), unity - 1))


def _affine_bound(weight, lo, hi, bias=0.0):
    a, b = weight * lo[None, :], weight * hi[None, :]
    return np.minimum(a, b).sum(1) + bias, np.maximum(a, b).sum(1) + bias


# ------------------------------------------------------------------ the rules
def quantize_input(op: Input, ins, s: State, name):
    fmt = InputFormat.from_dict(op.fmt)
    return IntInput(op.channels, fmt.max_raw, fmt.kind == "tokens"), 0


def bound_input(op: Input, ins):
    fmt = InputFormat.from_dict(op.fmt)
    lo, hi = (fmt.low, fmt.high) if fmt.kind == "levels" else (0, fmt.vocab - 1)
    return np.full(op.channels, float(lo)), np.full(op.channels, float(hi))


def quantize_linear_encoder(op: LinearEncoder, ins, s: State, name):
    """Weights per raw level keep a mantissa of the synapse width (``quant.encoder_exponents``), summed
    with the bias at that finer scale and rounded onto the stream by one shift per channel."""
    fmt = InputFormat.from_dict(s.graph.op(s.graph.inputs(name)["main"]).fmt)
    w, b = fmt.per_level(op.weight, op.bias)
    f = s.stream_frac
    wq, bq, e = encoder_integers(w, b, f, synapse_weight_bits(s.options, s.target), magnitude(*ins["main"].interval),
                                 s.target.register_max)
    s.error(name, w, wq * np.exp2(-e.astype(np.float64))[:, None])
    return IntEncoder(wq, bq, e - f, max(int(fmt.levels).bit_length(), 1), w, b), f


def quantize_embedding(op: Embedding, ins, s: State, name):
    """8-bit mantissas with one exponent per channel (a synapse row), held at the stream's scale."""
    from ..arith import shift_round
    m, e = quantize_rows(op.table.T, s.options.weight_bits)
    f = s.stream_frac
    table = shift_round(m.T, (e - f)[None, :])
    s.error(name, op.table, table * np.exp2(-f.astype(np.float64))[None, :])
    return IntEmbedding(table, op.table.copy()), f


def quantize_ssm_conv(op: SSMConv, ins, s: State, name):
    """8-bit taps per channel; the output scale 2**g is the finest the consumers (the LIF) accept."""
    x = ins["main"]
    lo, hi = x.interval
    kq, e = quantize_kernel(op.kernel, s.options.kernel_bits)
    if np.any(np.abs(e) > STREAM_FRAC_LIMIT):
        h = int(np.argmax(np.abs(e)))
        raise RangeError(f"kernel channel {h} has taps up to |k| = {np.abs(op.kernel[h]).max():.3g} (D and the "
                         f"threshold scale folded in): its 8-bit mantissa needs a scale of 2^{int(e[h])}, beyond the "
                         f"+-{STREAM_FRAC_LIMIT}-bit rescaling the target supports")
    # error feedback keeps the kernel's partial sums (its step response), not each tap: measure those
    s.error(name, np.cumsum(op.kernel, 1), np.cumsum(kq * np.exp2(-e.astype(np.float64))[:, None], 1))
    s.kernels[name] = {"conv": kernel_errors(op.kernel, kq * np.exp2(-e.astype(np.float64))[:, None])}
    split = accumulator_split(kq, lo, hi, s.target.register_max)
    if split is None:
        raise _Misfit(Violation(name, "accumulators (even split in two)",
                                int(magnitude(*conv_interval(kq, lo, hi)).max()), s.target.register_max))
    last = None
    for g in range(s.target.vth_bits - 1, 0, -1):
        conv = IntSSMConv(kq, e + x.frac - g, to_fixed(op.bias, g), bits_for(lo, hi), split, int(op.lag),
                          op.kernel.copy(), op.bias.copy())
        candidate = s.finish(name, conv, g, ins)
        _, rows = node_interval(conv, {p: v.interval for p, v in ins.items()}, s.ctx)
        last = next((Violation(name, r, w, lim) for r, w, lim in rows if w > lim), None) \
            or s.fits_consumers(name, candidate)
        if last is None:
            return conv, g
    raise _Misfit(last)


def ssm_frac_limit(op: SSMConv, bound, options: CompileOptions, target: Target):
    """Two 24-bit accumulators hold taps * |x| when taps * 2**split and taps * |x| / 2**split both
    fit, i.e. when taps**2 * |x| <= REGISTER_MAX**2 (|x| in stream units)."""
    kq, _ = quantize_kernel(op.kernel, options.kernel_bits)
    taps = np.maximum(np.abs(kq).sum(1), 1).astype(np.float64)
    peak = np.maximum(np.maximum(np.abs(bound[0]), np.abs(bound[1])), 1e-12)
    slack = 1.0 + 2.0 ** -4
    return np.floor(np.log2(target.register_max ** 2 / (taps ** 2 * peak * slack + 1)))


def bound_ssm_conv(op: SSMConv, ins):
    lo, hi = ins["main"]
    a, b = op.kernel * lo[:, None], op.kernel * hi[:, None]
    blo = op.bias.min(1) if op.bias.shape[1] else 0.0
    bhi = op.bias.max(1) if op.bias.shape[1] else 0.0
    return np.minimum(a, b).sum(1) + blo, np.maximum(a, b).sum(1) + bhi


def _pairs(z: np.ndarray) -> np.ndarray:
    """Complex (H, M) -> (H, M, 2) real (re, im)."""
    return np.stack([z.real, z.imag], axis=-1)


def _gain(z: np.ndarray, bits: int):
    """Mantissas (H, M, 2) with one exponent per channel (a synapse's weight exponent)."""
    H = z.shape[0]
    m, e = quantize_rows(_pairs(z).reshape(H, -1), bits)
    return m.reshape(H, -1, 2), e


def _state_scale(op: SSMRecurrent, decay, ds: int, b_val, u_peak, s: State):
    """Per channel, the finest state fixed point 2**-f_s whose proven bound fits the register
    (estimated in float, then proved exactly, stepping down where the rounding term misses)."""
    rho = np.sqrt((decay.astype(np.float64) ** 2).sum(-1)) * 2.0 ** -ds
    peak = ((b_val * u_peak[:, None] + np.abs(op.e)) / np.maximum(1.0 - rho, 2.0 ** -ds)).max(1)
    with np.errstate(divide="ignore"):
        f = np.floor(np.log2(0.99 * s.target.register_max / np.maximum(peak, 1e-300)))
    return np.clip(f, -STREAM_FRAC_LIMIT, STREAM_FRAC_LIMIT).astype(np.int64)


def recurrent_coefficients(op: SSMRecurrent, options: CompileOptions, target: Target):
    """The recurrence's rounded coefficients (``quantize_ssm_recurrent``'s, and fine-tuning's): decays a
    as ``decay_bits`` mantissas at 2**-ds, ds = decay_bits - 1; input gains b, output gains 2c and D as
    synapse mantissas with an exponent per channel.  -> (decay (H, M, 2), ds, (b, e_b), (2c, e_c), (D, e_D))."""
    bits = synapse_weight_bits(options, target)
    ds = options.decay_bits - 1
    decay = np.round(_pairs(op.a) * 2.0 ** ds).astype(np.int64)
    dq, e_d = quantize_rows(op.D[:, None], bits)
    return decay, ds, _gain(op.b, bits), _gain(2.0 * op.c, bits), (dq[:, 0], e_d)


def quantize_ssm_recurrent(op: SSMRecurrent, ins, s: State, name):
    """Decay a: ``decay_bits`` mantissas, one exponent for the layer (every |a| is just below 1, so a
    per-channel exponent would be the same one).  Input gain b, output gain 2c and D: ``weight_bits``
    synapse mantissas, one exponent per channel (the channels' dt spread their gains over decades).
    The state gets a fixed point per channel, as fine as its proven bound allows; each mode neuron
    sends its state shifted just enough that the reduction's accumulator fits; the output scale 2**g
    is the finest the consumers (the LIF) accept, as for the convolution."""
    x = ins["main"]
    lo, hi = x.interval
    opt, reg = s.options, s.target.register_max
    decay, ds, (bq, e_b), (gq, e_c), (dq, e_d) = recurrent_coefficients(op, opt, s.target)
    u_peak = magnitude(lo, hi) * np.exp2(-x.frac.astype(np.float64))
    b_val = np.abs(bq[..., 0] + 1j * bq[..., 1]) * np.exp2(-e_b.astype(np.float64))[:, None]
    f_s = _state_scale(op, decay, ds, b_val, u_peak, s)
    for _ in range(8):                                   # the rounding term can cost a bit or two
        in_shift = e_b + x.frac - f_s
        e_int = to_fixed(_pairs(op.e), f_s[:, None, None])
        p = np.abs(bq) * magnitude(lo, hi)[:, None, None]
        drive = shift_round(p, in_shift[:, None, None]) + 1 + np.abs(e_int)        # + 1: either sign rounds
        state = mode_state_bound(decay, drive, ds)                                   # (H, M)
        over = state.max(1) > reg
        if not over.any():
            break
        f_s = f_s - over
    ms = np.zeros_like(f_s)
    for _ in range(2 * STREAM_FRAC_LIMIT):               # messages: just enough shift for the accumulator
        msg = np.maximum(shift_round(state, ms[:, None]), -shift_round(-state, ms[:, None]))
        over = (np.abs(gq).sum(-1) * msg).sum(1) > reg
        if not over.any():
            break
        ms = ms + over
    last = None
    for g in range(s.target.vth_bits - 1, 0, -1):
        node = IntSSMRecurrent(decay=decay, gain_in=bq, in_shift=in_shift, state_bias=e_int, send_shift=ms,
                               gain_out=gq, out_shift=e_c - ms + f_s - g, direct=dq, direct_shift=e_d + x.frac - g,
                               out_bias=to_fixed(op.d0, g), decay_shift=ds, decay_float=_pairs(op.a),
                               gain_in_float=_pairs(op.b), state_bias_float=_pairs(op.e), gain_out_float=_pairs(2 * op.c),
                               direct_float=op.D.copy(), out_bias_float=op.d0.copy())
        candidate = s.finish(name, node, g, ins)
        _, rows = node_interval(node, {p: v.interval for p, v in ins.items()}, s.ctx)
        last = next((Violation(name, r, w, lim) for r, w, lim in rows if w > lim), None) \
            or s.fits_consumers(name, candidate)
        if last is None:
            exact = modal_kernel(op.a, op.b, op.c, op.D, s.L)
            measured = measured_recurrent_kernel(node, lo, hi, x.frac, g, s.L)
            s.error(name, np.cumsum(exact, 1), np.cumsum(measured, 1))
            kq, e = quantize_kernel(exact, opt.kernel_bits)
            s.kernels[name] = {"recurrent": kernel_errors(exact, measured),
                               "conv": kernel_errors(exact, kq * np.exp2(-e.astype(np.float64))[:, None])}
            return node, g
    raise _Misfit(last)


def recurrent_frac_limit(op: SSMRecurrent, bound, options: CompileOptions, target: Target):
    """The fan-out multiplies the stream by a weight mantissa: |u| * mantissa_max must fit a register."""
    peak = np.maximum(np.maximum(np.abs(bound[0]), np.abs(bound[1])), 1e-12)
    return np.floor(np.log2(target.register_max / ((1 << (options.weight_bits - 1)) * peak)))


def bound_ssm_recurrent(op: SSMRecurrent, ins):
    """|y| <= sum_l |K[l]| |u| + |d0| (the float kernel's l1 norm, summed in closed form as a bound:
    sum_l |2 c b a**l| <= 2 |c b| / (1 - |a|))."""
    lo, hi = ins["main"]
    u = np.maximum(np.abs(lo), np.abs(hi))
    drive = 2 * np.abs(op.c * op.b) * u[:, None] + 2 * np.abs(op.c * op.e)
    reach = (drive / np.maximum(1.0 - np.abs(op.a), 1e-12)).sum(1) + np.abs(op.D) * u + np.abs(op.d0)
    return -reach, reach


def quantize_lif(op: LIF, ins, s: State, name):
    g = np.unique(ins["main"].frac)
    if len(g) != 1:
        raise ValueError(f"{name}: a LIF population needs one input scale (one threshold), got {g}")
    return IntLIF(lif_decay(op.tau, s.target), int(round(op.threshold * 2.0 ** int(g[0]))), float(op.tau)), 0


def quantize_dense(op: Dense, ins, s: State, name):
    """Lava Dense weights: a mantissa per output row, stored even when the target drops the LSB of
    mixed-sign weights (so the truncation leaves them intact)."""
    m, em = quantize_rows(op.weight, synapse_weight_bits(s.options, s.target))
    s.error(name, op.weight, m * np.exp2(-em.astype(np.float64))[:, None])
    even = int(s.target.weights_even)
    return IntDense(m << even, op.weight.copy()), em + even


def quantize_glu_residual(op: GLUResidual, ins, s: State, name):
    """The value is pre-shifted just enough that value * sigmoid_lut fits a register."""
    opt = s.options
    skip, main = ins["skip"], ins["main"]
    H = len(skip.frac)
    lut = sigmoid_lut(opt.sigmoid_in_frac_bits, opt.sigmoid_lut_bits, opt.sigmoid_out_frac_bits)
    scale = main.frac
    bias = to_fixed(op.bias, scale)
    d_lo, d_hi = main.interval[0] + bias, main.interval[1] + bias
    value_shift = np.zeros(H, dtype=np.int64)
    while True:
        s_lo, s_hi = shift_interval(d_lo[:H], d_hi[:H], value_shift)
        too_big = magnitude(s_lo, s_hi) * int(lut.max()) > s.target.register_max
        if not too_big.any():
            break
        value_shift = value_shift + too_big
    gate_shift = scale[H:] - opt.sigmoid_in_frac_bits
    out_shift = scale[:H] - value_shift + opt.sigmoid_out_frac_bits - skip.frac
    return IntGLUResidual(bias, value_shift, gate_shift, out_shift, lut, op.bias.copy()), skip.frac


def bound_glu_residual(op: GLUResidual, ins):
    """The GLU's output a * sigmoid(g) lies between 0 and a."""
    H = len(ins["skip"][0])
    a_lo, a_hi = ins["main"][0][:H] + op.bias[:H], ins["main"][1][:H] + op.bias[:H]
    return ins["skip"][0] + np.minimum(a_lo, 0), ins["skip"][1] + np.maximum(a_hi, 0)


def quantize_readout(op: Readout, ins, s: State, name):
    """The time sum adds x_h >> r_h (r_h just enough for 24 bits over L steps), so
    logits * 2**E * L = sum_h W[c,h] 2**(E - f_h + r_h) * sum_t (x_h[t] 2**(f_h - r_h)) + bias * 2**E * L."""
    x = ins["main"]
    lo, hi = x.interval
    pre = np.zeros_like(x.frac)
    while True:
        s_lo, s_hi = shift_interval(lo, hi, pre)
        over = magnitude(s_lo, s_hi) * s.L > s.target.register_max
        if not over.any():
            break
        pre = pre + over
    per_unit = op.weight * np.exp2((pre - x.frac).astype(np.float64))[None]
    E = quantize_scalar_scale(per_unit, READOUT_BITS)
    s.error(name, per_unit, to_fixed(per_unit, E) * 2.0 ** -E)
    return IntReadout(to_fixed(per_unit, E), np.round(op.bias * 2.0 ** E * s.L).astype(np.int64), pre, E,
                      op.weight.copy(), op.bias.copy()), E


# ------------------------------------------------------------------ P-SpikeSSM: affines, samplers, GELU
GELU_MIN = -0.17                     # GELU's minimum is -0.1700 at z = -0.75


def affine_params(scale, shift, q: Quantized, out_frac, s: State, operand_bits=None):
    """Integers of arith.channel_affine for y = scale * x + shift, x the quantized input, y at fixed
    point ``out_frac``: the value is pre-shifted to ``operand_bits`` (default: the option's; an int
    or one per channel) and the multiplier gets the rest of the register (less a bit for the
    offset).  Returns (in_shift, mult, offset, out_shift, em)."""
    lo, hi = q.interval
    bits = np.array([int(m).bit_length() for m in magnitude(lo, hi)], dtype=np.int64)
    operand_bits = s.options.operand_bits if operand_bits is None else operand_bits
    in_shift = np.maximum(bits - (np.asarray(operand_bits) - 1), 0)
    vmag = np.maximum(magnitude(*shift_interval(lo, hi, in_shift)), 1).astype(np.float64)
    # |mult * v| + |offset| = 2**em (|scale| vmag + |shift| 2**(frac - in_shift)) must fit the register,
    # with a few units to spare for the rounding of mult and offset
    need = np.abs(np.asarray(scale, dtype=np.float64)) * vmag + \
        np.abs(np.asarray(shift, dtype=np.float64)) * np.exp2((q.frac - in_shift).astype(np.float64))
    budget = 0.99 * s.target.register_max - 2 * vmag
    with np.errstate(divide="ignore"):
        em = np.where(need > 0, np.floor(np.log2(budget / np.where(need > 0, need, 1.0))), 0).astype(np.int64)
    em = np.minimum(em, STREAM_FRAC_LIMIT)
    mult = np.round(np.asarray(scale) * np.exp2(em.astype(np.float64))).astype(np.int64)
    afrac = q.frac - in_shift + em
    return in_shift, mult, to_fixed(shift, afrac), afrac - out_frac, em


def _affine_error(scale, mult, em) -> float:
    a = np.abs(scale)
    err = np.abs(mult * np.exp2(-em.astype(np.float64)) - scale)
    return float(np.max(np.where(a > 0, err / np.where(a > 0, a, 1), 0), initial=0))


def sampler_window(scale, shift, x: Quantized, in_shift) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the window [lo, hi] of the pre-shifted input outside which the float probability
    clamp(scale x + shift, 0, 1) is 0 or 1, a unit wider on each side and within the input's own
    pre-shifted range (a zero scale, or a window wholly outside that range: one point)."""
    step = np.exp2((in_shift - x.frac).astype(np.float64))          # one unit of the pre-shifted input
    a, b = np.asarray(scale, dtype=np.float64), np.asarray(shift, dtype=np.float64)
    live = a != 0
    with np.errstate(over="ignore"):
        e0 = np.where(live, -b / np.where(live, a, 1), 0) / step
        e1 = np.where(live, (1 - b) / np.where(live, a, 1), 0) / step
    in_lo, in_hi = shift_interval(*x.interval, in_shift)
    lo = np.clip(np.floor(np.minimum(e0, e1)) - 1, in_lo, in_hi)
    hi = np.clip(np.ceil(np.maximum(e0, e1)) + 1, in_lo, in_hi)
    lo = np.where(live, lo, in_lo)
    return lo.astype(np.int64), np.where(live, hi, in_lo).astype(np.int64)


def windowed_sampler_params(scale, shift, x: Quantized, in_shift, prob_bits: int, s: State):
    """The integers of arith.sample for one pre-shift: the window, then the affine of the centred
    operand x - lo (its own fixed point frac - in_shift, range [0, hi - lo]), and the bound of
    |integer p - float p| over the input's range: the pre-shift's rounding times |scale|, the
    multiplier's rounding across the window, the output's rounding.
    Returns (lo, hi, mult, offset, out_shift, error)."""
    lo, hi = sampler_window(scale, shift, x, in_shift)
    step = np.exp2((in_shift - x.frac).astype(np.float64))
    a = np.asarray(scale, dtype=np.float64)
    at_lo = np.asarray(shift, dtype=np.float64) + a * lo * step          # the float p at the window's low end
    at_lo = np.where(hi == lo, np.clip(at_lo, -1.0, 2.0), at_lo)      # one point: only its side of [0, 1] counts
    centred = Quantized(None, (np.zeros_like(lo), hi - lo), x.frac - in_shift)
    _, mult, offset, out_shift, em = affine_params(scale, at_lo, centred, prob_bits, s, operand_bits=64)
    rounding_in = np.where(in_shift > 0, np.abs(a) * step / 2, 0.0)
    rounding_mult = np.abs(mult * np.exp2(-em.astype(np.float64)) - a) * (hi - lo) * step
    return lo, hi, mult, offset, out_shift, rounding_in + rounding_mult + 2.0 ** -(prob_bits + 1)


def quantize_sampler(op: Sampler, ins, s: State, name):
    """p = clip(scale * x + shift, 0, 1) in prob_bits against a prob_bits-bit uniform.  The input is
    pre-shifted, held to the window where p is not clamped and centred on it (arith.sample), so the
    multiply's operand spans the window, not the whole stream.  The pre-shift is chosen per channel
    to minimise the probability's error bound (fewer input bits leave more for the multiplier);
    ``errors`` records that bound, in units of probability."""
    x = ins["main"]
    k = s.options.prob_bits
    widest = int(max(int(m).bit_length() for m in magnitude(*x.interval)) if len(x.frac) else 0)
    best, best_err = None, None
    for pre in range(0, max(widest - 1, 0) + 1):
        in_shift = np.full(len(x.frac), pre, dtype=np.int64)
        *params, err = windowed_sampler_params(op.scale, op.shift, x, in_shift, k, s)
        params = [in_shift, *params]
        if best is None:
            best, best_err = [np.array(a, copy=True) for a in params], err
            continue
        better = err < best_err
        for dst, src in zip(best, params):
            dst[better] = np.asarray(src)[better]
        best_err = np.where(better, err, best_err)
    in_shift, lo, hi, mult, offset, out_shift = best
    s.errors[name] = float(best_err.max(initial=0.0))
    return IntSampler(in_shift=in_shift, mult=mult, offset=offset, out_shift=out_shift, scale_float=op.scale.copy(),
                      shift_float=op.shift.copy(), prob_bits=k, stream=int(op.stream), lo=lo, hi=hi), 0


def quantize_channel_affine(op: ChannelAffine, ins, s: State, name):
    """An affine on the residual stream (a post-norm BatchNorm): stream in, stream out."""
    in_shift, mult, offset, out_shift, em = affine_params(op.scale, op.shift, ins["main"], s.stream_frac, s)
    s.errors[name] = _affine_error(op.scale, mult, em)
    return IntChannelAffine(in_shift, mult, offset, out_shift, op.scale.copy(), op.shift.copy()), s.stream_frac


def _gelu_params(bias, main: Quantized, out_frac, s: State, name):
    """GELU(z) = z Phi(z) as the GLU's value x table[gate] with gate = value = z (arith.gelu)."""
    opt = s.options
    lut = phi_lut(opt.phi_in_frac_bits, opt.phi_lut_bits, opt.phi_out_frac_bits)
    b = to_fixed(bias, main.frac)
    z_lo, z_hi = main.interval[0] + b, main.interval[1] + b
    value_shift = np.zeros_like(main.frac)
    while True:
        v_lo, v_hi = shift_interval(z_lo, z_hi, value_shift)
        too_big = magnitude(v_lo, v_hi) * int(lut.max()) > s.target.register_max
        if not too_big.any():
            break
        value_shift = value_shift + too_big
    gate_shift = main.frac - opt.phi_in_frac_bits
    out_shift = main.frac - value_shift + opt.phi_out_frac_bits - out_frac
    s.errors[name] = _gelu_error(z_lo, z_hi, main.frac, value_shift, gate_shift, out_shift, lut, out_frac)
    return b, value_shift, gate_shift, out_shift, lut


def _gelu_error(z_lo, z_hi, frac, value_shift, gate_shift, out_shift, lut, out_frac) -> float:
    """Largest |integer GELU - GELU| over each channel's input range (256 points), relative to the
    largest |GELU| there: the table's and the rescalings' error together."""
    from ..arith import gelu as int_gelu
    worst = 0.0
    for h in range(len(frac)):
        z = np.unique(np.linspace(z_lo[h], z_hi[h], 256).round().astype(np.int64))
        got = int_gelu(z, value_shift[h], gate_shift[h], out_shift[h], lut) * 2.0 ** -int(np.broadcast_to(out_frac, frac.shape)[h])
        want = gelu(z * 2.0 ** -int(frac[h]))
        worst = max(worst, float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-12)))
    return worst


def quantize_gelu(op: GELU, ins, s: State, name):
    """The output is the stream (a block without residual) or, before a sampler, an operand of
    ``operand_bits`` bits at the finest fixed point that holds it."""
    main = ins["main"]
    if op.to_stream:
        out_frac = s.stream_frac
    else:
        z = magnitude(main.interval[0] + to_fixed(op.bias, main.frac), main.interval[1] + to_fixed(op.bias, main.frac))
        peak = np.maximum(z * np.exp2(-main.frac.astype(np.float64)), -GELU_MIN)
        out_frac = np.floor(np.log2(((1 << (s.options.operand_bits - 1)) - 1) / peak)).astype(np.int64)
    b, vs, gs, os_, lut = _gelu_params(op.bias, main, out_frac, s, name)
    return IntGELU(b, vs, gs, os_, lut, op.bias.copy()), out_frac


def quantize_gelu_residual(op: GELUResidual, ins, s: State, name):
    skip, main = ins["skip"], ins["main"]
    b, vs, gs, os_, lut = _gelu_params(op.bias, main, skip.frac, s, name)
    return IntGELUResidual(b, vs, gs, os_, lut, op.bias.copy()), skip.frac


def bound_gelu(op, z_lo, z_hi):
    """GELU's float range over [z_lo, z_hi] + bias: its minimum is -0.17, then it rises like z."""
    lo, hi = z_lo + op.bias, z_hi + op.bias
    return np.where(hi < -0.75, gelu(hi), np.where(lo > -0.75, gelu(lo), GELU_MIN)), np.maximum(gelu(hi), gelu(lo))


def quantize_concat(op: Concat, ins, s: State, name):
    return IntConcat(), np.concatenate([ins["main"].frac, ins["rest"].frac])


RULES = {
    Input: Rule(quantize_input, bound=bound_input),
    LinearEncoder: Rule(quantize_linear_encoder, bound=lambda op, ins: _affine_bound(op.weight, *ins["main"], op.bias),
                        on_stream=True),
    Embedding: Rule(quantize_embedding, bound=lambda op, ins: (op.table.min(0), op.table.max(0)), on_stream=True),
    SSMConv: Rule(quantize_ssm_conv, bound=bound_ssm_conv, frac_limit=ssm_frac_limit),
    SSMRecurrent: Rule(quantize_ssm_recurrent, bound=bound_ssm_recurrent, frac_limit=recurrent_frac_limit),
    LIF: Rule(quantize_lif, bound=lambda op, ins: (np.zeros_like(ins["main"][0]), np.ones_like(ins["main"][0]))),
    Dense: Rule(quantize_dense, bound=lambda op, ins: _affine_bound(op.weight, *ins["main"])),
    GLUResidual: Rule(quantize_glu_residual, bound=bound_glu_residual, on_stream=True),
    Readout: Rule(quantize_readout),
    Sampler: Rule(quantize_sampler, bound=lambda op, ins: (np.zeros_like(ins["main"][0]), np.ones_like(ins["main"][0]))),
    ChannelAffine: Rule(quantize_channel_affine, on_stream=True, bound=lambda op, ins: (
        np.minimum(op.scale * ins["main"][0], op.scale * ins["main"][1]) + op.shift,
        np.maximum(op.scale * ins["main"][0], op.scale * ins["main"][1]) + op.shift)),
    GELU: Rule(quantize_gelu, bound=lambda op, ins: bound_gelu(op, *ins["main"]), on_stream=lambda op: op.to_stream),
    GELUResidual: Rule(quantize_gelu_residual, on_stream=True, bound=lambda op, ins: tuple(
        skip + g for skip, g in zip(ins["skip"], bound_gelu(op, *ins["main"])))),
    Concat: Rule(quantize_concat, bound=lambda op, ins: tuple(np.concatenate([a, b]) for a, b in zip(ins["main"], ins["rest"]))),
}


def _on_stream(graph: Graph, name: str) -> bool:
    flag = _rule(graph, name).on_stream
    return bool(flag(graph.op(name)) if callable(flag) else flag)


def _rule(graph: Graph, name: str) -> Rule:
    op = graph.op(name)
    if type(op) not in RULES:
        raise ValueError(f"{name}: no quantize rule for {type(op).__name__} (run the earlier passes first)")
    return RULES[type(op)]


# ------------------------------------------------------------------ the stream's fixed point
def float_bounds(graph: Graph) -> dict:
    """Float range of every node's output for any admissible input (None where a rule has none)."""
    out = {}
    for name in graph.topo():
        rule = _rule(graph, name)
        ins = {p: out[src] for p, src in graph.inputs(name).items()}
        out[name] = rule.bound(graph.op(name), ins) if rule.bound and all(v is not None for v in ins.values()) else None
    return out


def stream_frac_bits(graph: Graph, opt: CompileOptions, target: Target):
    """(fixed point per stream channel, what limits each channel, worst-case |x| per channel)."""
    bounds = float_bounds(graph)
    names = [n for n in graph.topo() if _on_stream(graph, n)]
    stream = np.array([np.maximum(np.abs(bounds[n][0]), np.abs(bounds[n][1])) for n in names])
    peak = np.maximum(stream.max(axis=0), 1e-12)
    # the stream's width is capped (max_act_bits) where bit-serial convolutions read it: each bit is
    # a plane of adds; a stream nothing convolves (P-SpikeSSM's) may fill its register
    convolved = any(_rule(graph, n).frac_limit and _on_stream(graph, src)
                    for n in graph.topo() for src in graph.inputs(n).values())
    top = opt.act_bits or (opt.max_act_bits if convolved else target.register_bits - 2)
    with np.errstate(over="ignore", divide="ignore"):
        f = np.floor(np.log2(((1 << (top - 1)) - 1) / peak))
    if not np.all(np.abs(f) <= STREAM_FRAC_LIMIT):
        node, h = np.unravel_index(np.argmax(np.where(np.isfinite(stream), stream, np.inf)), stream.shape)
        raise RangeError(f"{names[node]}: residual-stream channel {h} can reach |x| = {stream[node, h]:.3g} for "
                         f"admissible inputs; a {top}-bit fixed point for it needs a scale of 2^{-f[h]:.0f}, beyond "
                         f"the +-{STREAM_FRAC_LIMIT}-bit rescaling the target supports")
    why = np.array(["--act-bits"] * len(f), dtype=object)
    if opt.act_bits is None:
        for name in graph.topo():
            rule = _rule(graph, name)
            if rule.frac_limit is None:
                continue
            (src,) = graph.inputs(name).values()
            if not _on_stream(graph, src):
                continue                       # e.g. a convolution over spikes: no stream in its accumulators
            limit = rule.frac_limit(graph.op(name), bounds[src], opt, target)
            why[limit < f] = f"{name} accumulators"
            f = np.minimum(f, limit)
    return f.astype(np.int64), why, peak


def quantize_at(graph: Graph, stream_frac: np.ndarray, options: CompileOptions, target: Target) -> Graph:
    """The integer graph with the stream at fixed point 2**-stream_frac (per channel)."""
    s = State(graph, options, target, stream_frac)
    for name in graph.topo():
        ins = {p: s.done[src] for p, src in graph.inputs(name).items()}
        try:
            op, frac = _rule(graph, name).quantize(graph.op(name), ins, s, name)
            s.done[name] = s.finish(name, op, frac, ins)
        except RangeError as exc:
            raise RangeError(_named(name, exc)) from None
    q = graph.copy()
    for name, done in s.done.items():
        q.set_op(name, done.op)
    q.meta.update(stream_frac_bits=s.stream_frac, act_bits=options.act_bits, options=options.to_dict(),
                  quantization_error=dict(s.errors), ssm_kernel_error=dict(s.kernels),
                  ssm_fracs={n: (s.done[graph.inputs(n)["main"]].frac, d.frac) for n, d in s.done.items()
                             if isinstance(d.op, (IntSSMConv, IntSSMRecurrent))})   # input, output fixed points
    return q


def _named(name: str, exc: Exception) -> str:
    return str(exc) if str(exc).startswith(name) else f"{name}: {exc}"


def range_violations(graph: Graph, target: Target) -> list:
    rows, _ = register_table(graph, Context(int(graph.meta["config"]["l_max"]), target))
    return [Violation(n, r, w, lim) for n, r, w, lim in rows if w > lim]


def quantize(graph: Graph, options: CompileOptions = CompileOptions(), target: Target = None) -> Graph:
    from ..target import get_target
    target = target or get_target()
    where = graph.meta.get("source") or "model"
    try:
        f, why, peak = stream_frac_bits(graph, options, target)
    except RangeError as exc:
        raise RangeError(f"{where}: {exc}") from None
    if options.act_bits is None:
        width = np.floor(np.log2(peak * 2.0 ** f)) + 2
        if width.min() < options.min_act_bits:
            h = int(width.argmin())
            raise RangeError(f"{where}: residual-stream channel {h} keeps only {int(width[h])} bits before the "
                             f"{why[h]} overflows its 24-bit register (worst-case |x| {peak[h]:.3g}; "
                             f"need >= {options.min_act_bits} bits)")
    last = None
    for step_down in ([0] if options.act_bits else [0, 1, 2, 3]):   # float estimates can miss by a rounding
        try:
            q = quantize_at(graph, f - step_down, options, target)
        except _Misfit as exc:
            last = exc.violation
            continue
        except RangeError as exc:
            raise RangeError(f"{where}: {exc}") from None
        problems = range_violations(q, target)
        if not problems:
            return q
        last = problems[0]
    hint = "use a smaller --act-bits or leave it automatic" if options.act_bits else "automatic scaling"
    raise RangeError(f"{where}: {last.node} {last.register} can reach {last.bound}, beyond the 24-bit register "
                     f"limit {last.limit} ({hint})")


def accumulator_split(kernel, lo, hi, register_max: int):
    """Smallest split putting both SSM accumulators inside the register for a stream in [lo, hi], or None."""
    for split in range(0, bits_for(lo, hi)):
        (h_lo, h_hi), (l_lo, l_hi) = split_intervals(lo, hi, split)
        if magnitude(*conv_interval(kernel, l_lo, l_hi)).max() > register_max:
            return None                     # the low part only grows with the split
        if magnitude(*conv_interval(kernel, h_lo, h_hi)).max() <= register_max:
            return split
    return None



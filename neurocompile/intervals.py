"""Interval rules: the exact integer range of every register, for any admissible input.

One rule per integer node type (``INTERVAL``).  A rule maps the per-channel integer intervals
``(lo, hi)`` (int64 arrays) of a node's inputs through the node's integer operation
(``neurocompile.arith``) and lists the registers it fills as ``(register, worst |value|, limit)``.
The quantizer uses these rules to choose scales, the range analysis pass to prove the compiled
program, and the artifact loader to re-prove a file before anything runs.

Soundness: every product and sum is first bounded in float64 and refused when it could leave
int64 (|value| >= 2**62), so a hostile artifact cannot make the proof itself overflow.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arith import ARITHMETIC, shift_round
from .errors import RangeError
from .ir import (IntChannelAffine, IntConcat, IntDense, IntEmbedding, IntEncoder, IntGELU, IntGELUResidual,
                 IntGLUResidual, IntInput, IntLIF, IntReadout, IntSampler, IntSSMConv, IntSSMRecurrent)

EXACT_LIMIT = 2.0 ** 62          # int64 arithmetic below this cannot overflow
SHIFT_LIMIT = 40                 # |shift| of any rescaling; compiled programs stay far inside


@dataclass(frozen=True)
class Context:
    """What interval rules need besides the node: the sequence length and the target's limits."""
    length: int
    target: object


def as_int(a) -> np.ndarray:
    return np.asarray(a, dtype=np.int64)


def _exact(estimate, what: str) -> None:
    if not np.all(np.asarray(estimate, dtype=np.float64) < EXACT_LIMIT):
        raise RangeError(f"{what} could exceed 2**62: not provable in 64-bit integers")


def bits_for(lo, hi) -> int:
    """Fewest two's-complement bits holding every value of [lo, hi] (at least 2)."""
    lo_min, hi_max = int(np.min(lo, initial=0)), int(np.max(hi, initial=0))
    bits = 2
    while not (-(1 << (bits - 1)) <= lo_min and hi_max <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


INT64_MIN = np.iinfo(np.int64).min


def magnitude(lo, hi) -> np.ndarray:
    lo, hi = as_int(lo), as_int(hi)
    # abs(-2**63) is -2**63 in int64: a bound that wrapped onto it would read as the smallest magnitude
    if np.any(lo == INT64_MIN) or np.any(hi == INT64_MIN):
        raise RangeError("a bound reaches -2**63: not provable in 64-bit integers")
    return np.maximum(np.abs(lo), np.abs(hi))


def worst(lo, hi) -> int:
    return int(magnitude(lo, hi).max(initial=0))


def matvec_interval(weight, lo, hi, what: str = "weighted sum"):
    """Range of weight @ x when each x[j] lies in [lo[j], hi[j]] (rows of weight are outputs)."""
    w = as_int(weight)
    _exact(np.abs(w.astype(np.float64)) @ magnitude(lo, hi).astype(np.float64), what)
    a, b = w * as_int(lo)[None, :], w * as_int(hi)[None, :]
    return np.minimum(a, b).sum(1), np.maximum(a, b).sum(1)


_TAP_SUMS: dict = {}              # id(kernel) -> (kernel, positive tap sums, negative tap sums)


def tap_sums(kernel):
    """(sum of positive taps, sum of negative taps) per channel, cached: the quantizer asks the same
    kernel's range many times while it searches scales."""
    hit = _TAP_SUMS.get(id(kernel))
    if hit is None or hit[0] is not kernel:
        k = as_int(kernel)
        _exact(np.abs(k.astype(np.float64)).sum(1), "SSM tap sum")
        hit = (kernel, np.maximum(k, 0).sum(1), np.minimum(k, 0).sum(1))
        if len(_TAP_SUMS) > 64:
            _TAP_SUMS.clear()
        _TAP_SUMS[id(kernel)] = hit
    return hit[1], hit[2]


def conv_interval(kernel, lo, hi):
    """Range of sum_j kernel[h, j] * x[h, t - j] when each x[h, .] lies in [lo[h], hi[h]] (lo <= hi):
    the positive taps meet the ends of the interval, the negative taps the opposite ends."""
    pos, neg = tap_sums(kernel)
    lo, hi = as_int(lo), as_int(hi)
    _exact((pos - neg).astype(np.float64) * magnitude(lo, hi), "SSM accumulator")
    return pos * lo + neg * hi, pos * hi + neg * lo


def split_intervals(lo, hi, split: int):
    """Ranges of the high part x >> split and the low part x & (2**split - 1) of x in [lo, hi]."""
    lo_part = (np.zeros_like(as_int(lo)), np.full_like(as_int(lo), (1 << split) - 1))
    return (as_int(lo) >> split, as_int(hi) >> split), lo_part


def check_shift(k, what: str) -> None:
    if np.any(np.abs(as_int(k)) > SHIFT_LIMIT):
        raise RangeError(f"{what} shift outside [-{SHIFT_LIMIT}, {SHIFT_LIMIT}]")


def shift_interval(lo, hi, k):
    """shift_round is monotone non-decreasing, so the ends map to the ends."""
    k = as_int(k)
    check_shift(k, "rescaling")
    _exact(magnitude(lo, hi) * np.exp2(np.maximum(-k, 0).astype(np.float64)), "rescaled value")
    return shift_round(as_int(lo), k), shift_round(as_int(hi), k)


def ssm_intervals(kernel, lo, hi, split: int, shift, bias):
    """(acc_hi range, acc_lo range, output range) of the two-accumulator SSM convolution."""
    (h_lo, h_hi), (l_lo, l_hi) = split_intervals(lo, hi, split)
    acc_hi, acc_lo = conv_interval(kernel, h_lo, h_hi), conv_interval(kernel, l_lo, l_hi)
    a_hi = shift_interval(*acc_hi, as_int(shift) - split)
    a_lo = shift_interval(*acc_lo, shift)
    b = as_int(bias)
    b_lo = b.min(1, initial=0) if b.shape[1] else 0
    b_hi = b.max(1, initial=0) if b.shape[1] else 0
    _exact(magnitude(*a_hi).astype(np.float64) + magnitude(*a_lo) + magnitude(b_lo, b_hi), "SSM output current")
    return acc_hi, acc_lo, (a_hi[0] + a_lo[0] + b_lo, a_hi[1] + a_lo[1] + b_hi)


def lif_ranges(a_lo, a_hi, dv: int, vth: int):
    """Ranges of the LIF current u = a << 6 and of the voltage v before the spike test.

    Above: v never exceeds vth << 6 after a step without a spike, so the next v is at most
    decay(vth << 6) + u_max.  Below: without spikes v converges to u_min / (1 - r) from above.
    """
    rule = ARITHMETIC                    # the proof is of the rule arith.py computes
    _exact(magnitude(a_lo, a_hi) * 2.0 ** rule.lif_act_shift, "LIF current")
    u_lo, u_hi = as_int(a_lo) << rule.lif_act_shift, as_int(a_hi) << rule.lif_act_shift
    keep = rule.lif_decay_unity - dv
    v_hi = ((vth << rule.lif_vth_shift) * keep >> rule.lif_decay_shift) + np.maximum(u_hi, 0)
    v_lo = np.minimum(u_lo, 0) * rule.lif_decay_unity // max(rule.lif_decay_unity - keep, 1) - 1
    return (u_lo, u_hi), (v_lo, v_hi)


def product_interval(lo, hi, table):
    """Range of value * table[i] for value in [lo, hi] and any entry of the table."""
    t_lo, t_hi = int(np.min(table)), int(np.max(table))
    _exact(magnitude(lo, hi) * float(max(abs(t_lo), abs(t_hi))), "value x table")
    ends = [as_int(lo) * t_lo, as_int(lo) * t_hi, as_int(hi) * t_lo, as_int(hi) * t_hi]
    return np.minimum.reduce(ends), np.maximum.reduce(ends)


# ------------------------------------------------------------------ one rule per integer node
def input_interval(op: IntInput, ins, ctx):
    C = op.n_channels
    return (np.zeros(C, np.int64), np.full(C, op.levels, np.int64)), []


def _plane_width(bits: int, what: str, ctx) -> None:
    """Bit-serial operands: 1..register_bits planes (the chip's stream is a register)."""
    if not 1 <= bits <= ctx.target.register_bits:
        raise RangeError(f"{what} has {bits} bit planes (1..{ctx.target.register_bits})")


def encoder_interval(op: IntEncoder, ins, ctx):
    lo, hi = ins["main"]
    reg = ctx.target.register_max
    _plane_width(op.input_bits, "encoder input", ctx)
    _exact(np.abs(as_int(op.weight).astype(np.float64)).sum(1) * 2.0 ** op.input_bits, "bit-serial encoder sum")
    acc = matvec_interval(op.weight, lo, hi, "encoder")
    acc = (acc[0] + as_int(op.bias), acc[1] + as_int(op.bias))
    out = shift_interval(*acc, op.shift)
    need = max(int(np.max(hi, initial=0)).bit_length(), 1)          # levels are unsigned
    return out, [("input bit planes", need, op.input_bits), ("encoder accumulator", worst(*acc), reg),
                 ("stream", worst(*out), reg)]


def embedding_interval(op: IntEmbedding, ins, ctx):
    _, hi = ins["main"]
    t = as_int(op.table)
    rows = [("token ids (table rows)", int(np.max(hi, initial=0)) + 1, t.shape[0])]
    out = (t.min(0), t.max(0))
    return out, rows + [("stream", worst(*out), ctx.target.register_max)]


def ssm_conv_interval(op: IntSSMConv, ins, ctx):
    lo, hi = ins["main"]
    reg = ctx.target.register_max
    _plane_width(op.stream_bits, "SSM stream", ctx)
    if not 0 <= op.split < op.stream_bits:
        raise RangeError(f"accumulator split {op.split} outside 0..{op.stream_bits - 1}")
    pos, neg = tap_sums(op.kernel)     # every plane's partial sum times its weight, as the chip adds it
    _exact((pos - neg).astype(np.float64) * 2.0 ** (op.stream_bits - 1), "bit-serial SSM partial sum")
    acc_hi, acc_lo, out = ssm_intervals(op.kernel, lo, hi, op.split, op.shift, op.bias)
    return out, [(f"stream bit planes ({op.stream_bits} used)", bits_for(lo, hi), op.stream_bits),
                 (f"accumulator, planes >= {op.split}", worst(*acc_hi), reg),
                 (f"accumulator, planes < {op.split}", worst(*acc_lo), reg),
                 ("output current", worst(*out), reg)]


PRODUCT_BITS = 48                # a neuron's full-width product of two 24-bit registers


def mode_state_bound(decay, drive, decay_shift: int) -> np.ndarray:
    """A bound S on |s| (hence on |s_re| and |s_im|) of every mode neuron, over input sequences of
    ANY length, rounding included, for s_0 = 0 and s <- R(a s) + x (arith.ssm_mode_step).

    decay (..., 2) the mantissas of a = (a_re + i a_im) / Q, Q = 2**decay_shift; drive (..., 2) a bound
    on |x_re| and |x_im| (the fan-out's payload plus the state bias) at every step.

    Derivation.  R rounds each component half up, so R(a s) = a s + r with r_re, r_im in [-1/2, 1/2):
    |r| < sqrt(2)/2.  Hence |s_{t+1}| <= |a| |s_t| + |x| + sqrt(2)/2 and, by induction from 0,
    |s_t| <= (X + sqrt(2)/2) / (1 - |a|) for every t, X = sqrt(drive_re**2 + drive_im**2) >= |x|.  This
    needs |a| < 1 strictly, tested exactly in integers: n = a_re**2 + a_im**2 < Q**2.  In integers only:
    X + sqrt(2)/2 < isqrt(drive_re**2 + drive_im**2) + 2, and 1 - |a| = (Q**2 - n) / (Q (Q + sqrt n))
    >= (Q**2 - n) / (Q (Q + isqrt(n) + 1)), so S = ceil((isqrt(.) + 2) Q (Q + isqrt(n) + 1) / (Q**2 - n)).
    The bound is reached to within the rounding term by the input that keeps x aligned with the
    state's phase (for a real decay: x constant at its extreme).  Refuses, naming channel and mode, a
    decay that is not strictly inside the unit circle."""
    a = as_int(decay)
    dr = magnitude(-as_int(drive), as_int(drive))
    key = (a.shape, a.tobytes(), dr.tobytes(), int(decay_shift))
    if key not in _STATE_BOUNDS:              # the quantizer asks again for every output scale it tries
        if len(_STATE_BOUNDS) > 16:
            _STATE_BOUNDS.clear()
        _STATE_BOUNDS[key] = _mode_state_bound(a, dr, int(decay_shift))
    return _STATE_BOUNDS[key].copy()


_STATE_BOUNDS: dict = {}


def _mode_state_bound(a, dr, decay_shift: int) -> np.ndarray:
    import math
    from .errors import RangeError
    Q = 1 << int(decay_shift)
    flat_a, flat_d = a.reshape(-1, 2).tolist(), dr.reshape(-1, 2).tolist()
    modes = a.shape[-2] if a.ndim >= 2 else 1
    out = []
    for i, ((ar, ai), (xr, xi)) in enumerate(zip(flat_a, flat_d)):
        n = ar * ar + ai * ai
        if n >= Q * Q:
            raise RangeError(f"channel {i // modes} mode {i % modes}: decay |a| = {math.sqrt(n) / Q:.9f} is not "
                             f"strictly below 1 after quantization to 2^-{decay_shift}: the state has no bound over "
                             f"sequences of any length")
        num = (math.isqrt(xr * xr + xi * xi) + 2) * Q * (Q + math.isqrt(n) + 1)
        bound = -(-num // (Q * Q - n))
        if bound >= EXACT_LIMIT:
            raise RangeError(f"channel {i // modes} mode {i % modes}: state bound could exceed 2**62: not provable "
                             "in 64-bit integers")
        out.append(bound)
    return np.array(out, dtype=np.int64).reshape(a.shape[:-1])


def recurrent_ranges(op: IntSSMRecurrent, lo, hi):
    """Every register of the recurrent SSM for a stream in [lo, hi] (per channel), as a dict of
    (lo, hi) ranges (or bounds), and the output current's range."""
    from .errors import RangeError
    check_shift(op.in_shift, "fan-out")
    check_shift(op.send_shift, "message")
    check_shift(op.out_shift, "reduction")
    check_shift(op.direct_shift, "direct term")
    if not 1 <= int(op.decay_shift) <= SHIFT_LIMIT:
        raise RangeError(f"decay shift {op.decay_shift} outside 1..{SHIFT_LIMIT}")
    u_lo, u_hi = as_int(lo)[:, None, None], as_int(hi)[:, None, None]
    p_lo, p_hi = scale_interval(u_lo, u_hi, op.gain_in)                          # (H, M, 2)
    x_lo, x_hi = shift_interval(p_lo, p_hi, as_int(op.in_shift)[:, None, None])
    _exact(magnitude(x_lo, x_hi) + np.abs(as_int(op.state_bias)).astype(np.float64), "mode input")
    drive = magnitude(x_lo + as_int(op.state_bias), x_hi + as_int(op.state_bias))
    state = mode_state_bound(op.decay, drive, int(op.decay_shift))               # (H, M)
    _exact(np.abs(as_int(op.decay)).sum(-1).astype(np.float64) * state, "decay x state product")
    product = (np.abs(as_int(op.decay)).sum(-1) * state)
    m_lo, m_hi = shift_interval(-state, state, as_int(op.send_shift)[:, None])
    msg = magnitude(m_lo, m_hi)                                                   # (H, M), both components
    g = np.abs(as_int(op.gain_out))
    _exact((g.astype(np.float64) * msg[..., None]).sum((1, 2)), "reduction sum")
    acc = (g * msg[..., None]).sum((1, 2))                                        # (H,)
    a_lo, a_hi = shift_interval(-acc, acc, op.out_shift)
    d_lo, d_hi = shift_interval(*scale_interval(lo, hi, op.direct), op.direct_shift)
    _exact(magnitude(a_lo, a_hi).astype(np.float64) + magnitude(d_lo, d_hi) + np.abs(as_int(op.out_bias)),
           "recurrent SSM output")
    out = (a_lo + d_lo + as_int(op.out_bias), a_hi + d_hi + as_int(op.out_bias))
    return {"product": (p_lo, p_hi), "payload": (x_lo, x_hi), "state": state, "decay_product": product,
            "message": msg, "acc": acc, "direct": scale_interval(lo, hi, op.direct)}, out


def ssm_recurrent_interval(op: IntSSMRecurrent, ins, ctx):
    reg = ctx.target.register_max
    r, out = recurrent_ranges(op, *ins["main"])
    return out, [("decay mantissa", worst(-op.decay, op.decay), reg),
                 ("fan-out product gain x u", max(worst(*r["product"]), worst(*r["direct"])), reg),
                 ("fan-out payload (graded message)", worst(*r["payload"]), reg),
                 ("mode state (re, im), any length", int(r["state"].max(initial=0)), reg),
                 (f"decay x state product ({PRODUCT_BITS}-bit)", int(r["decay_product"].max(initial=0)),
                  2 ** (PRODUCT_BITS - 1) - 1),
                 ("mode message payload", int(r["message"].max(initial=0)), reg),
                 ("reduction accumulator", int(r["acc"].max(initial=0)), reg),
                 ("output current", worst(*out), reg)]


def lif_interval(op: IntLIF, ins, ctx):
    (u_lo, u_hi), (v_lo, v_hi) = lif_ranges(*ins["main"], op.dv, op.vth)
    reg = ctx.target.register_max
    n = len(u_lo)
    return (np.zeros(n, np.int64), np.ones(n, np.int64)), [
        ("threshold mantissa", int(op.vth), 2 ** ctx.target.vth_bits - 1),
        ("LIF current u", worst(u_lo, u_hi), reg), ("LIF voltage v", worst(v_lo, v_hi), reg)]


def dense_interval(op: IntDense, ins, ctx):
    out = matvec_interval(op.weight, *ins["main"], "Dense accumulation")
    return out, [("dendritic accumulator", worst(*out), ctx.target.register_max)]


def glu_interval(op: IntGLUResidual, ins, ctx):
    H = op.value_shift.shape[0]
    reg = ctx.target.register_max
    d_lo, d_hi = ins["main"][0] + as_int(op.bias), ins["main"][1] + as_int(op.bias)
    check_shift(op.gate_shift, "GLU gate")
    # the gate is clamped to the table after its rescaling: the rescaled value must exist in 64 bits
    _exact(magnitude(d_lo[H:], d_hi[H:]) * np.exp2(np.maximum(-as_int(op.gate_shift), 0).astype(np.float64)),
           "rescaled gate")
    s_lo, s_hi = shift_interval(d_lo[:H], d_hi[:H], op.value_shift)
    p_lo, p_hi = product_interval(s_lo, s_hi, op.lut)
    o_lo, o_hi = shift_interval(p_lo, p_hi, op.out_shift)
    lo, hi = ins["skip"]
    out = (as_int(lo) + o_lo, as_int(hi) + o_hi)
    return out, [("value/gate", worst(d_lo, d_hi), reg), ("value x sigmoid", worst(p_lo, p_hi), reg),
                 ("stream", worst(*out), reg)]


def readout_interval(op: IntReadout, ins, ctx):
    s_lo, s_hi = shift_interval(*ins["main"], op.pre_shift)
    L = ctx.length
    _exact(magnitude(s_lo, s_hi).astype(np.float64) * L, "readout time sum")
    t_lo, t_hi = s_lo * L, s_hi * L
    logits = matvec_interval(op.weight, t_lo, t_hi, "decoder")
    logits = (logits[0] + as_int(op.bias), logits[1] + as_int(op.bias))
    return logits, [("time sum", worst(t_lo, t_hi), ctx.target.register_max),
                    ("logits (host)", worst(*logits), ctx.target.host_max)]


def scale_interval(lo, hi, m):
    """Range of v * m[h] for v in [lo[h], hi[h]] (a per-channel multiplier of either sign)."""
    m = as_int(m)
    _exact(magnitude(lo, hi) * np.abs(m).astype(np.float64), "per-channel product")
    a, b = as_int(lo) * m, as_int(hi) * m
    return np.minimum(a, b), np.maximum(a, b)


def affine_intervals(op, lo, hi):
    """(product range, output range) of arith.channel_affine."""
    v_lo, v_hi = shift_interval(lo, hi, op.in_shift)
    p_lo, p_hi = scale_interval(v_lo, v_hi, op.mult)
    _exact(magnitude(p_lo, p_hi) + np.abs(as_int(op.offset)).astype(np.float64), "affine sum")
    s_lo, s_hi = p_lo + as_int(op.offset), p_hi + as_int(op.offset)
    return (s_lo, s_hi), shift_interval(s_lo, s_hi, op.out_shift)


def channel_affine_interval(op: IntChannelAffine, ins, ctx):
    (s_lo, s_hi), out = affine_intervals(op, *ins["main"])
    reg = ctx.target.register_max
    return out, [("affine product + offset", worst(s_lo, s_hi), reg), ("stream", worst(*out), reg)]


def sampler_interval(op: IntSampler, ins, ctx):
    if not 1 <= op.prob_bits <= ctx.target.register_bits - 2 or not 0 <= op.stream < 2 ** 31:
        raise RangeError(f"probability bits {op.prob_bits} (1..{ctx.target.register_bits - 2}) or uniform stream "
                         f"{op.stream} out of range")
    lo, hi = as_int(op.lo), as_int(op.hi)
    _exact(magnitude(lo, hi) * 2.0, "sampler window")
    if np.any(lo > hi):
        raise RangeError(f"sampler window low end above its high end at channel {int(np.argmax(lo > hi))}")
    x_lo, x_hi = shift_interval(*ins["main"], op.in_shift)
    centred = (np.clip(x_lo, lo, hi) - lo, np.clip(x_hi, lo, hi) - lo)       # clip and centring are monotone
    p_lo, p_hi = scale_interval(*centred, op.mult)
    _exact(magnitude(p_lo, p_hi) + np.abs(as_int(op.offset)).astype(np.float64), "sampler sum")
    reg = ctx.target.register_max
    n = len(op.mult)
    return (np.zeros(n, np.int64), np.ones(n, np.int64)), [
        ("sampler window", worst(lo, hi), reg), ("pre-shifted input", worst(x_lo, x_hi), reg),
        ("affine product + offset", worst(p_lo + as_int(op.offset), p_hi + as_int(op.offset)), reg)]


def _gelu_ranges(op, ins, ctx):
    """(value/gate range, value x Phi range, GELU output range) of value x table[value]."""
    z_lo, z_hi = ins["main"][0] + as_int(op.bias), ins["main"][1] + as_int(op.bias)
    check_shift(op.gate_shift, "GELU gate")
    v_lo, v_hi = shift_interval(z_lo, z_hi, op.value_shift)
    p_lo, p_hi = product_interval(v_lo, v_hi, op.lut)
    return (z_lo, z_hi), (p_lo, p_hi), shift_interval(p_lo, p_hi, op.out_shift)


def gelu_interval(op: IntGELU, ins, ctx):
    z, p, out = _gelu_ranges(op, ins, ctx)
    reg = ctx.target.register_max
    return out, [("value/gate", worst(*z), reg), ("value x Phi", worst(*p), reg), ("GELU output", worst(*out), reg)]


def gelu_residual_interval(op: IntGELUResidual, ins, ctx):
    z, p, (o_lo, o_hi) = _gelu_ranges(op, ins, ctx)
    lo, hi = ins["skip"]
    out = (as_int(lo) + o_lo, as_int(hi) + o_hi)
    reg = ctx.target.register_max
    return out, [("value/gate", worst(*z), reg), ("value x Phi", worst(*p), reg), ("stream", worst(*out), reg)]


def concat_interval(op: IntConcat, ins, ctx):
    return (np.concatenate([ins["main"][0], ins["rest"][0]]), np.concatenate([ins["main"][1], ins["rest"][1]])), []


INTERVAL = {
    IntInput: input_interval,
    IntEncoder: encoder_interval,
    IntEmbedding: embedding_interval,
    IntSSMConv: ssm_conv_interval,
    IntSSMRecurrent: ssm_recurrent_interval,
    IntLIF: lif_interval,
    IntDense: dense_interval,
    IntGLUResidual: glu_interval,
    IntReadout: readout_interval,
    IntChannelAffine: channel_affine_interval,
    IntSampler: sampler_interval,
    IntGELU: gelu_interval,
    IntGELUResidual: gelu_residual_interval,
    IntConcat: concat_interval,
}


def node_interval(op, ins: dict, ctx: Context):
    """(output interval, register rows) of one integer node."""
    return INTERVAL[type(op)](op, ins, ctx)


def register_table(graph, ctx: Context):
    """Walk an integer graph (a ``Graph`` or a ``Program``) in order: ([(node, register, worst,
    limit)], {node: output interval})."""
    rows, out = [], {}
    for name in graph.topo():
        ins = {port: out[src] for port, src in graph.inputs(name).items()}
        try:
            out[name], regs = node_interval(graph.op(name), ins, ctx)
        except RangeError as exc:
            raise RangeError(f"{name}: {exc}") from None
        rows += [(name, reg, w, lim) for reg, w, lim in regs]
    return rows, out

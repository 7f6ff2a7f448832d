"""The integer arithmetic of a compiled SpikingSSM: the one written rule.

Every function here is elementwise integer code written with operators that numpy and torch
evaluate identically (``+ - * << >>``, ``abs``, comparisons, ``where``, indexing).  The Lava
``fixed_pt`` process models call them on numpy arrays (one time step), the emulator's torch back
end on tensors (whole batches), and its compiled back end has numba compile these very functions
for scalars (``neurocompile.compiled_layer``), so none of them can drift from the others.

Conventions
-----------
* All values are int64.  ``>>`` is an arithmetic shift (floor toward -inf) in both libraries.
* A *shift* ``k`` may be negative: ``shift_round(v, k)`` divides by ``2**k`` rounding half up when
  ``k > 0`` and multiplies by ``2**-k`` when ``k <= 0``.
* Register widths are Loihi 2's: neuron state and accumulators are 24-bit signed.  The compiler's
  range analysis (``neurocompile.passes.analyze_ranges``) proves none of them leaves its range, so
  the functions below never need to clip -- except where Lava's stock LIF itself saturates or wraps,
  which ``lif_step`` reproduces exactly.
"""
from __future__ import annotations

import numpy as np

from .target import Arithmetic

# The rule's constants, written once here as plain integers so numba compiles them into the kernels as
# literals.  They are Lava's stock LIF (lava/proc/lif/models.py, PyLifModelBitAcc: max_uv_val = 2**23,
# a_in << 6, vth << 6, decays (4096 - d) >> 12); a target declares it computes this rule
# (Target.arithmetic) and neurocompile.target.get_target refuses one that does not.
ARITHMETIC = Arithmetic(register_bits=24, lif_act_shift=6, lif_vth_shift=6, lif_decay_shift=12,
                        lif_du_no_memory=4095)

REGISTER_MAX = ARITHMETIC.register_max                # largest value of a 24-bit signed register
LIF_DECAY_SHIFT = ARITHMETIC.lif_decay_shift          # decays are (4096 - d) >> 12
LIF_DECAY_UNITY = ARITHMETIC.lif_decay_unity
LIF_ACT_SHIFT = ARITHMETIC.lif_act_shift              # a_in << 6 before it reaches u
LIF_VTH_SHIFT = ARITHMETIC.lif_vth_shift              # spike when v > vth << 6
LIF_DU_NO_MEMORY = ARITHMETIC.lif_du_no_memory        # du + 1 == 4096: u holds only this step's input


def _where(cond, a, b):
    if isinstance(cond, np.ndarray) or np.isscalar(cond):
        return np.where(cond, a, b)
    import torch  # only the emulator passes tensors; the Lava side never imports torch
    return torch.where(cond, a, b)


def _clip(x, lo: int, hi: int):
    if isinstance(x, np.ndarray) or np.isscalar(x):
        return np.clip(x, lo, hi)
    return x.clamp(lo, hi)


def _relu(k):
    """max(k, 0) for numpy or torch integer arrays (bool * int promotes to int in both)."""
    return k * (k > 0)


def shift_round(v, k):
    """v / 2**k rounded half up (k > 0), or v * 2**-k (k <= 0); k broadcasts against v."""
    left = _relu(-k)
    right = _relu(k)
    return ((v << left) + ((1 << right) >> 1)) >> right


# --------------------------------------------------------------------------------------------
# Graded input without multipliers: bit-serial accumulation.
# --------------------------------------------------------------------------------------------
def bit_planes(x, n_bits: int):
    """Split two's-complement integers into ``n_bits`` binary planes and their signed weights.

    x == sum_j weight_j * plane_j with plane_j in {0, 1}; the top plane has weight -2**(n-1).
    """
    planes = [(x >> j) & 1 for j in range(n_bits)]
    weights = [1 << j for j in range(n_bits - 1)] + [-(1 << (n_bits - 1))]
    return planes, weights


def encode(levels, weight, bias, shift):
    """Encoder x0[h] = shift_round(sum_i weight[h, i] * levels[i] + bias[h], shift[h]) (the definition;
    the emulator's form).  The sum is formed finer than the stream (weights keep their mantissa even
    when the raw input is wide) and one rounding shift per channel puts it on the stream.

    ``levels`` (..., d_in) are the raw non-negative input integers (pixels); ``weight`` (H, d_in).
    """
    return shift_round((levels[..., None, :] * weight).sum(-1) + bias, shift)


def encode_bit_serial(levels, weight, bias, shift, n_bits: int):
    """The same integers as ``encode``, the way the chip forms them: each set bit j of input i
    adds ``weight[:, i] << j``, so no product is ever formed (tests prove equality)."""
    acc = bias + 0 * levels[..., :1]                     # (..., H)
    for j in range(n_bits):
        plane = (levels >> j) & 1
        for i in range(weight.shape[1]):
            shifted = weight[:, i] << j
            acc = acc + _where(plane[..., i:i + 1] > 0, shifted, 0 * shifted)
    return shift_round(acc, shift)


def embed(tokens, table):
    """Token ids -> table rows: the one-hot spike of the token selects one synapse row (no product)."""
    return table[tokens]


def split_stream(x, split: int):
    """x == hi * 2**split + lo with 0 <= lo < 2**split (arithmetic shift and mask, any sign)."""
    return x >> split, x & ((1 << split) - 1)


def conv_taps_bit_serial(history, kernel, n_bits: int, split: int = 0):
    """One output step of the causal SSM convolution, accumulate-only, into two accumulators.

    history (T, H): x[t], x[t-1], ... (zeros before the sequence start); kernel (H, T) integer
    taps.  For each bit plane of the history, the taps where the bit is set are summed (pure
    accumulation); planes below ``split`` are shifted and added into ``acc_lo``, the others into
    ``acc_hi``, so that sum_l kernel[h, l] * x[t-l] == acc_hi * 2**split + acc_lo while each
    accumulator stays within its 24-bit register.  Returns (acc_hi, acc_lo).
    """
    taps = kernel.T                                      # (T, H)
    acc_hi, acc_lo = 0 * taps[0], 0 * taps[0]
    planes, plane_weights = bit_planes(history, n_bits)
    for j, (plane, pw) in enumerate(zip(planes, plane_weights)):
        partial = _where(plane > 0, taps, 0 * taps).sum(0)   # accumulate taps where the bit is 1
        if j < split:
            acc_lo = acc_lo + partial * pw                    # pw is a power of two: a shift
        else:
            acc_hi = acc_hi + partial * (pw >> split if pw > 0 else -((-pw) >> split))
    return acc_hi, acc_lo


def ssm_current(acc_hi, acc_lo, split: int, shift, bias):
    """The SSM's output current from its two accumulators: each is rescaled on its own, then added,
    plus the step's bias (a folded BatchNorm shift's response; 0 when there is none)."""
    return shift_round(acc_hi, shift - split) + shift_round(acc_lo, shift) + bias


# --------------------------------------------------------------------------------------------
# The SSM as a diagonal recurrence: fan-out synapse, one neuron per complex mode, reduction synapse.
# --------------------------------------------------------------------------------------------
def ssm_fan_out(u, gain, shift):
    """A graded synapse: the input times an integer gain, rescaled (half up) to the target's scale.
    Feeds each mode neuron (gain = an input-gain component) and the direct term (gain = D)."""
    return shift_round(u * gain, shift)


def ssm_mode_step(s_re, s_im, x_re, x_im, a_re, a_im, decay_shift: int, e_re, e_im):
    """One step of a mode neuron, s <- a s + x + e in integers: the complex product a s is formed
    exactly (a_re s_re - a_im s_im, a_re s_im + a_im s_re), then each component is rounded ONCE,
    half up (shift_round by ``decay_shift``), so a step's rounding error is in [-1/2, 1/2) per
    component.  Returns (s_re, s_im)."""
    re = shift_round(a_re * s_re - a_im * s_im, decay_shift) + x_re + e_re
    im = shift_round(a_re * s_im + a_im * s_re, decay_shift) + x_im + e_im
    return re, im


def ssm_message(s, send_shift):
    """The graded payload a mode neuron sends: its state component rescaled (half up)."""
    return shift_round(s, send_shift)


def ssm_reduce_term(m_re, m_im, g_re, g_im):
    """One mode's contribution to the reduction synapse: Re(g m) with g = 2c (the sum over modes is
    an accumulation: integers, so its order does not matter)."""
    return g_re * m_re - g_im * m_im


def ssm_recurrent_output(acc, out_shift, direct_term, out_bias):
    """The recurrent SSM's output current: the reduction's sum rescaled, plus D u (ssm_fan_out) and
    the folded constant."""
    return shift_round(acc, out_shift) + direct_term + out_bias


# --------------------------------------------------------------------------------------------
# Neuron: Lava's stock LIF fixed_pt arithmetic with du = 4095 (u = a_in << 6).
# --------------------------------------------------------------------------------------------
def lif_current(a_in):
    """u = a_in << 6, wrapped to 24 bits exactly as Lava wraps it (du=4095: no memory in u)."""
    limit = REGISTER_MAX + 1                              # 2**23, Lava's max_uv_val
    u = a_in << LIF_ACT_SHIFT
    return _where(u > limit, u - 2 * limit, _where(u <= -limit, u + 2 * limit, u))


def lif_voltage_step(v, u, dv: int, vth: int):
    """v = sat24(trunc0(v * (4096 - dv) / 4096) + u); s = v > vth << 6; v = 0 where s."""
    d = v * (LIF_DECAY_UNITY - dv)
    d = (d + ((d >> 63) & (LIF_DECAY_UNITY - 1))) >> LIF_DECAY_SHIFT     # divide, rounding toward zero
    v = _clip(d + u, -REGISTER_MAX, REGISTER_MAX)
    spikes = v > (vth << LIF_VTH_SHIFT)
    return _where(spikes, 0 * v, v), spikes


def lif_step(v, a_in, dv: int, vth: int):
    """One step of Lava's bit-accurate LIF (PyLifModelBitAcc) with du=4095 and bias 0.

    Returns (v_next, spikes).  Split in two so batched code can compute the current for a whole
    sequence at once (it does not depend on v) and loop only over the voltage.
    """
    return lif_voltage_step(v, lif_current(a_in), dv, vth)


# --------------------------------------------------------------------------------------------
# Mixer: GLU over the Dense accumulations, then the residual add.
# --------------------------------------------------------------------------------------------
def gated_residual(stream, value_acc, gate_acc, value_shift, gate_shift, out_shift, sigmoid_lut):
    """x_next = x + (a * sigmoid(g)) rescaled to the stream's scale, elementwise.

    ``value_acc`` / ``gate_acc`` are the Dense accumulations plus bias of the value and gate rows.
    ``sigmoid_lut`` has an odd centre: index = clamp(shift_round(g, gate_shift)) + len//2.
    """
    value = shift_round(value_acc, value_shift)
    half = sigmoid_lut.shape[0] // 2
    gate = _clip(shift_round(gate_acc, gate_shift), -half, half - 1)
    return stream + shift_round(value * sigmoid_lut[gate + half], out_shift)


def glu_residual(stream, dense_acc, mix_bias, value_shift, gate_shift, out_shift, sigmoid_lut):
    """The mixer of one step (or a channels-last batch): GLU over the Dense accumulations, then
    the residual add.  dense_acc (..., 2H): the Dense process output (sum of weights of the
    neurons that spiked); first H rows are the value ``a``, last H the gate ``g`` (GLU
    convention: a * sigmoid(b)).
    """
    h = stream.shape[-1]
    acc = dense_acc + mix_bias
    return gated_residual(stream, acc[..., :h], acc[..., h:], value_shift, gate_shift, out_shift, sigmoid_lut)


def readout_accumulate(total, stream, pre_shift):
    """The readout's time sum: each step adds the final stream, pre-shifted to fit 24 bits."""
    return total + shift_round(stream, pre_shift)


def readout_logits(stream_sum, weight, bias):
    """Decoder on the time-summed stream: logits = weight @ sum_t x[t] + bias (host / x86 core)."""
    return (stream_sum[..., None, :] * weight).sum(-1) + bias


# --------------------------------------------------------------------------------------------
# Stochastic spikes (P-SpikeSSM): a counter-based PRNG and a fixed-point Bernoulli sampler.
# --------------------------------------------------------------------------------------------
MASK32 = (1 << 32) - 1


def _mul32(x, c: int):
    """(x * c) mod 2**32 for 0 <= x < 2**32 and a 32-bit constant, in pieces no int64 overflows."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & MASK32


def hash32(x):
    """A 32-bit integer hash with full avalanche (Wellons' lowbias32), on int64 holding 32 bits."""
    x = x & MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


SEED_MAX = 2 ** 63 - 1          # seeds are whole int64 values >= 0: every bit of one keys the PRNG


def check_seed(seed) -> int:
    """The seed as an int, or ValueError naming the range (no silent wrap to 32 bits)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= SEED_MAX:
        raise ValueError(f"seed {seed!r} is outside 0..2**63-1")
    return int(seed)


def stream_key(seed, stream, sample):
    """The 32-bit key of one (seed, stream, sample): the seed's two 32-bit halves, the uniform
    source and the sample's index in the data file, each through the hash, so no two differ in
    only one input and collide by construction."""
    h = hash32(hash32(seed & MASK32) + (seed >> 32))
    return hash32(hash32(h + stream) + sample)


def uniform_bits(seed, stream, sample, neuron, step, bits: int):
    """A uniform integer in [0, 2**bits) for each (seed, stream, sample, neuron, step): no state, so
    the emulator (whole sequences) and a Lava process (one step) draw the very same numbers, and a
    sample's uniforms do not depend on the batch or shard it runs in.  ``stream`` names a uniform
    source (one per layer and uniform tensor of the model); ``sample`` is the index in the data file."""
    return uniform_from_key(stream_key(seed, stream, sample), neuron, step, bits)


def uniform_from_key(key, neuron, step, bits: int):
    """The uniforms of one (seed, stream, sample) key (``stream_key``) for each (neuron, step)."""
    h = hash32(hash32(key + neuron) + step)
    return h >> (32 - bits)


def channel_affine(v, in_shift, mult, offset, out_shift):
    """y = (shift_round(v, in_shift) * mult + offset) rescaled by out_shift, per channel: a
    neuron-level multiply (a BatchNorm, or the affine that makes a firing probability)."""
    return shift_round(shift_round(v, in_shift) * mult + offset, out_shift)


def sample(v, in_shift, lo, hi, mult, offset, out_shift, bits: int, uniform):
    """Bernoulli spikes.  The input, pre-shifted, is held to the window [lo, hi] outside which the
    probability is clamped anyway and measured from the window's low end, x = clip(shift_round(v,
    in_shift), lo, hi) - lo: that centring keeps the multiply's operand as narrow as the window, so a
    steep sampler on a wide stream keeps its input bits.  p = clip(channel_affine(x), 0, 2**bits) is
    compared with a ``bits``-bit uniform, spike when p > u (so P(spike) = p / 2**bits).
    Returns (p, spikes)."""
    x = _clip(shift_round(v, in_shift), lo, hi) - lo
    p = _clip(channel_affine(x, 0, mult, offset, out_shift), 0, 1 << bits)
    return p, p > uniform


def gelu(z, value_shift, gate_shift, out_shift, phi_lut):
    """GELU(z) = z * Phi(z): the value z (pre-shifted) times the normal CDF from a table indexed by
    z itself -- the GLU's arithmetic with the gate equal to the value."""
    return gated_residual(0 * z, z, z, value_shift, gate_shift, out_shift, phi_lut)


def gelu_residual(stream, z, value_shift, gate_shift, out_shift, phi_lut):
    """x_next = x + GELU(z) at the stream's scale."""
    return gated_residual(stream, z, z, value_shift, gate_shift, out_shift, phi_lut)

"""Interval rules: the exact integer range of every register, for any admissible input.

Each function maps per-channel integer intervals ``(lo, hi)`` (int64 numpy arrays) through one
integer operation of ``neurocompile.arith``.  The quantizer uses them to choose scales; the range
analysis pass uses the same rules to prove that no 24-bit register wraps or saturates.
"""
from __future__ import annotations

import numpy as np

from .arith import LIF_ACT_SHIFT, LIF_DECAY_UNITY, LIF_VTH_SHIFT, shift_round


def as_int(a) -> np.ndarray:
    return np.asarray(a, dtype=np.int64)


def bits_for(lo, hi) -> int:
    """Fewest two's-complement bits holding every value of [lo, hi] (at least 2)."""
    lo_min, hi_max = int(np.min(lo)), int(np.max(hi))
    bits = 2
    while not (-(1 << (bits - 1)) <= lo_min and hi_max <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def magnitude(lo, hi) -> np.ndarray:
    return np.maximum(np.abs(lo), np.abs(hi))


def conv_interval(kernel, lo, hi):
    """Range of sum_l kernel[h,l] * x[h, t-l] when each x[h, .] lies in [lo[h], hi[h]]."""
    k = as_int(kernel)
    a, b = k * lo[:, None], k * hi[:, None]
    return np.minimum(a, b).sum(1), np.maximum(a, b).sum(1)


def split_intervals(lo, hi, split: int):
    """Ranges of the high part x >> split and the low part x & (2**split - 1) of x in [lo, hi]."""
    lo_part = (np.zeros_like(lo), np.full_like(lo, (1 << split) - 1))
    return (as_int(lo) >> split, as_int(hi) >> split), lo_part


def ssm_intervals(kernel, lo, hi, split: int, shift):
    """(acc_hi range, acc_lo range, LIF input range) of the two-accumulator SSM convolution."""
    (h_lo, h_hi), (l_lo, l_hi) = split_intervals(lo, hi, split)
    acc_hi, acc_lo = conv_interval(kernel, h_lo, h_hi), conv_interval(kernel, l_lo, l_hi)
    a_hi = shift_interval(*acc_hi, as_int(shift) - split)
    a_lo = shift_interval(*acc_lo, shift)
    return acc_hi, acc_lo, (a_hi[0] + a_lo[0], a_hi[1] + a_lo[1])


def spike_dense_interval(weight, bias):
    """Range of weight @ s + bias over binary spike vectors s."""
    w = as_int(weight)
    return bias + np.minimum(w, 0).sum(1), bias + np.maximum(w, 0).sum(1)


def shift_interval(lo, hi, k):
    """shift_round is monotone non-decreasing, so the ends map to the ends."""
    return shift_round(as_int(lo), as_int(k)), shift_round(as_int(hi), as_int(k))


def lif_ranges(a_lo, a_hi, dv: int, vth: int):
    """Ranges of the LIF current u = a << 6 and of the voltage v before the spike test.

    Above: v never exceeds vth << 6 after a step without a spike, so the next v is at most
    decay(vth << 6) + u_max.  Below: without spikes v converges to u_min / (1 - r) from above.
    """
    u_lo, u_hi = as_int(a_lo) << LIF_ACT_SHIFT, as_int(a_hi) << LIF_ACT_SHIFT
    keep = LIF_DECAY_UNITY - dv
    v_hi = ((vth << LIF_VTH_SHIFT) * keep >> 12) + np.maximum(u_hi, 0)
    v_lo = np.minimum(u_lo, 0) * LIF_DECAY_UNITY // max(LIF_DECAY_UNITY - keep, 1) - 1
    return (u_lo, u_hi), (v_lo, v_hi)


def product_interval(lo, hi, lut_max: int):
    """Range of value * sigmoid_lut[i] with 0 <= lut <= lut_max."""
    return np.minimum(lo, 0) * lut_max, np.maximum(hi, 0) * lut_max

"""Number formats: float tensors -> integer mantissas with power-of-two exponents."""
from __future__ import annotations

import numpy as np


def mantissa_max(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def row_exponents(w: np.ndarray, bits: int) -> np.ndarray:
    """Largest e per row with max|w_row| * 2**e <= mantissa_max (0 for all-zero rows)."""
    if not np.isfinite(w).all():
        from .errors import RangeError
        raise RangeError("weights are not finite")
    peak = np.abs(w).max(axis=1)
    safe = np.where(peak > 0, peak, 1.0)
    e = np.floor(np.log2(mantissa_max(bits) / safe)).astype(np.int64)
    # floor(log2) can land one too high through rounding: step down where the mantissa overflows
    over = np.round(peak * np.exp2(e.astype(np.float64))) > mantissa_max(bits)
    return np.where(peak > 0, e - over, 0)


def quantize_rows(w: np.ndarray, bits: int):
    """Per-row power-of-two scaling: returns (int mantissas, exponents) with w ~ m * 2**-e."""
    e = row_exponents(w, bits)
    m = np.round(w * np.exp2(e.astype(np.float64))[:, None]).astype(np.int64)
    return m, e


_KERNELS: dict = {}              # (id(kernel), bits) -> (kernel, result): the compiler asks twice per SSM


def quantize_kernel(kernel: np.ndarray, bits: int):
    """Cached ``quantize_kernel_taps`` (keyed by the array object itself, which the cache holds)."""
    hit = _KERNELS.get((id(kernel), bits))
    if hit is None or hit[0] is not kernel:
        if len(_KERNELS) > 64:
            _KERNELS.clear()
        hit = _KERNELS[(id(kernel), bits)] = (kernel, quantize_kernel_taps(kernel, bits))
    return hit[1]


def quantize_kernel_taps(kernel: np.ndarray, bits: int):
    """SSM kernel (H, L): one exponent per channel, so slow and fast channels both keep 8 bits.

    Taps are rounded with error feedback along the kernel (first-order sigma-delta): each tap's
    rounding error is carried into the next tap, so every partial sum of the integer kernel stays
    within half a step of the exact one.  The convolution's error is then high-pass and the slow
    part of the response -- most of what an SSM kernel does over a long sequence -- is kept exactly.
    """
    if not np.isfinite(kernel).all():
        from .errors import RangeError
        raise RangeError("the kernel is not finite (its SSM parameters overflow float64)")
    e = row_exponents(kernel, bits)
    scaled = kernel * np.exp2(e.astype(np.float64))[:, None]
    top = mantissa_max(bits)
    q = np.empty(kernel.shape, dtype=np.int64)
    carry = np.zeros(kernel.shape[0])
    for l in range(kernel.shape[1]):
        want = scaled[:, l] + carry
        q[:, l] = np.minimum(np.maximum(np.round(want), -top), top)
        carry = want - q[:, l]
    return q, e


def encoder_exponents(w: np.ndarray, b: np.ndarray, stream_frac: np.ndarray, bits: int, input_peak: np.ndarray,
                      register_max: int) -> np.ndarray:
    """Per channel, the scale 2**-e the encoder's weights w (H, C) and bias b (H,) are held at: the finest
    that gives the weights a ``bits`` mantissa, never coarser than the stream's 2**-stream_frac (that is
    what the old rule used, and a large weight keeps it), at most ``intervals.SHIFT_LIMIT`` finer, and coarsened
    until |w| @ input_peak + |b| fits the accumulator.  A wide raw input (255 levels for [0, 1]) makes the
    weights per level small; held at the stream's scale they keep only a few bits (8 % error on the
    Fashion-MNIST example's encoder, 0.3 % with its own mantissa)."""
    from .intervals import SHIFT_LIMIT          # the rescaling shift the proof admits
    f = np.asarray(stream_frac, dtype=np.int64)
    e = np.clip(row_exponents(w, bits), f, f + SHIFT_LIMIT)
    while True:
        acc = np.abs(np.round(w * np.exp2(e.astype(np.float64))[:, None])) @ np.asarray(input_peak, np.float64) \
            + np.abs(np.round(b * np.exp2(e.astype(np.float64))))
        over = (acc > register_max) & (e > f)
        if not over.any():
            return e
        e = e - over


def encoder_integers(w: np.ndarray, b: np.ndarray, stream_frac: np.ndarray, bits: int, input_peak: np.ndarray,
                     register_max: int):
    """The encoder's weights w (H, C) and bias b (H,) per raw level -> (weight mantissas, bias, exponents e):
    both held at 2**-e (``encoder_exponents``); the sum is shifted by e - stream_frac onto the stream."""
    e = encoder_exponents(w, b, stream_frac, bits, input_peak, register_max)
    return to_fixed(w, e[:, None]), to_fixed(b, e), e


def quantize_scalar_scale(w: np.ndarray, bits: int) -> int:
    """One exponent for a whole matrix (the decoder: logits must share one scale)."""
    return int(row_exponents(np.abs(w).reshape(1, -1), bits)[0])


FIXED_LIMIT = 2.0 ** 62          # int64 holds these exactly; anything larger cannot be a register value


def to_fixed(x: np.ndarray, frac_bits) -> np.ndarray:
    """round(x * 2**frac_bits) as int64; refuses values that are not finite or do not fit."""
    scaled = np.round(np.asarray(x, dtype=np.float64) * np.exp2(np.asarray(frac_bits, dtype=np.float64)))
    if not np.all(np.abs(scaled) < FIXED_LIMIT):
        from .errors import RangeError
        worst = np.max(np.abs(scaled)) if np.isfinite(scaled).all() else float("nan")
        raise RangeError(f"a value scales to {worst:.3g}, which no 64-bit integer (let alone a 24-bit register) holds")
    return scaled.astype(np.int64)


def sigmoid_lut(in_frac_bits: int, lut_bits: int, out_frac_bits: int) -> np.ndarray:
    """sigmoid((i - n/2) / 2**in_frac_bits) * 2**out_frac_bits, rounded, for i in 0..n-1."""
    n = 1 << lut_bits
    z = (np.arange(n, dtype=np.float64) - n // 2) / (1 << in_frac_bits)
    return np.round((1 << out_frac_bits) / (1 + np.exp(-z))).astype(np.int64)


def phi_lut(in_frac_bits: int, lut_bits: int, out_frac_bits: int) -> np.ndarray:
    """Phi((i - n/2) / 2**in_frac_bits) * 2**out_frac_bits, rounded: the normal CDF for GELU = z Phi(z)."""
    from math import erf, sqrt
    n = 1 << lut_bits
    z = (np.arange(n, dtype=np.float64) - n // 2) / (1 << in_frac_bits)
    return np.round((1 << out_frac_bits) * 0.5 * (1.0 + np.vectorize(erf)(z / sqrt(2.0)))).astype(np.int64)


def gelu(z: np.ndarray) -> np.ndarray:
    """The exact (erf) GELU in float64."""
    from math import erf, sqrt
    return z * 0.5 * (1.0 + np.vectorize(erf)(np.asarray(z, dtype=np.float64) / sqrt(2.0)))

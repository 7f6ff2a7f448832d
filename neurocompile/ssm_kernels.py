"""The kernel an SSM layer's integers actually compute, against its float kernel, per lowering.

A convolution computes exactly its quantized taps (integer sums; only the output is rounded).  A
recurrence rounds inside its loop, so its kernel is measured: the integer rule is run (the
emulator's rule, i.e. arith) on an impulse of the largest admissible input and on zeros, and the
difference, rescaled to model units, is its impulse response.  Both are compared with the float
kernel on the same two measures: the taps, and the step response (partial sums of the taps, what
a slow SSM mostly computes; the convolution's error feedback keeps these).
"""
from __future__ import annotations

import numpy as np

CHANNELS_PER_CHUNK = 16          # (chunk, M, L) complex powers at a time


def modal_kernel(a: np.ndarray, b: np.ndarray, c: np.ndarray, D: np.ndarray, L: int) -> np.ndarray:
    """K[h, l] = 2 Re(sum_m c b a**l) + D [l == 0], float64 (H, L)."""
    H = a.shape[0]
    out = np.empty((H, L))
    steps = np.arange(L)
    for h0 in range(0, H, CHANNELS_PER_CHUNK):
        sl = slice(h0, h0 + CHANNELS_PER_CHUNK)
        powers = np.exp(np.log(a[sl])[..., None] * steps)                      # (chunk, M, L)
        out[sl] = 2.0 * np.einsum("hm,hml->hl", c[sl] * b[sl], powers).real
    out[:, 0] += D
    return out


def l2_norm(a) -> float:
    """||a|| over all elements, summed in an order fixed by the shape alone (numpy's pairwise sum), not by
    BLAS, whose dot product splits the sum by the machine's thread count: the report's errors go into the
    artifact, which must be the same bytes on every machine."""
    a = np.asarray(a, dtype=np.float64).ravel()
    return float(np.sqrt(np.sum(a * a)))


def relative_l2(exact, approx) -> float:
    """||approx - exact|| / ||exact|| over all elements (0 for an exact zero)."""
    exact = np.asarray(exact, dtype=np.float64)
    n = l2_norm(exact)
    return l2_norm(np.asarray(approx, dtype=np.float64) - exact) / n if n else 0.0


def kernel_errors(exact: np.ndarray, approx: np.ndarray) -> dict:
    """Relative L2 errors over all channels: of the taps and of the step responses."""
    return {"taps": relative_l2(exact, approx), "step": relative_l2(np.cumsum(exact, 1), np.cumsum(approx, 1))}


def measured_recurrent_kernel(op, lo, hi, in_frac, out_frac, L: int) -> np.ndarray:
    """The integer recurrence's impulse response in model units (H, L): its reduction sums for an
    impulse of the largest admissible input (per channel) less those for zeros, over the impulse,
    plus the quantized D.  Measured before the output's final rescaling, which the convolution's
    output shares (arith.ssm_current rounds there too): what is compared is the kernel."""
    import torch

    from .emulator import recurrence_sums
    lo, hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
    amp = np.where(hi >= -lo, hi, lo)
    amp = np.where(amp == 0, 1, amp)
    x = np.zeros((2, len(amp), L), np.int64)
    x[0, :, 0] = amp
    with torch.no_grad():
        acc = recurrence_sums(op, torch.from_numpy(x)).numpy()
    to_value = lambda shift: np.exp2((np.asarray(in_frac) - shift - out_frac).astype(np.float64))
    kernel = (acc[0] - acc[1]) * (to_value(op.out_shift) / amp)[:, None]
    kernel[:, 0] += op.direct * to_value(op.direct_shift)
    return kernel

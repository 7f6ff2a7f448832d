"""One SpikingSSM layer (SSMConv -> LIF -> Dense -> GLUResidual) as a compiled CPU loop (numba), per sample.

This is the emulator's CPU fast path.  It does not restate the arithmetic: numba compiles the
``neurocompile.arith`` functions themselves (registered in ``neurocompile.jit``), so the Lava
process models, the torch path and this loop all run the one written rule.

Why a compiled loop: after the FFT convolution, everything in a layer is a scan over time
(LIF) or cheap per-element work (current scaling, GLU, residual).  As torch ops each is a pass
over memory, and the LIF is a per-step Python loop; here one pass over each sample does all of
it with the state in L1, and the Dense layer is what the chip does -- for each neuron that
spiked, its weight row is added (accumulate-only, no GEMM, cost proportional to spikes).
"""
from __future__ import annotations

import numpy as np

from . import arith
from .jit import kernel, rounded_pair

# the rule, as the compiled loop calls it (numba resolves these to the functions jit.py registered)
_ssm_current = arith.ssm_current
_lif_step = arith.lif_step
_gated_residual = arith.gated_residual


TIME_BLOCK = 32     # steps per block: every row is read and written in runs of 32 (full cache lines)


@kernel(__file__)     # nogil (in kernel): the emulator runs samples on parallel threads
def run_layer(x, y_hi, y_lo, split, lag, shift, conv_bias, dv, vth, weight_rows, bias, value_shift, gate_shift,
              out_shift, lut, x_next, record, rec_a, rec_s, rec_v, rec_d, worst):  # pragma: no cover (compiled)
    """x (B, H, L) int64 stream in; y_hi / y_lo (B, H, >= L + lag) float64 causal FFT convolutions
    of the high and low stream parts (y_lo unused when ``split`` is 0), read ``lag`` steps late;
    conv_bias (H, L) or (H, 0) the SSM's per-step bias; weight_rows (H, 2H) the Dense weights by
    presynaptic neuron.  Writes x_next (B, H, L); with ``record`` the SSM output current, spikes,
    voltage after reset and Dense output into rec_* (B, ., L); worst[b] = largest distance of a
    convolution result to its integer (the caller checks it).

    Rows of (B, H, L) arrays lie 2**k bytes apart, so walking h at fixed t would thrash the
    caches; each block of TIME_BLOCK steps is walked row by row instead (LIF, then the Dense
    accumulation per step, then the GLU), which is the same arithmetic in the same causal order.
    """
    B, H, L = x.shape
    H2 = weight_rows.shape[1]
    has_bias = conv_bias.shape[1] > 0
    for b in range(B):
        v = np.zeros(H, np.int64)
        spikes = np.zeros((TIME_BLOCK, H), np.bool_)
        acc = np.empty((TIME_BLOCK, H2), weight_rows.dtype)
        dev = 0.0
        for t0 in range(0, L, TIME_BLOCK):
            steps = min(TIME_BLOCK, L - t0)
            for h in range(H):                          # current scaling and the LIF scan
                vh = v[h]
                for k in range(steps):
                    hi, lo, d = rounded_pair(y_hi, y_lo, b, h, lag + t0 + k, split)
                    dev = max(dev, d)
                    bh = conv_bias[h, t0 + k] if has_bias else 0
                    a = _ssm_current(hi, lo, split, shift[h], bh)
                    vh, s = _lif_step(vh, a, dv, vth)
                    spikes[k, h] = s
                    if record:
                        rec_a[b, h, t0 + k] = a
                        rec_s[b, h, t0 + k] = s
                        rec_v[b, h, t0 + k] = vh
                v[h] = vh
            for k in range(steps):                      # Dense: add the weight row of each spike
                acc[k, :] = bias
                for h in range(H):
                    if spikes[k, h]:
                        for j in range(H2):
                            acc[k, j] += weight_rows[h, j]
                if record:
                    for j in range(H2):
                        rec_d[b, j, t0 + k] = acc[k, j] - bias[j]
            for h in range(H):                          # GLU and the residual add
                for k in range(steps):
                    x_next[b, h, t0 + k] = _gated_residual(x[b, h, t0 + k], acc[k, h], acc[k, H + h], value_shift[h],
                                                           gate_shift[h], out_shift[h], lut)
        worst[b] = dev


"""Pointwise nodes as compiled CPU loops (numba) over whole batches: the SSM convolution's output
(after its FFT), the stochastic sampler, GELU, GELU plus residual and the stream affine --
everything of P-SpikeSSM but its synapses.

Each loop calls the ``neurocompile.arith`` function on one element (registered in
``neurocompile.jit``): as torch ops, per-channel shifts of int64 tensors cost tens of ns per element
and every rule is several of them; here each element is one pass in registers.  The loops release the GIL; the emulator spreads slices of
the batch over its worker threads (``emulator.over_batch``).  Not ``prange``: numba's OpenMP pool
does not survive ``fork``, and a process that forks after an emulator run (a worker pool, a test
harness) would hang in its first parallel loop.  Layout (B, H, L), per-channel parameters (H,).
"""
from __future__ import annotations

import numpy as np

from . import arith
from .jit import kernel, rounded_pair

_ssm_current = arith.ssm_current
_affine, _sample, _gelu, _gelu_residual = arith.channel_affine, arith.sample, arith.gelu, arith.gelu_residual
_stream_key, _uniform_from_key = arith.stream_key, arith.uniform_from_key
_readout_accumulate = arith.readout_accumulate


@kernel(__file__)
def ssm_output(y_hi, y_lo, split, lag, shift, bias, out, worst):  # pragma: no cover (compiled)
    """The SSM convolution's output current from its float64 FFT results (read ``lag`` steps late):
    rounded to the exact integers, rescaled, plus the per-step bias; worst[b] = largest distance
    of a result to its integer."""
    B, H, L = out.shape
    has_bias = bias.shape[1] > 0
    for b in range(B):
        dev = 0.0
        for h in range(H):
            for t in range(L):
                hi, lo, d = rounded_pair(y_hi, y_lo, b, h, lag + t, split)
                dev = max(dev, d)
                out[b, h, t] = _ssm_current(hi, lo, split, shift[h], bias[h, t] if has_bias else 0)
        worst[b] = dev


@kernel(__file__)
def channel_affine(x, in_shift, mult, offset, out_shift, out):  # pragma: no cover (compiled)
    B, H, L = x.shape
    for b in range(B):
        for h in range(H):
            for t in range(L):
                out[b, h, t] = _affine(x[b, h, t], in_shift[h], mult[h], offset[h], out_shift[h])


@kernel(__file__)
def uniform_table(seed, stream, samples, bits, out):  # pragma: no cover (compiled)
    """The PRNG's uniforms of one sampler for every (sample, neuron, step); ``samples`` (B,) are the
    samples' indices in the data file, so a sample draws the same numbers in any batch."""
    B, H, L = out.shape
    for b in range(B):
        key = _stream_key(seed, stream, samples[b])
        for h in range(H):
            for t in range(L):
                out[b, h, t] = _uniform_from_key(key, h, t, bits)


@kernel(__file__)
def sample(x, in_shift, mult, offset, out_shift, bits, u, p_out, spikes):  # pragma: no cover (compiled)
    B, H, L = x.shape
    for b in range(B):
        for h in range(H):
            for t in range(L):
                p, s = _sample(x[b, h, t], in_shift[h], mult[h], offset[h], out_shift[h], bits, u[b, h, t])
                p_out[b, h, t] = p
                spikes[b, h, t] = s


@kernel(__file__)
def gelu(z, bias, value_shift, gate_shift, out_shift, lut, out):  # pragma: no cover (compiled)
    B, H, L = z.shape
    for b in range(B):
        for h in range(H):
            for t in range(L):
                out[b, h, t] = _gelu(z[b, h, t] + bias[h], value_shift[h], gate_shift[h], out_shift[h], lut)


@kernel(__file__)
def gelu_residual(skip, z, bias, value_shift, gate_shift, out_shift, lut, out):  # pragma: no cover (compiled)
    B, H, L = z.shape
    for b in range(B):
        for h in range(H):
            for t in range(L):
                out[b, h, t] = _gelu_residual(skip[b, h, t], z[b, h, t] + bias[h], value_shift[h], gate_shift[h],
                                              out_shift[h], lut)


@kernel(__file__)
def readout_sum(x, pre_shift, out):  # pragma: no cover (compiled)
    """The readout's time sum per sample and channel (B, H) of the pre-shifted stream (B, H, L)."""
    B, H, L = x.shape
    for b in range(B):
        for h in range(H):
            total = 0
            for t in range(L):
                total = _readout_accumulate(total, x[b, h, t], pre_shift[h])
            out[b, h] = total


def as_int64(t) -> np.ndarray:
    """A CPU tensor (bool spikes included) as a contiguous int64 array."""
    return np.ascontiguousarray(t.numpy(), dtype=np.int64)

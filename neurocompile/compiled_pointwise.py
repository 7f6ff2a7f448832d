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
from numba.extending import register_jitable

from . import arith
from .jit import kernel, rounded_pair

_ssm_current = arith.ssm_current
_gated_residual = arith.gated_residual
_affine, _sample, _gelu, _gelu_residual = arith.channel_affine, arith.sample, arith.gelu, arith.gelu_residual
_stream_key, _uniform_from_key = arith.stream_key, arith.uniform_from_key
_readout_accumulate = arith.readout_accumulate
_fan_out, _mode_step, _message = arith.ssm_fan_out, arith.ssm_mode_step, arith.ssm_message
_reduce_term, _recurrent_output = arith.ssm_reduce_term, arith.ssm_recurrent_output


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
def sample(x, in_shift, lo, hi, mult, offset, out_shift, bits, u, p_out, spikes):  # pragma: no cover (compiled)
    B, H, L = x.shape
    for b in range(B):
        for h in range(H):
            for t in range(L):
                p, s = _sample(x[b, h, t], in_shift[h], lo[h], hi[h], mult[h], offset[h], out_shift[h], bits,
                               u[b, h, t])
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


@register_jitable
def _recurrence_channel(u, s_re, s_im, decay, gain_in, in_shift, state_bias, decay_shift, send_shift, gain_out,
                        out_shift, direct, direct_shift, out_bias):  # pragma: no cover (compiled)
    """One step of one channel: its M mode neurons (state s_re, s_im updated in place), then its
    output current.  ``decay``, ``gain_in``, ``state_bias``, ``gain_out``: the channel's (M, 2) rows."""
    acc = 0
    for m in range(decay.shape[0]):
        re, im = _mode_step(s_re[m], s_im[m], _fan_out(u, gain_in[m, 0], in_shift), _fan_out(u, gain_in[m, 1], in_shift),
                            decay[m, 0], decay[m, 1], decay_shift, state_bias[m, 0], state_bias[m, 1])
        s_re[m] = re
        s_im[m] = im
        acc += _reduce_term(_message(re, send_shift), _message(im, send_shift), gain_out[m, 0], gain_out[m, 1])
    return _recurrent_output(acc, out_shift, _fan_out(u, direct, direct_shift), out_bias)


@kernel(__file__)
def ssm_recurrence(x, decay, gain_in, in_shift, state_bias, decay_shift, send_shift, gain_out, out_shift, direct,
                   direct_shift, out_bias, out):  # pragma: no cover (compiled)
    """The recurrent SSM (fan-out, mode neurons, reduction) over time, per sample and channel, with
    the channel's M complex states in registers: O(M) per step."""
    B, H, L = x.shape
    M = decay.shape[1]
    s_re = np.zeros(M, np.int64)
    s_im = np.zeros(M, np.int64)
    for b in range(B):
        for h in range(H):
            s_re[:] = 0
            s_im[:] = 0
            for t in range(L):
                out[b, h, t] = _recurrence_channel(x[b, h, t], s_re, s_im, decay[h], gain_in[h], in_shift[h],
                                                   state_bias[h], decay_shift, send_shift[h], gain_out[h],
                                                   out_shift[h], direct[h], direct_shift[h], out_bias[h])


@kernel(__file__)
def ssm_recurrence_step(u, s_re, s_im, decay, gain_in, in_shift, state_bias, decay_shift, send_shift, gain_out,
                        out_shift, direct, direct_shift, out_bias, out):  # pragma: no cover (compiled)
    """One step of the recurrent SSM for all H channels, the (H, M) state updated in place: the
    fused Lava model's step (``SSMRecurrentFixed``), the same arithmetic as ``ssm_recurrence``."""
    for h in range(u.shape[0]):
        out[h] = _recurrence_channel(u[h], s_re[h], s_im[h], decay[h], gain_in[h], in_shift[h], state_bias[h],
                                     decay_shift, send_shift[h], gain_out[h], out_shift[h], direct[h],
                                     direct_shift[h], out_bias[h])


@kernel(__file__)
def glu_residual_step(skip, dense, bias, value_shift, gate_shift, out_shift, lut, out):  # pragma: no cover (compiled)
    """One step of the GLU mixer and the residual add for all H channels (``arith.glu_residual``:
    the Dense sums plus bias, value rows first, then ``arith.gated_residual`` per channel, as the
    emulator's compiled layer forms them): the Lava model's step (``GLUResidualFixed``)."""
    H = skip.shape[0]
    for h in range(H):
        out[h] = _gated_residual(skip[h], dense[h] + bias[h], dense[H + h] + bias[H + h], value_shift[h],
                                 gate_shift[h], out_shift[h], lut)


def as_int64(t) -> np.ndarray:
    """A CPU tensor (bool spikes included) as a contiguous int64 array."""
    return np.ascontiguousarray(t.numpy(), dtype=np.int64)

"""Fake-quantisers for fine-tuning: the float model's forward pass sees the values ``quantize`` writes.

One rounding rule, two users: every entry calls the same ``neurocompile.quant`` function that the
compiler's ``quantize`` pass calls, on the same float64 values, and hands the rounded float back to
torch with a straight-through gradient (forward: the rounded value; backward: the identity).  The
scales are recomputed from the current weights each step, as the compiler would recompute them at
export, so the integers a forward pass rounds to are exactly those ``export`` writes for the same weights.
"""
from __future__ import annotations

import numpy as np

from ..ir import Dense, Sampler, SSMConv
from ..quant import quantize_kernel_taps, quantize_rows


def _straight_through(t, rounded: np.ndarray):
    import torch
    q = torch.as_tensor(rounded, dtype=t.dtype, device=t.device)
    return t + (q - t).detach()


def kernel_integers(kernel: np.ndarray, bits: int):
    """SSM kernel (H, K) -> (integer taps, per-channel exponents), as ``quantize_ssm_conv`` writes them."""
    return quantize_kernel_taps(np.asarray(kernel, dtype=np.float64), bits)


def weight_integers(weight: np.ndarray, bits: int):
    """Dense weight (M, N) -> (integer mantissas, per-row exponents), as ``quantize_dense`` writes them."""
    return quantize_rows(np.asarray(weight, dtype=np.float64), bits)


def fake_quantize(t, integers, bits: int, value: np.ndarray = None):
    """-> (t with the forward value of its rounding, (mantissas, exponents)).  ``value``: the float64
    array the compiler rounds, when the caller computed it as the compiler does (default: t's own
    values); the gradient goes straight through to ``t``."""
    m, e = integers(t.detach().cpu().double().numpy() if value is None else value, bits)
    return _straight_through(t, m * np.exp2(-e.astype(np.float64))[:, None]), (m, e)


def _fake(integers):
    def fake(t, bits: int):
        return fake_quantize(t, integers, bits)[0]
    return fake


fake_kernel = _fake(kernel_integers)
fake_weight = _fake(weight_integers)


def fake_encoder(weight, bias, fmt, stream_frac, bits: int, register_max: int):
    """The linear encoder's torch ``weight`` (H, C) and ``bias`` (H,) on model values -> (the same two with
    the forward value ``quantize_linear_encoder`` rounds them to, (weight mantissas, bias, exponents)).

    The chip reads raw levels q (value = low + step * q): the rounded quantities are the weights per
    level, w * step, and the bias with the low end folded in, both at 2**-e; mapped back to model values
    here, gradients straight through.  ``stream_frac``: the stream's fixed point of the compiled program
    (``stream_frac_bits`` of its report), which bounds e from below."""
    from ..quant import encoder_integers
    w, b = fmt.per_level(weight.detach().cpu().double().numpy(), bias.detach().cpu().double().numpy())
    peak = np.full(w.shape[1], float(fmt.max_raw))
    m, bq, e = encoder_integers(w, b, np.asarray(stream_frac, dtype=np.int64), bits, peak, register_max)
    scale = np.exp2(-e.astype(np.float64))
    w_value = m * scale[:, None] / fmt.step
    b_value = bq * scale - w_value.sum(1) * fmt.low
    return _straight_through(weight, w_value), _straight_through(bias, b_value), (m, bq, e)


def half_up(x, frac):
    """floor(x * 2**frac + 1/2): a value put on a fixed point 2**-frac the way ``arith.shift_round`` puts a
    finer integer on a coarser one (half up).  numpy or torch, ``frac`` broadcast against ``x``."""
    import torch
    if isinstance(x, torch.Tensor):
        return torch.floor(x * torch.exp2(torch.as_tensor(frac, dtype=x.dtype, device=x.device)) + 0.5)
    return np.floor(np.asarray(x, dtype=np.float64) * np.exp2(np.asarray(frac, dtype=np.float64)) + 0.5)


def fake_stream(x, frac, dim: int):
    """Residual-stream values (``x``, channels along ``dim``) -> their value on the stream's per-channel
    fixed point 2**-frac (the width ``--act-bits`` sets), straight through.  The encoder, every residual
    add and every stream affine round a finer sum onto the stream this way."""
    import torch
    shape = [1] * x.dim()
    shape[dim] = -1
    f = torch.as_tensor(np.asarray(frac, dtype=np.float64), dtype=x.dtype, device=x.device).reshape(shape)
    return x + (half_up(x, f) * torch.exp2(-f) - x).detach()


def probability_integers(p, bits: int):
    """A firing probability -> the sampler's p in ``bits`` (``--prob-bits``): half up, clipped to [0, 2**bits]."""
    return np.clip(half_up(p, bits), 0, 2 ** bits)


def fake_probability(p, bits: int):
    """p -> its value on the sampler's 2**-bits grid (clipped to [0, 1]), straight through."""
    import torch
    q = torch.clamp(half_up(p, bits), 0, 2 ** bits) * 2.0 ** -bits
    return p + (q - p).detach()


def recurrent_kernel(coefficients, L: int) -> np.ndarray:
    """The kernel (H, L) that a recurrence's rounded coefficients (``quantize.recurrent_coefficients``)
    realise: K[l] = 2 Re(sum_m c b a**l) + D [l == 0], float64 (the state's and messages' own rounding,
    which depends on the data, is not in it)."""
    from ..ssm_kernels import modal_kernel

    decay, ds, (b, e_b), (c2, e_c), (d, e_d) = coefficients
    value = lambda m, e: (m[..., 0] + 1j * m[..., 1]) * np.exp2(-np.asarray(e, np.float64))[:, None]   # noqa: E731
    a = (decay[..., 0] + 1j * decay[..., 1]) * 2.0 ** -ds
    return modal_kernel(a, value(b, e_b), value(c2, e_c) / 2, d * np.exp2(-e_d.astype(np.float64)), L)


# float node type -> (the CompileOptions field giving its bits, integers rule, torch fake-quantiser)
QUANTIZERS = {
    SSMConv: ("kernel_bits", kernel_integers, fake_kernel),
    Dense: ("weight_bits", weight_integers, fake_weight),
    Sampler: ("prob_bits", probability_integers, fake_probability),
}


def option_bits(kind, options, target) -> int:
    """The bits ``quantize`` rounds a ``kind`` node's values to for ``options`` on ``target`` (Dense: the
    weight width capped at the target's synapse width, ``quantize.synapse_weight_bits``)."""
    from .quantize import synapse_weight_bits
    return synapse_weight_bits(options, target) if kind is Dense else getattr(options, QUANTIZERS[kind][0])

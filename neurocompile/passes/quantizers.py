"""Fake-quantisers for fine-tuning: the float model's forward pass sees the values ``quantize`` writes.

One rounding rule, two users: every entry calls the same ``neurocompile.quant`` function that the
compiler's ``quantize`` pass calls, on the same float64 values, and hands the rounded float back to
torch with a straight-through gradient (forward: the rounded value; backward: the identity).  The
scales are recomputed from the current weights each step, as the compiler would recompute them at
export, so the integers a forward pass rounds to are exactly those ``export`` writes for the same weights.
"""
from __future__ import annotations

import numpy as np

from ..ir import Dense, SSMConv
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


# float node type -> (the CompileOptions field giving its bits, integers rule, torch fake-quantiser)
QUANTIZERS = {
    SSMConv: ("kernel_bits", kernel_integers, fake_kernel),
    Dense: ("weight_bits", weight_integers, fake_weight),
}


def option_bits(kind, options, target) -> int:
    """The bits ``quantize`` rounds a ``kind`` node's values to for ``options`` on ``target`` (Dense: the
    weight width capped at the target's synapse width, ``quantize.synapse_weight_bits``)."""
    from .quantize import synapse_weight_bits
    return synapse_weight_bits(options, target) if kind is Dense else getattr(options, QUANTIZERS[kind][0])

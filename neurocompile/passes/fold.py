"""Fold per-channel affines (y = scale * x + shift) into the node next to them where one absorbs it:
the SSM convolution (below) or the decoder (a final norm before the mean and Linear).  An affine
on the residual stream with other consumers (a P-SpikeSSM post-norm) stays, as an integer op.

* After the SSM: the division by the learnable threshold exp(ln_vth).  The LIF then has threshold
  1 in every channel, so one scalar threshold serves the whole population (Lava's LIF has a
  single vth per process).
* Before the SSM: a prenorm BatchNorm in eval mode.  Its scale multiplies the kernel; its shift
  becomes a per-step bias, the convolution's response to a constant input over the sequence
  (zero outside it, as in the official zero-padded FFT), so the residual stream itself stays
  unnormalised exactly as in the official forward.

A recurrent SSM (``SSMRecurrent``) absorbs them the same way, in O(H M) numbers instead of an (H, L)
bias: after it, the scale multiplies c and D and the shift joins d0; before it, the scale multiplies b
and D and the shift becomes a constant input, e += b * shift per mode and d0 += D * shift (exact: the
constant is fed through the very recurrence, zero before the sequence as in the official forward).
"""
import numpy as np

from ..errors import UnsupportedModelError
from ..ir import ChannelAffine, Graph, Readout, SSMConv, SSMRecurrent


def constant_response(kernel: np.ndarray, lag: int, L: int) -> np.ndarray:
    """r[h, t] = sum of the taps that meet inputs 0..L-1 at output step t (input 1 everywhere)."""
    K = kernel.shape[1]
    csum = np.concatenate([np.zeros((kernel.shape[0], 1)), np.cumsum(kernel, axis=1)], axis=1)
    tau = np.arange(L) + lag                              # causal index of logical step t
    first, last = np.maximum(tau - L + 1, 0), np.minimum(tau, K - 1)
    return csum[:, last + 1] - csum[:, first]


def _bias(conv: SSMConv, L: int) -> np.ndarray:
    return conv.bias if conv.bias.shape[1] else np.zeros((conv.kernel.shape[0], L))


def conv_then_affine(conv: SSMConv, aff: ChannelAffine, L: int) -> SSMConv:
    bias = _bias(conv, L) * aff.scale[:, None] + aff.shift[:, None]
    return SSMConv(conv.kernel * aff.scale[:, None], conv.lag, bias)


def affine_then_conv(conv: SSMConv, aff: ChannelAffine, L: int) -> SSMConv:
    bias = _bias(conv, L) + aff.shift[:, None] * constant_response(conv.kernel, conv.lag, L)
    return SSMConv(conv.kernel * aff.scale[:, None], conv.lag, bias)


def recurrence_then_affine(r: SSMRecurrent, aff: ChannelAffine, L: int) -> SSMRecurrent:
    return SSMRecurrent(r.a, r.b, r.c * aff.scale[:, None], r.D * aff.scale, r.e, r.d0 * aff.scale + aff.shift)


def affine_then_recurrence(r: SSMRecurrent, aff: ChannelAffine, L: int) -> SSMRecurrent:
    return SSMRecurrent(r.a, r.b * aff.scale[:, None], r.c, r.D * aff.scale, r.e + r.b * aff.shift[:, None],
                        r.d0 + r.D * aff.shift)


AFTER = {SSMConv: conv_then_affine, SSMRecurrent: recurrence_then_affine}      # SSM -> affine
BEFORE = {SSMConv: affine_then_conv, SSMRecurrent: affine_then_recurrence}     # affine -> SSM


def _finite(op) -> bool:
    return all(np.isfinite(np.asarray(v)).all() for v in vars(op).values() if isinstance(v, np.ndarray))


def fold_channel_affines(graph: Graph) -> Graph:
    graph = graph.copy()
    L = int(graph.meta["config"]["l_max"])
    where = graph.meta.get("source") or "model"
    for name in list(graph.nodes_of(ChannelAffine)):
        aff = graph.op(name)
        (src,) = graph.inputs(name).values()
        consumers = graph.consumers(name)
        if type(graph.op(src)) in AFTER and graph.consumers(src) == [name]:             # SSM -> affine
            graph.set_op(src, AFTER[type(graph.op(src))](graph.op(src), aff, L))
        elif len(consumers) == 1 and isinstance(graph.op(consumers[0]), Readout):    # final norm -> decoder
            ro = graph.op(consumers[0])
            graph.set_op(consumers[0], Readout(ro.weight * aff.scale[None, :],
                                                        # a row sum in a fixed order, not BLAS's thread split
                                                        ro.bias + (ro.weight * aff.shift[None, :]).sum(1)))
        elif len(consumers) == 1 and type(graph.op(consumers[0])) in BEFORE:           # affine -> SSM
            graph.set_op(consumers[0], BEFORE[type(graph.op(consumers[0]))](graph.op(consumers[0]), aff, L))
        else:
            continue                 # on the residual stream (a post-norm): an integer affine op of its own
        graph.bypass(name)
    for name in graph.nodes_of(SSMConv, SSMRecurrent):     # an all-zero bias is no bias
        conv = graph.op(name)
        if not _finite(conv):
            raise UnsupportedModelError(f"{where}: {name}: folding the norm and threshold scales makes the kernel "
                                        "overflow float64 (a scale is too large)")
        if isinstance(conv, SSMConv) and conv.bias.shape[1] and not np.any(conv.bias):
            graph.set_op(name, SSMConv(conv.kernel, conv.lag, np.zeros((conv.kernel.shape[0], 0))))
    return graph

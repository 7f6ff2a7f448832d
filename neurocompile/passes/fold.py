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
"""
import numpy as np

from ..errors import UnsupportedModelError
from ..ir import ChannelAffine, Graph, Readout, SSMConv


def constant_response(kernel: np.ndarray, lag: int, L: int) -> np.ndarray:
    """r[h, t] = sum of the taps that meet inputs 0..L-1 at output step t (input 1 everywhere)."""
    K = kernel.shape[1]
    csum = np.concatenate([np.zeros((kernel.shape[0], 1)), np.cumsum(kernel, axis=1)], axis=1)
    tau = np.arange(L) + lag                              # causal index of logical step t
    first, last = np.maximum(tau - L + 1, 0), np.minimum(tau, K - 1)
    return csum[:, last + 1] - csum[:, first]


def _bias(conv: SSMConv, L: int) -> np.ndarray:
    return conv.bias if conv.bias.shape[1] else np.zeros((conv.kernel.shape[0], L))


def fold_channel_affines(graph: Graph) -> Graph:
    graph = graph.copy()
    L = int(graph.meta["config"]["l_max"])
    where = graph.meta.get("source") or "model"
    for name in list(graph.nodes_of(ChannelAffine)):
        aff = graph.op(name)
        (src,) = graph.inputs(name).values()
        consumers = graph.consumers(name)
        if isinstance(graph.op(src), SSMConv) and graph.consumers(src) == [name]:     # SSM -> affine
            conv = graph.op(src)
            bias = _bias(conv, L) * aff.scale[:, None] + aff.shift[:, None]
            graph.set_op(src, SSMConv(conv.kernel * aff.scale[:, None], conv.lag, bias))
        elif len(consumers) == 1 and isinstance(graph.op(consumers[0]), Readout):    # final norm -> decoder
            ro = graph.op(consumers[0])
            graph.set_op(consumers[0], Readout(ro.weight * aff.scale[None, :], ro.bias + ro.weight @ aff.shift))
        elif len(consumers) == 1 and isinstance(graph.op(consumers[0]), SSMConv):     # affine -> SSM
            conv = graph.op(consumers[0])
            bias = _bias(conv, L) + aff.shift[:, None] * constant_response(conv.kernel, conv.lag, L)
            graph.set_op(consumers[0], SSMConv(conv.kernel * aff.scale[:, None], conv.lag, bias))
        else:
            continue                 # on the residual stream (a post-norm): an integer affine op of its own
        graph.bypass(name)
    for name in graph.nodes_of(SSMConv):                   # an all-zero bias is no bias
        conv = graph.op(name)
        if not (np.isfinite(conv.kernel).all() and np.isfinite(conv.bias).all()):
            raise UnsupportedModelError(f"{where}: {name}: folding the norm and threshold scales makes the kernel "
                                        "overflow float64 (a scale is too large)")
        if conv.bias.shape[1] and not np.any(conv.bias):
            graph.set_op(name, SSMConv(conv.kernel, conv.lag, np.zeros((conv.kernel.shape[0], 0))))
    return graph

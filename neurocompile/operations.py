"""What each integer node does per time step on the chip, and whether it is accumulate-only.

One row rule per integer node type (``OPERATION``); ``export`` prints the table and the artifact
keeps it.  "Accumulate-only" means no multiplier: additions, shifts, comparisons, table lookups.
"""
from __future__ import annotations

import numpy as np

from .ir import (IntChannelAffine, IntConcat, IntDense, IntEmbedding, IntEncoder, IntGELU, IntGELUResidual,
                 IntGLUResidual, IntInput, IntLIF, IntReadout, IntSampler, IntSSMConv, IntSSMRecurrent)


def _encoder(name, op: IntEncoder, L, graph):
    return {"ac_only": True, "how": f"bit-serial shift-add over {op.input_bits} input bit planes",
            "adds_per_step": op.input_bits * int(np.count_nonzero(op.weight))}


def _embedding(name, op: IntEmbedding, L, graph):
    return {"ac_only": True, "how": f"one-hot token spike into a {op.table.shape[0]}-row synapse (a row select)",
            "adds_per_step": op.table.shape[1]}


def _ssm(name, op: IntSSMConv, L, graph):
    K = op.kernel.shape[1]
    side = (f"two-sided kernel streamed as {K} causal taps, output {op.lag} steps late" if op.lag
            else f"{K}-tap causal kernel")
    bias = ", plus a per-step bias (folded BatchNorm shift)" if op.bias.shape[1] else ""
    taps = int(np.count_nonzero(op.kernel))
    if type(graph.op(graph.inputs(name)["main"])).TRACE == "spikes":
        return {"ac_only": True, "how": f"{side} over binary spikes: the taps that meet a spike are summed{bias}",
                "adds_per_step": f"{taps} x input spike rate (at most {taps})"}
    return {"ac_only": True,
            "how": f"{side}, bit-serial over {op.stream_bits} stream bit planes (taps summed where a bit is set), "
                   f"planes < {op.split} in a second accumulator{bias}",
            "adds_per_step": op.stream_bits * taps}


def _ssm_recurrent(name, op: IntSSMRecurrent, L, graph):
    H, M = op.decay.shape[:2]
    bias = ", plus a per-mode bias (folded BatchNorm shift)" if op.state_bias.any() else ""
    return {"ac_only": False,
            "how": f"diagonal recurrence, {M} complex modes per channel (state does not grow with L): fan-out "
                   f"synapse x = b u, mode neurons s <- a s + x{bias} (a microcode neuron program: complex "
                   f"multiply, rounded once per component), reduction synapse 2 Re(c s) + D u",
            "multiplies_per_step": H * (M * (2 + 4 + 2) + 1),
            "multiplies_per_mode_step": 8,
            "adds_per_step": H * M * 6 + H}


def _lif(name, op: IntLIF, L, graph):
    return {"ac_only": True, "how": "stock Lava LIF (decay is a shift)", "adds_per_step": 1}


def _dense(name, op: IntDense, L, graph):
    return {"ac_only": True, "how": "binary spikes: the weight rows of the spiking inputs are summed",
            "adds_per_step": f"{op.weight.shape[0]} x spikes"}


def _glu(name, op: IntGLUResidual, L, graph):
    H = op.value_shift.shape[0]
    return {"ac_only": False, "how": "value x sigmoid-LUT: one neuron-level multiply per channel, then the residual add",
            "multiplies_per_step": H}


def _readout(name, op: IntReadout, L, graph):
    return {"ac_only": False, "how": "time sum on chip, decoder MACs once per sample on the host core",
            "macs_per_sample": int(op.weight.size)}


def _sampler(name, op: IntSampler, L, graph):
    return {"ac_only": False, "how": f"firing probability by one neuron-level multiply-add per channel, compared "
                                     f"with a {op.prob_bits}-bit counter-based PRNG uniform (stream {op.stream})",
            "multiplies_per_step": op.mult.shape[0]}


def _affine(name, op: IntChannelAffine, L, graph):
    return {"ac_only": False, "how": "per-channel affine (a BatchNorm that cannot fold): one multiply per channel",
            "multiplies_per_step": op.mult.shape[0]}


def _gelu(name, op, L, graph):
    residual = ", then the residual add" if isinstance(op, IntGELUResidual) else ""
    return {"ac_only": False, "how": f"GELU as value x Phi-table[value] ({op.lut.shape[0]} entries): one "
                                     f"neuron-level multiply per channel{residual}",
            "multiplies_per_step": op.value_shift.shape[0]}


def _concat(name, op, L, graph):
    return {"ac_only": True, "how": "wiring: forward and reverse spikes side by side", "adds_per_step": 0}


OPERATION = {
    IntEncoder: _encoder,
    IntEmbedding: _embedding,
    IntSSMConv: _ssm,
    IntSSMRecurrent: _ssm_recurrent,
    IntLIF: _lif,
    IntDense: _dense,
    IntGLUResidual: _glu,
    IntReadout: _readout,
    IntSampler: _sampler,
    IntChannelAffine: _affine,
    IntGELU: _gelu,
    IntGELUResidual: _gelu,
    IntConcat: _concat,
}


def operation_summary(graph, L: int) -> list:
    """[{stage, ac_only, how, ...}] for every node that computes (the input node does not)."""
    rows = []
    for name in graph.topo():
        op = graph.op(name)
        if not isinstance(op, IntInput):
            rows.append({"stage": name, **OPERATION[type(op)](name, op, L, graph)})
    return rows

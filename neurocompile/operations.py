"""What each integer node does per time step on the chip, and whether it is accumulate-only.

One row rule per integer node type (``OPERATION``); ``export`` prints the table and the artifact
keeps it.  "Accumulate-only" means no multiplier: additions, shifts, comparisons, table lookups.
"""
from __future__ import annotations

import numpy as np

from .ir import IntDense, IntEmbedding, IntEncoder, IntGLUResidual, IntInput, IntLIF, IntReadout, IntSSMConv


def _encoder(name, op: IntEncoder, L):
    return {"ac_only": True, "how": f"bit-serial shift-add over {op.input_bits} input bit planes",
            "adds_per_step": op.input_bits * int(np.count_nonzero(op.weight))}


def _embedding(name, op: IntEmbedding, L):
    return {"ac_only": True, "how": f"one-hot token spike into a {op.table.shape[0]}-row synapse (a row select)",
            "adds_per_step": op.table.shape[1]}


def _ssm(name, op: IntSSMConv, L):
    K = op.kernel.shape[1]
    side = (f"two-sided kernel streamed as {K} causal taps, output {op.lag} steps late" if op.lag
            else f"{K}-tap causal kernel")
    bias = ", plus a per-step bias (folded BatchNorm shift)" if op.bias.shape[1] else ""
    return {"ac_only": True,
            "how": f"{side}, bit-serial over {op.stream_bits} stream bit planes (taps summed where a bit is set), "
                   f"planes < {op.split} in a second accumulator{bias}",
            "adds_per_step": op.stream_bits * int(np.count_nonzero(op.kernel))}


def _lif(name, op: IntLIF, L):
    return {"ac_only": True, "how": "stock Lava LIF (decay is a shift)", "adds_per_step": 1}


def _dense(name, op: IntDense, L):
    return {"ac_only": True, "how": "binary spikes: the weight rows of the spiking inputs are summed",
            "adds_per_step": f"{op.weight.shape[0]} x spikes"}


def _glu(name, op: IntGLUResidual, L):
    H = op.value_shift.shape[0]
    return {"ac_only": False, "how": "value x sigmoid-LUT: one neuron-level multiply per channel, then the residual add",
            "multiplies_per_step": H}


def _readout(name, op: IntReadout, L):
    return {"ac_only": False, "how": "time sum on chip, decoder MACs once per sample on the host core",
            "macs_per_sample": int(op.weight.size)}


OPERATION = {
    IntEncoder: _encoder,
    IntEmbedding: _embedding,
    IntSSMConv: _ssm,
    IntLIF: _lif,
    IntDense: _dense,
    IntGLUResidual: _glu,
    IntReadout: _readout,
}


def operation_summary(graph, L: int) -> list:
    """[{stage, ac_only, how, ...}] for every node that computes (the input node does not)."""
    rows = []
    for name in graph.topo():
        op = graph.op(name)
        if not isinstance(op, IntInput):
            rows.append({"stage": name, **OPERATION[type(op)](name, op, L)})
    return rows

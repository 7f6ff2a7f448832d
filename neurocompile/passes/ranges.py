"""Range analysis: prove that no 24-bit register wraps or saturates for any admissible input.

Admissible inputs are all sequences of raw levels 0..levels.  Starting from that box, the exact
integer interval of every register is pushed through the integer graph with the rules of
``neurocompile.intervals`` (the same rules the quantizer used to pick scales).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arith import REGISTER_MAX
from ..errors import RangeError
from ..intervals import (bits_for, lif_ranges, magnitude, product_interval, shift_interval, spike_dense_interval,
                         ssm_intervals)
from ..ir import Graph, IntDense, IntEncoder, IntGLUResidual, IntLIF, IntReadout, IntSSMConv

HOST_MAX = 2 ** 53 - 1      # the decoder runs once per sample on a host core in 64-bit integers; logits stay exact in float64


@dataclass(frozen=True)
class Violation:
    node: str
    register: str
    bound: int
    limit: int = REGISTER_MAX


def register_table(graph: Graph):
    """[(node, register, worst |value|, limit)] for every register, in graph order."""
    rows, stream, lut_max = [], {}, int(np.max(graph.meta["sigmoid_lut"]))
    levels = graph.op("input").levels
    L = int(graph.meta["config"]["l_max"])
    act_bits = graph.meta.get("act_bits")
    spikes_of = {}
    for name in graph.nodes_of(IntEncoder, IntSSMConv, IntLIF, IntDense, IntGLUResidual, IntReadout):
        op = graph.op(name)
        if isinstance(op, IntEncoder):
            lo = op.bias + np.minimum(op.weight * levels, 0).sum(1)
            hi = op.bias + np.maximum(op.weight * levels, 0).sum(1)
            stream[name] = (lo, hi)
            rows.append((name, "stream", int(magnitude(lo, hi).max()), REGISTER_MAX))
        elif isinstance(op, IntSSMConv):
            (src,) = graph.predecessors(name)
            lo, hi = stream[src]
            need = bits_for(lo, hi)
            rows.append((name, f"stream bit planes ({op.stream_bits} used)", need, op.stream_bits))
            if act_bits is not None:
                rows.append((name, f"stream bits (--act-bits {act_bits})", need, act_bits))
            acc_hi, acc_lo, current = ssm_intervals(op.kernel, lo, hi, op.split, op.shift)
            rows.append((name, f"accumulator, planes >= {op.split}", int(magnitude(*acc_hi).max()), REGISTER_MAX))
            rows.append((name, f"accumulator, planes < {op.split}", int(magnitude(*acc_lo).max()), REGISTER_MAX))
            spikes_of[name] = current
            rows.append((name, "LIF input", int(magnitude(*spikes_of[name]).max()), REGISTER_MAX))
        elif isinstance(op, IntLIF):
            (src,) = graph.predecessors(name)
            (u_lo, u_hi), (v_lo, v_hi) = lif_ranges(*spikes_of[src], op.dv, op.vth)
            rows.append((name, "LIF current u", int(magnitude(u_lo, u_hi).max()), REGISTER_MAX))
            rows.append((name, "LIF voltage v", int(magnitude(v_lo, v_hi).max()), REGISTER_MAX))
        elif isinstance(op, IntDense):
            rows.append((name, "dendritic accumulator", int(np.abs(op.weight).sum(1).max()), REGISTER_MAX))
        elif isinstance(op, IntGLUResidual):
            skip = [s for s in graph.predecessors(name) if graph.g.edges[s, name]["port"] == "skip"][0]
            dense = [s for s in graph.predecessors(name) if graph.g.edges[s, name]["port"] == "main"][0]
            H = op.value_shift.shape[0]
            d_lo, d_hi = spike_dense_interval(graph.op(dense).weight, op.bias)
            rows.append((name, "value/gate", int(magnitude(d_lo, d_hi).max()), REGISTER_MAX))
            s_lo, s_hi = shift_interval(d_lo[:H], d_hi[:H], op.value_shift)
            p_lo, p_hi = product_interval(s_lo, s_hi, lut_max)
            rows.append((name, "value x sigmoid", int(magnitude(p_lo, p_hi).max()), REGISTER_MAX))
            o_lo, o_hi = shift_interval(p_lo, p_hi, op.out_shift)
            lo, hi = stream[skip]
            stream[name] = (lo + o_lo, hi + o_hi)
            rows.append((name, "stream", int(magnitude(*stream[name]).max()), REGISTER_MAX))
        elif isinstance(op, IntReadout):
            (src,) = graph.predecessors(name)
            lo, hi = stream[src]
            s = magnitude(*shift_interval(lo, hi, op.pre_shift)) * L
            rows.append((name, "time sum", int(s.max()), REGISTER_MAX))
            rows.append((name, "logits (host)", int((np.abs(op.weight) * s).sum(1).max() + np.abs(op.bias).max()),
                         HOST_MAX))
    return rows


def range_violations(graph: Graph) -> list:
    return [Violation(node, reg, bound, limit) for node, reg, bound, limit in register_table(graph) if bound > limit]


def analyze_ranges(graph: Graph) -> Graph:
    problems = range_violations(graph)
    if problems:
        v = problems[0]
        raise RangeError(f"{graph.meta.get('source') or 'model'}: {v.node} {v.register} can reach {v.bound}, "
                         f"beyond its limit {v.limit}")
    graph = graph.copy()
    graph.meta["ranges"] = [
        {"node": n, "register": r, "worst": b, "limit": lim, "headroom_bits": round(float(np.log2((lim + 1) / max(b, 1))), 2)}
        for n, r, b, lim in register_table(graph)]
    return graph

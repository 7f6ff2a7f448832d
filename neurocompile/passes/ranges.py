"""Range analysis: prove that no register wraps or saturates for any admissible input.

Admissible inputs are all sequences of raw integers 0..levels (or token ids).  Starting from that
box, the exact integer interval of every register is pushed through the integer graph with the
interval rules of ``neurocompile.intervals`` (the rules the quantizer used to pick scales, and the
artifact loader uses to re-prove a file).
"""
from __future__ import annotations

import numpy as np

from ..errors import RangeError
from ..intervals import Context, register_table
from ..ir import Graph


def range_report(rows) -> list:
    return [{"node": n, "register": r, "worst": int(w), "limit": int(lim),
             "headroom_bits": round(float(np.log2((lim + 1) / max(w, 1))), 2)} for n, r, w, lim in rows]


def analyze_ranges(graph: Graph, target=None) -> Graph:
    from ..target import get_target
    target = target or get_target()
    rows, _ = register_table(graph, Context(int(graph.meta["config"]["l_max"]), target))
    for node, reg, worst, limit in rows:
        if worst > limit:
            raise RangeError(f"{graph.meta.get('source') or 'model'}: {node} {reg} can reach {worst}, "
                             f"beyond its limit {limit}")
    graph = graph.copy()
    graph.meta["ranges"] = range_report(rows)
    return graph

"""Recorded traces: choose them by kind, save them to .npz, and draw what every layer does.

Traces are keyed by node name (``layer0.neuron``, ``layer0.ssm``, ...), each (samples, channels,
time).  A kind selects nodes by what their output is (``IntNode.TRACE``): ``spikes`` (LIF
outputs), ``ssm`` (the SSM output current, the LIF input), ``stream`` (the residual stream),
``dense`` (synapse accumulations) and ``voltage`` (LIF membrane, emulator only).

The .npz keeps node traces apart from everything else, so no node name can collide with another
key: ``<kind>/<node>`` (``spikes/layer0.neuron``, ``voltage/layer0.neuron``, ...), then ``logits``,
``labels``, ``indices`` and ``engine`` (keys without a ``/``).
"""
from __future__ import annotations

import io
import os

import numpy as np

from .fileio import write_atomic

TRACE_KINDS = ("spikes", "ssm", "stream", "dense", "voltage")
_NODE_TRACE = {"spikes": "spikes", "ssm": "current", "stream": "stream", "dense": "dense"}


def trace_names(program, kinds) -> dict:
    """{key in the .npz: key of the run's traces} for the node traces of the chosen kinds, in graph order."""
    names = {}
    for name in program.topo():
        trace = type(program.op(name)).TRACE
        for kind in kinds:
            if kind == "voltage" and trace == "spikes":
                names[f"voltage/{name}"] = f"{name}.v"
            elif _NODE_TRACE.get(kind) == trace:
                names[f"{kind}/{name}"] = name
    return names


def save_traces(path: str, traces: dict, names: dict, meta: dict, inputs=()) -> None:
    """Write the chosen node traces plus logits, labels and where they came from, atomically."""
    arrays = {"logits": np.asarray(traces["logits"]), "labels": np.asarray(meta.get("labels", [])),
              "indices": np.asarray(meta.get("indices", [])), "engine": np.array(meta.get("engine", ""))}
    for key, name in names.items():
        kind, _, node = key.partition("/")
        # the artifact loader admits only dotted identifiers as node names: never a path
        if not node or "/" in node or ".." in node.split(".") or node.startswith(".") or key in arrays:
            raise ValueError(f"trace name {key!r} is not a safe .npz member name")
        if name in traces:
            arrays[key] = traces[name]

    def write(fh):
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        fh.write(buf.getvalue())
    write_atomic(path, write, inputs)


def plot_raster(path: str, program, traces: dict, sample: int = 0, title: str = "", inputs=(), label=None,
                raw=None) -> None:
    """One sample as a grid: its raw input (``raw``, that sample's levels) beside the readout (the
    prediction and the true ``label`` marked), then per spike node its spikes beside what drives it (a
    LIF's input current, a sampler's firing probability; a shared input once) (``plots.raster_figure``)."""
    from .plots import png_bytes, raster_figure

    one = {k: np.asarray(v)[sample] for k, v in traces.items() if k != "seconds" and np.ndim(v) >= 2}
    png = png_bytes(raster_figure(program, {"run": one}, title, label=label, raw=raw), dpi=110)
    write_atomic(path, lambda fh: fh.write(png), inputs)

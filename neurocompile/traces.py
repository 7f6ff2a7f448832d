"""Recorded traces: choose them by kind, save them to .npz, and draw what every layer does.

Traces are keyed by node name (``layer0.neuron``, ``layer0.ssm``, ...), each (samples, channels,
time).  A kind selects nodes by what their output is (``IntNode.TRACE``): ``spikes`` (LIF
outputs), ``ssm`` (the SSM output current, the LIF input), ``stream`` (the residual stream),
``dense`` (synapse accumulations) and ``voltage`` (LIF membrane, emulator only).
"""
from __future__ import annotations

import io
import os

import numpy as np

from .fileio import write_atomic

TRACE_KINDS = ("spikes", "ssm", "stream", "dense", "voltage")
_NODE_TRACE = {"spikes": "spikes", "ssm": "current", "stream": "stream", "dense": "dense"}


def trace_names(program, kinds) -> list:
    """Node trace names of the chosen kinds, in graph order."""
    names = []
    for name in program.topo():
        trace = type(program.op(name)).TRACE
        for kind in kinds:
            if kind == "voltage" and trace == "spikes":
                names.append(f"{name}.v")
            elif _NODE_TRACE.get(kind) == trace:
                names.append(name)
    return names


def save_traces(path: str, traces: dict, names, meta: dict, inputs=()) -> None:
    """Write the chosen node traces plus logits, labels and where they came from, atomically."""
    arrays = {"logits": np.asarray(traces["logits"]), "labels": np.asarray(meta.get("labels", []))}
    for name in names:
        if name in traces:
            arrays[name] = traces[name]
    arrays["meta_engine"] = np.array(meta.get("engine", ""))
    arrays["meta_indices"] = np.asarray(meta.get("indices", []))

    def write(fh):
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        fh.write(buf.getvalue())
    write_atomic(path, write, inputs)


def plot_raster(path: str, program, traces: dict, sample: int = 0, title: str = "", inputs=()) -> None:
    """One sample: per spike node its spikes and, beneath, what drives it (a LIF's input current, a
    sampler's firing probability; a shared input once), then the readout as class probabilities with
    the prediction marked (``plots.raster_figure``)."""
    from .plots import png_bytes, raster_figure

    one = {k: np.asarray(v)[sample] for k, v in traces.items() if k != "seconds" and np.ndim(v) >= 2}
    png = png_bytes(raster_figure(program, {"run": one}, title), dpi=110)
    write_atomic(path, lambda fh: fh.write(png), inputs)

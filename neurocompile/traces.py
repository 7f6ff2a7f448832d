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


def plot_raster(path: str, program, traces: dict, sample: int = 0, title: str = "", inputs=()) -> None:
    """Per spike node: a raster (channel x time) and, beneath it, its input; then the logits."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for node in program.spike_nodes:
        rows.append(("spikes", node))
        src = program.inputs(node)["main"]
        if src in traces:
            rows.append(("input", src))
    fig, axes = plt.subplots(len(rows) + 1, 1, figsize=(10, 2.2 * (len(rows) + 1)), squeeze=False)
    axes = axes[:, 0]
    for ax, (what, node) in zip(axes, rows):
        data = np.asarray(traces[node][sample])
        if what == "spikes":
            ch, t = np.nonzero(data)
            ax.scatter(t, ch, s=2, marker="|", color="k")
            ax.set_xlim(-0.5, data.shape[1] - 0.5)
            ax.set_ylim(-0.5, data.shape[0] - 0.5)
            ax.set_title(f"{node} spikes (rate {data.mean():.3f})", fontsize=9)
        else:
            im = ax.imshow(data, aspect="auto", cmap="coolwarm", interpolation="nearest")
            ax.set_title(f"{node} output (integer input current of the next spike node)", fontsize=9)
            fig.colorbar(im, ax=ax, pad=0.01)
        ax.set_ylabel("channel")
        ax.set_xlabel("time step", fontsize=8)
    ax = axes[-1]
    logits = np.asarray(traces["logits"][sample], dtype=np.float64)
    ax.bar(np.arange(len(logits)), logits, color="tab:blue")
    ax.set_title(f"readout logits (class {int(logits.argmax())})", fontsize=9)
    ax.set_xlabel("class")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        write_atomic(path, lambda fh: fig.savefig(fh, dpi=110, format="png"), inputs)
    finally:
        plt.close(fig)

"""Recorded traces: save them to .npz and draw a raster plot of what every layer does."""
from __future__ import annotations

import os
import tempfile

import numpy as np

TRACE_KINDS = ("spikes", "ssm", "stream", "voltage")


def save_traces(path: str, traces: dict, kinds, meta: dict) -> None:
    """Write the chosen kinds (per layer: ``spikes_0``, ``ssm_0``, ...) plus logits, atomically."""
    arrays = {"logits": np.asarray(traces["logits"]), "labels": np.asarray(meta.get("labels", []))}
    if "stream" in kinds and "stream_in" in traces:
        arrays["stream_in"] = traces["stream_in"]
    for kind in kinds:
        if kind not in traces:
            continue
        for i, arr in enumerate(traces[kind]):
            arrays[f"{kind}_{i}"] = arr
    arrays["meta_engine"] = np.array(meta.get("engine", ""))
    arrays["meta_indices"] = np.asarray(meta.get("indices", []))
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    os.close(fd)
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def plot_raster(path: str, traces: dict, sample: int = 0, title: str = "") -> None:
    """One raster per layer (channel x time), the LIF input beneath it, and the logits."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_layers = len(traces["spikes"])
    fig, axes = plt.subplots(2 * n_layers + 1, 1, figsize=(10, 2.2 * (2 * n_layers + 1)), squeeze=False)
    axes = axes[:, 0]
    for i in range(n_layers):
        spk = np.asarray(traces["spikes"][i][sample])
        ch, t = np.nonzero(spk)
        ax = axes[2 * i]
        ax.scatter(t, ch, s=2, marker="|", color="k")
        ax.set_xlim(-0.5, spk.shape[1] - 0.5)
        ax.set_ylim(-0.5, spk.shape[0] - 0.5)
        ax.set_ylabel(f"layer {i}\nchannel")
        ax.set_title(f"layer {i} spikes (rate {spk.mean():.3f})", fontsize=9)
        ax = axes[2 * i + 1]
        im = ax.imshow(np.asarray(traces["ssm"][i][sample]), aspect="auto", cmap="coolwarm", interpolation="nearest")
        ax.set_ylabel("channel")
        ax.set_title(f"layer {i} LIF input (integer SSM output)", fontsize=9)
        fig.colorbar(im, ax=ax, pad=0.01)
    ax = axes[-1]
    logits = np.asarray(traces["logits"][sample], dtype=np.float64)
    ax.bar(np.arange(len(logits)), logits, color="tab:blue")
    ax.set_title(f"readout logits (class {int(logits.argmax())})", fontsize=9)
    ax.set_xlabel("class")
    for a in axes[:-1]:
        a.set_xlabel("time step", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=folder)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)

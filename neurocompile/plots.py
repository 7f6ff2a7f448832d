"""Figures of one sample and of a parity report: rasters (float vs integer vs Lava side by side),
per-layer spike mismatch and firing rates, and the readout as class probabilities with the prediction
marked.  Used by ``simulate --plot`` (traces.plot_raster) and ``validate --html`` (report_html).

What a row shows, per spike node: its spikes (channel x time), then what drives it -- for a LIF
the integer input current, for a stochastic sampler its firing probability in [0, 1] (the integer
p / 2**bits, computed from the sampler's recorded input with the very affine the chip runs when the
run did not record p).  An input shared by several spike nodes is drawn once.
"""
from __future__ import annotations

import io

import numpy as np

SIDE_TITLES = {"float": "float PyTorch", "integer": "integer emulator", "lava": "Lava fixed_pt"}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def sampler_probability(program, node: str, traces: dict):
    """A sampler's firing probability (channels, time) in [0, 1] from one sample's traces: its own
    ``<node>.p`` (integer p or float probability) or, failing that, its recorded input through the
    sampler's integer affine (arith.sample).  None when neither is there."""
    from . import arith
    op = program.op(node)
    bits = int(op.prob_bits)
    if f"{node}.p" in traces:
        p = np.asarray(traces[f"{node}.p"], dtype=np.float64)
        return p / 2.0 ** bits if p.max(initial=0) > 1 else p
    src = program.inputs(node)["main"]
    if src not in traces:
        return None
    x = np.asarray(traces[src], dtype=np.int64).T                       # (time, channels)
    p, _ = arith.sample(x, op.in_shift, op.lo, op.hi, op.mult, op.offset, op.out_shift, bits, np.zeros_like(x))
    return (p / 2.0 ** bits).T


def raster_rows(program, sides: dict) -> list:
    """(kind, node) rows: every spike node, then once per distinct driver its input or probability."""
    from .ir import IntSampler
    rows, drawn = [], set()
    for node in program.spike_nodes:
        rows.append(("spikes", node))
        if isinstance(program.op(node), IntSampler):
            if any(sampler_probability(program, node, t) is not None for t in sides.values()):
                rows.append(("probability", node))
            continue
        src = program.inputs(node)["main"]
        if src not in drawn and any(src in t for t in sides.values()):
            drawn.add(src)
            rows.append(("input", src))
    return rows


def raster_figure(program, sides: dict, title: str = "", label=None, raw=None):
    """One sample ({side: {trace name: (channels, time) array, 'logits': (C,)}}): the raw input
    (``raw``, (L, C) or (L,) integer levels, when given), per spike node its spikes and driver
    (``raster_rows``), and the readout with the prediction and the true ``label`` marked.

    Several sides: a column per side, a row per panel.  One side (``simulate --plot``): a grid, the
    input beside the readout on top, then a row per spike node (its spikes beside its driver), two
    nodes per row when there are many, so a deep model does not become one long column.  Every panel
    draws channel 0 at the bottom (rasters and heat maps alike)."""
    plt = _pyplot()
    rows = raster_rows(program, sides)
    names = list(sides)
    inp = _input_array(program, raw)
    if len(names) == 1:
        return _single_grid(program, rows, sides[names[0]], title, label, inp)
    panels = ([("raw", None)] if inp is not None else []) + rows + [("readout", None)]
    fig, axes = plt.subplots(len(panels), len(names), figsize=(4.2 * len(names) + 1.5, 1.9 * len(panels) + 0.6),
                             squeeze=False, constrained_layout=True)
    for col, side in enumerate(names):
        for row, (kind, node) in enumerate(panels):
            ax = axes[row, col]
            if kind == "raw" and col:                      # the input is drawn once, in the first column
                ax.set_axis_off()
            else:
                _cell_panel(ax, program, kind, node, sides[side], label, inp)
            if col:
                ax.set_ylabel("")
        top = 1 if inp is not None else 0                  # the input row is not a side's: title the row below
        axes[top, col].annotate(SIDE_TITLES.get(side, side), xy=(0.5, 1.0), xytext=(0, 22), xycoords="axes fraction",
                                textcoords="offset points", ha="center", fontsize=11, fontweight="bold")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _single_grid(program, rows, traces, title, label, inp):
    """One run as a grid: [input | readout], then (spikes | driver) per spike node, two per row when
    there are more than four spike nodes."""
    plt = _pyplot()
    pairs, current = [], None
    for kind, node in rows:
        if kind == "spikes":
            current = [(kind, node)]
            pairs.append(current)
        else:
            current.append((kind, node))
    per_row = 2 if len(pairs) > 4 else 1
    ncols = 2 * per_row
    body = []
    for i in range(0, len(pairs), per_row):
        line = []
        for pair in pairs[i:i + per_row]:
            line += pair + [None] * (2 - len(pair))
        body.append(line + [None] * (ncols - len(line)))
    grid = [[("raw", None) if inp is not None else None, ("readout", None)] + [None] * (ncols - 2)] + body
    fig, axes = plt.subplots(len(grid), ncols, figsize=(4.6 * ncols, 2.2 * len(grid) + 0.6), squeeze=False,
                             constrained_layout=True)
    for r, line in enumerate(grid):
        for c, cell in enumerate(line):
            ax = axes[r, c]
            if cell is None:
                ax.set_axis_off()
            else:
                _cell_panel(ax, program, *cell, traces, label, inp)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _cell_panel(ax, program, kind, node, traces, label, inp) -> None:
    """One panel of either layout: the raw input, the readout, or a spike node's spikes or driver."""
    if kind == "raw":
        _input_panel(ax, inp)
    elif kind == "readout":
        _logits_panel(ax, traces.get("logits"), label)
    else:
        _panel(ax, program, kind, node, traces)


def _input_array(program, raw):
    """One sample's raw levels as (channels, time), or None."""
    if raw is None:
        return None
    from .program import raw_inputs
    return raw_inputs(program, np.asarray(raw)[None])[0]


def _input_panel(ax, x) -> None:
    """The raw integer input: a line for one channel (a pixel or token stream), a heat map for several."""
    C, L = x.shape
    if C == 1:
        ax.step(np.arange(L), x[0], where="mid", color="k", lw=0.8)
        ax.set_xlim(-0.5, L - 0.5)
        ax.set_ylabel("level", fontsize=8)
    else:
        im = ax.imshow(x, aspect="auto", cmap="Greys", origin="lower", interpolation="nearest")
        ax.figure.colorbar(im, ax=ax, pad=0.01, fraction=0.05)
        ax.set_ylabel("channel", fontsize=8)
    ax.set_title(f"input: raw integer levels ({C} channel{'s' if C > 1 else ''} x {L} steps)", fontsize=8)
    ax.set_xlabel("time step", fontsize=7)
    ax.tick_params(labelsize=7)


def _panel(ax, program, kind, node, traces) -> None:
    if kind == "spikes":
        data = traces.get(node)
        if data is None:
            ax.set_axis_off()
            return
        data = np.asarray(data)
        ch, t = np.nonzero(data)
        ax.scatter(t, ch, s=3, marker="|", color="k", linewidths=0.8)
        ax.set_xlim(-0.5, data.shape[1] - 0.5)
        ax.set_ylim(-0.5, data.shape[0] - 0.5)
        ax.set_title(f"{node} spikes (rate {data.mean():.3f})", fontsize=8)
    elif kind == "probability":
        p = sampler_probability(program, node, traces)
        if p is None:
            ax.set_axis_off()
            return
        im = ax.imshow(p, aspect="auto", cmap="viridis", vmin=0, vmax=1, origin="lower", interpolation="nearest")
        ax.set_title(f"{node}: firing probability (mean {p.mean():.3f})", fontsize=8)
        ax.figure.colorbar(im, ax=ax, pad=0.01, fraction=0.05)
    else:
        data = traces.get(node)
        if data is None:
            ax.set_axis_off()
            return
        data = np.asarray(data, dtype=np.float64)
        lim = max(np.abs(data).max(), 1e-9)
        im = ax.imshow(data, aspect="auto", cmap="coolwarm", vmin=-lim, vmax=lim, origin="lower", interpolation="nearest")
        ax.set_title(f"{node}: input current of the next spike node (integer)", fontsize=8)
        ax.figure.colorbar(im, ax=ax, pad=0.01, fraction=0.05)
    ax.set_ylabel("channel", fontsize=8)
    ax.set_xlabel("time step", fontsize=7)
    ax.tick_params(labelsize=7)


def _logits_panel(ax, logits, label=None) -> None:
    """The readout with its scale, the predicted class (orange) and the true ``label`` (outlined,
    "true" above it) marked: float logits as softmax class probabilities, integer (fixed-point)
    logits as logit / max|logit|, the range in the title."""
    if logits is None:
        ax.set_axis_off()
        return
    z = np.asarray(logits, dtype=np.float64)
    k = int(np.argmax(z))
    colors = ["tab:orange" if i == k else "tab:blue" for i in range(len(z))]
    peak = max(float(np.abs(z).max(initial=0)), 1e-30)
    if peak > 1e3:                                        # integer readout: its own fixed point, scaled
        y, scale = z / peak, "logit / max|logit|"
        ax.axhline(0, color="k", lw=0.6)
        ax.set_ylim(min(-0.05, y.min() * 1.1), 1.25)
    else:
        y = np.exp(z - z.max())
        y, scale = y / y.sum(), "softmax probability"
        ax.set_ylim(0, 1.25)
    bars = ax.bar(np.arange(len(y)), y, color=colors)
    ax.set_xticks(np.arange(len(y)))
    ax.set_xlabel("class", fontsize=8)
    ax.set_ylabel(scale, fontsize=8)
    truth = ""
    if label is not None and 0 <= int(label) < len(y):
        t = int(label)
        bars[t].set_edgecolor("tab:green")
        bars[t].set_linewidth(2.0)
        ax.annotate("predicted = true" if t == k else "true", xy=(t, max(y[t], 0)), xytext=(0, 2 if t == k else 10),
                    textcoords="offset points", ha="center", fontsize=7, color="tab:green", fontweight="bold")
        truth = f", true {t}"
    if label is None or int(label) != k:
        ax.annotate("predicted", xy=(k, y[k]), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=7)
    ax.set_title(f"readout: class {k}{truth} (logits {z.min():.4g} .. {z.max():.4g})", fontsize=8)
    ax.tick_params(labelsize=7)


def layer_figure(report: dict):
    """Per spike node: firing rate float vs integer, and the mismatch per float spike (deterministic
    spikes) or the probability error (sampled spikes)."""
    plt = _pyplot()
    rows = report["spike_nodes"]
    names = [r["node"] for r in rows]
    x = np.arange(len(rows))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True)
    a1.bar(x - 0.2, [r["firing_rate_float"] for r in rows], 0.4, label="float")
    a1.bar(x + 0.2, [r["firing_rate_integer"] for r in rows], 0.4, label="integer")
    a1.set_title("firing rate (spikes per channel per step)", fontsize=9)
    a1.legend(fontsize=8)
    if "mismatches_per_float_spike" in rows[0]:
        a2.bar(x, [100 * r["mismatches_per_float_spike"] for r in rows], color="tab:red")
        a2.set_title("float vs integer spike mismatch (% of float spikes)", fontsize=9)
    else:
        a2.bar(x - 0.2, [r["probability_error_max"] for r in rows], 0.4, label="largest", color="tab:red")
        a2.bar(x + 0.2, [r["probability_error_mean"] for r in rows], 0.4, label="mean", color="tab:pink")
        a2.axhline(2 ** -8, color="k", lw=0.8, ls="--", label="2^-8")
        a2.set_title("|integer - float| firing probability, same inputs", fontsize=9)
        a2.legend(fontsize=8)
    for ax in (a1, a2):
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        ax.tick_params(labelsize=7)
    return fig


def passes_figure(report: dict):
    """Per-pass accuracies of the Monte-Carlo passes, float and integer, with their means."""
    plt = _pyplot()
    acc = report["accuracy"]
    fig, ax = plt.subplots(figsize=(7, 3), constrained_layout=True)
    for side, color in (("float", "tab:blue"), ("integer", "tab:orange")):
        v = 100 * np.asarray(acc[f"{side}_per_pass"])
        ax.plot(np.arange(len(v)), v, "o-", color=color, label=f"{side} (mean {v.mean():.2f} %)", ms=4)
    ax.set_xticks(np.arange(len(acc["float_per_pass"])))
    ax.set_xlabel("pass k (seed + k)", fontsize=8)
    ax.set_ylabel("accuracy (%)", fontsize=8)
    ax.set_title("Monte-Carlo passes", fontsize=9)
    ax.legend(fontsize=8)
    return fig


def png_bytes(fig, dpi: int = 100) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buf.getvalue()

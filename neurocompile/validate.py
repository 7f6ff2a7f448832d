"""Accuracy parity: float PyTorch model vs integer emulator (whole split) vs Lava (first N samples).

Float and integer runs go batch by batch side by side, so per-layer spike agreement is counted
without holding a whole test set of traces in memory.  ``lava_bit_exact`` is true only when every
recorded trace of the Lava run (stream, LIF input, spikes, every layer) and every logit equal the
emulator's for the same samples.
"""
from __future__ import annotations

import time

import numpy as np

from .emulator import default_backend, default_device, emulate
from .program import Program

LAVA_COMPARED = ("stream_in", "ssm", "spikes", "stream", "logits")


def _float_runs(model, levels: np.ndarray, input_levels: int, device):
    import torch

    x = torch.as_tensor(levels.astype(np.float32) / input_levels, device=device)
    with torch.no_grad():
        logits, rec = model(x, neuron="lif", record=True)
        _, rec_sdn = model(x, neuron="sdn", record=True)
    spikes = [s.bool().cpu().numpy() for s in rec["spikes"]]
    spikes_sdn = [s.bool().cpu().numpy() for s in rec_sdn["spikes"]]
    return logits.cpu().numpy(), spikes, spikes_sdn


def validate(model, program: Program, levels: np.ndarray, labels: np.ndarray, lava_samples: int = 16,
             batch_size: int = 128, device=None, lava_runner=None, progress=None, lava_timeout_s: int = 1800,
             lava_progress=None, emulator_backend=None) -> dict:
    """Return the parity report (a JSON-ready dict)."""
    device = device or default_device()
    emulator_backend = emulator_backend or default_backend(device)
    model = model.to(device).eval()
    n, n_layers = len(labels), program.n_layers
    input_levels = int(program.model["input_levels"])
    correct = {"float": 0, "integer": 0}
    agree = np.zeros(n_layers)
    agree_sdn = np.zeros(n_layers)
    rate_f, rate_i = np.zeros(n_layers), np.zeros(n_layers)
    cells = 0
    seconds = {"float": 0.0, "integer": 0.0}     # the float runs include the SDN pass
    if progress:
        progress(0, n)
    for start in range(0, n, batch_size):
        lv, y = levels[start:start + batch_size], labels[start:start + batch_size]
        t_start = time.perf_counter()
        f_logits, f_spikes, sdn_spikes = _float_runs(model, lv, input_levels, device)
        t_mid = time.perf_counter()
        emu = emulate(program, lv, record=True, device=device, batch_size=batch_size, backend=emulator_backend)
        seconds["float"] += t_mid - t_start
        seconds["integer"] += time.perf_counter() - t_mid
        correct["float"] += int((f_logits.argmax(1) == y).sum())
        correct["integer"] += int((emu["logits"].argmax(1) == y).sum())
        for i in range(n_layers):
            agree[i] += (f_spikes[i] == emu["spikes"][i]).sum()
            agree_sdn[i] += (f_spikes[i] == sdn_spikes[i]).sum()
            rate_f[i] += f_spikes[i].sum()
            rate_i[i] += emu["spikes"][i].sum()
        cells += f_spikes[0].size
        if progress:
            progress(min(start + batch_size, n), n)

    report = {
        "samples": n,
        "accuracy": {"float": correct["float"] / n, "integer": correct["integer"] / n},
        "layers": [{"layer": i,
                    "spike_agreement_float_vs_integer": agree[i] / cells,
                    "spike_agreement_sdn_vs_lif": agree_sdn[i] / cells,
                    "firing_rate_float": rate_f[i] / cells,
                    "firing_rate_integer": rate_i[i] / cells} for i in range(n_layers)],
        "seconds": seconds,
        "device": str(device),
        "emulator_backend": emulator_backend,
    }
    report["lava_samples"] = 0
    report["lava_bit_exact"] = None
    report["accuracy"]["lava"] = None
    if lava_samples > 0:
        from .targets.loihi2.runner import run_lava

        m = min(lava_samples, n)
        t1 = time.perf_counter()
        if lava_progress:
            lava_progress(0, m)
        lava = (lava_runner or run_lava)(program, levels[:m], record=True, timeout_s=lava_timeout_s,
                                         progress=lava_progress)
        report["seconds"]["lava"] = time.perf_counter() - t1
        emu = emulate(program, levels[:m], record=True, device="cpu")
        mismatches = compare_traces(lava, emu)
        report["lava_samples"] = m
        report["accuracy"]["lava"] = float((lava["logits"].argmax(1) == labels[:m]).mean())
        report["accuracy"]["integer_on_lava_samples"] = float((emu["logits"].argmax(1) == labels[:m]).mean())
        report["lava_bit_exact"] = not mismatches
        report["lava_mismatches"] = mismatches
    return report


def compare_traces(a: dict, b: dict) -> list:
    """Names of the traces that differ anywhere (empty list: identical)."""
    bad = []
    for key in LAVA_COMPARED:
        xs, ys = a[key], b[key]
        if isinstance(xs, list):
            bad += [f"{key}[{i}]" for i, (x, y) in enumerate(zip(xs, ys)) if not np.array_equal(x, y)]
            if len(xs) != len(ys):
                bad.append(f"{key} (layer count)")
        elif not np.array_equal(np.asarray(xs), np.asarray(ys)):
            bad.append(key)
    return bad


def format_report(r: dict) -> str:
    acc = r["accuracy"]
    pct = lambda v: "n/a" if v is None else f"{100 * v:6.2f} %"
    lines = [f"Parity on {r['samples']} samples ({r['device']})",
             f"  {'path':<34}{'accuracy':>10}",
             f"  {'float PyTorch (exact LIF)':<34}{pct(acc['float']):>10}",
             f"  {'integer emulator':<34}{pct(acc['integer']):>10}",
             f"  {'Lava Loihi2SimCfg fixed_pt':<34}{pct(acc['lava']):>10}   (first {r['lava_samples']} samples)"]
    if r["lava_samples"]:
        lines.append(f"  {'integer on those samples':<34}{pct(acc['integer_on_lava_samples']):>10}")
        lines.append(f"  Lava vs emulator bit-exact (every spike, stream and logit): {r['lava_bit_exact']}"
                     + ("" if r["lava_bit_exact"] else f"  differs: {', '.join(r['lava_mismatches'])}"))
    lines.append(f"  {'layer':<7}{'float~int spikes':>18}{'SDN~LIF spikes':>16}{'rate float':>12}{'rate int':>10}")
    for row in r["layers"]:
        lines.append(f"  {row['layer']:<7}{100 * row['spike_agreement_float_vs_integer']:>17.3f}%"
                     f"{100 * row['spike_agreement_sdn_vs_lif']:>15.3f}%{row['firing_rate_float']:>12.4f}"
                     f"{row['firing_rate_integer']:>10.4f}")
    sec = r["seconds"]
    lines.append(f"  time: float {sec['float']:.1f} s (exact LIF + SDN), integer emulator {sec['integer']:.1f} s "
                 f"({r['emulator_backend']})" + (f", Lava {sec['lava']:.1f} s" if "lava" in sec else ""))
    return "\n".join(lines)

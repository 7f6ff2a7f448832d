"""Accuracy parity: float PyTorch model vs integer emulator (whole split) vs Lava (first N samples).

Float and integer runs go batch by batch side by side, so per-node spike agreement is counted
without holding a whole test set of traces in memory.  Spike agreement is reported two ways: as a
share of all (channel, step) cells, which silent cells flatter (at a firing rate of 0.13, 99.3 %
of cells can mean 5 % of spikes differ), and as mismatched cells per float spike.
``lava_bit_exact`` is true only when every recorded node output of the Lava run and every logit
equal the emulator's for the same samples.
"""
from __future__ import annotations

import time

import numpy as np

from .emulator import default_backend, emulate
from .frontend import frontend_for
from .program import Program


class _SpikeTally:
    """Per spike node: cells, agreeing cells, spikes on each side (float, integer, SDN)."""

    def __init__(self):
        self.cells = self.agree = self.agree_sdn = 0
        self.float_spikes = self.int_spikes = 0

    def add(self, f: np.ndarray, i: np.ndarray, sdn: np.ndarray | None) -> None:
        self.cells += f.size
        self.agree += int((f == i).sum())
        self.float_spikes += int(f.sum())
        self.int_spikes += int(i.sum())
        if sdn is not None:
            self.agree_sdn += int((f == sdn).sum())

    def row(self, node: str, layer, with_sdn: bool) -> dict:
        per_spike = lambda agree: (self.cells - agree) / max(self.float_spikes, 1)
        row = {"node": node, "layer": layer,
               "spike_agreement_float_vs_integer": self.agree / self.cells,
               "mismatches_per_float_spike": per_spike(self.agree),
               "firing_rate_float": self.float_spikes / self.cells,
               "firing_rate_integer": self.int_spikes / self.cells}
        if with_sdn:
            row["spike_agreement_sdn_vs_lif"] = self.agree_sdn / self.cells
            row["sdn_mismatches_per_lif_spike"] = per_spike(self.agree_sdn)
        return row


def model_mismatch(model, program: Program, values: np.ndarray, device="cpu") -> str | None:
    """Why ``program`` cannot be the compilation of ``model`` (spike populations by name and width,
    number of classes), or None.  The artifact's recorded checkpoint digest says the same when it is
    there; this holds for any artifact, so the comparison below never pairs unrelated nodes."""
    frontend = frontend_for(program.model["kind"])
    out = frontend.float_run(model.to(device).eval(), values[:1], device)
    logits, spikes = out[0], out[1] if frontend.stochastic else out[1]["lif"]
    widths = {name: int(np.asarray(a).shape[1]) for name, a in spikes.items()}
    counts = program.channel_counts()
    want = {name: counts[name] for name in program.spike_nodes}
    if widths != want:
        odd = sorted(set(widths) ^ set(want)) or sorted(n for n in want if widths[n] != want[n])
        return f"its spiking nodes differ from the model's ({', '.join(odd[:3])})"
    if logits.shape[1] != program.n_classes:
        return f"it has {program.n_classes} classes, the model {logits.shape[1]}"
    return None


def validate(model, program: Program, values: np.ndarray, raw: np.ndarray, labels: np.ndarray,
             lava_samples: int = 16, batch_size: int = 128, device=None, lava_runner=None, progress=None,
             lava_timeout_s: int = 1800, lava_progress=None, emulator_backend=None) -> dict:
    """Return the parity report (a JSON-ready dict).  ``values``: what the float model sees;
    ``raw``: the same samples as the integer runs see them (the input format's quantization)."""
    from .emulator import check_device
    device = check_device(device)
    emulator_backend = emulator_backend or default_backend(device)
    frontend = frontend_for(program.model["kind"])
    model = model.to(device).eval()
    n = len(labels)
    spike_nodes = program.spike_nodes
    tallies = {name: _SpikeTally() for name in spike_nodes}
    correct = {"float": 0, "integer": 0}
    seconds = {"float": 0.0, "integer": 0.0}
    with_sdn = False
    if progress:
        progress(0, n)
    for start in range(0, n, batch_size):
        batch = slice(start, start + batch_size)
        t_start = time.perf_counter()
        f_logits, f_spikes = frontend.float_run(model, values[batch], device)
        t_mid = time.perf_counter()
        emu = emulate(program, raw[batch], record=True, device=device, batch_size=batch_size, backend=emulator_backend)
        seconds["float"] += t_mid - t_start
        seconds["integer"] += time.perf_counter() - t_mid
        y = labels[batch]
        correct["float"] += int((f_logits.argmax(1) == y).sum())
        correct["integer"] += int((emu["logits"].argmax(1) == y).sum())
        exact, sdn = f_spikes["lif"], f_spikes.get("sdn")
        with_sdn = sdn is not None
        for name in spike_nodes:
            tallies[name].add(exact[name], emu[name], sdn[name] if sdn else None)
        if progress:
            progress(min(start + batch_size, n), n)

    report = {
        "samples": n,
        "accuracy": {"float": correct["float"] / n, "integer": correct["integer"] / n},
        "spike_nodes": [tallies[name].row(name, program.layer_of(name), with_sdn) for name in spike_nodes],
        "seconds": seconds,
        "device": str(device),
        "emulator_backend": emulator_backend,
        "input": program.model.get("input"),
        "lava_samples": 0,
        "lava_bit_exact": None,
    }
    report["accuracy"]["lava"] = None
    if lava_samples > 0:
        _lava_parity(report, program, raw, labels, lava_samples, lava_runner, lava_timeout_s, lava_progress, 0)
    return report


def prng_uniforms(program: Program, seed: int, device):
    """The integer run's uniforms as the float model's ``uniforms`` hook: (u + 1/2) / 2**bits, so a
    float probability p fires exactly when the integer one would, up to p's own quantization."""
    import torch

    from .frontend import pspikessm_uniform_source
    from .ir import IntSampler
    bits = {program.op(n).prob_bits for n in program.nodes_of(IntSampler)}.pop()

    def uniforms(layer, which, shape):
        B, H, L = shape
        from . import arith
        u = arith.uniform_bits(int(seed), pspikessm_uniform_source(layer, which),
                               torch.arange(H, dtype=torch.int64)[:, None], torch.arange(L, dtype=torch.int64)[None, :],
                               bits)
        return ((u.double() + 0.5) / 2.0 ** bits).to(device).expand(B, H, L)
    return uniforms


def _interval(accs: list) -> list:
    """95 % confidence interval of the mean of per-pass accuracies (normal approximation)."""
    a = np.asarray(accs, dtype=np.float64)
    half = 1.96 * a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else 0.0
    return [float(a.mean() - half), float(a.mean() + half)]


def validate_stochastic(model, program: Program, values: np.ndarray, raw: np.ndarray, labels: np.ndarray,
                        mc_passes: int = 8, seed: int = 0, lava_samples: int = 16, batch_size: int = 128, device=None,
                        lava_runner=None, progress=None, lava_timeout_s: int = 1800, lava_progress=None,
                        emulator_backend=None) -> dict:
    """Parity of a model with sampled spikes (P-SpikeSSM): Monte-Carlo over ``mc_passes`` passes.

    Float passes draw torch's uniforms (seeded ``seed + k``), integer passes the PRNG with seed
    ``seed + k``: accuracy means with 95 % intervals, majority-vote predictions and their agreement,
    and per sampler the mean firing probability and spike rate on both sides.  Then one pass of the
    float model fed the PRNG's own uniforms, compared spike by spike with the integer run (what is
    left is the quantization of the probabilities), and Lava against the emulator, same seed."""
    import torch

    from .emulator import check_device
    device = check_device(device)
    emulator_backend = emulator_backend or default_backend(device)
    frontend = frontend_for(program.model["kind"])
    model = model.to(device).eval()
    n, K = len(labels), int(mc_passes)
    nodes = program.spike_nodes
    votes = {side: np.zeros((n, program.n_classes), np.int64) for side in ("float", "integer")}
    correct = {side: np.zeros(K) for side in ("float", "integer")}
    stats = {side: {nd: np.zeros(2) for nd in nodes} for side in ("float", "integer")}    # sum p, sum spikes
    aligned = {nd: _SpikeTally() for nd in nodes}
    seconds = {"float": 0.0, "integer": 0.0}
    cells = 0
    if progress:
        progress(0, n)
    for start in range(0, n, batch_size):
        batch = slice(start, start + batch_size)
        y = labels[batch]
        for k in range(K):
            t0 = time.perf_counter()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + k)
                f_logits, f_spikes, f_probs = frontend.float_run(model, values[batch], device)
            t1 = time.perf_counter()
            emu = emulate(program, raw[batch], record=True, device=device, batch_size=batch_size,
                          backend=emulator_backend, seed=seed + k)
            seconds["float"] += t1 - t0
            seconds["integer"] += time.perf_counter() - t1
            for side, logits in (("float", f_logits), ("integer", emu["logits"])):
                pred = logits.argmax(1)
                correct[side][k] += int((pred == y).sum())
                votes[side][np.arange(start, start + len(y)), pred] += 1
            for nd in nodes:
                bits = program.op(nd).prob_bits
                stats["float"][nd] += (f_probs[nd].sum(), f_spikes[nd].sum())
                stats["integer"][nd] += (emu[f"{nd}.p"].sum() / 2.0 ** bits, emu[nd].sum())
            if k == 0:
                cells += emu[nodes[0]].size
                _, a_spikes, _ = frontend.float_run(model, values[batch], device, uniforms=prng_uniforms(program, seed, device))
                for nd in nodes:
                    aligned[nd].add(a_spikes[nd], emu[nd], None)
        if progress:
            progress(min(start + batch_size, n), n)

    acc = {side: correct[side] / n for side in correct}
    vote = {side: votes[side].argmax(1) for side in votes}
    report = {
        "samples": n, "mc_passes": K, "seed": seed,
        "accuracy": {"float": float(acc["float"].mean()), "integer": float(acc["integer"].mean()),
                     "float_ci": _interval(acc["float"]), "integer_ci": _interval(acc["integer"]),
                     "float_passes": acc["float"].tolist(), "integer_passes": acc["integer"].tolist(),
                     "float_majority_vote": float((vote["float"] == labels).mean()),
                     "integer_majority_vote": float((vote["integer"] == labels).mean())},
        "majority_vote_agreement": float((vote["float"] == vote["integer"]).mean()),
        "spike_nodes": [{"node": nd, "layer": program.layer_of(nd),
                         "mean_probability_float": stats["float"][nd][0] / (K * cells),
                         "mean_probability_integer": stats["integer"][nd][0] / (K * cells),
                         "firing_rate_float": stats["float"][nd][1] / (K * cells),
                         "firing_rate_integer": stats["integer"][nd][1] / (K * cells),
                         "same_uniforms_spike_agreement": aligned[nd].agree / aligned[nd].cells,
                         "same_uniforms_mismatches_per_float_spike":
                             (aligned[nd].cells - aligned[nd].agree) / max(aligned[nd].float_spikes, 1)}
                        for nd in nodes],
        "seconds": seconds, "device": str(device), "emulator_backend": emulator_backend,
        "input": program.model.get("input"), "lava_samples": 0, "lava_bit_exact": None,
    }
    report["accuracy"]["lava"] = None
    if lava_samples > 0:
        _lava_parity(report, program, raw, labels, lava_samples, lava_runner, lava_timeout_s, lava_progress, seed)
    return report


def _lava_parity(report, program, raw, labels, lava_samples, lava_runner, timeout_s, progress, seed) -> None:
    """Lava vs the emulator on the first samples (same seed): bit for bit, every node and logit."""
    from .target import get_target

    m = min(lava_samples, len(labels))
    t1 = time.perf_counter()
    if progress:
        progress(0, m)
    run = lava_runner or get_target(program.report.get("target", "loihi2")).load("runner")
    lava = run(program, raw[:m], record=True, timeout_s=timeout_s, progress=progress, seed=seed)
    report["seconds"]["lava"] = time.perf_counter() - t1
    emu = emulate(program, raw[:m], record=True, device="cpu", seed=seed)
    mismatches = compare_traces(lava, emu)
    report["lava_samples"] = m
    report["accuracy"]["lava"] = float((lava["logits"].argmax(1) == labels[:m]).mean())
    report["accuracy"]["integer_on_lava_samples"] = float((emu["logits"].argmax(1) == labels[:m]).mean())
    report["lava_bit_exact"] = not mismatches
    report["lava_mismatches"] = mismatches
    report["lava_compared"] = sorted(k for k in lava if k != "seconds")


def compare_traces(a: dict, b: dict) -> list:
    """Names of the traces of ``a`` that differ from ``b`` anywhere, or that ``b`` lacks (empty
    list: identical).  ``seconds`` is not a trace."""
    bad = []
    for key in sorted(a):
        if key == "seconds":
            continue
        if key not in b:
            bad.append(f"{key} (missing)")
        elif not (np.shape(a[key]) == np.shape(b[key]) and np.array_equal(a[key], b[key])):
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
        lines.append(f"  Lava vs emulator bit-exact (every node output and logit): {r['lava_bit_exact']}"
                     + ("" if r["lava_bit_exact"] else f"  differs: {', '.join(r['lava_mismatches'])}"))
    sdn = bool(r["spike_nodes"]) and "spike_agreement_sdn_vs_lif" in r["spike_nodes"][0]
    head = f"  {'spike node':<16}{'float~int cells':>16}{'mism./spike':>12}"
    head += f"{'SDN~LIF cells':>15}{'mism./spike':>12}" if sdn else ""
    lines.append(head + f"{'rate float':>11}{'rate int':>10}")
    for row in r["spike_nodes"]:
        line = (f"  {row['node']:<16}{100 * row['spike_agreement_float_vs_integer']:>15.3f}%"
                f"{100 * row['mismatches_per_float_spike']:>11.2f}%")
        if sdn:
            line += f"{100 * row['spike_agreement_sdn_vs_lif']:>14.3f}%{100 * row['sdn_mismatches_per_lif_spike']:>11.2f}%"
        lines.append(line + f"{row['firing_rate_float']:>11.4f}{row['firing_rate_integer']:>10.4f}")
    sec = r["seconds"]
    lines.append(f"  time: float {sec['float']:.1f} s, integer emulator {sec['integer']:.1f} s "
                 f"({r['emulator_backend']})" + (f", Lava {sec['lava']:.1f} s" if "lava" in sec else ""))
    return "\n".join(lines)


def format_stochastic_report(r: dict) -> str:
    acc = r["accuracy"]
    pct = lambda v: "n/a" if v is None else f"{100 * v:6.2f} %"
    ci = lambda c: f"[{100 * c[0]:.2f}, {100 * c[1]:.2f}]"
    lines = [f"Monte-Carlo parity on {r['samples']} samples, {r['mc_passes']} passes per side ({r['device']})",
             f"  {'path':<34}{'accuracy':>10}   95 % interval       majority vote",
             f"  {'float PyTorch (torch uniforms)':<34}{pct(acc['float']):>10}   {ci(acc['float_ci']):<19}"
             f"{pct(acc['float_majority_vote'])}",
             f"  {'integer emulator (PRNG)':<34}{pct(acc['integer']):>10}   {ci(acc['integer_ci']):<19}"
             f"{pct(acc['integer_majority_vote'])}",
             f"  majority-vote predictions agree on {100 * r['majority_vote_agreement']:.2f} % of samples",
             f"  {'Lava Loihi2SimCfg fixed_pt':<34}{pct(acc['lava']):>10}   (first {r['lava_samples']} samples, seed {r['seed']})"]
    if r["lava_samples"]:
        lines.append(f"  Lava vs emulator bit-exact (same seed; every node output and logit): {r['lava_bit_exact']}"
                     + ("" if r["lava_bit_exact"] else f"  differs: {', '.join(r['lava_mismatches'])}"))
    lines.append(f"  {'sampler':<18}{'mean p float':>13}{'mean p int':>12}{'rate float':>12}{'rate int':>10}"
                 f"{'same-U cells':>14}{'mism./spike':>12}")
    for row in r["spike_nodes"]:
        lines.append(f"  {row['node']:<18}{row['mean_probability_float']:>13.4f}{row['mean_probability_integer']:>12.4f}"
                     f"{row['firing_rate_float']:>12.4f}{row['firing_rate_integer']:>10.4f}"
                     f"{100 * row['same_uniforms_spike_agreement']:>13.3f}%"
                     f"{100 * row['same_uniforms_mismatches_per_float_spike']:>11.2f}%")
    sec = r["seconds"]
    lines.append(f"  time: float {sec['float']:.1f} s, integer emulator {sec['integer']:.1f} s"
                 + (f", Lava {sec['lava']:.1f} s" if "lava" in sec else ""))
    return "\n".join(lines)

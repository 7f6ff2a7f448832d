"""Accuracy parity: float PyTorch model vs integer emulator (whole split) vs Lava (first N samples).

Float and integer runs go batch by batch side by side, so per-node spike agreement is counted
without holding a whole test set of traces in memory.  Spike agreement is reported two ways: as a
share of all (channel, step) cells, which silent cells flatter (at a firing rate of 0.13, 99.3 %
of cells can mean 5 % of spikes differ), and as mismatched cells per float spike.
``lava_bit_exact`` is true only when every recorded node output of the Lava run and every logit
equal the emulator's for the same samples.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from .emulator import default_backend, emulate
from .frontend import frontend_for
from .program import Program


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


@dataclass
class Scale:
    """How a validation runs: ``executor`` (None: float and emulator here, Lava in one killable child;
    else ``execute.LocalExecutor`` or ``execute.RayExecutor`` for every shard), ``store`` (finished
    shards, for a resumed run), the samples of one Lava shard, its timeout and retries (those of
    the serial child; an executor has its own)."""
    executor: object = None
    store: object = None
    lava_shard_samples: int = 16
    lava_timeout_s: float = 1800
    lava_retries: int = 0

    def lava_executor(self):
        from .execute import LocalExecutor
        if self.executor is not None:
            self.executor.timeout_s = self.lava_timeout_s
            return self.executor
        return LocalExecutor(1, self.lava_timeout_s, retries=self.lava_retries)

    def execution(self) -> dict:
        ex = self.executor
        return {"executor": "serial" if ex is None else ex.name,
                "workers": 1 if ex is None else getattr(ex, "workers", None),
                "lava_shard_samples": self.lava_shard_samples}


def _batches(n: int, size: int) -> list:
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def _run(name, fn, shared, bounds, scale: Scale, executor, progress, size_of=lambda a, b: b - a):
    """Shard results in order: ``fn(*shared, a, b, progress=)`` for each (a, b) of ``bounds``."""
    from .execute import Task, run_shards
    tasks = [Task(f"{name} {a}-{b - 1}", fn, tuple(shared) + (a, b), size_of(a, b)) for a, b in bounds]
    return run_shards(tasks, executor, scale.store, progress)


def _cpu_only(device, scale: Scale):
    if scale.executor is not None and str(device) != "cpu":
        raise ValueError("--workers/--ray run the float model and the emulator on CPU workers; use --device cpu")


# ---------------------------------------------------------------- deterministic spikes (SpikingSSM)
def parity_shard(model, program, values, raw, labels, device, backend, raster, a, b, progress=None) -> dict:
    """Float and integer on samples a..b-1: predictions, per spike node (cells, agree, agree SDN,
    float spikes, integer spikes), and the raster sample's traces when it lies here."""
    frontend = frontend_for(program.model["kind"])
    t0 = time.perf_counter()
    f_logits, f_spikes = frontend.float_run(model, values[a:b], device)
    t1 = time.perf_counter()
    emu = emulate(program, raw[a:b], record=True, device=device, batch_size=b - a, backend=backend, first_sample=a)
    t2 = time.perf_counter()
    exact, sdn = f_spikes["lif"], f_spikes.get("sdn")
    tally = np.zeros((len(program.spike_nodes), 5), np.int64)
    for k, name in enumerate(program.spike_nodes):
        f, i = exact[name], emu[name]
        tally[k] = (f.size, (f == i).sum(), (f == sdn[name]).sum() if sdn else 0, f.sum(), i.sum())
    out = {"pred_float": f_logits.argmax(1), "pred_integer": emu["logits"].argmax(1), "tally": tally,
           "with_sdn": np.array(sdn is not None), "seconds": np.array([t1 - t0, t2 - t1])}
    if a <= raster < b:
        out.update(_raster_arrays(program, "float", {**exact, "logits": f_logits}, raster - a))
        out.update(_raster_arrays(program, "integer", emu, raster - a))
    return out


def _raster_arrays(program, side: str, traces: dict, j: int) -> dict:
    """One sample's spikes (every spike node), the spike nodes' inputs and the logits, for plots."""
    out = {f"raster.{side}.logits": np.asarray(traces["logits"][j], dtype=np.float64)}
    for node in program.spike_nodes:
        out[f"raster.{side}.{node}"] = np.asarray(traces[node][j])
        for key in (f"{node}.p", program.inputs(node)["main"]):
            if key in traces:
                out[f"raster.{side}.{key}"] = np.asarray(traces[key][j])
    return out


def validate(model, program: Program, values: np.ndarray, raw: np.ndarray, labels: np.ndarray,
             lava_samples: int = 16, batch_size: int = 128, device=None, lava_runner=None, progress=None,
             lava_timeout_s: int = 1800, lava_progress=None, emulator_backend=None, scale: Scale = None,
             raster_sample: int = 0) -> dict:
    """Return the parity report (a JSON-ready dict).  ``values``: what the float model sees;
    ``raw``: the same samples as the integer runs see them (the input format's quantization).
    Batches of ``batch_size`` at fixed boundaries are the shards: the report is the same for any
    executor and any number of workers."""
    from .emulator import check_device
    device = check_device(device)
    scale = scale or Scale(lava_timeout_s=lava_timeout_s)
    _cpu_only(device, scale)
    emulator_backend = emulator_backend or default_backend(device)
    model = model.to(device).eval()
    n = len(labels)
    spike_nodes = program.spike_nodes
    t0 = time.perf_counter()
    shards = _run("float+integer", parity_shard, (model, program, values, raw, labels, device, emulator_backend,
                                                  raster_sample), _batches(n, batch_size), scale, scale.executor,
                  progress)
    wall = time.perf_counter() - t0
    pred = {side: np.concatenate([r[f"pred_{side}"] for r in shards]) for side in ("float", "integer")}
    tally = sum(r["tally"] for r in shards)
    with_sdn = bool(shards[0]["with_sdn"]) if shards else False
    rows = []
    for k, name in enumerate(spike_nodes):
        cells, agree, agree_sdn, fs, is_ = (int(v) for v in tally[k])
        per_spike = lambda ag: (cells - ag) / max(fs, 1)
        row = {"node": name, "layer": program.layer_of(name),
               "spike_agreement_float_vs_integer": agree / cells, "mismatches_per_float_spike": per_spike(agree),
               "firing_rate_float": fs / cells, "firing_rate_integer": is_ / cells}
        if with_sdn:
            row["spike_agreement_sdn_vs_lif"] = agree_sdn / cells
            row["sdn_mismatches_per_lif_spike"] = per_spike(agree_sdn)
        rows.append(row)
    seconds = sum(r["seconds"] for r in shards)
    report = {
        "samples": n,
        "accuracy": {"float": float((pred["float"] == labels).mean()),
                     "integer": float((pred["integer"] == labels).mean()), "lava": None},
        "spike_nodes": rows,
        "seconds": {"float": float(seconds[0]), "integer": float(seconds[1]), "float_and_integer_wall": wall},
        "device": str(device),
        "emulator_backend": emulator_backend,
        "input": program.model.get("input"),
        "lava_samples": 0,
        "lava_bit_exact": None,
        "raster": _raster_of(shards, raster_sample, labels, raw),
    }
    _lava_parity(report, program, raw, labels, lava_samples, lava_progress, 0, scale, raster_sample, lava_runner)
    return report


def _raster_of(shards, sample: int, labels, raw=None) -> dict:
    """The raster sample's traces as lists (for the HTML report), keyed side -> trace name, and its
    raw input levels (``input``) when ``raw`` is given."""
    out = {"sample": int(sample), "label": int(labels[sample]) if 0 <= sample < len(labels) else None}
    if raw is not None and 0 <= sample < len(raw):
        out["input"] = np.asarray(raw[sample])
    for r in shards:
        for key, value in r.items():
            if key.startswith("raster."):
                _, side, name = key.split(".", 2)
                out.setdefault(side, {})[name] = value
    return out


# ------------------------------------------------------------- stochastic spikes (P-SpikeSSM)
def prng_uniforms(program: Program, seed: int, device, first_sample: int = 0):
    """The integer run's uniforms as the float model's ``uniforms`` hook: (u + 1/2) / 2**bits, so a
    float probability p fires exactly when the integer one would, up to p's own quantization.
    ``first_sample``: the data-file index of the batch's first sample."""
    import torch

    from . import arith
    from .frontend import pspikessm_uniform_source
    from .ir import IntSampler
    bits = {program.op(n).prob_bits for n in program.nodes_of(IntSampler)}.pop()

    def uniforms(layer, which, shape):
        B, H, L = shape
        u = arith.uniform_bits(int(seed), pspikessm_uniform_source(layer, which),
                               torch.arange(first_sample, first_sample + B, dtype=torch.int64)[:, None, None],
                               torch.arange(H, dtype=torch.int64)[None, :, None],
                               torch.arange(L, dtype=torch.int64)[None, None, :], bits)
        return ((u.double() + 0.5) / 2.0 ** bits).to(device)
    return uniforms


def sampler_input_frac(op) -> np.ndarray:
    """Fractional bits of a sampler's integer input, per channel, read off its affine: the quantizer
    made mult = round(scale 2**em) and out_shift = frac - in_shift + em - prob_bits."""
    scale = np.asarray(op.scale_float, dtype=np.float64)
    mult = np.asarray(op.mult, dtype=np.float64)
    live = (mult != 0) & (scale != 0)
    em = np.where(live, np.round(np.log2(np.abs(np.where(live, mult, 1) / np.where(live, scale, 1)))), 0)
    return np.asarray(op.out_shift) + int(op.prob_bits) + np.asarray(op.in_shift) - em.astype(np.int64)


def probability_error(program: Program, emu: dict) -> np.ndarray:
    """Per sampler: (largest, summed, count) of |integer p - float p| on the integer run's own
    sampler inputs (the float probability is clamp(scale x + shift, 0, 1) of the same input)."""
    out = np.zeros((len(program.spike_nodes), 3))
    for k, node in enumerate(program.spike_nodes):
        op = program.op(node)
        x = emu[program.inputs(node)["main"]].astype(np.float64)
        frac = sampler_input_frac(op)
        p_float = np.clip(op.scale_float[:, None] * x * np.exp2(-frac.astype(np.float64))[:, None]
                          + op.shift_float[:, None], 0, 1)
        d = np.abs(emu[f"{node}.p"] / 2.0 ** int(op.prob_bits) - p_float)
        out[k] = (d.max(initial=0.0), d.sum(), d.size)
    return out


def _pass_seed(seed: int, k: int, start: int) -> int:
    """The torch seed of float pass k on the batch starting at ``start`` (mc-rng "batch"): distinct
    batches and passes draw unrelated streams, and a batch draws the same whatever runs it."""
    return int(np.random.SeedSequence([seed + k, start]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _float_pass(frontend, model, values, device, torch_seed: int):
    import torch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed)
        return frontend.float_run(model, values, device)


def _float_stats(program, f_spikes, f_probs) -> np.ndarray:
    return np.array([(f_probs[nd].sum(), f_spikes[nd].sum()) for nd in program.spike_nodes])


def stochastic_shard(model, program, values, raw, labels, device, backend, seed, passes, float_too, raster, a, b,
                     progress=None) -> dict:
    """Samples a..b-1, ``passes`` Monte-Carlo passes: integer predictions per pass (PRNG seed + k) and,
    with ``float_too``, float ones (torch, seeded per pass and batch); sums of probabilities and
    spikes per sampler; pass 0 of the float model fed the PRNG's uniforms against the integer run;
    each sampler's probability error on the integer run's inputs."""
    frontend = frontend_for(program.model["kind"])
    nodes = program.spike_nodes
    out = {"pred_integer": np.zeros((passes, b - a), np.int64), "stats_integer": np.zeros((len(nodes), 2)),
           "seconds": np.zeros(2)}
    if float_too:
        out.update(pred_float=np.zeros((passes, b - a), np.int64), stats_float=np.zeros((len(nodes), 2)))
    for k in range(passes):
        t0 = time.perf_counter()
        if float_too:
            f_logits, f_spikes, f_probs = _float_pass(frontend, model, values[a:b], device, _pass_seed(seed, k, a))
            out["pred_float"][k] = f_logits.argmax(1)
            out["stats_float"] += _float_stats(program, f_spikes, f_probs)
        t1 = time.perf_counter()
        emu = emulate(program, raw[a:b], record=True, device=device, batch_size=b - a, backend=backend, seed=seed + k,
                      first_sample=a)
        out["seconds"] += (t1 - t0, time.perf_counter() - t1)
        out["pred_integer"][k] = emu["logits"].argmax(1)
        out["stats_integer"] += [(emu[f"{nd}.p"].sum() / 2.0 ** program.op(nd).prob_bits, emu[nd].sum()) for nd in nodes]
        if k == 0:
            _, a_spikes, _ = frontend.float_run(model, values[a:b], device,
                                                uniforms=prng_uniforms(program, seed, device, a))
            out["aligned"] = np.array([(a_spikes[nd].size, (a_spikes[nd] == emu[nd]).sum(), a_spikes[nd].sum())
                                       for nd in nodes], np.int64)
            out["prob_error"] = probability_error(program, emu)
            if a <= raster < b:
                out.update(_raster_arrays(program, "integer", emu, raster - a))
                if float_too:
                    with_p = {**f_spikes, **{f"{nd}.p": f_probs[nd] for nd in nodes}, "logits": f_logits}
                    out.update(_raster_arrays(program, "float", with_p, raster - a))
    return out


def authors_batch_bytes(model, n: int) -> int:
    """Memory of one float pass over ``n`` samples as one batch: every recorded (n, H, L) tensor
    (about 12 per block) in float32, plus the model's working copies."""
    cfg = model.config
    return int(n) * int(cfg.d_model) * int(cfg.l_max) * 4 * (12 * int(cfg.n_layers) + 8)


def check_authors_fits(model, n: int) -> None:
    """--mc-rng authors runs the whole split as one batch: refuse, with the size, when it cannot fit."""
    need = authors_batch_bytes(model, n)
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return
    if need > avail // 2:
        raise ValueError(f"--mc-rng authors runs all {n} samples as one batch: about {need / 2 ** 30:.1f} GiB, more "
                         f"than half of the {avail / 2 ** 30:.1f} GiB free; use --max-samples or --mc-rng batch")


def authors_float_passes(model, program, values, device, seed: int, passes: int, progress=None) -> dict:
    """The authors' Monte-Carlo evaluation: pass s is ``torch.manual_seed(s)`` then the whole split as
    one batch, uniforms drawn block by block in their storage order (models/pspikessm.py).  Returns
    per pass the predictions and the logits (``logits_float``, (passes, n, classes))."""
    frontend = frontend_for(program.model["kind"])
    nodes = program.spike_nodes
    pred, stats = np.zeros((passes, len(values)), np.int64), np.zeros((len(nodes), 2))
    logits = np.zeros((passes, len(values), int(program.n_classes)))
    raster = {}
    for k in range(passes):
        f_logits, f_spikes, f_probs = _float_pass(frontend, model, values, device, seed + k)
        pred[k], logits[k] = f_logits.argmax(1), f_logits
        stats += _float_stats(program, f_spikes, f_probs)
        if k == 0:
            raster = (f_spikes, f_probs, f_logits)
        if progress:
            progress(k + 1, passes)
    return {"pred_float": pred, "logits_float": logits, "stats_float": stats, "raster": raster}


MC_RNG = ("batch", "authors")


def validate_stochastic(model, program: Program, values: np.ndarray, raw: np.ndarray, labels: np.ndarray,
                        mc_passes: int = 8, seed: int = 0, lava_samples: int = 16, batch_size: int = 128, device=None,
                        lava_runner=None, progress=None, lava_timeout_s: int = 1800, lava_progress=None,
                        emulator_backend=None, scale: Scale = None, mc_rng: str = "batch",
                        raster_sample: int = 0) -> dict:
    """Parity of a model with sampled spikes (P-SpikeSSM): Monte-Carlo over ``mc_passes`` passes.

    Integer pass k uses PRNG seed ``seed + k`` (keyed by each sample's index, so batches do not
    matter).  Float pass k: ``mc_rng="batch"`` seeds torch per pass and batch (``_pass_seed``);
    ``"authors"`` replays the authors' evaluation, ``torch.manual_seed(seed + k)`` over the whole
    split as one batch.  Reported: accuracy per pass and means with 95 % intervals, majority-vote
    predictions and their agreement, per sampler the mean firing probability and spike rate on both
    sides, the float model fed the PRNG's own uniforms spike by spike against the integer run (what
    is left is the quantization of the probabilities), each sampler's probability error on the same
    inputs, and Lava against the emulator, same seed."""
    from .arith import check_seed
    from .emulator import check_device
    if mc_rng not in MC_RNG:
        raise ValueError(f"unknown --mc-rng {mc_rng!r} (choose from {', '.join(MC_RNG)})")
    seed = check_seed(seed)
    check_seed(seed + mc_passes - 1)
    device = check_device(device)
    scale = scale or Scale(lava_timeout_s=lava_timeout_s)
    _cpu_only(device, scale)
    emulator_backend = emulator_backend or default_backend(device)
    model = model.to(device).eval()
    n, K = len(labels), int(mc_passes)
    nodes = program.spike_nodes
    authors = None
    t0 = time.perf_counter()
    if mc_rng == "authors":
        check_authors_fits(model, n)
        authors = authors_float_passes(model, program, values, device, seed, K)
        authors_s = time.perf_counter() - t0
    shards = _run(f"stochastic-{mc_rng}", stochastic_shard,
                  (model, program, values, raw, labels, device, emulator_backend, seed, K, authors is None,
                   raster_sample), _batches(n, batch_size), scale, scale.executor, progress)
    wall = time.perf_counter() - t0
    pred = {"integer": np.concatenate([r["pred_integer"] for r in shards], 1)}
    stats = {"integer": sum(r["stats_integer"] for r in shards)}
    if authors is None:
        pred["float"] = np.concatenate([r["pred_float"] for r in shards], 1)
        stats["float"] = sum(r["stats_float"] for r in shards)
    else:
        pred["float"], stats["float"] = authors["pred_float"], authors["stats_float"]
    aligned = sum(r["aligned"] for r in shards)
    perr = np.stack([r["prob_error"] for r in shards])                        # (shards, nodes, 3)
    cells = K * int(aligned[0][0]) if len(nodes) else 1
    acc = {side: (pred[side] == labels[None, :]).mean(1) for side in pred}
    vote = {side: _majority(pred[side], program.n_classes) for side in pred}
    rows = []
    for k, nd in enumerate(nodes):
        c, agree, fs = (int(v) for v in aligned[k])
        rows.append({"node": nd, "layer": program.layer_of(nd),
                     "mean_probability_float": stats["float"][k][0] / cells,
                     "mean_probability_integer": stats["integer"][k][0] / cells,
                     "firing_rate_float": stats["float"][k][1] / cells,
                     "firing_rate_integer": stats["integer"][k][1] / cells,
                     "same_uniforms_spike_agreement": agree / c,
                     "same_uniforms_mismatches_per_float_spike": (c - agree) / max(fs, 1),
                     "probability_error_max": float(perr[:, k, 0].max()),
                     "probability_error_mean": float(perr[:, k, 1].sum() / max(perr[:, k, 2].sum(), 1))})
    seconds = sum(r["seconds"] for r in shards) + (np.array([authors_s, 0.0]) if authors is not None else 0)
    report = {
        "samples": n, "mc_passes": K, "seed": seed, "mc_rng": mc_rng,
        "accuracy": {"float": float(acc["float"].mean()), "integer": float(acc["integer"].mean()),
                     "float_ci": _interval(acc["float"]), "integer_ci": _interval(acc["integer"]),
                     "float_per_pass": acc["float"].tolist(), "integer_per_pass": acc["integer"].tolist(),
                     "float_majority_vote": float((vote["float"] == labels).mean()),
                     "integer_majority_vote": float((vote["integer"] == labels).mean()), "lava": None},
        "majority_vote_agreement": float((vote["float"] == vote["integer"]).mean()),
        "spike_nodes": rows,
        "seconds": {"float": float(seconds[0]), "integer": float(seconds[1]), "float_and_integer_wall": wall},
        "device": str(device), "emulator_backend": emulator_backend,
        "input": program.model.get("input"), "lava_samples": 0, "lava_bit_exact": None,
        "raster": _raster_of(shards, raster_sample, labels, raw),
    }
    if authors is not None and 0 <= raster_sample < n:
        f_spikes, f_probs, f_logits = authors["raster"]
        with_p = {**f_spikes, **{f"{nd}.p": f_probs[nd] for nd in nodes}, "logits": f_logits}
        report["raster"]["float"] = {k.split(".", 2)[2]: v for k, v in
                                     _raster_arrays(program, "float", with_p, raster_sample).items()}
    _lava_parity(report, program, raw, labels, lava_samples, lava_progress, seed, scale, raster_sample, lava_runner)
    return report


def _majority(pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Per sample, the class most passes predicted (ties: the smaller class)."""
    votes = np.zeros((pred.shape[1], n_classes), np.int64)
    for row in pred:
        votes[np.arange(pred.shape[1]), row] += 1
    return votes.argmax(1)


def _interval(accs) -> list:
    """95 % confidence interval of the mean of per-pass accuracies (normal approximation)."""
    from .verdict import Z95, standard_error
    a = np.asarray(accs, dtype=np.float64)
    half = Z95 * standard_error(a)
    return [float(max(a.mean() - half, 0.0)), float(min(a.mean() + half, 1.0))]     # an accuracy stays in [0, 1]


# ------------------------------------------------------------------------------------------ Lava
LAVA_TRACE = "lava."


def lava_shard(target_name, program, raw, seed, raster, a, b, progress=None) -> dict:
    """Lava on samples a..b-1 (uniforms keyed by sample index): every recorded trace (``lava.<name>``),
    the only thing a shard store keeps; ``lava_compared`` checks it against the emulator."""
    from .target import get_target
    lava = get_target(target_name).load("simulator")(program, raw[a:b], mode="fixed_pt", backend="sim", record=True,
                                                     seed=seed, first_sample=a, progress=progress)
    return _as_shard(lava)


def _as_shard(lava: dict) -> dict:
    """A Lava run's traces as a shard's arrays (``lava.<name>``, and its ``seconds``)."""
    out = {LAVA_TRACE + k: np.asarray(v) for k, v in lava.items() if k != "seconds"}
    if "seconds" in lava:
        out["seconds"] = np.array(float(lava["seconds"]))
    return out


def lava_compared(program, raw, seed, raster, a, b, shard: dict) -> dict:
    """A Lava shard (just run, or read back from the store) compared here with the emulator's run of
    the same samples in this process: nothing stored can make it bit-exact."""
    lava = {k[len(LAVA_TRACE):]: v for k, v in shard.items() if k.startswith(LAVA_TRACE)}
    emu = emulate(program, raw[a:b], record=True, device="cpu", seed=seed, first_sample=a)
    mismatch = compare_traces(lava, emu) + ([] if "logits" in lava else ["logits (missing)"])
    out = {"lava_logits": np.asarray(lava.get("logits", np.zeros_like(emu["logits"]))), "integer_logits": emu["logits"],
           "mismatch": np.array(mismatch, dtype=str), "compared": np.array(sorted(lava), dtype=str)}
    if a <= raster < b and "logits" in lava:
        try:
            out.update(_raster_arrays(program, "lava", lava, raster - a))
        except (KeyError, IndexError):
            pass                                         # a damaged shard: its mismatch says so
    return out


def _lava_parity(report, program, raw, labels, lava_samples, progress, seed, scale: Scale, raster, lava_runner) -> None:
    """Lava vs the emulator on the first samples (same seed): bit for bit, every node and logit, in
    shards of ``scale.lava_shard_samples`` through the executor."""
    m = min(int(lava_samples), len(labels))
    if m <= 0:
        return
    t1 = time.perf_counter()
    if lava_runner is not None:                              # a caller's own runner: one run, no shards
        lava = lava_runner(program, raw[:m], record=True, timeout_s=scale.lava_timeout_s, progress=progress, seed=seed)
        shards = [lava_compared(program, raw, seed, raster, 0, m, _as_shard(lava))]
    else:
        before = scale.store.reused if scale.store else 0
        bounds = _batches(m, scale.lava_shard_samples)
        shards = _run("lava", lava_shard, (program.report.get("target", "loihi2"), program, raw, seed, raster),
                      bounds, scale, scale.lava_executor(), progress)
        shards = [lava_compared(program, raw, seed, raster, a, b, r) for (a, b), r in zip(bounds, shards)]
        report["lava_shards_reused"] = (scale.store.reused - before) if scale.store else 0
        report["lava_shards"] = len(shards)
        for side, traces in _raster_of(shards, raster, labels).items():
            if side == "lava":
                report["raster"]["lava"] = traces
    report["seconds"]["lava"] = time.perf_counter() - t1
    lava_logits = np.concatenate([r["lava_logits"] for r in shards])
    int_logits = np.concatenate([r["integer_logits"] for r in shards])
    mismatches = sorted({str(v) for r in shards for v in r["mismatch"]})
    report["lava_samples"] = m
    report["accuracy"]["lava"] = float((lava_logits.argmax(1) == labels[:m]).mean())
    report["accuracy"]["integer_on_lava_samples"] = float((int_logits.argmax(1) == labels[:m]).mean())
    report["lava_bit_exact"] = not mismatches
    report["lava_mismatches"] = mismatches
    report["lava_compared"] = sorted({str(v) for r in shards for v in r["compared"]})


# ------------------------------------------------------------------------------------ provenance
KEY_OPTIONS = ("dataset", "split", "max_samples", "batch_size", "device", "emulator", "mc_passes", "seed", "mc_rng",
               "lava_shard_samples")


def data_sha256(values, raw, labels) -> str:
    """Digest of what a validation reads: the model values, the raw integers and the labels."""
    import hashlib
    h = hashlib.sha256()
    for a in (values, raw, labels):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def run_key(args, digests: dict, values, raw, labels) -> dict:
    """What a stored shard depends on: artifact, checkpoint, data and the options that change results
    (not the executor, the number of workers, timeouts or outputs)."""
    from . import __version__
    opts = vars(args) if not isinstance(args, dict) else args
    return {**digests, "data_sha256": data_sha256(values, raw, labels), "neurocompile": __version__,
            "options": {k: opts.get(k) for k in KEY_OPTIONS}}


def provenance(key: dict, options: dict, argv) -> dict:
    """Versions, digests, options, date and command line, for the JSON and HTML reports."""
    import datetime
    import platform
    import shlex
    from importlib import metadata

    import torch

    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None
    return {"neurocompile": key.get("neurocompile"), "torch": torch.__version__, "lava": version("lava-nc"),
            "numpy": np.__version__, "python": platform.python_version(),
            "checkpoint_sha256": key.get("checkpoint_sha256"), "artifact_sha256": key.get("artifact_sha256"),
            "data_sha256": key.get("data_sha256"),
            "options": {k: v for k, v in sorted(options.items()) if k not in ("command",)},
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command_line": shlex.join(["neurocompile"] + list(argv[1:]))}


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
    lines += _execution_lines(r)
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
                 f"{'same-U cells':>14}{'mism./spike':>12}{'|dp| max':>10}{'|dp| mean':>11}")
    for row in r["spike_nodes"]:
        lines.append(f"  {row['node']:<18}{row['mean_probability_float']:>13.4f}{row['mean_probability_integer']:>12.4f}"
                     f"{row['firing_rate_float']:>12.4f}{row['firing_rate_integer']:>10.4f}"
                     f"{100 * row['same_uniforms_spike_agreement']:>13.3f}%"
                     f"{100 * row['same_uniforms_mismatches_per_float_spike']:>11.2f}%"
                     f"{row['probability_error_max']:>10.5f}{row['probability_error_mean']:>11.6f}")
    lines.append("  |dp|: integer vs float firing probability on the same sampler inputs (2**-8 = 0.00391)")
    sec = r["seconds"]
    lines.append(f"  time: float {sec['float']:.1f} s, integer emulator {sec['integer']:.1f} s"
                 + (f", Lava {sec['lava']:.1f} s" if "lava" in sec else ""))
    lines += _execution_lines(r)
    return "\n".join(lines)


def _execution_lines(r: dict) -> list:
    ex = r.get("execution")
    if not ex:
        return []
    line = f"  executor: {ex['executor']}, {ex['workers']} worker(s)"
    if r.get("lava_shards"):
        line += f"; Lava in {r['lava_shards']} shard(s) of up to {ex['lava_shard_samples']}, {r['lava_shards_reused']} reused"
    return [line]

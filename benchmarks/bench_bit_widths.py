"""What each bit width costs and saves (issue 22, part 3): integer accuracy against cores, memory and energy.

For each example checkpoint, one quantity at a time is narrowed over 8 / 6 / 5 / 4 / 3 bits with the
others at their defaults -- ``--kernel-bits``, ``--weight-bits``, ``--act-bits`` (conv lowering) and,
with ``--ssm-lowering recurrent``, ``--decay-bits`` (its default 18, then 12 and 10, then the sweep's
widths; ``CompileOptions`` refuses decays below 8 bits, and such rows say so) -- plus rows with kernels,
weights and stream all at the same width.  Each row: the integer accuracy (the bit-exact emulator; for
stochastic models the mean over Monte-Carlo passes), cores and chips from the target's plan, bytes of
synapse and neuron-state memory on neurocores (weights counted at their packed width), processes left on
the host, and the energy ESTIMATE per sample (45 nm figures, ``neurocompile.activity``) from the same run.
The float accuracy on the same samples is measured once per example (``validate_checkpoint``), and the
emulator's integer accuracy at the defaults is checked against validate's.

Everything runs through the public API (``import neurocompile as nc``).  ``measure(examples)`` takes
any list of ``Example`` (checkpoint, dataset, samples): the hook for the deep examples and fine-tuned
checkpoints.  Writes results/bit_widths.json, .md and .png.

    nice -n 10 .venv/bin/python benchmarks/bench_bit_widths.py --fashion-samples 1000
    nice -n 10 .venv/bin/python benchmarks/bench_bit_widths.py --examples pspikessm-fashion-mnist \
        --pspike-samples 300 --pspike-passes 2 --energy-samples 64 \
        --quantities kernel_bits weight_bits kernel+weight act_bits --out RUN2
    .venv/bin/python benchmarks/bench_bit_widths.py --merge RUN1.json RUN2.json      # one table and plot

(the committed runs: results/bit_widths_runs/; 25 and 12 minutes on 2 shared cores).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

import neurocompile as nc
from neurocompile.activity import add_activity, energy_report
from neurocompile.program import raw_inputs

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WIDTHS = (8, 6, 5, 4, 3)
DECAY_WIDTHS = (18, 12, 10) + WIDTHS          # the recurrence's decay default is 18 bits
ACT_WIDTHS = (16, 12, 10) + WIDTHS            # the stream is automatic by default (at most 16 bits)
BATCH = 32                                    # traces of every node for L = 784 do not fit memory at once


@dataclass(frozen=True)
class Example:
    name: str
    checkpoint: str
    dataset: str
    samples: int = 0              # the first N test samples (0: all)
    mc_passes: int = 1            # Monte-Carlo passes for stochastic spikes (P-SpikeSSM)
    recurrent: bool = True        # sweep --decay-bits with --ssm-lowering recurrent (causal models only)
    recurrent_samples: int = 0    # the first N for those rows (the emulator's recurrence is a step loop; 0: samples)
    finetuned: tuple = ()         # (bits, checkpoint fine-tuned at --kernel-bits bits --weight-bits bits), a curve


def examples_builtin(fashion_samples: int, recurrent_samples: int, pspike_samples: int, pspike_passes: int,
                     deep_samples: int = 200) -> dict:
    """The examples by name; the papers'-scale ones (``*-32``: 4 x 128, L = 1024) on the first
    ``deep_samples`` test images (their recurrence's rows on at most 64: a step loop over 1,024 steps)."""
    ex = os.path.join(ROOT, "examples")
    return {"digits": Example("digits", os.path.join(ex, "digits", "ckpt.pt"), "digits"),
            "fashion-mnist": Example("fashion-mnist", os.path.join(ex, "fashion-mnist", "ckpt.pt"), "fashion-mnist",
                                     fashion_samples, recurrent_samples=min(fashion_samples, recurrent_samples)),
            "pspikessm-fashion-mnist": Example("pspikessm-fashion-mnist",
                                               os.path.join(ex, "pspikessm-fashion-mnist", "ckpt.pt"),
                                               "fashion-mnist", pspike_samples, pspike_passes, recurrent=False),
            "fashion-mnist-32": Example("fashion-mnist-32", os.path.join(ex, "fashion-mnist-32", "ckpt.pt"),
                                        "fashion-mnist-32", deep_samples, recurrent_samples=min(deep_samples, 64)),
            "pspikessm-fashion-mnist-32": Example("pspikessm-fashion-mnist-32",
                                                  os.path.join(ex, "pspikessm-fashion-mnist-32", "ckpt.pt"),
                                                  "fashion-mnist-32", deep_samples, pspike_passes, recurrent=False)}


QUANTITIES = ("kernel_bits", "weight_bits", "act_bits", "kernel+weight", "all", "decay_bits", "fine-tuned")
FINETUNED = "kernel+weight, fine-tuned"


def settings(example: Example, quantities=QUANTITIES) -> list:
    """(quantity, bits, CompileOptions keyword arguments[, checkpoint]) in table order: the defaults, then
    each of ``quantities`` narrowed over its widths; the fine-tuned rows name their own checkpoint."""
    rows = [("default", None, {})]
    for quantity, widths in (("kernel_bits", WIDTHS), ("weight_bits", WIDTHS), ("act_bits", ACT_WIDTHS)):
        if quantity in quantities:
            rows += [(quantity, b, {quantity: b}) for b in widths]
    if "kernel+weight" in quantities:
        rows += [("kernel+weight", b, {"kernel_bits": b, "weight_bits": b}) for b in WIDTHS]
    if "all" in quantities:
        rows += [("all (kernel, weight, act)", b, {"kernel_bits": b, "weight_bits": b, "act_bits": b})
                 for b in WIDTHS]
    if example.recurrent and "decay_bits" in quantities:
        rows += [("decay_bits (recurrent)", b, {"ssm_lowering": "recurrent", "decay_bits": b}) for b in DECAY_WIDTHS]
    if "fine-tuned" in quantities:
        rows += [(FINETUNED, b, {"kernel_bits": b, "weight_bits": b}, ckpt) for b, ckpt in sorted(example.finetuned,
                                                                                                   reverse=True)]
    return rows


def run_integer(program, raw, labels, passes: int, energy_samples: int) -> tuple:
    """Accuracy (mean over ``passes`` Monte-Carlo seeds; one pass for deterministic spikes) and the
    energy report of the first pass's first batches up to ``energy_samples`` (those are recorded:
    every node's trace), from the emulator's runs in batches."""
    accs, counts, density, recorded = [], {}, {}, 0
    for seed in range(passes):
        right = 0
        for start in range(0, len(raw), BATCH):
            chunk = raw[start:start + BATCH]
            record = seed == 0 and start < energy_samples
            traces = nc.emulate(program, chunk, record=record, seed=seed, first_sample=start)
            right += int((traces["logits"].argmax(-1) == labels[start:start + BATCH]).sum())
            if record:
                recorded += len(chunk)
                add_activity(counts, density, program, traces, raw_inputs(program, chunk))
        accs.append(right / len(raw))
    return accs, energy_report(program, recorded, counts, density)


def plan_figures(plan: dict) -> dict:
    chip = [p for p in plan["processes"] if p["placement"] == "neurocore"]
    return {"cores": plan["cores"], "chips": plan["chips"],
            "synapse_bytes": sum(p["synapse_bytes"] for p in chip), "state_bytes": sum(p["state_bytes"] for p in chip),
            "host_processes": [p["name"] for p in plan["processes"]
                               if p["placement"] == "host" and p["type"] != "IntInput"],
            "weight_bits": sorted({p["weight_bits"] for p in plan["processes"] if p["weight_bits"]})}


def measure(examples: list, quantities=QUANTITIES, energy_samples: int = 256, log=print) -> dict:
    """The sweep of ``quantities`` for each ``Example``: {"examples": [...], "rows": [...]} (JSON-ready);
    the energy estimate from the first ``energy_samples`` of each row's samples."""
    rows, meta = [], []
    for ex in examples:
        base = nc.compile_checkpoint(ex.checkpoint)
        data, _, raw = nc.load_data(base, ex.dataset)
        n = ex.samples or len(data.y)
        raw, labels = raw[:n], np.asarray(data.y[:n])
        t0 = time.time()
        v = nc.validate_checkpoint(ex.checkpoint, base, ex.dataset, lava_samples=0, max_samples=n,
                                   **({"mc_passes": ex.mc_passes} if ex.mc_passes > 1 else {}))
        meta.append({**asdict(ex), "checkpoint": os.path.relpath(ex.checkpoint, ROOT), "samples": n,
                     "split_samples": len(data.y), "float_accuracy": v["accuracy"]["float"],
                     "validate_integer_accuracy": v["accuracy"]["integer"], "validate_seconds": time.time() - t0})
        log(f"{ex.name}: {n} samples, float {v['accuracy']['float']:.4f} (validate, {time.time() - t0:.0f} s)")
        seen = {}                 # CompileOptions -> its row: a width equal to the default is the default row
        for quantity, bits, kw, *own in settings(ex, quantities):
            t0 = time.time()
            ckpt = own[0] if own else ex.checkpoint
            row = {"example": ex.name, "quantity": quantity, "bits": bits, "options": kw}
            if own:
                row["checkpoint"] = os.path.relpath(ckpt, ROOT) if ckpt.startswith(ROOT) else ckpt
            try:
                options = nc.CompileOptions(**kw)
                if (options, ckpt) in seen:
                    row.update({k: v for k, v in seen[(options, ckpt)].items() if k not in row})
                    rows.append(row)
                    continue
                program = base if (options, ckpt) == (nc.CompileOptions(), ex.checkpoint) \
                    else nc.compile_checkpoint(ckpt, options)
                figures = plan_figures(nc.plan(program))
            except (nc.NeurocompileError, ValueError) as exc:
                row["refused"] = _short(str(exc).splitlines()[0])
                rows.append(row)
                log(f"  {quantity} {bits}: refused: {row['refused'][:120]}")
                continue
            m = ex.recurrent_samples if kw.get("ssm_lowering") == "recurrent" and ex.recurrent_samples else n
            accs, energy = run_integer(program, raw[:m], labels[:m], ex.mc_passes, energy_samples)
            e = energy["energy"]["paper_45nm"]
            row.update(figures, samples=m, energy_samples=energy["activity"]["samples"],
                       accuracy=float(np.mean(accs)), accuracy_passes=accs,
                       energy_nJ=e["snn_pJ"] / 1e3, float_energy_nJ=e["ann_pJ"] / 1e3, seconds=time.time() - t0)
            seen[(options, ckpt)] = row
            rows.append(row)
            log(f"  {quantity} {bits}: {row['accuracy']:.4f}, {row['cores']} cores, "
                f"{row['synapse_bytes']:,} syn B, {row['energy_nJ']:.1f} nJ ({row['seconds']:.0f} s)")
        default = next(r for r in rows if r["example"] == ex.name and r["quantity"] == "default")
        if ex.mc_passes == 1:        # the same integers on the same samples: validate and this sweep agree
            assert abs(default["accuracy"] - meta[-1]["validate_integer_accuracy"]) < 1e-12, (default, meta[-1])
    return {"examples": meta, "rows": rows}


# ---------------------------------------------------------------------------------- outputs
def _kib(n) -> str:
    return f"{n / 1024:,.1f}"


def _short(reason: str) -> str:
    """A refusal without the checkpoint's path (the table names the example)."""
    return reason.split(": ", 1)[1] if reason.startswith("/") else reason


def table(result: dict) -> str:
    floats = {m["name"]: m["float_accuracy"] for m in result["examples"]}
    samples = {m["name"]: m["samples"] for m in result["examples"]}
    lines = ["| example | quantity | bits | samples | integer acc. % | vs float (pts) | cores | chips | synapse KiB "
             "| state KiB "
             "| on host | energy nJ/sample (est.) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        bits = "default" if r["bits"] is None else r["bits"]
        if "refused" in r:
            lines.append(f"| {r['example']} | {r['quantity']} | {bits} | | refused: {r['refused']} |"
                         " | | | | | | |")
            continue
        vs = f"{100 * (r['accuracy'] - floats[r['example']]):+.2f}" if r["samples"] == samples[r["example"]] else "n/a"
        lines.append(f"| {r['example']} | {r['quantity']} | {bits} | {r['samples']:,} | {100 * r['accuracy']:.2f} "
                     f"| {vs} | {r['cores']} | {r['chips']} "
                     f"| {_kib(r['synapse_bytes'])} | {_kib(r['state_bytes'])} "
                     f"| {', '.join(r['host_processes']) or '-'} "
                     f"| {r['energy_nJ']:,.1f} |")
    return "\n".join(lines)


def _first(n) -> str:
    return "all" if n == "all" else f"at most the first {n}"


def markdown(result: dict, png: str) -> str:
    def described(m) -> str:
        which = "all" if m["samples"] == m["split_samples"] else "the first"
        passes = f", mean of {m['mc_passes']} Monte-Carlo passes" if m["mc_passes"] > 1 else ""
        return (f"- {m['name']}: `{m['checkpoint']}` on {m['dataset']} ({which} {m['samples']:,} "
                f"of {m['split_samples']:,} test samples{passes}): float accuracy {100 * m['float_accuracy']:.2f} % "
                "(validate, same samples)")
    ex = "\n".join(described(m) for m in result["examples"])
    merged = f"\n\nThe runs' JSON files merged into this table by: `{result['merged_by']}`" \
        if "merged_by" in result else ""
    runs = "\n\n".join(f"Command ({', '.join(r['examples'])}): `{r['command']}`\n\nMachine: {r['machine']}; date "
                       f"{r['date']}; {r['seconds']:.0f} s in all; energy counted on "
                       f"{_first(r['energy_samples'])} samples of each row"
                       + (f"\n\n{r['note']}" if r.get("note") else "") for r in result["runs"])
    return f"""# What each bit width costs and saves

Integer accuracy (bit-exact emulator) against the plan's cores and chips, the neurocore memory
(synapse weights counted at their packed width: Loihi 2 stores 1-8-bit weights in b/8 bytes) and the
energy ESTIMATE per sample (45 nm CMOS figures as the seed papers use them: accumulates x 0.9 pJ +
multiplies x 4.6 pJ, counted on the first samples of the same integer run; not a Loihi 2 measurement).
One quantity at a time is narrowed, the others at their defaults (kernel 8, weight 8, stream automatic,
decay 18 bits); "kernel+weight" narrows both together, "all" narrows kernels, weights and the stream
together; "kernel+weight, fine-tuned" compiles, at each width, the checkpoint `neurocompile finetune`
wrote for that width (quantisation-aware fine-tuning; the row names it): PTQ and fine-tuning side by side.
Cores, chips and bytes are plan estimates.

{ex}

{runs}{merged}

{table(result)}

"on host": processes the plan keeps on the host CPU (not counted in the neurocore bytes).  A "refused"
row is the compiler's own refusal (e.g. `--decay-bits` below 8, or a stream too narrow for a proof).
Plot: `{png}` (accuracy against cores and against synapse memory, one curve per quantity).
"""


def plot(result: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    names = [m["name"] for m in result["examples"]]
    fig, axes = plt.subplots(2, len(names), figsize=(5.2 * len(names), 8.4), squeeze=False)
    for j, name in enumerate(names):
        rows = [r for r in result["rows"] if r["example"] == name and "refused" not in r]
        base = next(r for r in rows if r["quantity"] == "default")
        for i, (xkey, xlabel) in enumerate((("cores", "neurocores (plan)"), ("synapse_bytes", "synapse KiB (plan)"))):
            ax = axes[i][j]
            for quantity in dict.fromkeys(r["quantity"] for r in rows if r["quantity"] != "default"):
                pts = [r for r in rows if r["quantity"] == quantity]
                xs = [r[xkey] / (1024 if i else 1) for r in pts]
                ax.plot(xs, [100 * r["accuracy"] for r in pts], "s--" if quantity == FINETUNED else "o-",
                        label=quantity, alpha=0.8, lw=2 if quantity == FINETUNED else 1)
                for r, x in zip(pts, xs):
                    ax.annotate(str(r["bits"]), (x, 100 * r["accuracy"]), fontsize=7, xytext=(3, 3),
                                textcoords="offset points")
            ax.plot([base[xkey] / (1024 if i else 1)], [100 * base["accuracy"]], "k*", ms=12, label="default")
            if i == 0:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                lo, hi = min(r["cores"] for r in rows), max(r["cores"] for r in rows)
                ax.set_xlim(lo - max(1, (hi - lo) // 10), hi + max(1, (hi - lo) // 10))
            ax.set_xlabel(xlabel)
            ax.set_ylabel("integer accuracy %")
            ax.set_title(name)
            ax.grid(alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    fig.suptitle("Accuracy against resources, one curve per narrowed quantity (labels: bits)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})   # no version stamp: deterministic bytes
    plt.close(fig)


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?") \
        if os.path.exists("/proc/cpuinfo") else platform.processor()
    return f"{cpu}, {os.cpu_count()} CPUs (shared), Python {platform.python_version()}, CPU emulator"


def _one_per_name(examples: list) -> list:
    """A run of one example's fine-tuned curve merges with the run of its other quantities: one entry per
    example (the first run's), naming every fine-tuned checkpoint."""
    out = {}
    for m in examples:
        if m["name"] in out:
            first = out[m["name"]]
            out[m["name"]] = {**first, "finetuned": [*first["finetuned"], *m["finetuned"]]}
        else:
            out[m["name"]] = m
    return list(out.values())


def _each_row_once(rows: list) -> list:
    """Rows grouped by example (in the order the examples first appear), each example's in run order; a row
    measured by two runs (the defaults, which every run measures) once: the first."""
    seen = {}
    for row in rows:
        seen.setdefault((row["example"], row["quantity"], row["bits"]), row)
    order = list(dict.fromkeys(row["example"] for row in rows))
    return sorted(seen.values(), key=lambda row: order.index(row["example"]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", nargs="+", default=["digits", "fashion-mnist"],
                    help="built-in examples: digits, fashion-mnist, pspikessm-fashion-mnist, fashion-mnist-32, "
                         "pspikessm-fashion-mnist-32")
    ap.add_argument("--fashion-samples", type=int, default=1000)
    ap.add_argument("--recurrent-samples", type=int, default=256,
                    help="fashion-mnist's --decay-bits rows (recurrent lowering) on the first N only")
    ap.add_argument("--pspike-samples", type=int, default=300)
    ap.add_argument("--pspike-passes", type=int, default=2)
    ap.add_argument("--deep-samples", type=int, default=200, help="the *-32 examples on the first N test images")
    ap.add_argument("--energy-samples", type=int, default=256, help="the energy estimate's samples (the first N)")
    ap.add_argument("--quantities", nargs="+", default=list(QUANTITIES), choices=QUANTITIES)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "bit_widths"))
    ap.add_argument("--finetuned", nargs="+", default=[], metavar="EXAMPLE:BITS:CHECKPOINT",
                    help="a checkpoint `neurocompile finetune` wrote at --kernel-bits BITS --weight-bits BITS: "
                         "the example's fine-tuned curve (quantity 'fine-tuned')")
    ap.add_argument("--note", default="", help="a line for the results (e.g. how the --finetuned checkpoints were made)")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="write one table and plot (--out) from these runs' JSON files instead of measuring")
    args = ap.parse_args(argv)
    if args.merge:
        runs = [_runs_of(json.load(open(path))) for path in args.merge]
        result = {"examples": _one_per_name([m for r in runs for m in r["examples"]]),
                  "rows": _each_row_once([row for r in runs for row in r["rows"]]),
                  "runs": [run for r in runs for run in r["runs"]],
                  "merged_by": ".venv/bin/python benchmarks/bench_bit_widths.py " + " ".join(argv or sys.argv[1:])}
    else:
        builtin = examples_builtin(args.fashion_samples, args.recurrent_samples, args.pspike_samples,
                                   args.pspike_passes, args.deep_samples)
        for spec in args.finetuned:
            name, bits, path = spec.split(":", 2)
            ex = builtin[name]
            builtin[name] = replace(ex, finetuned=ex.finetuned + ((int(bits), os.path.abspath(path)),))
        t0 = time.time()
        result = measure([builtin[n] for n in args.examples], args.quantities, args.energy_samples)
        command = "nice -n 10 .venv/bin/python benchmarks/bench_bit_widths.py " + " ".join(argv or sys.argv[1:])
        result["runs"] = [{"command": command.strip(), "examples": list(args.examples), "machine": machine(),
                           "date": datetime.date.today().isoformat(), "seconds": time.time() - t0,
                           "energy_samples": args.energy_samples, **({"note": args.note} if args.note else {})}]
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    with open(args.out + ".md", "w") as f:
        f.write(markdown(result, os.path.basename(args.out) + ".png"))
    plot(result, args.out + ".png")
    print(f"wrote {args.out}.json, .md, .png")
    return 0


def _runs_of(result: dict) -> dict:
    """A run's JSON with its ``runs`` list (the first runs of this script wrote command, machine,
    date, seconds and energy_samples at the top level)."""
    if "runs" not in result:
        result["runs"] = [{"command": result.pop("command").strip(),
                           "examples": [m["name"] for m in result["examples"]],
                           "energy_samples": result.pop("energy_samples", "all"),
                           **{k: result.pop(k) for k in ("machine", "date", "seconds")}}]
    return result


if __name__ == "__main__":
    sys.exit(main())

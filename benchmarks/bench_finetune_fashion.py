"""Issue 19's table: post-training quantisation (PTQ) against quantisation-aware fine-tuning (QAFT) on
a Fashion-MNIST example (SpikingSSM by default; ``--checkpoint examples/pspikessm-fashion-mnist/ckpt.pt``
for P-SpikeSSM, whose accuracies are Monte-Carlo means with 95 % intervals), at several bit settings.

For each setting: export the checkpoint as it is and validate it (float with the exact LIF or the
Monte-Carlo mean, the integer emulator, spike mismatch per layer: with the same uniforms on both sides for
P-SpikeSSM); fine-tune it (``neurocompile finetune``: one epoch on the first
--max-train training samples); export the fine-tuned checkpoint with the same options and validate it
the same way.  Everything goes through the ordinary commands, so each row can be reproduced by hand.

Run:  nice -n 10 .venv/bin/python benchmarks/bench_finetune_fashion.py [--samples 0] [--bits 4 3 8]
      nice -n 10 .venv/bin/python benchmarks/bench_finetune_fashion.py --checkpoint \
          examples/pspikessm-fashion-mnist/ckpt.pt --samples 2000 --mc-passes 4 --out benchmarks/results/finetune_pspikessm_fashion
Writes benchmarks/results/finetune_fashion_full.{json,md} (work files under --work, default a temp dir).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from neurocompile.models.checkpoint import load_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CKPT = "examples/fashion-mnist/ckpt.pt"
# kernel and weight bits together: the bits a user narrows to fit fewer cores
SETTINGS = {"8": [], "4": ["--kernel-bits", "4", "--weight-bits", "4"], "3": ["--kernel-bits", "3", "--weight-bits", "3"],
            # the residual stream's width alone (kernels and weights at 8)
            **{f"act{b}": ["--act-bits", str(b)] for b in (12, 10, 8, 6)}}


def nc(*args, log):
    """Run ``neurocompile`` with this interpreter; its output goes to ``log``; a failure stops the benchmark."""
    cmd = [sys.executable, "-m", "neurocompile", *args]
    log.write("$ neurocompile " + " ".join(args) + "\n")
    log.flush()
    t0 = time.time()
    r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log.write(r.stdout + f"[{time.time() - t0:.0f} s, exit {r.returncode}]\n")
    log.flush()
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout[-2000:]}")
    return r.stdout, time.time() - t0


def passed(a, *names) -> list:
    """The finetune options given to the benchmark, as flags."""
    return [x for n in names if getattr(a, n) is not None for x in (f"--{n}", getattr(a, n))]


def validated(ckpt, artifact, samples, lava, work, tag, log, mc=(), data="fashion-mnist") -> dict:
    report = os.path.join(work, f"{tag}.json")
    _, seconds = nc("validate", ckpt, artifact, "--data", data, "--max-samples", str(samples),
                    "--lava-samples", str(lava), "--activity-samples", "0", "--json", report, *mc, log=log)
    with open(report) as f:
        r = json.load(f)
    acc = r["accuracy"]
    mismatch = "same_uniforms_mismatches_per_float_spike" if "mc_passes" in r else "mismatches_per_float_spike"
    return {"float": acc["float"], "integer": acc["integer"], "samples": r["samples"],
            **({k: acc[k] for k in ("float_ci", "integer_ci")} if "float_ci" in acc else {}),
            "mc_passes": r.get("mc_passes"),
            "mismatch_per_float_spike": {n["node"]: n[mismatch] for n in r["spike_nodes"]},
            "lava_samples": r.get("lava_samples", 0), "lava_bit_exact": r.get("lava_bit_exact"),
            "seconds": round(seconds, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=CKPT)
    ap.add_argument("--data", default="fashion-mnist", help="the checkpoint's dataset (fashion-mnist-32: the deep examples)")
    ap.add_argument("--mc-passes", type=int, default=None, help="P-SpikeSSM: Monte-Carlo passes of validate")
    ap.add_argument("--bits", nargs="+", default=["4", "3", "8"], choices=sorted(SETTINGS))
    ap.add_argument("--samples", type=int, default=0, help="test samples (0: the whole split)")
    ap.add_argument("--max-train", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", default="3e-3")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--holdout", default=None, help="finetune's --holdout (default: finetune's)")
    ap.add_argument("--distill", default=None, help="finetune's --distill (default: finetune's)")
    ap.add_argument("--finetune-test", type=int, default=500,
                    help="test samples of finetune's own before/after report (the table's come from validate)")
    ap.add_argument("--lava-samples", type=int, default=8, help="Lava fixed_pt vs emulator on the fine-tuned programs")
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "finetune_fashion_full"))
    ap.add_argument("--render", metavar="JSON", help="only write the .md again from a run's JSON")
    ap.add_argument("--update", action="store_true",
                    help="keep the rows of --out's JSON for the bit settings not run now (each row keeps its command)")
    ap.add_argument("--ptq-from", metavar="JSON",
                    help="take the PTQ rows from an earlier result of the same checkpoint, data and samples "
                         "(export is byte-for-byte deterministic, so PTQ's program is the same)")
    a = ap.parse_args()
    if a.render:
        with open(a.render) as f:
            result = json.load(f)
        with open(a.out + ".md", "w") as f:
            f.write(render(result))
        return
    work = a.work or tempfile.mkdtemp(prefix="nc-ft-")
    os.makedirs(work, exist_ok=True)
    rows, started = [], time.time()
    ckpt = a.checkpoint
    mc = ["--mc-passes", str(a.mc_passes)] if a.mc_passes else []
    command = "benchmarks/bench_finetune_fashion.py " + " ".join(sys.argv[1:])
    earlier = {}
    if a.ptq_from:
        with open(a.ptq_from) as f:
            old = json.load(f)
        if old["checkpoint"] != ckpt or old.get("data", "fashion-mnist") != a.data:
            raise SystemExit(f"{a.ptq_from}: another checkpoint or dataset")
        earlier = {row["bits"]: row["ptq"] for row in old["rows"]
                   if row["ptq"]["samples"] == (a.samples or 10000) and row["ptq"].get("mc_passes") == a.mc_passes}
    with open(os.path.join(work, "log.txt"), "a") as log:
        for bits in a.bits:
            opts = SETTINGS[bits]
            ptq = os.path.join(work, f"ptq{bits}.loihi2")
            nc("export", ckpt, "-o", ptq, *opts, log=log)
            row = {"bits": bits, "options": opts, "command": command, "date": time.strftime("%Y-%m-%d"),
                   "ptq": ({**earlier[bits], "from": a.ptq_from} if bits in earlier else
                           validated(ckpt, ptq, a.samples, 0, work, f"ptq{bits}", log, mc, a.data))}
            print(f"[{bits} bits] PTQ {row['ptq']}", flush=True)
            out_dir = os.path.join(work, f"ft{bits}")
            text, seconds = nc("finetune", ckpt, "--out", out_dir, *opts, "--epochs", str(a.epochs),
                               "--max-train", str(a.max_train), "--max-test", str(a.finetune_test), "--lr", a.lr, "--dataset", a.data,
                               "--seed", str(a.seed), *passed(a, "holdout", "distill"), log=log)
            chosen = load_checkpoint(os.path.join(out_dir, "ckpt.pt"))[3].get("chosen")   # the held-out choice
            row["finetune"] = {"seconds": round(seconds, 1), "chosen": chosen, "lr": a.lr, "holdout": a.holdout,
                               "distill": a.distill,
                               "report": [ln for ln in text.splitlines() if "train_loss" in ln or "%" in ln]}
            qaft = os.path.join(work, f"qaft{bits}.loihi2")
            nc("export", os.path.join(out_dir, "ckpt.pt"), "-o", qaft, *opts, log=log)
            row["qaft"] = validated(os.path.join(out_dir, "ckpt.pt"), qaft, a.samples, a.lava_samples, work,
                                    f"qaft{bits}", log, mc, a.data)
            print(f"[{bits} bits] QAFT {row['qaft']}", flush=True)
            rows.append(row)
    if a.update and os.path.exists(a.out + ".json"):
        with open(a.out + ".json") as f:
            old = json.load(f)
        new = {row["bits"]: row for row in rows}
        kept = [{**r, "command": r.get("command", old["command"]), "date": r.get("date", old["date"]),
                 "finetune": {"lr": old["lr"], **r["finetune"]}} for r in old["rows"]]
        rows = [new.pop(r["bits"], r) for r in kept] + list(new.values())
    result = {"checkpoint": ckpt, "data": a.data, "rows": rows, "max_train": a.max_train, "epochs": a.epochs, "lr": a.lr,
              "seed": a.seed, "seconds": round(time.time() - started),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
                         f"{platform.python_version()}", "date": time.strftime("%Y-%m-%d"),
              "command": command}
    with open(a.out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(a.out + ".md", "w") as f:
        f.write(render(result))
    print(render(result))


def commands(r) -> list:
    """The command of every row (an --update keeps the rows it did not run, with their commands)."""
    runs = {}
    for row in r["rows"]:
        runs.setdefault((row.get("command", r["command"]), row.get("date", r["date"])), []).append(row["bits"])
    if len(runs) == 1:
        return [f"Command: `{r['command']}` ({r['date']}, {r['machine']}; {r['seconds']} s in all)."]
    return [f"Commands ({r['machine']}; the last run {r['seconds']} s):", ""] + \
        [f"- bits {', '.join(b)}: `{c}` ({d})" for (c, d), b in runs.items()]


def chosen(row, lr) -> str:
    """The row's own finetune options where they are not the table's, and which weights finetune wrote
    (held-out integer accuracy chose an epoch or kept the start)."""
    f = row["finetune"]
    own = [f"lr {f['lr']}"] if f.get("lr", lr) != lr else []
    own += [f"--{k} {f[k]}" for k in ("distill", "holdout") if f.get(k) is not None]
    c = f.get("chosen")
    if c:
        own.append("held-out choice: the starting weights" if c["epoch"] == 0 else f"held-out choice: epoch {c['epoch']}")
    return f" ({', '.join(own)})" if own else ""


def render(r) -> str:
    pct = lambda v: f"{100 * v:.2f} %"
    n = r["rows"][0]["ptq"]["samples"] if r["rows"] else 0
    split = "the whole test split" if n == 10000 else f"the first {n:,} test samples"
    passes = r["rows"][0]["ptq"].get("mc_passes") if r["rows"] else None
    family = "P-SpikeSSM" if passes else "SpikingSSM"
    what = (f"(float = the float model's Monte-Carlo mean over {passes} passes, integer = the emulator's, each "
            "with its 95 % interval). Mismatch = spike cells that differ when both sides draw the same uniforms, "
            "per float spike." if passes else
            "(float = exact LIF, integer = the emulator, bit-exact with Lava fixed_pt). Mismatch = spike cells "
            "that differ between float and integer, per float spike.")
    data = r.get("data", "fashion-mnist")
    lrs = {row["finetune"].get("lr", r["lr"]) for row in r["rows"]}
    lr = lrs.pop() if len(lrs) == 1 else None          # None: each row says its own
    lines = [f"# PTQ vs quantisation-aware fine-tuning, {data} {family} example, {split}", "",
             f"`{r['checkpoint']}`; fine-tuning: {r['epochs']} epoch on the first {r['max_train']:,} training "
             f"samples, {f'lr {lr}' if lr else 'lr in each row'}, seed {r['seed']}; every accuracy from `neurocompile validate` {what}", "",
             *commands(r), "",
             f"| {'bits (kernel, weight)' if all(row['bits'].isdigit() for row in r['rows']) else 'bits'} | run | samples | float | integer | integer - float | layer0 mismatch | "
             "layer1 mismatch | Lava vs emulator |", "|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        label = row["bits"] if row["bits"].isdigit() else f"--act-bits {row['bits'][3:]}"
        for run in ("ptq", "qaft"):
            v = row[run]
            mm = list(v["mismatch_per_float_spike"].values())
            ci = lambda k: f" [{100 * v[k][0]:.2f}, {100 * v[k][1]:.2f}]" if k in v else ""      # noqa: E731
            lava = (f"bit-exact, {v['lava_samples']} samples" if v["lava_bit_exact"] else
                    "DIFFERS" if v["lava_samples"] else "-")
            lines.append(f"| {label} | {'PTQ' if run == 'ptq' else 'fine-tuned' + chosen(row, lr)} | {v['samples']:,} | "
                         f"{pct(v['float'])}{ci('float_ci')} | {pct(v['integer'])}{ci('integer_ci')} | "
                         f"{100 * (v['integer'] - v['float']):+.2f} | "
                         + " | ".join(f"{100 * m:.2f} %" for m in mm[:2]) + f" | {lava} |")
        lost = row["ptq"]["float"] - row["ptq"]["integer"]
        won = row["qaft"]["integer"] - row["ptq"]["integer"]
        share = f"{100 * won / lost:.0f} % of it" if lost >= 0.005 else "PTQ lost under half a point: the goal is not to lose"
        lines.append(f"| {label} | PTQ loses {100 * lost:.2f} points; fine-tuning wins {100 * won:+.2f} "
                     f"({share}) | | | | | | | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

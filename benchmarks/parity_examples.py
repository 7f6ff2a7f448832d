"""The examples' parity table (docs/benchmarks.md): each example exported and validated with the ordinary
commands -- float (exact LIF; P-SpikeSSM Monte-Carlo), the integer emulator, Lava fixed_pt against the
emulator on the first samples, spike mismatch per layer.

Run:  nice -n 10 .venv/bin/python benchmarks/parity_examples.py [--only NAME ...] [--fashion-samples N]
Writes benchmarks/results/parity/<name>.json (validate's report on the test samples), <name>.lava.json (the
Lava comparison on the first samples, a run of its own) and benchmarks/results/parity/parity.md.
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

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "results", "parity")

# name -> (checkpoint, dataset, export options, validate options, Lava samples)
EXAMPLES = {
    "digits": ("examples/digits/ckpt.pt", "digits", [], [], 16),
    "digits-recurrent": ("examples/digits/ckpt.pt", "digits", ["--ssm-lowering", "recurrent"], [], 16),
    "fashion-mnist": ("examples/fashion-mnist/ckpt.pt", "fashion-mnist", [], [], 4),
    "fashion-mnist-recurrent": ("examples/fashion-mnist/ckpt.pt", "fashion-mnist", ["--ssm-lowering", "recurrent"], [], 4),
    "pspikessm-digits": ("examples/pspikessm-digits/ckpt.pt", "digits", [], ["--mc-passes", "16"], 16),
    "pspikessm-digits-bi": ("examples/pspikessm-digits-bi/ckpt.pt", "digits", [], ["--mc-passes", "16"], 16),
    "pspikessm-fashion-mnist": ("examples/pspikessm-fashion-mnist/ckpt.pt", "fashion-mnist", [], ["--mc-passes", "4"], 4),
    # the papers' scale: 4 x 128, L = 1024 (fashion-mnist-32, examples/*/TRAINING.md)
    "fashion-mnist-32": ("examples/fashion-mnist-32/ckpt.pt", "fashion-mnist-32", [], [], 8),
    "fashion-mnist-32-recurrent": ("examples/fashion-mnist-32/ckpt.pt", "fashion-mnist-32",
                                   ["--ssm-lowering", "recurrent"], [], 8),
    # auto decides per layer on the kernel error measured on the first 64 test images (issue 22, part 4)
    "fashion-mnist-32-auto": ("examples/fashion-mnist-32/ckpt.pt", "fashion-mnist-32",
                              ["--ssm-lowering", "auto", "--calibrate", "fashion-mnist-32"], [], 8),
    "pspikessm-fashion-mnist-32": ("examples/pspikessm-fashion-mnist-32/ckpt.pt", "fashion-mnist-32", [],
                                   ["--mc-passes", "4"], 8),
}


def run(args, log):
    log.write("$ neurocompile " + " ".join(args) + "\n")
    log.flush()
    r = subprocess.run([sys.executable, "-m", "neurocompile", *args], cwd=ROOT, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    log.write(r.stdout)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): neurocompile {' '.join(args)}\n{r.stdout[-2000:]}")


def measure(name, fashion_samples, work, log, mc_passes=None) -> dict:
    ckpt, data, export_opts, validate_opts, lava = EXAMPLES[name]
    if mc_passes and "--mc-passes" in validate_opts:            # the whole split's run may afford fewer passes
        validate_opts = [*validate_opts[:validate_opts.index("--mc-passes")], "--mc-passes", str(mc_passes)]
    artifact = os.path.join(work, f"{name}.loihi2")
    run(["export", ckpt, "-o", artifact, *export_opts], log)
    report = os.path.join(OUT, f"{name}.json")
    samples = fashion_samples if data.startswith("fashion-mnist") else 0
    t0 = time.time()
    # Lava on the first samples in a run of its own: the whole split's run need not wait for it
    run(["validate", ckpt, artifact, "--data", data, "--max-samples", str(samples), "--lava-samples", "0",
         *validate_opts, "--json", report], log)
    lava_report = os.path.join(OUT, f"{name}.lava.json")
    if _lava_report_reusable(lava_report, artifact, lava):
        log.write(f"reused {lava_report}: the same artifact, byte for byte, on the same {lava} samples\n")
    else:
        run(["validate", ckpt, artifact, "--data", data, "--max-samples", str(lava), "--lava-samples", str(lava),
             *validate_opts, "--activity-samples", "0", "--json", lava_report], log)
    return row_of(name, validate_opts, round(time.time() - t0))


def row_of(name, validate_opts=None, seconds=None) -> dict:
    """The table's row from the example's saved reports (``--from-reports``: a run stopped after its
    whole-split report was written; seconds then the report's own float + integer time)."""
    ckpt, _, export_opts, own_opts, _ = EXAMPLES[name]
    with open(os.path.join(OUT, f"{name}.json")) as f:
        r = json.load(f)
    with open(os.path.join(OUT, f"{name}.lava.json")) as f:
        r_lava = json.load(f)
    if seconds is None:
        seconds = round(r["seconds"]["float_and_integer_wall"])
    return {"name": name, "checkpoint": ckpt, "export": export_opts, "validate": validate_opts or own_opts,
            "date": r["provenance"]["date"][:10], "seconds": seconds,
            "samples": r["samples"], "accuracy": r["accuracy"], "lava_samples": r_lava.get("lava_samples", 0),
            "lava_bit_exact": r_lava.get("lava_bit_exact"), "mc_passes": r.get("mc_passes"),
            "mismatch": {n["node"]: n.get("mismatches_per_float_spike") for n in r.get("spike_nodes", [])},
            **_plan_and_energy(r)}


def _lava_report_reusable(path, artifact, samples) -> bool:
    """Lava on the first samples need not run again when the saved comparison was made on the same artifact
    (export is deterministic, byte for byte) and the same samples: it takes minutes per sample at L = 1024."""
    if not os.path.exists(path):
        return False
    from neurocompile.pipeline import file_sha256      # the digest validate records

    with open(path) as f:
        r = json.load(f)
    return (r.get("provenance", {}).get("artifact_sha256") == file_sha256(artifact)
            and r.get("lava_samples") == samples and r.get("lava_bit_exact") is not None)


def _plan_and_energy(report) -> dict:
    """Cores and chips of the report's plan, and the compiled program's energy ESTIMATE per sample (45 nm
    method of the seed papers; None without counted activity)."""
    plan, e = report.get("plan") or {}, (report.get("energy") or {}).get("paper_45nm")
    return {"cores": plan.get("cores"), "chips": plan.get("chips"),
            "energy_nJ": None if not e else round(e["snn_pJ"] / 1e3, 1),
            "activity_samples": (report.get("activity") or {}).get("samples")}


def _backfill(row) -> dict:
    """Rows measured before the plan and energy columns existed read them from their own saved report."""
    path = os.path.join(OUT, f"{row['name']}.json")
    if "cores" in row or not os.path.exists(path):
        return row
    with open(path) as f:
        r = json.load(f)
    return {**row, **_plan_and_energy(r)}


def render(rows, meta) -> str:
    def acc(r, side):
        a = r["accuracy"]
        ci = a.get(f"{side}_ci")
        return f"{100 * a[side]:.2f} %" + (f" [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]" if ci else "")
    out = ["# Parity of the examples (float vs integer emulator vs Lava fixed_pt)", "",
           "Rows measured one or a few at a time (`benchmarks/parity_examples.py --only NAME ...`; each row's date "
           f"and seconds in `rows.json`); the last run: `{meta['command']}` ({meta['date']}, {meta['machine']}). "
           "Reports: `<name>.json` (the test samples) and `<name>.lava.json` (Lava on the first samples) beside this "
           "file. The Fashion-MNIST convolution row's whole split is the 8-bit PTQ row of "
           "`../finetune_fashion_full.md`; its Lava check is `fashion-mnist.lava.json`.", "",
           "Cores and chips are `plan`'s (an estimate from the program's arrays and Loihi 2's public budgets); "
           "energy is the compiled program's ESTIMATE per sample (45 nm method of the seed papers, "
           "`energy_examples.md`; not a chip measurement) from the activity counted on the first samples.", "",
           "| example | export options | test samples | float | integer | Lava vs emulator | mismatch per float spike "
           "| cores / chips | energy estimate per sample |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mc = f", {r['mc_passes']} MC passes" if r.get("mc_passes") else ""
        lava = f"bit-exact, {r['lava_samples']} samples" if r["lava_bit_exact"] else "DIFFERS"
        mm = ", ".join(f"{k} {100 * v:.2f} %" for k, v in r["mismatch"].items() if v is not None) or "-"
        plan = f"{r['cores']} / {r['chips']}" if r.get("cores") else "-"
        energy = f"{r['energy_nJ']:,.1f} nJ ({r['activity_samples']} samples)" if r.get("energy_nJ") else "-"
        out.append(f"| {r['name']}{mc} | {' '.join(r['export']) or 'defaults'} | {r['samples']:,} | {acc(r, 'float')} | "
                   f"{acc(r, 'integer')} | {lava} | {mm} | {plan} | {energy} |")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=sorted(EXAMPLES), default=list(EXAMPLES))
    ap.add_argument("--fashion-samples", type=int, default=0, help="Fashion-MNIST test samples (0: all 10,000)")
    ap.add_argument("--from-reports", action="store_true",
                    help="measure nothing: the --only rows from their saved reports beside parity.md")
    ap.add_argument("--mc-passes", type=int, default=None,
                    help="Monte-Carlo passes of the P-SpikeSSM rows (default: each row's own, 4 or 16)")
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    rows, t0 = [], time.time()
    with tempfile.TemporaryDirectory(prefix="nc-parity-") as work, open(os.path.join(work, "log.txt"), "w") as log:
        for name in a.only:
            rows.append(row_of(name) if a.from_reports else measure(name, a.fashion_samples, work, log, a.mc_passes))
            print(json.dumps(rows[-1]), flush=True)
    meta = {"command": "benchmarks/parity_examples.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "seconds": round(time.time() - t0)}
    old = os.path.join(OUT, "rows.json")
    kept = {}
    if os.path.exists(old):                            # a run of --only some examples keeps the others' rows
        with open(old) as f:
            kept = {r["name"]: r for r in json.load(f)["rows"]}
    kept.update({r["name"]: r for r in rows})
    ordered = [_backfill(kept[n]) for n in EXAMPLES if n in kept]
    with open(old, "w") as f:
        json.dump({"rows": ordered, "last_run": meta}, f, indent=1)
    with open(os.path.join(OUT, "parity.md"), "w") as f:
        f.write(render(ordered, meta))
    print(render(ordered, meta))


if __name__ == "__main__":
    main()

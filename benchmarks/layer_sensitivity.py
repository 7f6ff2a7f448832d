"""Where a program loses its accuracy: per layer, the float model (exact LIF) with only that layer
quantised (`neurocompile.sensitivity`: the program's own integer nodes for that layer, float for the
rest), beside the float model and the whole integer program on the same test samples.

Run:  nice -n 10 .venv/bin/python benchmarks/layer_sensitivity.py [--only NAME ...] [--samples N]
Rows are the SpikingSSM rows of benchmarks/parity_examples.py (the same checkpoints, data and export
options).  Writes benchmarks/results/layer_sensitivity/<name>.json and layer_sensitivity.md (rows of earlier
runs are kept).
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
OUT = os.path.join(HERE, "results", "layer_sensitivity")
sys.path.insert(0, ROOT)

from benchmarks.parity_examples import EXAMPLES  # noqa: E402

ROWS = [n for n in EXAMPLES if not n.startswith("pspikessm")]     # deterministic spikes only


def measure(name: str, samples: int, work: str) -> dict:
    import numpy as np

    import neurocompile as nc
    from neurocompile.sensitivity import layer_sensitivity

    ckpt, data, export_opts, _, _ = EXAMPLES[name]
    artifact = os.path.join(work, f"{name}.loihi2")
    subprocess.run([sys.executable, "-m", "neurocompile", "export", ckpt, "-o", artifact, *export_opts], cwd=ROOT,
                   check=True, stdout=subprocess.DEVNULL)
    program = nc.load_program(artifact)
    t0, last = time.time(), [0.0]

    def progress(done, total):
        if time.time() - last[0] > 30 or done == total:
            last[0] = time.time()
            print(f"  {name}: {done:,}/{total:,} float passes ({time.time() - t0:.0f} s)", flush=True)

    r = layer_sensitivity(os.path.join(ROOT, ckpt), program, data, max_samples=samples, progress=progress)
    dataset, _, raw = nc.load_data(program, data)
    n = r["samples"]
    logits = nc.emulate(program, raw[:n])["logits"]
    r["integer"] = float((logits.argmax(-1) == dataset.y[:n]).mean())
    r["seconds"] = round(time.time() - t0)
    return {"name": name, "export": export_opts, "date": time.strftime("%Y-%m-%d"), **r,
            "lowerings": [row["lowering"] for row in r["layers"]], "samples": n,
            "checkpoint": ckpt, "dataset": data, "worst_layer": int(np.argmin([x["accuracy"] for x in r["layers"]]))}


def render(rows: dict, meta: dict) -> str:
    out = ["# Accuracy with only one layer quantised", "",
           "The float model (exact LIF) with one layer run by the compiled program's own integer nodes (its "
           "kernel or recurrence, LIF, mixer and GLU residual, bit for bit; the stream rounded onto the program's "
           "fixed point where it enters) and every other layer float (`neurocompile/sensitivity.py`). "
           "The same test samples give the float model and the whole integer program (all layers and the "
           "encoder quantised). A layer whose column falls furthest below float is where the program loses its "
           "accuracy; the spike mismatch per layer of the same programs is in `../parity/parity.md`.", "",
           f"Last run: `{meta['command']}` ({meta['date']}, {meta['machine']}).", "",
           "| example | export options | test samples | float | only layer 0, 1, ... quantised | whole program | "
           "stream values beyond the proven range |",
           "|---|---|---|---|---|---|---|"]
    for name in [n for n in ROWS if n in rows]:
        r = rows[name]
        only = ", ".join(f"{x['layer']} ({x['lowering']}): {100 * x['accuracy']:.2f} %" for x in r["layers"])
        beyond = sum(x["beyond_proof"] for x in r["layers"])
        out.append(f"| {name} | {' '.join(r['export']) or 'defaults'} | {r['samples']:,} | {100 * r['float']:.2f} % | "
                   f"{only} | {100 * r['integer']:.2f} % | {beyond:,} |")
    out += ["", "Stream values beyond the proven range: float stream values that, rounded onto the stream's fixed "
            "point, exceed the largest value the range proof admits where the layer reads it (the float encoder "
            "and layers are not the integer ones the proof bounds); they are run unclipped in int64."]
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=ROWS, default=ROWS)
    ap.add_argument("--samples", type=int, default=1000, help="first test samples (0: the whole split)")
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    rows = {}
    for f in os.listdir(OUT):
        if f.endswith(".json"):
            with open(os.path.join(OUT, f)) as fh:
                rows[f[:-5]] = json.load(fh)
    with tempfile.TemporaryDirectory(prefix="nc-layers-") as work:
        for name in a.only:
            rows[name] = measure(name, a.samples, work)
            with open(os.path.join(OUT, f"{name}.json"), "w") as f:
                json.dump(rows[name], f, indent=1)
            print(json.dumps(rows[name]), flush=True)
    meta = {"command": "benchmarks/layer_sensitivity.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"}
    with open(os.path.join(OUT, "layer_sensitivity.md"), "w") as f:
        f.write(render(rows, meta))
    print(render(rows, meta))


if __name__ == "__main__":
    main()

"""The integer program's accuracy on a whole test split, alone: a row of benchmarks/parity_examples.py
exported with its options and run by the emulator on every test sample, without validate's float pass
(the float model does not depend on the lowering: the convolution row's whole-split report has it).
For rows whose whole-split validate would not fit a session (the deep recurrence: ~45 min on 2 cores).

Run:  nice -n 10 .venv/bin/python benchmarks/integer_whole_split.py NAME [NAME ...] [--passes K]
Writes benchmarks/results/parity/<name>.integer.json (accuracy, seconds, every prediction).
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
sys.path.insert(0, ROOT)

from benchmarks.parity_examples import EXAMPLES, OUT  # noqa: E402


def measure(name: str, work: str, passes: int = 1, chunk: int = 500) -> dict:
    import numpy as np

    import neurocompile as nc
    from neurocompile.pipeline import file_sha256

    ckpt, data, export_opts, _, _ = EXAMPLES[name]
    artifact = os.path.join(work, f"{name}.loihi2")
    subprocess.run([sys.executable, "-m", "neurocompile", "export", ckpt, "-o", artifact, *export_opts], cwd=ROOT,
                   check=True, stdout=subprocess.DEVNULL)
    program = nc.load_program(artifact)
    dataset, _, raw = nc.load_data(program, data)
    t0, runs = time.time(), []
    for seed in range(passes):               # P-SpikeSSM: Monte-Carlo pass k draws with seed k, as validate's
        preds = []
        for a in range(0, len(raw), chunk):
            preds.append(nc.emulate(program, raw[a:a + chunk], seed=seed, first_sample=a)["logits"].argmax(-1))
            print(f"  {name}, pass {seed + 1}/{passes}: {min(a + chunk, len(raw)):,}/{len(raw):,} "
                  f"({time.time() - t0:.0f} s)", flush=True)
        runs.append(np.concatenate(preds))
    pred = runs[0]
    return {"name": name, "checkpoint": ckpt, "export": export_opts, "dataset": data, "samples": len(pred),
            "integer": float(np.mean([(p == dataset.y).mean() for p in runs])),
            "integer_passes": [float((p == dataset.y).mean()) for p in runs], "seconds": round(time.time() - t0),
            "artifact_sha256": file_sha256(artifact), "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "command": "benchmarks/integer_whole_split.py " + " ".join(sys.argv[1:]),
            "predictions": [p.astype(int).tolist() for p in runs] if passes > 1 else pred.astype(int).tolist()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="+", choices=sorted(EXAMPLES))
    ap.add_argument("--passes", type=int, default=1,
                    help="Monte-Carlo passes of a P-SpikeSSM row (seeds 0..K-1; 1 for deterministic spikes)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="nc-whole-") as work:
        for name in a.names:
            r = measure(name, work, a.passes if "--mc-passes" in EXAMPLES[name][3] else 1)
            with open(os.path.join(OUT, f"{name}.integer.json"), "w") as f:
                json.dump(r, f)
            print(f"{name}: integer {100 * r['integer']:.2f} % on {r['samples']:,} ({r['seconds']} s)", flush=True)


if __name__ == "__main__":
    main()

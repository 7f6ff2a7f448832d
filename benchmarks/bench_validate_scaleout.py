"""Validation at scale, measured: Lava shards over local worker processes and a local Ray cluster,
a run killed with SIGKILL halfway and resumed, and the extrapolation to a full Fashion-MNIST split.

Runs the real CLI (``neurocompile validate``) as subprocesses on the example checkpoints:

1. digits SpikingSSM, ``--digits`` samples on Lava: ``--workers 1`` vs ``--workers W`` (wall-time
   ratio), ``--ray`` on a local cluster of W CPUs, and a ``--work-dir`` run SIGKILLed when half of
   its Lava shards are stored, then resumed: every report identical to the serial one apart from
   timings and how it ran (``seconds``, ``execution``, ``lava_shards_reused``, ``provenance``);
2. P-SpikeSSM digits (bidirectional), ``--pspike`` samples on Lava with W workers: bit-exact;
3. Fashion-MNIST SpikingSSM, ``--fashion`` samples on Lava with 1 and W workers: seconds per
   sample, and from them a full 10,000-sample split on one machine and on K machines.

    .venv/bin/python benchmarks/bench_validate_scaleout.py                  # the full run (hours on 2 cores)
    .venv/bin/python benchmarks/bench_validate_scaleout.py --digits 16 --pspike 8 --fashion 4   # a check

Results: benchmarks/results/scaleout.json and scaleout.md.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = [sys.executable, "-m", "neurocompile"]
EXAMPLES = {"digits": "examples/digits/ckpt.pt", "pspike": "examples/pspikessm-digits-bi/ckpt.pt",
            "fashion": "examples/fashion-mnist/ckpt.pt"}
DATA = {"digits": "digits", "pspike": "digits", "fashion": "fashion-mnist"}
VOLATILE = ("seconds", "execution", "lava_shards_reused", "provenance")


def comparable(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in VOLATILE}


def export(name: str, folder: str) -> str:
    out = os.path.join(folder, f"{name}.loihi2")
    subprocess.run(CLI + ["export", os.path.join(ROOT, EXAMPLES[name]), "-o", out], check=True,
                   stdout=subprocess.DEVNULL)
    return out


def validate(name, artifact, folder, tag, samples, extra=(), kill_when=None) -> dict:
    """One validate run; returns {report, wall_s, rc}.  ``kill_when(work_dir)``: SIGKILL the run when it
    returns true (polled), then return without a report."""
    out = os.path.join(folder, f"{name}-{tag}.json")
    cmd = CLI + ["validate", os.path.join(ROOT, EXAMPLES[name]), artifact, "--data", DATA[name],
                 "--max-samples", str(samples), "--lava-samples", str(samples), "--json", out, *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    if kill_when:
        while proc.poll() is None and not kill_when():
            time.sleep(0.2)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return {"killed_after_s": time.perf_counter() - t0, "cmd": " ".join(cmd[2:])}
    rc = proc.wait()
    wall = time.perf_counter() - t0
    if rc not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} exited with {rc}")
    with open(out) as fh:
        report = json.load(fh)
    return {"report": report, "wall_s": wall, "rc": rc, "cmd": "neurocompile " + " ".join(cmd[3:])}


def summary(run: dict) -> dict:
    r = run["report"]
    return {"wall_s": round(run["wall_s"], 2), "lava_s": round(r["seconds"].get("lava", 0.0), 2),
            "lava_s_per_sample": round(r["seconds"].get("lava", 0.0) / max(r["lava_samples"], 1), 3),
            "lava_samples": r["lava_samples"], "lava_bit_exact": r["lava_bit_exact"],
            "lava_shards": r.get("lava_shards"), "lava_shards_reused": r.get("lava_shards_reused"),
            "accuracy": r["accuracy"], "execution": r.get("execution"), "command": run["cmd"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--digits", type=int, default=360, help="digits SpikingSSM samples on Lava (default 360: all)")
    p.add_argument("--pspike", type=int, default=360, help="P-SpikeSSM digits samples on Lava (default 360: all)")
    p.add_argument("--fashion", type=int, default=64, help="Fashion-MNIST samples on Lava (default 64)")
    p.add_argument("--workers", type=int, default=2, help="workers of the parallel runs (default 2)")
    p.add_argument("--shard", type=int, default=8, help="samples per Lava shard (default 8)")
    p.add_argument("--no-ray", action="store_true", help="skip the Ray run")
    p.add_argument("--no-resume", action="store_true", help="skip the SIGKILL + resume run")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"), help="results folder")
    args = p.parse_args(argv)
    W = args.workers
    shard = ["--lava-shard-samples", str(args.shard)]
    res = {"cpus": os.cpu_count(), "workers": W, "shard_samples": args.shard, "runs": {}, "identical": {},
           "load_average_at_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="scaleout-") as tmp:
        art = {name: export(name, tmp) for name in EXAMPLES}
        # 1. digits SpikingSSM
        one = validate("digits", art["digits"], tmp, "w1", args.digits, ["--workers", "1", *shard])
        many = validate("digits", art["digits"], tmp, f"w{W}", args.digits, ["--workers", str(W), *shard])
        res["runs"]["digits_workers_1"], res["runs"][f"digits_workers_{W}"] = summary(one), summary(many)
        res["digits_speedup"] = round(one["report"]["seconds"]["lava"] / many["report"]["seconds"]["lava"], 3)
        res["digits_wall_speedup"] = round(one["wall_s"] / many["wall_s"], 3)
        res["identical"][f"digits_workers_{W}_vs_1"] = comparable(many["report"]) == comparable(one["report"])
        if not args.no_ray:
            ray = validate("digits", art["digits"], tmp, "ray", args.digits, ["--ray", "--workers", str(W), *shard])
            res["runs"]["digits_ray"] = summary(ray)
            res["identical"]["digits_ray_vs_workers_1"] = comparable(ray["report"]) == comparable(one["report"])
        if not args.no_resume:
            work = os.path.join(tmp, "work")
            os.makedirs(work)
            n_lava_shards = -(-args.digits // args.shard)
            n_float_shards = -(-args.digits // 128)
            half = lambda: len(glob.glob(os.path.join(work, "shards", "*", "*.npz"))) >= \
                n_float_shards + n_lava_shards // 2
            killed = validate("digits", art["digits"], tmp, "killed", args.digits,
                              ["--workers", str(W), "--work-dir", work, *shard], kill_when=half)
            resumed = validate("digits", art["digits"], tmp, "resumed", args.digits,
                               ["--workers", str(W), "--work-dir", work, *shard])
            res["runs"]["digits_killed"] = killed
            res["runs"]["digits_resumed"] = summary(resumed)
            res["identical"]["digits_resumed_vs_workers_1"] = \
                comparable(resumed["report"]) == comparable(one["report"])
        # 2. P-SpikeSSM digits, bidirectional
        if args.pspike:                                        # 0: measured apart (see the results page)
            ps = validate("pspike", art["pspike"], tmp, f"w{W}", args.pspike,
                          ["--workers", str(W), "--mc-passes", "4", *shard])
            res["runs"][f"pspike_workers_{W}"] = summary(ps)
        # 3. Fashion-MNIST SpikingSSM
        f1 = validate("fashion", art["fashion"], tmp, "w1", args.fashion, ["--workers", "1", *shard])
        fw = validate("fashion", art["fashion"], tmp, f"w{W}", args.fashion, ["--workers", str(W), *shard])
        res["runs"]["fashion_workers_1"], res["runs"][f"fashion_workers_{W}"] = summary(f1), summary(fw)
        res["identical"][f"fashion_workers_{W}_vs_1"] = comparable(fw["report"]) == comparable(f1["report"])
        per_sample = f1["report"]["seconds"]["lava"] / f1["report"]["lava_samples"]
        res["fashion_lava_s_per_sample_one_worker"] = round(per_sample, 3)
        res["fashion_speedup"] = round(f1["report"]["seconds"]["lava"] / fw["report"]["seconds"]["lava"], 3)
        res["extrapolation_10000"] = {
            "one_core_hours": round(10000 * per_sample / 3600, 2),
            "note": "full split = 10,000 x (Lava seconds per sample on one worker) / (workers that run at once); "
                    "shards are independent, so K machines of C cores divide it by about K*C, plus each shard's "
                    "network build and start-up (included in the measured per-sample time)"}
    res["load_average_at_end"] = os.getloadavg()[0]
    res["command"] = " ".join([os.path.relpath(sys.argv[0], ROOT)] + list(argv if argv is not None else sys.argv[1:]))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "scaleout.json"), "w") as fh:
        json.dump(res, fh, indent=1, default=str)
    with open(os.path.join(args.out, "scaleout.md"), "w") as fh:
        fh.write(markdown(res))
    print(markdown(res))
    return 0 if all(res["identical"].values()) else 1


def markdown(res: dict) -> str:
    W = res["workers"]
    lines = [f"# Validation at scale ({res['cpus']} CPUs, {W} workers, {res['shard_samples']} samples per Lava shard)", "",
             f"`{res['command']}`; 1-minute load average {res['load_average_at_start']:.1f} at the start, "
             f"{res['load_average_at_end']:.1f} at the end (speed-ups mean something only on an idle machine).", "",
             "| run | Lava samples | wall s | Lava s | Lava s/sample | shards | reused | bit-exact |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in res["runs"].items():
        if "wall_s" in r:
            lines.append(f"| {name} | {r['lava_samples']} | {r['wall_s']} | {r['lava_s']} | {r['lava_s_per_sample']} | "
                         f"{r['lava_shards']} | {r['lava_shards_reused']} | {r['lava_bit_exact']} |")
        else:
            lines.append(f"| {name} | | killed (SIGKILL) after {r['killed_after_s']:.1f} s | | | | | |")
    lines += ["", f"Lava speed-up with {W} workers: digits {res['digits_speedup']}x (wall {res['digits_wall_speedup']}x), "
              f"Fashion-MNIST {res['fashion_speedup']}x.", "",
              "Reports identical apart from timings and how they ran:", ""]
    lines += [f"- {k}: {v}" for k, v in res["identical"].items()]
    ex = res["extrapolation_10000"]
    lines += ["", f"Fashion-MNIST: {res['fashion_lava_s_per_sample_one_worker']} s per sample on one worker: a full "
              f"10,000-sample split is {ex['one_core_hours']} core-hours; {ex['note']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

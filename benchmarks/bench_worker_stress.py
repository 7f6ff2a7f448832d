"""Worker stress (issue 20): ``validate --workers 2`` many times in ONE process that has already run
the float model and the emulator (torch, numba and MKL threads alive in the parent), so that a worker
inheriting a lock held by one of those threads would hang.  Workers are forks of the fork server
(``neurocompile.forkserver``, one thread, never the parent) or, with ``NEUROCOMPILE_FORK_SERVER=0``,
fresh interpreters started by ``posix_spawn``, so none may.

Each round calls the real CLI in-process (``neurocompile.cli.main``) on the committed digits example,
emulator only (``--lava-samples 0``), with a watchdog: a round that has not returned after
``--hang-s`` seconds dumps every thread's stack to the results' log and ends the benchmark as a hang.
Every round's report must equal the first serial report (apart from timings and how it ran).

    .venv/bin/python benchmarks/bench_worker_stress.py --rounds 50      # results: benchmarks/results/worker_stress.md

The per-round seconds are wall-clock on a machine that may be busy: a measure of "finished", not of speed.
"""
from __future__ import annotations

import argparse
import datetime
import faulthandler
import json
import os
import platform
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CKPT = os.path.join(ROOT, "examples/digits/ckpt.pt")
VOLATILE = ("seconds", "execution", "lava_shards_reused", "provenance")


def comparable(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in VOLATILE}


def validate(cli, folder: str, tag: str, extra: list) -> tuple[int, dict, float]:
    out = os.path.join(folder, f"{tag}.json")
    t0 = time.perf_counter()
    rc = cli.main(["validate", CKPT, os.path.join(folder, "digits.loihi2"), "--data", "digits",
                   "--lava-samples", "0", "--max-samples", str(ARGS.samples), "--json", out, *extra])
    seconds = time.perf_counter() - t0
    with open(out) as fh:
        return rc, json.load(fh), seconds


def main(argv=None) -> int:
    global ARGS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--samples", type=int, default=360, help="digits test samples per round (360: all)")
    p.add_argument("--hang-s", type=float, default=600, help="a round longer than this is a hang")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks/results/worker_stress.md"))
    ARGS = p.parse_args(argv)
    from neurocompile import cli

    log = open(ARGS.out.replace(".md", ".log"), "w")
    with tempfile.TemporaryDirectory() as folder:
        assert cli.main(["export", CKPT, "-o", os.path.join(folder, "digits.loihi2")]) == 0
        # The parent runs the float model and the emulator itself first: their threads stay alive.
        rc, serial, s_serial = validate(cli, folder, "serial", [])
        assert rc == 0, rc
        rows = []
        for i in range(ARGS.rounds):
            faulthandler.dump_traceback_later(ARGS.hang_s, exit=True, file=log)
            rc, report, seconds = validate(cli, folder, f"r{i}", ["--workers", "2"])
            faulthandler.cancel_dump_traceback_later()
            same = comparable(report) == comparable(serial)
            rows.append((i + 1, rc, same, seconds))
            print(f"round {i + 1}/{ARGS.rounds}: exit {rc}, report {'identical' if same else 'DIFFERS'}, "
                  f"{seconds:.1f} s", flush=True)
    ok = sum(1 for _, rc, same, _ in rows if rc == 0 and same)
    lines = [
        "# Worker stress: `validate --workers 2` repeated in one process (issue 20)",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_worker_stress.py --rounds {ARGS.rounds} "
        f"--samples {ARGS.samples}`  ",
        f"Date: {datetime.date.today()}; Python {platform.python_version()}; {os.cpu_count()} CPUs "
        f"({platform.machine()}); the machine was shared with other work (seconds are not speed figures).",
        "",
        f"Before the rounds, the parent ran one serial `validate` (float model and emulator in-process: "
        f"{s_serial:.1f} s). Each round: `validate --workers 2 --lava-samples 0` on {ARGS.samples} digits "
        f"test samples, watchdog {ARGS.hang_s:.0f} s. Workers: "
        f"{'fresh interpreters (NEUROCOMPILE_FORK_SERVER=0)' if os.environ.get('NEUROCOMPILE_FORK_SERVER') == '0' else 'forks of the fork server'}.",
        "",
        f"**{ok}/{len(rows)} rounds finished with exit 0 and a report identical to the serial one; "
        f"no hang (a round past the watchdog ends the run, its stacks in worker_stress.log).** Wall time per round: min "
        f"{min(r[3] for r in rows):.1f} s, median {sorted(r[3] for r in rows)[len(rows) // 2]:.1f} s, "
        f"max {max(r[3] for r in rows):.1f} s.",
        "",
        "| round | exit | report identical | seconds |",
        "|---:|---:|---|---:|",
        *(f"| {i} | {rc} | {'yes' if same else 'NO'} | {s:.1f} |" for i, rc, same, s in rows),
    ]
    with open(ARGS.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    log.close()
    if not os.path.getsize(log.name):       # no stacks were dumped: nothing to keep
        os.remove(log.name)
    print(f"{ok}/{len(rows)} clean; written {ARGS.out}")
    return 0 if ok == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Worker start-up: the fork server (``neurocompile.forkserver``) against a fresh interpreter per worker
(``NEUROCOMPILE_FORK_SERVER=0``), side by side in one run, on the same tasks:

* ``empty``: a task that imports torch and returns (the start-up alone), ``--tasks`` times, 1 worker;
* ``validate``: ``validate --workers 2`` on the committed digits example (float and emulator shards,
  no Lava), in-process through the CLI;
* ``lava``: a Lava run of 2 digits samples (``run_lava``, one worker each), where Lava imports.

Each mode is measured ``--repeats`` times, alternating, and the median is reported; the first fork
server start (its imports) is counted in the first fork-server repeat of the first case.

    .venv/bin/python benchmarks/bench_worker_start.py      # results: benchmarks/results/worker_start.md
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CKPT = os.path.join(ROOT, "examples/digits/ckpt.pt")
MODES = {"fork server": "1", "fresh interpreter": "0"}


def imports_torch(progress=None):
    import torch
    return {"threads": np.array([torch.get_num_threads()])}


def case_empty(args, folder):
    from neurocompile.execute import LocalExecutor, Task
    LocalExecutor(1, 600, retries=0).run([Task(f"t{k}", imports_torch) for k in range(args.tasks)])


def case_validate(args, folder):
    from neurocompile import cli
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        rc = cli.main(["validate", CKPT, os.path.join(folder, "digits.loihi2"), "--data", "digits", "--lava-samples",
                       "0", "--max-samples", "120", "--batch-size", "15", "--workers", "2"])
    assert rc == 0


def case_lava(args, folder):
    from neurocompile.artifact import load_program
    from neurocompile.datasets import load_dataset
    from neurocompile.targets.loihi2.runner import run_lava
    program = load_program(os.path.join(folder, "digits.loihi2"))
    run_lava(program, load_dataset("digits", "test").x[:2], timeout_s=600)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=8, help="tasks of the 'empty' case")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks/results/worker_start.md"))
    args = p.parse_args()
    from neurocompile import cli
    from neurocompile.execute import FORK_SERVER_ENV
    from neurocompile.target import get_target
    cases = {"empty": case_empty, "validate": case_validate}
    if get_target().runner_unavailable() is None:
        cases["lava"] = case_lava
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli.main(["export", CKPT, "-o", os.path.join(folder, "digits.loihi2")]) == 0
        for name, case in cases.items():
            seconds = {mode: [] for mode in MODES}
            for r in range(args.repeats):
                for mode, value in MODES.items():
                    os.environ[FORK_SERVER_ENV] = value
                    t0 = time.perf_counter()
                    case(args, folder)
                    seconds[mode].append(time.perf_counter() - t0)
                    print(f"{name} {mode} repeat {r + 1}: {seconds[mode][-1]:.2f} s", flush=True)
            med = {mode: statistics.median(s) for mode, s in seconds.items()}
            rows.append((name, med, seconds))
    lines = ["# Worker start-up: fork server vs a fresh interpreter per worker", "",
             f"`{' '.join(['python', 'benchmarks/bench_worker_start.py'] + sys.argv[1:])}`  ",
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()}, "
             f"{os.cpu_count()} CPU cores; wall-clock seconds, median of {args.repeats} alternating repeats "
             "(every repeat listed).", "",
             "| case | fork server (s) | fresh interpreter (s) | ratio |", "|---|---:|---:|---:|"]
    for name, med, seconds in rows:
        a, b = med["fork server"], med["fresh interpreter"]
        lines.append(f"| {name} | {a:.2f} ({', '.join(f'{s:.2f}' for s in seconds['fork server'])}) | "
                     f"{b:.2f} ({', '.join(f'{s:.2f}' for s in seconds['fresh interpreter'])}) | {b / a:.1f}x |")
    lines += ["", f"Cases: `empty` = {args.tasks} tasks that import torch, one worker at a time; `validate` = "
              "`validate --workers 2 --lava-samples 0 --max-samples 120 --batch-size 15` on examples/digits "
              "(8 float and 8 emulator shards); `lava` = `run_lava` on 2 digits samples (one worker).",
              "The first fork-server repeat of `empty` includes the server's own start (its imports)."]
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

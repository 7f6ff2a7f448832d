"""Lava seconds per run with one Lava process per node against one Cluster, side by side in one run,
for models whose steps are light or heavy: what ``runner.resolve_cluster``'s default rests on.

* SpikingSSM 4 x 256, N 64, L 1024, causal, convolution (four SSM nodes of ~1.4 M accumulates per step);
* the same with the recurrence;
* P-SpikeSSM 4 x 256, N 64, L 1024 (two-sided convolutions over spikes, ~0.16 M);
* the Fashion-MNIST example (2 x 64, L 784, convolution, ~0.4 M), 2 test images.

Random weights from the project's model code (seed 0), Fashion-MNIST inputs as in ``bench_runtime``;
``seconds`` is ``run_lava``'s own wall time (network build and process start-up excluded).
Results: ``benchmarks/results/lava_layout.{json,md}``.

    .venv/bin/python benchmarks/bench_lava_layout.py
"""
from __future__ import annotations

import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_runtime import compile_model, inputs, write_results  # noqa: E402

from neurocompile.api import load_data  # noqa: E402
from neurocompile.models.pspikessm import PSpikeSSMConfig  # noqa: E402
from neurocompile.models.spikingssm import SpikingSSMConfig  # noqa: E402
from neurocompile.operations import operation_summary  # noqa: E402
from neurocompile.options import CompileOptions  # noqa: E402
from neurocompile.pipeline import compile_checkpoint  # noqa: E402
from neurocompile.targets.loihi2 import runner  # noqa: E402


def cases():
    torch.manual_seed(0)
    big = dict(d_input=1, d_output=10, d_model=256, n_layers=4, d_state=64, l_max=1024, input_levels=255)
    levels, _ = inputs(1, 1024)
    for low in ("conv", "recurrent"):
        yield f"SpikingSSM 4 x 256, L 1024, {low}", compile_model(SpikingSSMConfig(**big), CompileOptions(ssm_lowering=low))[2], levels
    yield "P-SpikeSSM 4 x 256, L 1024", compile_model(PSpikeSSMConfig(**big))[2], levels
    fashion = compile_checkpoint(os.path.join(os.path.dirname(HERE), "examples", "fashion-mnist", "ckpt.pt"))
    yield "Fashion-MNIST example (2 x 64, L 784), 2 images", fashion, load_data(fashion, "fashion-mnist")[2][:2]


def main() -> int:
    rows = {}
    for name, program, levels in cases():
        ops = operation_summary(program, program.seq_len)
        row = {"largest_step_accumulates": max(r["per_step"]["accumulates"] for r in ops),
               "heavy_nodes": sum(r["per_step"]["accumulates"] > runner.HEAVY_STEP_ACCUMULATES for r in ops),
               "default_cluster": runner.resolve_cluster("sim", None, None, program)}
        for cluster in (False, True):
            out = runner.run_lava(program, levels, record=False, timeout_s=3600, cluster=cluster)
            row["cluster" if cluster else "one_process_per_node"] = round(float(out["seconds"]), 2)
            print(name, "cluster" if cluster else "per node", row, flush=True)
        rows[name] = row
    table = ["| model | largest accumulates per step | heavy nodes | one process per node s | Cluster s | default |",
             "|---|---:|---:|---:|---:|---|"]
    table += [f"| {k} | {v['largest_step_accumulates']:,} | {v['heavy_nodes']} | {v['one_process_per_node']} | "
              f"{v['cluster']} | {'Cluster' if v['default_cluster'] else 'one process per node'} |" for k, v in rows.items()]
    table += ["", f"heavy: > {runner.HEAVY_STEP_ACCUMULATES:,} accumulates per step; {os.cpu_count()} CPUs; "
                  f"load average (1 min) at the end {os.getloadavg()[0]:.2f}"]
    write_results(os.path.join(HERE, "results"), "lava_layout", {"runs": rows, "cpus": os.cpu_count()},
                  "Lava: one process per node vs one Cluster (seconds per run)", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

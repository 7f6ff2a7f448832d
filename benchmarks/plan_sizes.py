"""Plans (placement estimates on Loihi 2) of published model sizes, with random weights.

* the official SpikingSSM CIFAR configuration: 6 layers, H = 512, N = 64, L = 1024, bidirectional;
* a P-SpikeSSM of LRA size: 4 layers, H = 256, state 32, L = 2048 (two-sided, as every P-SpikeSSM);
* the causal SpikingSSMs of issue 12 under both SSM lowerings (``conv`` and ``recurrent``): the official
  sMNIST layout (4 layers, H = 256, N = 64, L = 784) and 4 x 256, N = 64, L = 1024; each is also planned
  on one chip (Oheo Gulch), where the convolution lowering fails naming the resource.

Each is compiled with its range proof (random weights: placement depends on shapes and proven widths,
not on trained values) and planned on the smallest system that holds it; a process that cannot be
placed is reported with the planner's error.  Writes results/plan_sizes.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_runtime import HERE, compile_model  # noqa: E402

from neurocompile.errors import PlacementError  # noqa: E402
from neurocompile.models.config import SpikingSSMConfig  # noqa: E402
from neurocompile.models.pspikessm import PSpikeSSMConfig  # noqa: E402
from neurocompile.options import CompileOptions  # noqa: E402
from neurocompile.target import get_target  # noqa: E402

SIZES = {
    "spikingssm_cifar_official": SpikingSSMConfig(d_input=1, d_output=10, d_model=512, n_layers=6, d_state=64,
                                                  l_max=1024, bidirectional=True, input_levels=255),
    "pspikessm_lra": PSpikeSSMConfig(d_input=1, d_output=10, d_model=256, n_layers=4, d_state=32, l_max=2048,
                                     input_levels=255),
}
CAUSAL = {
    "spikingssm_smnist_official": SpikingSSMConfig(d_input=1, d_output=10, d_model=256, n_layers=4, d_state=64,
                                                   l_max=784, input_levels=255),
    "spikingssm_causal_4x256_L1024": SpikingSSMConfig(d_input=1, d_output=10, d_model=256, n_layers=4, d_state=64,
                                                      l_max=1024, input_levels=255),
}
for _name, _cfg in CAUSAL.items():
    for _lowering in ("conv", "recurrent"):
        SIZES[f"{_name}_{_lowering}"] = (_cfg, CompileOptions(ssm_lowering=_lowering))
ONE_CHIP = "oheo-gulch"


def summarise(plan: dict) -> dict:
    by_place = {}
    for p in plan["processes"]:
        by_place.setdefault(p["placement"], []).append(p["name"])
    return {k: plan[k] for k in ("system", "chips", "cores", "latency_steps", "window_steps",
                                 "host_bytes_per_step", "worst_case_per_step")} | {
        "host_processes": by_place.get("host", []),
        "neurocore_programs": sorted({p["program"] for p in plan["processes"] if p["placement"] == "neurocore"}),
        "largest": max(plan["processes"], key=lambda p: p["cores"])["name"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    planner = get_target().load("planner")
    results = {}
    for name, cfg in SIZES.items():
        cfg, options = cfg if isinstance(cfg, tuple) else (cfg, CompileOptions())
        seconds, _, program = compile_model(cfg, options)
        d = cfg.to_dict()
        entry = {"config": {k: d[k] for k in ("n_layers", "d_model", "d_state", "l_max", "bidirectional",
                                              "ssm_bidirectional") if k in d},
                 "ssm_lowering": options.ssm_lowering, "compile_seconds": seconds}
        try:
            plan = planner(program).to_dict()
            entry.update(summarise(plan))
            entry["processes"] = [{k: p[k] for k in ("name", "placement", "lowering", "program", "neurons", "cores",
                                                     "synapse_bytes", "state_bytes", "host_bytes_per_step", "reason")}
                                  for p in plan["processes"]]
        except PlacementError as exc:
            entry["error"] = str(exc)
        try:
            entry["one_chip"] = f"fits {ONE_CHIP}: {planner(program, system=ONE_CHIP).to_dict()['cores']} neurocores"
        except PlacementError as exc:
            entry["one_chip"] = f"refused on {ONE_CHIP}: {exc}"
        results[name] = entry
        print(name, json.dumps({k: v for k, v in entry.items() if k != "processes"}, indent=1))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "plan_sizes.json"), "w") as fh:
        json.dump(results, fh, indent=1)
    lines = ["# Loihi 2 plans of published sizes (estimates; random weights, shapes as published)", "",
             "| model | SSM lowering | system | chips | neurocores | host processes | host bytes/step | latency (steps) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, e in results.items():
        if "error" in e:
            lines.append(f"| {name} | {e['ssm_lowering']} | cannot place: {e['error']} | | | | | |")
        else:
            lines.append(f"| {name} | {e['ssm_lowering']} | {e['system']} | {e['chips']} | {e['cores']:,} | "
                         f"{len(e['host_processes'])} "
                         f"({', '.join(e['host_processes'][:3])}{', ...' if len(e['host_processes']) > 3 else ''}) | "
                         f"{e['host_bytes_per_step']:,} | {e['latency_steps']} |")
    lines += ["", f"On one chip ({ONE_CHIP}):", ""] + [f"- {name}: {e['one_chip']}" for name, e in results.items()]
    with open(os.path.join(args.out, "plan_sizes.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

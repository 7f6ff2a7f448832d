"""Per-sample time of the float model, the integer emulator and the Lava simulation, side by side,
and the compile time of an official-size model.

One run, one machine, models compiled by the real pipeline:
* speed: a 4-layer SpikingSSM, H=256, N=64, L=1024, causal, randomly initialised by the project's
  own model code; inputs are Fashion-MNIST test images padded to 32x32 (L=1024) when the Debian
  package is installed, else seeded random levels;
* compile: the official CIFAR configuration (6 layers, H=512, N=64, L=1024, bidirectional
  two-sided kernels) with random weights, compiled with its range proof, then emulated.
Results go to benchmarks/results/runtime.json and a Markdown table beside it; only ratios measured
in the same run are meant to be compared.  The emulator is timed on the CPU with its default back
end there (the compiled numba loop, one sample per core); its one-off JIT compilation happens in
the warm-up call and is reported apart.

    .venv/bin/python benchmarks/bench_runtime.py [--lava-samples 2] [--batch 64] [--small]

``--lava-speed`` runs only the Lava time per step of networks of one size, side by side in one run
(issue 12, part 5): the stock-process anchor (n x (Dense H x H -> LIF H), Lava's own processes on
random spikes, as Lava runs them; timed first and last, as the load drifts), the SpikingSSM compiled
with ``--ssm-lowering recurrent`` as the simulator runs it (all processes hosted in one Cluster),
with one Lava process per node (fused SSMRecurrent model) and with the SSM's three pieces (the
chip's mapping), the same model with the convolution (Cluster and one process per node), the
anchor hosted in a Cluster (like for like with ours), and the anchor's
structure with the SSM in place of the Dense (n x (SSMRecurrent H, N -> stock LIF H), fused and
pieces: the same process count as the anchor with the fused model, so only the SSM against the
Dense differs).  Each network is compiled (its Lava processes counted from the executable), run one
step (process start-up), then timed over ``--steps`` more steps (default: the sequence length;
the SpikingSSM networks at most their window); the 1-minute load average is recorded per run.
``--rounds R`` runs the whole sequence R times and reports each network's fastest run beside all of
them (load on a shared machine only adds time).

    nice -n 10 .venv/bin/python benchmarks/bench_runtime.py --lava-speed [--n-layers 4 --d-model 256
        --d-state 64 --seq-len 1024] [--steps N] [--rounds R]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numba
import numpy as np
import torch

from neurocompile.emulator import default_backend, emulate
from neurocompile.frontend import default_input_format, frontend_for
from neurocompile.ir import IntSSMRecurrent
from neurocompile.models.config import SpikingSSMConfig
from neurocompile.models.pspikessm import PSpikeSSM, PSpikeSSMConfig
from neurocompile.models.spikingssm import SpikingSSM
from neurocompile.options import CompileOptions
from neurocompile.pipeline import compile_graph, to_program

HERE = os.path.dirname(os.path.abspath(__file__))


def inputs(n: int, L: int) -> tuple[np.ndarray, str]:
    try:
        from neurocompile.datasets import load_dataset
        data = load_dataset("fashion-mnist", "test")
        img = data.x[:n, :, 0].reshape(n, 28, 28)
        padded = np.zeros((n, 32, 32), dtype=np.int64)
        padded[:, 2:30, 2:30] = img
        return padded.reshape(n, 1024, 1)[:, :L], "fashion-mnist test, padded to 32x32"
    except Exception:                                   # dataset package not installed
        return np.random.default_rng(0).integers(0, 256, size=(n, L, 1)), "seeded random levels"


def timed(fn, repeat: int = 1):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def compile_model(cfg, options: CompileOptions = CompileOptions()):
    """(seconds to compile with the range proof, the float model, the Program)."""
    kind = "pspikessm" if isinstance(cfg, PSpikeSSMConfig) else "spikingssm"
    model = (PSpikeSSM if kind == "pspikessm" else SpikingSSM)(cfg).eval()
    state = {k: v.detach() for k, v in model.state_dict().items()}
    fmt = default_input_format(cfg.to_dict())
    importer = frontend_for(kind).import_graph
    seconds, program = timed(lambda: to_program(compile_graph(importer(cfg.to_dict(), state, fmt), options), {}))
    return seconds, model, program


def lava_step_seconds(root, run_cfg, steps: int) -> tuple[float, int]:
    """(wall seconds per step, Lava processes) of the network holding ``root``: compiled (the
    processes counted from Lava's executable: the leaf processes that run), one step run (process
    start-up), then ``steps`` steps timed."""
    from lava.magma.core.run_conditions import RunSteps
    exe = root.compile(run_cfg)
    root.create_runtime(executable=exe)
    try:
        root.run(condition=RunSteps(num_steps=1))
        t0 = time.perf_counter()
        root.run(condition=RunSteps(num_steps=steps))
        return (time.perf_counter() - t0) / steps, len(exe.process_list)
    finally:
        root.stop()


def spike_source(H: int, steps: int, seed: int):
    """Lava's stock RingBuffer playing random spikes (10 %) on H channels."""
    from lava.proc.io.source import RingBuffer
    rng = np.random.default_rng(seed)
    return RingBuffer(data=(rng.random((H, steps + 1)) < 0.1).astype(np.int32)), rng


def stock_lif(H: int):
    from lava.proc.lif.process import LIF
    return LIF(shape=(H,), du=4095, dv=3584, vth=200, bias_mant=0, bias_exp=0)


def anchor_network(n_layers: int, H: int, steps: int, seed: int = 0, cluster: bool = False):
    """n x (Dense H x H -> LIF H) of Lava's stock processes, fed random spikes (10 %) from a RingBuffer;
    ``cluster``: the same processes hosted in one Cluster (as the simulator runs our networks)."""
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense

    from neurocompile.targets.loihi2.processes.cluster import cluster_of
    source, rng = spike_source(H, steps, seed)
    procs, feeds, last = {"source": source}, {}, ("source", "s_out")
    for i in range(n_layers):
        procs[f"dense{i}"] = Dense(weights=2 * rng.integers(-40, 41, (H, H)))
        procs[f"lif{i}"] = stock_lif(H)
        feeds[f"dense{i}"], feeds[f"lif{i}"] = {"s_in": last}, {"a_in": (f"dense{i}", "a_out")}
        last = (f"lif{i}", "s_out")
    if cluster:
        return cluster_of(procs, feeds, [], Loihi2SimCfg(select_tag="fixed_pt"))
    for name, ports in feeds.items():
        for port, (src, out) in ports.items():
            getattr(procs[src], out).connect(getattr(procs[name], port))
    return source


def ssm_layer_network(program, H: int, steps: int, seed: int = 0):
    """The anchor's structure with the Dense replaced: n x (SSMRecurrent H, N -> stock LIF H), one
    per recurrent layer of ``program`` (its real integer parameters, built by the lowering's own
    rule), live on every step, fed the anchor's random spikes."""
    from neurocompile.targets.loihi2.lowering import LOWER, Stage
    source, _ = spike_source(H, steps, seed)
    port = source.s_out
    window = steps + 2                                 # one window longer than the run: live throughout
    for name in program.nodes_of(IntSSMRecurrent):
        rule = LOWER[IntSSMRecurrent]
        ssm = rule.build(program.op(name), Stage(name, True, window, window, 0, {}, H, None, seed, {"main": H}))
        lif = stock_lif(H)
        port.connect(getattr(ssm, rule.inputs["main"]))
        getattr(ssm, rule.output).connect(lif.a_in)
        port = lif.s_out
    return source


def lava_speed(args) -> int:
    """Lava ms per step, one run: the stock anchor (first and last of each round), the SpikingSSM with
    the recurrent lowering (fused model and three pieces) and with the convolution, and the anchor's
    structure with the SSM in place of the Dense (fused and pieces); ``--rounds`` repeats the whole
    sequence and each network reports its fastest run (load only ever adds time)."""
    from lava.magma.core.run_configs import Loihi2SimCfg

    from neurocompile.targets.loihi2.lowering import build_network, run_config
    n_layers, H, N, L = args.n_layers, args.d_model, args.d_state, args.seq_len
    torch.manual_seed(0)
    cfg = SpikingSSMConfig(d_input=1, d_output=10, d_model=H, n_layers=n_layers, d_state=N, l_max=L, input_levels=255)
    levels, source = inputs(1, L)
    load_before = os.getloadavg()
    steps = args.steps or L
    programs = {lowering: compile_model(cfg, CompileOptions(ssm_lowering=lowering)) for lowering in ("recurrent", "conv")}
    recurrent = programs["recurrent"][2]

    def spikingssm(lowering, pieces, cluster=False):
        t_compile, _, program = programs[lowering]
        model = ("all processes in one Cluster (the simulator's default)" if cluster else
                 "one Lava process per node, three per SSM layer (its pieces)" if pieces else
                 "one Lava process per node (fused SSM model)")
        return (lambda: build_network(program, mode="fixed_pt", record=False, levels=levels, cluster=cluster).source,
                lambda: run_config("fixed_pt", pieces=pieces), min(steps, program.window - 1),
                {"what": f"SpikingSSM compiled with --ssm-lowering {lowering}, {model} ({source})",
                 "compile_seconds": t_compile, "window": program.window})

    def layers(pieces):
        return (lambda: ssm_layer_network(recurrent, H, steps), lambda: run_config("fixed_pt", pieces=pieces), steps,
                {"what": f"{n_layers} x (SSMRecurrent {H}, N={N} ({'three pieces' if pieces else 'fused'}) -> stock "
                         f"LIF {H}): the anchor with the SSM in place of the Dense"})

    def anchor(cluster):
        return (lambda: anchor_network(n_layers, H, steps, cluster=cluster),
                lambda: run_config("fixed_pt") if cluster else Loihi2SimCfg(select_tag="fixed_pt"), steps,
                {"what": f"{n_layers} x (stock Dense {H}x{H} -> stock LIF {H}), random spikes" +
                         (", hosted in one Cluster" if cluster else ", as Lava runs them")})

    sequence = [("anchor_stock_dense_lif", anchor(False)),
                ("spikingssm_recurrent_cluster", spikingssm("recurrent", False, cluster=True)),
                ("spikingssm_recurrent_fused", spikingssm("recurrent", False)),
                ("spikingssm_recurrent_pieces", spikingssm("recurrent", True)),
                ("spikingssm_conv_cluster", spikingssm("conv", False, cluster=True)),
                ("spikingssm_conv", spikingssm("conv", False)),
                ("layer_ssm_lif_fused", layers(False)),
                ("layer_ssm_lif_pieces", layers(True)),
                ("anchor_cluster", anchor(True)),
                ("anchor_stock_dense_lif", anchor(False))]            # last too: the load drifts
    rows = {}
    for _ in range(args.rounds):
        for key, (build, run_cfg, n, info) in sequence:
            ms, procs = lava_step_seconds(build(), run_cfg(), n)
            rec = rows.setdefault(key, {**info, "processes": procs, "steps_timed": n, "runs_ms_per_step": [],
                                        "load_average_1min": []})
            rec["runs_ms_per_step"].append(1e3 * ms)
            rec["load_average_1min"].append(os.getloadavg()[0])
            print(f"{key}: {1e3 * ms:.2f} ms per step, {procs} processes, load {os.getloadavg()[0]:.2f}", flush=True)
    for rec in rows.values():
        rec["ms_per_step"] = min(rec["runs_ms_per_step"])
    ms = {k: v["ms_per_step"] for k, v in rows.items()}
    ratios = {"recurrent_cluster_vs_anchor": ms["spikingssm_recurrent_cluster"] / ms["anchor_stock_dense_lif"],
              "recurrent_cluster_vs_anchor_cluster": ms["spikingssm_recurrent_cluster"] / ms["anchor_cluster"],
              "conv_cluster_vs_recurrent_cluster": ms["spikingssm_conv_cluster"] / ms["spikingssm_recurrent_cluster"],
              "recurrent_fused_vs_anchor": ms["spikingssm_recurrent_fused"] / ms["anchor_stock_dense_lif"],
              "recurrent_pieces_vs_fused": ms["spikingssm_recurrent_pieces"] / ms["spikingssm_recurrent_fused"],
              "conv_vs_recurrent_fused": ms["spikingssm_conv"] / ms["spikingssm_recurrent_fused"],
              "layer_ssm_fused_vs_anchor": ms["layer_ssm_lif_fused"] / ms["anchor_stock_dense_lif"],
              "layer_ssm_pieces_vs_anchor": ms["layer_ssm_lif_pieces"] / ms["anchor_stock_dense_lif"]}
    result = {"model": {"n_layers": n_layers, "d_model": H, "d_state": N, "seq_len": L, "causal": True},
              "rounds": args.rounds, "lava_ms_per_step": rows, "ratios": ratios,
              "load_average_before_after": [list(load_before), list(os.getloadavg())],
              "niceness": os.nice(0),
              "machine": {"cpu_count": os.cpu_count(), "python": sys.version.split()[0],
                          "platform": platform.platform()}}
    fmt = lambda xs: " / ".join(f"{x:.2f}" for x in xs)
    table = ["| network | Lava ms per step (fastest) | runs, in order | Lava processes | load (1 min) per run |",
             "|---|---|---|---|---|"] + \
        [f"| {k} ({v['what']}) | {v['ms_per_step']:.2f} | {fmt(v['runs_ms_per_step'])} | {v['processes']} | "
         f"{fmt(v['load_average_1min'])} |" for k, v in rows.items()]
    table += ["", "; ".join(f"{k.replace('_', ' ')}: {v:.2f}" for k, v in ratios.items()),
              f"load average (1, 5, 15 min) before {[round(x, 2) for x in load_before]}, after "
              f"{[round(x, 2) for x in result['load_average_before_after'][1]]}; niceness {result['niceness']}; "
              f"{os.cpu_count()} CPUs; {args.rounds} round(s), the anchor first and last in each"]
    write_results(args.out, f"lava_speed_{n_layers}x{H}_N{N}_L{L}", result,
                  f"Lava time per step, {n_layers} layers, H={H}, N={N}, L={L}, causal", table)
    return 0


def write_results(folder: str, name: str, result: dict, title: str, table: list) -> None:
    """<name>.json and a Markdown page <name>.md under ``folder``; the table is printed too."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    with open(os.path.join(folder, f"{name}.md"), "w") as fh:
        fh.write(f"# {title}\n\n" + "\n".join(table) + "\n")
    print("\n".join(table))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lava-samples", type=int, default=2, help="samples run on Lava (>= 1)")
    ap.add_argument("--batch", type=int, default=64, help="samples timed on the float model and the emulator")
    ap.add_argument("--small", action="store_true", help="2 layers, H=64, L=256: a quick smoke run")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--lava-speed", action="store_true",
                    help="only the Lava time per step: stock anchor, recurrent lowering (fused model and three "
                         "pieces), convolution lowering, and the anchor's structure with the SSM in place of the Dense")
    ap.add_argument("--n-layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--d-state", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=0, help="--lava-speed: steps timed (default: the sequence length)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="--lava-speed: times the whole sequence is run; each network reports its fastest run")
    args = ap.parse_args(argv)
    if args.lava_speed:
        return lava_speed(args)
    torch.manual_seed(0)
    n_layers, H, N, L = (2, 64, 32, 256) if args.small else (4, 256, 64, 1024)
    cfg = SpikingSSMConfig(d_input=1, d_output=10, d_model=H, n_layers=n_layers, d_state=N, l_max=L, input_levels=255)
    t_compile, model, program = compile_model(cfg)
    levels, source = inputs(max(args.batch, args.lava_samples), L)

    x = torch.as_tensor(levels[:args.batch].astype(np.float32) / 255)
    with torch.no_grad():
        model(x[:2], neuron="lif")
        t_float_lif, _ = timed(lambda: model(x, neuron="lif"), 2)
        t_float_sdn, _ = timed(lambda: model(x, neuron="sdn"), 2)
    t_jit, _ = timed(lambda: emulate(program, levels[:2], device="cpu"))     # warm-up: numba compiles here
    t_emu, _ = timed(lambda: emulate(program, levels[:args.batch], device="cpu", batch_size=args.batch), 2)
    t_emu_torch, _ = timed(lambda: emulate(program, levels[:args.batch], device="cpu", batch_size=args.batch,
                                           backend="torch"))

    from neurocompile.targets.loihi2.runner import run_lava
    # run_lava reports the run's own wall time (network build and process start-up excluded)
    lava = run_lava(program, levels[:args.lava_samples], record=False, timeout_s=3600)["seconds"] / args.lava_samples

    # an official-size model: the CIFAR configuration, bidirectional, compiled with its proof, emulated
    big_cfg = (SpikingSSMConfig(d_input=1, d_output=10, d_model=64, n_layers=2, d_state=32, l_max=256,
                                bidirectional=True, input_levels=255) if args.small else
               SpikingSSMConfig(d_input=1, d_output=10, d_model=512, n_layers=6, d_state=64, l_max=1024,
                                bidirectional=True, input_levels=255))
    t_big_compile, _, big = compile_model(big_cfg)

    # P-SpikeSSM of the same size (two-sided kernels as every official config, post-norm BatchNorm)
    ps_cfg = PSpikeSSMConfig(d_input=1, d_output=10, d_model=H, n_layers=n_layers, d_state=N, l_max=L,
                             input_levels=255)
    t_ps_compile, ps_model, ps = compile_model(ps_cfg)
    with torch.no_grad():
        ps_model(x[:2])
        t_ps_float, _ = timed(lambda: ps_model(x), 2)
    emulate(ps, levels[:2], device="cpu")
    t_ps_emu, _ = timed(lambda: emulate(ps, levels[:args.batch], device="cpu", batch_size=args.batch), 2)
    ps_lava = run_lava(ps, levels[:args.lava_samples], record=False, timeout_s=3600)["seconds"] / args.lava_samples
    big_levels, _ = inputs(4, big_cfg.l_max)
    emulate(big, big_levels[:2], device="cpu")
    t_big_emu, _ = timed(lambda: emulate(big, big_levels, device="cpu"))

    per = {
        "float_exact_lif": t_float_lif / args.batch,
        "float_sdn": t_float_sdn / args.batch,
        "integer_emulator": t_emu / args.batch,
        "integer_emulator_torch_backend": t_emu_torch / args.batch,
        "lava_fixed_pt": lava,
    }
    result = {
        "model": {"n_layers": n_layers, "d_model": H, "d_state": N, "seq_len": L},
        "inputs": source,
        "batch": args.batch,
        "lava_samples": args.lava_samples,
        "seconds_per_sample": per,
        "lava_seconds_per_step": lava / program.window,
        "compile_seconds": t_compile,
        "emulator_backend": default_backend("cpu"),
        "emulator_first_call_seconds": t_jit,
        "emulator_speedup_vs_lava": lava / per["integer_emulator"],
        "pspikessm": {"config": {k: ps_cfg.to_dict()[k] for k in ("n_layers", "d_model", "d_state", "l_max",
                                                                  "bidirectional", "ssm_bidirectional")},
                      "seconds_per_sample": {"float_stochastic": t_ps_float / args.batch,
                                             "integer_emulator": t_ps_emu / args.batch, "lava_fixed_pt": ps_lava},
                      "compile_seconds": t_ps_compile, "window_steps": ps.window,
                      "lava_seconds_per_step": ps_lava / ps.window,
                      "emulator_speedup_vs_lava": ps_lava / (t_ps_emu / args.batch)},
        "official_size": {"config": {k: big_cfg.to_dict()[k] for k in ("n_layers", "d_model", "d_state", "l_max",
                                                                        "bidirectional")},
                          "compile_seconds_with_range_proof": t_big_compile,
                          "emulator_seconds_per_sample": t_big_emu / len(big_levels),
                          "latency_steps": big.latency},
        "machine": {"cpu_count": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform(),
                    "torch": torch.__version__, "numba": numba.__version__, "cuda": torch.cuda.is_available()},
    }
    big_row, ps_row = result["official_size"], result["pspikessm"]
    table = ["| path | seconds per sample |", "|---|---|"] + [f"| {k} | {v:.5f} |" for k, v in per.items()]
    table += ["", f"emulator speed-up over Lava: {result['emulator_speedup_vs_lava']:.0f}x; "
                  f"compile {t_compile:.2f} s; Lava {1e3 * result['lava_seconds_per_step']:.2f} ms per step",
              f"P-SpikeSSM, same size, two-sided kernels: float {ps_row['seconds_per_sample']['float_stochastic']:.5f}, "
              f"emulator {ps_row['seconds_per_sample']['integer_emulator']:.5f}, Lava {ps_lava:.1f} s per sample "
              f"({ps.window} steps); emulator speed-up over Lava {ps_row['emulator_speedup_vs_lava']:.0f}x; "
              f"compile {t_ps_compile:.2f} s",
              f"official size {big_row['config']}: compile with range proof {t_big_compile:.2f} s, "
              f"emulator {big_row['emulator_seconds_per_sample']:.3f} s per sample, latency {big.latency} steps"]
    write_results(args.out, "runtime_small" if args.small else "runtime", result,
                  f"{n_layers} layers, H={H}, N={N}, L={L} ({source})", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

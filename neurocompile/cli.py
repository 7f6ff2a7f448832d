"""``neurocompile`` command line: train, export, inspect, simulate, validate."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

EXIT_USER_ERROR = 2


def _progress(label: str, total: int):
    from tqdm import tqdm

    bars = []                  # the bar starts with the first report, so its clock is this stage's

    def update(done, _total=None):
        if not bars:
            bars.append(tqdm(total=total, desc=label, unit="sample", file=sys.stderr, dynamic_ncols=True))
        bars[0].update(done - bars[0].n)
        if done >= total:
            bars[0].close()
    return update


# ---------------------------------------------------------------------------------------- export
def cmd_export(args) -> int:
    from .artifact import save_program
    from .options import CompileOptions
    from .pipeline import compile_checkpoint

    if args.target != "loihi2":
        raise ValueError(f"unknown target {args.target!r} (available: loihi2)")
    options = CompileOptions(kernel_bits=args.kernel_bits, weight_bits=args.weight_bits, act_bits=args.act_bits)
    program = compile_checkpoint(args.checkpoint, options)
    out = args.output or os.path.splitext(os.path.basename(args.checkpoint))[0] + ".loihi2"
    save_program(program, out)
    print(export_summary(program, out))
    return 0


def export_summary(program, path: str) -> str:
    m = program.model
    lines = [f"wrote {path}",
             f"  model: SpikingSSM {m['n_layers']} layers, H={m['d_model']}, N={m['d_state']}, L={m['l_max']}, "
             f"{m['d_output']} classes; residual stream fixed point 2^-{program.stream_frac_bits.min()} .. "
             f"2^-{program.stream_frac_bits.max()} (per channel)",
             f"  {'stage':<16}{'AC-only':<9}how"]
    for row in program.report["operations"]:
        lines.append(f"  {row['stage']:<16}{('yes' if row['ac_only'] else 'NO'):<9}{row['how']}")
    for i, layer in enumerate(program.layers):
        lines.append(f"  layer{i}: {layer.stream_bits}-bit stream planes, LIF vth {layer.vth} (<<6), dv {layer.dv}")
    registers = [r for r in program.report["ranges"] if r["limit"] > 2 ** 20]     # not the bit-plane counts
    worst = min(registers, key=lambda r: r["headroom_bits"])
    lines.append(f"  range analysis: every 24-bit register proven safe; least headroom {worst['headroom_bits']} bits "
                 f"({worst['node']} {worst['register']}: {worst['worst']} of {worst['limit']})")
    return "\n".join(lines)


def cmd_inspect(args) -> int:
    from .artifact import load_program

    program = load_program(args.artifact)
    if args.json:
        print(json.dumps(program.report, indent=1))
    else:
        print(export_summary(program, args.artifact).replace("wrote ", "artifact ", 1))
        for r in program.report["ranges"]:
            print(f"    {r['node']:<18}{r['register']:<34}{r['worst']:>12} / {r['limit']:<10} headroom {r['headroom_bits']} bits")
    return 0


# -------------------------------------------------------------------------------------- data
def _load_data(name: str, split: str, levels: int):
    from .datasets import load_dataset

    return load_dataset(name, split, levels=levels)


def _check_data(data, program, source: str):
    from .errors import DatasetError

    L, d_in = program.seq_len, int(program.model["d_input"])
    if data.x.ndim != 3 or data.x.shape[1:] != (L, d_in):
        raise DatasetError(f"{source}: samples have shape {tuple(data.x.shape[1:])}, the model expects ({L}, {d_in})")
    if int(data.levels) != int(program.model["input_levels"]):
        raise DatasetError(f"{source}: inputs have {data.levels} levels, the model was trained on "
                           f"{program.model['input_levels']}")


# ------------------------------------------------------------------------------------ simulate
def cmd_simulate(args) -> int:
    import numpy as np

    from .artifact import load_program
    from .traces import TRACE_KINDS, plot_raster, save_traces

    program = load_program(args.artifact)
    kinds = [k.strip() for k in args.record.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in TRACE_KINDS]
    if unknown:
        raise ValueError(f"--record: unknown trace kind(s) {', '.join(unknown)} (choose from {', '.join(TRACE_KINDS)})")
    data = _load_data(args.dataset, args.split, int(program.model["input_levels"]))
    _check_data(data, program, args.dataset)
    if not 0 <= args.index < len(data.y) or args.count < 1:
        raise ValueError(f"--index {args.index} / --count {args.count} out of range ({len(data.y)} samples in {args.dataset} {args.split})")
    idx = np.arange(args.index, min(args.index + args.count, len(data.y)))
    levels = data.x[idx]
    if args.engine == "lava":
        if "voltage" in kinds:
            raise ValueError("--record voltage: the stock Lava LIF keeps v internal; use --engine emulator for membrane traces")
        from .targets.loihi2.runner import run_lava
        traces = run_lava(program, levels, mode="fixed_pt", backend=args.backend, record=True, timeout_s=args.timeout,
                          progress=_progress("Lava", len(levels)) if len(levels) > 1 else None)
    else:
        from .emulator import emulate
        traces = emulate(program, levels, record=True)
    preds = traces["logits"].argmax(1)
    for j, i in enumerate(idx):
        rates = ", ".join(f"{traces['spikes'][k][j].mean():.3f}" for k in range(program.n_layers))
        print(f"sample {i}: label {int(data.y[i])}, predicted {int(preds[j])}, firing rates per layer [{rates}]")
    if args.output:
        save_traces(args.output, traces, kinds, {"engine": args.engine, "indices": idx, "labels": data.y[idx]})
        print(f"wrote {args.output} ({', '.join(kinds)}; arrays shaped (samples, channels, time))")
    if args.plot:
        plot_raster(args.plot, traces, 0, f"{args.dataset} #{idx[0]} (label {int(data.y[idx[0]])}) on {args.engine}")
        print(f"wrote {args.plot}")
    return 0


# ------------------------------------------------------------------------------------ validate
def cmd_validate(args) -> int:
    from .artifact import load_program
    from .errors import ArtifactError
    from .models.checkpoint import build_model, load_checkpoint
    from .pipeline import file_sha256
    from .validate import format_report, validate

    kind, config, state_dict, _ = load_checkpoint(args.checkpoint)
    program = load_program(args.artifact)
    if program.report.get("source", {}).get("checkpoint_sha256") not in (None, file_sha256(args.checkpoint)):
        raise ArtifactError(f"{args.artifact}: was exported from another checkpoint than {args.checkpoint}")
    model = build_model(config, state_dict)
    data = _load_data(args.dataset, args.split, int(program.model["input_levels"]))
    _check_data(data, program, args.dataset)
    x, y = data.x, data.y
    if args.max_samples:
        x, y = x[:args.max_samples], y[:args.max_samples]
    report = validate(model, program, x, y, lava_samples=args.lava_samples, batch_size=args.batch_size,
                      device=args.device, progress=_progress("float+integer", len(y)), lava_timeout_s=args.timeout,
                      lava_progress=_progress("Lava", min(args.lava_samples, len(y))) if args.lava_samples else None,
                      emulator_backend=args.emulator)
    report["dataset"] = {"name": args.dataset, "split": args.split}
    report["checkpoint"] = os.path.basename(args.checkpoint)
    report["artifact"] = os.path.basename(args.artifact)
    print(format_report(report))
    if args.json:
        folder = os.path.dirname(os.path.abspath(args.json))
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
        with os.fdopen(fd, "w") as fh:
            json.dump(report, fh, indent=1, default=float)
        os.replace(tmp, args.json)
        print(f"wrote {args.json}")
    if args.lava_samples and not report["lava_bit_exact"]:
        return 1
    return 0


def cmd_train(argv) -> int:
    from .models.train import main as train_main

    return train_main(argv) or 0


# ----------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neurocompile", description="Compile trained SpikingSSM checkpoints to Loihi 2 "
                                "(Lava), simulate them, and validate accuracy parity.")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("train", help="train a SpikingSSM or P-SpikeSSM on a built-in dataset (see `neurocompile train --help`)",
                   add_help=False)

    e = sub.add_parser("export", help="compile a checkpoint to a .loihi2 artifact")
    e.add_argument("checkpoint", help="a neurocompile checkpoint (.pt) written by `neurocompile train`")
    e.add_argument("--target", default="loihi2", help="compilation target (only loihi2 today)")
    e.add_argument("-o", "--output", help="artifact path (default: <checkpoint name>.loihi2)")
    e.add_argument("--kernel-bits", type=int, default=8, help="SSM kernel mantissa bits incl. sign, per-channel exponent (default 8)")
    e.add_argument("--weight-bits", type=int, default=8, help="mixer/decoder mantissa bits incl. sign, per-row exponent (default 8)")
    e.add_argument("--act-bits", type=int, default=None,
                   help="residual-stream width in bits; default: the widest (<= 16) that the range analysis proves safe. "
                        "An explicit width that would overflow a 24-bit register is an error")

    i = sub.add_parser("inspect", help="print an artifact's summary, register ranges and operations")
    i.add_argument("artifact")
    i.add_argument("--json", action="store_true", help="print the full compile report as JSON")

    s = sub.add_parser("simulate", help="run samples through the compiled network and record per-layer traces")
    s.add_argument("artifact", help="a .loihi2 file written by `neurocompile export`")
    s.add_argument("--dataset", required=True, help="digits, fashion-mnist, or a .npz with x (n, L[, d_in]) and y")
    s.add_argument("--split", default="test", choices=["train", "test"])
    s.add_argument("--index", type=int, default=0, help="first sample index (default 0)")
    s.add_argument("--count", type=int, default=1, help="number of consecutive samples (default 1)")
    s.add_argument("--engine", default="lava", choices=["lava", "emulator"],
                   help="lava: Loihi2SimCfg fixed_pt processes (default); emulator: the batched integer emulator")
    s.add_argument("--backend", default="sim", choices=["sim", "hw"], help="Lava back end: sim (CPU) or hw (needs lava-loihi)")
    s.add_argument("--record", default="spikes,ssm,stream",
                   help="comma list of traces to save: spikes, ssm (LIF input), stream (residual), voltage (emulator only)")
    s.add_argument("-o", "--output", help="write traces to this .npz")
    s.add_argument("--plot", help="write a raster plot of the first sample to this .png")
    s.add_argument("--timeout", type=int, default=900, help="seconds before a Lava run is stopped (default 900)")

    v = sub.add_parser("validate", help="float vs integer (whole split) vs Lava (first N samples) parity report")
    v.add_argument("checkpoint")
    v.add_argument("artifact")
    v.add_argument("--dataset", required=True, help="digits, fashion-mnist, or a .npz with x and y")
    v.add_argument("--split", default="test", choices=["train", "test"])
    v.add_argument("--lava-samples", type=int, default=16, help="samples also run on Lava and compared bit for bit (default 16; 0 skips)")
    v.add_argument("--max-samples", type=int, default=0, help="limit the float/integer comparison to the first N samples")
    v.add_argument("--batch-size", type=int, default=128)
    v.add_argument("--device", default=None, help="torch device for float and emulator runs (default: cuda if present)")
    v.add_argument("--emulator", default=None, choices=["compiled", "torch"],
                   help="integer emulator back end: compiled (numba, CPU; the default there) or torch (the default on CUDA)")
    v.add_argument("--json", help="write the report as JSON here")
    v.add_argument("--timeout", type=int, default=1800, help="seconds before the Lava run is stopped (default 1800)")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        return _guard(lambda: cmd_train(argv[1:]))
    args = build_parser().parse_args(argv)
    handler = {"export": cmd_export, "inspect": cmd_inspect, "simulate": cmd_simulate, "validate": cmd_validate}
    return _guard(lambda: handler[args.command](args))


def _guard(fn) -> int:
    """User errors become one line on stderr and exit code 2; bugs keep their traceback."""
    from .errors import NeurocompileError

    try:
        return fn()
    except (NeurocompileError, ValueError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"neurocompile: error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("neurocompile: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

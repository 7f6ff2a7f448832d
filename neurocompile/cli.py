"""``neurocompile`` command line: train, export, inspect, simulate, validate."""
from __future__ import annotations

import argparse
import json
import os
import sys

EXIT_USER_ERROR = 2
QUANT_ERROR_WARNING = 0.025     # digits: 3.8 % (4-bit kernels) costs 1.7 points, 8 % (3-bit) 9 points


_BARS = []                     # open progress bars: closed before an error line, so it starts a line of its own


def _close_bars() -> None:
    while _BARS:
        try:
            _BARS.pop().close()
        except (OSError, ValueError):
            pass


class _Stderr:
    """Whatever ``sys.stderr`` is now (a Ray run points it at the terminal while fd 2 holds Ray's log)."""

    def write(self, text):
        return sys.stderr.write(text)

    def __getattr__(self, name):
        return getattr(sys.stderr, name)


def _progress(label: str, total: int):
    from tqdm import tqdm

    tqdm.monitor_interval = 0  # no monitor thread: shards are forked children, and a fork inherits its locks
    bars = []                  # the bar starts with the first report, so its clock is this stage's

    def update(done, _total=None):
        if not bars:
            bars.append(tqdm(total=total, desc=label, unit="sample", file=_Stderr(), dynamic_ncols=True))
            _BARS.append(bars[0])
        bars[0].update(done - bars[0].n)
        if done >= total:
            bars[0].close()
            if bars[0] in _BARS:
                _BARS.remove(bars[0])
    return update


# Every count has a stated bound (shown in --help): a mistyped 10000000 must not start a run of hours.
MAX_SEED = 2 ** 63 - 1
MAX_SAMPLES = 10 ** 7          # above any split this tool reads (Fashion-MNIST train: 60,000)
MAX_LAVA_SAMPLES = 10_000      # ~1 s each on Lava's CPU simulator
MAX_MC_PASSES = 1000
MAX_BATCH = 65_536
MAX_TIMEOUT_S = 7 * 86_400
MAX_INPUT_LEVELS = 65_535
MAX_WORKERS = 1024
MAX_SEQ_LEN = 2 ** 17          # the compiler's own limit (pipeline.MAX_SEQ_LEN)


class HelpFormatter(argparse.HelpFormatter):
    """``--help`` states every option's default (unless its help text already does)."""

    def _get_help_string(self, action):
        text = action.help or ""
        shown = not (action.default is None or action.default is False or action.default == argparse.SUPPRESS)
        if action.option_strings and shown and "default" not in text:
            text += " (default: %(default)s)"
        return text


def given_options(build_parser, argv) -> set:
    """The dests of the options written on the command line (parsed again with no defaults), so an
    option that does not apply is refused even when its value equals the default."""
    parser, stack = build_parser(), []
    stack.append(parser)
    while stack:
        for action in stack.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
            else:
                action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def bounded(kind, low, high):
    """An argparse type: ``kind`` in [low, high] (NaN and infinities refused)."""
    def parse(text):
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") \
                from None
        if not low <= value <= high:           # NaN too: a NaN timeout would never expire
            raise argparse.ArgumentTypeError(f"must be in {low:g}..{high:g}, got {text}" if kind is float
                                             else f"must be in {low}..{high}, got {text}")
        return value
    return parse


def _input_range(text):
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (e.g. 0,1), got {text!r}") from None
    if not (abs(low) < float("inf") and abs(high) < float("inf")):
        raise argparse.ArgumentTypeError(f"LOW and HIGH must be finite numbers, got {text!r}")
    return low, high


# options whose value may start with '-' (argparse would take `--input-range -5,5` for an option)
_NEGATIVE_VALUE_OPTIONS = ("--input-range",)


def _join_negative_values(argv: list) -> list:
    out, i = [], 0
    while i < len(argv):
        if argv[i] in _NEGATIVE_VALUE_OPTIONS and i + 1 < len(argv) and argv[i + 1][:2] in \
                [f"-{c}" for c in "0123456789."]:
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


# ---------------------------------------------------------------------------------------- export
def cmd_export(args) -> int:
    from .artifact import save_program
    from .input_format import InputFormat
    from .models.checkpoint import load_checkpoint
    from .options import CompileOptions
    from .pipeline import compile_checkpoint
    from .target import get_target

    target = get_target(args.target)
    options = CompileOptions(kernel_bits=args.kernel_bits, weight_bits=args.weight_bits, act_bits=args.act_bits,
                             prob_bits=args.prob_bits, ssm_lowering=args.ssm_lowering, decay_bits=args.decay_bits)
    _refuse_an_artifact(args.checkpoint)
    out = args.output if args.output is not None else default_output(args.checkpoint)
    from .errors import CheckpointError
    from .fileio import check_output_path
    from .datasets import BUILTIN
    check_output_path(out, [args.checkpoint] + ([args.calibrate] if args.calibrate not in BUILTIN else []))
    fmt = None
    if args.input_range is not None or args.input_levels is not None:
        kind, config, _, _ = load_checkpoint(args.checkpoint, seq_len=args.seq_len)
        cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        low, high = args.input_range or (0.0, 1.0)
        levels = args.input_levels or cfg.get("input_levels", 255)
        try:
            fmt = InputFormat(low=low, high=high, levels=levels)
        except (ValueError, TypeError, OverflowError) as exc:
            if args.input_levels:
                raise
            raise CheckpointError(f"{args.checkpoint}: its config's input_levels {str(levels)[:20]} is not valid "
                                  f"({str(exc).replace('--input-levels', 'input levels')})") from None
    calibration = None
    if args.calibrate is None and args.calibrate_samples is not None:
        raise ValueError("--calibrate-samples applies with --calibrate DATA only")
    if args.calibrate is not None:
        from .datasets import load_dataset
        from .ssm_calibration import DEFAULT_SAMPLES, Calibration
        load_dataset(args.calibrate, "test")     # a wrong name or file is said before the compile (its shape, after)
        calibration = Calibration(args.calibrate, args.calibrate_samples or DEFAULT_SAMPLES)
    program = compile_checkpoint(args.checkpoint, options, target, input_format=fmt, seq_len=args.seq_len,
                                 warn=lambda text: print(f"neurocompile: warning: {text}", file=sys.stderr),
                                 calibration=calibration)
    save_program(program, out, inputs=[args.checkpoint])
    print(export_summary(program, out))
    return 0


ARTIFACT_SUFFIX = ".loihi2"


def _refuse_an_artifact(path: str) -> None:
    """export given what export wrote: say so (not that the default output, the file itself, exists)."""
    import zipfile
    from .errors import CheckpointError
    try:
        if not os.path.isfile(path) or not zipfile.is_zipfile(path):     # a regular file only (never a FIFO)
            return
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except Exception:          # any zip zipfile cannot read (e.g. NotImplementedError for 'version 6.4'):
        return                 # not our artifact; the checkpoint reader, which bounds everything, says what is wrong
    if "manifest.json" in names:
        raise CheckpointError(f"{path}: this is a {ARTIFACT_SUFFIX} artifact (written by export), not a checkpoint; "
                              "export the checkpoint it came from, or read it with `neurocompile inspect`")


def default_output(checkpoint: str) -> str:
    """``<checkpoint without its extension>.loihi2`` next to the checkpoint, so two checkpoints in
    two folders never share it; refused when that file holds another checkpoint's artifact (e.g.
    ckpt.pt and ckpt.ckpt in one folder), so nothing is replaced silently."""
    from .artifact import load_program
    from .errors import ArtifactError
    from .fileio import OutputError

    out = os.path.splitext(checkpoint)[0] + ARTIFACT_SUFFIX
    if os.path.lexists(out):
        try:
            source = load_program(out).report.get("source", {}).get("checkpoint")
        except (ArtifactError, OSError, ValueError):
            source = None
        if source != os.path.basename(checkpoint):
            raise OutputError(f"{out}: the default output exists and is not {os.path.basename(checkpoint)}'s artifact "
                              f"({'from ' + source if source else 'unreadable'}); name the output with -o")
    return out


def export_summary(program, path: str, recorded: str = "") -> str:
    """The summary ``export`` prints and ``inspect`` repeats.  Layers, widths, classes, input format,
    latency, operations and ranges are what the verifier proved from the stored integers; the rest
    (what was detected, N, the stream's fixed point, quantization errors) the exporter recorded:
    ``recorded`` labels those lines (``inspect``).  Every string is escaped for the terminal."""
    from .artifact import layer_count, stream_width
    from .fileio import display
    from .input_format import InputFormat

    m, rep = program.model, program.report
    src = rep.get("source", {})
    frac = rep.get("stream_frac_bits") or [0]
    lines = [f"wrote {path}",
             f"  detected: {src.get('detected', m.get('kind'))}{recorded}",
             f"  model: {m['kind']} {layer_count(program)} layers, H={stream_width(program)}, N={m.get('d_state')}, "
             f"L={program.seq_len}, {program.n_classes} classes; residual stream fixed point 2^-{min(frac)} .. "
             f"2^-{max(frac)}{' (N and the fixed point: ' + recorded.strip(' ()') + ')' if recorded else ''}",
             f"  input: {InputFormat.from_dict(m['input']).describe()}",
             f"  latency: {program.latency} steps from a sample's first input to the readout "
             f"(window {program.window} steps per sample on Loihi 2)",
             f"  {'stage':<18}{'AC-only':<9}how"]
    for row in rep["operations"]:
        lines.append(f"  {row['stage']:<18}{('yes' if row['ac_only'] else 'NO'):<9}{row['how']}")
    step = {k: sum(row["per_step"][k] for row in rep["operations"]) for k in ("accumulates", "multiplies")}
    lines.append(f"  worst case per step (every input spiking, every bit plane set): {step['accumulates']:,} "
                 f"accumulates, {step['multiplies']:,} multiplies")
    registers = [r for r in rep["ranges"] if r["limit"] > 2 ** 20]     # not the bit-plane counts
    worst = min(registers, key=lambda r: r["headroom_bits"])
    lines.append(f"  range analysis: every 24-bit register proven safe; least headroom {worst['headroom_bits']} bits "
                 f"({worst['node']} {worst['register']}: {worst['worst']} of {worst['limit']})")
    lines += ssm_lowering_lines(rep.get("ssm_lowering", {}))
    errors = rep.get("quantization_error", {})
    if errors:
        lines.append("  quantization error (weights: relative L2; samplers: bound of the firing-probability error): "
                     + ", ".join(f"{n} {100 * e:.2g} %" for n, e in errors.items()) + recorded)
    for node, err in errors.items():
        if err > QUANT_ERROR_WARNING:
            lines.append(f"  WARNING: {node} keeps its weights only to {100 * err:.0f} % relative error: expect an "
                         "accuracy loss; measure it with `neurocompile validate` (or raise --kernel-bits/--weight-bits)")
    return "\n".join(display(line) for line in lines)


RECORDED = " (recorded at export, not provable from the integers)"


def ssm_lowering_lines(table: dict) -> list:
    """Each SSM layer's lowering, the reason, and the kernel error (taps / step response, relative L2)
    of what its integers compute under each lowering."""
    if not table:
        return []
    lines = ["  SSM lowering (kernel error with an impulse of the largest admissible input: relative L2 of the taps / "
             "of the step response, integer vs float):"]
    for name, row in table.items():
        errs = row.get("kernel_error", {})
        cells = ", ".join(f"{low} {100 * e['taps']:.3g} % / {100 * e['step']:.3g} %" for low, e in errs.items())
        lines.append(f"  {name:<18}{row['lowering']:<11}{row['reason']}" + (f"; kernel error {cells}" if cells else ""))
    lines += calibrated_lines(table)
    return lines


def calibrated_lines(table: dict) -> list:
    """With ``export --calibrate``: each layer's kernel error on the calibration samples, per lowering."""
    from .ssm_calibration import describe
    rows = {name: row for name, row in table.items() if "calibrated_error" in row}
    if not rows:
        return []
    lines = [f"  SSM kernel error {describe(next(iter(rows.values()))['calibration'])} (relative L2 of the layer's "
             "kernel applied to the inputs that reach it, integer vs float):"]
    for name, row in rows.items():
        errs = row["calibrated_error"]
        cells = ", ".join(f"{low} {100 * errs[low]:.3g} %" for low in ("recurrent", "conv") if low in errs)
        lines.append(f"  {name:<18}{cells}")
    return lines


def cmd_inspect(args) -> int:
    from .artifact import load_program

    from .fileio import display

    program = load_program(args.artifact)
    if args.json:       # ASCII-escaped, and strict JSON: the loader refuses NaN and Infinity in a manifest
        print(json.dumps(program.report, indent=1, allow_nan=False))
    else:
        print(export_summary(program, args.artifact, RECORDED).replace("wrote ", "artifact ", 1))
        for r in program.report["ranges"]:
            print(display(f"    {r['node']:<18}{r['register']:<34}{r['worst']:>12} / {r['limit']:<10} "
                          f"headroom {r['headroom_bits']} bits"))
    return 0


# -------------------------------------------------------------------------------------- plan
def cmd_plan(args) -> int:
    from .artifact import load_program
    from .fileio import check_output_path, write_atomic
    from .plan_report import plan_dict, plan_text

    if args.json is not None:
        check_output_path(args.json, [args.artifact])
    program = load_program(args.artifact)
    plan = plan_dict(program, system=args.system)
    print(plan_text(plan, args.artifact))
    if args.json is not None:
        text = json.dumps(plan, indent=1).encode()
        write_atomic(args.json, lambda fh: fh.write(text), inputs=[args.artifact])
    return 0


# -------------------------------------------------------------------------------------- data
def _load_data(args, program, split: str):
    """(dataset, model values, raw integers) for ``--data``, checked against the program."""
    from .api import load_data

    return load_data(program, args.dataset, split, args.seq_len)


def _input_files(*paths) -> list:
    """The command's input files: a built-in dataset name (``digits``) names no file."""
    from .datasets import BUILTIN
    return [p for p in paths if p is not None and p not in BUILTIN]


# ------------------------------------------------------------------------------------ simulate
def cmd_simulate(args) -> int:
    import numpy as np

    from .artifact import load_program
    from .traces import TRACE_KINDS, plot_raster, save_traces, trace_names

    inputs = _input_files(args.artifact, args.dataset)
    from .fileio import check_output_path, same_file
    for out in (args.output, args.plot):
        if out is not None:
            check_output_path(out, inputs)
    if args.output is not None and args.plot is not None and same_file(args.output, args.plot):
        raise ValueError(f"-o {args.output} and --plot {args.plot} name the same file")
    if args.engine == "emulator" and "backend" in args.given:
        raise ValueError("--backend applies to --engine lava only (the emulator runs on this CPU or CUDA)")
    program = load_program(args.artifact)
    kinds = [k.strip() for k in args.record.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in TRACE_KINDS]
    if unknown:
        raise ValueError(f"--record: unknown trace kind(s) {', '.join(unknown)} (choose from {', '.join(TRACE_KINDS)})")
    data, _, raw = _load_data(args, program, args.split)
    if not args.index < len(data.y):
        raise ValueError(f"--index {args.index} out of range ({len(data.y)} samples in {args.dataset} {args.split})")
    idx = np.arange(args.index, min(args.index + args.count, len(data.y)))
    from .api import choose_engine          # chosen once the inputs are checked: a bad one stays one line
    args.engine, why = choose_engine(program, args.engine, "--record voltage" if "voltage" in kinds else "")
    if why:
        if args.engine == "emulator" and "backend" in args.given:
            raise ValueError(f"--backend applies to Lava runs only; --engine auto chose the emulator ({why})")
        print(f"neurocompile: --engine auto: {args.engine} ({why})", file=sys.stderr)
    if args.engine == "lava":
        if "voltage" in kinds:
            raise ValueError("--record voltage: the stock Lava LIF keeps v internal; use --engine emulator for membrane traces")
        from .api import lava_runner
        run_lava = lava_runner(program, "simulate --engine lava", "--engine emulator runs the same integers without it")
        traces = run_lava(program, raw[idx], mode="fixed_pt", backend=args.backend, record=True, timeout_s=args.timeout,
                          progress=_progress("Lava", len(idx)) if len(idx) > 1 else None, seed=args.seed)
    else:
        from .emulator import emulate
        traces = emulate(program, raw[idx], record=True, seed=args.seed)
    preds = traces["logits"].argmax(1)
    for j, i in enumerate(idx):
        rates = ", ".join(f"{name} {traces[name][j].mean():.3f}" for name in program.spike_nodes)
        print(f"sample {i}: label {int(data.y[i])}, predicted {int(preds[j])}, firing rates [{rates}]")
    from .activity import activity_and_energy, energy_text
    print(energy_text(activity_and_energy(program, traces, raw[idx])))
    if args.output:
        save_traces(args.output, traces, trace_names(program, kinds),
                    {"engine": args.engine, "indices": idx, "labels": data.y[idx]}, inputs)
        print(f"wrote {args.output} ({', '.join(kinds)} of every node; arrays named by node, shaped (samples, channels, time))")
    if args.plot:
        plot_raster(args.plot, program, traces, 0, f"{args.dataset} #{idx[0]} (label {int(data.y[idx[0]])}) on {args.engine}",
                    inputs, label=int(data.y[idx[0]]), raw=raw[idx[0]])
        print(f"wrote {args.plot}")
    return 0


# ------------------------------------------------------------------------------------ validate
def cmd_validate(args) -> int:
    from .api import run_validation
    from .fileio import check_output_path, same_file, write_atomic
    from .validate import format_report, format_stochastic_report

    inputs = _input_files(args.checkpoint, args.artifact, args.dataset)
    outputs = [o for o in (args.json, args.html) if o is not None]
    for out in outputs:
        check_output_path(out, inputs)
    if len(outputs) == 2 and same_file(args.json, args.html):
        raise ValueError("--json and --html name the same file")
    given = lambda name: getattr(args, name) if name in args.given else None      # noqa: E731
    run = run_validation(args.checkpoint, args.artifact, args.dataset, split=args.split,
                         lava_samples=args.lava_samples, max_samples=args.max_samples, batch_size=args.batch_size,
                         device=args.device, emulator=args.emulator, mc_passes=given("mc_passes"), seed=given("seed"),
                         mc_rng=args.mc_rng, lava_timeout_s=args.timeout, activity_samples=args.activity_samples,
                         workers=args.workers, ray=args.ray, ray_address=args.ray_address, work_dir=args.work_dir,
                         ray_connect_timeout_s=args.ray_connect_timeout,
                         lava_shard_samples=args.lava_shard_samples, retries=args.retries, progress=_progress,
                         command=args.argv, notice=lambda line: print(f"neurocompile: {line}", file=sys.stderr),
                         max_drop=args.max_drop, seq_len=args.seq_len)
    report = run.report
    print((format_stochastic_report if "mc_passes" in report else format_report)(report))
    if args.activity_samples:
        from .activity import energy_text
        print(energy_text(report))
    if args.json is not None:
        text = json.dumps(report, indent=1, default=float).encode()
        write_atomic(args.json, lambda fh: fh.write(text), inputs)
        print(f"wrote {args.json}")
    if args.html is not None:
        from .report_html import render_report
        page = render_report(report, run.program, run.raster).encode()
        write_atomic(args.html, lambda fh: fh.write(page), inputs)
        print(f"wrote {args.html}")
    from .verdict import chance_hint, gate_line
    if report["float_near_chance"]:
        print(f"neurocompile: hint: {chance_hint(report['accuracy']['float'], run.program.n_classes)}", file=sys.stderr)
    if "accuracy_gate" in report:
        print(gate_line(report))
    if report.get("lava_samples") and not report["lava_bit_exact"]:
        return 1
    if "accuracy_gate" in report and not report["accuracy_gate"]["passed"]:
        print(f"neurocompile: {gate_line(report)}", file=sys.stderr)
        return 1
    return 0


def _lava_count(text):
    return text if text in ("all", "auto") else bounded(int, 0, MAX_LAVA_SAMPLES)(text)


def cmd_train(argv) -> int:
    from .models.train import main as train_main

    return train_main(argv) or 0


# ------------------------------------------------------------------------------------ finetune
# export's options that finetune shares (the same argparse actions: one definition, one default)
FINETUNE_EXPORT_OPTIONS = ("target", "kernel_bits", "weight_bits", "act_bits", "ssm_lowering", "decay_bits",
                           "prob_bits", "input_range", "input_levels", "seq_len")


def cmd_finetune(args) -> int:
    from .finetuning import finetune, format_report, split_options
    from .target import get_target

    report = finetune(args.checkpoint, args.out, args.dataset, *split_options(dict(vars(args))),
                      get_target(args.target), resume=args.resume, input_range=args.input_range,
                      input_levels=args.input_levels, seq_len=args.seq_len, device=args.device,
                      show=not args.no_progress, command=args.argv)
    print(format_report(report))
    return 0


# ----------------------------------------------------------------------------------------- main
class Parser(argparse.ArgumentParser):
    """Usage errors as one line too (the subcommand parsers are of this class).  No abbreviations (a
    mistyped ``--engin`` is refused, not read as ``--engine``); an unknown option is said by the
    subcommand's parser, with the closest option it has."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            chosen = self
            for action in self._actions:                 # the subcommand's parser says it (and names its --help)
                if isinstance(action, argparse._SubParsersAction) and getattr(parsed, action.dest, None):
                    chosen = action.choices.get(getattr(parsed, action.dest), self)
            chosen.error(f"unrecognized arguments: {' '.join(extras)}{chosen.closest(extras)}")
        return parsed

    def closest(self, extras) -> str:
        """' (did you mean --x?)' for the first unknown option close to one of this parser's, else ''."""
        import difflib
        known = [s for action in self._actions for s in action.option_strings]
        for extra in extras:
            if extra.startswith("-"):
                match = difflib.get_close_matches(extra.split("=", 1)[0], known, n=1, cutoff=0.6)
                if match:
                    return f" (did you mean {match[0]}?)"
        return ""

    def error(self, message):
        from .fileio import display
        self.exit(EXIT_USER_ERROR, f"neurocompile: error: {display(message)} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from .target import TARGET_NAMES

    from . import __version__

    p = Parser(prog="neurocompile", description="Compile trained spiking SSM checkpoints to Loihi 2 "
                                "(Lava), simulate them, and validate accuracy parity.", formatter_class=HelpFormatter)
    p.add_argument("--version", action="version", version=f"neurocompile {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_SubParser)

    sub.add_parser("train", help="train a SpikingSSM or P-SpikeSSM on a built-in dataset (see `neurocompile train --help`)",
                   add_help=False)

    e = sub.add_parser("export", help="compile a checkpoint to a .loihi2 artifact")
    e.add_argument("checkpoint", help="a checkpoint written by `neurocompile train`, or the authors' Lightning .ckpt")
    e.add_argument("--target", default="loihi2", help=f"compilation target ({', '.join(TARGET_NAMES)})")
    e.add_argument("-o", "--output", help="artifact path (default: the checkpoint's path with .loihi2 for its "
                   "extension; refused if that file is another checkpoint's artifact)")
    e.add_argument("--kernel-bits", type=bounded(int, 2, 8), default=8,
                   help="SSM kernel mantissa bits incl. sign, per-channel exponent (2..8, default 8)")
    e.add_argument("--weight-bits", type=bounded(int, 2, 8), default=8,
                   help="mixer/decoder mantissa bits incl. sign, per-row exponent (2..8, default 8)")
    e.add_argument("--act-bits", type=bounded(int, 2, 24), default=None,
                   help="residual-stream width in bits (2..24); default: the widest (<= 16) that the range analysis proves safe. "
                        "An explicit width that would overflow a 24-bit register is an error")
    e.add_argument("--ssm-lowering", default="conv", choices=["conv", "recurrent", "auto"],
                   help="causal diagonal SSM layers: conv (accumulate-only convolution), recurrent "
                        "(integer diagonal recurrence, state independent of L) or auto (per layer, from the target's "
                        "placement plan of each); two-sided and DPLR layers stay conv (default conv)")
    e.add_argument("--decay-bits", type=bounded(int, 8, 24), default=18,
                   help="recurrent SSM: decay mantissa bits incl. sign, one exponent per layer (8..24, default 18)")
    e.add_argument("--prob-bits", type=bounded(int, 1, 22), default=16,
                   help="stochastic spikes (P-SpikeSSM): bits of the firing probability and the uniform (1..22, default 16)")
    e.add_argument("--input-range", type=_input_range, default=None, metavar="LOW,HIGH",
                   help="values the model was trained on for raw level 0 and the top level (default 0,1)")
    e.add_argument("--input-levels", type=bounded(int, 1, MAX_INPUT_LEVELS), default=None, metavar="N",
                   help=f"raw input levels 0..N, N in 1..{MAX_INPUT_LEVELS} (default: the checkpoint's own, else 255: 8-bit pixels)")
    e.add_argument("--seq-len", type=bounded(int, 1, MAX_SEQ_LEN), default=None, metavar="L",
                   help="sequence length, for a checkpoint that stores none (the authors' s4 trainer drops it); "
                        "must match the stored one otherwise (1..131072)")

    e.add_argument("--calibrate", default=None, metavar="DATA",
                   help="also measure each SSM layer's kernel error, both lowerings, on the inputs that reach it "
                        "when DATA's first test samples run through the program (DATA as validate --data takes it); "
                        "--ssm-lowering auto then decides on it (default: the error for an impulse only)")
    e.add_argument("--calibrate-samples", type=bounded(int, 1, MAX_SAMPLES), default=None, metavar="N",
                   help="how many test samples --calibrate reads (default 64)")

    i = sub.add_parser("inspect", help="print an artifact's summary, register ranges and operations")
    i.add_argument("artifact", help="a .loihi2 file written by `neurocompile export`")
    i.add_argument("--json", action="store_true", help="print the full compile report as JSON")

    data_help = ("digits, fashion-mnist, listops, or an .npz with x (n, L[, C]) and y: x as raw integer levels "
                 "(or token ids) or as floats in the artifact's input range")
    from .listops import SMALL_SEQ_LENS
    seq_len_arg = (("--seq-len",), dict(type=bounded(int, *SMALL_SEQ_LENS), default=None, metavar="L",
                   help=f"the built-in listops data's sequence length ({SMALL_SEQ_LENS[0]}..{SMALL_SEQ_LENS[1]}, "
                        "default 128): generate it at the model's L, e.g. 64 for the authors' ListOps-layout "
                        "checkpoints"))
    s = sub.add_parser("simulate", help="run samples through the compiled network and record per-node traces")
    s.add_argument("artifact", help="a .loihi2 file written by `neurocompile export`")
    s.add_argument("--data", "--dataset", dest="dataset", required=True, help=data_help)
    s.add_argument(*seq_len_arg[0], **seq_len_arg[1])
    s.add_argument("--split", default="test", choices=["train", "test"], help="dataset split")
    s.add_argument("--index", type=bounded(int, 0, MAX_SAMPLES), default=0,
                   help=f"first sample index (0..{MAX_SAMPLES}, default 0)")
    s.add_argument("--count", type=bounded(int, 1, MAX_SAMPLES), default=1,
                   help=f"number of consecutive samples (1..{MAX_SAMPLES}, default 1)")
    s.add_argument("--engine", default="auto", choices=["auto", "lava", "emulator"],
                   help="auto: Lava where it runs here, else the emulator (one line on stderr says which and why); "
                        "lava: Loihi2SimCfg fixed_pt processes; emulator: the batched integer emulator (no Lava needed)")
    s.add_argument("--backend", default="sim", choices=["sim", "hw"], help="Lava back end: sim (CPU) or hw (needs lava-loihi)")
    s.add_argument("--record", default="spikes,ssm,stream",
                   help="comma list of trace kinds to save: spikes, ssm (LIF input), stream (residual), dense, "
                        "voltage (emulator only)")
    s.add_argument("-o", "--output", help="write traces to this .npz")
    s.add_argument("--plot", help="write a raster plot of the first sample to this .png")
    s.add_argument("--timeout", type=bounded(float, 1e-3, MAX_TIMEOUT_S), default=900,
                   help=f"seconds before a Lava run is stopped (0.001..{MAX_TIMEOUT_S}, default 900)")
    s.add_argument("--seed", type=bounded(int, 0, MAX_SEED), default=0,
                   help=f"stochastic spikes (P-SpikeSSM): the PRNG seed (0..2**63-1); Lava and the emulator give the "
                        "same spikes for it")

    v = sub.add_parser("validate", help="float vs integer (whole split) vs Lava (first N samples) parity report")
    v.add_argument("checkpoint", help="the checkpoint the artifact was exported from")
    v.add_argument("artifact", help="a .loihi2 file written by `neurocompile export`")
    v.add_argument("--data", "--dataset", dest="dataset", required=True, help=data_help)
    v.add_argument(*seq_len_arg[0], **seq_len_arg[1])
    v.add_argument("--split", default="test", choices=["train", "test"], help="dataset split")
    v.add_argument("--lava-samples", type=_lava_count, default="auto", metavar="N|all|auto",
                   help=f"samples also run on Lava and compared bit for bit (0..{MAX_LAVA_SAMPLES}; 0 skips; "
                        "all: the whole split; default auto: 16 where Lava runs here, 0 without, said in one line on stderr)")
    v.add_argument("--max-samples", type=bounded(int, 0, MAX_SAMPLES), default=0,
                   help=f"limit the float/integer comparison to the first N samples (0..{MAX_SAMPLES}; 0: all)")
    v.add_argument("--batch-size", type=bounded(int, 1, MAX_BATCH), default=128,
                   help=f"samples per float / emulator batch (1..{MAX_BATCH}, default 128)")
    v.add_argument("--device", default=None, help="torch device for float and emulator runs (default: cuda if present)")
    v.add_argument("--emulator", default=None, choices=["compiled", "torch"],
                   help="integer emulator back end: compiled (numba, CPU; the default there) or torch (the default on CUDA)")
    v.add_argument("--json", help="write the report as JSON here")
    v.add_argument("--timeout", type=bounded(float, 1e-3, MAX_TIMEOUT_S), default=1800,
                   help=f"seconds before the Lava run is stopped (0.001..{MAX_TIMEOUT_S}, default 1800)")
    v.add_argument("--mc-passes", type=bounded(int, 1, MAX_MC_PASSES), default=8,
                   help=f"stochastic spikes (P-SpikeSSM): Monte-Carlo passes per side (1..{MAX_MC_PASSES}, default 8)")
    v.add_argument("--seed", type=bounded(int, 0, MAX_SEED), default=0,
                   help="stochastic spikes: first seed (0..2**63-1; pass k uses seed + k; Lava runs seed)")
    v.add_argument("--mc-rng", default="batch", choices=["batch", "authors"],
                   help="stochastic spikes, float side: batch (torch seeded per pass and batch) or authors "
                        "(pass k = torch.manual_seed(seed + k) over the whole split as one batch, as the authors' code)")
    v.add_argument("--workers", type=bounded(int, 1, MAX_WORKERS), default=None, metavar="K",
                   help=f"run Lava, float and emulator shards in K worker processes, 1..{MAX_WORKERS} (with --ray: the "
                        "local cluster's CPUs)")
    v.add_argument("--ray", action="store_true", help="run shards on a local Ray cluster (optional extra: neurocompile[ray])")
    v.add_argument("--ray-address", default=None, metavar="ADDR", help="run shards on the existing Ray cluster at ADDR")
    v.add_argument("--ray-connect-timeout", type=bounded(float, 0.1, MAX_TIMEOUT_S), default=30, metavar="SECONDS",
                   help=f"seconds to wait for the Ray cluster of --ray-address or RAY_ADDRESS to answer "
                        f"(0.1..{MAX_TIMEOUT_S}, default 30)")
    v.add_argument("--work-dir", default=None, metavar="DIR",
                   help="keep finished shards here; a run stopped by Ctrl-C, a kill or a lost node resumes from them")
    v.add_argument("--lava-shard-samples", type=bounded(int, 1, MAX_LAVA_SAMPLES), default=16, metavar="N",
                   help=f"samples per Lava shard (1..{MAX_LAVA_SAMPLES}, default 16)")
    v.add_argument("--retries", type=bounded(int, 0, 100), default=2,
                   help="tries after the first for a failed shard (0..100, default 2)")
    v.add_argument("--html", default=None, metavar="FILE", help="write a self-contained HTML report here")
    v.add_argument("--activity-samples", type=bounded(int, 0, MAX_SAMPLES), default=256,
                   help=f"samples whose integer run is counted for activity and the energy estimate (0..{MAX_SAMPLES}, "
                        "default 256; 0 skips)")
    v.add_argument("--max-drop", type=bounded(float, 0, 100), default=None, metavar="POINTS",
                   help="exit 1 (one line) when integer accuracy falls more than POINTS percentage points below float, "
                        "so the command can gate a CI; Monte-Carlo (P-SpikeSSM): judged on the 95 %% interval of the "
                        "difference of the per-pass means, failing only when its low end exceeds POINTS; the report "
                        "records the gate (default: no gate)")
    pl = sub.add_parser("plan", help="placement on Loihi 2: processes, cores, chips, latency, worst-case operations "
                                     "(estimates)")
    pl.add_argument("artifact")
    pl.add_argument("--json", help="write the plan as JSON here")
    pl.add_argument("--system", default=None, choices=["oheo-gulch", "kapoho-point", "hala-point"],
                    help="the system to place on (default: the smallest that holds the plan)")

    f = sub.add_parser("finetune", help="quantisation-aware fine-tuning: train the float model through the integers "
                                        "`export` writes for the same options, write DIR/ckpt.pt")
    f.add_argument("checkpoint", help="a checkpoint written by `neurocompile train`, or the authors' Lightning .ckpt")
    f.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: DIR/ckpt.pt (every epoch) and DIR/finetune-state.pt (for --resume)")
    f.add_argument("--data", "--dataset", dest="dataset", default=None,
                   help="training and test data: digits, fashion-mnist, listops or an .npz (default: the dataset the "
                        "checkpoint records)")
    f.add_argument("--epochs", type=bounded(int, 1, 100_000), default=1, help="fine-tuning epochs (1..100000)")
    f.add_argument("--max-train", type=bounded(int, 0, MAX_SAMPLES), default=0, metavar="N",
                   help="train on the first N training samples only (0: all but the held-out ones)")
    f.add_argument("--max-test", type=bounded(int, 0, MAX_SAMPLES), default=0, metavar="N",
                   help="accuracies before and after on the first N test samples only (0: all)")
    f.add_argument("--distill", type=bounded(float, 0.0, 1.0), default=0.0, metavar="A",
                   help="train towards (1 - A) x the labels + A x the starting float model's answers (its softmax), "
                        "0..1 (default 0.0: the labels alone; 1: the float model's answers alone)")
    f.add_argument("--holdout", type=bounded(int, 0, MAX_SAMPLES), default=None, metavar="N",
                   help="hold out the last N training samples and write the epoch (or the starting weights) whose "
                        "integer program is most accurate on them (default: 10 %% of the training split, at most "
                        "1000; 0: write the last epoch)")
    f.add_argument("--lr", type=bounded(float, 0.0, 10.0), default=3e-3,
                   help="AdamW learning rate, 0..10 (SSM A/dt: min(lr, 0.001)), under a cosine schedule")
    f.add_argument("--batch-size", type=bounded(int, 1, MAX_BATCH), default=64, help=f"batch size (1..{MAX_BATCH})")
    f.add_argument("--seed", type=bounded(int, 0, 2 ** 32 - 1), default=0, help="seed of the batch order (0..2**32-1)")
    f.add_argument("--neuron", choices=["sdn", "lif"], default="sdn",
                   help="SpikingSSM: the neuron trained through: sdn (fast surrogate) or lif (the exact LIF the chip "
                        "runs); P-SpikeSSM samples its spikes, as in training")
    f.add_argument("--resume", action="store_true", help="continue the run saved in DIR/finetune-state.pt "
                   "(same options; ends on the weights of an uninterrupted run)")
    f.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    f.add_argument("--no-progress", action="store_true", help="no progress bars")
    for action in e._actions:                    # export's own options, shared, not copied
        if action.dest in FINETUNE_EXPORT_OPTIONS:
            f._add_action(action)
    return p


def main(argv=None) -> int:
    """The ``neurocompile`` command; returns the exit status."""
    try:
        from .fileio import WRITTEN
        del WRITTEN[:]          # this command's outputs only (an early Ctrl-C removes what it finished)
        return _past_ray(_main(argv))
    except KeyboardInterrupt:   # Ctrl-C before _guard's handlers hold (its own catch covers the rest)
        try:
            print(_ended_early("interrupted"), file=sys.stderr)
        except (OSError, ValueError):
            pass
        return 130


def _past_ray(rc: int) -> int:
    """A Ray join that timed out leaves Ray's thread inside its C++ client, which aborts (SIGABRT) when the
    interpreter finalizes: the process ends here with the status of the one line already printed."""
    execute = sys.modules.get("neurocompile.execute")
    if execute is not None and execute.RayExecutor.left_hanging:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(rc)
    return rc


def _main(argv) -> int:
    # before anything imports numpy / torch (oneMKL aborts the process from a deleted working directory)
    try:
        os.getcwd()
    except OSError as exc:
        print(f"neurocompile: error: the current folder is gone ({exc.strerror}); cd to an existing folder",
              file=sys.stderr)
        return EXIT_USER_ERROR
    for stream in (sys.stdout, sys.stderr):      # a name the locale cannot encode is escaped, never an error
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):
            pass
    argv = list(sys.argv[1:] if argv is None else argv)

    def run():                  # inside _guard: the signal handlers hold from here on
        if argv and argv[0] == "train":
            return cmd_train(argv[1:])
        args = build_parser().parse_args(_join_negative_values(argv))
        args.given = given_options(build_parser, _join_negative_values(argv))
        args.argv = argv                          # the command line, for report provenance
        handler = {"export": cmd_export, "inspect": cmd_inspect, "simulate": cmd_simulate, "validate": cmd_validate,
                   "plan": cmd_plan, "finetune": cmd_finetune}
        return handler[args.command](args)
    return _guard(run)


class _SubParser(Parser):
    """Every sub-command's --help states its defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


class Terminated(BaseException):
    """SIGTERM (``kill``, ``timeout``), SIGHUP (the terminal closed), SIGQUIT, SIGUSR1/2 raised as an
    exception, so that clean-ups run as for Ctrl-C: a Lava run's process group is killed and its shared
    memory unlinked, temp files removed.  (SIGKILL cannot be caught: the next run clears what it left.)"""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


TERMINATING_SIGNALS = ("SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


def _raise_terminated(signum, frame):
    _raise_or_hold(Terminated(signum))


def _raise_interrupted(signum, frame):
    _raise_or_hold(KeyboardInterrupt())


def _raise_or_hold(exc: BaseException):
    """Raise now, or, while an output is being published (fileio.Publishing), once it is."""
    from .fileio import Publishing
    if Publishing.active:
        Publishing.pending = Publishing.pending or exc
        return
    raise exc


def _ended_early(what: str) -> str:
    """The line for a command that did not finish: its completed outputs are removed first."""
    from .fileio import discard_written, display
    gone = discard_written()
    return f"neurocompile: {what}" + (f" ({display(', '.join(gone))} removed: the command did not finish)"
                                       if gone else "")


def _error(msg: str) -> int:
    from .fileio import display
    try:
        print(f"neurocompile: error: {display(msg)}", file=sys.stderr)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    return EXIT_USER_ERROR


def _guard(fn) -> int:
    """User errors become one line on stderr and exit code 2; bugs keep their traceback.  Library
    warnings (numpy overflow in a refused computation, deprecations) would add lines: every check
    that matters raises instead, so they are silenced.

    The exit status says whether the outputs exist: 0 when every output was written (a summary that
    cannot reach stdout, e.g. /dev/full, is then a warning on stderr); otherwise nothing was written."""
    import signal
    import threading
    import warnings

    from .errors import NeurocompileError
    from .fileio import WRITTEN, display

    warnings.simplefilter("ignore")
    on_main = threading.current_thread() is threading.main_thread()    # only there can handlers be set
    previous = {}
    del WRITTEN[:]
    stdout = sys.stdout = _Stdout(sys.stdout)
    try:
        if on_main:                              # inside the try: a signal while they are set is handled too
            for name in TERMINATING_SIGNALS:
                signum = getattr(signal, name, None)
                if signum is not None:
                    previous[signum] = signal.signal(signum, _raise_terminated)
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                previous[signal.SIGINT] = signal.signal(signal.SIGINT, _raise_interrupted)
        rc = fn()
        stdout.flush()
        if stdout.error is not None:             # stdout on a full disk or /dev/full
            reason = stdout.error.strerror or str(stdout.error)
            if rc == 0 and WRITTEN:
                try:
                    print(f"neurocompile: warning: the summary could not be written to stdout ({reason}); "
                          f"{display(', '.join(WRITTEN))} written", file=sys.stderr)
                except (OSError, ValueError):
                    pass
                return 0
            return _error(f"stdout: {reason}")
        return rc
    except Terminated as exc:                    # exit status 128 + the signal, as the shell reports it
        _close_bars()
        try:
            print(_ended_early("terminated"), file=sys.stderr)
        except (OSError, ValueError):
            pass
        return 128 + exc.signum
    except BrokenPipeError:                      # `neurocompile inspect ... | head`
        _close_bars()
        _silence_stdout()
        return 0
    except (NeurocompileError, ValueError, OSError, MemoryError, ImportError) as exc:
        msg = str(exc) if str(exc) else type(exc).__name__
        if isinstance(exc, OSError):
            if exc.filename is not None and str(exc.filename) not in msg:
                msg = f"{exc.filename}: {exc.strerror or msg}"
            elif exc.filename is None and exc.errno and not exc.strerror:
                msg = os.strerror(exc.errno)
        elif isinstance(exc, MemoryError):
            msg = "out of memory (the input is larger than this machine can hold)"
        elif isinstance(exc, ImportError):       # `ulimit -v` too low for torch / numba, or a broken install
            msg = f"cannot load {exc.name or 'a dependency'} ({msg}); too little memory (ulimit -v)? a broken install?"
        _close_bars()
        from .fileio import discard_written
        gone = discard_written()                 # exit 2 means no output: one written before the error goes
        return _error(msg + (f" ({', '.join(gone)} removed: the command did not finish)" if gone else ""))
    except KeyboardInterrupt:
        _close_bars()
        print(_ended_early("interrupted"), file=sys.stderr)
        return 130
    finally:
        if sys.stdout is stdout:
            sys.stdout = stdout.stream
            if stdout.error is not None:
                _silence_stdout()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _Stdout:
    """sys.stdout during a command: a write error other than a closed pipe (a full disk, /dev/full)
    is recorded, not raised, so the command completes its outputs; _guard then reports it."""

    def __init__(self, stream):
        self.stream, self.error = stream, None

    def write(self, text):
        if self.error is None:
            try:
                return self.stream.write(text)
            except BrokenPipeError:
                raise
            except OSError as exc:
                self.error = exc
        return len(text)

    def flush(self):
        if self.error is None:
            try:
                self.stream.flush()
            except BrokenPipeError:
                raise
            except OSError as exc:
                self.error = exc

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null, so the interpreter's final flush of what is still buffered cannot
    fail again (a traceback after the one line)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())

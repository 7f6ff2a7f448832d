"""The compiler, top to bottom: checkpoint -> float graph -> passes -> integer Program."""
from __future__ import annotations

import hashlib
import os
import warnings
from typing import Callable

from . import passes
from .errors import RangeError, UnsupportedModelError
from .frontend import frontend_for
from .input_format import InputFormat
from .ir import Graph, IntNode
from .operations import operation_summary
from .options import CompileOptions
from .program import Program, ProgramNode
from .target import Target, get_target


def _warn(text: str) -> None:
    warnings.warn(text, stacklevel=3)


def compile_graph(graph: Graph, options: CompileOptions = CompileOptions(), target: Target = None,
                  ssm_choices: dict = None, calibration=None) -> Graph:
    """``ssm_choices`` ({SSM node: (lowering, reason)}) overrides ``options.ssm_lowering`` per layer;
    with 'auto' and none given, ``ssm_lowering.compile_auto`` decides them from the target's plans.
    ``calibration`` (``ssm_calibration.Calibration``): also measure each SSM layer's kernel error on
    those samples (and 'auto' decides on it)."""
    target = target or get_target()
    if options.ssm_lowering == "auto" and ssm_choices is None:
        from .ssm_lowering import compile_auto
        return compile_auto(graph, options, target, compile_graph, to_program, calibration)
    if calibration is not None:
        from .ssm_calibration import measure
        compiled = compile_graph(graph, options, target, ssm_choices)
        compiled.meta["ssm_calibrated_error"] = measure(compiled, graph, options, target, calibration, compile_graph)
        compiled.meta["ssm_calibration"] = calibration.record()
        return compiled
    graph = passes.check_lowerable(graph)           # refuse, with the reason, what cannot run
    graph = passes.replace_sdn_with_lif(graph)      # the SDN was a training device: deploy exact LIF
    graph = passes.materialize_kernels(graph, ssm_choices or options.ssm_lowering)  # SSM -> kernel, or recurrence
    graph = passes.fold_channel_affines(graph)      # 1/exp(ln_vth) and prenorm BatchNorm into the SSM
    graph = passes.quantize(graph, options, target)  # integers; scales chosen so every register fits
    graph = passes.analyze_ranges(graph, target)    # the proof, recorded in the report
    graph = passes.align_time_steps(graph, target)  # when each node's output appears on the target
    return graph


def file_sha256(path: str) -> str:
    """Checksum recorded in the artifact, so `validate` can tell which checkpoint it came from."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_input_format(kind: str, config: dict, fmt: InputFormat | None) -> InputFormat:
    """The input format to compile with: the user's, checked against the encoder, or the default."""
    default = frontend_for(kind).default_format(config)
    if fmt is None:
        return default
    if fmt.kind != default.kind:
        raise UnsupportedModelError(f"the model's encoder reads {default.kind}, not {fmt.kind}")
    if fmt.kind == "tokens" and fmt.vocab != default.vocab:
        raise UnsupportedModelError(f"the model embeds {default.vocab} tokens, not {fmt.vocab}")
    return fmt


def assumed_input_format(meta: dict, fmt: InputFormat) -> str | None:
    """Why the input format had to be assumed, or None when the file states it: our checkpoints
    record their levels, the authors' files only through a dataset of known pixels (MNIST, CIFAR)."""
    if fmt.kind != "levels" or not isinstance(meta, dict) or meta.get("source") != "lightning":
        return None
    dataset = (meta.get("hyper_parameters") or {}).get("dataset") or {}
    name = dataset.get("_name_") if isinstance(dataset, dict) else None
    from .models.official import PIXEL_DATASETS
    if name in PIXEL_DATASETS:
        return None
    return (f"the file does not say how its inputs were scaled (dataset {name!r}): assumed {fmt.describe()}; "
            "state it with --input-range LOW,HIGH / --input-levels N")


def compile_checkpoint(path: str, options: CompileOptions = CompileOptions(), target: Target | None = None,
                       input_format: InputFormat | None = None, seq_len: int | None = None,
                       warn: Callable[[str], None] | None = None, calibration=None) -> Program:
    """Compile a checkpoint (ours or the authors' Lightning ``.ckpt``) into an integer ``Program``.

    ``options``: bit widths (``CompileOptions``); ``target``: the hardware facts (default Loihi 2);
    ``input_format``: how raw integer inputs map to model values (default: the checkpoint's own);
    ``seq_len``: the sequence length for a file that stores none; ``warn(text)`` receives what the
    compiler had to assume (default: ``warnings.warn``); ``calibration``: an ``ssm_calibration.Calibration``
    to measure the SSM layers' kernel error on (default: with an impulse only).  Raises a ``NeurocompileError`` subclass,
    with one line naming the file, for anything it refuses."""
    from .models.checkpoint import load_checkpoint, weights_sha256

    kind, config, state_dict, meta = load_checkpoint(path, seq_len=seq_len)
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    name = os.path.basename(path)
    try:
        fmt = checkpoint_input_format(kind, cfg, input_format)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(f"{path}: {exc}") from None
    assumption = assumed_input_format(meta, fmt) if input_format is None else None
    if assumption:
        (warn or _warn)(f"{path}: {assumption}")
    check_compile_size(cfg, path)
    try:
        graph = frontend_for(kind).import_graph(cfg, state_dict, fmt, source=path)
    except UnsupportedModelError as exc:          # the importer names the tensor; the file goes first
        raise UnsupportedModelError(exc.args[0] if str(exc).startswith(f"{path}: ") else f"{path}: {exc}") from None
    graph = compile_graph(graph, options, target, calibration=calibration)
    source = {"kind": kind, "checkpoint": name, "checkpoint_sha256": file_sha256(path),
              "weights_sha256": weights_sha256(state_dict),
              "detected": meta.get("detected", f"neurocompile {kind} checkpoint") if isinstance(meta, dict) else kind,
              "train_metrics": meta.get("metrics", {}) if isinstance(meta, dict) else {}}
    return to_program(graph, source, target)


MAX_SEQ_LEN = 2 ** 17            # beyond LRA's Path-X (16k); the quantizer walks every tap


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def check_compile_size(cfg: dict, path: str) -> None:
    """Refuse, before allocating, a model whose kernels would not fit in memory while compiling
    (each layer holds ~40 float64 copies of an H x 2L kernel at its peak)."""
    L, H, layers = int(cfg["l_max"]), int(cfg["d_model"]), int(cfg["n_layers"])
    if L > MAX_SEQ_LEN:
        raise UnsupportedModelError(f"{path}: l_max = {L} steps is beyond the {MAX_SEQ_LEN} this compiler handles")
    need = 40 * 8 * 2 * H * L * max(layers, 1)
    if need > physical_memory() // 2:
        raise UnsupportedModelError(f"{path}: compiling {layers} layers of {H} channels x {L} steps needs about "
                                    f"{need >> 30} GiB, more than half of this machine's memory")


MODEL_FIELDS = ("d_input", "d_output", "d_model", "n_layers", "d_state", "l_max", "encoder", "n_tokens",
                "bidirectional", "kernel", "prenorm", "norm", "learnable_vth", "shared_vth", "tau")


def to_program(graph: Graph, source: dict, target: Target = None) -> Program:
    """Freeze a compiled integer graph (every node an ``Int*``) into a Program."""
    target = target or get_target()
    topo = graph.topo()
    for name in topo:
        if not isinstance(graph.op(name), IntNode):
            raise ValueError(f"{name}: {type(graph.op(name)).__name__} is not an integer node (compile first)")
    cfg = graph.meta["config"]
    model = {"kind": graph.meta.get("kind", "spikingssm"), **{k: cfg[k] for k in MODEL_FIELDS if k in cfg},
             "input": graph.meta["input_format"]}
    L = int(cfg["l_max"])
    program = Program(
        nodes=tuple(ProgramNode(n, graph.op(n), graph.layer_of(n)) for n in topo),
        edges=tuple((src, dst, port) for dst in topo for port, src in sorted(graph.inputs(dst).items())),
        model=_plain(model), delays={n: int(d) for n, d in graph.meta["delays"].items()})
    report = {"source": source, "options": graph.meta["options"], "target": target.name,
              "stream_frac_bits": graph.meta["stream_frac_bits"], "ranges": graph.meta["ranges"],
              "latency_steps": program.latency, "operations": operation_summary(program, L),
              "quantization_error": graph.meta.get("quantization_error", {}),
              "ssm_lowering": ssm_lowering_report(graph.meta)}
    problems = target.check(program)
    if problems:
        raise RangeError(f"{graph.meta.get('source') or 'model'}: {problems[0]}")
    return Program(program.nodes, program.edges, program.model, program.delays, _plain(report))


def ssm_lowering_report(meta: dict) -> dict:
    """Per SSM layer: the lowering taken, why, and the kernel error of each lowering measured (with an
    impulse; and, with calibration data, on it: ``calibrated_error``, the data in ``calibration``)."""
    errors, calibrated = meta.get("ssm_kernel_error", {}), meta.get("ssm_calibrated_error")
    extra = lambda name: ({"calibrated_error": calibrated.get(name, {}), "calibration": meta["ssm_calibration"]}
                          if calibrated is not None else {})
    return {name: {**choice, "kernel_error": errors.get(name, {}), **extra(name)}
            for name, choice in meta.get("ssm_lowering", {}).items()}


def _plain(obj):
    """JSON-safe copy (numpy scalars and arrays -> Python)."""
    import numpy as np
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj

"""The Python API, exported from ``neurocompile``: what the command line does, as functions.

    import neurocompile as nc

    program = nc.compile_checkpoint("examples/digits/ckpt.pt")          # -> Program (integers, proven)
    nc.save_program(program, "digits.loihi2")
    program = nc.load_program("digits.loihi2")                           # verified again on load
    data, values, raw = nc.load_data(program, "digits")                  # raw integers the chip reads
    logits = nc.emulate(program, raw[:8])["logits"]                      # bit-exact integer emulator
    report = nc.validate_checkpoint("examples/digits/ckpt.pt", program, "digits")   # float vs integer
    placement = nc.plan(program)                                         # cores, chips, bytes per step

``compile_checkpoint``, ``load_program``, ``save_program`` and ``emulate`` are the compiler's own
functions (documented where they are defined); this module adds the steps the CLI strings together.
Every refusal is a ``NeurocompileError`` (``neurocompile.errors``) whose message names the file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .artifact import load_program, save_program
from .datasets import Dataset
from .emulator import emulate
from .errors import ArtifactError, NeurocompileError
from .pipeline import compile_checkpoint
from .program import Program

__all__ = ["compile_checkpoint", "load_program", "save_program", "emulate", "load_data", "validate_checkpoint", "plan",
           "train", "finetune"]

# progress(label, total) -> update(done) or None: how the CLI draws its bars
ProgressFactory = Callable[[str, int], Optional[Callable]]


def load_data(program: Program, dataset: str, split: str = "test",
              seq_len: int | None = None) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """A dataset for ``program``: ``digits``, ``fashion-mnist``, ``listops`` or an ``.npz`` path
    (``seq_len``: the built-in listops data's length, default 128).

    Returns (the dataset, the values the float model reads, the raw integers the chip reads: the
    artifact's input format applied), after checking the samples' shape and labels against it."""
    from .datasets import BUILTIN, check_labels, load_dataset
    from .errors import DatasetError
    from .input_format import InputFormat

    data = load_dataset(dataset, split, seq_len)
    L, C = program.seq_len, program.input_channels
    if data.x.ndim != 3 or data.x.shape[1:] != (L, C):
        fix = ""                                    # lengths differ: say how to make data of the model's length
        if data.x.ndim == 3 and data.x.shape[2] == C:
            fix = (f"; make listops data of that length with --data listops --seq-len {L} (seq_len={L})"
                   if dataset == "listops" else
                   f"; write the .npz with x of shape (n, {L}) or (n, {L}, {C})" if dataset not in BUILTIN else "")
        raise DatasetError(f"{dataset}: samples have shape {tuple(data.x.shape[1:])}, the model expects ({L}, {C}){fix}")
    check_labels(data, program.n_classes, dataset)
    values, raw = InputFormat.from_dict(program.model["input"]).prepare(data.x, dataset, data.levels)
    return data, values, raw


@dataclass
class Validation:
    """One validation run: the JSON-ready ``report``, the ``program`` it checked and the ``raster``
    (one sample's spikes float / integer / Lava, numpy arrays) the HTML report draws."""
    report: dict
    program: Program
    raster: dict | None


def validate_checkpoint(checkpoint: str, artifact: str | Program, dataset: str, **options) -> dict:
    """Accuracy parity of the float model (``checkpoint``) and its compiled integers (``artifact``,
    a path or a Program) on ``dataset``: the report ``neurocompile validate`` prints (a JSON-ready
    dict).  The options are ``run_validation``'s."""
    return run_validation(checkpoint, artifact, dataset, **options).report


def run_validation(checkpoint: str, artifact: str | Program, dataset: str, *, split: str = "test",
                   lava_samples: int | str = "auto", max_samples: int = 0, batch_size: int = 128,
                   device: str | None = None, emulator: str | None = None, mc_passes: int | None = None,
                   seed: int | None = None, mc_rng: str = "batch", lava_timeout_s: float = 1800,
                   activity_samples: int = 0, workers: int | None = None, ray: bool = False,
                   ray_address: str | None = None, work_dir: str | None = None, lava_shard_samples: int = 16,
                   retries: int = 2, ray_connect_timeout_s: float = 30, progress: ProgressFactory | None = None,
                   command: list | None = None, notice: Callable[[str], None] | None = None,
                   max_drop: float | None = None, seq_len: int | None = None) -> Validation:
    """What ``neurocompile validate`` runs (the command adds only its argument parsing and outputs).

    The integers run in the emulator on every sample (``max_samples``: the first N only); the first
    ``lava_samples`` (or ``"all"``; ``"auto"``, the default: 16 where Lava runs, 0 without) also run on Lava, in shards of ``lava_shard_samples``, and are
    compared bit for bit (needs the 'lava' extra).  Stochastic models (P-SpikeSSM) run ``mc_passes``
    Monte-Carlo passes per side from ``seed`` (defaults 8 and 0; ``mc_rng="authors"`` draws the float
    side as the authors' code does); both are refused for deterministic models.  ``workers`` local
    processes, or Ray (``ray`` for a local cluster, ``ray_address`` to join one), run the shards;
    ``work_dir`` keeps finished shards so that a stopped run resumes.  The artifact must have been
    compiled from this checkpoint's weights.  ``activity_samples`` > 0 adds the activity counted on
    the first samples' integer run and the energy estimate.  ``command``: the command line recorded
    in the report's provenance; ``notice(line)`` hears what ``"auto"`` chose and why (the report
    keeps it as ``lava_samples_auto``).  ``max_drop`` (points) adds ``accuracy_gate``: whether integer
    accuracy falls more than that below float (``neurocompile.verdict.accuracy_gate``); the report's
    ``float_near_chance`` says whether the float model is itself near chance.  ``seq_len``: the
    built-in listops data's length (default 128; the report's dataset records it)."""
    options = {k: v for k, v in locals().items()
               if k not in ("checkpoint", "artifact", "progress", "command", "notice", "max_drop", "seq_len")}
    from .emulator import check_device
    from .frontend import frontend_for
    from .models.checkpoint import build_model, load_checkpoint, weights_sha256
    from .pipeline import file_sha256
    from .arith import SEED_MAX
    from .validate import model_mismatch, provenance, run_key, validate, validate_stochastic

    device = check_device(device)
    program, where = (artifact, "the program") if isinstance(artifact, Program) else (load_program(artifact), artifact)
    try:
        kind, config, state_dict, _ = load_checkpoint(checkpoint, seq_len=program.seq_len)
    except NeurocompileError:
        _pairing_first(checkpoint, program, where)     # the wrong checkpoint is said before its other length
        raise
    stochastic = frontend_for(kind).stochastic
    if not stochastic:
        wrong = [name for name, value in (("mc-passes", mc_passes), ("seed", seed)) if value is not None]
        if wrong:
            raise ValueError(f"--{wrong[0]} applies to stochastic spikes (P-SpikeSSM) only; {checkpoint} is a {kind} "
                             "model with deterministic spikes")
        if mc_rng != "batch":
            raise ValueError("--mc-rng applies to models with sampled spikes (P-SpikeSSM)")
    mc_passes, seed = (8 if mc_passes is None else mc_passes), (seed or 0)
    if seed + mc_passes - 1 > SEED_MAX:
        raise ValueError(f"--seed {seed} with --mc-passes {mc_passes}: pass k uses seed + k, which must stay "
                         f"<= {SEED_MAX}")
    # pairing rests on what the loader verified: the digest of the weights the artifact was compiled from
    if program.model["kind"] != kind:
        raise ArtifactError(f"{where}: holds a {program.model['kind']} program, {checkpoint} a {kind} model")
    if not program.report.get("source"):
        raise ArtifactError(f"{where}: was compiled from a graph, not a checkpoint: it pairs with no checkpoint")
    if program.report["source"]["weights_sha256"] != weights_sha256(state_dict):
        raise _not_its_weights(where, checkpoint)
    digests = {"checkpoint_sha256": file_sha256(checkpoint),
               "artifact_sha256": None if isinstance(artifact, Program) else file_sha256(artifact)}
    model = build_model(config, state_dict, kind)
    data, values, raw = load_data(program, dataset, split, seq_len)
    mismatch = model_mismatch(model, program, values, device)
    if mismatch:
        raise ArtifactError(f"{where}: not compiled from {checkpoint}: {mismatch}")
    y = data.y
    if max_samples:
        values, raw, y = values[:max_samples], raw[:max_samples], y[:max_samples]
    auto_note = None
    if lava_samples == "auto":
        why = lava_here(program)                   # asked once: the count and the note both follow from it
        options["lava_samples"] = lava_samples = 0 if why else AUTO_LAVA_SAMPLES
        auto_note = f"--lava-samples auto: {lava_samples} ({why or 'Lava runs here'})"
        if notice is not None:
            notice(auto_note)
    lava_samples = len(y) if lava_samples == "all" else min(int(lava_samples), len(y))
    if lava_samples:                          # Lava missing: one line naming the extra, before the long runs
        lava_runner(program, f"Lava parity on {lava_samples} samples", "--lava-samples 0 (lava_samples=0) validates "
                    "float vs integer without it")
    key = run_key({**options, "mc_passes": mc_passes, "seed": seed}, digests, values, raw, y)
    scale = _scale(key, workers, ray, ray_address, work_dir, lava_shard_samples, lava_timeout_s, retries,
                   ray_connect_timeout_s)
    bar = progress or (lambda label, total: None)
    common = dict(lava_samples=lava_samples, batch_size=batch_size, device=device,
                  progress=bar("float+integer", len(y)), lava_timeout_s=lava_timeout_s,
                  lava_progress=bar("Lava", lava_samples) if lava_samples else None,
                  emulator_backend=emulator, scale=scale)
    try:
        if stochastic:
            report = validate_stochastic(model, program, values, raw, y, mc_passes=mc_passes, seed=seed,
                                         mc_rng=mc_rng, **common)
        else:
            report = validate(model, program, values, raw, y, **common)
    finally:
        if hasattr(scale.executor, "close"):
            scale.executor.close()
    if activity_samples:
        from .activity import measured
        report.update(measured(program, raw[:activity_samples], seed=seed))
    report["dataset"] = {"name": dataset, "split": split, **({"seq_len": seq_len} if seq_len else {})}
    from .verdict import accuracy_gate, near_chance
    report["float_near_chance"] = near_chance(report["accuracy"]["float"], program.n_classes)
    if max_drop is not None:
        report["accuracy_gate"] = accuracy_gate(report, max_drop)
    if auto_note:
        report["lava_samples_auto"] = auto_note
    report["checkpoint"] = os.path.basename(checkpoint)
    report["artifact"] = None if isinstance(artifact, Program) else os.path.basename(artifact)
    report["execution"] = scale.execution()
    report.setdefault("lava_shards_reused", 0)
    report["plan"] = _plan_or_why(program)
    report["provenance"] = provenance(key, {"checkpoint": checkpoint, "artifact": where, **options},
                                      ["neurocompile"] + list(command or ["(Python API) validate_checkpoint"]))
    raster = report.pop("raster", None)
    return Validation(report, program, raster)


def _not_its_weights(where: str, checkpoint: str) -> ArtifactError:
    return ArtifactError(f"{where}: was not compiled from the weights in {checkpoint} (their digests differ)")


def _pairing_first(checkpoint: str, program: Program, where: str) -> None:
    """The checkpoint read at its own stored length: the digest error when it is not the artifact's."""
    from .models.checkpoint import load_checkpoint, weights_sha256
    source = program.report.get("source") or {}
    try:
        _, _, state_dict, _ = load_checkpoint(checkpoint)
    except NeurocompileError:
        return
    if source.get("weights_sha256") and source["weights_sha256"] != weights_sha256(state_dict):
        raise _not_its_weights(where, checkpoint)


def _scale(key: dict, workers, ray, ray_address, work_dir, lava_shard_samples, lava_timeout_s, retries,
           ray_connect_timeout_s: float = 30):
    """The executor (local workers or Ray: joining bounded, its log in the work-dir), the shard store
    and the Lava shard size of a validate run."""
    from .execute import LocalExecutor, RayExecutor, ShardStore
    from .validate import Scale

    if ray and ray_address:
        raise ValueError("--ray starts a local cluster, --ray-address joins one: give one of them")
    executor = None
    if ray or ray_address:
        executor = RayExecutor(workers=workers, address=ray_address, timeout_s=lava_timeout_s, retries=retries,
                               connect_timeout_s=ray_connect_timeout_s, log_dir=work_dir)
    elif workers:
        executor = LocalExecutor(workers, lava_timeout_s, retries,
                                 scratch=os.path.join(work_dir, "scratch") if work_dir else None)
    store = None
    if work_dir:
        store = ShardStore(work_dir, key)               # creates the work-dir (its parent must exist)
    return Scale(executor=executor, store=store, lava_shard_samples=lava_shard_samples, lava_timeout_s=lava_timeout_s,
                 lava_retries=retries)


def _plan_or_why(program) -> dict:
    """The target's plan of the program for the reports, or why there is none."""
    from .errors import NeurocompileError
    from .plan_report import plan_dict
    try:
        return plan_dict(program)
    except (NeurocompileError, ValueError) as exc:
        return {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}


def plan(artifact: str | Program, system: str | None = None) -> dict:
    """Where each process of the compiled network goes on its target (Loihi 2 cores and chips, or
    the host, with the reason), the resources per core and step: what ``neurocompile plan`` prints,
    as a JSON-ready dict.  ``system``: the Loihi 2 system to fit (default: the smallest that fits);
    a network that does not fit raises ``PlacementError`` naming the resource."""
    from .plan_report import plan_dict

    return plan_dict(artifact if isinstance(artifact, Program) else load_program(artifact), system=system)


AUTO_LAVA_SAMPLES = 16         # validate's Lava parity where Lava runs (~1 s a sample on Lava's CPU simulator)


def lava_here(program: Program) -> str | None:
    """Why the program's target cannot run Lava in this install (one phrase), or None when it can."""
    from .target import get_target
    return get_target(program.report.get("target", "loihi2")).runner_unavailable()


def choose_engine(program: Program, engine: str = "auto", needs_emulator: str = "") -> tuple[str, str | None]:
    """The engine a simulate run uses ("lava" or "emulator") and, for ``engine="auto"``, why it was
    chosen: Lava where it runs, else the emulator; ``needs_emulator`` names an option only the
    emulator serves (it then wins)."""
    if engine != "auto":
        return engine, None
    if needs_emulator:
        return "emulator", f"{needs_emulator} needs the emulator"
    why = lava_here(program)
    return ("emulator", why) if why else ("lava", "Lava runs here")


def lava_runner(program: Program, what: str, hint: str = "") -> Callable:
    """The program's target's Lava runner (``run_lava``), imported now; when Lava is missing, a
    ``LavaRunError`` saying ``<what>: Lava runs need the 'lava' extra ...; <hint>``."""
    from .errors import LavaRunError
    from .target import get_target

    try:
        return get_target(program.report.get("target", "loihi2")).load("runner")
    except LavaRunError as exc:
        raise LavaRunError(f"{what}: {exc}{'; ' + hint if hint else ''}") from None


def train(dataset: str, out: str, **options) -> str:
    """Train a model as ``neurocompile train`` does and return the checkpoint's path (``out/ckpt.pt``).

    ``options`` are the command's options with underscores: ``model="pspikessm"``, ``epochs=1``,
    ``d_model=32``, ``max_train=256``, ``prenorm=True`` (a flag), ``resume=True``, ...  The training
    state is saved to ``out/train-state.pt`` after every epoch.  Invalid options raise ``ValueError``."""
    from .models.train import main as train_main

    argv = ["--dataset", dataset, "--out", out]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not False and value is not None:
            argv += [flag, str(value)]
    try:
        code = train_main(argv)
    except SystemExit as exc:                 # argparse refused an option (its message is on stderr)
        raise ValueError(f"train: invalid options {argv} (exit {exc.code})") from None
    if code:
        raise RuntimeError(f"train exited with {code}")
    return os.path.join(out, "ckpt.pt")


def finetune(checkpoint: str, out: str, dataset: str | None = None, **options) -> dict:
    """Quantisation-aware fine-tuning, as ``neurocompile finetune`` runs it: ``checkpoint`` trained
    through the integers ``export`` writes for the same options, written to ``out/ckpt.pt``; returns
    the report (``report["metrics"]``: float and integer accuracy before and after).

    ``options``: ``CompileOptions`` fields (``kernel_bits=4``, ``weight_bits=4``, ...), ``FinetuneOptions``
    fields (``epochs``, ``max_train``, ``max_test``, ``lr``, ``batch_size``, ``seed``, ``neuron``, ...),
    ``target`` (a name) and ``resume``, ``input_range``, ``input_levels``, ``seq_len``, ``device``."""
    from .finetuning import finetune as run, split_options
    from .target import get_target

    finetune_options, compile_options = split_options(options)
    target = get_target(options.pop("target", None) or "loihi2")
    return run(checkpoint, out, dataset, finetune_options, compile_options, target, **options)

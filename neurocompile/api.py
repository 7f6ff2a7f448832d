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
from typing import Callable, Optional

import numpy as np

from .artifact import load_program, save_program
from .datasets import Dataset
from .emulator import emulate
from .errors import ArtifactError
from .pipeline import compile_checkpoint
from .program import Program

__all__ = ["compile_checkpoint", "load_program", "save_program", "emulate", "load_data", "validate_checkpoint", "plan",
           "train"]

# progress(label, total) -> update(done) or None: how the CLI draws its bars
ProgressFactory = Callable[[str, int], Optional[Callable]]


def load_data(program: Program, dataset: str, split: str = "test") -> tuple[Dataset, np.ndarray, np.ndarray]:
    """A dataset for ``program``: ``digits``, ``fashion-mnist``, ``listops`` or an ``.npz`` path.

    Returns (the dataset, the values the float model reads, the raw integers the chip reads: the
    artifact's input format applied), after checking the samples' shape and labels against it."""
    from .datasets import check_labels, load_dataset
    from .errors import DatasetError
    from .input_format import InputFormat

    data = load_dataset(dataset, split)
    L, C = program.seq_len, program.input_channels
    if data.x.ndim != 3 or data.x.shape[1:] != (L, C):
        raise DatasetError(f"{dataset}: samples have shape {tuple(data.x.shape[1:])}, the model expects ({L}, {C})")
    check_labels(data, program.n_classes, dataset)
    values, raw = InputFormat.from_dict(program.model["input"]).prepare(data.x, dataset, data.levels)
    return data, values, raw


def validate_checkpoint(checkpoint: str, artifact: str | Program, dataset: str, *, split: str = "test",
                        lava_samples: int = 0, max_samples: int = 0, batch_size: int = 128, device: str | None = None,
                        emulator: str | None = None, mc_passes: int | None = None, seed: int | None = None,
                        lava_timeout_s: float = 1800, activity_samples: int = 0,
                        progress: ProgressFactory | None = None) -> dict:
    """Accuracy parity of the float model (``checkpoint``) and its compiled integers (``artifact``,
    a path or a Program) on ``dataset``: the report ``neurocompile validate`` prints (a JSON-ready dict).

    The integers run in the emulator on every sample (``max_samples``: the first N only); with
    ``lava_samples`` > 0 the first samples also run on Lava and are compared bit for bit (needs the
    'lava' extra).  Stochastic models (P-SpikeSSM) run ``mc_passes`` Monte-Carlo passes per side
    from ``seed`` (defaults 8 and 0); both are refused for deterministic models.  The artifact must
    have been compiled from this checkpoint.  ``activity_samples`` > 0 adds the activity counted on
    the first samples' integer run and the energy estimate (``neurocompile validate`` counts 256)."""
    from .emulator import check_device
    from .frontend import frontend_for
    from .models.checkpoint import build_model, load_checkpoint
    from .pipeline import file_sha256
    from .validate import model_mismatch, validate, validate_stochastic

    device = check_device(device)
    program, where = (artifact, "the program") if isinstance(artifact, Program) else (load_program(artifact), artifact)
    kind, config, state_dict, _ = load_checkpoint(checkpoint, seq_len=program.seq_len)
    stochastic = frontend_for(kind).stochastic
    if not stochastic:
        wrong = [name for name, value in (("mc-passes", mc_passes), ("seed", seed)) if value is not None]
        if wrong:
            raise ValueError(f"--{wrong[0]} applies to stochastic spikes (P-SpikeSSM) only; {checkpoint} is a {kind} "
                             "model with deterministic spikes")
    if program.report.get("source", {}).get("checkpoint_sha256") not in (None, file_sha256(checkpoint)):
        raise ArtifactError(f"{where}: was exported from another checkpoint than {checkpoint}")
    model = build_model(config, state_dict, kind)
    data, values, raw = load_data(program, dataset, split)
    mismatch = model_mismatch(model, program, values, device)
    if mismatch:
        raise ArtifactError(f"{where}: not compiled from {checkpoint}: {mismatch}")
    runner = None
    if lava_samples:                          # before the long float and integer runs
        runner = lava_runner(program, f"Lava parity on {lava_samples} samples",
                             "--lava-samples 0 (lava_samples=0) validates float vs integer without it")
    y = data.y
    if max_samples:
        values, raw, y = values[:max_samples], raw[:max_samples], y[:max_samples]
    bar = progress or (lambda label, total: None)
    common = dict(lava_samples=lava_samples, batch_size=batch_size, device=device,
                  progress=bar("float+integer", len(y)), lava_timeout_s=lava_timeout_s,
                  lava_progress=bar("Lava", min(lava_samples, len(y))) if lava_samples else None,
                  emulator_backend=emulator, lava_runner=runner)
    if stochastic:
        report = validate_stochastic(model, program, values, raw, y, mc_passes=8 if mc_passes is None else mc_passes,
                                     seed=seed or 0, **common)
    else:
        report = validate(model, program, values, raw, y, **common)
    if activity_samples:
        from .activity import measured
        report.update(measured(program, raw[:activity_samples], seed=seed or 0))
    report["dataset"] = {"name": dataset, "split": split}
    report["checkpoint"] = os.path.basename(checkpoint)
    report["artifact"] = os.path.basename(artifact) if isinstance(artifact, str) else None
    return report


def plan(artifact: str | Program, system: str | None = None) -> dict:
    """Where each process of the compiled network goes on its target (Loihi 2 cores and chips, or
    the host, with the reason), the resources per core and step: what ``neurocompile plan`` prints,
    as a JSON-ready dict.  ``system``: the Loihi 2 system to fit (default: the smallest that fits);
    a network that does not fit raises ``PlacementError`` naming the resource."""
    from .plan_report import plan_dict

    return plan_dict(artifact if isinstance(artifact, Program) else load_program(artifact), system=system)


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

"""neurocompile: trained spiking state-space models -> integer Loihi 2 programs, run bit-exactly by
an emulator or by Lava.

The Python API (``neurocompile.api`` documents each function; names load on first use, so
``import neurocompile`` stays light):

- ``compile_checkpoint(path, options=CompileOptions(), ...) -> Program``: a checkpoint (ours or the
  authors' Lightning ``.ckpt``) compiled to integers, every 24-bit register proven safe;
- ``save_program(program, path)`` / ``load_program(path) -> Program``: the ``.loihi2`` artifact
  (loading verifies it again);
- ``load_data(program, "digits") -> (dataset, values, raw)``: a dataset in the program's input format;
- ``emulate(program, raw) -> {"logits": ..., <node>: ...}``: the bit-exact integer emulator;
- ``validate_checkpoint(checkpoint, artifact, "digits") -> report``: float vs integer (vs Lava) parity;
- ``train("digits", "runs/digits", epochs=1) -> path``: train a model, write ``runs/digits/ckpt.pt``;
- ``finetune("examples/digits/ckpt.pt", "runs/ft", kernel_bits=4, weight_bits=4) -> report``:
  quantisation-aware fine-tuning through the integers ``export`` writes, ``runs/ft/ckpt.pt``;
- ``layer_sensitivity(checkpoint, program, "digits") -> dict``: per layer, the float model's accuracy with
  only that layer quantised (the program's own integers): where a program loses its accuracy;
- ``plan(program) -> dict``: where each process goes on Loihi 2 (cores, chips, host) and its resources;
- ``CompileOptions``, ``InputFormat``, ``Program``, ``NeurocompileError``: the types these take and raise.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "compile_checkpoint": "neurocompile.pipeline",
    "save_program": "neurocompile.artifact",
    "load_program": "neurocompile.artifact",
    "emulate": "neurocompile.emulator",
    "load_data": "neurocompile.api",
    "validate_checkpoint": "neurocompile.api",
    "train": "neurocompile.api",
    "finetune": "neurocompile.api",
    "plan": "neurocompile.api",
    "layer_sensitivity": "neurocompile.sensitivity",
    "CompileOptions": "neurocompile.options",
    "InputFormat": "neurocompile.input_format",
    "Program": "neurocompile.program",
    "NeurocompileError": "neurocompile.errors",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'neurocompile' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))

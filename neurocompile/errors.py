"""Errors the CLI reports as one line (``neurocompile: error: ...``) with a non-zero exit."""


class NeurocompileError(Exception):
    """Base: a problem with the user's input or environment, not a bug."""


class CheckpointError(NeurocompileError, ValueError):
    """A checkpoint is missing, corrupt, foreign, of another version, or inconsistent with its config."""


class ArtifactError(NeurocompileError):
    """A .loihi2 artifact is missing, corrupt, foreign or of another version."""


class UnsupportedModelError(NeurocompileError):
    """The model uses a feature the Loihi 2 lowering does not support (yet)."""


class RangeError(NeurocompileError):
    """Range analysis: a 24-bit register could wrap or saturate for some admissible input."""


class LavaRunError(NeurocompileError):
    """A Lava run failed, timed out, or the requested back end is not installed."""


class DatasetError(NeurocompileError):
    """A dataset is unknown, missing, or a user data file is malformed."""


class EmulatorError(NeurocompileError, ArithmeticError):
    """The emulator refused a result it cannot vouch for (an FFT result off the integers)."""


class PlacementError(NeurocompileError):
    """A process no core of the target can hold, or a plan larger than the chosen system."""

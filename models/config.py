"""Model hyper-parameters: frozen dataclasses validated on construction (SpikingSSM here; P-SpikeSSM's in
``pspikessm.py``), sharing ``ModelConfig``'s checks and conversions."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from ..input_format import MAX_LEVELS


class ModelConfig:
    """What every model config checks and how it converts: field types, sizes, the encoder,
    dropout and the dt range (subclasses are frozen dataclasses and add their own checks)."""

    def bad(self, name, why):
        raise ValueError(f"config field {name!r}: {why} (got {getattr(self, name)!r})")

    def check_common(self, positive=("d_input", "d_output", "d_model", "n_layers", "l_max", "input_levels")):
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("int", int):
                if isinstance(v, bool) or not isinstance(v, int):
                    self.bad(f.name, "must be an integer")
            elif f.type in ("bool", bool):
                if not isinstance(v, bool):
                    self.bad(f.name, "must be true or false")
            elif f.type in ("float", float):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
                    self.bad(f.name, "must be a finite number")
                object.__setattr__(self, f.name, float(v))
            elif f.type in ("str", str):
                if not isinstance(v, str):
                    self.bad(f.name, "must be a string")
        for name in positive:
            if getattr(self, name) < 1:
                self.bad(name, "must be >= 1")
        if self.input_levels > MAX_LEVELS:
            self.bad("input_levels", f"must be in 1..{MAX_LEVELS}")
        if self.d_state < 2 or self.d_state % 2:
            self.bad("d_state", "must be an even integer >= 2")
        if self.encoder not in ("linear", "embedding"):
            self.bad("encoder", "must be 'linear' or 'embedding'")
        if self.encoder == "embedding" and self.n_tokens < 1:
            self.bad("n_tokens", "must be >= 1 with encoder='embedding'")
        if self.n_tokens < 0:
            self.bad("n_tokens", "must be >= 0")
        if not 0.0 <= self.dropout < 1.0:
            self.bad("dropout", "must be in [0, 1)")
        if not self.dt_min > 0.0:
            self.bad("dt_min", "must be > 0")
        if not self.dt_max >= self.dt_min:
            self.bad("dt_max", "must be >= dt_min")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise ValueError(f"config must be a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise ValueError(f"config field {unknown[0]!r}: unknown field" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
        return cls(**d)


@dataclass(frozen=True)
class SpikingSSMConfig(ModelConfig):
    d_input: int = 1
    d_output: int = 10
    d_model: int = 64          # H
    n_layers: int = 2
    d_state: int = 32          # N (N/2 complex modes)
    l_max: int = 64            # sequence length the model is compiled for
    encoder: str = "linear"    # 'linear' | 'embedding'
    n_tokens: int = 0          # embedding vocabulary size
    kernel: str = "s4d"        # 's4d' (variant A, trainable_B=False) | 'diag_b' (variant B, trainable_B=True)
    bidirectional: bool = False
    learnable_vth: bool = True
    shared_vth: bool = False
    prenorm: bool = False
    norm: str = "layer"        # 'layer' | 'batch'
    tau: float = 0.125
    dropout: float = 0.0
    dt_min: float = 0.001
    dt_max: float = 0.1
    input_levels: int = 16     # raw inputs are integers 0..input_levels; the model sees x / input_levels

    def __post_init__(self):
        self.check_common()
        if self.kernel not in ("s4d", "diag_b"):
            self.bad("kernel", "must be 's4d' or 'diag_b'")
        if self.norm not in ("layer", "batch"):
            self.bad("norm", "must be 'layer' or 'batch'")
        if not 0.0 < self.tau <= 1.0:
            self.bad("tau", "must be in (0, 1]")

    @property
    def channels(self) -> int:
        return 2 if self.bidirectional else 1


def build_encoder(config):
    """The model's encoder: Linear(d_input, H) on values, or Embedding(n_tokens, H) on token ids."""
    from torch import nn
    if config.encoder == "linear":
        return nn.Linear(config.d_input, config.d_model)
    return nn.Embedding(config.n_tokens, config.d_model)


def encode(encoder, config, x):
    """x (B, L, d_input) values or (B, L[, 1]) token ids -> (B, L, H)."""
    if config.encoder == "embedding":
        if x.dim() == 3:
            x = x.squeeze(-1)
        return encoder(x.long())
    if x.dim() == 2:
        x = x.unsqueeze(-1)
    return encoder(x.to(encoder.weight.dtype))

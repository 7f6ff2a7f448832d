"""SpikingSSM hyper-parameters (one frozen dataclass, validated on construction)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class SpikingSSMConfig:
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
        def bad(name, why):
            raise ValueError(f"config field {name!r}: {why} (got {getattr(self, name)!r})")

        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("int", int):
                if isinstance(v, bool) or not isinstance(v, int):
                    bad(f.name, "must be an integer")
            elif f.type in ("bool", bool):
                if not isinstance(v, bool):
                    bad(f.name, "must be true or false")
            elif f.type in ("float", float):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
                    bad(f.name, "must be a finite number")
                object.__setattr__(self, f.name, float(v))
            elif f.type in ("str", str):
                if not isinstance(v, str):
                    bad(f.name, "must be a string")
        for name in ("d_input", "d_output", "d_model", "n_layers", "l_max", "input_levels"):
            if getattr(self, name) < 1:
                bad(name, "must be >= 1")
        if self.d_state < 2 or self.d_state % 2:
            bad("d_state", "must be an even integer >= 2")
        if self.encoder not in ("linear", "embedding"):
            bad("encoder", "must be 'linear' or 'embedding'")
        if self.encoder == "embedding" and self.n_tokens < 1:
            bad("n_tokens", "must be >= 1 with encoder='embedding'")
        if self.n_tokens < 0:
            bad("n_tokens", "must be >= 0")
        if self.kernel not in ("s4d", "diag_b"):
            bad("kernel", "must be 's4d' or 'diag_b'")
        if self.norm not in ("layer", "batch"):
            bad("norm", "must be 'layer' or 'batch'")
        if not 0.0 < self.tau <= 1.0:
            bad("tau", "must be in (0, 1]")
        if not 0.0 <= self.dropout < 1.0:
            bad("dropout", "must be in [0, 1)")
        if not self.dt_min > 0.0:
            bad("dt_min", "must be > 0")
        if not self.dt_max >= self.dt_min:
            bad("dt_max", "must be >= dt_min")

    @property
    def channels(self) -> int:
        return 2 if self.bidirectional else 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d) -> "SpikingSSMConfig":
        if not isinstance(d, dict):
            raise ValueError(f"config must be a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise ValueError(f"config field {unknown[0]!r}: unknown field" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
        return cls(**d)

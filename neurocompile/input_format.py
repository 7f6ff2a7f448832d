"""Input format: how raw integers on the chip relate to the values the float model was trained on.

A checkpoint does not say how its inputs were scaled, so ``export`` takes it as options and records
it in the artifact:

* ``levels``: the chip receives integers q in 0..levels and the model value is
  ``low + (high - low) * q / levels`` (default: [0, 1] in 255 levels, images scaled to [0, 1]);
* ``tokens``: the chip receives token ids 0..vocab-1, the model embeds them.

User data may come as raw integers (taken as they are) or as floats in the declared range: the
float model sees floats exactly as given, the integer runs see them quantized by ``quantize``
(round to the nearest level).  That rounding is part of the parity being measured.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import DatasetError

MAX_LEVELS = 2 ** 16 - 1


@dataclass(frozen=True)
class InputFormat:
    """How the chip's raw input integers map to the float model's values: ``levels`` (q in
    0..levels means ``low + (high - low) * q / levels``) or ``tokens`` (ids 0..vocab-1)."""

    kind: str = "levels"          # 'levels' | 'tokens'
    low: float = 0.0
    high: float = 1.0
    levels: int = 255
    vocab: int = 0

    def __post_init__(self):
        if self.kind == "levels":
            if not (np.isfinite(self.low) and np.isfinite(self.high) and self.high > self.low):
                raise ValueError(f"input range [{self.low}, {self.high}] must be finite with high > low")
            if not 1 <= int(self.levels) <= MAX_LEVELS:
                raise ValueError(f"--input-levels must be in 1..{MAX_LEVELS}, got {self.levels}")
        elif self.kind == "tokens":
            if int(self.vocab) < 1:
                raise ValueError(f"a token input needs a vocabulary of >= 1 tokens, got {self.vocab}")
        else:
            raise ValueError(f"unknown input kind {self.kind!r} (levels or tokens)")

    @property
    def max_raw(self) -> int:
        """Largest raw integer on the chip."""
        return int(self.levels) if self.kind == "levels" else int(self.vocab) - 1

    @property
    def step(self) -> float:
        return (self.high - self.low) / self.levels

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: d[k] for k in (("kind", "low", "high", "levels") if self.kind == "levels" else ("kind", "vocab"))}

    @classmethod
    def from_dict(cls, d: dict) -> "InputFormat":
        if not isinstance(d, dict) or d.get("kind") not in ("levels", "tokens"):
            raise ValueError(f"bad input format {d!r}")
        if d["kind"] == "tokens":
            return cls(kind="tokens", vocab=int(d["vocab"]))
        return cls(kind="levels", low=float(d["low"]), high=float(d["high"]), levels=int(d["levels"]))

    def describe(self) -> str:
        if self.kind == "tokens":
            return f"token ids 0..{self.vocab - 1}"
        return (f"{self.levels + 1} levels over [{self.low:g}, {self.high:g}] "
                f"(value = {self.low:g} + {self.high - self.low:g} * q / {self.levels})")

    def per_level(self, weight: np.ndarray, bias: np.ndarray) -> tuple:
        """An affine layer on model values (weight (H, C), bias (H,)) -> the same layer on raw levels:
        weight * step and bias + weight @ low (``levels`` inputs)."""
        weight = np.asarray(weight, dtype=np.float64)
        return weight * self.step, np.asarray(bias, dtype=np.float64) + weight.sum(1) * self.low

    def to_value(self, raw: np.ndarray) -> np.ndarray:
        """Raw integers -> what the float model sees."""
        if self.kind == "tokens":
            return np.asarray(raw, dtype=np.int64)
        return self.low + np.asarray(raw, dtype=np.float64) * self.step

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Values in [low, high] -> nearest raw level (the rule the integer runs see)."""
        q = np.rint((np.asarray(x, dtype=np.float64) - self.low) / self.step)
        return np.clip(q, 0, self.levels).astype(np.int64)

    def prepare(self, x: np.ndarray, source: str, data_levels: int | None = None):
        """User data -> (model values, raw integers), refusing data outside the format.

        Integer ``x`` are raw levels or token ids, except when the data declares its own level
        count ``data_levels`` different from ours (then its values are re-quantized)."""
        x = np.asarray(x)
        if self.kind == "tokens":
            if not np.issubdtype(x.dtype, np.integer):
                raise DatasetError(f"{source}: the model reads token ids: x must hold integers, got {x.dtype}")
            if x.size and (x.min() < 0 or x.max() >= self.vocab):
                raise DatasetError(f"{source}: token ids must lie in 0..{self.vocab - 1}, found {x.min()}..{x.max()}")
            raw = x.astype(np.int64)
            return raw, raw
        if np.issubdtype(x.dtype, np.integer) or x.dtype == bool:
            top = int(data_levels) if data_levels is not None else self.levels
            if x.size and (x.min() < 0 or x.max() > top):
                raise DatasetError(f"{source}: integer x must be raw levels 0..{top}, found {x.min()}..{x.max()}")
            if top == self.levels:
                raw = x.astype(np.int64)
                return self.to_value(raw), raw
            x = self.low + x.astype(np.float64) * (self.high - self.low) / top
        elif not np.issubdtype(x.dtype, np.floating):
            raise DatasetError(f"{source}: x has unsupported dtype {x.dtype}")
        x = x.astype(np.float64)
        if not np.isfinite(x).all():
            raise DatasetError(f"{source}: x holds NaN or Inf")
        slack = 1e-9 * (self.high - self.low)
        if x.size and (x.min() < self.low - slack or x.max() > self.high + slack):
            raise DatasetError(f"{source}: float x must lie in the input range [{self.low:g}, {self.high:g}], "
                               f"found {x.min():g}..{x.max():g}")
        return x, self.quantize(x)

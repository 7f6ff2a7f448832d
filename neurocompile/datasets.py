"""Datasets as integer level sequences (numpy only: the Lava runtime side imports this, not torch).

A sample is x[i] of shape (L, d_in) holding integers 0..levels; the float model sees x / levels.
Built-ins: ``digits`` (sklearn 8x8 digits, pixel by pixel, L=64, 16 levels, 1437 train / 360 test by a
numpy default_rng(0) permutation) and ``fashion-mnist`` (Debian package dataset-fashion-mnist, L=784,
255 levels, 60k / 10k). Anything else is a path to an ``.npz`` with ``x`` and ``y``.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass

import numpy as np

from .errors import DatasetError

BUILTIN = ("digits", "fashion-mnist")
SPLITS = ("train", "test")
FASHION_DIR = "/usr/share/datasets/fashion-mnist"


@dataclass
class Dataset:
    x: np.ndarray       # (n, L, d_in) unsigned integers 0..levels
    y: np.ndarray       # (n,) int64
    levels: int
    name: str

    def __len__(self) -> int:
        return len(self.y)


def _check_split(name: str, split: str) -> None:
    if split not in SPLITS:
        raise DatasetError(f"{name}: unknown split {split!r} (choose train or test)")


def _digits(split: str) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.data.astype(np.uint8).reshape(-1, 64, 1)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(y))
    idx = perm[:1437] if split == "train" else perm[1437:]
    return Dataset(np.ascontiguousarray(x[idx]), y[idx], 16, "digits")


def _read_idx(path: str, offset: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as fh:
            return np.frombuffer(fh.read(), dtype=np.uint8, offset=offset)
    except FileNotFoundError:
        raise DatasetError(f"fashion-mnist: {path} not found (install it: apt-get install dataset-fashion-mnist)") from None
    except (OSError, EOFError, ValueError) as exc:
        raise DatasetError(f"fashion-mnist: {path} is unreadable ({exc})") from None


def _fashion(split: str) -> Dataset:
    if not os.path.isdir(FASHION_DIR):
        raise DatasetError(f"fashion-mnist: {FASHION_DIR} not found (install it: apt-get install dataset-fashion-mnist)")
    stem = "train" if split == "train" else "t10k"
    images = _read_idx(os.path.join(FASHION_DIR, f"{stem}-images-idx3-ubyte.gz"), 16)
    labels = _read_idx(os.path.join(FASHION_DIR, f"{stem}-labels-idx1-ubyte.gz"), 8).astype(np.int64)
    if images.size != labels.size * 784:
        raise DatasetError(f"fashion-mnist: {stem} images ({images.size} bytes) do not match {labels.size} labels")
    return Dataset(images.reshape(-1, 784, 1), labels, 255, "fashion-mnist")


def _npz(path: str, split: str, levels: int | None) -> Dataset:
    name = os.path.basename(path)
    if not os.path.exists(path):
        raise DatasetError(f"{path}: no such dataset file (built-in datasets: {', '.join(BUILTIN)})")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            xk = f"x_{split}" if f"x_{split}" in keys else "x"
            yk = f"y_{split}" if f"y_{split}" in keys else "y"
            if xk not in keys or yk not in keys:
                raise DatasetError(f"{path}: needs arrays 'x' and 'y' (found {', '.join(sorted(keys)) or 'none'})")
            x, y = z[xk], z[yk]
            file_levels = int(z["levels"]) if "levels" in keys else None
    except DatasetError:
        raise
    except Exception as exc:
        raise DatasetError(f"{path}: not a readable .npz file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3:
        raise DatasetError(f"{path}: x must have shape (n, L) or (n, L, d_in), got {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise DatasetError(f"{path}: y must have shape ({len(x)},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"{path}: y must hold integer class labels, got {y.dtype}")
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise DatasetError(f"{path}: float x must lie in [0, 1] (and be finite)")
        lv = int(levels or file_levels or 255)
        xq = np.rint(x * lv)
    elif np.issubdtype(x.dtype, np.integer):
        lv = file_levels if file_levels is not None else levels
        if lv is None:
            raise DatasetError(f"{path}: integer x needs a 'levels' array in the file (the maximum input level)")
        if x.min() < 0 or x.max() > lv:
            raise DatasetError(f"{path}: integer x must lie in 0..{lv}, found {x.min()}..{x.max()}")
        xq = x
    else:
        raise DatasetError(f"{path}: x has unsupported dtype {x.dtype}")
    lv = int(lv)
    if lv < 1:
        raise DatasetError(f"{path}: levels must be >= 1, got {lv}")
    dtype = np.uint8 if lv <= 255 else (np.uint16 if lv <= 65535 else np.int64)
    return Dataset(np.ascontiguousarray(xq.astype(dtype)), y.astype(np.int64), lv, name)


def load_dataset(name: str, split: str = "test", levels: int | None = None) -> Dataset:
    """Built-in name or a path to an .npz. ``levels`` quantizes float .npz inputs (built-ins keep theirs)."""
    if name == "digits":
        _check_split(name, split)
        return _digits(split)
    if name == "fashion-mnist":
        _check_split(name, split)
        return _fashion(split)
    if name.endswith(".npz") or os.path.sep in name or os.path.exists(name):
        return _npz(name, split, levels)
    raise DatasetError(f"unknown dataset {name!r} (built-in: {', '.join(BUILTIN)}; or a path to an .npz with x and y)")

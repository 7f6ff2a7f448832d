"""Datasets as sequences of raw integers or model values (numpy only: the Lava side imports this).

A sample is x[i] of shape (L, C): raw integer levels 0..levels, token ids, or floats (values the
float model sees).  ``InputFormat.prepare`` turns a dataset into what the float model and the
integer runs each see.  Built-ins:

* ``digits``: scikit-learn 8x8 digits, pixel by pixel, L=64, 16 levels, 1437 train / 360 test by a
  numpy default_rng(0) permutation;
* ``fashion-mnist``: Debian package dataset-fashion-mnist, L=784, 255 levels, 60k / 10k;
* ``fashion-mnist-32``: the same images zero-padded to 32x32 (2 pixels each side), L=1024: the offline
  stand-in for sCIFAR's sequence length (CIFAR-10 is not available offline);
* ``listops``: LRA ListOps generated offline (``neurocompile.listops``, the small preset: L=128,
  16 tokens, 5000 train / 1000 test; ``seq_len`` generates it at another length, e.g. 64).

Anything else is a path to an ``.npz`` with ``x`` and ``y`` (or ``x_train``/``x_test`` ...), and
optionally ``levels`` (the largest raw level of integer x).
"""
from __future__ import annotations

import gzip
import os
import tokenize
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from .errors import DatasetError
from .fileio import zip_member_problem

BUILTIN = ("digits", "fashion-mnist", "fashion-mnist-32", "listops")
SPLITS = ("train", "test")
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
MAX_NPZ_BYTES = 4 << 30          # refuse user data that would need more memory than this
MAX_VALUES = 1 << 25             # values per array (sCIFAR's test split is 31.5 M): the array, its model values and
                                 # raw integers with their temporaries stay near 1.5 GiB; 1 << 27 ran out of memory


@dataclass
class Dataset:
    x: np.ndarray       # (n, L, C): raw integers (levels / token ids) or float model values
    y: np.ndarray       # (n,) int64
    name: str
    levels: int | None = None   # largest raw level of integer x (None: tokens, floats, or unknown)
    vocab: int | None = None    # token vocabulary size (token datasets)

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
    return Dataset(np.ascontiguousarray(x[idx]), y[idx], "digits", 16)


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
    return Dataset(images.reshape(-1, 784, 1), labels, "fashion-mnist", 255)


def _fashion_32(split: str) -> Dataset:
    """Fashion-MNIST padded with 2 black pixels on each side: 32x32, read row by row (L = 1024)."""
    data = _fashion(split)
    images = np.pad(data.x.reshape(-1, 28, 28), ((0, 0), (2, 2), (2, 2)))
    return Dataset(images.reshape(-1, 1024, 1), data.y, "fashion-mnist-32", 255)


def _listops(split: str, seq_len: int | None = None) -> Dataset:
    from .listops import VOCAB_SIZE, listops_small, load_listops

    try:
        preset = listops_small(seq_len)
    except ValueError as exc:
        raise DatasetError(str(exc)) from None
    x, y = load_listops(split, **preset)
    return Dataset(np.ascontiguousarray(x[..., None]), y.astype(np.int64), "listops", vocab=VOCAB_SIZE)


def _npz_member(zf: zipfile.ZipFile, path: str, key: str) -> np.ndarray:
    """One array of an .npz, its declared shape checked against the member's size before loading."""
    info = zf.getinfo(key + ".npy")
    with zf.open(info) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(fh)
        except (ValueError, SyntaxError, tokenize.TokenError, RecursionError, OSError, EOFError) as exc:
            raise DatasetError(f"{path}: array {key} is not a readable .npy ({str(exc)[:100]})") from None
    if dtype.hasobject:
        raise DatasetError(f"{path}: array {key} holds Python objects (refused: loading them could run code)")
    values = int(np.prod(shape, dtype=np.float64))
    need = values * dtype.itemsize
    if need > MAX_NPZ_BYTES or need > info.file_size:
        raise DatasetError(f"{path}: array {key} claims shape {shape} ({need} bytes) but the file holds "
                           f"{info.file_size} bytes")
    if values > MAX_VALUES:          # a small deflated file can honestly declare that much
        raise DatasetError(f"{path}: array {key} has {values} values, more than the {MAX_VALUES} this tool "
                           f"loads at once (they are converted to 64-bit integers and floats): split the file")
    with zf.open(info) as fh:
        return np.load(fh, allow_pickle=False)


def _npz(path: str, split: str) -> Dataset:
    from .fileio import InputFileError, open_input, read_error

    name = os.path.basename(path)
    if not os.path.lexists(path):
        raise DatasetError(f"{path}: no such dataset file (built-in datasets: {', '.join(BUILTIN)})")
    try:
        fh = open_input(path, "dataset file")
    except InputFileError as exc:
        raise DatasetError(str(exc)) from None
    try:
        with fh, zipfile.ZipFile(fh) as zf:
            for info in zf.infolist():
                problem = zip_member_problem(info)
                if problem:
                    raise DatasetError(f"{path}: not a readable .npz file ({problem})")
            keys = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
            xk = f"x_{split}" if f"x_{split}" in keys else "x"
            yk = f"y_{split}" if f"y_{split}" in keys else "y"
            if xk not in keys or yk not in keys:
                raise DatasetError(f"{path}: needs arrays 'x' and 'y' (found {', '.join(sorted(keys)) or 'none'})")
            x, y = _npz_member(zf, path, xk), _npz_member(zf, path, yk)
            levels = _npz_member(zf, path, "levels") if "levels" in keys else None
    except DatasetError:
        raise
    except OSError as exc:
        if exc.errno is not None and not isinstance(exc, zipfile.BadZipFile):
            raise DatasetError(read_error(path, exc)) from None
        raise DatasetError(f"{path}: not a readable .npz file ({type(exc).__name__}: {str(exc)[:120]})") from None
    except (zipfile.BadZipFile, ValueError, EOFError, KeyError, zlib.error, NotImplementedError) as exc:
        raise DatasetError(f"{path}: not a readable .npz file ({type(exc).__name__}: {str(exc)[:120]})") from None
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3:
        raise DatasetError(f"{path}: x must have shape (n, L) or (n, L, C), got {x.shape}")
    if len(x) == 0:
        raise DatasetError(f"{path}: holds no samples (x has shape {x.shape})")
    if y.ndim != 1 or len(y) != len(x):
        raise DatasetError(f"{path}: y must have shape ({len(x)},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"{path}: y must hold integer class labels, got {y.dtype}")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating) or x.dtype == bool):
        raise DatasetError(f"{path}: x has unsupported dtype {x.dtype}")
    lv = None
    if levels is not None:
        if levels.shape != () or not np.issubdtype(levels.dtype, np.integer) or int(levels) < 1:
            raise DatasetError(f"{path}: 'levels' must be one integer >= 1")
        lv = int(levels)
    return Dataset(np.ascontiguousarray(x), y.astype(np.int64), name, lv)


def load_dataset(name: str, split: str = "test", seq_len: int | None = None) -> Dataset:
    """A built-in name or a path to an .npz; ``seq_len``: the length of the built-in listops data
    (default 128; only listops is generated, so only it takes one)."""
    loaders = {"digits": _digits, "fashion-mnist": _fashion, "fashion-mnist-32": _fashion_32, "listops": _listops}
    if seq_len is not None and name != "listops":
        raise DatasetError(f"{name}: a sequence length (--seq-len) applies to the built-in listops data only")
    if name in loaders:
        _check_split(name, split)
        return _listops(split, seq_len) if name == "listops" else loaders[name](split)
    if name.endswith(".npz") or os.path.sep in name or os.path.exists(name):
        _check_split(name, split)
        return _npz(name, split)
    raise DatasetError(f"unknown dataset {name!r} (built-in: {', '.join(BUILTIN)}; or a path to an .npz with x and y)")


def check_labels(data: Dataset, n_classes: int, source: str) -> None:
    if len(data.y) and (data.y.min() < 0 or data.y.max() >= n_classes):
        raise DatasetError(f"{source}: labels must be classes 0..{n_classes - 1}, found {data.y.min()}..{data.y.max()}")

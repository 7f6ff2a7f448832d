"""neurocompile checkpoint format (torch.save of plain dicts and tensors), and loading of any checkpoint.

{'format': 'neurocompile-checkpoint', 'version': 1, 'kind': 'spikingssm' | 'pspikessm', 'config': {...},
 'state_dict': {name: tensor}, 'meta': {'dataset', 'seed', 'command', 'metrics', 'epochs', ...}}

Every file, ours or a foreign one, is read by ``torchzip`` (allow-listed unpickling, sizes and CRCs
checked, no pickled code run); ``load_checkpoint`` then dispatches on the layout through ``READERS``:
our format, or an official Lightning ``.ckpt`` (``official``).
"""
from __future__ import annotations

import math
import os
import zipfile

import torch

from ..errors import CheckpointError
from ..fileio import write_atomic
from . import official, torchzip
from .config import SpikingSSMConfig
from .pspikessm import PSpikeSSMConfig

FORMAT = "neurocompile-checkpoint"
VERSION = 1
SUPPORTED_VERSIONS = (1,)
KINDS = {"spikingssm": SpikingSSMConfig, "pspikessm": PSpikeSSMConfig}


def _build(kind: str, config):
    from .pspikessm import PSpikeSSM
    from .spikingssm import SpikingSSM

    if kind == "spikingssm":
        return SpikingSSM(config)
    if kind == "pspikessm":
        return PSpikeSSM(config)
    raise ValueError(f"unknown kind {kind!r}")


def kind_of(config) -> str:
    """The model kind a config object belongs to (``KINDS`` by class)."""
    for kind, cls in KINDS.items():
        if isinstance(config, cls):
            return kind
    raise ValueError(f"not a model config: {type(config).__name__}")


def build_model(config, state_dict: dict, kind: str | None = None):
    """Fresh model from the config with the given weights loaded (strict), in eval mode.

    ``kind`` defaults to the config object's kind, or 'spikingssm' for a plain dict."""
    if kind is None:
        kind = "spikingssm" if isinstance(config, dict) else kind_of(config)
    if isinstance(config, dict):
        config = KINDS[kind].from_dict(config)
    model = _build(kind, config)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def _plain(v):
    """Meta values as plain Python types (str subclasses, numpy scalars... would not load weights_only)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, str):
        return str(v)
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def _json_plain(v, depth: int = 0) -> bool:
    """Whether v is JSON data that reads back as itself (numbers within int64, string keys)."""
    if depth > 32:
        return False
    if v is None or isinstance(v, (bool, str, float)):
        return True
    if isinstance(v, int):
        return -2 ** 63 <= v < 2 ** 63
    if isinstance(v, list):
        return all(_json_plain(x, depth + 1) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _json_plain(x, depth + 1) for k, x in v.items())
    return False


def save_checkpoint(path: str, model, meta: dict | None = None, kind: str | None = None) -> None:
    """Write atomically with the user's ordinary permissions (``fileio.write_atomic``); ``kind``
    defaults to the model config's kind."""
    if kind is None:
        kind = kind_of(model.config)
    obj = {"format": FORMAT, "version": VERSION, "kind": kind, "config": _plain(model.config.to_dict()),
           "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
           "meta": _plain(dict(meta or {}))}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomic(path, lambda fh: torch.save(obj, fh))


def _read_raw(path: str):
    """The file's object graph as plain Python (dicts, lists, values, CPU tensors)."""
    from ..fileio import InputFileError, open_input, read_error

    try:
        fh = open_input(path, "checkpoint file")
    except InputFileError as exc:
        raise CheckpointError(str(exc)) from None
    with fh:
        try:
            try:
                is_zip = zipfile.is_zipfile(fh)
            except zipfile.BadZipFile:           # is_zipfile itself raises on some end records (a ZIP64 "span")
                is_zip = False
            fh.seek(0)
            head = fh.read(8)
            fh.seek(0)
        except OSError as exc:
            raise CheckpointError(read_error(path, exc)) from None
        if not is_zip:
            if head[:2] == b"PK":
                raise CheckpointError(f"{path}: truncated or corrupt checkpoint (broken zip archive)")
            raise CheckpointError(f"{path}: not a neurocompile checkpoint (not a torch.save archive)")
        try:
            with zipfile.ZipFile(fh) as z:
                names = z.namelist()
        # ValueError: undecodable names; NotImplementedError: a zip version zipfile does not read
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({exc})") from None
        if not any(n.endswith("data.pkl") for n in names):
            raise CheckpointError(f"{path}: not a neurocompile checkpoint (a zip archive without torch data, e.g. an .npz)")
        try:
            fh.seek(0)
            return torchzip.plain(torchzip.load(fh))
        except torchzip.RefusedError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        except torchzip.ArchiveError as exc:
            raise CheckpointError(f"{path}: truncated or corrupt checkpoint: {exc}") from None


def _read_neurocompile(path: str, obj: dict, seq_len: int | None = None):
    version = obj.get("version")
    if version not in SUPPORTED_VERSIONS:
        raise CheckpointError(f"{path}: unsupported checkpoint version {version!r} (this build reads {SUPPORTED_VERSIONS})")
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise CheckpointError(f"{path}: unknown model kind {kind!r} (known: {', '.join(KINDS)})")
    for key, typ in (("config", dict), ("state_dict", dict)):
        if not isinstance(obj.get(key), typ):
            raise CheckpointError(f"{path}: '{key}' is missing or not a dict")
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: 'meta' is not a dict")
    # the compiler records these two in the artifact's JSON report: they must survive a JSON round trip
    if not isinstance(meta.get("detected", ""), str):
        raise CheckpointError(f"{path}: meta field 'detected' is not a string")
    if not _json_plain(meta.get("metrics", {})):
        raise CheckpointError(f"{path}: meta field 'metrics' holds values other than plain numbers, strings, "
                              "lists and string-keyed dicts")
    try:
        config = KINDS[kind].from_dict(obj["config"])
    except (ValueError, TypeError, OverflowError) as exc:      # OverflowError: 10**400 as a float
        raise CheckpointError(f"{path}: bad config: {str(exc)[:200]}") from None
    if seq_len is not None and seq_len != config.l_max:
        raise CheckpointError(f"{path}: the file stores sequence length {config.l_max}; {seq_len} was asked for")
    if "metrics" in meta:
        meta = {**meta, "metrics": _finite_json(meta["metrics"])}
    return kind, config, obj["state_dict"], meta


def _finite_json(v):
    """Metrics as strict JSON: a NaN or infinite value (a diverged loss) is recorded as null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, list):
        return [_finite_json(x) for x in v]
    if isinstance(v, dict):
        return {k: _finite_json(x) for k, x in v.items()}
    return v


# (predicate on the loaded object, reader) pairs; first match wins.
READERS = [(lambda o: isinstance(o, dict) and o.get("format") == FORMAT, _read_neurocompile),
           (official.is_lightning, official.read_lightning)]


MAX_PARAMETERS = 2 ** 28          # 1 GiB of float32: far above any published SpikingSSM / P-SpikeSSM


def parameter_bound(config) -> int:
    """An upper bound on the parameter count a config implies, computed without building it: both
    families hold per layer a few H x H (or 2H x H) matrices and H x N (or n_ssm x N) SSM tensors."""
    H, N, layers = config.d_model, config.d_state, config.n_layers
    per_layer = 8 * H * H + 8 * H * (N + 2) + 256
    return layers * per_layer + (config.d_input + config.d_output + config.n_tokens + 2) * H


def stored_elements(tensors) -> int:
    """Elements the file really holds: each distinct storage once, by its size.  ``numel`` would count
    views (a zero-stride view of one element can claim 2**30), and shared storages repeatedly."""
    seen, total = set(), 0
    for t in tensors:
        storage = t.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key not in seen:
            seen.add(key)
            total += storage.nbytes() // max(t.element_size(), 1)
    return total


def _check_state_dict(path: str, kind: str, config, state_dict: dict) -> None:
    bad = [k for k, v in state_dict.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state_dict entry {bad[0]!r} is not a named tensor")
    stored = stored_elements(state_dict.values())
    if parameter_bound(config) > max(MAX_PARAMETERS, 4 * stored):
        raise CheckpointError(f"{path}: the config implies up to {parameter_bound(config)} parameters but the file holds "
                              f"{stored}; refusing to build a model that large")
    try:
        ref = _build(kind, config).state_dict()
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot build a {kind} model from its config ({exc})") from None
    missing = [k for k in ref if k not in state_dict]
    extra = [k for k in state_dict if k not in ref]
    if missing:
        raise CheckpointError(f"{path}: state_dict is missing {len(missing)} tensor(s), first {missing[0]!r}")
    if extra:
        raise CheckpointError(f"{path}: state_dict has {len(extra)} unexpected tensor(s), first {extra[0]!r}")
    for k, v in ref.items():
        t = state_dict[k]
        if tuple(t.shape) != tuple(v.shape):
            raise CheckpointError(f"{path}: tensor {k!r} has shape {tuple(t.shape)}, the config implies {tuple(v.shape)}")
        if t.is_floating_point() or t.is_complex():
            if not bool(torch.isfinite(t).all()):
                raise CheckpointError(f"{path}: tensor {k!r} contains NaN or Inf")


def weights_sha256(state_dict: dict) -> str:
    """A digest of the weights themselves (names, dtypes, shapes, values), independent of how the file
    stores them: re-saving the same tensors (another pickle protocol, another zip layout, shared or
    separate storages) gives the same digest.  The artifact records it; ``validate`` pairs by it."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}\0{str(t.dtype)}\0{list(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def read_checkpoint(path: str, seq_len: int | None = None):
    """-> (kind, config, state_dict, meta) as the file's reader maps it, not yet checked against this build.

    ``config`` is a config object, or a plain dict for a kind this build may not know.  ``seq_len``:
    the sequence length for a file that stores none (the authors' s4 trainer drops it); a file that
    stores one must agree with it."""
    path = os.fspath(path)
    obj = _read_raw(path)
    for accepts, reader in READERS:
        if accepts(obj):
            return reader(path, obj, seq_len)
    what = (f"a dict with keys {sorted(map(str, obj))[:6]}" if isinstance(obj, dict)
            else f"a {type(obj).__name__}")
    raise CheckpointError(f"{path}: not a neurocompile checkpoint (holds {what})")


def load_checkpoint(path: str, seq_len: int | None = None):
    """-> (kind, config, state_dict, meta). Never executes pickled code.  ``seq_len``: see ``read_checkpoint``."""
    path = os.fspath(path)
    kind, config, state_dict, meta = read_checkpoint(path, seq_len)
    if kind not in KINDS:
        family = official.FAMILIES.get(kind, repr(kind))
        raise CheckpointError(f"{path}: {family} checkpoints are not supported by this build (it reads: {', '.join(KINDS)})")
    if isinstance(config, dict):
        try:
            config = KINDS[kind].from_dict(config)
        except (ValueError, TypeError, OverflowError) as exc:
            raise CheckpointError(f"{path}: bad config: {str(exc)[:200]}") from None
    _check_state_dict(path, kind, config, state_dict)
    return kind, config, state_dict, meta

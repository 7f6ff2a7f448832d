"""The ``.loihi2`` artifact: a versioned, self-contained, byte-deterministic file.

It is a zip holding ``manifest.json`` (format, version, model, scalars, report) and one ``.npy``
per array.  Every entry has a fixed timestamp and the arrays are written in a fixed order, so the
same Program always gives the same bytes.  Loading needs numpy only and validates everything
(format, version, array names, shapes, dtypes, value ranges) before anything runs.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import tempfile
import zipfile

import numpy as np

from .arith import REGISTER_MAX
from .errors import ArtifactError
from .program import EncoderParams, LayerParams, Program, ReadoutParams

FORMAT = "neurocompile-loihi2"
VERSION = 1
_EPOCH = (1980, 1, 1, 0, 0, 0)

def _split(obj, prefix):
    """Dataclass -> (scalars dict, {prefix.name: array})."""
    scalars, arrays = {}, {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, np.ndarray):
            arrays[f"{prefix}.{f.name}"] = value
        else:
            scalars[f.name] = value
    return scalars, arrays


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def save_program(program: Program, path: str) -> None:
    """Write atomically: a temp file in the target folder, renamed over the target at the end."""
    enc_scalars, arrays = _split(program.encoder, "encoder")
    layer_scalars = []
    for i, layer in enumerate(program.layers):
        s, a = _split(layer, f"layer{i}")
        layer_scalars.append(s)
        arrays.update(a)
    ro_scalars, a = _split(program.readout, "readout")
    arrays.update(a)
    arrays["sigmoid_lut"] = program.sigmoid_lut
    arrays["stream_frac_bits"] = program.stream_frac_bits
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model": program.model,
        "sigmoid_in_frac_bits": program.sigmoid_in_frac_bits,
        "sigmoid_out_frac_bits": program.sigmoid_out_frac_bits,
        "encoder": enc_scalars,
        "layers": layer_scalars,
        "readout": ro_scalars,
        "arrays": {name: {"shape": list(arr.shape), "dtype": str(arr.dtype)} for name, arr in sorted(arrays.items())},
        "report": program.report,
    }
    folder = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".loihi2", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
            def put(name, data):
                info = zipfile.ZipInfo(name, date_time=_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, data)
            put("manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode())
            for name in sorted(arrays):
                put(f"{name}.npy", _npy_bytes(arrays[name]))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _fail(path, msg):
    raise ArtifactError(f"{path}: {msg}")


def load_program(path: str) -> Program:
    if not os.path.isfile(path):
        _fail(path, "no such artifact file")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        _fail(path, f"not a neurocompile artifact (not a readable zip: {exc})")
    with zf:
        names = set(zf.namelist())
        if "manifest.json" not in names:
            _fail(path, "not a neurocompile artifact (no manifest.json)")
        try:
            manifest = json.loads(zf.read("manifest.json"))
        except (ValueError, zipfile.BadZipFile, OSError) as exc:
            _fail(path, f"corrupt manifest ({exc})")
        if manifest.get("format") != FORMAT:
            _fail(path, f"not a neurocompile artifact (format {manifest.get('format')!r})")
        if manifest.get("version") != VERSION:
            _fail(path, f"artifact version {manifest.get('version')} is not supported (this neurocompile reads {VERSION}); re-export it")
        arrays = {}
        for name, spec in manifest["arrays"].items():
            try:
                arr = np.load(io.BytesIO(zf.read(f"{name}.npy")), allow_pickle=False)
            except (KeyError, ValueError, zipfile.BadZipFile, OSError, EOFError) as exc:
                _fail(path, f"array {name} is missing or corrupt ({exc})")
            if list(arr.shape) != spec["shape"] or str(arr.dtype) != spec["dtype"]:
                _fail(path, f"array {name} has shape {arr.shape} {arr.dtype}, manifest says {spec}")
            arrays[name] = arr
    try:
        program = _assemble(manifest, arrays)
    except (KeyError, TypeError) as exc:
        _fail(path, f"incomplete artifact (missing {exc})")
    _validate(path, program)
    return program


def _assemble(manifest, arrays) -> Program:
    def build(cls, scalars, prefix):
        kwargs = dict(scalars)
        for f in dataclasses.fields(cls):
            if f.name not in kwargs:
                kwargs[f.name] = arrays[f"{prefix}.{f.name}"]
        return cls(**kwargs)

    return Program(
        model=manifest["model"],
        stream_frac_bits=arrays["stream_frac_bits"],
        encoder=build(EncoderParams, manifest["encoder"], "encoder"),
        layers=tuple(build(LayerParams, s, f"layer{i}") for i, s in enumerate(manifest["layers"])),
        readout=build(ReadoutParams, manifest["readout"], "readout"),
        sigmoid_lut=arrays["sigmoid_lut"],
        sigmoid_in_frac_bits=manifest["sigmoid_in_frac_bits"],
        sigmoid_out_frac_bits=manifest["sigmoid_out_frac_bits"],
        report=manifest.get("report", {}),
    )


def _validate(path, p: Program) -> None:
    H, L = p.d_model, p.seq_len
    d_in, d_out = int(p.model["d_input"]), p.n_classes
    want = {"encoder.weight": (H, d_in), "encoder.bias": (H,), "readout.weight": (d_out, H), "readout.bias": (d_out,)}
    if p.stream_frac_bits.shape != (H,):
        _fail(path, f"stream_frac_bits has shape {p.stream_frac_bits.shape}, expected ({H},)")
    for name, shape in want.items():
        obj, field_name = name.split(".")
        arr = getattr(getattr(p, obj), field_name)
        if arr.shape != shape:
            _fail(path, f"{name} has shape {arr.shape}, expected {shape}")
    if len(p.layers) != int(p.model["n_layers"]):
        _fail(path, f"{len(p.layers)} layers stored, model says {p.model['n_layers']}")
    for i, layer in enumerate(p.layers):
        for name, shape in (("kernel", (H, L)), ("mix_weight", (2 * H, H)), ("mix_bias", (2 * H,)),
                            ("kernel_shift", (H,)), ("value_shift", (H,)), ("gate_shift", (H,)),
                            ("out_shift", (H,))):
            arr = getattr(layer, name)
            if arr.shape != shape or arr.dtype != np.int64:
                _fail(path, f"layer{i}.{name} has shape {arr.shape} {arr.dtype}, expected {shape} int64")
        if np.any(np.abs(layer.mix_weight) > 254) or np.any(layer.mix_weight % 2):
            _fail(path, f"layer{i}.mix_weight is not a valid Lava Dense weight matrix (even, |w| <= 254)")
        if not 0 <= layer.vth < 2 ** 17 or not 0 <= layer.dv < 4096:
            _fail(path, f"layer{i} LIF parameters out of range (vth {layer.vth}, dv {layer.dv})")
        if np.any(np.abs(layer.kernel) > REGISTER_MAX):
            _fail(path, f"layer{i}.kernel has taps beyond a 24-bit register")
    for name in ("encoder", "readout"):
        for f in dataclasses.fields(getattr(p, name)):
            arr = getattr(getattr(p, name), f.name)
            if isinstance(arr, np.ndarray) and not np.all(np.isfinite(arr)):
                _fail(path, f"{name}.{f.name} holds NaN or Inf")

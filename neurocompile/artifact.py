"""The ``.loihi2`` artifact: a versioned, self-contained, byte-deterministic file, and its verifier.

A zip holding ``manifest.json`` and one ``.npy`` per array.  The manifest is NIR-shaped: ``nodes``
(each with its ``type`` from the registry ``ir.INT_NODES``, its scalar ``params`` and the members
holding its ``arrays``), ``edges`` ``[source, destination, port]``, ``model``, ``delays`` and the
compile ``report``.  Every entry has a fixed timestamp and a fixed order, integer arrays are stored
in the narrowest integer type that holds them, so the same Program always gives the same bytes.

Loading is verification (numpy only, no torch): sizes are bounded before anything is read or
inflated, every member's CRC is checked, the manifest's types, names, shapes and edges are checked
against the node registry, and then the register ranges are proved again from the stored integers
with the compiler's own interval rules, plus the target's hardware checks.  An artifact that loads
is one whose runs are bit-exact on every back end; anything else is refused with one line.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import tokenize
import zipfile
import zlib
from typing import TYPE_CHECKING, Iterable

import numpy as np

from .errors import ArtifactError, NeurocompileError, RangeError
from .fileio import InputFileError, open_input, write_atomic, zip_member_problem
from .intervals import Context, register_table
from .ir import INT_NODES, IntInput, IntReadout, ShapeError, array_fields, scalar_fields
from .program import Program, ProgramNode

if TYPE_CHECKING:
    from .target import Target

FORMAT = "neurocompile-loihi2"
VERSION = 5   # 5: the encoder's weights keep their own mantissa, rounded onto the stream by a shift;
              # 4: samplers hold their input to a centred window; 3: PRNG keyed by the sample index and the whole
              # seed; the compiled-from weights' digest; declared
              # members only; node names that are dotted identifiers
_EPOCH = (1980, 1, 1, 0, 0, 0)

MAX_MANIFEST_BYTES = 64 << 20
MAX_ARRAY_BYTES = 2 << 30           # all arrays together, as loaded (int64 / float64)
MAX_MEMBERS = 100_000
MAX_NODES = 4096                    # a 1000-layer network; keeps every pass over the graph quick
MAX_SEQ_LEN = 1 << 20
_INT_DTYPES = ("int8", "int16", "int32", "int64")
# Node names become trace keys, .npz member names and terminal text: dotted identifiers only, none of
# them a key the traces already use
_NODE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*\Z")
RESERVED_NAMES = ("logits", "seconds", "labels", "indices", "engine")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


def _narrow(a: np.ndarray) -> np.ndarray:
    """The narrowest signed integer dtype holding every value (deterministic storage)."""
    if a.size == 0:
        return a.astype(np.int8)
    lo, hi = int(a.min()), int(a.max())
    for dt in (np.int8, np.int16, np.int32):
        if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
            return a.astype(dt)
    return a.astype(np.int64)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _scalar(v):
    return v.item() if isinstance(v, np.generic) else v


def manifest_and_arrays(program: Program):
    arrays, nodes = {}, []
    for node in program.nodes:
        cls = type(node.op)
        entry = {"name": node.name, "type": cls.__name__, "layer": node.layer,
                 "params": {f: _scalar(getattr(node.op, f)) for f, _ in scalar_fields(cls)}, "arrays": {}}
        for f, kind in array_fields(cls):
            member = f"{node.name}.{f}.npy"
            value = getattr(node.op, f)
            arrays[member] = _narrow(np.asarray(value)) if kind == "int" else np.asarray(value, dtype=np.float64)
            entry["arrays"][f] = member
        nodes.append(entry)
    manifest = {
        "format": FORMAT, "version": VERSION, "model": program.model, "nodes": nodes,
        "edges": [list(e) for e in program.edges], "delays": program.delays,
        "arrays": {m: {"shape": list(a.shape), "dtype": str(a.dtype)} for m, a in sorted(arrays.items())},
        "report": program.report,
    }
    return manifest, arrays


def save_program(program: Program, path: str, inputs: Iterable[str] = ()) -> None:
    """Write ``program`` to ``path`` as a ``.loihi2`` artifact: byte-deterministic (the same program
    gives the same bytes), written atomically; refuses to overwrite any of ``inputs`` (e.g. the checkpoint)."""
    manifest, arrays = manifest_and_arrays(program)

    def write(fh):
        with zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
            def put(name, data):
                info = zipfile.ZipInfo(name, date_time=_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, data)
            put("manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode())
            for name in sorted(arrays):
                put(name, _npy_bytes(arrays[name]))
    write_atomic(path, write, inputs)


# ------------------------------------------------------------------ loading = verifying
class _Refuse(Exception):
    pass


def _need(cond, msg):
    if not cond:
        raise _Refuse(msg)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _typed(value, typ, where):
    if typ in (int, "int"):
        _need(_is_int(value), f"{where} must be an integer, got {value!r}"[:200])
        _need(abs(value) < 2 ** 62, f"{where} is out of range")
    elif typ in (float, "float"):
        _need(isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value),
              f"{where} must be a finite number, got {value!r}"[:200])
        value = float(value)
    elif typ in (bool, "bool"):
        _need(isinstance(value, bool), f"{where} must be true or false")
    return value


def _expected_npy_data_bytes(spec) -> int:
    return int(np.prod(spec["shape"], dtype=np.int64)) * np.dtype(spec["dtype"]).itemsize


def _read_manifest(zf: zipfile.ZipFile) -> dict:
    try:
        info = zf.getinfo("manifest.json")
    except KeyError:
        raise _Refuse("not a neurocompile artifact (no manifest.json)") from None
    _need(info.file_size <= MAX_MANIFEST_BYTES, f"manifest.json claims {info.file_size} bytes (limit {MAX_MANIFEST_BYTES})")
    def no_constants(name):
        raise ValueError(f"{name} is not JSON")
    try:
        manifest = json.loads(zf.read(info), parse_constant=no_constants)
    except (ValueError, RecursionError) as exc:
        raise _Refuse(f"corrupt manifest ({type(exc).__name__}: {str(exc)[:120]})") from None
    _need(isinstance(manifest, dict), "corrupt manifest (not a JSON object)")
    _need(manifest.get("format") == FORMAT, f"not a neurocompile artifact (format {str(manifest.get('format'))[:60]!r})")
    version = manifest.get("version")
    _need(version == VERSION, f"artifact format version {str(version)[:20]} is not supported (this neurocompile reads "
          f"version {VERSION}); re-export it from its checkpoint with this neurocompile")
    for key, typ in (("model", dict), ("nodes", list), ("edges", list), ("delays", dict), ("arrays", dict),
                     ("report", dict)):
        _need(isinstance(manifest.get(key), typ), f"manifest field '{key}' is missing or not a {typ.__name__}")
    _need(len(manifest["nodes"]) <= MAX_NODES, f"{len(manifest['nodes'])} nodes (limit {MAX_NODES})")
    _need(len(manifest["edges"]) <= 2 * MAX_NODES, f"{len(manifest['edges'])} edges (limit {2 * MAX_NODES})")
    return manifest


def _check_array_specs(zf: zipfile.ZipFile, manifest: dict) -> None:
    """Bound every member against its declared shape before anything is inflated."""
    specs = manifest["arrays"]
    _need(len(specs) <= MAX_MEMBERS, f"{len(specs)} arrays declared (limit {MAX_MEMBERS})")
    names = zf.namelist()
    _need(len(set(names)) == len(names), "the zip holds two members of the same name")
    extra = sorted(set(names) - set(specs) - {"manifest.json"})
    if extra:
        raise _Refuse(f"member {str(extra[0])[:80]!r} is not declared in the manifest ({len(extra)} undeclared)")
    total = 0
    for member, spec in specs.items():
        _need(isinstance(member, str) and member.endswith(".npy"), f"array member {str(member)[:80]!r} is not an .npy")
        _need(isinstance(spec, dict) and isinstance(spec.get("shape"), list) and len(spec["shape"]) <= 4
              and all(_is_int(d) and 0 <= d <= MAX_SEQ_LEN * 4 for d in spec["shape"]),
              f"array {member}: bad shape {str(spec)[:80]}")
        _need(spec.get("dtype") in _INT_DTYPES + ("float64",), f"array {member}: dtype {str(spec.get('dtype'))[:20]} "
              "is not allowed (int8..int64, float64)")
        data = _expected_npy_data_bytes(spec)
        total += int(np.prod(spec["shape"], dtype=np.int64)) * 8
        _need(total <= MAX_ARRAY_BYTES, f"arrays need more than {MAX_ARRAY_BYTES >> 20} MiB")
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise _Refuse(f"array {member} is missing") from None
        _need(data + 64 <= info.file_size <= data + 4096,
              f"array {member} holds {info.file_size} bytes, its shape {spec['shape']} {spec['dtype']} needs {data}")


def _load_array(zf, member, spec):
    try:
        data = io.BytesIO(zf.read(member))
        version = np.lib.format.read_magic(data)
        _need(version in ((1, 0), (2, 0)), f"array {member}: .npy format version {version} is not supported")
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(data)
        # the header, not the manifest, decides what np.load allocates: it must say what the manifest says
        _need(list(shape) == spec["shape"] and str(dtype) == spec["dtype"],
              f"array {member}: its .npy header says {str(shape)[:60]} {str(dtype)[:20]}, the manifest says "
              f"{spec['shape']} {spec['dtype']}")
        data.seek(0)
        arr = np.load(data, allow_pickle=False)
    except (ValueError, SyntaxError, tokenize.TokenError, RecursionError, zipfile.BadZipFile, OSError, EOFError, KeyError,
            zlib.error) as exc:            # a malformed .npy header trips numpy's parser in any of these ways
        raise _Refuse(f"array {member} is corrupt ({type(exc).__name__}: {str(exc)[:120]})") from None
    _need(list(arr.shape) == spec["shape"] and str(arr.dtype) == spec["dtype"],
          f"array {member} has shape {arr.shape} {arr.dtype}, the manifest says {spec['shape']} {spec['dtype']}")
    return arr


def _build_node(entry, zf, specs, used):
    _need(isinstance(entry, dict), "a node entry is not an object")
    name, type_name = entry.get("name"), entry.get("type")
    _need(isinstance(name, str) and len(name) <= 200 and _NODE_NAME.match(name) and name not in RESERVED_NAMES,
          f"node name {str(name)[:60]!r} is not valid (dotted identifiers only, not {', '.join(RESERVED_NAMES)})")
    _need(type_name in INT_NODES, f"node {name}: unknown node type {str(type_name)[:60]!r} "
          f"(known: {', '.join(INT_NODES)})")
    cls = INT_NODES[type_name]
    params, members = entry.get("params"), entry.get("arrays")
    layer = entry.get("layer")
    _need(layer is None or (_is_int(layer) and 0 <= layer < 100_000), f"node {name}: bad layer {str(layer)[:20]}")
    _need(isinstance(params, dict) and isinstance(members, dict), f"node {name}: params/arrays missing")
    scalars, arrays = dict(scalar_fields(cls)), dict(array_fields(cls))
    _need(set(params) == set(scalars), f"node {name}: {type_name} takes params {sorted(scalars)}, got {sorted(params)}")
    _need(set(members) == set(arrays), f"node {name}: {type_name} takes arrays {sorted(arrays)}, got {sorted(members)}")
    kwargs = {f: _typed(params[f], typ, f"node {name} param {f}") for f, typ in scalars.items()}
    for f, kind in arrays.items():
        member = members[f]
        _need(member in specs, f"node {name}: array {str(member)[:80]} is not declared")
        _need(member not in used, f"node {name}: array {member} is used twice")
        used.add(member)
        a = _load_array(zf, member, specs[member])
        if kind == "int":
            _need(a.dtype.kind == "i", f"node {name}: {f} must hold integers, holds {a.dtype}")
            a = a.astype(np.int64)
            # as for scalar params: the interval rules add and multiply these in int64
            _need(not a.size or (int(a.min()) > -2 ** 62 and int(a.max()) < 2 ** 62),
                  f"node {name}: {f} holds a value beyond +-2**62")
        else:
            _need(a.dtype == np.float64, f"node {name}: {f} must be float64")
            _need(bool(np.isfinite(a).all()), f"node {name}: {f} holds NaN or Inf")
        kwargs[f] = a
    return ProgramNode(name, cls(**kwargs), layer)


def _check_graph(nodes, edges, model) -> None:
    names = [n.name for n in nodes]
    _need(len(set(names)) == len(names), "duplicate node names")
    voltages = {n.name + ".v" for n in nodes if getattr(type(n.op), "TRACE", None) == "spikes"}
    clash = sorted(voltages & set(names))
    if clash:
        raise _Refuse(f"node name {clash[0]!r} collides with the membrane trace of node {clash[0][:-2]!r}")
    order = {n: i for i, n in enumerate(names)}
    by_name = dict(zip(names, nodes))
    seen = set()
    for e in edges:
        _need(isinstance(e, list) and len(e) == 3 and all(isinstance(x, str) for x in e), f"bad edge {str(e)[:80]}")
        src, dst, port = e
        _need(src in order and dst in order, f"edge {src[:60]} -> {dst[:60]} names an unknown node")
        _need(order[src] < order[dst], f"edge {src} -> {dst} goes backwards (nodes must be in data-flow order)")
        _need(port in type(by_name[dst].op).PORTS, f"edge {src} -> {dst}: {dst} has no port {port[:40]!r}")
        _need((dst, port) not in seen, f"{dst} port {port} is fed twice")
        seen.add((dst, port))
    for n in nodes:
        for port in type(n.op).PORTS:
            _need((n.name, port) in seen, f"{n.name} port {port} is not connected")
    kinds = [type(n.op) for n in nodes]
    _need(kinds.count(IntInput) == 1 and kinds.count(IntReadout) == 1, "needs exactly one input and one readout node")
    L = model.get("l_max")
    _need(_is_int(L) and 1 <= L <= MAX_SEQ_LEN, f"model l_max {str(L)[:20]} is not valid")


def load_program(path: str, target: Target | None = None) -> Program:
    """Read a ``.loihi2`` artifact written by ``save_program`` (or ``neurocompile export``).

    Loading is verifying: every member is bounded before it is inflated, the graph and array shapes
    are checked, and the register ranges are proved again from the stored integers with the
    compiler's own interval rules for ``target`` (default Loihi 2), so a program that loads runs
    bit-exactly in the emulator and on Lava.  Anything else raises ``ArtifactError`` naming the file."""
    from .target import get_target
    target = target or get_target()
    try:
        fh = open_input(path, "artifact file")
    except InputFileError as exc:
        raise ArtifactError(str(exc)) from None
    try:
        with fh, zipfile.ZipFile(fh) as zf:
            for info in zf.infolist():
                problem = zip_member_problem(info)
                _need(problem is None, problem)
            manifest = _read_manifest(zf)
            _check_array_specs(zf, manifest)
            used = set()
            nodes = tuple(_build_node(e, zf, manifest["arrays"], used) for e in manifest["nodes"])
        _check_graph(nodes, manifest["edges"], manifest["model"])
        program = Program(nodes, tuple(tuple(e) for e in manifest["edges"]), manifest["model"], {}, manifest["report"])
        program = verified(program, manifest["delays"], target)
    except _Refuse as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, EOFError, NotImplementedError) as exc:
        raise ArtifactError(f"{path}: not a readable artifact ({type(exc).__name__}: {str(exc)[:160]})") from None
    except (RangeError, ShapeError) as exc:
        raise ArtifactError(f"{path}: refused: {exc}") from None
    except NeurocompileError as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    except (KeyError, TypeError, AttributeError, ValueError, IndexError, RecursionError, OverflowError) as exc:
        # the checks above cover the format; anything else a malformed manifest trips is refused too
        raise ArtifactError(f"{path}: malformed artifact ({type(exc).__name__}: {str(exc)[:160]})") from None
    return program


def verified(program: Program, stored_delays: dict, target) -> Program:
    """The program with recomputed delays, if every check the compiler made holds again."""
    from .input_format import InputFormat
    from .passes.align import node_delays

    L = program.seq_len
    for name, count in program.channel_counts().items():
        _need(count >= 1, f"node {name} has no output channels")
    _need(isinstance(program.model.get("kind"), str), "model kind is not a string")
    try:
        fmt = InputFormat.from_dict(program.model.get("input"))
    except (ValueError, TypeError, KeyError) as exc:
        raise _Refuse(f"model input format is not valid ({str(exc)[:100]})") from None
    inp = program.op(program.input_node)
    _need(inp.levels == fmt.max_raw and inp.tokens == (fmt.kind == "tokens"),
          "the input node disagrees with the recorded input format")
    delays = node_delays(program, target)
    _need(stored_delays == delays, "stored delays disagree with the graph")
    rows, _ = register_table(program, Context(L, target))
    for node, reg, worst, limit in rows:
        if worst > limit:
            raise RangeError(f"{node} {reg} can reach {worst}, beyond its limit {limit}: not provably safe")
    problems = target.check(program)
    if problems:
        raise RangeError(problems[0])
    _check_report(program, rows, delays, target)
    _check_model_claims(program)
    return Program(program.nodes, program.edges, program.model, delays, program.report)


def _finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_report(program: Program, rows, delays: dict, target) -> None:
    """The compile report is what ``inspect`` prints and ``validate`` reads: its proof tables must be
    the proof just made (register table, operation summary, latency), the rest well typed."""
    from .operations import operation_summary
    from .passes.ranges import range_report

    report = program.report
    _need(report.get("ranges") == range_report(rows),
          "the stored register table disagrees with the range proof of the stored integers")
    _need(report.get("operations") == json.loads(json.dumps(operation_summary(program, program.seq_len))),
          "the stored operation summary disagrees with the graph")
    latency = delays[program.inputs(program.output_node)["main"]]
    _need(_is_int(report.get("latency_steps")) and report["latency_steps"] == latency,
          f"stored latency {str(report.get('latency_steps'))[:20]} disagrees with the graph ({latency} steps)")
    _need(report.get("target") == target.name,
          f"compiled for target {str(report.get('target'))[:40]!r}, not {target.name!r}")
    frac = report.get("stream_frac_bits")
    _need(isinstance(frac, list) and frac and all(_is_int(f) and abs(f) < 2 ** 31 for f in frac),
          "report field 'stream_frac_bits' is not a list of integers")
    errors = report.get("quantization_error", {})
    _need(isinstance(errors, dict) and all(isinstance(k, str) and _finite_number(v) for k, v in errors.items()),
          "report field 'quantization_error' is not a table of finite numbers")
    for key in ("source", "options", "ssm_lowering"):
        _need(isinstance(report.get(key, {}), dict), f"report field '{key}' is not an object")
    source = report.get("source", {})
    digest = source.get("weights_sha256")
    # a program compiled from a checkpoint carries the digest of its weights (validate pairs on it); one
    # compiled from a float graph in Python has no source at all, and so can be paired with nothing
    _need((isinstance(digest, str) and _SHA256.match(digest)) or not source,
          "report field 'source.weights_sha256' (the digest of the weights it was compiled from) is missing or "
          "not a SHA-256; re-export it from its checkpoint with this neurocompile")


def layer_count(program: Program) -> int:
    return len({n.layer for n in program.nodes if n.layer is not None})


def stream_width(program: Program) -> int:
    """Channels of the residual stream: what the readout reads."""
    return program.channel_counts()[program.inputs(program.output_node)["main"]]


def _check_model_claims(program: Program) -> None:
    """The model fields ``inspect`` prints must be what the stored graph is."""
    m = program.model
    for field, actual in (("n_layers", layer_count(program)), ("d_model", stream_width(program)),
                          ("d_output", program.n_classes)):
        _need(m.get(field) == actual, f"the manifest says {field} = {str(m.get(field))[:20]}, the stored graph has {actual}")

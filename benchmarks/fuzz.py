#!/usr/bin/env python
"""Fuzz every loader and CLI path with mutated artifacts, checkpoints and user data (issue 8), with
a hostile environment (issue 14), and the shard store, work-dir, scratch folders and Ray (issue 20).

    python benchmarks/fuzz.py --artifacts 8000 --checkpoints 1200 --data 800 --env 1500 --store 300 --lava 3 \\
        --seed 0 --jobs 2 --out benchmarks/results/fuzz.json --md benchmarks/results/fuzz.md

Issue 14's families: artifact mutants whose node names collide with the traces file's keys or are
paths, whose manifest claims disagree with the stored integers (layers, widths, classes, kind, the
compiled-from weights digest) or that carry undeclared members; checkpoints with config numbers
beyond float range, pickle opcode floods and terminal escape sequences in their strings; and
``env`` cases: FIFOs, sockets, devices, folders and symlinks (dangling, chained, to /dev/zero, to
/proc/self/fd/1) as inputs and outputs, a signal (TERM, HUP, QUIT, USR1, USR2, INT, KILL) sent at a
random point of a command (then a second run in the same folder must clear what a killed one left),
seeds and counts beyond their stated bounds, and the same weights re-saved with another pickle
protocol (``validate`` must still pair them).  No terminal control character may reach stdout or an
error line, and a traces file written must have collision-free, path-free member names.

Issue 20's families (``--store N`` cases, ids ``store-NNNNN``; ``--store 0 --env 0 ...`` runs only
others, ``--artifacts 0 --checkpoints 0 --data 0 --env 0 --lava 0 --store N`` only these):
``work_dir``: ``validate --lava-samples 0 --max-samples 8 --work-dir W`` (sometimes ``--workers 2``) where
W, W/shards, W/scratch or a stale scratch pointer in it is a FIFO, a socket, a regular file, a link to
/dev/zero, a dangling link or a link to a folder outside the case folder; W missing (parent there:
created, ok; parent missing: one line); or W populated by a first validate, then one stored shard
replaced by a FIFO, a folder, a socket or a link (the rerun ends with one line naming it) or
truncated, bit-flipped, swapped, emptied or removed (recomputed: the rerun is ok and its report equals
the first one, timings and command line aside).  ``signal_work_dir``: SIGTERM, SIGHUP or SIGINT during
``validate --work-dir W --workers 2``; every shard file stored when the signal is sent must still be
there, byte for byte, after the stop and after the rerun, which must be ok.  ``ray_address``:
``--ray-address A --ray-connect-timeout 3`` for a closed port, garbage, an unresolvable host: one line
beginning with A, exit 2 (each command in a grandchild: after a Ray join that timed out the CLI ends
its own process); no cases when ``ray`` is not importable (the results say so).  An expected refusal
must be one line beginning with the path it is about; a sentinel file in a folder outside the case
folder (a link target) must stay as it was, and nothing may be added there unless W itself links to it.

Seeds: ``examples/digits/ckpt.pt`` compiled once with ``neurocompile export``, plus a small
bidirectional / prenorm-BatchNorm / Embedding SpikingSSM written in the official Lightning layout
(``tests/official_layout.py``), the authors' ``.ckpt`` fixtures, and valid user data for both
artifacts.  Each case mutates one input deterministically (the case id and ``--seed`` fix it) and
runs it through the real code: ``neurocompile.cli.main([...])`` in-process for ``inspect``,
``export``, ``simulate --engine emulator`` and ``validate --lava-samples 0``.

Every case runs in a child forked from this (warmed) process, in its own folder, with its stdout
and stderr captured, an address-space bound (``RLIMIT_AS``, ``--mem-gib``) and a wall-clock
timeout.  Outcomes:

* ``clean_error``: exit 2 and exactly one stderr line, ``neurocompile: error: ...`` naming one of
  the command's input files (validate's progress bars are not counted as lines);
* ``ok``: exit 0; for an accepted artifact the emulator's two back ends (``compiled`` and
  ``torch``) must give identical traces, and for up to ``--lava`` accepted mutants Lava must
  equal the emulator bit for bit;

and the failures: ``traceback`` (an exception escaped, or any other stderr / exit code),
``hang`` (timeout), ``crash`` (the child died, or ran out of memory), ``partial_output`` (a file
or ``.tmp-*`` left behind by a failed command, or an undeclared file after a successful one),
``input_changed`` (an input's bytes or mode changed), ``unsound`` (an accepted mutant whose runs
disagree, or that the loader accepts and the run refuses), ``code_executed`` (a pickle payload's
marker file appeared) and ``shm_leak`` (a ``/dev/shm/psm_*`` segment of ours left behind).

Two Lava runs are interrupted on purpose (a timeout, and SIGINT while the network runs): both must
end with one line and leave no shared memory.  ``/dev/shm`` is compared before and after the run.

Reproduce one case: ``python benchmarks/fuzz.py --seed 0 --only art-00042 --keep /tmp/case`` (or
``--only store-00024``).
"""
from __future__ import annotations

import argparse
import base64
import copy
import dataclasses
import glob
import hashlib
import io
import json
import os
import re
import resource
import shutil
import signal
import stat
import struct
import sys
import tempfile
import time
import traceback
import zipfile
import zlib
from collections import Counter, OrderedDict, defaultdict

import numpy as np

from neurocompile.artifact import VERSION as ARTIFACT_VERSION

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CATEGORIES = ("clean_error", "ok", "traceback", "hang", "crash", "partial_output", "input_changed", "unsound",
              "code_executed", "shm_leak")
FAILURES = CATEGORIES[2:]
SHM_DIR = "/dev/shm"
INT_EXTREMES = [0, 1, -1, 2, -2, 2 ** 23 - 1, -(2 ** 23), 2 ** 23, 2 ** 31 - 1, -(2 ** 31), 2 ** 31, 2 ** 62, -(2 ** 62),
                2 ** 63 - 1, -(2 ** 63)]
FLOAT_EXTREMES = [float("nan"), float("inf"), float("-inf"), 1e300, -1e300, 1e30, 3e4, -3e4, 5e-324, -0.0, 0.0]
JSON_WEIRD = [None, True, False, 0, 1, -1, 2, 255, 2 ** 23, -(2 ** 23), 2 ** 31, -(2 ** 31), 2 ** 62, -(2 ** 62), 2 ** 63,
              -(2 ** 63) - 1, 2 ** 64, 10 ** 30, 0.5, -0.0, 1e300, float("nan"), float("inf"), float("-inf"), "NaN",
              "Infinity", "", "0", "64", "x" * 5000, [], [0], [[]], [None], {}, {"a": 1}, {"kind": "levels"}, [1] * 5000]
TQDM_LINE = re.compile(r"^(float\+integer|Lava):\s+\d+%\|")


# ============================================================================ zip helpers
def read_zip(data: bytes) -> list:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


def write_zip(entries, method=zipfile.ZIP_DEFLATED) -> bytes:
    """Deterministic zip of (name, bytes) entries with correct CRCs; duplicate names allowed."""
    import warnings
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(buf, "w", method) as zf:
            for name, data in entries:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = method
                info.external_attr = 0o644 << 16
                zf.writestr(info, data)
    return buf.getvalue()


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def raw_zip(entries) -> bytes:
    """A zip written field by field, so headers can lie.  Each entry: dict(name, payload (as stored),
    method, crc, csize, usize, flags) -- csize/usize/crc default to the truth for the payload."""
    out, central = io.BytesIO(), []
    for e in entries:
        name = e["name"].encode() if isinstance(e["name"], str) else e["name"]
        payload = e["payload"]
        crc, csize, usize = e.get("crc"), e.get("csize", len(payload)), e.get("usize")
        method, flags = e.get("method", 8), e.get("flags", 0)
        offset = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, method, 0, 33, crc & 0xFFFFFFFF,
                              csize & 0xFFFFFFFF, usize & 0xFFFFFFFF, len(name), 0) + name + payload)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, flags, method, 0, 33, crc & 0xFFFFFFFF,
                                   e.get("cd_csize", csize) & 0xFFFFFFFF, e.get("cd_usize", usize) & 0xFFFFFFFF,
                                   len(name), 0, 0, 0, 0, 0o644 << 16, offset) + name)
    cd_offset = out.tell()
    for c in central:
        out.write(c)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), out.tell() - cd_offset,
                          cd_offset, 0))
    return out.getvalue()


def honest_entry(name, data, compress=True):
    payload = raw_deflate(data) if compress else data
    return {"name": name, "payload": payload, "method": 8 if compress else 0, "crc": zlib.crc32(data),
            "usize": len(data)}


def central_records(data: bytes) -> list:
    """Offsets of (local header, central record) fields of each member of an honest zip."""
    recs = []
    pos = data.rfind(b"PK\x05\x06")
    if pos < 0:
        return recs
    count, _, cd_offset = struct.unpack_from("<HII", data, pos + 10)
    p = cd_offset
    for _ in range(count):
        if data[p:p + 4] != b"PK\x01\x02":
            break
        n, x, c = struct.unpack_from("<HHH", data, p + 28)
        local = struct.unpack_from("<I", data, p + 42)[0]
        recs.append({"cd": p, "local": local})
        p += 46 + n + x + c
    return recs


_BOMB = {}


def deflate_bomb(size: int = 256 << 20) -> bytes:
    """A raw deflate stream of ``size`` zero bytes (~1000:1), made once."""
    if size not in _BOMB:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        chunk, parts = bytes(1 << 20), []
        for _ in range(size >> 20):
            parts.append(c.compress(chunk))
        parts.append(c.flush())
        _BOMB[size] = b"".join(parts)
    return _BOMB[size]


_ZEROS = {}


def deflated_zeros(head: bytes, n: int) -> dict:
    """A zip entry payload: ``head`` then ``n`` zero bytes, deflated, with its true CRC and size
    (an honest member that inflates ~1000:1)."""
    if (head, n) not in _ZEROS:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        parts, crc = [c.compress(head)], zlib.crc32(head)
        chunk = bytes(1 << 20)
        left = n
        while left:
            k = min(left, len(chunk))
            parts.append(c.compress(chunk[:k]))
            crc = zlib.crc32(chunk[:k], crc)
            left -= k
        parts.append(c.flush())
        _ZEROS[(head, n)] = {"payload": b"".join(parts), "method": 8, "crc": crc, "usize": len(head) + n}
    return dict(_ZEROS[(head, n)])


def npy_bytes(a, allow_pickle=False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=allow_pickle)
    return buf.getvalue()


def npz_bytes(arrays: dict, compressed=False) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def npy_with_header(header: str, body: bytes = b"", version=(1, 0)) -> bytes:
    """An .npy file with a hand-written header dict (padded as numpy pads it)."""
    h = header.encode("latin1")
    if version == (1, 0):
        pad = 64 - (10 + len(h) + 1) % 64
        h = h + b" " * (pad % 64) + b"\n"
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + body
    pad = 64 - (12 + len(h) + 1) % 64
    h = h + b" " * (pad % 64) + b"\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack("<I", len(h)) + h + body


# ============================================================================ byte mutators
def bytes_bitflip(rng, data: bytes) -> tuple:
    b = bytearray(data)
    n = int(rng.integers(1, 17))
    region = rng.choice(["anywhere", "tail", "head"])
    for _ in range(n):
        if region == "tail":
            i = int(rng.integers(max(0, len(b) - 4096), len(b)))
        elif region == "head":
            i = int(rng.integers(0, min(len(b), 512)))
        else:
            i = int(rng.integers(0, len(b)))
        b[i] ^= 1 << int(rng.integers(0, 8))
    return bytes(b), f"{n} bit(s) flipped ({region})"


def bytes_truncate(rng, data: bytes) -> tuple:
    cut = int(rng.choice([0, 1, 4, 22, int(rng.integers(0, len(data)))] + [len(data) - int(rng.integers(1, 200))]))
    cut = max(0, min(cut, len(data) - 1))
    return data[:cut], f"truncated to {cut} of {len(data)} bytes"


def bytes_append(rng, data: bytes) -> tuple:
    n = int(rng.choice([1, 22, 100, 4096, 70000]))
    junk = rng.bytes(n) if rng.random() < 0.7 else data[-n:]
    return data + junk, f"{n} junk bytes appended"


def bytes_prepend(rng, data: bytes) -> tuple:
    n = int(rng.choice([1, 30, 512]))
    return rng.bytes(n) + data, f"{n} junk bytes prepended"


def bytes_zero(rng, data: bytes) -> tuple:
    start = int(rng.integers(0, len(data)))
    n = int(rng.choice([1, 4, 64, 1024, len(data)]))
    b = bytearray(data)
    b[start:start + n] = bytes(len(b[start:start + n]))
    return bytes(b), f"bytes {start}..{start + n} zeroed"


def zip_field_edit(rng, data: bytes) -> tuple:
    """Edit a size / CRC / method / flag / offset field of a central or local record."""
    recs = central_records(data)
    if not recs:
        return bytes_bitflip(rng, data)
    r = recs[int(rng.integers(len(recs)))]
    b = bytearray(data)
    field = str(rng.choice(["cd_usize", "cd_csize", "local_usize", "local_csize", "both_usize", "method", "flags",
                            "crc", "offset", "name_len", "count"]))
    value = int(rng.choice([0, 1, 7, 100, 65535, 2 ** 31, 2 ** 32 - 1, int(rng.integers(0, 2 ** 32))]))
    if field in ("cd_usize", "both_usize"):
        struct.pack_into("<I", b, r["cd"] + 24, value)
    if field in ("local_usize", "both_usize"):
        struct.pack_into("<I", b, r["local"] + 22, value)
    if field == "cd_csize":
        struct.pack_into("<I", b, r["cd"] + 20, value)
    if field == "local_csize":
        struct.pack_into("<I", b, r["local"] + 18, value)
    if field == "method":
        value = int(rng.choice([0, 1, 9, 12, 14, 93, 99, 65535]))
        struct.pack_into("<H", b, r["cd"] + 10, value)
        if rng.random() < 0.5:
            struct.pack_into("<H", b, r["local"] + 8, value)
    if field == "flags":
        value = int(rng.choice([1, 8, 0x41, 0x800, 0xFFFF]))
        struct.pack_into("<H", b, r["cd"] + 8, value)
        struct.pack_into("<H", b, r["local"] + 6, value)
    if field == "crc":
        struct.pack_into("<I", b, r["cd"] + 16, value)
    if field == "offset":
        struct.pack_into("<I", b, r["cd"] + 42, value)
    if field == "name_len":
        value = int(rng.choice([0, 1, 65535]))
        struct.pack_into("<H", b, r["cd"] + 28, value)
    if field == "count":
        pos = data.rfind(b"PK\x05\x06")
        value = int(rng.choice([0, 1, 65535]))
        struct.pack_into("<HH", b, pos + 8, value, value)
    return bytes(b), f"zip field {field} set to {value}"


def zip_encrypted(rng, data: bytes) -> tuple:
    recs = central_records(data)
    b = bytearray(data)
    r = recs[int(rng.integers(len(recs)))]
    struct.pack_into("<H", b, r["cd"] + 8, 1)
    struct.pack_into("<H", b, r["local"] + 6, 1)
    return bytes(b), "a member flagged as encrypted"


def zip_members(rng, entries: list, what: str, pick=None) -> tuple:
    """Member-level edits of a list of (name, bytes)."""
    entries = list(entries)
    i = pick if pick is not None else int(rng.integers(len(entries)))
    name, data = entries[i]
    if what == "remove":
        del entries[i]
        return write_zip(entries), f"member {name} removed"
    if what == "duplicate":
        other = rng.bytes(len(data)) if rng.random() < 0.5 else data
        entries.insert(int(rng.integers(len(entries) + 1)), (name, other))
        return write_zip(entries), f"member {name} duplicated"
    if what == "rename":
        new = str(rng.choice([name + ".bak", "../" + name, "/" + name, name.upper(), "x" * 300, name.replace(".", "/"),
                              "", " " + name]))
        entries[i] = (new, data)
        return write_zip(entries), f"member {name} renamed to {new[:40]!r}"
    if what == "garbage":
        n = int(rng.choice([0, 1, 10, len(data), 2 * len(data) + 1]))
        entries[i] = (name, rng.bytes(n))
        return write_zip(entries), f"member {name} replaced by {n} random bytes"
    if what == "stored":
        return write_zip(entries, zipfile.ZIP_STORED), "every member stored uncompressed"
    if what == "bomb":
        claimed = int(rng.choice([len(data), 100, 0, 2 ** 32 - 1]))
        crc = zlib.crc32(data) if rng.random() < 0.5 else zlib.crc32(bytes(claimed if claimed < 1 << 20 else 0))
        raw = [honest_entry(n, d) for n, d in entries]
        raw[i] = {"name": name, "payload": deflate_bomb(), "method": 8, "crc": crc, "usize": claimed}
        return raw_zip(raw), f"member {name} replaced by a deflate bomb of 256 MiB claiming {claimed} bytes"
    raise ValueError(what)


# ============================================================================ seeds
class Seeds:
    """Everything mutants are made from, built once (deterministically) in ``folder``."""

    def __init__(self, folder: str):
        import torch

        from neurocompile.cli import main as cli

        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from official_layout import write_official
        from test_spikingssm_oracle import trained_looking

        from neurocompile.models.config import SpikingSSMConfig
        from neurocompile.models import torchzip

        digits_ckpt = os.path.join(ROOT, "examples", "digits", "ckpt.pt")
        small = os.path.join(folder, "small_official.ckpt")
        cfg = SpikingSSMConfig(d_model=12, n_layers=2, d_state=8, l_max=24, bidirectional=True, prenorm=True,
                               norm="batch", encoder="embedding", n_tokens=10, kernel="diag_b")
        write_official(small, trained_looking(cfg, seed=7, encoder_gain=6.0))
        self.checkpoint_paths = {"digits.pt": digits_ckpt, "small_official.ckpt": small,
                                 "pspikessm_digits.pt": os.path.join(ROOT, "examples", "pspikessm-digits", "ckpt.pt")}
        fixtures = os.path.join(ROOT, "tests", "fixtures", "official")
        for f in sorted(os.listdir(fixtures)):
            if f.endswith(".ckpt"):
                self.checkpoint_paths[f] = os.path.join(fixtures, f)
        self.checkpoints = {k: open(p, "rb").read() for k, p in self.checkpoint_paths.items()}
        # plain object graphs (tensors included) of every checkpoint, for structural mutators
        self.checkpoint_objects = {k: _to_saveable(torchzip.plain(torchzip.load(p)))
                                   for k, p in self.checkpoint_paths.items()}
        # artifacts, compiled by the real CLI
        self.artifacts, self.artifact_of = {}, {}
        with open(os.devnull, "w") as null:
            saved = sys.stdout
            sys.stdout = null
            try:
                for name, ckpt in (("digits", digits_ckpt), ("small_official", small)):
                    out = os.path.join(folder, name + ".loihi2")
                    if cli(["export", ckpt, "-o", out]) != 0:
                        raise RuntimeError(f"seed export of {ckpt} failed")
                    self.artifacts[name] = open(out, "rb").read()
            finally:
                sys.stdout = saved
        self.artifact_of = {"digits.pt": "digits", "small_official.ckpt": "small_official"}
        self.ckpt_of = {"digits": "digits.pt", "small_official": "small_official.ckpt"}
        self.manifests = {k: _manifest_and_members(v) for k, v in self.artifacts.items()}
        # valid user data for each artifact
        rng = np.random.default_rng(12345)
        self.data = {
            "digits": {"x": rng.integers(0, 17, (12, 64)).astype(np.int64), "y": rng.integers(0, 10, 12)},
            "small_official": {"x": rng.integers(0, 10, (12, 24)).astype(np.int64), "y": rng.integers(0, 10, 12)},
        }
        self.data_bytes = {k: npz_bytes(v) for k, v in self.data.items()}
        self.digests = {}
        from neurocompile.artifact import load_program
        for k in self.artifacts:
            self.digests[k] = program_digest(load_program(os.path.join(folder, k + ".loihi2")))
        del torch


def _to_saveable(obj):
    """torchzip's plain output with dict subclasses turned into OrderedDicts (torch.save-able, allow-listed)."""
    if isinstance(obj, dict):
        return OrderedDict((k, _to_saveable(v)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_to_saveable(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_saveable(v) for v in obj)
    if hasattr(obj, "clone") and hasattr(obj, "dtype"):
        return obj.clone().contiguous()
    return obj


def _manifest_and_members(data: bytes):
    entries = read_zip(data)
    manifest = json.loads(dict(entries)["manifest.json"])
    return manifest, entries


def program_digest(program) -> str:
    """Hash of what the fixed-point runs compute: integer arrays and integer/bool params of every node,
    the edges, the sequence length and the input format (not float twins, tau, or descriptive fields)."""
    from neurocompile.ir import array_fields, scalar_fields
    h = hashlib.sha256()
    for node in program.nodes:
        cls = type(node.op)
        h.update(repr((node.name, cls.__name__)).encode())
        for f, kind in array_fields(cls):
            if kind == "int":
                v = np.ascontiguousarray(getattr(node.op, f), dtype=np.int64)
                h.update(repr((f, v.shape)).encode())
                h.update(v.tobytes())
        for f, typ in scalar_fields(cls):
            if typ in (int, "int", bool, "bool"):
                h.update(repr((f, getattr(node.op, f))).encode())
    h.update(repr(program.edges).encode())
    h.update(json.dumps([program.model.get("l_max"), program.model.get("input")], sort_keys=True).encode())
    return h.hexdigest()[:16]


# ============================================================================ cases
@dataclasses.dataclass
class Case:
    id: str
    kind: str                       # artifact | checkpoint | data | lava
    mutator: str
    seed: str
    note: str = ""
    files: dict = dataclasses.field(default_factory=dict)      # inputs: name -> bytes
    commands: list = dataclasses.field(default_factory=list)   # argv lists (run in the case folder)
    mutated: str = ""               # the mutated input
    outputs: tuple = ()             # files a successful command may write
    sound: str = ""                 # artifact to check for soundness when it loads
    marker: str = ""                # a file that must never appear
    lava: bool = False              # lava comparison of ``sound``
    interrupt: int = 0              # a signal sent once Lava created shared memory (SIGINT, SIGHUP...)
    expect: str = "input"           # input: errors name an input; any: any one line; interrupted: exit 130
    timeout: float = 180.0          # a 2000-node program takes ~50 s with its soundness runs on a busy machine
    specials: dict = dataclasses.field(default_factory=dict)   # name -> (kind, target): FIFOs, links, sockets...
    signal: tuple = ()              # (signum, delay_s): sent to the first command while it runs
    follow: list = dataclasses.field(default_factory=list)     # commands run after a killed one (clear its leftovers)
    # the shard store's families (kind "store")
    expects: tuple = ()             # per command (follow commands for a signalled case): ok | error | any
    keeps: tuple = ()               # top-level names a command may leave even when it fails or is stopped (a work-dir)
    outside: dict = dataclasses.field(default_factory=dict)    # sentinel files in a folder outside the case folder
    outside_writable: bool = False  # the command may add files outside (the work-dir is a link out): sentinels stay
    between: str = ""               # what is done to the stored shards between the first and the second command
    same_reports: tuple = ()        # two --json reports that must be identical (timings and command lines aside)
    store_dir: str = ""             # the work-dir whose shards stored before the signal must outlive it and the rerun
    forked: bool = False            # each command in a grandchild: the CLI may end its process itself (a Ray join)


FIXUP_MEMORY = 4 << 30              # RLIMIT_AS of the forked child that recomputes a mutant's bookkeeping
FIXUP_SECONDS = 60


def _fixup_bookkeeping(manifest: dict, arrays: dict) -> None:
    """What a buggy or hostile exporter would do: recompute delays and the report's proof tables for
    the mutated graph, so the mutant reaches the verifier's proof instead of its bookkeeping checks.

    The product code this runs (interval rules, operation counts) meets the mutant's arrays before any
    verifier has bounded them: it runs in a forked child under
    FIXUP_MEMORY and FIXUP_SECONDS, so a mutant can cost the campaign's own process nothing; when the
    child fails, the mutant keeps its bookkeeping as it is."""
    keys = ("delays", "report")
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            resource.setrlimit(resource.RLIMIT_AS, (FIXUP_MEMORY, FIXUP_MEMORY))
            signal.alarm(FIXUP_SECONDS)
            _fixup_in_place(manifest, arrays)
            with os.fdopen(w, "wb") as out:
                out.write(json.dumps({k: manifest.get(k) for k in keys},
                                     default=lambda o: o.item() if hasattr(o, "item") else str(o)).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as src:
        data = src.read()
    os.waitpid(pid, 0)
    try:
        manifest.update(json.loads(data))
    except ValueError:                                # the child failed: the mutant stays as it is
        pass


def _fixup_in_place(manifest: dict, arrays: dict) -> None:
    from neurocompile.intervals import Context, register_table
    from neurocompile.ir import INT_NODES, array_fields
    from neurocompile.operations import operation_summary
    from neurocompile.passes.align import node_delays
    from neurocompile.passes.ranges import range_report
    from neurocompile.program import Program, ProgramNode
    from neurocompile.targets.loihi2.target import LOIHI2

    try:
        nodes = []
        for e in manifest["nodes"]:
            cls = INT_NODES[e["type"]]
            kw = dict(e["params"])
            for f, kind in array_fields(cls):
                a = np.load(io.BytesIO(arrays[e["arrays"][f]]), allow_pickle=False)
                kw[f] = a.astype(np.int64 if kind == "int" else np.float64)
            nodes.append(ProgramNode(e["name"], cls(**kw), e.get("layer")))
        program = Program(tuple(nodes), tuple(tuple(x) for x in manifest["edges"]), manifest["model"])
        delays = node_delays(program, LOIHI2)
        manifest["delays"] = delays
        L = int(manifest["model"]["l_max"])
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows, _ = register_table(program, Context(L, LOIHI2))
            manifest["report"]["ranges"] = range_report(rows)
            manifest["report"]["operations"] = operation_summary(program, L)
        readout = program.output_node
        manifest["report"]["latency_steps"] = int(delays[program.inputs(readout)["main"]])
    except Exception:                                 # noqa: BLE001 - the mutant stays as it is
        pass


def rename_node(manifest: dict, members: dict, old: str, new: str):
    """(manifest, members) with node ``old`` called ``new`` wherever the name appears."""
    def swap(text):
        if text == old or isinstance(text, str) and text.startswith(old + ".") and text.endswith(".npy"):
            return new + text[len(old):]
        return text
    for n in manifest["nodes"]:
        if n.get("name") == old:
            n["name"] = new
        n["arrays"] = {f: swap(v) for f, v in n.get("arrays", {}).items()}
    manifest["edges"] = [[swap(x) for x in e] if isinstance(e, list) else e for e in manifest["edges"]]
    manifest["delays"] = {swap(k): v for k, v in manifest["delays"].items()}
    manifest["arrays"] = {swap(k): v for k, v in manifest["arrays"].items()}
    rep = manifest["report"]
    for r in rep.get("ranges", []):
        r["node"] = swap(r.get("node"))
    for r in rep.get("operations", []):
        r["stage"] = swap(r.get("stage"))
    rep["quantization_error"] = {swap(k): v for k, v in rep.get("quantization_error", {}).items()}
    return manifest, OrderedDict((swap(k), v) for k, v in members.items())


class ArtifactMutators:
    """Artifact mutants: (bytes, note) from the seed's bytes, manifest and members."""

    def __init__(self, seeds: Seeds):
        self.seeds = seeds
        self.table = [
            ("bitflip", self.bitflip), ("truncate", self.truncate), ("append_junk", self.append),
            ("prepend_junk", self.prepend), ("zero_range", self.zero), ("zip_field", self.zip_field),
            ("zip_encrypted", self.encrypted), ("member_removed", self.member("remove")),
            ("member_duplicated", self.member("duplicate")), ("member_renamed", self.member("rename")),
            ("member_garbage", self.member("garbage")), ("member_bomb", self.member("bomb")),
            ("manifest_bomb", self.manifest_bomb), ("stored_members", self.member("stored")),
            ("json_value", self.json_value), ("json_delete", self.json_delete), ("json_add", self.json_add),
            ("json_syntax", self.json_syntax), ("nodes_reorder", self.nodes_reorder),
            ("nodes_remove", self.nodes_remove), ("nodes_duplicate", self.nodes_duplicate),
            ("edges_rewire", self.edges_rewire), ("node_type", self.node_type), ("shape_spec", self.shape_spec),
            ("delays", self.delays), ("version", self.version), ("model_fields", self.model_fields),
            ("params_extreme", self.params_extreme), ("params_perturb", self.params_perturb),
            ("report_fields", self.report_fields), ("array_extreme", self.array_extreme),
            ("array_shift", self.array_shift), ("lut", self.lut), ("array_dtype", self.array_dtype),
            ("float_array", self.float_array), ("npy_header", self.npy_header), ("array_scale", self.array_scale),
            ("array_perturb", self.array_perturb), ("array_reshape", self.array_reshape),
            ("input_format", self.input_format), ("nodes_flood", self.nodes_flood), ("identity", self.identity),
            ("name_collision", self.name_collision), ("claims", self.claims),
            ("undeclared_member", self.undeclared_member),
        ]

    # --- plumbing
    def _parts(self, seed):
        manifest, entries = self.seeds.manifests[seed]
        return copy.deepcopy(manifest), OrderedDict(entries)

    def _pack(self, manifest, members, rng=None, fix=False, allow_nan=True):
        if fix:
            _fixup_bookkeeping(manifest, members)
        members = OrderedDict(members)
        members["manifest.json"] = json.dumps(manifest, indent=1, sort_keys=True, allow_nan=allow_nan).encode()
        return write_zip(list(members.items()))

    def _array_members(self, manifest, kind=None):
        out = []
        for node in manifest["nodes"]:
            for f, member in node["arrays"].items():
                spec = manifest["arrays"].get(member, {})
                is_float = spec.get("dtype") == "float64"
                if kind is None or (kind == "float") == is_float:
                    out.append((node, f, member))
        return out

    def _set_array(self, manifest, members, member, a, update_spec=True):
        members[member] = npy_bytes(a, allow_pickle=a.dtype.hasobject)
        if update_spec:
            manifest["arrays"][member] = {"shape": list(a.shape), "dtype": str(a.dtype)}

    @staticmethod
    def _load(members, member):
        return np.load(io.BytesIO(members[member]), allow_pickle=False)

    # --- byte / zip level
    def bitflip(self, rng, seed):
        return bytes_bitflip(rng, self.seeds.artifacts[seed])

    def truncate(self, rng, seed):
        return bytes_truncate(rng, self.seeds.artifacts[seed])

    def append(self, rng, seed):
        return bytes_append(rng, self.seeds.artifacts[seed])

    def prepend(self, rng, seed):
        return bytes_prepend(rng, self.seeds.artifacts[seed])

    def zero(self, rng, seed):
        return bytes_zero(rng, self.seeds.artifacts[seed])

    def zip_field(self, rng, seed):
        return zip_field_edit(rng, self.seeds.artifacts[seed])

    def encrypted(self, rng, seed):
        return zip_encrypted(rng, self.seeds.artifacts[seed])

    def member(self, what):
        def mutate(rng, seed):
            entries = self.seeds.manifests[seed][1]
            pick = 0 if (what in ("bomb", "garbage") and rng.random() < 0.3) else None     # manifest.json is first
            return zip_members(rng, entries, what, pick)
        return mutate

    def manifest_bomb(self, rng, seed):
        entries = self.seeds.manifests[seed][1]
        claimed = int(rng.choice([len(entries[0][1]), 2 ** 31, 64 << 20]))
        raw = [honest_entry(n, d) for n, d in entries]
        raw[0] = {"name": "manifest.json", "payload": deflate_bomb(), "method": 8, "crc": 0, "usize": claimed}
        return raw_zip(raw), f"manifest.json is a 256 MiB deflate bomb claiming {claimed} bytes"

    # --- manifest level
    def _paths(self, obj, prefix=(), out=None, depth=0):
        out = [] if out is None else out
        if depth > 6:
            return out
        if isinstance(obj, dict):
            for k, v in obj.items():
                out.append(prefix + (k,))
                self._paths(v, prefix + (k,), out, depth + 1)
        elif isinstance(obj, list):
            for i, v in enumerate(obj[:40]):
                out.append(prefix + (i,))
                self._paths(v, prefix + (i,), out, depth + 1)
        return out

    def _pick_path(self, rng, manifest):
        top = str(rng.choice(["model", "nodes", "edges", "delays", "arrays", "report", "format", "version", "any"]))
        if top in ("format", "version"):
            return (top,)
        paths = self._paths(manifest) if top == "any" else [p for p in self._paths(manifest) if p[0] == top]
        return paths[int(rng.integers(len(paths)))]

    @staticmethod
    def _get(obj, path):
        for p in path[:-1]:
            obj = obj[p]
        return obj

    def json_value(self, rng, seed):
        manifest, members = self._parts(seed)
        path = self._pick_path(rng, manifest)
        value = copy.deepcopy(JSON_WEIRD[int(rng.integers(len(JSON_WEIRD)))])
        self._get(manifest, path)[path[-1]] = value
        return self._pack(manifest, members), f"{'/'.join(map(str, path))} = {str(value)[:40]}"

    def json_delete(self, rng, seed):
        manifest, members = self._parts(seed)
        path = self._pick_path(rng, manifest)
        del self._get(manifest, path)[path[-1]]
        return self._pack(manifest, members), f"{'/'.join(map(str, path))} deleted"

    def json_add(self, rng, seed):
        manifest, members = self._parts(seed)
        path = self._pick_path(rng, manifest)
        parent = self._get(manifest, path)
        target = parent[path[-1]]
        value = copy.deepcopy(JSON_WEIRD[int(rng.integers(len(JSON_WEIRD)))])
        if isinstance(target, dict):
            target[str(rng.choice(["extra", "type", "name", "__proto__", "arrays", ""]))] = value
        elif isinstance(target, list):
            target.insert(int(rng.integers(len(target) + 1)), value)
        else:
            parent[path[-1]] = [target, value]
        return self._pack(manifest, members), f"{'/'.join(map(str, path))}: value {str(value)[:30]} added"

    def json_syntax(self, rng, seed):
        manifest, members = self._parts(seed)
        text = json.dumps(manifest, indent=1, sort_keys=True)
        how = str(rng.choice(["cut", "nest", "bigint", "dupkey", "bom", "utf16", "nonutf8", "empty", "array", "nul"]))
        if how == "cut":
            text = text[:int(rng.integers(0, len(text)))]
        elif how == "nest":
            text = "[" * 100000 + "]" * 100000
        elif how == "bigint":
            text = text.replace(f'"version": {ARTIFACT_VERSION}', '"version": 1' + "0" * 5000)
        elif how == "dupkey":
            text = text.replace(f'"version": {ARTIFACT_VERSION}', f'"version": {ARTIFACT_VERSION}, "version": 99')
        elif how == "array":
            text = "[" + text + "]"
        members = OrderedDict(members)
        data = text.encode()
        if how == "bom":
            data = b"\xef\xbb\xbf" + data
        elif how == "utf16":
            data = text.encode("utf-16")
        elif how == "nonutf8":
            data = data.replace(b'"loihi2"', b'"loihi2\xff\xfe"')
        elif how == "empty":
            data = b""
        elif how == "nul":
            data = data[:100] + b"\x00" + data[100:]
        members["manifest.json"] = data
        return write_zip(list(members.items())), f"manifest text: {how}"

    def nodes_reorder(self, rng, seed):
        manifest, members = self._parts(seed)
        nodes = manifest["nodes"]
        if rng.random() < 0.5:
            i, j = rng.choice(len(nodes), 2, replace=False)
            nodes[i], nodes[j] = nodes[j], nodes[i]
            note = f"nodes {i} and {j} swapped"
        else:
            order = rng.permutation(len(nodes))
            manifest["nodes"] = [nodes[k] for k in order]
            note = "nodes shuffled"
        return self._pack(manifest, members, fix=rng.random() < 0.5), note

    def nodes_remove(self, rng, seed):
        manifest, members = self._parts(seed)
        i = int(rng.integers(len(manifest["nodes"])))
        node = manifest["nodes"].pop(i)
        if rng.random() < 0.5:
            manifest["edges"] = [e for e in manifest["edges"] if node["name"] not in e[:2]]
        if rng.random() < 0.5:          # bypass: wire its input into its consumers
            ins = [e[0] for e in manifest["edges"] if e[1] == node["name"]]
            manifest["edges"] = [[ins[0] if (e[0] == node["name"] and ins) else e[0], e[1], e[2]]
                                 for e in manifest["edges"] if e[1] != node["name"]]
        return self._pack(manifest, members, fix=rng.random() < 0.7), f"node {node['name']} removed"

    def nodes_duplicate(self, rng, seed):
        manifest, members = self._parts(seed)
        i = int(rng.integers(len(manifest["nodes"])))
        node = copy.deepcopy(manifest["nodes"][i])
        if rng.random() < 0.5:
            node["name"] = node["name"] + ".copy"
            if rng.random() < 0.5:
                for f, m in list(node["arrays"].items()):
                    new = m.replace(".npy", ".copy.npy")
                    members[new] = members[m]
                    manifest["arrays"][new] = dict(manifest["arrays"][m])
                    node["arrays"][f] = new
            # insert the copy right after the original, fed by the original's inputs
            for e in [e for e in manifest["edges"] if e[1] == manifest["nodes"][i]["name"]]:
                manifest["edges"].append([e[0], node["name"], e[2]])
        manifest["nodes"].insert(i + 1, node)
        return self._pack(manifest, members, fix=rng.random() < 0.5), f"node {manifest['nodes'][i]['name']} duplicated"

    def edges_rewire(self, rng, seed):
        manifest, members = self._parts(seed)
        edges = manifest["edges"]
        names = [n["name"] for n in manifest["nodes"]]
        how = str(rng.choice(["src", "dst", "port", "drop", "add", "self", "swap"]))
        i = int(rng.integers(len(edges)))
        if how == "src":
            edges[i][0] = str(rng.choice(names + ["nowhere"]))
        elif how == "dst":
            edges[i][1] = str(rng.choice(names + ["nowhere"]))
        elif how == "port":
            edges[i][2] = str(rng.choice(["main", "skip", "gate", ""]))
        elif how == "drop":
            edges.pop(i)
        elif how == "add":
            edges.append([str(rng.choice(names)), str(rng.choice(names)), str(rng.choice(["main", "skip"]))])
        elif how == "self":
            edges[i][0] = edges[i][1]
        else:
            j = int(rng.integers(len(edges)))
            edges[i][0], edges[j][0] = edges[j][0], edges[i][0]
        return self._pack(manifest, members, fix=rng.random() < 0.6), f"edge {i}: {how}"

    def node_type(self, rng, seed):
        from neurocompile.ir import INT_NODES
        manifest, members = self._parts(seed)
        node = manifest["nodes"][int(rng.integers(len(manifest["nodes"])))]
        new = str(rng.choice(sorted(INT_NODES) + ["IntFoo", "Input", "LIF", "", "intlif"]))
        old, node["type"] = node["type"], new
        return self._pack(manifest, members, fix=rng.random() < 0.5), f"node {node['name']} type {old} -> {new}"

    def shape_spec(self, rng, seed):
        manifest, members = self._parts(seed)
        node, f, member = self._array_members(manifest)[int(rng.integers(len(self._array_members(manifest))))]
        spec = manifest["arrays"][member]
        how = str(rng.choice(["dim", "rank", "huge", "negative", "empty", "type"]))
        shape = list(spec["shape"])
        if how == "dim" and shape:
            k = int(rng.integers(len(shape)))
            shape[k] = max(0, shape[k] + int(rng.choice([-1, 1, 2, -shape[k]])))
        elif how == "rank":
            shape = shape + [1] if rng.random() < 0.5 else shape[:-1]
        elif how == "huge":
            shape = [2 ** 31] * max(1, len(shape))
        elif how == "negative":
            shape = [-1] + shape[1:]
        elif how == "empty":
            shape = []
        else:
            shape = [str(s) for s in shape] or ["1"]
        spec["shape"] = shape
        return self._pack(manifest, members), f"spec of {member}: shape {shape}"

    def delays(self, rng, seed):
        manifest, members = self._parts(seed)
        d = manifest["delays"]
        key = str(rng.choice(sorted(d)))
        how = str(rng.choice(["value", "remove", "add", "all_zero"]))
        if how == "value":
            d[key] = copy.deepcopy(JSON_WEIRD[int(rng.integers(len(JSON_WEIRD)))])
        elif how == "remove":
            del d[key]
        elif how == "add":
            d["ghost"] = 0
        else:
            manifest["delays"] = {k: 0 for k in d}
        return self._pack(manifest, members), f"delays: {how} {key}"

    def version(self, rng, seed):
        manifest, members = self._parts(seed)
        field = str(rng.choice(["version", "format"]))
        pool = [1, 3, "2", 2.0, None, -2, 2 ** 70, True, "neurocompile-loihi1", "", "neurocompile-loihi2 "]
        value = pool[int(rng.integers(len(pool)))]
        manifest[field] = value
        return self._pack(manifest, members), f"{field} = {value!r}"

    def model_fields(self, rng, seed):
        manifest, members = self._parts(seed)
        m = manifest["model"]
        key = str(rng.choice(sorted(m) + ["l_max"] * 6))
        if key == "l_max":
            value = int(rng.choice([0, 1, 2, 23, 24, 25, 33, 63, 65, 100, 128, 266, 267, 1000, 2 ** 20, 2 ** 20 + 1,
                                    -1]))
            if rng.random() < 0.15:
                value = copy.deepcopy(JSON_WEIRD[int(rng.integers(len(JSON_WEIRD)))])
        else:
            value = copy.deepcopy(JSON_WEIRD[int(rng.integers(len(JSON_WEIRD)))])
        m[key] = value
        return self._pack(manifest, members, fix=rng.random() < 0.7), f"model.{key} = {str(value)[:30]}"

    def input_format(self, rng, seed):
        manifest, members = self._parts(seed)
        inp = next(n for n in manifest["nodes"] if n["type"] == "IntInput")
        fmt = manifest["model"]["input"]
        how = str(rng.choice(["levels", "range", "kind", "both"]))
        if how in ("levels", "both"):
            v = int(rng.choice([0, 1, 2, 7, 15, 31, 63, 255, 256, 65535, 65536, 2 ** 23, -1]))
            if fmt.get("kind") == "levels":
                fmt["levels"] = v
            else:
                fmt["vocab"] = v + 1
            if how == "both" or rng.random() < 0.7:
                inp["params"]["levels"] = v
            note = f"input levels -> {v}"
        elif how == "range":
            fmt["low"], fmt["high"] = [(0.0, 0.0), (1.0, 0.0), (float("nan"), 1.0), (0.0, float("inf")), (-1e308, 1e308),
                                       (0.0, 1e-300), (-5.0, 5.0)][int(rng.integers(7))]
            note = f"input range {fmt.get('low')}..{fmt.get('high')}"
        else:
            inp["params"]["tokens"] = not inp["params"]["tokens"]
            note = "input tokens flag flipped"
            if rng.random() < 0.5:
                manifest["model"]["input"] = ({"kind": "tokens", "vocab": 17} if fmt.get("kind") == "levels"
                                              else {"kind": "levels", "low": 0.0, "high": 1.0, "levels": 9})
        return self._pack(manifest, members, fix=rng.random() < 0.8), note

    def _param_targets(self, manifest):
        return [(n, p) for n in manifest["nodes"] for p in n["params"]]

    def params_extreme(self, rng, seed):
        manifest, members = self._parts(seed)
        targets = self._param_targets(manifest)
        node, p = targets[int(rng.integers(len(targets)))]
        pool = INT_EXTREMES + [2 ** 63, 24, 25, 40, 41, 63, 64, 4095, 4096, 2 ** 17, 0.5, True, False, None, "1",
                               float("nan"), float("inf"), 1e300, [], {}]
        value = copy.deepcopy(pool[int(rng.integers(len(pool)))])
        node["params"][p] = value
        return self._pack(manifest, members, fix=rng.random() < 0.7), f"{node['name']}.{p} = {str(value)[:30]}"

    def params_perturb(self, rng, seed):
        manifest, members = self._parts(seed)
        targets = [(n, p) for n, p in self._param_targets(manifest) if not isinstance(n["params"][p], bool)]
        node, p = targets[int(rng.integers(len(targets)))]
        old = node["params"][p]
        if isinstance(old, float):
            value = float(old * rng.choice([0.0, 0.5, 2.0, -1.0]))
        else:
            value = int(old + rng.choice([-3, -2, -1, 1, 2, 3, 8]))
        node["params"][p] = value
        return self._pack(manifest, members, fix=rng.random() < 0.9), f"{node['name']}.{p}: {old} -> {value}"

    def report_fields(self, rng, seed):
        manifest, members = self._parts(seed)
        r = manifest["report"]
        how = str(rng.choice(["ranges_row", "ranges_empty", "operations", "frac", "source", "qerr", "latency", "target",
                              "options", "drop"]))
        value = copy.deepcopy(JSON_WEIRD[int(rng.integers(len(JSON_WEIRD)))])
        if how == "ranges_row":
            row = r["ranges"][int(rng.integers(len(r["ranges"])))]
            row[str(rng.choice(["worst", "limit", "headroom_bits", "node", "register"]))] = value
        elif how == "ranges_empty":
            r["ranges"] = []
        elif how == "operations":
            if rng.random() < 0.5:
                r["operations"] = value
            else:
                r["operations"][0][str(rng.choice(["stage", "ac_only", "how"]))] = value
        elif how == "frac":
            r["stream_frac_bits"] = value
        elif how == "source":
            r["source"][str(rng.choice(["detected", "kind", "train_metrics", "checkpoint_sha256"]))] = value
        elif how == "qerr":
            r["quantization_error"] = {"encoder": value} if rng.random() < 0.7 else value
        elif how == "latency":
            r["latency_steps"] = value
        elif how == "target":
            r["target"] = value
        elif how == "options":
            r["options"] = value
        else:
            del r[str(rng.choice(sorted(r)))]
        return self._pack(manifest, members), f"report {how} -> {str(value)[:30]}"

    # --- array level
    def _pick(self, rng, manifest, names=None, kind="int"):
        cands = [(n, f, m) for n, f, m in self._array_members(manifest, kind) if names is None or f in names]
        return cands[int(rng.integers(len(cands)))]

    def array_extreme(self, rng, seed):
        manifest, members = self._parts(seed)
        node, f, member = self._pick(rng, manifest)
        a = self._load(members, member).astype(np.int64)
        value = int(INT_EXTREMES[int(rng.integers(len(INT_EXTREMES)))])
        if a.size:
            if rng.random() < 0.6:
                a.flat[int(rng.integers(a.size))] = value
            else:
                a[...] = value
        from neurocompile.artifact import _narrow
        self._set_array(manifest, members, member, _narrow(a) if rng.random() < 0.7 else a, rng.random() < 0.95)
        return self._pack(manifest, members, fix=rng.random() < 0.7), f"{member}: value {value}"

    def array_shift(self, rng, seed):
        manifest, members = self._parts(seed)
        node, f, member = self._pick(rng, manifest, ("shift", "value_shift", "gate_shift", "out_shift", "pre_shift"))
        a = self._load(members, member).astype(np.int64)
        value = int(rng.choice([-64, -63, -41, -40, -39, -24, -1, 0, 1, 23, 24, 39, 40, 41, 62, 63, 64, 2 ** 31]))
        if rng.random() < 0.5:
            a.flat[int(rng.integers(a.size))] = value
            note = f"{member}: one shift = {value}"
        else:
            a = a + int(rng.choice([-2, -1, 1, 2]))
            note = f"{member}: every shift moved"
        self._set_array(manifest, members, member, a)
        return self._pack(manifest, members, fix=rng.random() < 0.85), note

    def lut(self, rng, seed):
        manifest, members = self._parts(seed)
        node, f, member = self._pick(rng, manifest, ("lut",))
        a = self._load(members, member).astype(np.int64)
        how = str(rng.choice(["empty", "one", "odd", "two", "huge", "extreme", "negative", "resize"]))
        if how == "empty":
            a = a[:0]
        elif how == "one":
            a = a[:1]
        elif how == "odd":
            a = a[:-1]
        elif how == "two":
            a = a[255:257]
        elif how == "huge":
            a = np.resize(a, 1 << 20)
        elif how == "extreme":
            a[int(rng.integers(a.size))] = int(rng.choice([2 ** 23, 2 ** 31, 2 ** 62, -(2 ** 63)]))
        elif how == "negative":
            a = -a
        else:
            a = np.resize(a, int(rng.choice([4, 64, 1024, 4096])))
        self._set_array(manifest, members, member, a)
        return self._pack(manifest, members, fix=rng.random() < 0.85), f"{member}: LUT {how} (len {a.size})"

    def array_dtype(self, rng, seed):
        manifest, members = self._parts(seed)
        node, f, member = self._pick(rng, manifest, kind=None)
        a = self._load(members, member)
        dt = str(rng.choice(["float64", "float32", "int64", "uint8", "uint64", "bool", "complex128", ">i8", ">f8",
                             "object", "U8", "int8"]))
        with np.errstate(all="ignore"):
            b = a.astype(object) if dt == "object" else a.astype(np.dtype(dt))
        members[member] = npy_bytes(b, allow_pickle=(dt == "object"))
        if rng.random() < 0.6:
            manifest["arrays"][member] = {"shape": list(b.shape), "dtype": str(b.dtype)}
        return self._pack(manifest, members, fix=rng.random() < 0.5), f"{member}: dtype {a.dtype} -> {dt}"

    def float_array(self, rng, seed):
        manifest, members = self._parts(seed)
        node, f, member = self._pick(rng, manifest, kind="float")
        a = self._load(members, member).copy()
        value = float(FLOAT_EXTREMES[int(rng.integers(len(FLOAT_EXTREMES)))])
        if a.size:
            if rng.random() < 0.5:
                a.flat[int(rng.integers(a.size))] = value
            else:
                a[...] = value
        self._set_array(manifest, members, member, a)
        return self._pack(manifest, members), f"{member}: {value}"

    def npy_header(self, rng, seed):
        manifest, members = self._parts(seed)
        node, f, member = self._pick(rng, manifest, kind=None)
        a = self._load(members, member)
        body = np.ascontiguousarray(a).tobytes()
        descr = np.lib.format.dtype_to_descr(a.dtype)
        how = str(rng.choice(["huge_shape", "fortran", "v2", "v3", "bad_dict", "wrong_descr", "neg_shape",
                              "header_len", "magic", "void0"]))
        shape = tuple(a.shape)
        if how == "huge_shape":
            hdr = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({2 ** 40}, {2 ** 20}), }}"
            data = npy_with_header(hdr, body)
        elif how == "fortran":
            data = npy_with_header(f"{{'descr': '{descr}', 'fortran_order': True, 'shape': {shape}, }}", body)
        elif how == "v2":
            data = npy_with_header(f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}", body, (2, 0))
        elif how == "v3":
            data = npy_with_header(f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}", body, (3, 0))
        elif how == "bad_dict":
            data = npy_with_header(str(rng.choice(["{", "[1, 2]", "{'descr': 1}", "__import__('os')", "{'shape': ()}"])),
                                   body)
        elif how == "wrong_descr":
            d = str(rng.choice(["<f8", "<i2", "|O", "<U4", "|V8", "<c16", "|b1", "<M8[s]"]))
            data = npy_with_header(f"{{'descr': '{d}', 'fortran_order': False, 'shape': {shape}, }}", body)
        elif how == "neg_shape":
            data = npy_with_header(f"{{'descr': '{descr}', 'fortran_order': False, 'shape': (-1, 8), }}", body)
        elif how == "header_len":
            data = bytearray(members[member])
            struct.pack_into("<H", data, 8, int(rng.choice([0, 1, 65535])))
            data = bytes(data)
        elif how == "void0":
            data = npy_with_header(f"{{'descr': '|V0', 'fortran_order': False, 'shape': ({2 ** 40},), }}", b"")
        else:
            data = b"\x93NUMPZ" + members[member][6:]
        members[member] = data
        return self._pack(manifest, members), f"{member}: npy header {how}"

    def array_scale(self, rng, seed):
        manifest, members = self._parts(seed)
        node, f, member = self._pick(rng, manifest)
        a = self._load(members, member).astype(np.int64)
        k = int(rng.choice([1, 2, 4, 8, 12, 16, 24, 30, 40]))
        with np.errstate(all="ignore"):
            a = a << k if rng.random() < 0.7 else a >> k
        self._set_array(manifest, members, member, a)
        return self._pack(manifest, members, fix=rng.random() < 0.85), f"{member}: scaled by 2^+-{k}"

    def array_perturb(self, rng, seed):
        manifest, members = self._parts(seed)
        node, f, member = self._pick(rng, manifest)
        a = self._load(members, member).astype(np.int64)
        n = int(rng.choice([1, 3, 10, max(1, a.size)]))
        if a.size:
            idx = rng.integers(0, a.size, n)
            step = 2 if f == "weight" and node["type"] == "IntDense" and rng.random() < 0.8 else 1
            a.flat[idx] += step * rng.choice([-1, 1], n)
        self._set_array(manifest, members, member, a)
        return self._pack(manifest, members, fix=rng.random() < 0.9), f"{member}: {n} value(s) moved by +-1/2"

    def array_reshape(self, rng, seed):
        manifest, members = self._parts(seed)
        node, f, member = self._pick(rng, manifest, kind=None)
        a = self._load(members, member)
        how = str(rng.choice(["drop_row", "add_row", "drop_col", "add_col", "transpose", "flatten", "empty", "bias_T"]))
        if how == "drop_row" and a.shape and a.shape[0]:
            a = a[:-1]
        elif how == "add_row" and a.shape:
            a = np.concatenate([a, a[:1]]) if a.shape[0] else np.zeros((1,) + a.shape[1:], a.dtype)
        elif how == "drop_col" and a.ndim == 2 and a.shape[1]:
            a = a[:, :-1]
        elif how == "add_col" and a.ndim == 2:
            a = np.concatenate([a, a[:, :1] if a.shape[1] else np.zeros((a.shape[0], 1), a.dtype)], 1)
        elif how == "transpose" and a.ndim == 2:
            a = np.ascontiguousarray(a.T)
        elif how == "flatten":
            a = a.reshape(-1)
        elif how == "empty":
            a = a[:0]
        elif how == "bias_T" and f == "bias" and node["type"] == "IntSSMConv":
            L = manifest["model"]["l_max"]
            a = np.zeros((a.shape[0], 0 if a.shape[1] else L), a.dtype)
        self._set_array(manifest, members, member, a)
        # keep the float twin in step half of the time (the shape checks then see a consistent node)
        twin = member.replace(".npy", "_float.npy")
        if twin in members and rng.random() < 0.5:
            self._set_array(manifest, members, twin, a.astype(np.float64))
        return self._pack(manifest, members, fix=rng.random() < 0.8), f"{member}: {how} -> {a.shape}"

    def nodes_flood(self, rng, seed):
        """Thousands of (valid) LIF nodes before the readout: loading must stay fast."""
        manifest, members = self._parts(seed)
        n = int(rng.choice([10, 2000, 5000, 100000]))
        i = next(k for k, e in enumerate(manifest["nodes"]) if e["type"] == "IntReadout")
        readout = manifest["nodes"][i]["name"]
        lif = next(e for e in manifest["nodes"] if e["type"] == "IntLIF")
        names = [f"flood{k}" for k in range(n)]
        manifest["nodes"][i:i] = [{"name": nm, "type": "IntLIF", "layer": None, "params": dict(lif["params"]),
                                   "arrays": {}} for nm in names]
        (src,) = [e[0] for e in manifest["edges"] if e[1] == readout]
        manifest["edges"] = [e for e in manifest["edges"] if e[1] != readout]
        for nm in names:
            manifest["edges"].append([src, nm, "main"])
            src = nm
        manifest["edges"].append([src, readout, "main"])
        return self._pack(manifest, members, fix=n <= 20000 and rng.random() < 0.7), f"{n} LIF nodes inserted"

    # --- issue 14: names that collide with trace keys, claims against the verified integers, extra members
    COLLIDING_NAMES = ["labels", "logits", "meta_engine", "meta_indices", "engine", "indices", "seconds", "../evil",
                       "a/b", "/abs", "x\x1b[2J", "layer0..x", ".hidden", "ok_name", "layer9.neuron", "trace/x", "x y"]

    def name_collision(self, rng, seed):
        """Rename one node everywhere it appears (node, edges, delays, members, report), so the mutant
        reaches the verifier's name rules and the traces file: names like the traces file's own keys,
        a spike node's ``.v`` membrane key, or a path."""
        manifest, members = self._parts(seed)
        nodes = manifest["nodes"]
        old = nodes[int(rng.integers(len(nodes)))]["name"]
        spikes = [n["name"] for n in nodes if n["type"] in ("IntLIF", "IntSampler") and n["name"] != old]
        pool = self.COLLIDING_NAMES + [n + ".v" for n in spikes]
        new = str(pool[int(rng.integers(len(pool)))])
        manifest, members = rename_node(manifest, members, old, new)
        return self._pack(manifest, members, fix=rng.random() < 0.5), f"node {old} renamed {new!r}"

    def claims(self, rng, seed):
        """Manifest claims that disagree with the stored integers (or are gone): layers, widths,
        classes, kind, the compiled-from weights digest, terminal escapes in recorded strings."""
        manifest, members = self._parts(seed)
        m, src = manifest["model"], manifest["report"].setdefault("source", {})
        how = str(rng.choice(["n_layers", "d_model", "d_output", "d_state", "kind", "digest_removed", "digest_other",
                              "digest_garbled", "checkpoint_sha256_removed", "detected_escape", "metrics_nan"]))
        if how in ("n_layers", "d_model", "d_output", "d_state"):
            m[how] = int(rng.choice([0, 1, 3, 7, 999, m.get(how, 1) + 1 if isinstance(m.get(how), int) else 5]))
        elif how == "kind":
            m["kind"] = "pspikessm" if m.get("kind") == "spikingssm" else "spikingssm"
        elif how == "digest_removed":
            src.pop("weights_sha256", None)
        elif how == "digest_other":
            src["weights_sha256"] = hashlib.sha256(b"other weights").hexdigest()
        elif how == "digest_garbled":
            src["weights_sha256"] = str(rng.choice(["", "zz", "A" * 64, "0" * 63, 5]))
        elif how == "checkpoint_sha256_removed":
            src.pop("checkpoint_sha256", None)
        elif how == "detected_escape":
            src["detected"] = "\x1b]0;owned\x07\x1b[2J\rline\nnext\x9b31m"
        else:
            src["train_metrics"] = {"loss": float("nan"), "acc": float("inf")}
        return self._pack(manifest, members), f"claim: {how}"

    def undeclared_member(self, rng, seed):
        manifest, members = self._parts(seed)
        name = str(rng.choice(["payload.bin", "extra.npy", "../x.npy", "manifest.json.bak", "dir/"]))
        size = int(rng.choice([0, 1, 1000, 1 << 20]))
        members[name] = b"\0" * size
        return self._pack(manifest, members), f"undeclared member {name!r} ({size} bytes)"

    def identity(self, rng, seed):
        return self.seeds.artifacts[seed], "unchanged (control)"


# ---------------------------------------------------------------------------- checkpoints
class _Reduce:
    """Pickles as REDUCE(fn, args): how a hostile file calls anything it names."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args

    def __call__(self, *a):           # pickle wants the callable position to be callable
        raise AssertionError


class _Pid:
    def __init__(self, pid):
        self.pid = pid


class _TorchPickler(__import__("pickle").Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _Pid) else None


def _pkl(obj, protocol=2) -> bytes:
    buf = io.BytesIO()
    _TorchPickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def _laughs(levels: int = 80, container=b"\x86") -> bytes:
    """A value whose expansion has 2**levels leaves: level i+1 = (level i, level i) through the memo."""
    out = [b"\x80\x02K\x00q\x00"]
    for i in range(levels):
        if container == b"\x86":
            out.append(b"h" + bytes([i]) + b"h" + bytes([i]) + b"\x86q" + bytes([i + 1]))
        else:
            out.append(b"(h" + bytes([i]) + b"h" + bytes([i]) + b"lq" + bytes([i + 1]))
    return b"".join(out), levels


def _laughs_ours() -> bytes:
    body, n = _laughs()
    return body + (b"(X\x06\x00\x00\x00formatX\x17\x00\x00\x00neurocompile-checkpointX\x04\x00\x00\x00metah"
                   + bytes([n]) + b"d.")


def _laughs_lightning() -> bytes:
    body, n = _laughs(container=b"l")
    return body + (b"(X\x0a\x00\x00\x00state_dict}X\x10\x00\x00\x00hyper_parameters}X\x01\x00\x00\x00ah"
                   + bytes([n]) + b"sd.")


def pickle_payloads() -> dict:
    """data.pkl replacements; every one that ran code would create the file MARKER."""
    import collections
    import subprocess

    import torch
    storage = _Pid(("storage", torch.FloatStorage, "0", "cpu", 1))
    rebuild = torch._utils._rebuild_tensor_v2
    touch = "open('MARKER', 'w').close()"
    return {
        "os_system": _pkl(_Reduce(os.system, ("touch MARKER",))),
        "os_system_p0": _pkl(_Reduce(os.system, ("touch MARKER",)), 0),
        "os_system_p4": _pkl(_Reduce(os.system, ("touch MARKER",)), 4),
        "exec": _pkl(_Reduce(exec, (touch,))),
        "eval_py2_name": b"c__builtin__\neval\n(S\"" + touch.encode() + b"\"\ntR.",
        "subprocess": _pkl(_Reduce(subprocess.call, (["touch", "MARKER"],)), 4),
        "getattr_chain": _pkl(_Reduce(_Reduce(getattr, (_Reduce(__import__, ("os",)), "system")), ("touch MARKER",))),
        "allowed_callable_on_foreign": _pkl(_Reduce(set, (_Reduce(os.system, ("touch MARKER",)),))),
        "inst": b"(S'touch MARKER'\nios\nsystem\n.",
        "obj": b"(cos\nsystem\nS'touch MARKER'\no.",
        "newobj_dict": b"\x80\x02cbuiltins\ndict\n)\x81.",
        "build_on_dict": b"\x80\x02}}b.",
        "build_on_ordered_dict": _pkl(_Reduce(collections.OrderedDict, ())) [:-1] + b"}X\x08\x00\x00\x00__dict__}sb.",
        "ext1": b"\x80\x02\x82\x01.",
        "numpy_scalar": b"cnumpy.core.multiarray\nscalar\n(tR.",
        "torch_load": _pkl(_Reduce(torch.load, ("MARKER",))),
        "codecs_utf8": b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00utf-8\x86R.",
        "rebuild_not_storage": _pkl(_Reduce(rebuild, (0, 0, (1,), (1,), False, None))),
        "rebuild_huge_view": _pkl(_Reduce(rebuild, (storage, 0, (2 ** 30, 2 ** 30), (0, 0), False, None))),
        "rebuild_past_end": _pkl(_Reduce(rebuild, (storage, 5, (3,), (1,), False, None))),
        "rebuild_negative": _pkl(_Reduce(rebuild, (storage, -1, (1,), (1,), False, None))),
        "rebuild_metadata": _pkl(_Reduce(rebuild, (storage, 0, (1,), (1,), False, None, {"neg": True}))),
        "rebuild_too_many_args": _pkl(_Reduce(rebuild, (storage,) * 12)),
        "storage_huge_numel": _pkl({"state_dict": {"w": _Reduce(rebuild, (_Pid(("storage", torch.FloatStorage, "0",
                                                                                "cpu", 2 ** 40)), 0, (1,), (1,),
                                                                          False, None))}}),
        "storage_weird_pid": _pkl(_Pid(("storage", 1, 2, 3, -5))),
        "storage_wrong_dtype_twice": _pkl([_Reduce(rebuild, (storage, 0, (1,), (1,), False, None)),
                                           _Reduce(rebuild, (_Pid(("storage", torch.DoubleStorage, "0", "cpu", 1)), 0,
                                                             (1,), (1,), False, None))]),
        "memo_missing": b"\x80\x02h\x05.",
        "stack_underflow": b"\x80\x02R.",
        "deep_lists": b"\x80\x02" + b"]" * 100000 + b"a" * 99999 + b".",
        "deep_dicts": b"\x80\x02" + b"}" * 50000 + b".",
        "laughs": _laughs_ours(),
        "laughs_lightning": _laughs_lightning(),
        "bigint": b"\x80\x02\x8b\xff\xff\xff\x7f" + b"\x00" * 16 + b".",
        "empty": b"",
        "not_pickle": b"hello world",
    }


class CheckpointMutators:
    def __init__(self, seeds: Seeds):
        self.seeds = seeds
        self.payloads = pickle_payloads()
        self.table = [
            ("bitflip", self.bitflip), ("bitflip_data", self.bitflip_data), ("truncate", self.truncate),
            ("append_junk", self.append), ("zero_range", self.zero), ("zip_field", self.zip_field),
            ("zip_encrypted", self.encrypted), ("member_removed", self.member("remove")),
            ("member_duplicated", self.member("duplicate")), ("member_garbage", self.member("garbage")),
            ("member_bomb", self.member("bomb")), ("storage_values", self.storage_values),
            ("tensor_values", self.tensor_values), ("config_field", self.config_field), ("kind", self.kind),
            ("keys_removed", self.keys_removed), ("keys_added", self.keys_added), ("keys_reshaped", self.keys_reshaped),
            ("tensor_dtype", self.tensor_dtype), ("pickle_global", self.pickle_global),
            ("pickle_bytes", self.pickle_bytes), ("layout", self.layout), ("meta", self.meta),
            ("inflated_count", self.inflated_count), ("large_storages", self.large_storages),
            ("identity", self.identity), ("config_overflow", self.config_overflow), ("pickle_flood", self.pickle_flood),
            ("terminal_strings", self.terminal_strings),
        ]

    def _entries(self, seed):
        return read_zip(self.seeds.checkpoints[seed])

    def _obj(self, seed):
        return _clone(self.seeds.checkpoint_objects[seed])

    @staticmethod
    def _save(obj) -> bytes:
        import torch
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()

    @staticmethod
    def _sd(obj) -> dict:
        return obj["state_dict"]

    def bitflip(self, rng, seed):
        return bytes_bitflip(rng, self.seeds.checkpoints[seed])

    def bitflip_data(self, rng, seed):
        """Flip bits inside a stored member's compressed or stored bytes: only the CRC can tell."""
        data = bytearray(self.seeds.checkpoints[seed])
        recs = central_records(bytes(data))
        r = recs[int(rng.integers(len(recs)))]
        n_len, x_len = struct.unpack_from("<HH", data, r["local"] + 26)
        csize = struct.unpack_from("<I", data, r["cd"] + 20)[0]
        start = r["local"] + 30 + n_len + x_len
        if csize == 0:
            return bytes(data), "empty member (unchanged)"
        i = start + int(rng.integers(csize))
        data[i] ^= 1 << int(rng.integers(8))
        return bytes(data), f"bit flipped inside member data at {i}"

    def truncate(self, rng, seed):
        return bytes_truncate(rng, self.seeds.checkpoints[seed])

    def append(self, rng, seed):
        return bytes_append(rng, self.seeds.checkpoints[seed])

    def zero(self, rng, seed):
        return bytes_zero(rng, self.seeds.checkpoints[seed])

    def zip_field(self, rng, seed):
        return zip_field_edit(rng, self.seeds.checkpoints[seed])

    def encrypted(self, rng, seed):
        return zip_encrypted(rng, self.seeds.checkpoints[seed])

    def member(self, what):
        def mutate(rng, seed):
            entries = self._entries(seed)
            pick = None
            if rng.random() < 0.4:
                pick = next(i for i, (n, _) in enumerate(entries) if n.endswith("data.pkl"))
            return zip_members(rng, entries, what, pick)
        return mutate

    def storage_values(self, rng, seed):
        """Overwrite raw storage bytes (the pickle untouched) with NaN / Inf / huge float32 patterns."""
        entries = self._entries(seed)
        cands = [i for i, (n, d) in enumerate(entries) if "/data/" in n and len(d) >= 4]
        i = cands[int(rng.integers(len(cands)))]
        name, d = entries[i]
        b = bytearray(d)
        value = float(rng.choice([float("nan"), float("inf"), -float("inf"), 1e30, 3e4, 1e38]))
        n = int(rng.choice([1, 4, len(b) // 4]))
        for k in rng.integers(0, len(b) // 4, n):
            struct.pack_into("<f", b, int(k) * 4, value)
        entries[i] = (name, bytes(b))
        return write_zip(entries), f"{name}: {n} float32 slot(s) = {value}"

    def _tensors(self, obj):
        sd = obj.get("state_dict") if isinstance(obj, dict) else None
        return sd if isinstance(sd, dict) else {}

    def tensor_values(self, rng, seed):
        import torch
        obj = self._obj(seed)
        sd = self._tensors(obj)
        keys = [k for k, v in sd.items() if isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel()]
        k = keys[int(rng.integers(len(keys)))]
        value = float(rng.choice([float("nan"), float("inf"), -float("inf"), 1e30, -1e30, 3e4, -3e4, 1e-40, 0.0]))
        t = sd[k].clone()
        if rng.random() < 0.5:
            t.view(-1)[int(rng.integers(t.numel()))] = value
        else:
            t.fill_(value)
        sd[k] = t
        return self._save(obj), f"{k} = {value}"

    def config_field(self, rng, seed):
        obj = self._obj(seed)
        if "config" in obj:
            cfg = obj["config"]
            key = str(rng.choice(sorted(cfg)))
            where = f"config.{key}"
        else:
            hp = obj.setdefault("hyper_parameters", {})
            sections = [("model",), ("model", "layer"), ("dataset",), ()]
            sec = sections[int(rng.integers(len(sections)))]
            cfg = hp
            for s in sec:
                cfg = cfg.setdefault(s, {}) if isinstance(cfg, dict) else {}
            if not isinstance(cfg, dict):
                return self._save(obj), "hyper_parameters section not a dict (unchanged)"
            key = str(rng.choice(sorted(map(str, cfg)) + ["l_max", "n_layers", "d_model", "prenorm", "_name_"]))
            where = "hyper_parameters." + ".".join(sec + (key,))
        value = copy.deepcopy(rng.choice(np.array([0, -1, 1, 2, 3, 2 ** 31, 2 ** 62, 10 ** 30, 1e300, float("nan"), -0.5,
                                                    "huge", "", None, True, "batch", "layer", "embedding", [1, 2], {}],
                                                   dtype=object)))
        if isinstance(value, np.generic):
            value = value.item()
        cfg[key] = value
        return self._save(obj), f"{where} = {str(value)[:30]}"

    def kind(self, rng, seed):
        obj = self._obj(seed)
        key = str(rng.choice(["kind", "format", "version", "pytorch-lightning_version", "state_dict",
                              "hyper_parameters"]))
        value = [None, "pspikessm", "spikingssm", "foo", 2, 1, "1", [], {}, "neurocompile-checkpoint"][int(rng.integers(10))]
        obj[key] = value
        return self._save(obj), f"{key} = {value!r}"

    def keys_removed(self, rng, seed):
        obj = self._obj(seed)
        sd = self._tensors(obj)
        keys = sorted(sd)
        n = int(rng.choice([1, 1, 2, len(keys)]))
        for k in rng.choice(keys, min(n, len(keys)), replace=False):
            del sd[str(k)]
        return self._save(obj), f"{n} state_dict key(s) removed"

    def keys_added(self, rng, seed):
        import torch
        obj = self._obj(seed)
        sd = self._tensors(obj)
        keys = sorted(sd)
        how = str(rng.choice(["extra", "int_key", "non_tensor", "renumber", "gap"]))
        if how == "extra":
            sd[keys[0] + ".extra"] = torch.zeros(3)
        elif how == "int_key":
            sd[7] = torch.zeros(1)
        elif how == "non_tensor":
            sd[str(rng.choice(keys))] = rng.choice(np.array([1.5, "x", None, [1.0]], dtype=object))
        else:
            # a layer index gap or a new layer: model.s4_layers.9.* / backbone.layers.9.*
            pat = re.compile(r"(s4_layers|layers)\.(\d+)\.")
            for k in keys:
                m = pat.search(k)
                if m:
                    new = k[:m.start(2)] + ("9" if how == "gap" else str(int(m.group(2)) + 1)) + k[m.end(2):]
                    if new not in sd:
                        sd[new] = sd[k].clone()
        return self._save(obj), f"state_dict: {how}"

    def keys_reshaped(self, rng, seed):
        import torch
        obj = self._obj(seed)
        sd = self._tensors(obj)
        keys = [k for k in sorted(sd) if isinstance(sd[k], torch.Tensor)]
        k = keys[int(rng.integers(len(keys)))]
        t = sd[k]
        how = str(rng.choice(["flatten", "transpose", "extra_dim", "shrink", "grow", "empty", "expand_huge", "scalar"]))
        if how == "flatten":
            t = t.reshape(-1)
        elif how == "transpose" and t.dim() >= 2:
            t = t.transpose(0, 1).contiguous()
        elif how == "extra_dim":
            t = t.unsqueeze(0)
        elif how == "shrink" and t.numel():
            t = t.reshape(-1)[:-1]
        elif how == "grow":
            t = torch.cat([t.reshape(-1), t.reshape(-1)[:1]]) if t.numel() else torch.zeros(1)
        elif how == "empty":
            t = t.reshape(-1)[:0]
        elif how == "expand_huge":
            t = t.reshape(-1)[:1].expand(1 << 15, 1 << 15) if t.numel() else t
        elif how == "scalar":
            t = t.reshape(-1)[0].clone() if t.numel() else t
        sd[k] = t
        return self._save(obj), f"{k}: {how} -> {tuple(t.shape)}"

    def tensor_dtype(self, rng, seed):
        import torch
        obj = self._obj(seed)
        sd = self._tensors(obj)
        keys = [k for k in sorted(sd) if isinstance(sd[k], torch.Tensor)]
        k = keys[int(rng.integers(len(keys)))]
        dt = [torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int8, torch.bool, torch.complex64,
              torch.uint8][int(rng.integers(8))]
        sd[k] = sd[k].to(dt)
        return self._save(obj), f"{k}: dtype -> {dt}"

    def pickle_global(self, rng, seed):
        entries = self._entries(seed)
        names = sorted(self.payloads)
        name = names[int(rng.integers(len(names)))]
        payload = self.payloads[name]
        i = next(i for i, (n, _) in enumerate(entries) if n.endswith("data.pkl"))
        entries[i] = (entries[i][0], payload)
        prefix = entries[i][0][:-len("data.pkl")]
        if not any(n == prefix + "data/0" for n, _ in entries):
            entries.append((prefix + "data/0", struct.pack("<f", 1.0)))
        return write_zip(entries), f"data.pkl replaced by payload {name}"

    def pickle_bytes(self, rng, seed):
        """Random edits of the object-graph pickle, with a correct CRC: the unpickler sees them."""
        entries = self._entries(seed)
        i = next(i for i, (n, _) in enumerate(entries) if n.endswith("data.pkl"))
        b = bytearray(entries[i][1])
        how = str(rng.choice(["flip", "byte", "cut", "dup"]))
        if how == "flip":
            for _ in range(int(rng.integers(1, 6))):
                b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        elif how == "byte":
            b[int(rng.integers(len(b)))] = int(rng.choice([0x63, 0x93, 0x52, 0x62, 0x81, 0x92, 0x69, 0x6F, 0x82, 0xFF,
                                                           0x8A, 0x8B, 0x95, 0x58, 0x71, 0x68]))
        elif how == "cut":
            b = b[:int(rng.integers(len(b)))]
        else:
            j = int(rng.integers(len(b)))
            b = b[:j] + b[j:j + 64] + b[j:]
        entries[i] = (entries[i][0], bytes(b))
        return write_zip(entries), f"data.pkl bytes: {how}"

    def layout(self, rng, seed):
        """Structural edits of the file's top level: foreign layouts, missing sections."""
        import torch
        obj = self._obj(seed)
        how = str(rng.choice(["list", "tensor", "empty_dict", "no_state_dict", "sd_not_dict", "nested",
                              "hp_not_dict", "sd_prefix"]))
        if how == "list":
            obj = [obj]
        elif how == "tensor":
            obj = torch.zeros(3)
        elif how == "empty_dict":
            obj = {}
        elif how == "no_state_dict":
            obj.pop("state_dict", None)
        elif how == "sd_not_dict":
            obj["state_dict"] = list(self._tensors(obj).values())
        elif how == "nested":
            obj = {"state_dict": obj}
        elif how == "hp_not_dict":
            obj["hyper_parameters"] = [1, 2]
        else:
            sd = self._tensors(obj)
            obj["state_dict"] = OrderedDict(("module." + k, v) for k, v in sd.items())
        return self._save(obj), f"layout: {how}"

    def meta(self, rng, seed):
        """meta (ours) / training state (Lightning): values that end up in the artifact's report."""
        import torch
        obj = self._obj(seed)
        value = [torch.zeros(2), float("nan"), 10 ** 400, {"a": {"b": [1, 2]}}, "x" * 10000, b"bytes", (1, 2),
                 {1: 2}, {"detected": 5}, None, [float("inf")], {"k": {3, 4}}][int(rng.integers(12))]
        key = str(rng.choice(["meta", "metrics", "detected", "epoch", "global_step"]))
        if "config" in obj:
            if key == "meta":
                obj["meta"] = value
            else:
                obj.setdefault("meta", {})[key] = value
        else:
            obj[key if key in ("epoch", "global_step") else "pytorch-lightning_version"] = value
        return self._save(obj), f"{key} = {str(value)[:30]}"

    def inflated_count(self, rng, seed):
        """A config implying a huge model plus a zero-stride view claiming 2**30 elements: the stored
        parameter count must not be taken from views."""
        import torch
        obj = self._obj(seed)
        sd = self._tensors(obj)
        H = int(rng.choice([1 << 12, 1 << 13, 1 << 14]))
        if "config" in obj:
            obj["config"]["d_model"] = H
        else:
            for k in list(sd):
                if k.endswith("s4_layers.0.D") or k.endswith("inp_a"):
                    sd[k] = torch.zeros(1).expand(*sd[k].shape[:-1], H) if sd[k].dim() else sd[k]
        sd["zz.inflate"] = torch.zeros(1).expand(1 << 15, 1 << 15)
        return self._save(obj), f"config implies H={H}; a zero-stride view of 2^30 elements added"

    def large_storages(self, rng, seed):
        """A ~3 MB file whose pickle references k honest 1.5 GiB deflated storages: memory must stay bounded."""
        import torch
        k = int(rng.choice([1, 2, 3]))
        n = (3 << 29) // 4                                   # 1.5 GiB of float32
        rebuild = torch._utils._rebuild_tensor_v2
        sd = OrderedDict((f"big{i}", _Reduce(rebuild, (_Pid(("storage", torch.FloatStorage, f"big{i}", "cpu", n)), 0,
                                                          (n,), (1,), False, OrderedDict()))) for i in range(k))
        obj = {"format": "neurocompile-checkpoint", "version": 1, "kind": "spikingssm",
               "config": dict(self.seeds.checkpoint_objects["digits.pt"]["config"]), "state_dict": sd, "meta": {}}
        entries = [honest_entry("archive/data.pkl", _pkl(obj)), honest_entry("archive/version", b"3\n")]
        entries += [{"name": f"archive/data/big{i}", **deflated_zeros(b"", n * 4)} for i in range(k)]
        return raw_zip(entries), f"{k} honest 1.5 GiB storage(s), deflated"

    # --- issue 14: config numbers beyond float range, pickle opcode floods, strings for the terminal
    FLOAT_FIELDS = ("tau", "dt_min", "dt_max", "dropout")

    def config_overflow(self, rng, seed):
        obj = self._obj(seed)
        value = [10 ** 400, -10 ** 400, 2 ** 64, 10 ** 30, 1e308, float("inf"), float("-inf"), float("nan"),
                 2 ** 1024, -(2 ** 63)][int(rng.integers(10))]
        if "config" in obj:
            key = str(rng.choice(self.FLOAT_FIELDS + ("d_model", "l_max", "input_levels", "n_layers")))
            obj["config"][key] = value
            where = f"config.{key}"
        else:
            hp = obj.setdefault("hyper_parameters", {})
            model = hp.setdefault("model", {}) if isinstance(hp, dict) else {}
            sec, key = [(("model", "layer"), "dt_min"), (("model", "layer"), "dt_max"), (("model",), "dropout"),
                        (("dataset",), "l_max"), (("model",), "d_model")][int(rng.integers(5))]
            cfg = hp
            for part in sec:
                cfg = cfg.setdefault(part, {}) if isinstance(cfg, dict) else {}
            if isinstance(cfg, dict):
                cfg[key] = value
            where = "hyper_parameters." + ".".join(sec + (key,))
            del model
        return self._save(obj), f"{where} = {str(value)[:24]}"

    def pickle_flood(self, rng, seed):
        """NONE/POP pairs after the pickle's PROTO opcode: a valid pickle of millions of no-op
        opcodes deflated to a few hundred KB (a 260 KB one ran past 300 s)."""
        pairs = int(rng.choice([1, 1000, 100_000, 999_000, 1_000_001, 3_000_000, 20_000_000]))
        entries = []
        for name, data in self._entries(seed):
            if name.endswith("data.pkl"):
                data = data[:2] + b"N0" * pairs + data[2:]
            entries.append((name, data))
        return write_zip(entries), f"{pairs} no-op pairs ({2 * pairs} opcodes) in data.pkl"

    def terminal_strings(self, rng, seed):
        obj = self._obj(seed)
        text = str(rng.choice(["\x1b]0;owned\x07", "\x1b[2J\x1b[H", "line\nnext", "\r\x1b[K", "\x9b31m", "\ud800x",
                               "plain"]))
        if "config" in obj:
            meta = obj.setdefault("meta", {})
            if isinstance(meta, dict):
                meta["detected"] = "checkpoint " + text
                meta["metrics"] = {"loss": float("nan"), "acc": float("inf"), "name": text}
        else:
            obj["pytorch-lightning_version"] = "2.0" + text
        return self._save(obj), f"strings with {text!r}"

    def identity(self, rng, seed):
        return self.seeds.checkpoints[seed], "unchanged (control)"


def _clone(obj):
    if isinstance(obj, OrderedDict):
        return OrderedDict((k, _clone(v)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clone(v) for v in obj]
    return obj          # tensors are replaced, never edited in place


# ---------------------------------------------------------------------------- user data
class DataMutators:
    def __init__(self, seeds: Seeds):
        self.seeds = seeds
        self.table = [
            ("shape", self.shape), ("dtype", self.dtype), ("levels_range", self.levels_range),
            ("float_values", self.float_values), ("labels", self.labels), ("missing_keys", self.missing_keys),
            ("levels_key", self.levels_key), ("npy_header", self.npy_header), ("object_array", self.object_array),
            ("not_a_zip", self.not_a_zip), ("zip_level", self.zip_level), ("empty", self.empty),
            ("split_keys", self.split_keys), ("valid", self.valid), ("large_honest", self.large_honest),
        ]

    def _base(self, seed):
        d = self.seeds.data[seed]
        return {"x": d["x"].copy(), "y": d["y"].copy()}

    def _top(self, seed):
        return 16 if seed == "digits" else 9

    def shape(self, rng, seed):
        d = self._base(seed)
        x = d["x"]
        how = str(rng.choice(["longer", "shorter", "channels", "flat", "4d", "scalar", "zero_len", "transposed"]))
        if how == "longer":
            x = np.concatenate([x, x[:, :1]], 1)
        elif how == "shorter":
            x = x[:, :-1]
        elif how == "channels":
            x = np.stack([x, x], -1)
        elif how == "flat":
            x = x.reshape(-1)
        elif how == "4d":
            x = x[..., None, None]
        elif how == "scalar":
            x = np.array(3)
        elif how == "zero_len":
            x = x[:, :0]
        else:
            x = np.ascontiguousarray(x.T)
        d["x"] = x
        return npz_bytes(d), f"x shape {x.shape}"

    def dtype(self, rng, seed):
        d = self._base(seed)
        dt = str(rng.choice(["float16", "float32", "float64", "uint8", "int8", "uint64", "bool", "complex64", "U3", "S2",
                             "datetime64[s]", "timedelta64[s]", ">i8", ">f8", "V8", "structured"]))
        x = d["x"]
        if dt == "structured":
            y = np.zeros(x.shape, dtype=[("a", "<i8")])
            y["a"] = x
            x = y
        elif dt.startswith(("float", ">f", "complex")):
            x = (x / self._top(seed)).astype(dt)
        elif dt == "V8":
            x = x.astype("<i8").view("V8")
        else:
            with np.errstate(all="ignore"):
                x = x.astype(dt)
        d["x"] = x
        return npz_bytes(d), f"x dtype {dt}"

    def levels_range(self, rng, seed):
        d = self._base(seed)
        top = self._top(seed)
        value = int(rng.choice([top + 1, -1, 2 ** 31, -(2 ** 63), 2 ** 63 - 1, 255, 256, 65535]))
        x = d["x"].astype(np.int64)
        x.flat[int(rng.integers(x.size))] = value
        if value > 2 ** 62 and rng.random() < 0.5:
            x = np.abs(x).astype(np.uint64)
            x.flat[0] = np.uint64(2 ** 64 - 1)
        d["x"] = x
        return npz_bytes(d), f"x holds {value}"

    def float_values(self, rng, seed):
        d = self._base(seed)
        x = d["x"] / self._top(seed)
        value = float(rng.choice([float("nan"), float("inf"), -float("inf"), 1.0 + 1e-12, 1.0 + 1e-6, -1e-12, -0.0, 1e300,
                                  5e-324, 0.5]))
        if rng.random() < 0.5:
            x.flat[int(rng.integers(x.size))] = value
        else:
            x[...] = value
        d["x"] = x
        return npz_bytes(d), f"float x with {value}"

    def labels(self, rng, seed):
        d = self._base(seed)
        y = d["y"].astype(np.int64)
        how = str(rng.choice(["too_big", "negative", "huge", "float", "2d", "short", "long", "bool", "uint64", "nan",
                              "str"]))
        if how == "too_big":
            y[0] = 10
        elif how == "negative":
            y[0] = -1
        elif how == "huge":
            y[0] = 2 ** 62
        elif how == "float":
            y = y.astype(np.float64) + 0.5
        elif how == "2d":
            y = y[:, None]
        elif how == "short":
            y = y[:-1]
        elif how == "long":
            y = np.concatenate([y, y])
        elif how == "bool":
            y = y > 4
        elif how == "uint64":
            y = y.astype(np.uint64)
            y[0] = np.uint64(2 ** 64 - 1)
        elif how == "nan":
            y = np.full(len(y), np.nan)
        else:
            y = y.astype("U2")
        d["y"] = y
        return npz_bytes(d), f"labels: {how}"

    def missing_keys(self, rng, seed):
        d = self._base(seed)
        how = str(rng.choice(["no_x", "no_y", "none", "renamed", "extra"]))
        if how == "no_x":
            del d["x"]
        elif how == "no_y":
            del d["y"]
        elif how == "none":
            d = {}
        elif how == "renamed":
            d = {"X": d["x"], "labels": d["y"]}
        else:
            d["z"] = np.zeros(3)
        return npz_bytes(d), f"keys: {how}"

    def levels_key(self, rng, seed):
        d = self._base(seed)
        how = str(rng.choice(["zero", "negative", "huge", "vector", "float", "smaller", "larger", "bool", "str"]))
        top = self._top(seed)
        d["levels"] = {"zero": np.array(0), "negative": np.array(-3), "huge": np.array(2 ** 62), "vector": np.array([16, 16]),
                       "float": np.array(16.0), "smaller": np.array(top - 1), "larger": np.array(top * 4 + 3),
                       "bool": np.array(True), "str": np.array("16")}[how]
        return npz_bytes(d), f"levels: {how}"

    def npy_header(self, rng, seed):
        d = self._base(seed)
        key = str(rng.choice(["x", "y"]))
        a = d[key]
        body = np.ascontiguousarray(a).tobytes()
        descr = np.lib.format.dtype_to_descr(a.dtype)
        how = str(rng.choice(["huge", "huge_product", "fortran", "neg", "v3", "bad", "longer_body", "shorter_body",
                              "void0", "big_itemsize"]))
        if how == "huge":
            hdr = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({2 ** 40}, {a.shape[1] if a.ndim > 1 else 1}), }}"
        elif how == "huge_product":
            hdr = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({2 ** 62}, {2 ** 62}), }}"
        elif how == "fortran":
            hdr = f"{{'descr': '{descr}', 'fortran_order': True, 'shape': {a.shape}, }}"
        elif how == "neg":
            hdr = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': (-12, 64), }}"
        elif how == "bad":
            hdr = str(rng.choice(["{", "[]", "{'descr': '<i8'}", "__import__('os').system('touch MARKER')"]))
        elif how == "longer_body":
            hdr = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {a.shape}, }}"
            body = body + body
        elif how == "shorter_body":
            hdr = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {a.shape}, }}"
            body = body[:len(body) // 2]
        elif how == "void0":
            hdr = f"{{'descr': '|V0', 'fortran_order': False, 'shape': ({2 ** 40}, 64), }}"
            body = b""
        elif how == "big_itemsize":
            hdr = f"{{'descr': '<U{2 ** 30}', 'fortran_order': False, 'shape': (12, 64), }}"
        else:
            hdr = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {a.shape}, }}"
        data = npy_with_header(hdr, body, (3, 0) if how == "v3" else (1, 0))
        entries = [(k + ".npy", npy_bytes(v)) for k, v in d.items()]
        entries = [(n, data if n == key + ".npy" else b) for n, b in entries]
        return write_zip(entries, zipfile.ZIP_STORED if rng.random() < 0.5 else zipfile.ZIP_DEFLATED), \
            f"{key}.npy header: {how}"

    def object_array(self, rng, seed):
        d = self._base(seed)
        key = str(rng.choice(["x", "y", "levels"]))
        entries = [(k + ".npy", npy_bytes(v)) for k, v in d.items()]

        payload = npy_with_header("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }",
                                  _pkl(_Reduce(os.system, ("touch MARKER",))))
        entries = [(n, payload if n == key + ".npy" else b) for n, b in entries]
        if key == "levels":
            entries.append(("levels.npy", payload))
        return write_zip(entries), f"{key}.npy is an object array whose pickle runs os.system"

    def not_a_zip(self, rng, seed):
        how = str(rng.choice(["random", "empty", "text", "artifact", "checkpoint", "npy", "gzip"]))
        if how == "random":
            return rng.bytes(int(rng.integers(1, 5000))), "random bytes"
        if how == "empty":
            return b"", "empty file"
        if how == "text":
            return b"x,y\n1,2\n", "a CSV file"
        if how == "artifact":
            return self.seeds.artifacts[seed], "an artifact, not data"
        if how == "checkpoint":
            return self.seeds.checkpoints["digits.pt"], "a checkpoint, not data"
        if how == "npy":
            return npy_bytes(self.seeds.data[seed]["x"]), "a bare .npy"
        import gzip
        return gzip.compress(self.seeds.data_bytes[seed]), "gzipped npz"

    def zip_level(self, rng, seed):
        data = npz_bytes(self._base(seed), compressed=bool(rng.random() < 0.5))
        how = str(rng.choice(["bitflip", "truncate", "field", "encrypted", "bomb", "duplicate", "garbage"]))
        if how == "bitflip":
            return bytes_bitflip(rng, data)
        if how == "truncate":
            return bytes_truncate(rng, data)
        if how == "field":
            return zip_field_edit(rng, data)
        if how == "encrypted":
            return zip_encrypted(rng, data)
        entries = read_zip(data)
        return zip_members(rng, entries, {"bomb": "bomb", "duplicate": "duplicate", "garbage": "garbage"}[how])

    def large_honest(self, rng, seed):
        """A ~1 MB file that honestly declares 768 MiB of uint8 samples (deflate): memory must stay bounded."""
        L = self.seeds.data[seed]["x"].shape[1]
        n = (768 << 20) // L
        dt = str(rng.choice(["|u1", "<i8"]))
        n = n if dt == "|u1" else n // 8
        head_x = npy_with_header(f"{{'descr': '{dt}', 'fortran_order': False, 'shape': ({n}, {L}), }}")
        head_y = npy_with_header(f"{{'descr': '<i8', 'fortran_order': False, 'shape': ({n},), }}")
        x = {"name": "x.npy", **deflated_zeros(head_x, n * L * np.dtype(dt).itemsize)}
        y = {"name": "y.npy", **deflated_zeros(head_y, n * 8)}
        return raw_zip([x, y]), f"{n} x {L} {dt} zeros, declared honestly, deflated"

    def empty(self, rng, seed):
        d = self._base(seed)
        d["x"], d["y"] = d["x"][:0], d["y"][:0]
        return npz_bytes(d), "no samples"

    def split_keys(self, rng, seed):
        d = self._base(seed)
        how = str(rng.choice(["train_only", "both", "test_bad", "mixed"]))
        if how == "train_only":
            d = {"x_train": d["x"], "y_train": d["y"]}
        elif how == "both":
            d = {"x_train": d["x"], "y_train": d["y"], "x_test": d["x"][:3], "y_test": d["y"][:3]}
        elif how == "test_bad":
            d = {"x_test": d["x"][:, :5], "y_test": d["y"], "x": d["x"], "y": d["y"]}
        else:
            d = {"x_test": d["x"], "y": d["y"]}
        return npz_bytes(d), f"split keys: {how}"

    def valid(self, rng, seed):
        d = self._base(seed)
        how = str(rng.choice(["int", "float", "levels_key", "compressed", "uint8"]))
        if how == "float" and seed == "digits":
            d["x"] = d["x"] / 16.0
        elif how == "levels_key" and seed == "digits":
            d["levels"] = np.array(16)
        elif how == "uint8":
            d["x"] = d["x"].astype(np.uint8)
        return npz_bytes(d, compressed=(how == "compressed")), f"valid data ({how})"


# ============================================================================ generation

# ---------------------------------------------------------------------------- the environment (issue 14)
SIGNALS = [signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT,
           signal.SIGKILL]
SPECIAL_INPUTS = ["fifo", "link:/dev/zero", "link:/dev/urandom", "link:/proc/self/mem", "dir", "socket",
                  "dangling", "link:good", "link-chain:good"]
SPECIAL_OUTPUTS = ["fifo", "socket", "link:/dev/null", "link:/proc/self/fd/1", "link:/dev/stdout", "dangling",
                   "link:file", "link-chain:file", "dir", "empty", "folder-link-same-file"]


class EnvScenarios:
    """Cases made of the environment, not of bytes: special files and symlinks as inputs and outputs,
    signals at random points, seeds and counts outside their stated bounds, re-saved checkpoints."""

    def __init__(self, seeds: Seeds):
        self.seeds = seeds
        self.table = [("special_input", self.special_input), ("special_output", self.special_output),
                      ("signal", self.signal), ("seed", self.seed), ("count_bounds", self.count_bounds),
                      ("resaved_checkpoint", self.resaved)]

    def _base(self, cid, seed):
        art, dat, ck = f"{cid}.loihi2", f"{cid}-data.npz", f"{cid}-ckpt" + os.path.splitext(self.seeds.ckpt_of[seed])[1]
        files = {art: self.seeds.artifacts[seed], dat: self.seeds.data_bytes[seed],
                 ck: self.seeds.checkpoints[self.seeds.ckpt_of[seed]]}
        return art, dat, ck, files

    def _command(self, rng, art, dat, ck, out):
        what = str(rng.choice(["export", "simulate", "validate", "inspect"]))
        if what == "export":
            return ["export", ck, "-o", out]
        if what == "simulate":
            return ["simulate", art, "--data", dat, "--engine", "emulator", "--count", "3", "-o", out]
        if what == "validate":
            return ["validate", ck, art, "--data", dat, "--lava-samples", "0", "--max-samples", "8", "--json", out]
        return ["inspect", art]

    def special_input(self, rng, cid, seed):
        art, dat, ck, files = self._base(cid, seed)
        which = str(rng.choice(["checkpoint", "artifact", "data"]))
        kind = str(rng.choice(SPECIAL_INPUTS))
        name = {"checkpoint": ck, "artifact": art, "data": dat}[which]
        good = files.pop(name)
        specials = {}
        if kind in ("link:good", "link-chain:good"):
            files["real-" + name] = good
            if kind == "link-chain:good":
                specials["hop-" + name] = ("link", "real-" + name)
                specials[name] = ("link", "hop-" + name)
            else:
                specials[name] = ("link", "real-" + name)
        elif kind.startswith("link:"):
            specials[name] = ("link", kind[5:])
        elif kind == "dangling":
            specials[name] = ("link", "missing-" + name)
        else:
            specials[name] = (kind, None)
        cmd = {"checkpoint": ["export", ck, "-o", "out.loihi2"], "artifact": ["inspect", art],
               "data": ["simulate", art, "--data", dat, "--engine", "emulator", "--count", "2"]}[which]
        outputs = ("out.loihi2",) if which == "checkpoint" else ()
        return Case(cid, "env", "special_input", seed, f"{which} is {kind}", files, [cmd], name, outputs,
                    specials=specials, timeout=90.0)

    def special_output(self, rng, cid, seed):
        art, dat, ck, files = self._base(cid, seed)
        kind = str(rng.choice(SPECIAL_OUTPUTS))
        out, specials, outputs = "out.bin", {}, ("out.bin",)
        if kind == "empty":
            out, outputs = "", ()
        elif kind == "folder-link-same-file":
            specials["d"] = ("link", ".")
            cmd = ["simulate", art, "--data", dat, "--engine", "emulator", "-o", "t.npz", "--plot", "d/t.npz"]
            return Case(cid, "env", "special_output", seed, "-o t.npz --plot d/t.npz with d -> .", files, [cmd], art,
                        ("t.npz",), specials=specials, expect="any", timeout=90.0)
        elif kind in ("link:file", "link-chain:file"):
            files["target.bin"] = b"old contents"
            if kind == "link-chain:file":
                specials["hop.bin"] = ("link", "target.bin")
                specials[out] = ("link", "hop.bin")
            else:
                specials[out] = ("link", "target.bin")
            outputs = ("target.bin",)              # written through: the link stays, its target is replaced
        elif kind.startswith("link:"):
            specials[out] = ("link", kind[5:])
        elif kind == "dangling":
            specials[out] = ("link", "made.bin")
            outputs = ("made.bin",)
        else:
            specials[out] = (kind, None)
        cmd = self._command(rng, art, dat, ck, out)
        if cmd[0] == "inspect":
            cmd = ["export", ck, "-o", out]
        case = Case(cid, "env", "special_output", seed, f"output is {kind}", files, [cmd], art, outputs,
                    specials=specials, expect="any", timeout=90.0)
        if out in files:
            del files[out]
        return case

    def signal(self, rng, cid, seed):
        art, dat, ck, files = self._base(cid, seed)
        sig = SIGNALS[int(rng.integers(len(SIGNALS)))]
        delay = float(rng.choice([0.0, 0.05, 0.2, 0.5, 1.0, 2.0, 4.0]) * rng.uniform(0.5, 1.5))
        out = "out.bin"
        cmd = self._command(rng, art, dat, ck, out)
        follow = [["export", ck, "-o", "next.loihi2"]]     # a later run in the same folder clears what a killed one left
        outputs = (out, "next.loihi2")
        return Case(cid, "env", "signal", seed, f"{signal.Signals(sig).name} after {delay:.2f} s: {cmd[0]}", files, [cmd],
                    "", outputs, signal=(int(sig), delay), follow=follow, expect="any", timeout=120.0)

    def seed(self, rng, cid, seed):
        art, dat, ck, files = self._base(cid, seed)
        value = str(rng.choice([0, 1, 2 ** 32, 2 ** 63 - 1, 2 ** 63, 2 ** 64, 10 ** 30, -1, "1e3", "0x10", "nan"]))
        if rng.random() < 0.5:
            cmd = ["simulate", art, "--data", dat, "--engine", "emulator", "--seed", value]
        else:
            cmd = ["validate", ck, art, "--data", dat, "--lava-samples", "0", "--max-samples", "4", "--seed", value,
                   "--mc-passes", str(int(rng.choice([1, 2, 8])))]
        return Case(cid, "env", "seed", seed, f"{cmd[0]} --seed {value}", files, [cmd], "", (), expect="any",
                    timeout=90.0)

    def count_bounds(self, rng, cid, seed):
        art, dat, ck, files = self._base(cid, seed)
        option, value = [("--mc-passes", "10000000"), ("--lava-samples", "100000000"), ("--batch-size", "0"),
                         ("--batch-size", "10000000000"), ("--max-samples", "-1"), ("--timeout", "inf"),
                         ("--timeout", "1e400"), ("--count", "99999999999"), ("--index", "-3"),
                         ("--input-levels", "70000"), ("--input-range", "-5,5"), ("--input-range", "-inf,1"),
                         ("--kernel-bits", "99"), ("--prob-bits", "0")][int(rng.integers(14))]
        if option in ("--mc-passes", "--lava-samples", "--batch-size", "--max-samples"):
            cmd = ["validate", ck, art, "--data", dat, "--max-samples", "4", "--lava-samples", "0", option, value]
        elif option in ("--timeout", "--count", "--index"):
            cmd = ["simulate", art, "--data", dat, "--engine", "emulator", option, value]
        else:
            cmd = ["export", ck, "-o", "out.loihi2", option, value]
        return Case(cid, "env", "count_bounds", seed, f"{option} {value}", files, [cmd], "", ("out.loihi2",),
                    expect="any", timeout=90.0)

    def resaved(self, rng, cid, seed):
        """The same weights re-saved (another pickle protocol): validate must still pair them."""
        import torch
        art, dat, ck, files = self._base(cid, seed)
        buf = io.BytesIO()
        torch.save(self.seeds.checkpoint_objects[self.seeds.ckpt_of[seed]], buf,
                   pickle_protocol=int(rng.choice([2, 3, 4])))
        files[ck] = buf.getvalue()
        cmd = ["validate", ck, art, "--data", dat, "--lava-samples", "0", "--max-samples", "8"]
        return Case(cid, "env", "resaved_checkpoint", seed, "checkpoint re-saved", files, [cmd], ck, (),
                    expect="ok", timeout=90.0)


WORK_DIR_SPECIALS = ["fifo", "socket", "file", "link:/dev/zero", "dangling", "link:outside"]
WORK_DIR_PLACES = ["W", "W/shards", "W/scratch", "W/scratch/pointer"]
STALE_POINTER = "shard-4194309-x"    # a scratch pointer named after a pid above any pid_max: its owner never runs
TAMPER_REFUSED = ["fifo", "dir", "link:/dev/zero", "link:outside", "dangling", "socket"]
TAMPER_RECOMPUTED = ["truncate", "bitflip", "swap", "empty", "remove", "none"]
STORE_SIGNALS = [signal.SIGTERM, signal.SIGHUP, signal.SIGINT]
RAY_ADDRESSES = ["127.0.0.1:1", "nohost:xx", "::::", "no-such-host.invalid:6379", "256.1.1.1:6379", "[::1]:1"]


def ray_importable() -> bool:
    import importlib.util
    return importlib.util.find_spec("ray") is not None


class StoreScenarios:
    """The shard store, ``--work-dir``, the workers' scratch folders and joining a Ray cluster (issue 20).

    ``work_dir``: the work-dir W, or W/shards, or W/scratch, or a stale scratch pointer in it, is a FIFO,
    a socket, a regular file, a link to /dev/zero, a dangling link or a link to a folder outside the case
    folder (holding a sentinel file); or W is missing (its parent exists: created, ok; its parent is
    missing: one line); or W is populated by a first validate, its stored shards are tampered with
    (a FIFO, a folder, a link, a socket in place of one: one line naming it; truncated, flipped, swapped,
    emptied, removed: recomputed) and a second validate must give the same report.
    ``signal_work_dir``: TERM, HUP or INT during ``validate --work-dir W --workers 2``; every shard stored
    before the signal outlives it and the rerun, which must be ok.
    ``ray_address``: ``--ray-address A --ray-connect-timeout 3`` for a closed port, garbage, an
    unresolvable host: one line naming A, exit 2 (no cases when ``ray`` is not importable)."""

    def __init__(self, seeds: Seeds):
        self.seeds = seeds
        self._base = EnvScenarios(seeds)._base        # the seed's artifact, data and checkpoint as case files
        self.ray = ray_importable()
        self.table = [("work_dir", self.work_dir), ("signal_work_dir", self.signal_work_dir)]
        if self.ray:
            self.table.append(("ray_address", self.ray_address))
        self.note = None if self.ray else "ray_address: no cases (ray is not importable in this Python)"

    def _validate(self, cid, seed, work_dir, batch=4):
        art, dat, ck, files = self._base(cid, seed)
        cmd = ["validate", ck, art, "--data", dat, "--lava-samples", "0", "--max-samples", "8", "--batch-size",
               str(batch), "--work-dir", work_dir]
        return cmd, files

    def work_dir(self, rng, cid, seed):
        kind = str(rng.choice(WORK_DIR_SPECIALS + ["missing", "missing-parent"] + ["populated"] * 4))
        workers = ["--workers", "2"] if rng.random() < 0.4 else []
        outside = {"sentinel.txt": b"outside the case folder: never written\n"}
        if kind == "populated":
            return self._populated(rng, cid, seed, workers, outside)
        if kind in ("missing", "missing-parent"):
            w = {"missing": str(rng.choice(["wd", "sub/wd"])), "missing-parent": "nope/wd"}[kind]
            cmd, files = self._validate(cid, seed, w)
            specials = {"sub": ("dir", None)} if w == "sub/wd" else {}
            ok = kind == "missing"
            return Case(cid, "store", "work_dir", seed, f"--work-dir {w} does not exist{' (nor its parent)' * (not ok)}"
                        f"{' --workers 2' * bool(workers)}", files, [cmd + workers], w, ("wd",) if ok else (),
                        specials=specials, expects=("ok" if ok else "error",), keeps=("wd",) if ok else (),
                        outside=outside, timeout=240.0)
        place = str(rng.choice(WORK_DIR_PLACES))
        if place == "W/scratch/pointer" and kind == "file":
            kind = "dir"                          # a regular stale pointer is read and removed: that is its cleanup
        if place.startswith("W/scratch") and rng.random() < 0.7:
            workers = ["--workers", "2"]          # scratch folders are the workers'
        name = {"W": "wd", "W/shards": "wd/shards", "W/scratch": "wd/scratch",
                "W/scratch/pointer": "wd/scratch/" + STALE_POINTER}[place]
        specials = {} if place == "W" else {"wd": ("dir", None)}
        if place == "W/scratch/pointer":
            specials["wd/scratch"] = ("dir", None)
        specials[name] = {"file": ("file", "not the store's\n"), "dangling": ("link", "missing-target"),
                          "link:outside": ("link", "{outside}")}.get(kind, ("link", kind[5:]) if kind.startswith("link:")
                                                                     else (kind, None))
        if kind == "link:outside" and place == "W/scratch/pointer":
            specials[name] = ("link", "{outside}/sentinel.txt")
        cmd, files = self._validate(cid, seed, "wd")
        if place == "W":
            want = "ok" if kind == "link:outside" else "error"      # W itself is the user's: links are followed
        elif place.startswith("W/scratch"):
            want = "error" if workers else "ok"                     # scratch is used by local workers only
        else:
            want = "error"
        return Case(cid, "store", "work_dir", seed, f"{place} is {kind}{' --workers 2' * bool(workers)}", files,
                    [cmd + workers], name, (), specials=specials, expects=(want,), outside=outside,
                    outside_writable=place == "W" and kind == "link:outside", timeout=240.0)

    def _populated(self, rng, cid, seed, workers, outside):
        how = str(rng.choice(TAMPER_REFUSED + TAMPER_RECOMPUTED))
        cmd, files = self._validate(cid, seed, "wd")
        second = cmd + (["--workers", "2"] if rng.random() < 0.4 else [])
        refused = how in TAMPER_REFUSED
        return Case(cid, "store", "work_dir", seed, f"--work-dir populated by a first validate{' --workers 2' * bool(workers)}"
                    f", then a stored shard: {how}", files, [cmd + workers + ["--json", "r1.json"],
                                                               second + ["--json", "r2.json"]],
                    "wd/shards/", ("wd", "r1.json", "r2.json"), expects=("ok", "error" if refused else "ok"),
                    keeps=("wd",), outside=outside, between=how, store_dir="wd",
                    same_reports=() if refused else ("r1.json", "r2.json"), timeout=300.0)

    def signal_work_dir(self, rng, cid, seed):
        sig = STORE_SIGNALS[int(rng.integers(len(STORE_SIGNALS)))]
        # fresh worker interpreters store the first of the 4 shards ~10 s in, the last ~20 s in (2 shared cores)
        delay = float(rng.choice([1.0, 10.0, 12.0, 14.0, 16.0, 18.0]) * rng.uniform(0.85, 1.15))
        exists = rng.random() < 0.5
        cmd, files = self._validate(cid, seed, "wd", batch=2)
        cmd += ["--workers", "2"]
        return Case(cid, "store", "signal_work_dir", seed, f"{signal.Signals(sig).name} after {delay:.2f} s: validate "
                    f"--work-dir ({'exists' if exists else 'new'}) --workers 2", files, [cmd], "", ("wd", "r.json"),
                    specials={"wd": ("dir", None)} if exists else {}, signal=(int(sig), delay),
                    follow=[cmd + ["--json", "r.json"]], expects=("ok",), keeps=("wd",), store_dir="wd",
                    expect="any", timeout=300.0)

    def ray_address(self, rng, cid, seed):
        address = RAY_ADDRESSES[int(rng.integers(len(RAY_ADDRESSES)))]
        art, dat, ck, files = self._base(cid, seed)
        cmd = ["validate", ck, art, "--data", dat, "--lava-samples", "0", "--max-samples", "8",
               "--ray-address", address, "--ray-connect-timeout", "3"]
        keeps = ()
        if rng.random() < 0.5:                    # Ray's log then goes into the work-dir
            cmd += ["--work-dir", "wd"]
            keeps = ("wd",)
        return Case(cid, "store", "ray_address", seed, f"--ray-address {address}{' --work-dir' * bool(keeps)}", files,
                    [cmd], address + ":", (), expects=("error",), keeps=keeps, forked=True, timeout=60.0)


KINDS = {"artifact": 0, "checkpoint": 1, "data": 2, "env": 3, "store": 4}
PREFIX = {"artifact": "art", "checkpoint": "ckpt", "data": "data", "env": "env", "store": "store"}


class Generator:
    def __init__(self, seeds: Seeds, seed: int):
        self.seeds, self.seed = seeds, seed
        self.art = ArtifactMutators(seeds)
        self.ckpt = CheckpointMutators(seeds)
        self.data = DataMutators(seeds)
        self.env = EnvScenarios(seeds)
        self.store = StoreScenarios(seeds)

    def case(self, kind: str, i: int) -> Case:
        rng = np.random.default_rng([self.seed, KINDS[kind], i])
        cid = f"{PREFIX[kind]}-{i:05d}"
        return getattr(self, "_" + kind)(cid, i, rng)

    def _artifact(self, cid, i, rng):
        name, mutate = self.art.table[i % len(self.art.table)]
        seed = "digits" if rng.random() < 0.65 else "small_official"
        data, note = mutate(rng, seed)
        art, dat = f"{cid}.loihi2", f"{cid}-data.npz"
        sim = ["simulate", art, "--data", dat, "--engine", "emulator", "--count", str(int(rng.choice([1, 3])))]
        outputs = []
        if rng.random() < 0.5:
            sim += ["-o", "traces.npz"]
            outputs.append("traces.npz")
        if rng.random() < 0.3:
            sim += ["--record", str(rng.choice(["spikes,voltage", "dense", "ssm,stream"]))]
        if rng.random() < 0.01:
            sim += ["--plot", "raster.png"]
            outputs.append("raster.png")
        commands = [["inspect", art] + (["--json"] if rng.random() < 0.3 else []), sim]
        files = {art: data, dat: self.seeds.data_bytes[seed]}
        if rng.random() < 0.03:                         # validate on a few
            ck = f"{cid}-ckpt" + os.path.splitext(self.seeds.ckpt_of[seed])[1]
            files[ck] = self.seeds.checkpoints[self.seeds.ckpt_of[seed]]
            commands.append(["validate", ck, art, "--data", dat, "--lava-samples", "0", "--max-samples", "8",
                             "--json", "report.json"])
            outputs.append("report.json")
        return Case(cid, "artifact", name, seed, note, files, commands, art, tuple(outputs), sound=art)

    def _checkpoint(self, cid, i, rng):
        name, mutate = self.ckpt.table[i % len(self.ckpt.table)]
        seeds = sorted(self.seeds.checkpoints)
        weights = np.array([4.0 if s in ("digits.pt", "small_official.ckpt") else 1.0 for s in seeds])
        seed = str(rng.choice(seeds, p=weights / weights.sum()))
        data, note = mutate(rng, seed)
        ck = cid + os.path.splitext(seed)[1]
        out = f"{cid}.loihi2"
        files = {ck: data}
        if seed in self.seeds.artifact_of and rng.random() < 0.08:
            art = self.seeds.artifact_of[seed]
            dat = f"{cid}-data.npz"
            files[f"{cid}-seed.loihi2"] = self.seeds.artifacts[art]
            files[dat] = self.seeds.data_bytes[art]
            commands = [["validate", ck, f"{cid}-seed.loihi2", "--data", dat, "--lava-samples", "0", "--max-samples", "8",
                         "--json", "report.json"]]
            outputs = ("report.json",)
            sound = ""
        else:
            cmd = ["export", ck, "--target", "loihi2", "-o", out]
            r = rng.random()
            if r < 0.1:
                cmd += ["--input-levels", str(int(rng.choice([16, 255, 1])))]
            elif r < 0.15:
                cmd += ["--input-range", "0,1"]
            elif r < 0.2:
                cmd += ["--kernel-bits", "6", "--weight-bits", "6"]
            commands, outputs, sound = [cmd], (out,), out
        marker = "MARKER"
        return Case(cid, "checkpoint", name, seed, note, files, commands, ck, outputs, sound=sound, marker=marker,
                    timeout=120.0)

    def _store(self, cid, i, rng):
        name, make = self.store.table[i % len(self.store.table)]
        seed = "digits" if rng.random() < 0.5 else "small_official"
        return make(rng, cid, seed)

    def _env(self, cid, i, rng):
        name, make = self.env.table[i % len(self.env.table)]
        seed = "digits" if rng.random() < 0.7 else "small_official"
        return make(rng, cid, seed)

    def _data(self, cid, i, rng):
        name, mutate = self.data.table[i % len(self.data.table)]
        seed = "digits" if rng.random() < 0.6 else "small_official"
        data, note = mutate(rng, seed)
        art, dat = f"{cid}-seed.loihi2", f"{cid}.npz"
        files = {art: self.seeds.artifacts[seed], dat: data}
        if rng.random() < 0.15:
            ck = f"{cid}-ckpt" + os.path.splitext(self.seeds.ckpt_of[seed])[1]
            files[ck] = self.seeds.checkpoints[self.seeds.ckpt_of[seed]]
            commands = [["validate", ck, art, "--data", dat, "--lava-samples", "0", "--max-samples", "8",
                         "--json", "report.json"]]
            outputs = ("report.json",)
        else:
            cmd = ["simulate", art, "--data", dat, "--engine", "emulator", "--count", str(int(rng.choice([1, 2, 50])))]
            if rng.random() < 0.2:
                cmd += ["--index", str(int(rng.choice([0, 5, 11, 12, 1000])))]
            if rng.random() < 0.1:
                cmd += ["--split", "train"]
            outputs = ()
            if rng.random() < 0.5:
                cmd += ["-o", "traces.npz"]
                outputs = ("traces.npz",)
            commands = [cmd]
        return Case(cid, "data", name, seed, note, files, commands, dat, outputs, marker="MARKER")


# ============================================================================ the child
def _soundness(path: str, seed_digest: str, rng_seed: int) -> dict:
    """Run an accepted artifact on both emulator back ends (identical traces required)."""
    from neurocompile.artifact import load_program
    from neurocompile.emulator import emulate
    from neurocompile.validate import compare_traces

    out = {}
    program = load_program(path)
    out["digest"] = program_digest(program)
    out["changed"] = out["digest"] != seed_digest
    L, C, top = program.seq_len, program.input_channels, program.op(program.input_node).levels
    channels = program.channel_counts()
    cells = 4 * L * sum(channels.values())            # int64 traces of 4 samples, a few copies each
    if 8 * 6 * cells > 1 << 30:
        out["skipped"] = f"L={L}: too large for a soundness run within the memory bound"
        return out
    rng = np.random.default_rng(rng_seed)
    raw = np.stack([np.zeros((L, C), np.int64), np.full((L, C), top, np.int64),
                    rng.integers(0, top + 1, (L, C)), rng.integers(0, top + 1, (L, C))])
    a = emulate(program, raw, record=True, backend="compiled", device="cpu")
    b = emulate(program, raw, record=True, backend="torch", device="cpu")
    out["mismatches"] = compare_traces(a, b) + [k + " (only in torch)" for k in b if k not in a]
    out["samples"] = len(raw)
    return out


def _lava_compare(path: str, rng_seed: int, timeout_s: float) -> dict:
    from neurocompile.artifact import load_program
    from neurocompile.emulator import emulate
    from neurocompile.targets.loihi2.runner import run_lava
    from neurocompile.validate import compare_traces

    program = load_program(path)
    L, C, top = program.seq_len, program.input_channels, program.op(program.input_node).levels
    rng = np.random.default_rng(rng_seed)
    raw = np.stack([np.full((L, C), top, np.int64), rng.integers(0, top + 1, (L, C))])
    t = time.perf_counter()
    lava = run_lava(program, raw, record=True, timeout_s=timeout_s)
    emu = emulate(program, raw, record=True, device="cpu")
    return {"lava_mismatches": compare_traces(lava, emu), "lava_seconds": time.perf_counter() - t,
            "lava_compared": len([k for k in lava if k != "seconds"])}


def _capture(fn, folder: str, tag: str):
    """Run fn() with fds 1 and 2 sent to files; -> (value, exception text, stdout, stderr)."""
    paths = (os.path.join(folder, tag + ".out"), os.path.join(folder, tag + ".err"))
    saved = (os.dup(1), os.dup(2))
    files = [open(p, "wb") for p in paths]
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(files[0].fileno(), 1)
    os.dup2(files[1].fileno(), 2)
    streams = sys.stdout, sys.stderr
    # Python-level streams onto fds 1 and 2 as well (pytest, for one, replaces sys.stdout/sys.stderr)
    sys.stdout = open(1, "w", closefd=False, errors="backslashreplace")
    sys.stderr = open(2, "w", closefd=False, errors="backslashreplace")
    value, exc = None, None
    try:
        value = fn()
    except SystemExit as e:
        value = e.code if isinstance(e.code, int) else 1
        exc = f"SystemExit({e.code!r})"
    except BaseException:                              # noqa: BLE001 - what escaped the CLI is the finding
        exc = traceback.format_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = streams
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        for f in files:
            f.close()
    out, err = (open(p, "rb").read().decode(errors="replace") for p in paths)
    return value, exc, out, err



CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")     # what must never reach a terminal from our output


def _forked(fn, meta: str, tag: str):
    """``_capture(fn)`` in a forked grandchild, for a CLI that may end its own process: after a Ray join
    that timed out it leaves by ``os._exit`` with the status of the line it printed (cli._past_ray)."""
    sys.stdout.flush()
    sys.stderr.flush()
    verdict = os.path.join(meta, tag + ".json")
    pid = os.fork()
    if pid == 0:
        try:
            import torch
            torch.set_num_threads(1)                   # this grandchild's own thread pool (see run_child)
            rc, exc, _, _ = _capture(fn, meta, tag)
            with open(verdict, "w") as fh:
                json.dump({"rc": rc, "exc": exc}, fh)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    try:
        with open(verdict) as fh:
            got = json.load(fh)
        rc, exc = got["rc"], got["exc"]
    except (FileNotFoundError, ValueError):            # the CLI ended the process: its status is the verdict
        rc, exc = os.waitstatus_to_exitcode(status), None
        if os.WIFSIGNALED(status):
            exc = f"the process died of signal {os.WTERMSIG(status)}"
    out, err = (open(os.path.join(meta, tag + ext), "rb").read().decode(errors="replace") for ext in (".out", ".err"))
    log = re.search(r"\(Ray's output: (\S+)\)", err)
    if log and os.path.dirname(log.group(1)) == tempfile.gettempdir():
        try:                                          # Ray's log, kept in the temp folder when there is no work-dir
            os.unlink(log.group(1))
        except OSError:
            pass
    return rc, exc, out, err


def _traces_problem(path: str):
    """Why a traces file the CLI wrote is unsafe or inconsistent, or None (also when there is none)."""
    if not os.path.exists(path):
        return None
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        bad = [n for n in names if n.startswith("/") or ".." in n.split("/") or "\\" in n]
        if bad:
            return f"member names {bad[:3]}"
        for key in ("logits.npy", "labels.npy", "indices.npy", "engine.npy"):
            if names.count(key) != 1:
                return f"{key} appears {names.count(key)} times"
        return None
    except Exception as exc:                           # noqa: BLE001 - a file we wrote must read back
        return f"unreadable: {exc}"


def _tree_digest(folder: str) -> dict:
    """relative path -> (file type, sha256 of a regular file's bytes / a link's target), links not followed."""
    out = {}
    for top, dirs, names in os.walk(folder):
        for name in dirs + names:
            path = os.path.join(top, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            rel = os.path.relpath(path, folder)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as fh:
                    out[rel] = ("file", hashlib.sha256(fh.read()).hexdigest())
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            else:
                out[rel] = (stat.S_IFMT(st.st_mode), None)
    return out


def _outside_problem(before: dict, after: dict, writable: bool):
    """Why the folder outside the case folder is not as it was (new files allowed when ``writable``)."""
    changed = sorted(n for n in before if after.get(n) != before[n])
    added = [] if writable else sorted(set(after) - set(before))
    if changed or added:
        return f"outside the case folder: changed {changed[:3]}, added {added[:3]}"
    return None


def _store_files(work_dir: str) -> dict:
    """The shard files under ``work_dir``/shards (relative path -> digest)."""
    return {k: v for k, v in _tree_digest(os.path.join(work_dir, "shards")).items() if v[0] == "file"}


def _store_lost(stored: dict, now: dict) -> list:
    return sorted(n for n in stored or {} if now.get(n) != stored[n])


def _tamper_shards(work_dir: str, how: str, outside: str) -> str:
    """Between two validates: do ``how`` to the first stored shard (in name order); -> what was done."""
    shards = sorted(_store_files(work_dir))
    if not shards or how == "none":
        return f"{how} ({len(shards)} shard(s) stored)"
    path = os.path.join(work_dir, "shards", shards[0])
    data = open(path, "rb").read()
    if how in TAMPER_REFUSED:
        os.unlink(path)
        links = {"link:/dev/zero": "/dev/zero", "link:outside": os.path.join(outside, "sentinel.txt"),
                 "dangling": "missing-shard"}
        _make_specials(os.path.dirname(path), {os.path.basename(path): ("link", links[how]) if how in links
                                               else (how, None)})
    elif how == "truncate":
        open(path, "wb").write(data[:len(data) // 2])
    elif how == "bitflip":
        b = bytearray(data)
        b[len(b) // 2] ^= 0x10
        open(path, "wb").write(bytes(b))
    elif how == "empty":
        open(path, "wb").close()
    elif how == "remove":
        os.unlink(path)
    elif how == "swap" and len(shards) > 1:
        other = os.path.join(work_dir, "shards", shards[1])
        second = open(other, "rb").read()
        open(path, "wb").write(second)
        open(other, "wb").write(data)
    return f"{how}: {shards[0]} of {len(shards)} shard(s)"


def _report_difference(first: str, second: str):
    """Top-level keys in which two validate reports differ, timings, executor and command lines aside
    (None when they are the same)."""
    try:
        a, b = (json.load(open(p)) for p in (first, second))
    except (OSError, ValueError) as exc:
        return [f"unreadable: {exc}"]
    for r in (a, b):
        for key in ("seconds", "execution"):
            r.pop(key, None)
        prov = r.get("provenance", {})
        for key in ("date", "command_line"):
            prov.pop(key, None)
        prov.get("options", {}).pop("workers", None)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)) or None


def _signalled(case: Case, argv: list, meta: str, cli) -> dict:
    """Run ``argv`` in a grandchild, send it the case's signal ``delay`` seconds after the CLI starts,
    and say how it ended.

    The delay counts from the grandchild's word that it is entering the CLI (a byte on a pipe), not
    from the fork: a signal that lands while the harness itself is still setting up or has already
    finished is a race in the harness, not a finding.  Once the CLI has returned, the grandchild blocks
    the case's signal so that its verdict is always written."""
    signum, delay = case.signal
    before = set(os.listdir("."))
    path = os.path.join(meta, "signalled.json")
    sys.stdout.flush()
    sys.stderr.flush()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        import torch
        torch.set_num_threads(1)                       # this grandchild's own thread pool (see run_child)
        returned = {}
        try:
            def enter():
                os.write(ready_w, b"1")
                try:
                    returned["rc"] = cli(list(argv))
                finally:
                    signal.pthread_sigmask(signal.SIG_BLOCK, {signum})
                os.write(ready_w, json.dumps(returned["rc"]).encode())    # before anything SIGKILL could cut
                return returned["rc"]
            rc, exc, out, err = _capture(enter, meta, "signalled")
            signal.pthread_sigmask(signal.SIG_BLOCK, {signum})
            if exc is not None and "rc" in returned and "KeyboardInterrupt" in exc.strip().splitlines()[-1]:
                rc, exc = returned["rc"], None     # landed after the CLI had returned: the harness's window
            early = exc is not None and "KeyboardInterrupt" in exc.strip().splitlines()[-1] and \
                f"neurocompile{os.sep}cli.py" not in exc      # landed before the CLI's first instruction
            with open(path, "w") as fh:
                json.dump({"rc": rc, "exc": None if early else exc, "before_cli": early, "stderr": err[-4000:]}, fh)
        finally:
            os._exit(0)
    os.close(ready_w)
    with os.fdopen(ready_r, "rb") as ready:
        started = ready.read(1) == b"1"               # b"" if the grandchild died before the CLI
        if started:
            time.sleep(delay)
            stored = _store_files(case.store_dir) if case.store_dir else None
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        _, status = os.waitpid(pid, 0)
        after = ready.read()                          # the CLI's exit status, if it returned before the signal
    out = {"argv": argv, "signal": signum, "status": status, "left": sorted(set(os.listdir(".")) - before),
           "cli_started": started}
    if case.store_dir and started:                   # shards stored before the signal must outlive it
        out["stored_at_signal"] = stored
        out["store_lost"] = _store_lost(stored, _store_files(case.store_dir))
    if after:
        out["cli_returned"] = json.loads(after)
    try:
        with open(path) as fh:
            out.update(json.load(fh))
    except (FileNotFoundError, ValueError):
        out["killed"] = os.WIFSIGNALED(status) and os.WTERMSIG(status)
        if "cli_returned" in out:                     # what the CLI printed before it returned
            with open(os.path.join(meta, "signalled.err"), errors="replace") as fh:
                out["stderr"] = fh.read()[-4000:]
    return out


def run_child(case: Case, folder: str, meta: str, mem_bytes: int, seed_digest: str, options: dict) -> None:
    """In the forked child: never returns."""
    code = 0
    try:
        os.setpgid(0, 0)
        import torch
        # torch's thread pool does not survive fork: create this child's own from its main thread now, or
        # the emulator's worker threads may race to create it ("Invalid thread pool!")
        torch.set_num_threads(1)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
        os.chdir(folder)
        from neurocompile.execute import log_shared_memory
        log_shared_memory(os.path.join(meta, "shm.log"))
        from neurocompile.cli import main as cli
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))         # SIGQUIT's default action must not dump a core
        result = {"commands": []}
        commands = list(case.commands)
        if case.signal:
            result["signal"] = _signalled(case, commands.pop(0), meta, cli)
        for k, argv in enumerate(commands + (case.follow if case.signal else [])):
            if k == 1 and case.between:
                result["tampered"] = _tamper_shards(case.store_dir, case.between, options["outside"])
            before = set(os.listdir("."))
            rc, exc, out, err = (_forked if case.forked else _capture)(lambda: cli(list(argv)), meta, f"cmd{k}")
            after = set(os.listdir("."))
            result["commands"].append({"argv": argv, "rc": rc, "exc": exc, "stderr": err[-4000:],
                                       "stdout_tail": out[-300:], "new_files": sorted(after - before),
                                       "control": bool(CONTROL.search(out))})
        if case.same_reports and all(c["rc"] == 0 for c in result["commands"]):
            result["reports_differ"] = _report_difference(*case.same_reports)
        if case.signal and case.store_dir and result["signal"].get("stored_at_signal") is not None:
            result["store_lost"] = _store_lost(result["signal"]["stored_at_signal"], _store_files(case.store_dir))
        result["traces_problem"] = _traces_problem("traces.npz")
        if case.sound and os.path.exists(case.sound) and all(c["rc"] == 0 for c in result["commands"]):
            def check():
                s = _soundness(case.sound, seed_digest, options["rng"])
                if case.lava and "skipped" not in s:
                    s.update(_lava_compare(case.sound, options["rng"], options["lava_timeout"]))
                return s
            value, exc, _, err = _capture(check, meta, "sound")
            result["sound"] = value if exc is None else {"error": exc[-3000:], "stderr": err[-1000:]}
        result["marker"] = bool(case.marker) and os.path.exists(case.marker)
        with open(os.path.join(meta, "result.json"), "w") as fh:
            json.dump(result, fh, default=str)
    except BaseException:                              # noqa: BLE001 - reported by the missing result
        code = 3
        try:
            with open(os.path.join(meta, "child-error.txt"), "w") as fh:
                fh.write(traceback.format_exc())
        except OSError:
            pass
    finally:
        os._exit(code)


# ============================================================================ classification
def _copy_regular(src: str, dst: str) -> None:
    """--keep's copy: regular files only (a FIFO would block, a socket cannot be opened)."""
    if stat.S_ISREG(os.lstat(src).st_mode):
        shutil.copy2(src, dst)


def _digest_inputs(folder: str, names) -> dict:
    out = {}
    for n in names:
        p = os.path.join(folder, n)
        try:
            st = os.stat(p)
            out[n] = (hashlib.sha256(open(p, "rb").read()).hexdigest(), st.st_mode)
        except OSError:
            out[n] = None
    return out


def _make_specials(folder: str, specials: dict) -> None:
    import socket
    for name, (kind, target) in specials.items():
        path = os.path.join(folder, name)
        if kind == "link":
            os.symlink(target, path)
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "dir":
            os.mkdir(path)
        elif kind == "file":
            with open(path, "w") as fh:
                fh.write(target)
        elif kind == "socket":
            saved = os.getcwd()
            os.chdir(folder)                          # a relative name: AF_UNIX paths hold 107 bytes
            try:
                sock = socket.socket(socket.AF_UNIX)
                sock.bind(name)
                sock.close()
            finally:
                os.chdir(saved)


def _special_kinds(folder: str, specials: dict) -> dict:
    """What each special path is (its file type, and where a link points): none may change."""
    out = {}
    for name in specials:
        try:
            st = os.lstat(os.path.join(folder, name))
            out[name] = (stat.S_IFMT(st.st_mode), os.readlink(os.path.join(folder, name))
                         if stat.S_ISLNK(st.st_mode) else None)
            if stat.S_ISREG(st.st_mode):
                out[name] += (hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest(),)
        except OSError:
            out[name] = None
    return out


def _error_lines(stderr: str) -> list:
    lines = [ln for part in stderr.splitlines() for ln in part.split("\r")]
    return [ln for ln in lines if ln.strip() and not TQDM_LINE.match(ln)]


def classify(case: Case, result: dict | None, status: dict, inputs_before: dict, inputs_after: dict,
             leftover: list) -> tuple:
    """-> (category, detail)."""
    if status.get("hang"):
        return "hang", f"no result within {case.timeout:g} s"
    if result is None:
        return "crash", status.get("why", "the worker died")
    if result.get("marker"):
        return "code_executed", "the payload's marker file exists"
    changed = [n for n in inputs_before if inputs_before[n] != inputs_after.get(n)]
    if changed:
        return "input_changed", f"input(s) changed: {', '.join(changed)}"
    if status.get("shm_leak"):
        return "shm_leak", status["shm_leak"]
    if status.get("specials_changed"):
        return "input_changed", status["specials_changed"]
    if status.get("outside_changed"):
        return "input_changed", status["outside_changed"]
    if result.get("traces_problem"):
        return "unsound", f"the traces file: {result['traces_problem']}"
    if case.signal:
        verdict = _classify_signalled(case, result["signal"])
        if verdict:
            return verdict
    outcomes = []
    for k, c in enumerate(result["commands"]):
        argv = c["argv"]
        want = case.expects[k] if k < len(case.expects) else case.expect
        inputs = [a for a in argv if a in case.files or a in case.specials]
        lines = _error_lines(c["stderr"])
        if c.get("control") or any(CONTROL.search(ln) for ln in lines):
            return "unsound", f"{argv[0]}: terminal control characters reached the terminal"
        if c["exc"] is not None and not (c["exc"] == "SystemExit(2)" and len(lines) == 1
                                         and lines[0].startswith("neurocompile: error:")):
            return "traceback", f"{' '.join(argv[:2])}: {c['exc'].strip().splitlines()[-1][:300]}"
        if want == "ok" and c["rc"] != 0:
            return "unsound", f"{argv[0]} refused what it must accept: {' | '.join(lines)[-300:]}"
        if c["rc"] == 0:
            bad = [f for f in c["new_files"] if f not in case.outputs + case.keeps or f.startswith(".tmp-")]
            if bad:
                return "partial_output", f"{argv[0]} succeeded but left {bad}"
            if want == "error":
                return "unsound", f"{argv[0]} (command {k + 1}) accepted what it must refuse"
            if case.expect == "interrupted":
                return "traceback", f"{argv[0]} finished although it was interrupted"
            outcomes.append(("ok", None))
            continue
        if [f for f in c["new_files"] if f not in case.keeps]:
            return "partial_output", f"{argv[0]} failed (exit {c['rc']}) and left {c['new_files']}"
        if case.expect == "interrupted":
            want = (130, "interrupted") if case.interrupt == signal.SIGINT else (128 + case.interrupt, "terminated")
            if c["rc"] == want[0] and _ended(lines, want[1]):
                outcomes.append(("clean_error", None))
                continue
            return "traceback", f"interrupted run: exit {c['rc']}, stderr {lines[:3]}"
        if c["rc"] == 2 and len(lines) == 1 and lines[0].startswith("neurocompile: error:"):
            if "out of memory" in lines[0]:
                return "crash", f"{argv[0]}: {lines[0][:300]}"
            if want == "error" and case.mutated and not lines[0].startswith(f"neurocompile: error: {case.mutated}"):
                return "traceback", f"{argv[0]}: the error line does not begin with {case.mutated!r}: {lines[0][:300]}"
            named = [n for n in inputs if n in lines[0]]
            if want in ("any", "error") or named:
                outcomes.append(("clean_error", named))
                continue
            return "traceback", f"{argv[0]}: error line names no input: {lines[0][:300]}"
        return "traceback", f"{argv[0]}: exit {c['rc']}, stderr: {' | '.join(lines)[-400:]}"
    if leftover:
        return "partial_output", f"temporary files left: {leftover}"
    if result.get("reports_differ"):
        return "unsound", f"the rerun's report differs in {result['reports_differ'][:5]} ({result.get('tampered')})"
    if result.get("store_lost") or (case.signal and result["signal"].get("store_lost")):
        lost = result.get("store_lost") or result["signal"]["store_lost"]
        return "unsound", f"{len(lost)} shard(s) stored before the signal were lost or changed: {lost[:2]}"
    # consistency of a mutated artifact across commands, and soundness of what was accepted
    if case.kind == "artifact":
        (insp, _), (sim, named) = outcomes[0], outcomes[1]
        if insp == "clean_error" and sim == "ok":
            return "unsound", "inspect refused the artifact but simulate ran it"
        if insp == "ok" and sim == "clean_error" and case.mutated in named:
            return "unsound", f"inspect accepted the artifact but simulate refused it: {_first_line(result, 1)}"
    sound = result.get("sound")
    if sound is not None:
        if "error" in sound:
            return "unsound", f"accepted, but its runs fail: {sound['error'].strip().splitlines()[-1][:300]}"
        if sound.get("mismatches"):
            return "unsound", f"compiled and torch emulators differ on {sound['mismatches'][:5]}"
        if sound.get("lava_mismatches"):
            return "unsound", f"Lava differs from the emulator on {sound['lava_mismatches'][:5]}"
    if not outcomes:                                  # a Lava comparison: no CLI command
        return ("ok" if sound is not None and "lava_mismatches" in sound else "unsound"), \
            (None if sound is not None and "lava_mismatches" in sound else f"no Lava comparison ran: {sound}")
    return ("ok" if outcomes[0][0] == "ok" else "clean_error"), None


def _ended(lines: list, how: str) -> bool:
    """One line saying the command was interrupted / terminated (and which finished outputs it removed)."""
    return len(lines) == 1 and (lines[0] == f"neurocompile: {how}" or
                                lines[0].startswith(f"neurocompile: {how} (") and
                                lines[0].endswith("removed: the command did not finish)"))


def _classify_signalled(case: Case, sig: dict):
    """A signalled command ends finished (0), with one line and 128 + the signal (130: Ctrl-C), or
    killed (SIGKILL, or a signal before the handlers were set); a failed one leaves no output."""
    signum, lines = sig["signal"], _error_lines(sig.get("stderr", ""))
    rc = sig.get("rc")
    argv = " ".join(sig["argv"][:2])
    if sig.get("before_cli"):                      # the harness's own window (see _signalled): nothing ran
        return None
    if sig.get("killed") and "cli_returned" in sig:  # killed after the CLI returned: judge what it returned
        sig = {**sig, "killed": None, "rc": sig["cli_returned"]}
        rc = sig["rc"]
    if sig.get("exc") is not None:
        return "traceback", f"signalled {argv}: {sig['exc'].strip().splitlines()[-1][:300]}"
    if sig.get("killed"):
        if signum != signal.SIGKILL and sig["killed"] != signum:
            return "crash", f"signalled {argv}: died of signal {sig['killed']}"
    elif rc == 0:
        return None
    elif rc == 130 and signum == signal.SIGINT and _ended(lines, "interrupted"):
        pass
    elif rc == 128 + signum and _ended(lines, "terminated"):
        pass
    elif rc == 2 and len(lines) == 1 and lines[0].startswith("neurocompile: error:"):
        pass
    else:
        return "traceback", f"signalled {argv}: exit {rc}, stderr {lines[:3]}"
    partial = [f for f in sig["left"] if (not sig.get("killed") or not f.startswith(".tmp-")) and f not in case.keeps]
    if partial:
        return "partial_output", f"signalled {argv} ({signal.Signals(signum).name}) left {partial}"
    return None


def _first_line(result, k):
    lines = _error_lines(result["commands"][k]["stderr"])
    return lines[0][:200] if lines else ""


# ============================================================================ the driver
class Fuzzer:
    def __init__(self, args):
        self.args = args
        self.work = args.workdir or tempfile.mkdtemp(prefix="neurocompile-fuzz-")
        os.makedirs(self.work, exist_ok=True)
        self.mem = int(args.mem_gib * (1 << 30))
        self.records = []
        self.shm_ours = set()                # every shared-memory segment our cases created (logged by name)
        self.peak_rss_kib = 0
        self.last_progress = 0.0
        self.t_start = time.monotonic()
        self.stopped_early = None

    def out_of_time(self) -> bool:
        """--stop-after: no new case starts past it (the results then say how far the run got)."""
        if self.args.stop_after and time.monotonic() - self.t_start > self.args.stop_after:
            self.stopped_early = f"stopped after {self.args.stop_after:g} s (--stop-after): no new case started"
            return True
        return False

    # ---- one batch of cases through forked children, at most --jobs at a time
    def run_cases(self, cases, label: str, total: int = None):
        """Cases (an iterable, generated lazily: mutants are made just before they run)."""
        cases = iter(cases) if total is not None else list(cases)
        total = len(cases) if total is None else total
        cases = iter(cases)
        running = {}
        done = 0
        counts = Counter()
        t0 = time.monotonic()
        more = True
        while more or running:
            while more and len(running) < self.args.jobs:
                if self.out_of_time():
                    more = False
                    break
                case = next(cases, None)
                if case is None:
                    more = False
                    break
                running[self._start(case)] = case
            time.sleep(0.002)
            for pid in list(running):
                case = running[pid]
                st = case._state
                finished, status, usage = os.wait4(pid, os.WNOHANG)
                now = time.monotonic()
                if not finished:
                    if case.interrupt and not st.get("sigint") and (self._shm_names(case) or now - st["t0"] > 60):
                        time.sleep(0.5)
                        os.kill(pid, int(case.interrupt))
                        st["sigint"] = now
                    if now - st["t0"] > case.timeout:
                        try:
                            os.killpg(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                        _, status, usage = os.wait4(pid, 0)
                        st["hang"] = True
                    else:
                        continue
                del running[pid]
                st["seconds"] = now - st["t0"]
                st["status"] = status
                self.peak_rss_kib = max(self.peak_rss_kib, usage.ru_maxrss)
                rec = self._finish(case, status, usage)
                counts[rec["category"]] += 1
                if rec["category"] in FAILURES:       # named at once: a long run need not end to be read
                    print(f"[{label}] FAILURE {rec['id']} {rec['category']} ({rec['mutator']}: {rec['note']}): "
                          f"{str(rec.get('detail'))[:300]}", flush=True)
                done += 1
                self._progress(label, done, total, counts, t0)
        self._progress(label, done, total, counts, t0, final=True)

    def _start(self, case: Case) -> int:
        folder = os.path.join(self.work, "cases", case.id)
        meta = os.path.join(self.work, "meta", case.id)
        for p in (folder, meta):
            if os.path.exists(p):
                shutil.rmtree(p)
            os.makedirs(p)
        for name, data in case.files.items():
            with open(os.path.join(folder, name), "wb") as fh:
                fh.write(data)
            os.chmod(os.path.join(folder, name), 0o644)
        outside = os.path.join(self.work, "outside", case.id)
        if case.outside:
            shutil.rmtree(outside, ignore_errors=True)
            os.makedirs(outside)
            for name, data in case.outside.items():
                with open(os.path.join(outside, name), "wb") as fh:
                    fh.write(data)
            case.specials = {n: (k, t.replace("{outside}", outside) if k == "link" else t)
                             for n, (k, t) in case.specials.items()}
        _make_specials(folder, case.specials)
        case._state = {"folder": folder, "meta": meta, "t0": time.monotonic(), "outside": outside,
                       "outside_before": _tree_digest(outside) if case.outside else None,
                       "inputs": _digest_inputs(folder, [n for n in case.files if n not in case.outputs]),
                       "specials": _special_kinds(folder, case.specials)}
        digest = self.seeds.digests.get(case.seed, "")
        options = {"rng": int(hashlib.sha256(case.id.encode()).hexdigest()[:8], 16) ^ self.args.seed,
                   "lava_timeout": self.args.lava_timeout, "outside": outside}
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            run_child(case, folder, meta, self.mem, digest, options)
        case._state["pid"] = pid
        return pid

    def _shm_names(self, case) -> list:
        """Segments the case created: logged in the case's meta folder by its own process, and by a
        worker interpreter (a Lava run's, started fresh, not forked) in its scratch folder, which goes
        when the run ends -- so what was seen there is remembered."""
        from neurocompile.execute import SCRATCH_PREFIX, SHM_LOG
        st = case._state
        seen = st.setdefault("shm_seen", set())
        logs = [os.path.join(st["meta"], "shm.log")]
        if st.get("pid"):
            logs += glob.glob(os.path.join(tempfile.gettempdir(), f"{SCRATCH_PREFIX}{st['pid']}-*", SHM_LOG))
        for log in logs:
            try:
                with open(log) as fh:
                    seen.update(ln.strip() for ln in fh if ln.strip())
            except OSError:
                pass
        return sorted(seen)

    def _finish(self, case: Case, status: int, usage) -> dict:
        st = case._state
        result = None
        try:
            with open(os.path.join(st["meta"], "result.json")) as fh:
                result = json.load(fh)
        except (FileNotFoundError, ValueError):
            why = f"the worker ended with status {os.waitstatus_to_exitcode(status)} and no result"
            err = os.path.join(st["meta"], "child-error.txt")
            if os.path.exists(err):
                why += ": " + open(err).read().strip().splitlines()[-1][:300]
            st["why"] = why
        created = self._shm_names(case)
        self.shm_ours.update(created)
        leaked = [n for n in created if os.path.exists(os.path.join(SHM_DIR, n))]
        if leaked:
            st["shm_leak"] = f"{len(leaked)} shared-memory segment(s) left in /dev/shm, e.g. {leaked[:3]}"
            for n in leaked:                 # clean up after reporting, so one leak is counted once
                try:
                    os.unlink(os.path.join(SHM_DIR, n))
                except OSError:
                    pass
        after = _digest_inputs(st["folder"], [n for n in case.files if n not in case.outputs])
        specials_after = _special_kinds(st["folder"], case.specials)
        if specials_after != st["specials"]:
            st["specials_changed"] = f"special files changed: {st['specials']} -> {specials_after}"
        if case.outside:
            problem = _outside_problem(st["outside_before"], _tree_digest(st["outside"]), case.outside_writable)
            if problem:
                st["outside_changed"] = problem
        leftover = [f for f in os.listdir(st["folder"]) if f.startswith(".tmp-")]
        category, detail = classify(case, result, st, st["inputs"], after, leftover)
        rec = {"id": case.id, "kind": case.kind, "mutator": case.mutator, "seed": case.seed, "note": case.note,
               "category": category, "detail": detail, "seconds": round(st["seconds"], 3),
               "rss_mib": round(usage.ru_maxrss / 1024, 1)}
        if result is not None:
            rec["commands"] = [{"argv": c["argv"], "rc": c["rc"], "stderr": "\n".join(_error_lines(c["stderr"]))[-600:],
                                **({"exc": c["exc"][-1500:]} if c["exc"] else {})} for c in result["commands"]]
            if result.get("sound") is not None:
                rec["sound"] = {k: v for k, v in result["sound"].items() if k != "stderr"}
            if case.store_dir and case.signal and "signal" in result:
                rec["store"] = {"shards_at_signal": len(result["signal"].get("stored_at_signal") or {}),
                                "signalled_rc": result["signal"].get("rc"),
                                "killed": result["signal"].get("killed")}
            if case.between:
                rec["store"] = {"tampered": result.get("tampered")}
        if case.kind == "artifact" and category == "ok" and rec.get("sound", {}).get("changed") \
                and "skipped" not in rec["sound"]:
            rec["lava_candidate"] = True
        self.records.append(rec)
        keep = self.args.keep and (category in FAILURES or self.args.only)
        if keep:
            dest = os.path.join(self.args.keep, case.id)
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(st["folder"], dest, symlinks=True, copy_function=_copy_regular)
            shutil.copytree(st["meta"], os.path.join(dest, "_meta"))
        shutil.rmtree(st["folder"], ignore_errors=True)
        shutil.rmtree(st["meta"], ignore_errors=True)
        shutil.rmtree(st["outside"], ignore_errors=True)
        return rec

    def _progress(self, label, done, total, counts, t0, final=False):
        now = time.monotonic()
        if not final and now - self.last_progress < self.args.progress_every and done != total:
            return
        self.last_progress = now
        el = now - t0
        eta = el / max(done, 1) * (total - done)
        fails = sum(counts[c] for c in FAILURES)
        print(f"[{label}] {done}/{total}  ok {counts['ok']}  clean_error {counts['clean_error']}  failures {fails}"
              f"  ({el:.0f} s, ~{eta:.0f} s left)", flush=True)

    # ---- phases
    def lava_cases(self) -> list:
        """Up to --lava accepted artifact mutants that differ from their seed, one per mutator first."""
        cands = sorted((r for r in self.records if r.get("lava_candidate")), key=lambda r: r["id"])
        chosen, seen = [], set()
        for r in cands:
            if r["mutator"] not in seen and len(chosen) < self.args.lava:
                chosen.append(r)
                seen.add(r["mutator"])
        for r in cands:
            if r not in chosen and len(chosen) < self.args.lava:
                chosen.append(r)
        out = []
        for r in chosen:
            c = self.gen.case("artifact", int(r["id"].split("-")[1]))
            out.append(Case("lava:" + c.id, "lava", c.mutator, c.seed, c.note, {c.mutated: c.files[c.mutated]}, [],
                            c.mutated, (), sound=c.mutated, lava=True, timeout=self.args.lava_timeout + 120))
        if self.args.lava and len(out) < self.args.lava:      # the seeds themselves when too few mutants qualify
            for seed in sorted(self.seeds.artifacts):
                if len(out) < self.args.lava:
                    name = f"lava-seed-{seed}.loihi2"
                    out.append(Case(f"lava:seed-{seed}", "lava", "identity", seed, "seed artifact",
                                    {name: self.seeds.artifacts[seed]}, [], name, (), sound=name, lava=True,
                                    timeout=self.args.lava_timeout + 120))
        return out

    def interrupt_cases(self) -> list:
        art, dat = "interrupt.loihi2", "interrupt-data.npz"
        files = {art: self.seeds.artifacts["digits"], dat: self.seeds.data_bytes["digits"]}
        base = ["simulate", art, "--data", dat, "--engine", "lava", "--count", "12"]
        return [Case("lava-timeout", "lava_interrupt", "timeout", "digits", "Lava run stopped by its 1 s timeout",
                     dict(files), [base + ["--timeout", "1", "-o", "t.npz"]], art, ("t.npz",), expect="any",
                     timeout=120),
                Case("lava-sigint", "lava_interrupt", "sigint", "digits", "SIGINT while the Lava network runs",
                     dict(files), [base + ["-o", "t.npz"]], art, ("t.npz",), interrupt=signal.SIGINT,
                     expect="interrupted", timeout=180),
                Case("lava-sighup", "lava_interrupt", "sighup", "digits", "SIGHUP while the Lava network runs",
                     dict(files), [base + ["-o", "t.npz"]], art, ("t.npz",), interrupt=signal.SIGHUP,
                     expect="interrupted", timeout=180)]

    def run(self) -> dict:
        a = self.args
        t_start = time.monotonic()
        shm_before = _shm_snapshot()
        print(f"[setup] seeds in {self.work}", flush=True)
        t = time.monotonic()
        self.seeds = Seeds(os.path.join(self.work, "seeds"))
        self.gen = Generator(self.seeds, a.seed)
        _warm_up(self.seeds)
        deflate_bomb()
        timings = {"setup_s": round(time.monotonic() - t, 1)}
        parent = _proc_status()
        if a.only:
            ids = a.only.split(",")
            cases = []
            for cid in ids:
                if cid.startswith(("lava", "interrupt")):
                    continue
                kind = {v: k for k, v in PREFIX.items()}[cid.split("-")[0]]
                cases.append(self.gen.case(kind, int(cid.split("-")[1])))
            self.run_cases(cases, "only")
            for r in self.records:
                print(json.dumps(r, indent=1))
            return {}
        # the smaller kinds first: a run stopped early (--stop-after) has covered every kind
        for kind, n in (("store", a.store), ("env", a.env), ("checkpoint", a.checkpoints), ("data", a.data),
                        ("artifact", a.artifacts)):
            t = time.monotonic()
            self.run_cases((self.gen.case(kind, i) for i in range(n)), kind + "s", n)
            timings[f"{kind}s_s"] = round(time.monotonic() - t, 1)
        t = time.monotonic()
        lava = self.lava_cases()
        if lava:
            self.run_cases(lava, "lava")
        if a.lava:
            self.run_cases(self.interrupt_cases(), "lava interrupts")
        timings["lava_s"] = round(time.monotonic() - t, 1)
        shm_after = _shm_snapshot()
        new_shm = sorted(set(shm_after) - set(shm_before))
        timings["total_s"] = round(time.monotonic() - t_start, 1)
        results = self.summary(timings, parent, new_shm)
        if not a.keep_workdir and not a.workdir:
            shutil.rmtree(self.work, ignore_errors=True)
        return results

    def store_checks(self) -> dict:
        """What the store families showed beyond their outcome: shards stored before a signal (kept
        through it and the rerun), and what was done to a stored shard between two validates."""
        sig = [r for r in self.records if r["mutator"] == "signal_work_dir" and "store" in r]
        rerun = {0: "rerun ok", 2: "rerun one line"}
        tampered = Counter(r["note"].rsplit(": ", 1)[-1] + " -> " + rerun.get(r["commands"][1]["rc"], r["category"])
                           if len(r.get("commands", [])) > 1 and r["category"] in ("ok", "clean_error")
                           else r["category"] for r in self.records if r.get("store", {}).get("tampered") is not None)
        places = Counter(r["note"].replace(" --workers 2", "") + (" --workers 2" if "--workers" in r["note"] else "")
                         + " -> " + r["category"] for r in self.records
                         if r["mutator"] == "work_dir" and "populated" not in r["note"])
        return {"signal_cases": len(sig),
                "signal_cases_with_shards_stored_before_the_signal": sum(1 for r in sig if r["store"]["shards_at_signal"]),
                "shards_stored_before_a_signal": sum(r["store"]["shards_at_signal"] for r in sig),
                "signalled_runs_that_finished_first": sum(1 for r in sig if r["store"]["signalled_rc"] == 0),
                "signalled_exit_statuses": dict(sorted(Counter(str(r["store"]["signalled_rc"]) for r in sig).items())),
                "tampered_shard_outcomes": dict(sorted(tampered.items())),
                "work_dir_outcomes": dict(sorted(places.items())),
                "ray": self.gen.store.note or "ray_address cases ran (ray importable)"}

    def summary(self, timings, parent, new_shm) -> dict:
        a = self.args
        by_kind = defaultdict(Counter)
        by_mutator = defaultdict(Counter)
        for r in self.records:
            by_kind[r["kind"]][r["category"]] += 1
            by_mutator[f"{r['kind']}/{r['mutator']}"][r["category"]] += 1
        total = Counter(r["category"] for r in self.records)
        psm_new = [n for n in new_shm if n.startswith("psm_")]
        ours_left = sorted(n for n in psm_new if n in self.shm_ours)
        if ours_left:
            total["shm_leak"] += len(ours_left)
        examples = defaultdict(list)
        for r in sorted(self.records, key=lambda r: r["id"]):
            if r["category"] in FAILURES and len(examples[r["category"]]) < 5:
                examples[r["category"]].append(r)
        slowest = sorted(self.records, key=lambda r: -r["seconds"])[:5]
        lava_runs = [r for r in self.records if r["kind"] == "lava"]
        ok_data_mismatch = sum(1 for r in self.records if r["kind"] == "artifact" and r["category"] == "ok"
                               and any(c["rc"] != 0 for c in r.get("commands", [])))
        results = {
            "command": "python benchmarks/fuzz.py " + " ".join(sys.argv[1:]),
            "seed": a.seed,
            "requested": {"artifacts": a.artifacts, "checkpoints": a.checkpoints, "data": a.data, "env": a.env,
                          "store": a.store, "lava": a.lava},
            "cases": len(self.records),
            "stopped_early": self.stopped_early,
            "counts": {c: total.get(c, 0) for c in CATEGORIES},
            "failures": sum(total.get(c, 0) for c in FAILURES),
            "by_kind": {k: {c: v[c] for c in CATEGORIES if v[c]} for k, v in sorted(by_kind.items())},
            "by_mutator": {k: {c: v[c] for c in CATEGORIES if v[c]} for k, v in sorted(by_mutator.items())},
            "accepted_artifact_mutants_that_differ_from_their_seed": sum(
                1 for r in self.records if r["kind"] == "artifact" and r.get("sound", {}).get("changed")),
            "accepted_artifacts_whose_seed_data_no_longer_fits": ok_data_mismatch,
            "soundness_checks": {
                "emulator_backends_compared": sum(1 for r in self.records if r.get("sound", {}).get("samples")),
                "skipped_too_large": sum(1 for r in self.records if "skipped" in r.get("sound", {})),
                "lava_compared": sum(1 for r in lava_runs if "lava_mismatches" in r.get("sound", {})),
                "lava_runs": [{"id": r["id"], "mutator": r["mutator"], "note": r["note"], "category": r["category"],
                               "seconds": r["seconds"]} for r in lava_runs],
            },
            "store_checks": self.store_checks(),
            "interrupted_lava_runs": [{"id": r["id"], "category": r["category"], "detail": r["detail"],
                                       "stderr": r.get("commands", [{}])[0].get("stderr")}
                                      for r in self.records if r["kind"] == "lava_interrupt"],
            "dev_shm": {"segments_our_cases_created": len(self.shm_ours), "ours_left_after_run": ours_left,
                        "new_psm_segments_of_other_processes": len(psm_new) - len(ours_left),
                        "note": "every segment a case creates is logged by name (SharedMemory.__init__ is wrapped in "
                                "the case and inherited by Lava's forked processes); this machine is shared, so "
                                "segments other users' Lava runs create meanwhile are counted apart"},
            "memory": {"rlimit_as_bytes": self.mem, "rlimit_as_gib": a.mem_gib,
                       "note": "RLIMIT_AS per case; the forked worker starts from the warmed parent, which maps "
                               f"{parent.get('VmSize', '?')} of address space (RSS {parent.get('VmRSS', '?')}: "
                               "torch, numba/LLVM, numpy)",
                       "peak_case_rss_mib": round(self.peak_rss_kib / 1024, 1)},
            "timeout_s": {"case": 180, "checkpoint_case": 120, "lava_case": a.lava_timeout + 120},
            "timings": {**timings, "mean_case_s": round(float(np.mean([r["seconds"] for r in self.records]))
                                                        if self.records else 0, 3),
                        "slowest": [{"id": r["id"], "seconds": r["seconds"], "mutator": r["mutator"]} for r in slowest]},
            "jobs": a.jobs,
            "examples": dict(examples),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        }
        return results


def _proc_status() -> dict:
    out = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                k, _, v = line.partition(":")
                if k in ("VmSize", "VmRSS", "VmPeak"):
                    kb = int(v.split()[0])
                    out[k] = f"{kb / (1 << 20):.2f} GiB"
    except OSError:
        pass
    return out


def _shm_snapshot() -> list:
    try:
        return sorted(os.listdir(SHM_DIR))
    except OSError:
        return []


def _warm_up(seeds: Seeds) -> None:
    """Import and JIT everything once, so each forked case starts warm."""
    import torch

    from neurocompile.artifact import load_program
    from neurocompile.emulator import emulate
    torch.set_num_threads(1)
    p = load_program(os.path.join(seeds.folder, "digits.loihi2"))
    raw = np.zeros((2, p.seq_len, p.input_channels), np.int64)
    emulate(p, raw, record=True, backend="compiled")
    emulate(p, raw, record=True, backend="torch")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401 - warm, a few cases plot
    import neurocompile.models.spikingssm  # noqa: F401
    import neurocompile.validate  # noqa: F401
    import tqdm  # noqa: F401


def table(results: dict) -> str:
    lines = [f"| kind | cases | {' | '.join(CATEGORIES)} |", "|---|---:|" + "---:|" * len(CATEGORIES)]
    for kind, counts in results["by_kind"].items():
        lines.append(f"| {kind} | {sum(counts.values())} | " + " | ".join(str(counts.get(c, 0)) for c in CATEGORIES) + " |")
    c = results["counts"]
    lines.append(f"| **all** | {results['cases']} | " + " | ".join(f"**{c[k]}**" for k in CATEGORIES) + " |")
    return "\n".join(lines)


def markdown(results: dict) -> str:
    """The short results page (benchmarks/results/fuzz.md)."""
    mem, t, sc = results["memory"], results["timings"], results["soundness_checks"]
    lines = ["# Fuzzing the loaders and CLI paths (issues 8, 14 and 20)", "",
             f"`{results['command']}`", "",
             (f"**Stopped early** ({results['stopped_early']}): the counts below are the cases that ran.\n\n"
              if results.get("stopped_early") else "") +
             f"{results['cases']} cases, **{results['failures']} failures**. Every case ran in a child forked from a "
             f"warmed process, under `RLIMIT_AS` = {mem['rlimit_as_gib']:g} GiB ({mem['note']}); peak case RSS "
             f"{mem['peak_case_rss_mib']} MiB. Wall time {t['total_s']} s on {results['machine']['cpus']} shared CPU "
             f"cores ({results['jobs']} case at a time), mean {t['mean_case_s']} s per case.", "",
             table(results), "",
             f"- accepted artifact mutants whose fixed-point program differs from their seed: "
             f"{results['accepted_artifact_mutants_that_differ_from_their_seed']}; emulator back ends compared "
             f"(compiled vs torch, 4 samples each, every trace): {sc['emulator_backends_compared']}"
             f" (skipped as too large for the bound: {sc['skipped_too_large']})",
             f"- Lava fixed_pt vs emulator, bit for bit on 2 samples: {sc['lava_compared']} accepted mutants "
             "(" + ", ".join(f"{r['mutator']}: {r['note']}" for r in sc["lava_runs"]) + ")",
             "- interrupted Lava runs: " + "; ".join(f"{r['id']}: {r['category']} ({r['stderr']})"
                                                     for r in results["interrupted_lava_runs"]),
             "- shard store: " + json.dumps(results.get("store_checks", {})),
             f"- /dev/shm: {results['dev_shm']['segments_our_cases_created']} shared-memory segments created by "
             f"our Lava runs, {len(results['dev_shm']['ours_left_after_run'])} left afterwards",
             "", "Outcomes per mutator:", "", "| mutator | " + " | ".join(CATEGORIES) + " |",
             "|---|" + "---:|" * len(CATEGORIES)]
    for k, v in results["by_mutator"].items():
        lines.append(f"| {k} | " + " | ".join(str(v.get(c, 0)) for c in CATEGORIES) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", type=int, default=10000)
    p.add_argument("--checkpoints", type=int, default=1000)
    p.add_argument("--data", type=int, default=1000)
    p.add_argument("--env", type=int, default=1000, help="environment cases: special files and links, signals, "
                                                          "seeds and counts out of bounds, re-saved checkpoints")
    p.add_argument("--store", type=int, default=300, help="shard store cases: --work-dir / shards / scratch as "
                                                           "special files and links, tampered shards, signals during "
                                                           "validate --work-dir --workers 2, unreachable --ray-address")
    p.add_argument("--lava", type=int, default=20, help="accepted artifact mutants also run on Lava (and 2 interrupted runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the results JSON here")
    p.add_argument("--md", help="write a short markdown summary here")
    p.add_argument("--jobs", type=int, default=1, help="cases run at once (default 1)")
    p.add_argument("--mem-gib", type=float, default=6.0, help="RLIMIT_AS of every case, GiB (default 6)")
    p.add_argument("--lava-timeout", type=float, default=300.0)
    p.add_argument("--workdir", help="folder for seeds and cases (default: a temporary folder, removed)")
    p.add_argument("--keep", help="copy each failing case (inputs + captured output) into this folder")
    p.add_argument("--keep-workdir", action="store_true")
    p.add_argument("--only", help="run only these case ids (comma list, e.g. art-00042) and print their records")
    p.add_argument("--progress-every", type=float, default=15.0, help="seconds between progress lines")
    p.add_argument("--stop-after", type=float, default=0, help="start no new case after this many seconds (0: none); "
                                                                "the results say how far the run got")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    results = Fuzzer(args).run()
    if not results:
        return 0
    print()
    print(table(results))
    print(f"\nfailures: {results['failures']}   memory bound: RLIMIT_AS {args.mem_gib:g} GiB per case, peak case RSS "
          f"{results['memory']['peak_case_rss_mib']} MiB   time: {results['timings']['total_s']} s")
    for cat, exs in results["examples"].items():
        print(f"\n{cat}:")
        for r in exs:
            print(f"  {r['id']} ({r['mutator']}: {r['note']}): {r['detail']}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1, default=str)
        print(f"\nwrote {args.out}")
    if args.md:
        with open(args.md, "w") as fh:
            fh.write(markdown(results))
        print(f"wrote {args.md}")
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())

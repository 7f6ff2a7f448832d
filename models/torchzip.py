"""Read a ``torch.save`` zip archive without ever running code from it.

An archive is a zip: ``<dir>/data.pkl`` (the object graph as a pickle), ``<dir>/data/<key>`` (one member
per storage: raw little-endian bytes), ``<dir>/byteorder``, ``<dir>/version``. The pickle names each
storage by a persistent id ``('storage', <torch.XStorage>, key, location, numel)``.

A pickle is a small program: GLOBAL fetches any importable object, REDUCE calls it, BUILD calls
``__setstate__``. Here nothing foreign is ever imported or called:

1. every opcode is scanned first: a GLOBAL that is not on the allow-list, or an opcode that builds
   objects outside it (INST, OBJ, EXT*), is refused before a single opcode runs;
2. the unpickler resolves names only through the same allow-list (``find_class``), REDUCE calls only
   our own allow-listed functions, NEWOBJ and BUILD act only on our inert stand-ins;
3. omegaconf / typing objects (Lightning's stored hydra config) become ``StandIn`` objects that just
   keep their pickled state; ``plain()`` turns them into dicts, lists and values;
4. each storage member's size is checked against what the pickle declares before it is read, and
   zipfile verifies its CRC-32 while reading it;
5. the work is bounded before it is spent: the scan stops at ``MAX_OPCODES`` opcodes or ``MAX_MEMO``
   memo entries (a real checkpoint's pickle has ~10 thousand; 33 KB of deflated no-op opcodes inflate
   to 32 million), or after ``MAX_SCAN_SECONDS``, so the unpickler never starts on such a file.

Errors are ``ArchiveError`` (corrupt or inconsistent) and ``RefusedError`` (not on the allow-list); the
caller adds the file name.
"""
from __future__ import annotations

import _compat_pickle
import io
import pickle
import pickletools
import re
import time
import zipfile
import zlib

import torch

from ..fileio import zip_member_problem

MAX_MEMBER_BYTES = 2 << 30      # no member of a sane checkpoint is larger than 2 GiB
MAX_ARCHIVE_BYTES = 2 << 30     # nor all of them together (storages are read into memory as they are met)
MAX_PICKLE_BYTES = 256 << 20    # the object graph without tensor data: configs, names, small lists
MAX_OPCODES = 2_000_000         # ours: ~2 thousand opcodes, the authors' Lightning files ~10 thousand
MAX_MEMO = 1_000_000            # memo entries (PUT / MEMOIZE); each keeps an object alive
MAX_SCAN_SECONDS = 60.0         # a backstop: 2 million opcodes scan in ~1 s


class ArchiveError(ValueError):
    """The archive is truncated, corrupt or internally inconsistent."""


class RefusedError(ArchiveError):
    """The pickle refers to something outside the allow-list (loading it could run code)."""


def _refuse(what: str) -> RefusedError:
    return RefusedError(f"refused to load: the pickle {what}, which is not on the allow-list (loading it could run code)")


# ------------------------------------------------------------------------------------------ stand-ins
class StandIn:
    """An object of a foreign class, rebuilt inertly: pickle's NEWOBJ makes it, BUILD stores its state."""

    qualname = "?"

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<stand-in {self.qualname}>"


def _stand_in(qualname: str) -> type:
    return type(qualname.rsplit(".", 1)[1], (StandIn,), {"qualname": qualname})


class ForeignValue:
    """A foreign module-level value referenced by name only (e.g. ``typing.Any``)."""

    def __init__(self, qualname: str):
        self.qualname = qualname

    def __repr__(self):
        return self.qualname


STAND_INS = {q: _stand_in(q) for q in (
    "omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig", "omegaconf.base.Metadata",
    "omegaconf.base.ContainerMetadata", "omegaconf.nodes.AnyNode", "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode", "omegaconf.nodes.FloatNode", "omegaconf.nodes.BooleanNode")}


# ---------------------------------------------------------------------------------- storages, tensors
class _StorageType:
    """Stands for torch.<X>Storage in a persistent id: only its dtype matters."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


class _Storage:
    """One storage member's data as a flat tensor; only these can back a rebuilt tensor."""

    def __init__(self, flat: torch.Tensor):
        self.flat = flat


_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128,
}


def _as_shape(v, what: str) -> tuple:
    if not isinstance(v, (tuple, list)) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v):
        raise ArchiveError(f"corrupt tensor record: {what} {v!r} is not a tuple of non-negative integers")
    return tuple(v)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """Our version of torch._utils._rebuild_tensor_v2: a strided view of the storage, bounds checked."""
    if not isinstance(storage, _Storage):
        raise ArchiveError("corrupt tensor record: its storage is not a storage")
    storage = storage.flat
    size, stride = _as_shape(size, "size"), _as_shape(stride, "stride")
    offset = _as_shape((storage_offset,), "storage offset")[0]
    if len(size) != len(stride):
        raise ArchiveError(f"corrupt tensor record: size {size} and stride {stride} differ in rank")
    if metadata:
        raise ArchiveError("unsupported tensor record: tensor metadata flags (conjugate/negative views)")
    numel = 1
    for n in size:
        numel *= n
    if numel > MAX_MEMBER_BYTES:    # a zero-stride view could claim any size; later checks would allocate it
        raise ArchiveError(f"corrupt tensor record: a {list(size)} tensor ({numel} elements) is absurd")
    if numel:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.numel():
            raise ArchiveError(f"corrupt tensor record: a {list(size)} tensor reaches element {last} of a "
                               f"storage of {storage.numel()}")
    return torch.as_strided(storage, size, stride, offset)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data        # parameters come back as plain tensors


class _StateDict(dict):
    """What collections.OrderedDict becomes (dicts keep order). A module's state_dict carries a
    ``_metadata`` attribute, restored by BUILD: kept as ``attrs``, never executed."""

    def __setstate__(self, state):
        self.attrs = state


def _ordered_dict(items=()):
    return _StateDict(items)


def _defaultdict(default_factory=None, *args):
    return {}           # the factory (itself allow-listed) is irrelevant for reading


def _latin1_bytes(text, encoding="latin1"):
    """Protocol-2 pickles store bytes as _codecs.encode(str, 'latin1')."""
    if not isinstance(text, str) or encoding != "latin1":
        raise _refuse("calls _codecs.encode with arguments other than (str, 'latin1')")
    return text.encode("latin1")


# Functions REDUCE may call (all ours), and names that are only values.
CALLABLES = {
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "collections.OrderedDict": _ordered_dict,
    "collections.defaultdict": _defaultdict,
    "_codecs.encode": _latin1_bytes,
    "builtins.set": set, "builtins.frozenset": frozenset, "builtins.complex": complex,
}
VALUES = {
    "builtins.dict": dict, "builtins.list": list, "builtins.tuple": tuple, "builtins.int": int,
    "builtins.float": float, "builtins.bool": bool, "builtins.str": str,
    "typing.Any": ForeignValue("typing.Any"),
    "torch.storage.UntypedStorage": _StorageType(torch.uint8),
    **{f"torch.{name}": _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
}
_CALLABLE_IDS = {id(f) for f in CALLABLES.values()}


def _qualname(module: str, name: str) -> str:
    """Protocol-2 pickles use Python 2 names (__builtin__.long for int): map them as pickle does."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


def _describe(obj) -> str:
    if isinstance(obj, type):
        return getattr(obj, "qualname", f"{obj.__module__}.{obj.__qualname__}")
    return getattr(obj, "qualname", f"a {type(obj).__name__} object")


def _lookup(qualname: str):
    for table in (CALLABLES, VALUES, STAND_INS):
        if qualname in table:
            return table[qualname]
    raise _refuse(f"references {qualname}")


_MEMO_OPS = ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE")


def scan(data: bytes) -> None:
    """Refuse, before anything runs, every global not on the allow-list, every object-building
    opcode that bypasses it, and a pickle whose opcodes or memo exceed the bounds."""
    deadline = time.monotonic() + MAX_SCAN_SECONDS
    memo = 0
    try:
        for count, (op, arg, _) in enumerate(pickletools.genops(data), 1):
            if count > MAX_OPCODES:
                raise ArchiveError(f"the pickle has more than {MAX_OPCODES} opcodes (a checkpoint's has ~10 thousand); "
                                   "refusing to run it")
            if count & 0xFFFF == 0 and time.monotonic() > deadline:
                raise ArchiveError(f"scanning the pickle took more than {MAX_SCAN_SECONDS:g} s; refusing to run it")
            if op.name in _MEMO_OPS:
                memo += 1
                if memo > MAX_MEMO:
                    raise ArchiveError(f"the pickle stores more than {MAX_MEMO} memo entries; refusing to run it")
            elif op.name == "GLOBAL":
                module, _, name = arg.partition(" ")
                _lookup(_qualname(module, name))
            elif op.name in ("INST", "OBJ", "EXT1", "EXT2", "EXT4"):
                raise _refuse(f"uses the {op.name} opcode")
    except ArchiveError:
        raise
    except Exception as exc:
        raise ArchiveError(f"corrupt pickle ({exc})") from None


class _Unpickler(pickle._Unpickler):
    """The pure-Python unpickler with every way to reach foreign code replaced by an allow-list check."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, data: bytes, load_storage):
        super().__init__(io.BytesIO(data))
        self._load_storage = load_storage

    def find_class(self, module, name):
        return _lookup(_qualname(module, name))

    def persistent_load(self, pid):
        return self._load_storage(pid)

    def load_reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        if id(func) not in _CALLABLE_IDS:
            raise _refuse(f"calls {_describe(func)}")
        if not isinstance(args, tuple):
            raise ArchiveError("corrupt pickle (REDUCE arguments are not a tuple)")
        self.stack[-1] = func(*args)

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        if not (isinstance(cls, type) and issubclass(cls, StandIn)):
            raise _refuse(f"instantiates {_describe(cls)}")
        self.append(cls.__new__(cls))

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, (StandIn, _StateDict)):
            raise _refuse(f"sets the state of a {type(inst).__name__} object")
        inst.__setstate__(state)

    def _forbidden(self):
        raise _refuse("uses an object-building opcode outside the allow-list")

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = _forbidden
    dispatch[pickle.BUILD[0]] = load_build
    for _op in (pickle.INST, pickle.OBJ, pickle.EXT1, pickle.EXT2, pickle.EXT4):
        dispatch[_op[0]] = _forbidden
    del _op


def _read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytearray:
    """The member's bytes, read in chunks into one buffer of its declared size (z.read would hold
    the data twice at its peak); zipfile checks the CRC-32 when the end is reached."""
    try:
        out = bytearray(info.file_size)
        view, pos = memoryview(out), 0
        with z.open(info) as fh:
            while pos < len(out):
                chunk = fh.read(min(1 << 24, len(out) - pos))
                if not chunk:
                    raise ArchiveError(f"member {info.filename!r} is truncated ({pos} of {len(out)} bytes)")
                view[pos:pos + len(chunk)] = chunk
                pos += len(chunk)
            if fh.read(1):
                raise ArchiveError(f"member {info.filename!r} holds more than its declared {len(out)} bytes")
        return out
    except ArchiveError:
        raise
    except zipfile.BadZipFile as exc:
        if "CRC" in str(exc):
            raise ArchiveError(f"member {info.filename!r} is corrupt (CRC-32 mismatch)") from None
        raise ArchiveError(f"member {info.filename!r} is unreadable ({exc})") from None
    except (OSError, EOFError, ValueError, NotImplementedError, zlib.error) as exc:
        raise ArchiveError(f"member {info.filename!r} is unreadable ({exc})") from None


def load(path):
    """The object graph of a torch.save zip archive (a path or a binary file object), tensors on the
    CPU, foreign objects as stand-ins."""
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise ArchiveError(f"truncated or corrupt checkpoint ({exc})") from None
    with z:
        infos = {i.filename: i for i in z.infolist()}
        for info in infos.values():
            problem = zip_member_problem(info)
            if problem:
                raise ArchiveError(problem)
        pkl = [n for n in infos if re.fullmatch(r"[^/]+/data\.pkl|data\.pkl", n)]
        if len(pkl) != 1:
            raise ArchiveError("not a torch.save archive (no single data.pkl member)")
        prefix = pkl[0][: -len("data.pkl")]
        for info in infos.values():
            if info.file_size > MAX_MEMBER_BYTES:
                raise ArchiveError(f"member {info.filename!r} declares {info.file_size} bytes (absurd; refusing to read it)")
        total = sum(info.file_size for info in infos.values())
        if total > MAX_ARCHIVE_BYTES:
            raise ArchiveError(f"members declare {total} bytes in all (more than {MAX_ARCHIVE_BYTES >> 30} GiB; "
                               "refusing to read them)")
        if infos[pkl[0]].file_size > MAX_PICKLE_BYTES:
            raise ArchiveError(f"member {pkl[0]!r} declares {infos[pkl[0]].file_size} bytes (absurd for an object graph)")
        order = infos.get(prefix + "byteorder")
        if order is not None and _read_member(z, order).strip() not in (b"little", b""):
            raise ArchiveError("big-endian archive (not supported)")
        data = _read_member(z, infos[pkl[0]])
        scan(data)
        storages: dict = {}

        def load_storage(pid):
            if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
                raise ArchiveError(f"corrupt pickle (unknown persistent id {str(pid)[:60]})")
            _, stype, key, _location, numel = pid
            if not isinstance(stype, _StorageType) or not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
                raise ArchiveError(f"corrupt pickle (bad storage record {str(pid)[:60]})")
            if key in storages:
                if storages[key].flat.dtype != stype.dtype:
                    raise ArchiveError(f"corrupt pickle (storage {key!r} used with two dtypes)")
                return storages[key]
            name = f"{prefix}data/{key}"
            info = infos.get(name)
            if info is None:
                raise ArchiveError(f"member {name!r} is missing (truncated archive?)")
            need = numel * torch.empty((), dtype=stype.dtype).element_size()
            if info.file_size != need:
                raise ArchiveError(f"member {name!r} holds {info.file_size} bytes but the pickle declares "
                                   f"{numel} x {stype.dtype} ({need} bytes)")
            raw = _read_member(z, info)
            t = torch.frombuffer(raw, dtype=stype.dtype) if numel else torch.empty(0, dtype=stype.dtype)
            storages[key] = _Storage(t)
            return storages[key]

        try:
            return _Unpickler(data, load_storage).load()
        except ArchiveError:
            raise
        except Exception as exc:   # malformed opcodes, stack underflow, wrong argument counts...
            raise ArchiveError(f"corrupt pickle ({type(exc).__name__}: {str(exc)[:120]})") from None


# ------------------------------------------------------------------------------------------ plain()
MAX_PLAIN_VALUES = 1_000_000     # values in the object graph once shared references are expanded
MAX_DEPTH = 200


def plain(obj, _depth: int = 0, _budget: list = None):
    """Stand-ins -> plain dicts/lists/values (omegaconf containers by their content); tensors untouched.

    The result is a tree: a value the pickle references twice (through its memo) is copied twice, so
    a few hundred bytes of pickle can describe 2**80 values ("billion laughs").  A budget counts every
    value produced (long strings and bytes by their length) and refuses the file past ``MAX_PLAIN_VALUES``."""
    if _depth > MAX_DEPTH:
        raise ArchiveError("object graph nested too deeply")
    budget = [MAX_PLAIN_VALUES] if _budget is None else _budget
    budget[0] -= 1 + (len(obj) // 64 if isinstance(obj, (str, bytes)) else 0)
    if budget[0] < 0:
        raise ArchiveError(f"object graph too large (more than {MAX_PLAIN_VALUES} values once shared references "
                           "are expanded)")
    rec = lambda v: plain(v, _depth + 1, budget)
    if isinstance(obj, StandIn):
        state = getattr(obj, "state", None) or {}
        if isinstance(state, tuple):          # (dict state, slot state) form
            state = {k: v for part in state if isinstance(part, dict) for k, v in part.items()}
        if not isinstance(state, dict):
            raise ArchiveError(f"corrupt pickle ({obj.qualname} with a {type(state).__name__} as its state)")
        if "_content" in state:
            content = state["_content"]
            if isinstance(content, dict):
                return {str(k) if not isinstance(k, (int, float, bool)) else k: rec(v) for k, v in content.items()}
            if isinstance(content, list):
                return [rec(v) for v in content]
            return rec(content)               # None, '???' (missing) or an interpolation string
        if "_val" in state:
            return rec(state["_val"])
        return obj.qualname
    if isinstance(obj, type) and issubclass(obj, StandIn):
        return obj.qualname
    if isinstance(obj, ForeignValue):
        return obj.qualname
    if isinstance(obj, dict):
        return {k: rec(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [rec(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(rec(v) for v in obj)
    return obj

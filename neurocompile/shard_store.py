"""The shard store: finished shards kept in ``--work-dir`` so that a stopped run resumes.

A cache, never a witness: what a caller can recompute cheaply it recomputes (validate reruns the
emulator on a reused Lava shard's samples and compares again); a file that does not verify is a
shard that is not there.  The store's files are not a command's outputs: no stop (Ctrl-C, SIGTERM,
SIGHUP, an error such as a full disk) removes them, and a shard is stored whole or not at all (its
write holds a terminating signal until the file is in place).

Files are created and read inside the work-dir only: every folder below it and every file is opened
relative to its folder's descriptor without following symbolic links, and read only if it is a
regular file (``fileio.open_input``); a link, a FIFO, a device or a folder where the store expects
its own file ends the run with one line.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import stat
from contextlib import contextmanager

import numpy as np

from .errors import NeurocompileError
from .fileio import TMP_PREFIX, InputFileError, Publishing, _kind, _pid_alive, open_input

SHARDS = "shards"
FORMAT = 2                  # 2: a Lava shard holds Lava's traces only (the comparison is redone by its reader)
_TEMP = re.compile(rf"^{re.escape(TMP_PREFIX)}(\d+)-")


class WorkDirError(NeurocompileError):
    """Something in the work-dir the store must not use (a link, a FIFO, a device, a folder)."""


def digest_arrays(arrays: dict) -> str:
    """sha256 over the arrays' names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(json.dumps([name, a.dtype.str, a.shape]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def make_work_dir(path: str) -> str:
    """``path`` as a folder, created when it does not exist yet (its parent must exist)."""
    path = os.fspath(path)
    if path == "":
        raise WorkDirError("'': an empty --work-dir name")
    try:
        os.mkdir(path)
    except FileExistsError:
        pass
    except FileNotFoundError:
        raise WorkDirError(f"{path}: cannot create the work-dir: folder {os.path.dirname(os.path.abspath(path))} "
                           "does not exist") from None
    except OSError as exc:
        raise WorkDirError(f"{path}: cannot create the work-dir ({exc.strerror or exc})") from None
    try:
        st = os.stat(path)
    except OSError as exc:
        raise WorkDirError(f"{path}: cannot use it as the work-dir ({exc.strerror or exc})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise WorkDirError(f"{path}: is {_kind(st.st_mode)}, not a folder; refusing to use it as the work-dir")
    return path


@contextmanager
def _folder(root: str, parts: tuple, create: bool):
    """A descriptor of ``root``/parts..., each part opened (and created when ``create``) relative to the
    one above without following links; ``root`` itself is the user's (links in it are followed)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(root, flags)
    except OSError as exc:
        raise WorkDirError(f"{root}: cannot open the work-dir ({exc.strerror or exc})") from None
    shown = root
    try:
        for part in parts:
            shown = os.path.join(shown, part)
            if create:
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise WorkDirError(f"{shown}: cannot create it ({exc.strerror or exc})") from None
            try:
                sub = os.open(part, flags | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                raise WorkDirError(_refusal(fd, part, shown, "a folder", exc)) from None
            os.close(fd)
            fd = sub
        yield fd
    finally:
        os.close(fd)


def _refusal(dir_fd: int, name: str, shown: str, want: str, exc: OSError) -> str:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return f"{shown}: cannot open it ({exc.strerror or exc})"
    return f"{shown}: is {_kind(st.st_mode)}, not {want}; refusing to use it (the work-dir holds only the store's own files)"


class ShardStore:
    """Finished shards under ``folder``/shards/<run>, one .npz each, named by the run's key (artifact,
    data, options) and the shard's key.  Each file holds its keys and the digest of its arrays; one
    that does not verify is treated as absent (recomputed)."""

    def __init__(self, folder: str, run_key: dict):
        self.root = make_work_dir(folder)
        self.run_key = json.dumps({**run_key, "store_format": FORMAT}, sort_keys=True, default=str)
        self.parts = (SHARDS, hashlib.sha256(self.run_key.encode()).hexdigest()[:24])
        self.folder = os.path.join(self.root, *self.parts)
        self.reused = 0
        with _folder(self.root, self.parts, create=True) as fd:
            _clear_stale_temps(fd)

    def _name(self, key: str) -> str:
        return hashlib.sha256((self.run_key + "\0" + key).encode()).hexdigest()[:32] + ".npz"

    def get(self, key: str) -> dict | None:
        """The shard's arrays, or None when it is not stored (or does not verify)."""
        name = self._name(key)
        shown = os.path.join(self.folder, name)
        with _folder(self.root, self.parts, create=False) as fd:
            try:
                os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return None
            try:
                with open_input(name, "shard file", dir_fd=fd, follow_links=False, shown=shown) as fh:
                    blob = fh.read()
            except InputFileError as exc:
                raise WorkDirError(str(exc)) from None
            except OSError as exc:
                raise WorkDirError(f"{shown}: cannot read it ({exc.strerror or exc})") from None
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except Exception:                                        # noqa: BLE001 - any damage: not a shard
            return None
        meta = arrays.pop("__shard__", None)
        if meta is None or meta.shape != (3,):
            return None
        run_key, shard_key, digest = (str(v) for v in meta)
        if run_key != self.run_key or shard_key != key or digest != digest_arrays(arrays):
            return None
        return arrays

    def put(self, key: str, arrays: dict) -> None:
        """Store the shard: whole (a temp file renamed into place) or not at all; a terminating signal
        that arrives meanwhile is raised once the file is in place."""
        meta = np.array([self.run_key, key, digest_arrays(arrays)])
        buf = io.BytesIO()
        np.savez(buf, __shard__=meta, **arrays)
        name = self._name(key)
        shown = os.path.join(self.folder, name)
        with Publishing(), _folder(self.root, self.parts, create=True) as fd:
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None and not stat.S_ISREG(st.st_mode):
                raise WorkDirError(f"{shown}: exists and is {_kind(st.st_mode)}; refusing to replace it")
            tmp = f"{TMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}-{name}"
            try:
                out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                              0o666, dir_fd=fd)
            except OSError as exc:
                raise WorkDirError(f"{shown}: cannot store the shard ({exc.strerror or exc})") from None
            try:
                try:
                    view = memoryview(buf.getbuffer())
                    while view:
                        view = view[os.write(out, view):]
                finally:
                    os.close(out)
                os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
            except BaseException as exc:
                try:
                    os.unlink(tmp, dir_fd=fd)
                except OSError:
                    pass
                if isinstance(exc, OSError):
                    raise WorkDirError(f"{shown}: cannot store the shard ({exc.strerror or exc})") from None
                raise


def _clear_stale_temps(fd: int) -> None:
    """Temp files of puts whose process was SIGKILLed (their pid no longer runs)."""
    for name in os.listdir(fd):
        m = _TEMP.match(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            try:
                os.unlink(name, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.EISDIR, errno.EPERM):
                    raise


def run_shards(tasks: list, executor=None, store: ShardStore | None = None, progress=None) -> list:
    """Results of ``tasks`` in task order: from the store when there (counted in ``store.reused``),
    else computed -- by ``executor``, or here in this process when it is None -- and stored."""
    results = [store.get(t.key) if store else None for t in tasks]
    if store:
        store.reused += sum(r is not None for r in results)
    todo = [i for i, r in enumerate(results) if r is None]
    done_before = sum(tasks[i].size for i, r in enumerate(results) if r is not None)
    total = sum(t.size for t in tasks)
    if progress:
        progress(done_before, total)

    def stored(i, result):
        results[i] = result
        if store:
            store.put(tasks[i].key, result)

    if executor is None:
        for i in todo:
            stored(i, tasks[i].fn(*tasks[i].args, progress=None))
            done_before += tasks[i].size
            if progress:
                progress(done_before, total)
        return results
    shard_progress = None if progress is None else (lambda d, t: progress(done_before + d, total))
    executor.run([tasks[i] for i in todo], shard_progress, on_result=lambda k, result: stored(todo[k], result))
    return results

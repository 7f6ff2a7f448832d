"""Every file the tool writes goes through ``write_atomic``: a temp file in the target's folder,
renamed over the target when complete, so a failure leaves neither a partial file nor a temp file.

The result has ordinary permissions: the user's umask applied to 0666, or the mode of the regular
file it replaces.  An output path that is one of the command's inputs, or that exists and is not a
regular file (a folder, a device, a pipe), is refused before anything is written.
"""
from __future__ import annotations

import os
import stat
import tempfile
import zipfile
from typing import BinaryIO, Callable, Iterable

from .errors import NeurocompileError


class OutputError(NeurocompileError):
    """An output path that must not be written."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_output_path(path: str, inputs: Iterable[str] = ()) -> None:
    """Refuse an output path that would destroy an input or replace something that is not a file."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{path}: exists and is not a regular file; refusing to replace it")
    for src in inputs:
        if src is None:
            continue
        same = os.path.abspath(path) == os.path.abspath(src)
        if not same and st is not None and os.path.exists(src):
            same = os.path.samefile(path, src)
        if same:
            raise OutputError(f"{path}: is also an input of this command; refusing to overwrite it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"{path}: folder {folder} does not exist")


def write_atomic(path: str, write: Callable[[BinaryIO], None], inputs: Iterable[str] = ()) -> None:
    """Write ``path`` with ``write(fh)`` atomically (see the module docstring)."""
    path = os.fspath(path)
    check_output_path(path, inputs)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path)[:40], dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}


def zip_member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a member of a zip the tool reads (artifact, checkpoint, .npz) cannot be read, or None.

    torch.save, numpy and neurocompile write members stored or deflated, never encrypted: an
    encrypted member would make zipfile raise RuntimeError (asking for a password), and bzip2 / lzma
    members bring those decompressors' own error types, so both are refused before any read."""
    if info.flag_bits & 0x1:
        return f"member {info.filename[:80]!r} is encrypted"
    if info.compress_type not in ZIP_METHODS:
        return (f"member {info.filename[:80]!r} uses compression method {info.compress_type} "
                f"(only {' or '.join(ZIP_METHODS.values())})")
    return None

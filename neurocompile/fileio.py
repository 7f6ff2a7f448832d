"""Every file the tool reads or writes goes through here.

Reading: ``open_input`` opens only regular files (a FIFO, a device such as /dev/zero, a socket or a
folder is refused before a byte is read; the open itself cannot block on a FIFO), and a read error
names the file.

Writing: ``write_atomic`` writes a temp file in the target's folder, renamed over the target when
complete, so a failure leaves neither a partial file nor a temp file.  An output path that is a
symlink is written *through* to the file it names (the link stays); a link into /proc or /dev/fd (an
open descriptor such as /dev/stdout) is refused, as is anything that is not a regular file (a
folder, a device, a pipe, a socket), an empty name, and any of the command's inputs.  The result has
ordinary permissions: the user's umask applied to 0666, or the permission bits (never setuid, setgid
or sticky) of the regular file it replaces.

Temporary names carry their owner's process id (``.tmp-<pid>-...``): what a run killed by a signal
it cannot catch (SIGKILL) left is removed by the next run that writes into that folder.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import tempfile
import zipfile
from typing import BinaryIO, Callable, Iterable

from .errors import NeurocompileError


class OutputError(NeurocompileError):
    """An output path that must not be written."""


class InputFileError(NeurocompileError, ValueError):
    """An input path that is not a readable regular file."""


WRITTEN: list = []               # outputs completed by this process (the CLI's exit status reports on them)
SURVIVING: set = set()           # of those, the ones an unfinished command keeps (a training state for --resume)


class Publishing:
    """``with Publishing():`` around a step that creates a file and records its name (the temporary
    file, the rename into place and WRITTEN): the CLI's signal handlers hold a terminating signal
    (``pending``: the exception to raise) while it runs and raise it on the way out, so a name is
    never lost between the file's creation and its record (and the cleanup that reads it)."""
    active = False
    pending = None

    def __enter__(self):
        Publishing.active = True

    def __exit__(self, kind, value, tb):
        Publishing.active = False
        pending, Publishing.pending = Publishing.pending, None
        if pending is not None and kind is None:
            raise pending
        return False


def _publish(tmp: str, target: str, path: str) -> None:
    with Publishing():
        os.replace(tmp, target)
        WRITTEN.append(path)


def discard_written() -> list:
    """Remove the outputs this process completed (a command that does not finish leaves none, so its
    exit status says whether its outputs exist); returns the paths removed."""
    gone = []
    for path in WRITTEN:
        if path in SURVIVING:
            continue
        try:
            os.unlink(os.path.realpath(path))
            gone.append(path)
        except OSError:
            pass
    del WRITTEN[:]
    return gone
TMP_PREFIX = ".tmp-"
# ours: ``.tmp-<pid>-...`` next to an output, ``shard-<pid>-xxxxxxxx`` (mkdtemp's 8 characters) in the temp folder
_OWNED = re.compile(r"^(?:\.tmp-(\d+)-|shard-(\d+)-[a-z0-9_]{8}$)")
_MAGIC_LINK_DIRS = ("/proc/", "/dev/fd/")


def display(text) -> str:
    """``text`` safe for a terminal and one line: control characters (escape sequences, newlines),
    lone surrogates (undecodable file names) and other non-printables as backslash escapes."""
    out = []
    for ch in str(text):
        if ch.isprintable() and not 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif 0xDC80 <= ord(ch) <= 0xDCFF:         # a byte os.fsdecode could not decode
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
    return "".join(out)


def _kind(mode: int) -> str:
    """What a stat mode is, in words (a link only from a stat that does not follow links)."""
    for test, what in ((stat.S_ISREG, "a regular file"), (stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not a regular file"


# ------------------------------------------------------------------------------------------ inputs
def check_input_file(path: str, what: str = "file") -> os.stat_result:
    """The stat of ``path`` if it is a regular file; else one clear error (nothing is opened)."""
    path = os.fspath(path)
    if path == "":
        raise InputFileError(f"'': an empty {what} name")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputFileError(f"{path}: is {_kind(st.st_mode)}, not a regular {what}; refusing to read it")
    return st


def open_input(path: str, what: str = "file", *, dir_fd: int | None = None, follow_links: bool = True,
               shown: str | None = None) -> BinaryIO:
    """``path`` opened for reading if it is a regular file (checked on the open descriptor too, and
    opened non-blocking, so a FIFO swapped in after the check cannot block the open).

    ``dir_fd``: ``path`` is relative to that folder; ``follow_links=False``: a symbolic link is refused
    (the work-dir's files: nothing is read through a link planted there); ``shown``: the name in messages."""
    path = os.fspath(path)
    shown = path if shown is None else shown
    if dir_fd is None and follow_links:
        check_input_file(path, what)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow_links else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise InputFileError(f"{shown}: no such {what}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_links:
            raise InputFileError(f"{shown}: is a symbolic link, not a regular {what}; refusing to follow it") from None
        raise InputFileError(f"{shown}: cannot open it ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputFileError(f"{shown}: is {_kind(st.st_mode)}, not a regular {what}; refusing to read it")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_error(path: str, exc: OSError) -> str:
    """A read failure as ``<path>: cannot read it (<reason>)`` (an EIO from /proc/self/mem has no text)."""
    reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else type(exc).__name__)
    return f"{path}: cannot read it ({reason})"


# ----------------------------------------------------------------------------------------- outputs
def resolve_output(path: str) -> str:
    """The file an output path names: symlinks followed to their final target, which is returned
    (written through, the links kept).  A link into /proc or /dev/fd is refused: it names an open
    descriptor (``/dev/stdout``), and replacing what it resolves to would swap a file under its owner."""
    path = os.fspath(path)
    if path == "":
        raise OutputError("'': an empty output name; refusing it")
    current = os.path.abspath(path)
    for _ in range(40):
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return current
        except OSError as exc:
            raise OutputError(f"{path}: cannot use it as an output ({exc.strerror or exc})") from None
        if not stat.S_ISLNK(st.st_mode):
            return current
        target = os.readlink(current)
        current = os.path.normpath(os.path.join(os.path.dirname(current), target))
        # the folder part may hold links too: resolve it, keep the last component to examine
        current = os.path.join(os.path.realpath(os.path.dirname(current)), os.path.basename(current))
        if current.startswith(_MAGIC_LINK_DIRS) or target.startswith(_MAGIC_LINK_DIRS):
            raise OutputError(f"{path}: is a link to an open file descriptor ({target}); refusing to write through it")
    raise OutputError(f"{path}: too many levels of symbolic links")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def stale_entries(folder: str, prefix: str = TMP_PREFIX) -> list:
    """Paths in ``folder`` that dead runs left: our temporaries (``prefix<pid>-...``) whose owning
    process no longer exists, owned by this user."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    out = []
    for name in names:
        m = _OWNED.match(name)
        pid = int(m.group(1) or m.group(2)) if m else None
        if not m or not name.startswith(prefix) or pid == os.getpid() or _pid_alive(pid):
            continue
        full = os.path.join(folder, name)
        try:
            if os.lstat(full).st_uid == os.geteuid():
                out.append(full)
        except OSError:
            pass
    return out


def clear_stale(folder: str, prefix: str = TMP_PREFIX) -> list:
    """Remove ``stale_entries(folder, prefix)``; -> the paths removed."""
    removed = []
    for full in stale_entries(folder, prefix):
        try:
            if stat.S_ISDIR(os.lstat(full).st_mode):
                shutil.rmtree(full, ignore_errors=True)
            else:
                os.unlink(full)
            removed.append(full)
        except OSError:
            pass
    return removed


def same_file(a: str, b: str) -> bool:
    """Whether two paths name the same file (after links, or the same inode)."""
    ra, rb = os.path.realpath(a), os.path.realpath(b)
    if ra == rb:
        return True
    try:
        return os.path.samefile(ra, rb)
    except OSError:
        return False


def check_output_path(path: str, inputs: Iterable[str] = ()) -> str:
    """Refuse an output path that would destroy an input or replace something that is not a file;
    -> the file that will be written (links resolved)."""
    path = os.fspath(path)
    target = resolve_output(path)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputError(f"{path}: cannot use it as an output ({exc.strerror or exc})") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{path}: exists and is {_kind(st.st_mode)}; refusing to replace it")
    for src in inputs:
        if src is None:
            continue
        if same_file(target, src):
            raise OutputError(f"{path}: is also an input of this command; refusing to overwrite it")
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise OutputError(f"{path}: folder {folder} does not exist")
    clear_stale(folder)
    return target


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str, write: Callable[[BinaryIO], None], inputs: Iterable[str] = (),
                 survives: bool = False) -> None:
    """Write ``path`` with ``write(fh)`` atomically (see the module docstring).  ``survives``: the file
    stays when the command does not finish (a training state saved for ``--resume``); otherwise it is
    one of the outputs that an unfinished command removes."""
    path = os.fspath(path)
    target = check_output_path(path, inputs)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode) & 0o777      # never setuid, setgid or sticky
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    folder = os.path.dirname(target)
    tmp = None
    try:
        with Publishing():                    # the temporary's name is known before a signal can end us
            fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.getpid()}-",
                                       suffix="-" + os.path.basename(target)[:40], dir=folder)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, mode)
        (SURVIVING.add if survives else SURVIVING.discard)(path)     # marked before it is recorded
        _publish(tmp, target, path)
    except BaseException:
        try:
            if tmp is not None:
                os.unlink(tmp)
        except FileNotFoundError:
            pass
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

"""Writing a report or capture to the path the user named, and only there.

A regular file (or a new one) is replaced atomically: symlinks are resolved first, so a link
to a report is written through rather than replaced; the new content goes to a temporary file
beside the target, which gets the existing file's mode (a new file the umask's usual mode, not
mkstemp's 0600), is fsynced and renamed over it. A crash therefore leaves the old file or the
new one, never half of one.

A device, FIFO or socket, and anything under /dev or /proc, is opened and written as it is:
replacing `/dev/null` or a FIFO with a regular file would break what the user pointed at. A
path that names one of this process's own descriptors (`/dev/stdout`, `/dev/fd/N`,
`/proc/self/fd/N`) writes to that descriptor, at its offset and in its append mode, as a shell
redirect would.

Every failure (missing or read-only directory, a directory as target, a full disk, a name too
long) is an `OutputError`: one line naming the path and what to do, exit 2, and no temporary
file left behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from typing import BinaryIO

from analyzer.cliutil import UserError

_OWN_FD = re.compile(r"^/(?:dev/(?:std(in|out|err)|fd/(\d+))|proc/(?:self|thread-self|(\d+))(?:/task/\d+)?/fd/(\d+))$")
_STD_FD = {"in": 0, "out": 1, "err": 2}
_REASONS = {
    errno.ENOENT: "it or its directory does not exist",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.EISDIR: "it is a directory; name a file",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENAMETOOLONG: "the file name is too long",
    errno.ELOOP: "too many levels of symbolic links",
    errno.ENXIO: "nothing is reading from it (or it is a socket)",
    errno.EPIPE: "the reader went away",
}


class OutputError(UserError):
    """The output could not be written; printed as one line, exit 2."""


def write_output(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write `data` (str: as UTF-8) to `path`: atomically for a regular file, directly for a
    device, FIFO or descriptor. Raises OutputError."""
    with open_output(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


@contextlib.contextmanager
def open_output(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file to write `path`'s new content to (for output written in pieces); the
    content takes effect when the block ends without an exception. Raises OutputError."""
    name = _checked_name(path)
    try:
        kind, where = _destination(name)
    except OSError as e:
        raise _error(name, e) from None
    if kind == "file":
        writer = _atomically(name, str(where))
    elif kind == "fd":
        writer = _unreplaced(name, lambda: os.dup(int(where)))
    else:  # no O_CREAT, no O_TRUNC: a device or FIFO is used as it is
        writer = _unreplaced(name, lambda: os.open(where, os.O_WRONLY | os.O_NOCTTY))
    with writer as f:
        yield f


def check_output(path: str | os.PathLike[str]) -> None:
    """Fail now, not after a long capture or demo, if `path` cannot be written: an empty name,
    a directory, a missing or unwritable directory, a name too long. Raises OutputError."""
    name = _checked_name(path)
    try:
        kind, where = _destination(name)
        if kind == "direct" and not os.path.exists(name):  # never created under /dev or /proc
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
        if kind != "file":
            return
        directory, base = os.path.split(where)
        if len(os.fsencode(base)) > os.pathconf(directory, "PC_NAME_MAX"):
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
        if os.path.isdir(where):
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        if not os.access(directory, os.W_OK | os.X_OK):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as e:
        raise _error(name, e) from None


def _checked_name(path: str | os.PathLike[str]) -> str:
    name = os.fspath(path)
    if not name:
        raise OutputError("the output path is empty; name a file")
    return name


def _destination(name: str) -> tuple[str, str | int]:
    """("fd", N) for this process's descriptor N; ("direct", path) for a device, FIFO, socket or
    anything under /dev or /proc; ("file", resolved path) for a regular or new file."""
    for hop in _link_chain(name):
        m = _OWN_FD.match(hop)
        if m and (m.group(3) is None or int(m.group(3)) == os.getpid()):
            std, dev_fd, _, proc_fd = m.groups()
            return "fd", _STD_FD[std] if std else int(dev_fd or proc_fd)
        if hop.startswith(("/dev/", "/proc/")):
            return "direct", name
    target = os.path.realpath(name)
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        if not os.path.isdir(os.path.dirname(target)):
            raise OutputError(f"cannot write {name!r}: directory {os.path.dirname(target)!r} does not exist") from None
        return "file", target
    if stat.S_ISDIR(mode):
        raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
    return ("file", target) if stat.S_ISREG(mode) else ("direct", name)


def _link_chain(name: str) -> list[str]:
    """`name` and each path its symlinks point to, in turn, with directories resolved; the
    chain stops at a /dev or /proc path, whose links (`pipe:[123]`) are not paths."""
    hops = [os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(name))), os.path.basename(name))]
    while os.path.islink(hops[-1]) and len(hops) <= 40 and not hops[-1].startswith(("/dev/", "/proc/")):
        link = os.path.join(os.path.dirname(hops[-1]), os.readlink(hops[-1]))
        hops.append(os.path.join(os.path.realpath(os.path.dirname(link)), os.path.basename(link)))
    return hops


@contextlib.contextmanager
def _unreplaced(name: str, open_fd: Callable[[], int]) -> Iterator[BinaryIO]:
    """Write into the descriptor `open_fd` returns, as it is: nothing is created, truncated or renamed."""
    try:
        f = os.fdopen(open_fd(), "wb")
    except OSError as e:
        raise _error(name, e) from None
    with _errors_named(name), f:
        yield f  # type: ignore[misc]


@contextlib.contextmanager
def _atomically(name: str, target: str) -> Iterator[BinaryIO]:
    directory, base = os.path.split(target)
    try:
        existing: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        existing = None
    tmp = None
    try:
        with _errors_named(name):
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{base[:64]}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                if existing is not None:
                    os.fchmod(fd, stat.S_IMODE(existing.st_mode))
                    if os.geteuid() == 0:  # root keeps the file its owner's
                        os.fchown(fd, existing.st_uid, existing.st_gid)
                else:
                    os.fchmod(fd, 0o666 & ~_umask())
                yield f  # type: ignore[misc]
                f.flush()
                os.fsync(fd)
            os.replace(tmp, target)
            tmp = None
            fsync_directory(directory)
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@contextlib.contextmanager
def _errors_named(name: str) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise _error(name, e) from None


def _error(name: str, e: OSError) -> OutputError:
    reason = _REASONS.get(e.errno or 0, e.strerror or str(e))
    return OutputError(f"cannot write {os.fsdecode(name)!r}: {reason}")


def _umask() -> int:
    """The process's umask, read without setting it (os.umask would change it for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_directory(directory: str) -> None:
    """Make the rename itself durable; some file systems cannot fsync a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

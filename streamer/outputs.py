"""Atomic output files: the one writer every command uses for the files it produces.

An output is written to a temporary name in its target directory, flushed and fsynced, then
renamed over the target: a reader sees the old file or the complete new one, never half of it.
If the work fails, or is interrupted (Ctrl-C), the temporary file is removed and the target is
left as it was. Targets that cannot be renamed over (``-`` for stdout, a character device such as
``/dev/null``, a FIFO) are written directly.

Bad targets are refused *before* any work starts (:func:`check_output`), each with one clear line:
a directory, a missing directory, a read-only file or directory, a path in a kernel filesystem
(``/proc``, ``/sys``); write failures (``/dev/full``, a full disk) become the same kind of error.

File names that are not valid UTF-8 (on POSIX they reach Python as str with surrogate escapes)
work as paths; :func:`display_name` makes them printable and JSON-safe for messages and outputs.

Usage::

    check_output(args.output)                     # early: before decoding anything
    with atomic_open(args.output) as fh:          # text, UTF-8
        fh.write(...)
    with atomic_path("call.png") as tmp:          # for libraries that want a file name
        figure.savefig(tmp)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import sys
import tempfile
from typing import IO, Any, Iterator

from streamer.errors import UsageError

__all__ = ["OutputError", "check_output", "atomic_open", "atomic_path", "write_text", "write_json",
           "display_name", "is_stdout"]

# Errors of writing itself (the block's other OSErrors, e.g. reading an input, pass through).
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EACCES,
                 errno.EPERM, errno.EBADF}

# Kernel filesystems: files there are control knobs, never outputs.
_KERNEL_ROOTS = ("/proc", "/sys")


class OutputError(UsageError):
    """An output that cannot be written (a bad path is a bad option: exit status 64).

    Attributes:
        path: the target as given.
    """

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path


def display_name(path: str | bytes | os.PathLike[Any]) -> str:
    """A path as printable, JSON-safe text: bytes that are not UTF-8 become U+FFFD.

    ``sys.argv`` and ``os.listdir`` hand undecodable bytes of a POSIX file name to Python as lone
    surrogates; those cannot be encoded as UTF-8, so printing or ``json.dumps`` of the raw name
    fails or produces invalid text. The path itself keeps working for ``open()``.
    """
    raw = os.fsencode(path)
    return raw.decode("utf-8", "replace")


def is_stdout(path: str | os.PathLike[str] | None) -> bool:
    """True for no path or ``-``: the output goes to standard output."""
    return path is None or os.fspath(path) == "-"


def _strerror(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return (exc.strerror or str(exc)).lower() if exc.strerror else str(exc)


def _in_kernel_fs(path: str) -> bool:
    real = os.path.realpath(path)
    return any(real == root or real.startswith(root + "/") for root in _KERNEL_ROOTS)


def _direct(st: os.stat_result | None) -> bool:
    """Targets written in place: character devices, FIFOs and sockets (nothing to rename over)."""
    return st is not None and (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)
                               or stat.S_ISSOCK(st.st_mode))


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None
    except OSError as exc:
        raise OutputError(f"cannot write {display_name(path)}: {_strerror(exc)}", path) from None


def check_output(path: str | os.PathLike[str] | None, what: str = "output") -> None:
    """Refuse a target that cannot be written, before any work is done.

    Args:
        path: the target; None or ``-`` (standard output) is always fine.
        what: what the file is, for the message (``"output"``, ``"--summary"``, ...).

    Raises:
        OutputError: a directory, a missing or non-directory parent, a path in /proc or /sys, a
            read-only file or directory.
    """
    if is_stdout(path):
        return
    p = os.fspath(path)  # type: ignore[arg-type]
    name = display_name(p)
    if p == "" or p.endswith(os.sep):
        raise OutputError(f"{what} {name!r}: not a file name", p)
    st = _stat(p)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{what} {name}: is a directory", p)
    if _direct(st):
        if not os.access(p, os.W_OK):
            raise OutputError(f"{what} {name}: permission denied", p)
        return
    if _in_kernel_fs(p):
        raise OutputError(f"{what} {name}: refusing to write into a kernel filesystem (/proc, /sys)", p)
    parent = os.path.dirname(os.path.abspath(p))
    pst = _stat(parent)
    if pst is None:
        raise OutputError(f"{what} {name}: directory {display_name(os.path.dirname(p) or '.')} "
                          "does not exist", p)
    if not stat.S_ISDIR(pst.st_mode):
        raise OutputError(f"{what} {name}: {display_name(os.path.dirname(p))} is not a directory", p)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{what} {name}: not a regular file", p)
    # The mode bits as well as access(): root passes every access() check, yet a file or folder
    # with no write bit was made read-only on purpose.
    if st is not None and (not os.access(p, os.W_OK) or not st.st_mode & 0o222):
        raise OutputError(f"{what} {name}: file is read-only", p)
    if not os.access(parent, os.W_OK | os.X_OK) or not pst.st_mode & 0o222:
        raise OutputError(f"{what} {name}: directory {display_name(parent)} is not writable", p)


def _umask() -> int:
    """The process umask, read without changing it where the kernel tells (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot sync a directory: the rename is still atomic
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], what: str = "output", fsync: bool = True) -> Iterator[str]:
    """Yield a temporary file name beside ``path``; rename it to ``path`` when the block succeeds.

    For libraries that write to a name themselves (matplotlib, pydub). The temporary name keeps
    the target's extension, so a library that picks a format by extension picks the same one.
    The block's own exceptions pass through unchanged (after the temporary file is removed);
    failures to write or rename raise :class:`OutputError`. A character device or FIFO target is
    yielded as it is (no rename possible).

    Raises:
        OutputError: the target cannot be written (see :func:`check_output`).
    """
    p = os.fspath(path)
    check_output(p, what)
    if _direct(_stat(p)):
        try:
            yield p
        except OSError as exc:  # the block wrote to the device itself: its write errors are ours
            if exc.errno not in _WRITE_ERRNOS:
                raise
            raise OutputError(f"cannot write {what} {display_name(p)}: {_strerror(exc)}", p) from None
        return
    directory = os.path.dirname(os.path.abspath(p))
    base = os.path.basename(p)
    stem, ext = os.path.splitext(base)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".part{ext}", dir=directory)
    except OSError as exc:
        raise OutputError(f"cannot write {what} {display_name(p)}: {_strerror(exc)}", p) from None
    os.close(fd)
    try:
        try:
            yield tmp
        except OSError as exc:  # the block was writing the temporary file: a full disk is ours to report
            if exc.errno not in _WRITE_ERRNOS:
                raise
            raise OutputError(f"cannot write {what} {display_name(p)}: {_strerror(exc)}", p) from None
        try:
            st = _stat(p)
            # a new file gets the mode open() would give it; a replaced file keeps its own
            os.chmod(tmp, stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask())
            if fsync:
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
            os.replace(tmp, p)
        except OSError as exc:
            raise OutputError(f"cannot write {what} {display_name(p)}: {_strerror(exc)}", p) from None
        if fsync:
            _fsync_dir(directory)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str] | None, mode: str = "w", *, what: str = "output",
                encoding: str = "utf-8", newline: str | None = "", fsync: bool = True) -> Iterator[IO[Any]]:
    """Open an output for writing; it appears under its name only if the block succeeds.

    Args:
        path: the target; None or ``-`` yields ``sys.stdout`` (``sys.stdout.buffer`` for ``"wb"``),
            flushed and left open.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        what: what the file is, for messages.
        encoding, newline: for text mode (``newline=""`` writes ``\\n`` as given).
        fsync: sync the data (and the directory entry) before the rename.

    Raises:
        OutputError: the target cannot be written, or writing it failed (a full disk, /dev/full).
            Exceptions raised inside the block pass through after the temporary file is removed.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    binary = mode == "wb"
    if is_stdout(path):
        out = sys.stdout.buffer if binary else sys.stdout
        yield out
        out.flush()
        return
    p = os.fspath(path)  # type: ignore[arg-type]
    with atomic_path(p, what, fsync=False) as target:
        try:
            fh = open(target, mode, **({} if binary else {"encoding": encoding, "newline": newline}))
        except OSError as exc:
            raise OutputError(f"cannot write {what} {display_name(p)}: {_strerror(exc)}", p) from None
        try:
            yield fh
            fh.flush()
            if fsync and target != p:
                os.fsync(fh.fileno())
        except OSError as exc:
            if exc.errno not in _WRITE_ERRNOS:  # not the output's fault: let it pass as it is
                raise
            raise OutputError(f"cannot write {what} {display_name(p)}: {_strerror(exc)}", p) from None
        finally:
            try:
                fh.close()
            except OSError as exc:  # buffered data that a full device refused
                raise OutputError(f"cannot write {what} {display_name(p)}: {_strerror(exc)}", p) from None
    if fsync and not _direct(_stat(p)):
        _fsync_dir(os.path.dirname(os.path.abspath(p)))


def write_text(path: str | os.PathLike[str] | None, text: str, what: str = "output") -> None:
    """Write a whole text file atomically (UTF-8)."""
    with atomic_open(path, "w", what=what) as fh:
        fh.write(text)


def write_json(path: str | os.PathLike[str] | None, obj: Any, what: str = "output", indent: int | None = 2) -> None:
    """Write one JSON document atomically (UTF-8, a final newline)."""
    write_text(path, json.dumps(obj, ensure_ascii=False, indent=indent) + "\n", what)

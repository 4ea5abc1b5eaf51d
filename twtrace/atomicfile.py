"""Write an output file so that readers see the old file or the whole new one.

The data goes to a fresh temporary name in the target's directory, opened
with O_CREAT|O_EXCL|O_NOFOLLOW (running as root, a name planted in a shared
directory must never be followed or reused), and is renamed over the target
only once complete.  A failure leaves the target untouched and no temporary
file behind.
"""
from __future__ import annotations

import os
import secrets
from typing import Callable, IO

from twtrace.errors import UserError


def _open_temp(directory: str, base: str, mode: int) -> "tuple[int, str]":
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    for _ in range(16):  # a clash with an existing name is astronomically rare
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            continue
    raise UserError(f"cannot write {os.path.join(directory, base)}: no free temporary name")


def write_atomic(path: str, write: Callable[[IO[bytes]], None], mode: int = 0o600) -> None:
    """Call write(f) on a binary file that becomes `path` when write returns.
    OSErrors become one-line UserErrors naming path."""
    from twtrace.outfile import plan

    # The same rules as record's output (twtrace/outfile.py): a device, FIFO
    # or /dev/stdout is written directly, never replaced by a regular file;
    # another user's link is not followed, nor their file in /tmp replaced.
    kind, path = plan(os.fspath(path))
    if kind != "file":
        _write_stream(path, write)
        return
    directory = os.path.dirname(path) or "."
    base = os.path.basename(path)
    if not base:
        raise UserError(f"cannot write {path}: it names a directory")
    if os.path.isdir(path):
        raise UserError(f"cannot write {path}: it is a directory")
    try:
        fd, tmp = _open_temp(directory, base, mode)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # the umask must not narrow a 0644 textfile
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except OSError as e:
        _unlink_quietly(tmp)
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _write_stream(path: str, write: Callable[[IO[bytes]], None]) -> None:
    try:
        fd = os.dup(1) if path == "-" else os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
        with open(fd, "wb") as f:
            write(f)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

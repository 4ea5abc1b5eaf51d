"""Output files written as root, safely (README: "Running safely as root").

twtrace runs as root next to users who can write to /tmp, so every file it
writes follows these rules:

- A regular FILE is written as FILE.partial, created with
  O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600 (never an existing file, never
  through a link), then renamed over FILE once complete: a FILE that exists
  is whole.  The temporary file is flock()ed while it is written, so a second
  recorder on the same path is refused, and a stale one (its recorder died)
  is recognised and replaced.
- A non-regular target (a device, FIFO, socket, or /dev/stdout and friends)
  is opened and written directly, streaming, never renamed over.
- A FILE another user owns in a sticky directory (/tmp) is not replaced, and
  a final path that is a symbolic link another user owns is not followed.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import sys
from typing import Optional, TextIO

from twtrace.errors import UserError

MODE = 0o600  # recordings hold kernel addresses: as private as kptr_restrict
SUFFIX = ".partial"
# Paths that name an already open descriptor: write to it, never replace it.
STREAM_PREFIXES = ("/dev/stdout", "/dev/stderr", "/dev/fd/", "/proc/self/fd/")


def _err(target: str, why: str) -> UserError:
    return UserError(f"cannot write {target}: {why}")


def _lstat(path: str) -> Optional[os.stat_result]:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _err(path, e.strerror)


def _check_link(target: str, st: os.stat_result) -> str:
    """Follow a final symbolic link only if we (or root) own it, as the
    kernel's protected_symlinks would in a sticky directory."""
    if st.st_uid not in (0, os.geteuid()):
        raise _err(target, f"it is a symbolic link owned by uid {st.st_uid}; "
                           "twtrace does not follow it (give the real path)")
    return os.path.realpath(target)


def _check_replace(target: str, st: os.stat_result) -> None:
    """Refuse to replace another user's file in a sticky directory."""
    if st.st_uid == os.geteuid():
        return
    parent = os.stat(os.path.dirname(os.path.abspath(target)) or ".")
    if parent.st_mode & stat.S_ISVTX:
        raise _err(target, f"it belongs to uid {st.st_uid} in a sticky directory; "
                           "twtrace does not replace other users' files there")


def plan(target: str) -> tuple:
    """(kind, path): "stream" to write path directly, "file" to write it via
    a temporary file.  Raises UserError (one line) for what it refuses."""
    if not target:
        raise UserError("-o must name a file, or - for stdout")
    if target == "-":
        return "stdout", target
    if target.startswith(STREAM_PREFIXES):
        return "stream", target
    path = target
    st = _lstat(path)
    if st is not None and stat.S_ISLNK(st.st_mode):
        path = _check_link(target, st)
        st = _lstat(path)
    if st is None:
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise _err(target, f"no directory {parent}")
        return "file", path
    if stat.S_ISDIR(st.st_mode):
        raise _err(target, "it is a directory")
    if not stat.S_ISREG(st.st_mode):
        return "stream", path
    _check_replace(path, st)
    return "file", path


def _open_stream(target: str, path: str) -> int:
    try:
        # No O_CREAT: a stream target exists already; O_NOCTTY: a tty stays ours.
        return os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise _err(target, e.strerror) from None


def _lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise


def _create_exclusive(path: str) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, MODE)
    _lock(fd)  # a fresh file: nobody else can hold it yet
    return fd


def _clear_stale(target: str, temp: str) -> None:
    """temp exists: another recorder's (refuse), or a dead one's (remove)."""
    try:
        fd = os.open(temp, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _err(target, f"{temp} is a symbolic link, not twtrace's; remove it") from None
        if e.errno == errno.ENOENT:
            return  # gone meanwhile
        raise _err(target, f"{temp}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise _err(target, f"{temp} exists and is not a twtrace file of this user; "
                               "remove it")
        if not _lock(fd):
            raise _err(target, "another twtrace is writing it now "
                               f"(it holds {temp})")
        os.unlink(temp)  # the recorder that made it is gone: a crash's leftover
    finally:
        os.close(fd)


def open_temp(target: str, path: str) -> tuple:
    """Create path.partial exclusively; returns (fd, temp path)."""
    temp = path + SUFFIX
    for _ in range(3):
        try:
            return _create_exclusive(temp), temp
        except FileExistsError:
            _clear_stale(target, temp)
        except OSError as e:
            raise _err(target, e.strerror) from None
    raise _err(target, f"{temp} keeps reappearing; is another program writing it?")


class Output:
    """JSON lines to stdout, to a stream target directly, or to a regular
    FILE through FILE.partial (module doc)."""

    def __init__(self, target: str):
        self.target = target
        self.temp: Optional[str] = None
        kind, self.path = plan(target)
        if kind == "stdout":
            self.f: TextIO = sys.stdout
            return
        if kind == "stream":
            fd = _open_stream(target, self.path)
        else:
            fd, self.temp = open_temp(target, self.path)
            self._ino = os.fstat(fd).st_ino
        self.f = os.fdopen(fd, "w", encoding="utf-8")

    def write(self, obj: dict) -> None:
        self.f.write(json.dumps(obj, separators=(",", ":")) + "\n")

    def write_text(self, line: str) -> None:
        """A line already encoded as JSON (twtrace.eventtext)."""
        self.f.write(line + "\n")

    def _still_ours(self, temp: Optional[str] = None) -> bool:
        """The temporary path still names the file we created (a rename
        or unlink must not hit a file someone swapped in)."""
        try:
            st = os.lstat(temp or self.temp)
        except OSError:
            return False
        return st.st_ino == self._ino and stat.S_ISREG(st.st_mode)

    def finish(self) -> None:
        self.f.flush()
        if self.f is sys.stdout:
            return
        if self.temp is None:
            self.f.close()
            return
        os.fsync(self.f.fileno())
        if not self._still_ours():
            self.f.close()
            raise _err(self.target, f"{self.temp} was replaced while recording; "
                                    "the recording is lost")
        try:
            os.rename(self.temp, self.path)  # the lock goes with the closed fd
        except OSError as e:
            self.abandon()
            raise _err(self.target, e.strerror) from None
        self.temp = None
        self.f.close()

    def abandon(self) -> None:
        """Remove the temporary file (start-up failed or was interrupted).
        Safe to call from a signal watcher thread, and twice."""
        temp, self.temp = self.temp, None
        if temp and self._still_ours(temp):
            try:
                os.unlink(temp)
            except OSError:
                pass
        if self.f is not sys.stdout:
            try:
                self.f.close()
            except (OSError, ValueError):
                pass


def write_private(path: str, text: str) -> None:
    """A small whole file (e.g. a VM spec) written the same safe way."""
    out = Output(path)
    out.f.write(text)
    out.finish()

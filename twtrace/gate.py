"""The gate `record -- CMD` holds its command at until tracing is ready.

A shell is started that blocks reading a FIFO in a private directory, then
execs the command under the same pid.  A pipe passed by descriptor would
stay open in the command (dash cannot close a descriptor above 9), so the
shell opens the FIFO by name only for its `read` and the command inherits
nothing of twtrace's.  The caller writes a line to the returned descriptor
to let the command run, then closes it.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
import time
from typing import List, Tuple

SCRIPT = 'read -r _ < "$1"; shift; exec "$@"'
OPEN_TIMEOUT = 30.0  # the shell needs a few ms; an emulated guest under load far more


def start(argv: List[str], stdout=None) -> Tuple[subprocess.Popen, int]:
    d = tempfile.mkdtemp(prefix="twtrace-gate-")  # 0700, root's: nobody can swap the FIFO
    fifo = os.path.join(d, "gate")
    try:
        os.mkfifo(fifo, 0o600)
        proc = subprocess.Popen(["/bin/sh", "-c", SCRIPT, "twtrace-gate", fifo, *argv],
                                stdout=stdout)
        return proc, _open_writer(fifo, proc)
    finally:
        shutil.rmtree(d, ignore_errors=True)  # both ends are open (or the shell died)


def _open_writer(fifo: str, proc: subprocess.Popen) -> int:
    """Open the FIFO's write end once the shell has opened its read end
    (O_NONBLOCK: ENXIO until then), without hanging if the shell died."""
    deadline = time.monotonic() + OPEN_TIMEOUT
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.set_blocking(fd, True)
            return fd
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
        if proc.poll() is not None or time.monotonic() > deadline:
            # Give the caller a descriptor whose write is harmless: the
            # command never ran, and its exit status tells the rest.
            if proc.poll() is None:
                proc.kill()
            return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        time.sleep(0.002)

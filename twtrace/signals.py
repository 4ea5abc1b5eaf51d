"""SIGINT and SIGTERM, honoured at every moment.

Python runs signal handlers only between bytecodes, and bcc's compile and
attach are long C calls (20 s in an emulated guest): a handler alone would
sit on a supervisor's SIGTERM until its grace period ends in SIGKILL.  So
while starting, a watcher thread also hears the signal (through the
interpreter's wakeup fd, which the C-level handler writes at once) and, if
the main thread has not reacted within GRACE seconds, removes what start-up
made so far and exits with 128+signal.  Once tracing runs, a signal just
sets a flag, and the caller finishes its file cleanly.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Callable, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE = 0.5  # seconds the main thread gets to unwind by itself


class Interrupted(SystemExit):
    """Start-up was interrupted: exits with 128+signal, no traceback."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


# A raise from a signal handler can land inside a callback whose exceptions
# Python only prints ("Exception ignored in ..."; importlib's module-lock
# callbacks, finalizers): the signal is then remembered here and acted on at
# the next check (end of imports, Stop(), end of start-up).
_pending: list = []


def quiet_exit(signum, frame):
    """Until a command installs its own: a signal during imports exits quietly."""
    _pending.append(signum)
    raise Interrupted(signum)


def check_pending() -> None:
    """Raise the Interrupted of a signal whose first raise was swallowed."""
    if _pending:
        raise Interrupted(_pending[0])


class Stop:
    """SIGINT/SIGTERM: abort while starting; afterwards a flag (truthy once hit)."""

    def __init__(self, on_abort: Optional[Callable[[], None]] = None):
        check_pending()
        self.signal: Optional[int] = None
        self.on_abort = on_abort or (lambda: None)
        self._starting = True
        self._raised = False
        self._handled = threading.Event()
        self._lock = threading.Lock()
        self._old = {s: signal.signal(s, self._handle) for s in SIGNALS}
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        os.set_blocking(r, True)
        self._wakeup = (r, w)
        self._old_wakeup = signal.set_wakeup_fd(w)
        threading.Thread(target=self._watch, name="twtrace-signals", daemon=True).start()

    def _handle(self, signum, frame):
        self._handled.set()
        if self.signal is None:
            self.signal = signum
        if self._starting and not self._raised:
            self._raised = True  # once: a second signal must not cut the unwinding
            raise Interrupted(signum)

    def _watch(self) -> None:
        r = self._wakeup[0]
        while True:
            try:
                data = os.read(r, 16)
            except OSError:
                return
            if not data or not self._starting:
                return
            signum = data[-1]
            if signum in SIGNALS and not self._handled.wait(GRACE) and self._starting:
                self._abort(signum)

    def _abort(self, signum: int) -> None:
        # The main thread is stuck in C (compiling, attaching): act for it.
        with self._lock:
            try:
                self.on_abort()
            finally:
                os._exit(128 + signum)

    def running(self) -> None:
        """Start-up is over: from now on a signal only sets the flag.  A
        signal that came while starting, but whose raise was swallowed, ends
        start-up here, as it would have."""
        with self._lock:
            self._starting = False
        signal.set_wakeup_fd(self._old_wakeup)
        os.close(self._wakeup[1])  # the watcher reads EOF and ends
        if self._raised:
            raise Interrupted(self.signal)

    def restore(self) -> None:
        """Give the signals back to the handlers before us (e.g. top's own)."""
        if self._starting:
            self.running()
        for s, old in self._old.items():
            signal.signal(s, old)

    def __bool__(self) -> bool:
        return self.signal is not None

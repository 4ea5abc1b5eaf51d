"""The interactive loop: a raw terminal read with select(), a rich Live on
the alternate screen, one redraw per change.

The terminal is put back however the loop ends (q, Ctrl-C, SIGTERM, an
exception): termios settings are restored in a finally, and Live leaves
the alternate screen and shows the cursor on its way out."""
from __future__ import annotations

import os
import select
import signal
import sys
import termios
import time
import tty
from typing import Optional, Tuple

from rich.console import Console
from rich.live import Live

from twtrace.top import keys, render
from twtrace.top.main import first_wait
from twtrace.top.state import TopState

IDLE_WAIT = 0.5  # longest select() wait: bounds how late a resize is noticed


def terminal_size(fd: int) -> Tuple[int, int]:
    size = os.get_terminal_size(fd)
    return size.columns, size.lines


class Terminal:
    """cbreak mode on stdin for the duration of a with block: keys arrive
    one by one without echo; Ctrl-C still raises SIGINT."""

    def __init__(self, fd: int):
        self.fd = fd
        self.saved: Optional[list] = None

    def __enter__(self) -> "Terminal":
        self.saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc) -> None:
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


def run(state: TopState, source) -> int:
    fd = sys.stdin.fileno()
    out = sys.stdout.fileno()
    console = Console()
    resized = [True]
    # A byte in this pipe wakes select() at once on a resize (a handler
    # alone would not: select is retried after it returns).
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)

    def on_winch(signum, frame):
        resized[0] = True
        try:
            os.write(wake_w, b"w")
        except OSError:
            pass

    old_winch = signal.signal(signal.SIGWINCH, on_winch)
    try:
        with Terminal(fd), Live(console=console, screen=True, auto_refresh=False,
                                redirect_stdout=False, redirect_stderr=False) as live:
            _loop(state, source, live, console, (fd, wake_r), out, resized)
    except KeyboardInterrupt:
        pass  # Ctrl-C is the other way to quit
    finally:
        signal.signal(signal.SIGWINCH, old_winch)
        os.close(wake_r)
        os.close(wake_w)
    return 0


def _loop(state, source, live, console, fds, out, resized) -> None:
    fd, wake = fds
    next_tick = time.monotonic() + first_wait(state, source)
    dirty = True
    while not state.quit:
        now = time.monotonic()
        sampling = not state.paused and not state.ended
        if sampling and now >= next_tick:
            sample = source.next(state.interval)
            if sample is not None:
                state.push(sample)
                dirty = True
            if source.done:
                state.ended = dirty = True
            next_tick = now + source.pace(state.interval)
        if resized[0]:
            resized[0] = False
            console.size = terminal_size(out)  # fixed until the next SIGWINCH
            dirty = True
        if dirty:
            width, height = console.size
            live.update(render.screen(state, width, height), refresh=True)
            dirty = False
        wait = IDLE_WAIT if not sampling else min(IDLE_WAIT, max(0.0, next_tick - time.monotonic()))
        ready, _, _ = select.select([fd, wake], [], [], wait)
        if wake in ready:
            os.read(wake, 64)
        if fd in ready:
            data = os.read(fd, 1024)
            if not data:
                return  # stdin closed
            interval = state.interval
            for key in keys.decode(data):
                keys.handle(state, key)
            if state.interval != interval:  # a shorter interval takes effect now
                next_tick = min(next_tick, time.monotonic() + source.pace(state.interval))
            dirty = True

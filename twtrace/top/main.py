"""`twtrace top`: options in, the right source and mode out."""
from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import List, Optional

from rich.console import Console

from twtrace import cgroups
from twtrace import validate as check
from twtrace.errors import UserError
from twtrace.signals import Stop
from twtrace.top.state import Filters, TopState


PLAIN_WIDTH = 79


@dataclass
class TopOptions:
    interval: float = 1.0
    count: Optional[int] = None
    pids: List[int] = field(default_factory=list)
    tids: List[int] = field(default_factory=list)
    comm: Optional[str] = None
    func: Optional[str] = None
    json: bool = False
    replay: Optional[str] = None
    speed: float = 1.0
    probe_mode: str = "auto"
    cgroups: List[str] = field(default_factory=list)


def parse_speed(text: str) -> float:
    """--speed: a factor (1 = recorded pace), or 0 / max = as fast as possible."""
    if text.strip().lower() in ("max", "0"):
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"--speed must be a number or max, not {text!r}") from None
    check.speed(value)
    return value


def validate(opts: TopOptions) -> Filters:
    check.seconds("the interval", opts.interval, low=check.MIN_INTERVAL)
    check.count("COUNT", opts.count)
    check.choice("--probe-mode", opts.probe_mode, check.PROBE_MODES)
    # Live, the kernel filters by cgroup id; a replay's task lines by path.
    paths = [cgroups.hierarchy_path(p, cgroups.find_mount()) for p in opts.cgroups] \
        if opts.replay is not None else []
    return Filters(pids=list(opts.pids), tids=list(opts.tids),
                   comm=check.regex("--comm", opts.comm), func=check.regex("--func", opts.func),
                   cgroups=paths)


def _open_source(opts: TopOptions):
    from twtrace.top import sources

    if opts.replay is not None:
        return sources.ReplaySource(opts.replay, opts.speed)
    sources.check_live_targets(opts.pids, opts.tids)
    ids = cgroups.filter_ids(opts.cgroups)
    from twtrace.leftovers import remove_stale_probes

    remove_stale_probes()  # what killed runs left in kprobe_events
    return sources.LiveSource(opts.probe_mode, opts.pids, opts.tids, opts.comm, opts.func, ids)


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through every finally


def run(opts: TopOptions) -> int:
    filters = validate(opts)
    interactive = (opts.count is None and not opts.json
                   and sys.stdin.isatty() and sys.stdout.isatty())
    if interactive:
        from twtrace.top import app, render

        small = render.too_small(*app.terminal_size(sys.stdout.fileno()))
        if small:
            raise UserError(small)
    old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    source = None
    try:
        # Start-up (bcc's compile) is one long C call: this makes a signal
        # during it end top at once, not after it (twtrace/signals.py).
        guard = Stop()
        try:
            source = _open_source(opts)
        finally:
            guard.restore()
        state = TopState(source.meta, opts.interval, filters, baseline=source.baseline())
        if interactive:
            return app.run(state, source)
        return run_plain(state, source, opts)
    finally:
        if source is not None:
            source.close()
        signal.signal(signal.SIGTERM, old_term)


def run_plain(state: TopState, source, opts: TopOptions) -> int:
    from twtrace.top import plain

    # Under 80 columns in a pipe, as bcc tools are.
    to_pipe = not sys.stdout.isatty()
    console = Console(width=PLAIN_WIDTH if to_pipe else None, highlight=False)
    shown = 0
    as_json = plain.JsonLines()
    due = time.monotonic() + first_wait(state, source)
    try:
        while opts.count is None or shown < opts.count:
            time.sleep(max(0.0, due - time.monotonic()))
            # ticks are due an interval apart, start to start: the time a
            # tick takes is not added to every interval (as the screen does)
            due = time.monotonic() + source.pace(state.interval)
            sample = source.next(state.interval)
            if sample is not None:
                state.push(sample)
                if opts.json:
                    sys.stdout.write(as_json.text(state))
                    sys.stdout.flush()
                elif to_pipe:
                    sys.stdout.write(plain.frame_text(state, console.width))
                    sys.stdout.flush()
                else:
                    for line in plain.frame(state, console.width):
                        console.print(line, no_wrap=True, overflow="ellipsis")
                shown += 1
            if source.done:
                break
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `twtrace top | head`: the reader has had enough
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the exit-time flush cannot fail again
    return 0


def first_wait(state: TopState, source) -> float:
    """A replay shows its first snapshot at once; live, the first interval
    has to pass first (bcc tools do the same), or the rates would be over
    the few milliseconds since attaching."""
    return 0.0 if state.meta.replay is not None else source.pace(state.interval)

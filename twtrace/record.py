"""`twtrace record`: trace, and write the JSON Lines record (docs/format.md).

The file is written as FILE.partial and renamed to FILE only once its
summary line is written, so a FILE that exists is always complete.
"""
from __future__ import annotations

import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, TextIO

from twtrace import __version__
from twtrace.errors import UserError
from twtrace.session import Session

SCHEMA = 1


@dataclass
class RecordOptions:
    output: str
    duration: Optional[float] = None
    interval: Optional[float] = None
    events: bool = False
    pids: List[int] = field(default_factory=list)
    tids: List[int] = field(default_factory=list)
    comm: Optional[str] = None
    command: List[str] = field(default_factory=list)
    probe_mode: str = "auto"
    stacks: bool = False


def validate(opts: RecordOptions) -> None:
    """Everything that can be checked without root or bcc."""
    if opts.duration is not None and opts.duration <= 0:
        raise UserError("--duration must be a positive number of seconds")
    if opts.interval is not None and opts.interval <= 0:
        raise UserError("--interval must be a positive number of seconds")
    if opts.probe_mode not in ("auto", "kprobe", "fentry"):
        raise UserError(f"--probe-mode must be auto, kprobe or fentry, not {opts.probe_mode!r}")
    if opts.comm:
        try:
            re.compile(opts.comm)
        except re.error as e:
            raise UserError(f"--comm {opts.comm!r} is not a valid regular expression: {e}")
    for pid in opts.pids:
        if not Path(f"/proc/{pid}").is_dir():
            raise UserError(f"no process with pid {pid}")
    for tid in opts.tids:
        if not Path(f"/proc/{tid}/status").exists():
            raise UserError(f"no thread with tid {tid}")
    if opts.output != "-":
        parent = Path(opts.output).resolve().parent
        if not parent.is_dir():
            raise UserError(f"cannot write {opts.output}: no directory {parent}")
        if not os.access(parent, os.W_OK):
            raise UserError(f"cannot write {opts.output}: {parent} is not writable")
    if opts.command and (opts.pids or opts.tids):
        raise UserError("give either -p/-t or a command to run, not both")


class Output:
    """JSON lines to stdout, or to FILE via FILE.partial."""

    def __init__(self, target: str):
        self.target = target
        if target == "-":
            self.f: TextIO = sys.stdout
            self.partial = None
            return
        path = Path(target)
        if path.is_dir():
            raise UserError(f"cannot write {target}: it is a directory")
        self.partial = path.with_name(path.name + ".partial")
        try:
            self.f = open(self.partial, "w")
        except OSError as e:
            raise UserError(f"cannot write {target}: {e.strerror}")

    def write(self, obj: dict) -> None:
        self.f.write(json.dumps(obj, separators=(",", ":")) + "\n")

    def finish(self) -> None:
        self.f.flush()
        if self.partial:
            os.fsync(self.f.fileno())
            self.f.close()
            os.replace(self.partial, self.target)

    def abandon(self) -> None:
        if self.partial:
            self.f.close()
            self.partial.unlink(missing_ok=True)


class Stop:
    """SIGINT/SIGTERM end the recording cleanly instead of killing it."""

    def __init__(self):
        self.signal: Optional[int] = None
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self._handle)

    def _handle(self, signum, frame):
        self.signal = signum

    def __bool__(self) -> bool:
        return self.signal is not None


def _start_command(argv: List[str], to_stderr: bool):
    """Start the command held at a gate (a shell waiting on a pipe, which then
    execs it under the same pid), so it is traced from its first instruction."""
    r, w = os.pipe()
    gate = ["/bin/sh", "-c", f'read -r _ <&{r}; exec "$@"', "twtrace-gate", *argv]
    try:
        # With -o - the record owns stdout; the command's output goes to stderr.
        proc = subprocess.Popen(gate, pass_fds=(r,), stdout=sys.stderr if to_stderr else None)
    except OSError as e:
        raise UserError(f"cannot run {argv[0]}: {e.strerror}")
    os.close(r)
    return proc, w


def run(opts: RecordOptions) -> int:
    validate(opts)
    from twtrace.doctor import can_trace_reason

    reason = can_trace_reason()
    if reason:
        raise UserError(f"cannot trace this host: {reason} (details: twtrace doctor)", 1)
    from twtrace import model
    from twtrace.loader import Loader, TraceConfig

    out = Output(opts.output)
    stop = Stop()
    loader = None
    try:
        loader = Loader(TraceConfig(probe_mode=opts.probe_mode, events=opts.events,
                                    pids=list(opts.pids), tids=list(opts.tids),
                                    follow=bool(opts.command or opts.pids),
                                    stacks=opts.stacks))
        features = loader.start()
    except BaseException:
        out.abandon()
        if loader:
            loader.close()
        raise
    try:
        return _trace(opts, out, stop, loader, features, model)
    finally:
        loader.close()


DRAIN_S = 1.0  # the kernel holds at most this much activity between drains


def _trace(opts, out, stop, loader, features, model) -> int:
    fname = lambda a: loader.syms.name(a) or model.hexaddr(a)  # noqa: E731
    session = Session(loader, opts.comm)
    comm_re = re.compile(opts.comm) if opts.comm else None
    start_ns = loader.start_ns  # the window opened: nothing before it is counted
    out.write({
        "type": "header", "schema": SCHEMA, "twtrace": __version__,
        "kernel": platform.release(), "arch": platform.machine(),
        "hostname": socket.gethostname(), "probe_mode": features.probe_mode,
        "clock": "monotonic", "start_ns": start_ns, "events": opts.events,
        "interval_s": opts.interval,
        "filters": {"pids": opts.pids, "tids": opts.tids, "comm": opts.comm,
                    "command": opts.command or None},
        "features": {**features.as_dict(), "stacks": opts.stacks},
    })

    def on_event(ev):
        if comm_re and not comm_re.search(ev["comm"]):
            return
        if opts.stacks and ev["kind"] == "add":
            ev["stack"] = loader.stack(ev["stack_id"])
        out.write(model.event_line(ev, fname, loader.probed))

    loader.on_event(on_event)
    print(f"twtrace: tracing task_work ({features.probe_mode}; {features.probe_mode_reason}). "
          f"{'Ctrl-C to stop.' if not opts.command else ''}", file=sys.stderr)

    proc = gate = None
    if opts.command:
        with loader.spawning():
            proc, gate = _start_command(opts.command, opts.output == "-")
        loader.add_pid(proc.pid)  # already there: the fork tracepoint put it
        os.write(gate, b"go\n")
        os.close(gate)
    deadline = start_ns + opts.duration * 1e9 if opts.duration else None
    next_snap = start_ns + opts.interval * 1e9 if opts.interval else None
    next_drain = start_ns + DRAIN_S * 1e9
    seq, lost_seen, exit_status = 0, 0, None
    while not stop:
        loader.poll(100) if opts.events else time.sleep(0.1)
        now = time.monotonic_ns()
        if proc and proc.poll() is not None:
            break
        if deadline and now >= deadline:
            break
        if next_snap and now >= next_snap:
            lost_seen = _lost_line(out, loader, lost_seen, now)
            _snapshot(out, session, now, seq, False, opts.events)
            seq += 1
            next_snap = now + opts.interval * 1e9
            next_drain = now + DRAIN_S * 1e9
        elif now >= next_drain:  # keeps the kernel's maps small; finds new callbacks
            _drain(out, session, opts.events)
            next_drain = now + DRAIN_S * 1e9
    if proc:
        exit_status = _finish_command(proc, stop)
    for _ in range(3):  # drain what the buffers still hold
        loader.poll(20)
    now = time.monotonic_ns()
    _lost_line(out, loader, lost_seen, now)
    lines = _snapshot(out, session, now, seq, True, opts.events)
    tasks = [line for line in lines if line["type"] == "task"]
    funcs = [line for line in lines if line["type"] == "func"]
    out.write(model.summary_line(tasks, funcs, session.stats, now - start_ns, bool(stop),
                                 exit_status))
    out.finish()
    if exit_status is not None:
        return exit_status
    return 0


def _drain(out, session, events):
    batch_lines = session.read()
    if events:
        for line in batch_lines:
            out.write(line)


def _snapshot(out, session, now, seq, final, events):
    _drain(out, session, events)
    lines = session.lines(now, seq, final)
    for line in lines:
        out.write(line)
    return lines


def _lost_line(out, loader, seen, now) -> int:
    lost = loader.read_lost()
    if lost > seen:
        out.write({"type": "lost", "ts_ns": now, "count": lost - seen})
    return max(lost, seen)


def _finish_command(proc, stop) -> int:
    if stop and proc.poll() is None:
        # Ctrl-C reached the command through the terminal already; SIGTERM did not.
        if stop.signal == signal.SIGTERM:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    rc = proc.wait()
    return rc if rc >= 0 else 128 - rc

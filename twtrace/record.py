"""`twtrace record`: trace, and write the JSON Lines record (docs/format.md).

The file is written as FILE.partial and renamed to FILE only once its
summary line is written, so a FILE that exists is always complete
(twtrace/outfile.py has the rules for writing safely as root).
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

from twtrace import __version__, cgroups
from twtrace.errors import UserError
from twtrace.outfile import Output
from twtrace.session import Session
from twtrace.signals import Stop

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
    cgroups: List[str] = field(default_factory=list)  # --cgroup paths
    cgroup_ids: List[int] = field(default_factory=list)  # and descendants, by validate()
    nice: Optional[int] = None  # None: EVENTS_NICE with --events, else unchanged


# With --events, writing lines is most of record's work.  At this niceness a
# host whose CPUs are all busy keeps them for its own work, and the events
# that do not fit the buffer meanwhile are counted lost; an idle CPU still
# writes them all.
EVENTS_NICE = 19


def niceness(opts: "RecordOptions") -> int:
    if opts.nice is not None:
        return opts.nice
    return EVENTS_NICE if opts.events else 0


def validate(opts: RecordOptions) -> None:
    """Everything that can be checked without root or bcc."""
    from twtrace import validate as check

    check.seconds("--duration", opts.duration)
    check.seconds("--interval", opts.interval, low=check.MIN_INTERVAL)
    check.choice("--probe-mode", opts.probe_mode, check.PROBE_MODES)
    check.regex("--comm", opts.comm)
    check.count("--nice", opts.nice, low=-20, high=19)
    for pid in opts.pids:
        if not Path(f"/proc/{pid}").is_dir():
            raise UserError(f"no process with pid {pid}")
    for tid in opts.tids:
        if not Path(f"/proc/{tid}/status").exists():
            raise UserError(f"no thread with tid {tid}")
    from twtrace.outfile import plan

    plan(opts.output)  # one line now for a target that will be refused
    if opts.output != "-" and not opts.output.startswith("/dev/"):
        parent = Path(opts.output).resolve().parent
        if not os.access(parent, os.W_OK):
            raise UserError(f"cannot write {opts.output}: {parent} is not writable")
    if opts.command and (opts.pids or opts.tids):
        raise UserError("give either -p/-t or a command to run, not both")
    opts.cgroup_ids = cgroups.filter_ids(opts.cgroups)


def _start_command(argv: List[str], to_stderr: bool):
    """Start the command held at a gate (a shell waiting on a FIFO, which then
    execs it under the same pid), so it is traced from its first instruction.
    The shell opens the FIFO only for its `read`, so the command inherits no
    descriptor of twtrace's: its first free fd is 3."""
    from twtrace import gate

    try:
        # With -o - the record owns stdout; the command's output goes to stderr.
        return gate.start(argv, stdout=sys.stderr if to_stderr else None)
    except OSError as e:
        raise UserError(f"cannot run {argv[0]}: {e.strerror}")


def run(opts: RecordOptions) -> int:
    validate(opts)
    # Before anything slow: a signal during start-up leaves nothing behind.
    stop = Stop()
    from twtrace.doctor import can_trace_reason

    reason = can_trace_reason()
    if reason:
        raise UserError(f"cannot trace this host: {reason} (details: twtrace doctor)", 1)
    from twtrace import model
    from twtrace.loader import Loader, TraceConfig

    from twtrace.leftovers import remove_stale_probes

    out = loader = None
    try:
        remove_stale_probes()  # what killed runs left in kprobe_events
        out = Output(opts.output)
        stop.on_abort = out.abandon
        loader = Loader(TraceConfig(probe_mode=opts.probe_mode, events=opts.events,
                                    pids=list(opts.pids), tids=list(opts.tids),
                                    follow=bool(opts.command or opts.pids),
                                    stacks=opts.stacks, cgroups=opts.cgroup_ids))
        features = loader.start()
        stop.running()
    except BaseException:
        if out:
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
    # With --interval, a task that exited is written in the snapshot after
    # its exit and then let go (folded into the per-function totals): hours
    # on a host that forks all day cost what the live tasks cost.
    session = Session(loader, opts.comm, keep_exited=not opts.interval)
    comm_re = re.compile(opts.comm) if opts.comm else None
    start_ns = loader.start_ns  # the window opened: nothing before it is counted
    out.write({
        "type": "header", "schema": SCHEMA, "twtrace": __version__,
        "kernel": platform.release(), "arch": platform.machine(),
        "hostname": socket.gethostname(), "probe_mode": features.probe_mode,
        "clock": "monotonic", "start_ns": start_ns, "events": opts.events,
        "interval_s": opts.interval, "nice": niceness(opts),
        "filters": {"pids": opts.pids, "tids": opts.tids, "comm": opts.comm,
                    "command": opts.command or None, "cgroups": opts.cgroups},
        "features": {**features.as_dict(), "stacks": opts.stacks},
    })

    from twtrace.eventtext import EventText
    from twtrace.loader import EV_KINDS

    text = EventText(fname, session.cgroups.path)

    def on_event(ev):
        if comm_re and not comm_re.search(ev["comm"]):
            return
        if opts.stacks and ev["kind"] == "add":
            ev["stack"] = loader.stack(ev["stack_id"])
            out.write(model.event_line(ev, fname, loader.probed, session.cgroups.path))
        else:
            out.write_text(text(ev))

    if comm_re or opts.stacks:
        loader.on_event(on_event)
    else:  # nearly every recording: no filter or stack between the kernel and the text
        def sink_for(dec):
            line = text.from_tuples(dec.names, EV_KINDS, dec.from_tuple)
            write = out.write_text
            return lambda t: write(line(t))

        loader.on_tuples(sink_for)
    print(f"twtrace: tracing task_work ({features.probe_mode}; {features.probe_mode_reason}). "
          f"{'Ctrl-C to stop.' if not opts.command else ''}", file=sys.stderr)

    proc = gate = None
    if opts.command:
        with loader.spawning():
            proc, gate = _start_command(opts.command, opts.output == "-")
        loader.add_pid(proc.pid)  # already there: the fork tracepoint put it
        os.write(gate, b"go\n")
        os.close(gate)
    _renice(niceness(opts))  # after the command started: it keeps the niceness it had
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
            _snapshot(out, session, now, seq, False, opts.events, changed_only=True)
            seq += 1
            next_snap = now + opts.interval * 1e9
            next_drain = now + DRAIN_S * 1e9
        elif now >= next_drain:  # keeps the kernel's maps small; finds new callbacks
            _drain(out, session, opts.events, snapshot=False)
            next_drain = now + DRAIN_S * 1e9
    if proc:
        exit_status = _finish_command(proc, stop)
    now = loader.close_window()  # the aggregates and the events end at one instant
    loader.drain_events()  # everything counted is written
    _lost_line(out, loader, lost_seen, now)
    lines = _snapshot(out, session, now, seq, True, opts.events)
    tasks = [line for line in lines if line["type"] == "task"]
    funcs = [line for line in lines if line["type"] == "func"]
    summary = model.summary_line(tasks, funcs, session.stats, now - start_ns, bool(stop),
                                 exit_status)
    summary["tasks"] += session.totals.gone_tasks  # those written and let go
    summary["closed_ns"] = loader.closed_ns  # everything before it was counted
    summary["window_late_ns"] = loader.window.late_ns
    if loader.window.late_ns:
        print(f"twtrace: warning: the host stalled twtrace while it moved the counting window; "
              f"counts within {loader.window.late_ns / 1e6:.1f} ms after start_ns or closed_ns "
              f"may be incomplete", file=sys.stderr)
    out.write(summary)
    out.finish()
    warning = lost_warning(summary["lost_events"], niceness(opts))
    if warning:
        print(warning, file=sys.stderr)
    if exit_status is not None:
        return exit_status
    return 0


def lost_warning(lost: int, nice: int) -> Optional[str]:
    """What record says at its end when events did not fit the buffer."""
    if not lost:
        return None
    why = (f"; record ran at niceness {nice} (--nice 0 competes with the workload for busy CPUs)"
           if nice > 0 else "")
    return (f"twtrace: warning: {lost} events did not fit the event buffer and are missing "
            f"from the file (counted in its lost lines and summary){why}")


def _renice(nice: int) -> None:
    """This thread's niceness (Linux: per thread; the signal watcher keeps its
    own).  Map reads still run at real-time priority (Loader.reading)."""
    if nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError as e:
            print(f"twtrace: warning: cannot set niceness {nice}: {e.strerror}", file=sys.stderr)


def _drain(out, session, events, snapshot=True):
    batch_lines = session.read(skipped=snapshot)
    if events:
        for line in batch_lines:
            out.write(line)


def _snapshot(out, session, now, seq, final, events, changed_only=False):
    _drain(out, session, events)
    lines = session.lines(now, seq, final, changed_only)
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

"""Where snapshot groups come from: the kernel (LiveSource) or a recording
(ReplaySource).  Both have the same surface:

    meta            Meta: host, kernel, probe mode, start of tracing
    baseline()      the Sample rates of the first interval are taken against
    next(interval)  the Sample for the tick just due, or None if none is new
    pace(interval)  seconds the caller waits between ticks
    done            no more samples will come (a replay has ended)
    close()
"""
from __future__ import annotations

import json
import os
import platform
import re
import socket
import time
from typing import Callable, Dict, List, Optional

from twtrace.errors import UserError
from twtrace.session import Session
from twtrace.totals import narrowed
from twtrace.top.sample import Meta, Sample


class ReplaySource:
    """A recording's snapshot groups, at recorded pace times speed.

    A tick of `interval` wall seconds moves the replay clock by
    interval × speed and shows the newest snapshot it has passed, so rates
    are over the same window as live (a snapshot up to half a recorded
    interval ahead counts, so the recorder's jitter does not make the
    replay skip or stall on one).  speed 0 shows
    every snapshot in turn, without waiting.  The first tick shows the
    first snapshot, so a recording with a single final snapshot shows at
    once."""

    def __init__(self, path: str, speed: float = 1.0):
        from twtrace.recordfile import RecordError, read_record

        try:
            rec = read_record(path, keep_events=False)
        except RecordError as e:  # read_record wraps these already; be sure
            raise UserError(str(e))
        if not rec.snapshots:
            raise UserError(f"{path}: no snapshot in this recording; nothing to show")
        h, s = rec.header, rec.summary
        self.meta = Meta(hostname=h["hostname"], kernel=h["kernel"], arch=h["arch"],
                         probe_mode=h["probe_mode"], start_ns=h["start_ns"],
                         replay=str(path), speed=speed)
        lost = [snap.lost for snap in rec.snapshots]
        self.samples: List[Sample] = []
        for i, snap in enumerate(rec.snapshots):
            line = {"type": "snapshot", "ts_ns": snap.ts_ns, "seq": snap.seq, "final": snap.final}
            last = i == len(rec.snapshots) - 1
            self.samples.append(Sample(
                line, snap.tasks, snap.funcs,
                lost=max(lost[i] if i < len(lost) else 0,
                         s["lost_events"] if last else 0),
                evicted=s["evicted"] if last else None,
                skipped=s.get("skipped_runs") if last else snap.skipped))
        self.speed = speed
        self.pos = -1
        self.clock: Optional[int] = None

    def baseline(self) -> Sample:
        return Sample({"type": "snapshot", "ts_ns": self.meta.start_ns, "seq": -1,
                       "final": False}, lost=0)

    @property
    def done(self) -> bool:
        return self.pos >= len(self.samples) - 1

    def pace(self, interval: float) -> float:
        return interval if self.speed > 0 else 0.0

    def next(self, interval: float) -> Optional[Sample]:
        if self.done:
            return None
        if self.clock is None or self.speed <= 0:
            self.pos += 1
            self.clock = self.samples[self.pos].ts_ns
            return self.samples[self.pos]
        step = interval * self.speed * 1e9
        self.clock += int(step)
        due = self.pos
        while due + 1 < len(self.samples) and self._passed(due + 1):
            due += 1
        if due == self.pos:
            return None
        self.pos = due
        return self.samples[due]

    def _passed(self, i: int) -> bool:
        # Half a recorded interval of slack absorbs the recorder's jitter.
        slack = (self.samples[i].ts_ns - self.samples[i - 1].ts_ns) / 2 if i else 0
        return self.samples[i].ts_ns <= self.clock + slack

    def close(self) -> None:
        pass




def bpf_stats(loader) -> Optional[Dict[str, int]]:
    """The loader's cumulative BPF run time, when it offers it."""
    fn = getattr(loader, "bpf_stats", None)
    if fn is None:
        return None
    try:
        return fn()
    except Exception:  # the cost line is a nicety; never stop tracing for it
        return None


class LiveSource:
    """The kernel's in-kernel aggregates, read once per tick: the cost is a
    map read per interval, not per event (no event stream is opened)."""

    def __init__(self, probe_mode: str = "auto", pids=(), tids=(), comm: Optional[str] = None,
                 func: Optional[str] = None, cgroups=()):
        from twtrace.doctor import can_trace_reason

        reason = can_trace_reason()
        if reason:
            raise UserError(f"cannot trace this host: {reason} (details: twtrace doctor)", 1)
        from twtrace import model
        from twtrace.loader import Loader, TraceConfig

        self.model = model
        self.loader = Loader(TraceConfig(probe_mode=probe_mode, events=False, pids=list(pids),
                                         tids=list(tids), follow=bool(pids),
                                         cgroups=list(cgroups),
                                         bpf_stats=True))
        try:
            features = self.loader.start()
        except BaseException:
            self.loader.close()
            raise
        self.start_ns = self.loader.start_ns
        # Exited tasks are folded away after an interval: top's memory and
        # per-tick work follow the live tasks, not every task ever seen.
        self.session = Session(self.loader, comm, keep_exited=False)
        self.snap = self.session.snap
        self.func_re = re.compile(func) if func else None
        self.meta = Meta(hostname=socket.gethostname(), kernel=platform.release(),
                         arch=platform.machine(), probe_mode=features.probe_mode,
                         start_ns=self.start_ns)
        self.seq = 0
        self.done = False
        self._base = Sample({"type": "snapshot", "ts_ns": self.start_ns, "seq": -1,
                             "final": False}, lost=0, evicted=0,
                            bpf=bpf_stats(self.loader), cpu_s=time.process_time())

    def baseline(self) -> Sample:
        return self._base

    def pace(self, interval: float) -> float:
        return interval

    def _wanted(self, addr: int) -> bool:
        return bool(self.func_re.search(self.snap.fname(addr)))

    def next(self, interval: float) -> Sample:
        self.session.read()
        now = time.monotonic_ns()
        tot = self.session.totals.view()
        if self.func_re is not None:
            tot = narrowed(tot, self._wanted)
        fresh = self.session.totals.take_touched()  # top lists every task each time
        lines = self.snap.lines(tot, self.session.stats, now, self.seq, False, fresh=fresh)
        lines[0]["read_ns"] = self.session.read_ns
        self.session.totals.fold_shown()  # exited tasks were shown once
        self.seq += 1
        return Sample(lines[0], [x for x in lines if x["type"] == "task"],
                      [x for x in lines if x["type"] == "func"],
                      lost=self.session.stats.get("lost"), evicted=lines[0]["evicted"],
                      skipped=lines[0]["skipped_runs"],
                      bpf=bpf_stats(self.loader), cpu_s=time.process_time())

    def close(self) -> None:
        self.loader.close()


def check_live_targets(pids, tids) -> None:
    """As record does: a pid or tid that does not exist is a typo."""
    for pid in pids:
        if not os.path.isdir(f"/proc/{pid}"):
            raise UserError(f"no process with pid {pid}")
    for tid in tids:
        if not os.path.exists(f"/proc/{tid}/status"):
            raise UserError(f"no thread with tid {tid}")

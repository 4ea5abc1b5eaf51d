"""twtrace's samples as Prometheus metric families (pure: no kernel, no HTTP).

A source hands cumulative snapshot groups (twtrace/top/sample.py).  Every
counter here is built by adding up each row's growth between consecutive
samples (twtrace.top.metrics.delta: a row that went down was restarted and
counts whole), never by copying a cumulative value.  So a counter can only
go up, even when a task exits and leaves the task lines, when a kernel map
entry is evicted and re-created, or when a task name moves into "other";
and memory is bounded by the rows of the latest sample, not by every task
that ever existed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

from twtrace.hist import Histogram
from twtrace.serve.buckets import cumulative
from twtrace.top.metrics import COUNTERS, delta
from twtrace.top.sample import Meta, Sample

OTHER = "other"
NS = 1e9
Line = Mapping


@dataclass
class Latency:
    """A histogram accumulated from interval growth: twtrace bucket index ->
    count, and the exact sum in ns."""

    counts: Dict[int, int] = field(default_factory=dict)
    sum_ns: int = 0

    def grow(self, cur: Optional[Line], prev: Optional[Line]) -> None:
        now = Histogram.from_pairs((cur or {}).get("hist") or []).counts
        before = Histogram.from_pairs((prev or {}).get("hist") or []).counts
        restarted = any(now.get(i, 0) < n for i, n in before.items())
        if restarted:
            before = {}
        for idx, n in now.items():
            grown = n - before.get(idx, 0)
            if grown:
                self.counts[idx] = self.counts.get(idx, 0) + grown
        self.sum_ns += (cur or {}).get("sum", 0) if restarted else \
            delta((cur or {}).get("sum"), (prev or {}).get("sum"))

    @property
    def count(self) -> int:
        return sum(self.counts.values())


@dataclass
class Totals:
    counters: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    queue: Latency = field(default_factory=Latency)
    run: Latency = field(default_factory=Latency)

    def grow(self, cur: Line, prev: Optional[Line]) -> None:
        for k in COUNTERS:
            self.counters[k] += delta(cur.get(k), (prev or {}).get(k))
        self.queue.grow(cur.get("queue_ns"), (prev or {}).get("queue_ns"))
        self.run.grow(cur.get("run_ns"), (prev or {}).get("run_ns"))


def task_key(line: Line) -> Tuple[int, int, str]:
    # The comm is part of the key: a recycled tid is another task.
    return line["tid"], line["pid"], line["comm"]


def interval_max_depth(cur: Line, prev: Optional[Line]) -> int:
    """The largest depth a task reached between two samples, as far as
    cumulative lines tell: exact when its all-time max_depth rose in the
    interval (or restarted); otherwise the larger of its depths at the two
    ends, a lower bound (the queue may have risen and fallen in between
    without beating the old record)."""
    if prev is None or cur["max_depth"] != prev["max_depth"]:
        return cur["max_depth"]
    return max(cur["depth"], prev["depth"])


class CommLabels:
    """At most n task names get a label of their own; the rest are "other".

    A name keeps its label for the life of the process once given: if names
    could move back into "other", that series would take their counts and
    then lose them again, which Prometheus reads as a counter reset.  Free
    labels go to the names that queued the most work in the interval they
    were first busy in."""

    def __init__(self, n: int):
        self.n = n
        self.named: List[str] = []

    def assign(self, adds_by_comm: Mapping[str, int]) -> None:
        for comm, adds in sorted(adds_by_comm.items(), key=lambda kv: (-kv[1], kv[0])):
            if len(self.named) >= self.n:
                return
            if adds > 0 and comm not in self.named and comm != OTHER:
                self.named.append(comm)

    def group(self, comm: str) -> str:
        return comm if comm in self.named else OTHER


class Aggregator:
    """Running totals over every sample pushed; families() builds the
    exposition at scrape time from them."""

    def __init__(self, meta: Meta, version: str, label_comm: int = 0):
        self.meta = meta
        self.version = version
        self.comms = CommLabels(label_comm) if label_comm > 0 else None
        self.funcs: Dict[str, Totals] = {}
        self.groups: Dict[str, Totals] = {}
        self.prev_funcs: Dict[str, Line] = {}
        self.prev_tasks: Dict[Tuple, Line] = {}
        self.prev: Optional[Sample] = None
        self.scalars: Dict[str, float] = dict.fromkeys(
            ("lost", "bpf_run_ns", "bpf_runs", "cpu_s", "self_adds"), 0)
        self.map_full: Dict[str, int] = {}
        self.skipped: Optional[int] = None  # None until the kernel is seen counting them
        self.depth_window: Dict[Optional[str], int] = {}  # since the last scrape
        self.depth_last: Dict[Optional[str], int] = {}  # the latest interval's
        self.queued: Dict[Optional[str], int] = {}

    # -- samples in ---------------------------------------------------------
    def push(self, sample: Sample) -> None:
        for line in sample.funcs:
            self.funcs.setdefault(line["func"], Totals()).grow(
                line, self.prev_funcs.get(line["func"]))
        # Functions are few and never retired: remembering every one keeps a
        # function that skips a sample from counting its whole total again.
        self.prev_funcs.update((line["func"], line) for line in sample.funcs)
        self._push_tasks(sample.tasks)
        self._push_scalars(sample)
        self.prev = sample

    def _group(self, comm: str) -> Optional[str]:
        return None if self.comms is None else self.comms.group(comm)

    def _push_tasks(self, tasks: List[Line]) -> None:
        if self.comms is not None:
            adds: Dict[str, int] = {}
            for line in tasks:
                grown = delta(line["adds"], self.prev_tasks.get(task_key(line), {}).get("adds"))
                adds[line["comm"]] = adds.get(line["comm"], 0) + grown
            self.comms.assign(adds)
        interval: Dict[Optional[str], int] = {}
        queued: Dict[Optional[str], int] = {}
        for line in tasks:
            prev = self.prev_tasks.get(task_key(line))
            group = self._group(line["comm"])
            if self.comms is not None:
                self.groups.setdefault(group, Totals()).grow(line, prev)
            interval[group] = max(interval.get(group, 0), interval_max_depth(line, prev))
            queued[group] = queued.get(group, 0) + line["depth"]
        # Only the latest sample's tasks are remembered: a task missing from a
        # sample has been retired by the source (its counts are in the totals).
        self.prev_tasks = {task_key(line): line for line in tasks}
        self.depth_last = interval
        for group, d in interval.items():
            self.depth_window[group] = max(self.depth_window.get(group, 0), d)
        self.queued = queued

    def _push_scalars(self, sample: Sample) -> None:
        prev = self.prev or Sample({})
        self.scalars["lost"] += delta(sample.lost, prev.lost)
        self.scalars["self_adds"] += delta(sample.snapshot.get("self_adds"),
                                           prev.snapshot.get("self_adds"))
        if sample.skipped is not None:
            self.skipped = (self.skipped or 0) + delta(sample.skipped, prev.skipped)
        if sample.bpf is not None:
            pb = prev.bpf or {}
            self.scalars["bpf_run_ns"] += delta(sample.bpf.get("run_time_ns"), pb.get("run_time_ns"))
            self.scalars["bpf_runs"] += delta(sample.bpf.get("run_cnt"), pb.get("run_cnt"))
        if sample.cpu_s is not None:
            self.scalars["cpu_s"] += max(0.0, sample.cpu_s - (prev.cpu_s or 0.0))
        for name, (cur, before) in _map_full(sample, prev).items():
            self.map_full[name] = self.map_full.get(name, 0) + delta(cur, before)

    # -- scrape out -----------------------------------------------------------
    def take_depth_max(self) -> Dict[Optional[str], int]:
        """Largest depth per group since the previous call (the previous
        scrape), or the latest interval's when no sample came in between."""
        out = self.depth_window or dict(self.depth_last)
        self.depth_window = {}
        return out


def _map_full(sample: Sample, prev: Sample) -> Dict[str, Tuple[Optional[int], Optional[int]]]:
    """map name -> (now, before) of "entries that did not fit" counts: per
    map from the snapshot's "full" object when the source has it, else its
    one total as map "all"."""
    def per_map(s: Sample) -> Dict[str, int]:
        full = (s.snapshot or {}).get("full")
        if isinstance(full, dict):  # the snapshot line's per-map counts (format.md)
            return dict(full)
        ev = s.evicted
        if isinstance(ev, dict):
            return dict(ev)
        return {} if ev is None else {"all": ev}

    now, before = per_map(sample), per_map(prev)
    return {k: (v, before.get(k)) for k, v in now.items()}


def seconds(ns: float) -> float:
    return ns / NS


def histogram_buckets(lat: Latency) -> Tuple[List[Tuple[str, int]], float]:
    return cumulative(lat.counts), seconds(lat.sum_ns)


def label_rows(items: Iterable[Tuple[str, Totals]]) -> List[Tuple[str, Totals]]:
    return sorted(items, key=lambda kv: kv[0])

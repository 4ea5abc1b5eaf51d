"""The view's maths, as plain functions of record lines.

Snapshot counters are cumulative since tracing began, so everything shown
"per interval" is the difference of two snapshots.  A counter that went
down was restarted (the kernel map entry was evicted and re-created); the
new value is then the whole interval's count.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from twtrace.hist import Histogram, bucket_value

Line = Mapping[str, Any]
COUNTERS = ("adds", "failed_adds", "cancels", "callbacks")


def delta(cur: Optional[int], prev: Optional[int]) -> int:
    """Growth of a cumulative counter between two snapshots."""
    cur = cur or 0
    prev = prev or 0
    return cur - prev if cur >= prev else cur


def per_second(count: float, dt_ns: int) -> Optional[float]:
    """count over dt_ns as a rate per second; None when dt_ns is not positive."""
    if dt_ns <= 0:
        return None
    return count * 1e9 / dt_ns


def counter_deltas(cur: Line, prev: Optional[Line]) -> Dict[str, int]:
    """Interval growth of adds, failed_adds, cancels, callbacks of one row."""
    if cur is prev:  # the line of a task that did not change (Snapshotter's cache)
        return dict.fromkeys(COUNTERS, 0)
    prev = prev or {}
    return {k: delta(cur.get(k), prev.get(k)) for k in COUNTERS}


def is_active(deltas: Mapping[str, int], line: Line) -> bool:
    """Something happened in the interval, or items are still queued (a stuck
    queue is exactly what the view must keep showing)."""
    return any(deltas.values()) or bool(line.get("depth"))


def percent(part_ns: float, whole_ns: int) -> Optional[float]:
    """part as a percentage of whole (wall time); None when whole is 0."""
    if whole_ns <= 0:
        return None
    return 100.0 * part_ns / whole_ns


def self_adds_s(cur: Line, prev: Line, dt_ns: int) -> Optional[float]:
    """Items twtrace queued on itself per second (its own closes, not shown
    in the view); None for recordings made before they were counted."""
    if cur.get("self_adds") is None:
        return None
    return per_second(delta(cur["self_adds"], prev.get("self_adds")), dt_ns)


def bpf_cost_pct(cur: Optional[Mapping[str, int]], prev: Optional[Mapping[str, int]],
                 dt_ns: int) -> Optional[float]:
    """BPF run time in the interval as % of one CPU, like bpftop: the
    kernel's run_time_ns summed over twtrace's programs (over 100 % means
    more than one CPU's worth)."""
    if cur is None or prev is None:
        return None
    return percent(delta(cur.get("run_time_ns"), prev.get("run_time_ns")), dt_ns)


def cpu_pct(cur_s: Optional[float], prev_s: Optional[float], dt_ns: int) -> Optional[float]:
    """twtrace's own process CPU in the interval as % of one CPU."""
    if cur_s is None or prev_s is None:
        return None
    return percent(max(0.0, cur_s - prev_s) * 1e9, dt_ns)


def _hist(lat: Optional[Line]) -> Histogram:
    return Histogram.from_pairs((lat or {}).get("hist") or [])


def interval_latency(cur: Line, prev: Optional[Line]) -> Dict[str, Any]:
    """The latency object (record format) of the samples that arrived between
    two snapshots, from the difference of their histograms.  max is exact
    when the cumulative max grew in the interval; otherwise it is the
    midpoint of the highest bucket hit (capped by the cumulative max), as
    exact as the percentiles are."""
    if prev and cur.get("count") == prev.get("count") and cur.get("hist") == prev.get("hist"):
        return Histogram().summary()  # nothing new: what the difference below comes to
    h = _hist(cur)
    if prev:
        before = _hist(prev)
        if before.count > h.count:  # restarted counter: cur is all new
            before = Histogram()
        for idx, n in before.counts.items():
            left = h.counts.get(idx, 0) - n
            if left > 0:
                h.counts[idx] = left
            else:
                h.counts.pop(idx, None)
    if not h.count:
        return Histogram().summary()
    cur_max = cur.get("max")
    prev_max = (prev or {}).get("max")
    if cur_max is not None and (prev_max is None or cur_max > prev_max):
        max_ns = cur_max
    else:
        top = bucket_value(max(h.counts))
        max_ns = min(top, cur_max) if cur_max is not None else top
    sum_ns = delta(cur.get("sum"), (prev or {}).get("sum")) if prev else cur.get("sum")
    return h.summary(max_ns=max_ns, sum_ns=sum_ns)


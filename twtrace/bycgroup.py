"""Per-cgroup totals from task lines (record format), for `top`'s cgroup
view and `report`'s cgroup table.  A task counts in the cgroup it was in
when last seen.  Pure."""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional

from twtrace.cgroups import short_name
from twtrace.hist import Histogram

COUNTS = ("adds", "failed_adds", "cancels", "callbacks")
UNKNOWN = "?"  # task lines without a cgroup (older recordings)


def cgroup_of(line: Mapping[str, Any]) -> str:
    return line.get("cgroup") or UNKNOWN


def merge_latency(lats: Iterable[Optional[Mapping[str, Any]]]) -> Dict[str, Any]:
    """One latency object of several: histograms and sums added, the
    greatest max kept, percentiles taken anew."""
    h, total, top = Histogram(), 0, 0
    for lat in lats:
        if not lat or not lat.get("count"):
            continue
        h.merge(Histogram.from_pairs(lat["hist"]))
        total += lat.get("sum") or 0
        top = max(top, lat.get("max") or 0)
    if not h.count:
        return Histogram().summary()
    return h.summary(max_ns=top, sum_ns=total)


def summarize(cgroup: str, tasks: List[Mapping[str, Any]]) -> Dict[str, Any]:
    return {"cgroup": cgroup, "name": short_name(cgroup) if cgroup != UNKNOWN else UNKNOWN,
            "tasks": len(tasks), **{k: sum(t.get(k, 0) for t in tasks) for k in COUNTS},
            "depth": sum(t.get("depth", 0) for t in tasks),
            "max_depth": max((t.get("max_depth", 0) for t in tasks), default=0),
            "queue_ns": merge_latency(t.get("queue_ns") for t in tasks),
            "run_ns": merge_latency(t.get("run_ns") for t in tasks)}


def group(task_lines: Iterable[Mapping[str, Any]]) -> Dict[str, List[Mapping[str, Any]]]:
    out: Dict[str, List[Mapping[str, Any]]] = {}
    for t in task_lines:
        out.setdefault(cgroup_of(t), []).append(t)
    return out


def aggregate(task_lines: Iterable[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """One summary per cgroup, most adds first."""
    rows = [summarize(cg, ts) for cg, ts in group(task_lines).items()]
    return sorted(rows, key=lambda r: (-r["adds"], r["cgroup"]))

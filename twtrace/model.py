"""The pure model: turns what the loader read from the kernel into the
record format's lines (docs/format.md). No bcc, no terminal: unit-tested
without root.

`raw` is the loader's read(): tasks {tid: {...}}, aggs {(tid, func): {...}},
hists {(tid, func, kind): {bucket: count}}, pairs {(adder_pid, tid, func):
{...}}, stats {...}. `name(addr)` resolves a callback address to a symbol.
"""
from __future__ import annotations

import re
from typing import Callable, Dict, Iterable, List, Optional

from twtrace.hist import Histogram

NOTIFY_NAMES = {0: "none", 1: "resume", 2: "signal", 3: "signal_no_ipi", 4: "nmi_current"}
QUEUE, RUN = 0, 1
CB_MATCHED, CB_UNTIMED = 1, 2  # callback event flags (bpf/twtrace.h)
TOP_ADDERS = 5
TOP_STACKS = 5


def notify_name(raw: int) -> str:
    # 6.12 ORs flag bits (TWAF_NO_ALLOC = 0x100) into the mode.
    mode = raw & 0xFF
    return NOTIFY_NAMES.get(mode, f"unknown({mode})")


def hexaddr(v: int) -> str:
    return f"0x{v:x}"


def _latency(hist: Histogram, max_ns: int, sum_ns: int) -> dict:
    return hist.summary(max_ns=max_ns if hist.count else None, sum_ns=sum_ns)


class Snapshotter:
    """Builds snapshot/task/func lines from raw kernel state."""

    def __init__(self, name: Callable[[int], Optional[str]], probed: Callable[[int], bool],
                 comm: Optional[str] = None,
                 stack: Optional[Callable[[int], Optional[List[str]]]] = None):
        self.name = name
        self.probed = probed
        self.stack = stack  # stack id -> frames, with --stacks
        self.comm_re = re.compile(comm) if comm else None

    def fname(self, addr: int) -> str:
        return self.name(addr) or hexaddr(addr)

    def _task_wanted(self, comm: str) -> bool:
        return self.comm_re is None or bool(self.comm_re.search(comm))

    def lines(self, raw: dict, ts_ns: int, seq: int, final: bool) -> List[dict]:
        tasks = raw["tasks"]
        keep = {tid for tid, t in tasks.items() if self._task_wanted(t["comm"])}
        aggs = {k: v for k, v in raw["aggs"].items() if k[0] in keep}
        hists = {k: Histogram(v) for k, v in raw["hists"].items() if k[0] in keep}
        st = raw.get("stats", {})
        out = [{"type": "snapshot", "ts_ns": ts_ns, "seq": seq, "final": final,
                "lost_events": st.get("lost", 0), "evicted": st.get("evicted", 0)}]
        out += self._task_lines(tasks, keep, aggs, hists)
        funcs = self._func_lines(tasks, aggs, hists, raw["pairs"], keep)
        if "stacks" in raw and self.stack is not None:
            for line, func in zip(funcs, sorted({f for _, f in aggs}, key=self.fname)):
                line["stacks"] = top_stacks(raw["stacks"], func, self.stack)
        return out + funcs

    def _task_lines(self, tasks, keep, aggs, hists) -> List[dict]:
        by_tid: Dict[int, List[tuple]] = {}
        for (tid, func), a in aggs.items():
            by_tid.setdefault(tid, []).append((func, a))
        rows = []
        for tid in sorted(keep):
            t = tasks[tid]
            parts = by_tid.get(tid, [])
            q, r = Histogram(), Histogram()
            for func, _ in parts:
                q.merge(hists.get((tid, func, QUEUE), Histogram()))
                r.merge(hists.get((tid, func, RUN), Histogram()))
            busiest = max(parts, key=lambda p: (p[1]["callbacks"], p[1]["adds"]), default=None)
            rows.append({
                "type": "task", "tid": tid, "pid": t["pid"], "comm": t["comm"],
                **_sums(a for _, a in parts),
                "runs": t["runs"], "depth": max(0, t["depth"]), "max_depth": t["max_depth"],
                "queue_ns": _latency(q, max((a["queue_max"] for _, a in parts), default=0),
                                     sum(a["queue_sum"] for _, a in parts)),
                "run_ns": _latency(r, max((a["run_max"] for _, a in parts), default=0),
                                   sum(a["run_sum"] for _, a in parts)),
                "busiest": self.fname(busiest[0]) if busiest else None,
            })
        return rows

    def _func_lines(self, tasks, aggs, hists, pairs, keep) -> List[dict]:
        by_func: Dict[int, List[tuple]] = {}
        for (tid, func), a in aggs.items():
            by_func.setdefault(func, []).append((tid, a))
        rows = []
        for func in sorted(by_func, key=self.fname):
            parts = by_func[func]
            q, r = Histogram(), Histogram()
            for tid, _ in parts:
                q.merge(hists.get((tid, func, QUEUE), Histogram()))
                r.merge(hists.get((tid, func, RUN), Histogram()))
            adders = sorted(((k, v) for k, v in pairs.items() if k[2] == func and k[1] in keep),
                            key=lambda kv: -kv[1]["adds"])[:TOP_ADDERS]
            rows.append({
                "type": "func", "func": self.fname(func), **_sums(a for _, a in parts),
                "queue_ns": _latency(q, max(a["queue_max"] for _, a in parts),
                                     sum(a["queue_sum"] for _, a in parts)),
                "run_ns": _latency(r, max(a["run_max"] for _, a in parts),
                                   sum(a["run_sum"] for _, a in parts)),
                "probed": self.probed(func),
                "notify": [notify_name(m) for m in range(32)
                           if any(a["notify_mask"] >> m & 1 for _, a in parts)],
                "adders": [{"adder_pid": k[0], "adder_comm": v["adder_comm"], "tid": k[1],
                            "comm": tasks.get(k[1], {}).get("comm", "?"), "adds": v["adds"]}
                           for k, v in adders],
            })
        return rows


def top_stacks(counts: Dict[tuple, int], func: int,
               frames: Callable[[int], Optional[List[str]]], n: int = TOP_STACKS) -> List[dict]:
    """The adder stacks that queued func most, as {"adds", "stack"}; adds
    whose stack was not recorded (map full) are grouped under a null stack.
    Counted over all adders: stacks are a property of the code path."""
    by_stack: Dict[Optional[tuple], int] = {}
    for (f, sid), count in counts.items():
        if f != func:
            continue
        st = frames(sid) if sid >= 0 else None
        key = tuple(st) if st else None
        by_stack[key] = by_stack.get(key, 0) + count
    ranked = sorted(by_stack.items(), key=lambda kv: (-kv[1], kv[0] is None))[:n]
    return [{"adds": c, "stack": list(s) if s else None} for s, c in ranked]


def _sums(aggs: Iterable[dict]) -> dict:
    s = {"adds": 0, "failed_adds": 0, "cancels": 0, "callbacks": 0}
    for a in aggs:
        for k in s:
            s[k] += a[k]
    return s


def summary_line(task_lines: List[dict], stats: dict, duration_ns: int, interrupted: bool,
                 exit_status: Optional[int]) -> dict:
    s = _sums(t for t in task_lines if t["type"] == "task")
    return {"type": "summary", "duration_ns": duration_ns, "items": s["adds"] - s["failed_adds"],
            **s, "lost_events": stats["lost"], "evicted": stats["evicted"],
            "unmatched": stats["unmatched"], "untimed": stats.get("untimed", 0),
            "skipped_runs": stats.get("skipped"), "recovered": stats.get("recovered", 0),
            "interrupted": interrupted,
            "exit_status": exit_status, "complete": True}


def event_line(ev: dict, fname: Callable[[int], str], probed: Callable[[int], bool]) -> dict:
    """One kernel event as a record line."""
    kind = ev["kind"]
    base = {"type": kind, "ts_ns": ev["ts"]}
    if kind == "add":
        line = {**base, "work": hexaddr(ev["work"]), "func": fname(ev["func"]),
                "tid": ev["tid"], "pid": ev["pid"], "comm": ev["comm"],
                "adder_tid": ev["adder_tid"], "adder_pid": ev["adder_pid"],
                "adder_comm": ev["adder_comm"], "notify": notify_name(ev["notify"]),
                "ok": ev["ret"] == 0}
        if ev["ret"]:
            line["error"] = ev["ret"]
        if "stack" in ev:  # with --stacks
            line["stack"] = ev["stack"]
        return line
    if kind == "callback":
        matched = bool(ev["flags"] & CB_MATCHED)
        untimed = bool(ev["flags"] & CB_UNTIMED)
        return {**base, "work": hexaddr(ev["work"]), "func": fname(ev["func"]),
                "tid": ev["tid"], "pid": ev["pid"], "comm": ev["comm"],
                "queue_ns": ev["queue_ns"] if matched else None,
                "run_ns": None if untimed else ev["dur_ns"],
                "timing": "batch" if untimed else "exact"}
    if kind == "cancel":
        return {**base, "work": hexaddr(ev["work"]), "func": fname(ev["func"]),
                "tid": ev["tid"], "pid": ev["pid"]}
    return {**base, "tid": ev["tid"], "pid": ev["pid"], "comm": ev["comm"],
            "callbacks": ev["count"], "dur_ns": ev["dur_ns"]}


def batch_callback_lines(stale: Dict[int, dict], tasks: dict, fname: Callable[[int], str]) -> List[dict]:
    """Callback lines for items settled by stale_items: timed at batch level,
    from the start of the target's latest task_work_run when that came after
    the add (the callback ran in it or in a later one)."""
    out = []
    for work, it in sorted(stale.items(), key=lambda kv: kv[1]["ts"]):
        t = tasks.get(it["tid"], {})
        run_ts = t.get("last_run_ts", 0)
        after = run_ts > it["ts"]
        out.append({"type": "callback", "ts_ns": run_ts if after else it["ts"],
                    "work": hexaddr(work), "func": fname(it["func"]), "tid": it["tid"],
                    "pid": it["pid"], "comm": t.get("comm", "?"),
                    "queue_ns": run_ts - it["ts"] if after else None,
                    "run_ns": None, "timing": "batch"})
    return out


def stale_items(inflight: Dict[int, dict], tasks: dict,
                exited: Iterable[int] = ()) -> Dict[int, dict]:
    """In-flight items whose callback must have run untimed.

    task_work_run runs every item queued before it was entered, so an item
    older than its task's latest completed task_work_run has run; so has
    every item of a task that has exited (exit_task_work runs them all and
    later adds fail).  Untimed, because the function was not probed yet
    (probes are attached once a new function is seen) or cannot be probed."""
    exited = set(exited)
    out = {}
    for w, it in inflight.items():
        t = tasks.get(it["tid"])
        ran = t is not None and it["ts"] < t["last_run_ts"] <= t.get("last_run_end", 0)
        if ran or it["tid"] in exited:
            out[w] = it
    return out


class Settled:
    """Callbacks that ran untimed (see stale_items), counted in user space
    and added to what the kernel counted."""

    def __init__(self) -> None:
        self.callbacks: Dict[tuple, int] = {}
        self.per_task: Dict[int, int] = {}

    def add(self, items: Dict[int, dict]) -> None:
        for it in items.values():
            key = (it["tid"], it["func"])
            self.callbacks[key] = self.callbacks.get(key, 0) + 1
            self.per_task[it["tid"]] = self.per_task.get(it["tid"], 0) + 1

    def apply(self, raw: dict) -> dict:
        """raw with settled callbacks counted and taken off depth (a copy)."""
        aggs = dict(raw["aggs"])
        for key, n in self.callbacks.items():
            if key in aggs:
                aggs[key] = {**aggs[key], "callbacks": aggs[key]["callbacks"] + n}
        tasks = dict(raw["tasks"])
        for tid, n in self.per_task.items():
            if tid in tasks:
                tasks[tid] = {**tasks[tid], "depth": tasks[tid]["depth"] - n}
        return {**raw, "aggs": aggs, "tasks": tasks}

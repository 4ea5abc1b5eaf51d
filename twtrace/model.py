"""The pure model: turns what the loader read from the kernel into the
record format's lines (docs/format.md). No bcc, no terminal: unit-tested
without root.

Lines are built from twtrace.totals.Totals (cumulative, from the kernel's
drained deltas). `name(addr)` resolves a callback address to a symbol.
"""
from __future__ import annotations

import heapq
import re
from typing import Callable, Dict, Iterable, Iterator, List, Optional

from twtrace.hist import Histogram
from twtrace.totals import Totals

NOTIFY_NAMES = {0: "none", 1: "resume", 2: "signal", 3: "signal_no_ipi", 4: "nmi_current"}
QUEUE, RUN = 0, 1
CB_MATCHED, CB_UNTIMED, CB_NORUN = 1, 2, 4  # callback event flags (bpf/twtrace.h)
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
    """Builds snapshot/task/func lines from cumulative Totals."""

    def __init__(self, name: Callable[[int], Optional[str]], probed: Callable[[int], bool],
                 stack: Optional[Callable[[int], Optional[List[str]]]] = None,
                 cgroup: Optional[Callable[[int], str]] = None,
                 ns_pid: Optional[Callable[[int], Optional[int]]] = None):
        self.name = name
        self.probed = probed
        self.stack = stack  # stack id -> frames, with --stacks
        self.cgroup = cgroup or cgroup_name  # cgroup id -> path
        self.ns_pid = ns_pid  # host pid -> in-namespace pid where different
        self._ns: Dict[tuple, Optional[int]] = {}  # per task, read once while it lives
        self._task_cache: Dict[tuple, dict] = {}  # task -> its line, for lines(fresh=)

    def fname(self, addr: int) -> str:
        return self.name(addr) or hexaddr(addr)

    def lines(self, tot: Totals, stats: dict, ts_ns: int, seq: int, final: bool,
              only: Optional[set] = None, fresh: Optional[set] = None) -> List[dict]:
        """A snapshot group; `only`: the tasks to list (those changed since
        the previous snapshot), else all.  `fresh` (top, which lists every
        task each time): the tasks changed since the previous call; the
        others keep the line built then, the same object, so a tick costs
        what changed, not every live task."""
        out = [{"type": "snapshot", "ts_ns": ts_ns, "seq": seq, "final": final,
                "lost_events": stats.get("lost", 0), "evicted": full_total(stats),
                "full": dict(stats.get("full", {})), "skipped_runs": stats.get("skipped"),
                "self_adds": stats.get("self", 0)}]
        if fresh is None:
            out += self._task_lines(tot, only)
        else:
            out += self._cached_task_lines(tot, fresh)
        funcs = self._func_lines(tot)
        if self.stack is not None and tot.stacks:
            for line, func in funcs:
                line["stacks"] = top_stacks(tot.stacks, func, self.stack)
        return out + [line for line, _ in funcs]

    def _cached_task_lines(self, tot: Totals, fresh: set) -> List[dict]:
        cache = self._task_cache
        build = {tk for tk in tot.tasks if tk in fresh or tk not in cache}
        built = {(x["tid"], x["gen"]): x for x in self._task_lines(tot, build)}
        # only tasks still held stay cached: the cache is as big as the view
        self._task_cache = {tk: built[tk] if tk in built else cache[tk]
                            for tk in sorted(tot.tasks)}
        return list(self._task_cache.values())

    def _task_lines(self, tot: Totals, only: Optional[set] = None) -> List[dict]:
        by_task: Dict[tuple, List[tuple]] = {}
        for (tk, func), a in tot.aggs.items():
            if only is None or tk in only:
                by_task.setdefault(tk, []).append((func, a))
        rows = []
        for tk in sorted(tot.tasks if only is None else only & tot.tasks.keys()):
            t = tot.tasks[tk]
            parts = by_task.get(tk, [])
            q, r = Histogram(), Histogram()
            for func, _ in parts:
                q.merge(tot.hists.get((tk, func, QUEUE), Histogram()))
                r.merge(tot.hists.get((tk, func, RUN), Histogram()))
            busiest = max(parts, key=lambda p: (p[1]["callbacks"], p[1]["adds"]), default=None)
            sums = _sums(a for _, a in parts)
            rows.append({
                "type": "task", "tid": t["tid"], "gen": t["gen"], "pid": t["pid"],
                "comm": t["comm"], **sums,
                "unmatched": sum(a["callbacks"] - a["matched"] for _, a in parts),
                "runs": t["runs"], "depth": max(0, t["depth"]), "max_depth": t["max_depth"],
                "exited": t["exited"],
                "queue_ns": _latency(q, max((a["queue_max"] for _, a in parts), default=0),
                                     sum(a["queue_sum"] for _, a in parts)),
                "run_ns": _latency(r, max((a["run_max"] for _, a in parts), default=0),
                                   sum(a["run_sum"] for _, a in parts)),
                "busiest": self.fname(busiest[0]) if busiest else None,
                **self._where(tk, t),
            })
        self._ns = {tk: v for tk, v in self._ns.items() if tk in tot.tasks}
        return rows

    def _where(self, tk: tuple, t: dict) -> dict:
        """The task's cgroup, and its pid inside its pid namespace when that differs."""
        out = {}
        if t.get("cgroup"):
            out = {"cgroup": self.cgroup(t["cgroup"]), "cgroup_id": t["cgroup"]}
        if self.ns_pid is not None:
            if tk not in self._ns and not t["exited"]:
                self._ns[tk] = self.ns_pid(t["pid"])
            if self._ns.get(tk) is not None:
                out["ns_pid"] = self._ns[tk]
        return out

    def _func_lines(self, tot: Totals) -> List[tuple]:
        pairs: Dict[int, List[tuple]] = {}
        for k, v in tot.pairs.items():
            pairs.setdefault(k[2], []).append((k, v))
        rows = []
        for func, parts, q, r in self._func_parts(tot):
            adders = heapq.nsmallest(TOP_ADDERS, pairs.get(func, []),
                                     key=lambda kv: -kv[1]["adds"])
            rows.append(({
                "type": "func", "func": self.fname(func), **_sums(parts),
                "unmatched": sum(a["callbacks"] - a["matched"] for a in parts),
                "queue_ns": _latency(q, max(a["queue_max"] for a in parts),
                                     sum(a["queue_sum"] for a in parts)),
                "run_ns": _latency(r, max(a["run_max"] for a in parts),
                                   sum(a["run_sum"] for a in parts)),
                "probed": self.probed(func),
                "notify": _notify_names(parts),
                "adders": [{"adder_pid": k[0], "adder_comm": v["adder_comm"], "tid": k[1][0],
                            "comm": tot.tasks.get(k[1], {}).get("comm", "?"), "adds": v["adds"],
                            **self._adder_cgroup(v)}
                           for k, v in adders],
            }, func))
        return rows

    def _func_parts(self, tot: Totals) -> Iterator[tuple]:
        """(func, its aggregates, queue and run histograms), by name."""
        if tot.func_aggs is not None and tot.comm_re is None:
            # kept per function as the deltas came: no walk over the tasks
            for func in sorted(tot.func_aggs, key=self.fname):
                yield (func, [tot.func_aggs[func]], tot.func_hists.get((func, QUEUE), Histogram()),
                       tot.func_hists.get((func, RUN), Histogram()))
            return
        yield from func_parts_from_tasks(tot, self.fname)


    def _adder_cgroup(self, pair: dict) -> dict:
        cg = pair.get("adder_cgroup")
        return {"adder_cgroup": self.cgroup(cg)} if cg else {}


def func_parts_from_tasks(tot: Totals, fname: Callable[[int], str]) -> Iterator[tuple]:
    """_func_parts summed from every task's aggregates and the totals of
    tasks let go: what a view (the comm filter) must do, and the reference
    the kept per-function totals are tested against."""
    by_func: Dict[int, List[tuple]] = {}
    for (tk, func), a in tot.aggs.items():
        by_func.setdefault(func, []).append((tk, a))
    for func in sorted(set(by_func) | set(tot.gone), key=fname):
        parts = [a for _, a in by_func.get(func, [])]
        if func in tot.gone:
            parts.append(tot.gone[func])
        q = Histogram().merge(tot.gone_hists.get((func, QUEUE), Histogram()))
        r = Histogram().merge(tot.gone_hists.get((func, RUN), Histogram()))
        for tk, _ in by_func.get(func, []):
            q.merge(tot.hists.get((tk, func, QUEUE), Histogram()))
            r.merge(tot.hists.get((tk, func, RUN), Histogram()))
        yield func, parts, q, r


def cgroup_name(cg_id: int) -> str:
    """A cgroup id not resolved to a path."""
    return f"cgroup:{cg_id}"


def _notify_names(parts: Iterable[dict]) -> List[str]:
    mask = 0
    for a in parts:
        mask |= a["notify_mask"]
    return [notify_name(m) for m in range(32) if mask >> m & 1]


def full_total(stats: dict) -> int:
    """Entries that did not fit any bounded map, all maps together."""
    return sum(stats.get("full", {}).values())


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


def summary_line(task_lines: List[dict], func_lines: List[dict], stats: dict, duration_ns: int,
                 interrupted: bool, exit_status: Optional[int]) -> dict:
    """Totals over functions (which include tasks let go), and every way an
    item can be missed, each counted on its own."""
    s = _sums(f for f in func_lines if f["type"] == "func")
    return {"type": "summary", "duration_ns": duration_ns, "items": s["adds"] - s["failed_adds"],
            **s, "tasks": sum(1 for t in task_lines if t["type"] == "task"),
            "lost_events": stats["lost"], "evicted": full_total(stats),
            "full": dict(stats.get("full", {})),
            "unmatched": sum(f["unmatched"] for f in func_lines if f["type"] == "func"),
            "untimed": stats.get("untimed", 0) + stats.get("settled", 0),
            "no_run_time": stats.get("noret", 0), "resync": stats.get("resync", 0),
            "stack_collisions": stats.get("stack_collisions", 0),
            "skipped_runs": stats.get("skipped"),
            "self_adds": stats.get("self", 0),
            "interrupted": interrupted,
            "exit_status": exit_status, "complete": True}


def event_line(ev: dict, fname: Callable[[int], str], probed: Callable[[int], bool],
               cgroup: Callable[[int], str] = cgroup_name) -> dict:
    """One kernel event as a record line."""
    kind = ev["kind"]
    base = {"type": kind, "ts_ns": ev["ts"]}
    if kind == "add":
        line = {**base, "work": hexaddr(ev["work"]), "func": fname(ev["func"]),
                "tid": ev["tid"], "pid": ev["pid"], "comm": ev["comm"],
                "adder_tid": ev["adder_tid"], "adder_pid": ev["adder_pid"],
                "adder_comm": ev["adder_comm"], "notify": notify_name(ev["notify"]),
                "ok": ev["ret"] == 0}
        if ev.get("cgroup"):
            line["cgroup"] = cgroup(ev["cgroup"])
        if ev.get("adder_cgroup"):
            line["adder_cgroup"] = cgroup(ev["adder_cgroup"])
        if ev["ret"]:
            line["error"] = ev["ret"]
        if "stack" in ev:  # with --stacks
            line["stack"] = ev["stack"]
        return line
    if kind == "callback":
        matched = bool(ev["flags"] & CB_MATCHED)
        untimed = bool(ev["flags"] & CB_UNTIMED)
        norun = bool(ev["flags"] & CB_NORUN)
        line = {**base, "work": hexaddr(ev["work"]), "func": fname(ev["func"]),
                "tid": ev["tid"], "pid": ev["pid"], "comm": ev["comm"],
                "queue_ns": ev["queue_ns"] if matched and not untimed else None,
                "run_ns": None if untimed or norun else ev["dur_ns"],
                "timing": "batch" if untimed else "exact", "matched": matched}
        if untimed:  # what was observed: it started between these
            line["queue_ns_bounds"] = [ev["queue_ns"], ev["dur_ns"]]
        return line
    if kind == "cancel":
        return {**base, "work": hexaddr(ev["work"]), "func": fname(ev["func"]),
                "tid": ev["tid"], "pid": ev["pid"]}
    return {**base, "tid": ev["tid"], "pid": ev["pid"], "comm": ev["comm"],
            "callbacks": ev["count"], "dur_ns": ev["dur_ns"]}


def stale_items(inflight: Dict[int, dict], runs: Dict[int, dict]) -> Dict[int, dict]:
    """In-flight items whose callback must have run unseen.

    task_work_run runs every item queued before it was entered, so an item
    older than its task's latest completed task_work_run has run; so has
    every item of a task the kernel has let go (its task_struct was freed:
    exit_task_work ran them all).  `runs` is the loader's task_runs(), keyed
    by task_struct; an entry of another incarnation counts as let go."""
    out = {}
    for w, it in inflight.items():
        t = runs.get(it["task"])
        if t is None or t["gen"] != it["gen"]:
            out[w] = it
            continue
        done = t["level"] == 0 and it["ts"] < t["last_run_ts"] <= t["last_run_end"]
        if done:
            out[w] = {**it, "_run": (t["last_run_ts"], t["last_run_end"])}
    return out


def batch_callback_lines(stale: Dict[int, dict], fname: Callable[[int], str],
                         now_ns: int) -> List[dict]:
    """Callback lines for items settled by stale_items: no start time was
    seen, so the queue latency is given as the interval it must lie in."""
    out = []
    for work, it in sorted(stale.items(), key=lambda kv: kv[1]["ts"]):
        run_ts, run_end = it.get("_run", (0, now_ns))
        lo = max(0, run_ts - it["ts"])
        out.append({"type": "callback", "ts_ns": max(run_ts, it["ts"]),
                    "work": hexaddr(work), "func": fname(it["func"]), "tid": it["tid"],
                    "pid": it["pid"], "comm": it.get("comm", "?"),
                    "queue_ns": None, "queue_ns_bounds": [lo, max(lo, run_end - it["ts"])],
                    "run_ns": None, "timing": "batch", "matched": True})
    return out

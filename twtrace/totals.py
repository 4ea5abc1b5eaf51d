"""Cumulative totals in user space, built from the kernel's drained deltas.

The kernel holds one interval of activity; everything since tracing began
lives here.  A task is named by (tid, gen): gen is the kernel's incarnation
number for the task_struct, so a recycled tid starts from zero.  Pure: no
bcc, unit-tested without root.
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, Optional, Tuple

from twtrace.hist import Histogram

SUMS = ("adds", "failed_adds", "cancels", "cancels_matched", "callbacks", "matched", "timed",
        "queue_sum", "run_sum", "run_cnt", "runs")
MAXES = ("queue_max", "run_max")
TKey = Tuple[int, int]


def new_agg() -> dict:
    return {**{k: 0 for k in SUMS}, **{k: 0 for k in MAXES}, "notify_mask": 0}


def merge_agg(into: dict, a: dict) -> None:
    for k in SUMS:
        into[k] += a.get(k, 0)
    for k in MAXES:
        into[k] = max(into[k], a.get(k, 0))
    into["notify_mask"] |= a.get("notify_mask", 0)


class Totals:
    """keep_exited=False (top, serve, record --interval): a task that has
    exited is shown in one more snapshot (fold_shown() after building it),
    then folded into per-function totals, so memory and per-interval work
    follow the live tasks, not every task ever seen."""

    def __init__(self, comm: Optional[str] = None, keep_exited: bool = True):
        self.comm_re = re.compile(comm) if comm else None
        self.keep_exited = keep_exited
        self.tasks: Dict[TKey, dict] = {}
        self.aggs: Dict[tuple, dict] = {}      # (tkey, func)
        self.hists: Dict[tuple, Histogram] = {}  # (tkey, func, kind)
        self.pairs: Dict[tuple, dict] = {}     # (adder_pid, tkey, func)
        self.stacks: Dict[tuple, int] = {}     # (func, stack_id)
        self.gone: Dict[int, dict] = {}        # func -> totals of tasks let go
        self.gone_hists: Dict[tuple, Histogram] = {}  # (func, kind)
        self.gone_tasks = 0
        self._exited: set = set()   # exited, not yet shown in a snapshot
        self._to_fold: set = set()  # exited and shown: folded at the next intake
        # folded lately: a drain that still holds some of their activity
        # (the exit notice and the last aggregates can be one drain apart)
        # adds it to the per-function totals, never to a task again
        # task -> whether the comm filter showed it, for the last two folds
        self._let_go: Dict[TKey, bool] = {}
        self._let_go_before: Dict[TKey, bool] = {}
        self.touched: set = set()  # tasks changed since take_touched()
        self.funcs: set = set()
        # Per function over every task counted, kept as deltas come in, so
        # func lines cost the functions, not the tasks (None in a view:
        # the comm filter's totals are summed from its tasks).
        self.func_aggs: Optional[Dict[int, dict]] = {}
        self.func_hists: Dict[tuple, Histogram] = {}  # (func, kind)

    # -- intake ----------------------------------------------------------
    def apply(self, delta: dict) -> set:
        """Adds one drain's deltas; returns the callback functions seen in it."""
        self._fold_exited()
        seen = set()
        for (tid, gen, func), a in delta.get("aggs", {}).items():
            seen.add(func)
            tk = (tid, gen)
            late = self._late(tk)
            if late is not False:  # in a task, or in the totals of tasks let go
                merge_agg(self.func_aggs.setdefault(func, new_agg()), a)
            if late is not None:
                if late:
                    merge_agg(self.gone.setdefault(func, new_agg()), a)
                continue
            self.touched.add(tk)
            t = self._task(tk, a)
            agg = self.aggs.setdefault((tk, func), new_agg())
            merge_agg(agg, a)
            t["runs"] += a.get("runs", 0)
            t["max_depth"] = max(t["max_depth"], a.get("max_depth", 0))
            t["depth"] += (a["adds"] - a["failed_adds"] - a["matched"]
                           - a.get("cancels_matched", 0))
        for (tid, gen, func, kind), buckets in delta.get("hists", {}).items():
            tk = (tid, gen)
            h = Histogram(buckets)
            if tk in self.tasks:
                self.hists.setdefault((tk, func, kind), Histogram()).merge(h)
            elif self._late(tk):
                self.gone_hists.setdefault((func, kind), Histogram()).merge(h)
            else:
                continue
            self.func_hists.setdefault((func, kind), Histogram()).merge(h)
        for (apid, tid, gen, func), p in delta.get("pairs", {}).items():
            tk = (tid, gen)
            if tk not in self.tasks:
                continue
            cur = self.pairs.setdefault((apid, tk, func), {"adds": 0, "adder_comm": "",
                                                           "adder_cgroup": 0})
            cur["adds"] += p["adds"]
            cur["adder_comm"] = p["adder_comm"]
            cur["adder_cgroup"] = p.get("adder_cgroup") or cur["adder_cgroup"]
        for key, n in delta.get("stacks", {}).items():
            self.stacks[key] = self.stacks.get(key, 0) + n
        for tk, r in delta.get("retired", {}).items():
            if tk in self.tasks:
                self.tasks[tk]["exited"] = True
                self.touched.add(tk)
                if not self.keep_exited:
                    self._exited.add(tk)
        self.funcs |= seen
        return seen

    def settle(self, items: Iterable[dict]) -> None:
        """Items user space found to have run unseen (model.stale_items)."""
        for it in items:
            tk = (it["tid"], it["gen"])
            if tk in self.tasks or self._late(tk):
                agg = self.func_aggs.setdefault(it["func"], new_agg())
                agg["callbacks"] += 1
                agg["matched"] += 1
            if tk not in self.tasks:
                if self._late(tk):
                    agg = self.gone.setdefault(it["func"], new_agg())
                    agg["callbacks"] += 1
                    agg["matched"] += 1
                continue
            agg = self.aggs.setdefault((tk, it["func"]), new_agg())
            agg["callbacks"] += 1
            agg["matched"] += 1
            self.tasks[tk]["depth"] -= 1
            self.touched.add(tk)

    def matches(self, t: dict) -> bool:
        """The comm filter, on the name the task has now: it is a view, so
        a task first seen as the shell that exec'd it keeps every count."""
        return self.comm_re is None or bool(self.comm_re.search(t["comm"]))

    def _task(self, tk: TKey, a: dict) -> dict:
        t = self.tasks.get(tk)
        if t is None:
            t = self.tasks[tk] = {"tid": tk[0], "gen": tk[1], "pid": a.get("pid", 0),
                                  "comm": a.get("comm", "?"), "depth": 0, "max_depth": 0,
                                  "runs": 0, "exited": False, "cgroup": 0}
        elif a.get("comm"):
            t["comm"] = a["comm"]  # exec renames
        # A task is shown in the cgroup it was in when last seen (0: unknown).
        t["cgroup"] = a.get("cgroup") or t.get("cgroup", 0)
        return t

    def take_touched(self) -> set:
        """The tasks changed since the last call."""
        out, self.touched = self.touched, set()
        return out

    def fold_shown(self) -> None:
        """The exited tasks are in the snapshot just built: they are folded
        at the next intake (whose drain may still hold their last items)."""
        self._to_fold |= self._exited
        self._exited = set()

    def _late(self, tk: TKey) -> Optional[bool]:
        """For a task let go lately: whether its late activity counts (the
        comm filter showed it); None for any other task."""
        return self._let_go.get(tk, self._let_go_before.get(tk))

    def _fold_exited(self) -> None:
        """Exited tasks already shown leave the per-task tables."""
        self._let_go_before, self._let_go = self._let_go, {}
        if not self._to_fold:
            return
        fold, self._to_fold = self._to_fold, set()
        # what the comm filter does not show is let go without a trace
        self._let_go = {tk: tk in self.tasks and self.matches(self.tasks[tk]) for tk in fold}
        kept = {tk for tk, shown in self._let_go.items() if shown}
        for (tk, func) in [k for k in self.aggs if k[0] in fold]:
            a = self.aggs.pop((tk, func))
            if tk in kept:
                merge_agg(self.gone.setdefault(func, new_agg()), a)
        for (tk, func, kind) in [k for k in self.hists if k[0] in fold]:
            h = self.hists.pop((tk, func, kind))
            if tk in kept:
                self.gone_hists.setdefault((func, kind), Histogram()).merge(h)
        for key in [k for k in self.pairs if k[1] in fold]:
            del self.pairs[key]
        for tk in fold:
            self.tasks.pop(tk, None)
            self.touched.discard(tk)
        self.gone_tasks += len(kept)

    # -- views -----------------------------------------------------------
    def view(self) -> "Totals":
        """What the comm filter shows: the tasks whose name matches now,
        and the functions' totals over those."""
        if self.comm_re is None:
            return self
        keep = {tk for tk, t in self.tasks.items() if self.matches(t)}
        out = Totals(keep_exited=self.keep_exited)
        out.tasks = {tk: self.tasks[tk] for tk in keep}
        out.aggs = {k: v for k, v in self.aggs.items() if k[0] in keep}
        out.hists = {k: v for k, v in self.hists.items() if k[0] in keep}
        out.pairs = {k: v for k, v in self.pairs.items() if k[1] in keep}
        out.stacks, out.funcs = self.stacks, self.funcs
        out.func_aggs = None
        out.gone, out.gone_hists, out.gone_tasks = self.gone, self.gone_hists, self.gone_tasks
        return out

    def depth_now(self) -> int:
        return sum(max(0, t["depth"]) for t in self.tasks.values())


def narrowed(tot: Totals, wanted) -> Totals:
    """A view of tot with only the callback functions (addresses) that
    `wanted` accepts; tasks left with none of them are dropped, so task
    totals count only those functions (depth stays the task's whole queue)."""
    out = Totals(keep_exited=tot.keep_exited)
    out.aggs = {k: v for k, v in tot.aggs.items() if wanted(k[1])}
    keep = {tk for tk, _ in out.aggs}
    out.tasks = {tk: t for tk, t in tot.tasks.items() if tk in keep}
    out.hists = {k: v for k, v in tot.hists.items() if wanted(k[1])}
    out.pairs = {k: v for k, v in tot.pairs.items() if wanted(k[2])}
    out.stacks = {k: v for k, v in tot.stacks.items() if wanted(k[0])}
    out.gone = {f: v for f, v in tot.gone.items() if wanted(f)}
    out.gone_hists = {k: v for k, v in tot.gone_hists.items() if wanted(k[0])}
    out.func_aggs = (None if tot.func_aggs is None
                     else {f: v for f, v in tot.func_aggs.items() if wanted(f)})
    out.func_hists = {k: v for k, v in tot.func_hists.items() if wanted(k[0])}
    return out

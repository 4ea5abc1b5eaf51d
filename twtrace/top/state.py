"""The view model of `twtrace top`: pure data, no terminal, no rich, no bcc.

Each pushed Sample is compared with the previous one (or, for the first,
with the all-zero state at the start of tracing), giving per-row rates and
interval latencies.  Rows are kept per view (tasks by tid, callbacks by
function name).  A row with nothing happening is "quiet": it is drawn
dimmed and hidden only after `age_out` quiet intervals, so a line does not
vanish while someone is reading it; the selected row is never hidden.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Pattern, Sequence, Tuple

from twtrace import bycgroup, cgroups
from twtrace.top import metrics
from twtrace.top.sample import Line, Meta, Sample

TASKS, FUNCS, CGROUPS = "tasks", "callbacks", "cgroups"
VIEWS = (TASKS, FUNCS, CGROUPS)
AGE_OUT = 10
# +/- step through these; an interval given on the command line is added.
INTERVALS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
PAGE = 10


@dataclass
class Row:
    key: Any               # tid for tasks, function name for callbacks
    line: Line             # the latest task or func line (cumulative)
    deltas: Dict[str, int]  # counter growth in the last interval
    adds_s: Optional[float]
    cb_s: Optional[float]
    prev: Optional[Line] = None  # the line of the snapshot before, if any
    quiet: int = 0         # consecutive intervals with nothing happening
    gone: bool = False     # absent from the latest snapshot

    # Latency objects of the last interval, worked out when first shown: on
    # a host that forks all day most rows are never on screen, and a tick
    # that computed them all could not keep up with the interval.
    @functools.cached_property
    def queue(self) -> Dict[str, Any]:
        return metrics.interval_latency(self.line["queue_ns"], self.prev and self.prev["queue_ns"])

    @functools.cached_property
    def run(self) -> Dict[str, Any]:
        return metrics.interval_latency(self.line["run_ns"], self.prev and self.prev["run_ns"])


@dataclass
class Filters:
    """The command line's fixed filters (-p, -t, --comm, --func)."""

    pids: Sequence[int] = ()
    tids: Sequence[int] = ()
    comm: Optional[Pattern[str]] = None
    func: Optional[Pattern[str]] = None
    cgroups: Sequence[str] = ()  # paths inside the hierarchy, descendants included

    def task_ok(self, t: Line) -> bool:
        if (self.pids or self.tids) and t["pid"] not in self.pids and t["tid"] not in self.tids:
            return False
        if self.cgroups and not cgroups.in_any(t.get("cgroup", ""), self.cgroups):
            return False
        return self.comm is None or bool(self.comm.search(t["comm"]))

    def func_ok(self, f: Line) -> bool:
        return self.func is None or bool(self.func.search(f["func"]))


@dataclass(frozen=True)
class SortCol:
    name: str
    key: Callable[[Row], Any]
    numeric: bool = True  # numbers sort biggest first, names A to Z


def _lat(which: str, stat: str) -> Callable[[Row], Any]:
    return lambda r: getattr(r, which).get(stat)


def _count(name: str) -> Callable[[Row], Any]:
    return lambda r: r.line.get(name)


_COMMON = [SortCol("Q99", _lat("queue", "p99")), SortCol("QMAX", _lat("queue", "max")),
           SortCol("R99", _lat("run", "p99")), SortCol("RMAX", _lat("run", "max")),
           SortCol("FAIL", _count("failed_adds")), SortCol("CNCL", _count("cancels"))]
SORTS: Dict[str, List[SortCol]] = {
    TASKS: [SortCol("ADD/s", lambda r: r.adds_s), SortCol("CB/s", lambda r: r.cb_s),
            SortCol("DEP", _count("depth")), SortCol("MAXD", _count("max_depth")), *_COMMON,
            SortCol("PID", lambda r: (r.line["pid"], r.line["tid"]), False),
            SortCol("COMM", lambda r: r.line["comm"].lower(), False)],
    FUNCS: [SortCol("ADD/s", lambda r: r.adds_s), SortCol("CB/s", lambda r: r.cb_s), *_COMMON,
            SortCol("FUNC", lambda r: r.line["func"].lower(), False)],
    CGROUPS: [SortCol("ADD/s", lambda r: r.adds_s), SortCol("CB/s", lambda r: r.cb_s),
              SortCol("DEP", _count("depth")), SortCol("TASKS", _count("tasks")), *_COMMON,
              SortCol("CGROUP", lambda r: r.line["cgroup"].lower(), False)],
}


def _zero(meta: Meta) -> Sample:
    return Sample({"type": "snapshot", "ts_ns": meta.start_ns, "seq": -1, "final": False})


def text_matcher(text: str, view: str) -> Callable[[Row], bool]:
    """The interactive filter: digits match a pid or tid (tasks) or an
    adder/target pid (callbacks); anything else is a case-insensitive
    regular expression, or a plain substring when it is not a valid one,
    matched against comm or function name."""
    text = text.strip()
    if not text:
        return lambda r: True
    if text.isdigit():
        n = int(text)
        if view == TASKS:
            return lambda r: n in (r.line["pid"], r.line["tid"], r.line.get("ns_pid"))
        if view == CGROUPS:
            return lambda r: n in r.line.get("pids", ())
        return lambda r: any(n in (a["adder_pid"], a["tid"]) for a in r.line.get("adders") or [])
    try:
        pat = re.compile(text, re.IGNORECASE)
    except re.error:
        pat = re.compile(re.escape(text), re.IGNORECASE)
    if view == TASKS:  # a task's name, or its cgroup's path
        return lambda r: bool(pat.search(r.line["comm"]) or pat.search(r.line.get("cgroup", "")))
    if view == CGROUPS:
        return lambda r: bool(pat.search(r.line["cgroup"]))
    return lambda r: bool(pat.search(r.line["func"]))


@dataclass
class Totals:
    """Header numbers for the last interval, over every traced task."""

    dt_ns: int = 0
    items_s: Optional[float] = None
    adds_s: Optional[float] = None
    cb_s: Optional[float] = None
    lost: Optional[int] = None
    evicted: Optional[int] = None
    unmatched: Optional[int] = None  # callbacks whose add was not seen, since tracing began
    skipped: Optional[int] = None  # probe runs the kernel skipped, since tracing began
    bpf_pct: Optional[float] = None
    cpu_pct: Optional[float] = None
    self_s: Optional[float] = None  # items twtrace queued on itself (excluded above)


def compute_totals(cur: Sample, prev: Sample) -> Totals:
    dt = cur.ts_ns - prev.ts_ns
    before = {t["tid"]: t for t in prev.tasks}
    sums = {k: 0 for k in metrics.COUNTERS}
    for t in cur.tasks:
        p = before.get(t["tid"])
        if t is p:
            continue  # unchanged since the last tick: nothing to add
        for k, v in metrics.counter_deltas(t, p).items():
            sums[k] += v
    return Totals(dt_ns=dt,
                  items_s=metrics.per_second(sums["adds"] - sums["failed_adds"], dt),
                  adds_s=metrics.per_second(sums["adds"], dt),
                  cb_s=metrics.per_second(sums["callbacks"], dt),
                  lost=cur.lost, evicted=cur.evicted,
                  unmatched=sum(f.get("unmatched", 0) for f in cur.funcs),
                  skipped=cur.skipped,
                  bpf_pct=metrics.bpf_cost_pct(cur.bpf, prev.bpf, dt),
                  cpu_pct=metrics.cpu_pct(cur.cpu_s, prev.cpu_s, dt),
                  self_s=metrics.self_adds_s(cur.snapshot, prev.snapshot, dt))


def make_row(key: Any, line: Line, prev: Optional[Line], dt_ns: int) -> Row:
    d = metrics.counter_deltas(line, prev)
    return Row(key=key, line=line, deltas=d, prev=prev,
               adds_s=metrics.per_second(d["adds"], dt_ns),
               cb_s=metrics.per_second(d["callbacks"], dt_ns))


def cgroup_rows(tasks: List[Row], dt_ns: int,
                cache: Optional[Dict[str, tuple]] = None) -> Dict[str, Row]:
    """The cgroup view's rows from the tasks view's: counters and rates are
    sums of the tasks' (so a task that exits does not make a cgroup's count
    go down), latencies the merged histograms of their last interval.
    cache (kept by the caller across ticks): a cgroup whose task lines are
    the very objects of the last tick (live, an unchanged line is kept) is
    not summed again."""
    out = {}
    kept: Dict[str, tuple] = {}
    for cg, rows in bycgroup.group([r.line for r in tasks]).items():
        mine = [r for r in tasks if bycgroup.cgroup_of(r.line) == cg]
        hit = (cache or {}).get(cg)
        if hit and len(hit[0]) == len(rows) and all(a is b for a, b in zip(hit[0], rows)):
            summed = hit[1]
        else:
            summed = bycgroup.summarize(cg, rows)
        kept[cg] = (rows, summed)
        line = dict(summed)
        line["pids"] = sorted({p for r in mine for p in (r.line["pid"], r.line["tid"])})
        d = {k: sum(r.deltas[k] for r in mine) for k in metrics.COUNTERS}
        out[cg] = CgroupRow(key=cg, line=line, deltas=d, members=mine,
                            adds_s=metrics.per_second(d["adds"], dt_ns),
                            cb_s=metrics.per_second(d["callbacks"], dt_ns))
    if cache is not None:
        cache.clear()
        cache.update(kept)
    return out


@dataclass
class CgroupRow(Row):
    """A cgroup's row: latencies merged from its tasks' rows when shown."""

    members: List[Row] = field(default_factory=list)

    @functools.cached_property
    def queue(self) -> Dict[str, Any]:
        return bycgroup.merge_latency(r.queue for r in self.members)

    @functools.cached_property
    def run(self) -> Dict[str, Any]:
        return bycgroup.merge_latency(r.run for r in self.members)


def task_key(t: Line) -> Any:
    return t["tid"]


def func_key(f: Line) -> Any:
    return f["func"]


class TopState:
    def __init__(self, meta: Meta, interval: float = 1.0, filters: Optional[Filters] = None,
                 age_out: int = AGE_OUT, baseline: Optional[Sample] = None):
        self.meta = meta
        self.interval = interval
        self.filters = filters or Filters()
        self.age_out = age_out
        self.prev: Sample = baseline or _zero(meta)
        self.cur: Optional[Sample] = None
        self.totals = Totals()
        self._cgroup_sums: Dict[str, tuple] = {}  # cgroup_rows' cache
        self.rows: Dict[str, Dict[Any, Row]] = {v: {} for v in VIEWS}
        self.view = TASKS
        self.sort = {v: 0 for v in VIEWS}
        self.reverse = {v: False for v in VIEWS}
        self.selected: Dict[str, Any] = {v: None for v in VIEWS}
        # Whether the user picked the selected row (keys) or it is just the
        # first one: only a picked row is kept from ageing out.
        self.picked = {v: False for v in VIEWS}
        self.text_filter = ""
        self.editing: Optional[str] = None  # the filter being typed, if any
        self.detail = False
        self.detail_scroll = 0
        self.help = False
        self.paused = False
        self.cumulative = False  # latency columns: last interval, or since start
        self.ended = False       # a replay has shown its last snapshot
        self.quit = False

    # -- data -------------------------------------------------------------
    def push(self, sample: Sample) -> None:
        """Take the next snapshot group; the previous one becomes the base."""
        if self.cur is not None:
            self.prev = self.cur
        dt = sample.ts_ns - self.prev.ts_ns
        self._update(TASKS, [t for t in sample.tasks if self.filters.task_ok(t)],
                     self.prev.tasks, task_key, dt)
        self._update(FUNCS, [f for f in sample.funcs if self.filters.func_ok(f)],
                     self.prev.funcs, func_key, dt)
        self._update_cgroups(dt)
        self.totals = compute_totals(sample, self.prev)
        self.cur = sample
        for view in VIEWS:
            self._pin(view)

    def _pin(self, view: str) -> None:
        """Select the first row when the selected one is not shown, so the
        highlighted row is the one that stays selected when the order changes."""
        rows = self.visible(view)
        if rows and self.selected[view] not in {r.key for r in rows}:
            self.selected[view] = rows[0].key
            self.picked[view] = False

    def _kept(self, view: str) -> Any:
        """The row key exempt from ageing out, if any."""
        return self.selected[view] if self.picked[view] else None

    def _update(self, view: str, lines: List[Line], prev_lines: List[Line],
                key: Callable[[Line], Any], dt: int) -> None:
        table = self.rows[view]
        before = {key(p): p for p in prev_lines}
        seen = set()
        for line in lines:
            k = key(line)
            seen.add(k)
            old = table.get(k)
            if old is not None and old.line is line and old.prev is line and not old.gone:
                # unchanged for two ticks now: the row already says "nothing new"
                row = old
                row.adds_s = row.cb_s = metrics.per_second(0, dt)
            else:
                row = make_row(k, line, before.get(k), dt)
            active = metrics.is_active(row.deltas, line)
            row.quiet = 0 if active else (old.quiet + 1 if old else 1)
            table[k] = row
        for k in [k for k in table if k not in seen]:
            row = table[k]
            if row.quiet >= self.age_out and k != self._kept(view):
                del table[k]  # gone and hidden: nothing left to show
                continue
            row.gone = True
            row.quiet += 1
            row.adds_s = row.cb_s = 0.0 if dt > 0 else None
            row.deltas = {c: 0 for c in metrics.COUNTERS}

    def _update_cgroups(self, dt: int) -> None:
        """Cgroups age out like other rows; their rows are rebuilt each time."""
        table = self.rows[CGROUPS]
        fresh = cgroup_rows([r for r in self.rows[TASKS].values() if not r.gone], dt,
                            self._cgroup_sums)
        for k, row in fresh.items():
            old = table.get(k)
            active = metrics.is_active(row.deltas, row.line)
            row.quiet = 0 if active else (old.quiet + 1 if old else 1)
        for k, old in table.items():
            if k in fresh or (old.quiet >= self.age_out and k != self._kept(CGROUPS)):
                continue
            old.gone, old.quiet = True, old.quiet + 1
            old.adds_s = old.cb_s = 0.0 if dt > 0 else None
            old.deltas = {c: 0 for c in metrics.COUNTERS}
            fresh[k] = old
        self.rows[CGROUPS] = fresh

    # -- what is shown ----------------------------------------------------
    def sort_col(self, view: Optional[str] = None) -> SortCol:
        view = view or self.view
        return SORTS[view][self.sort[view]]

    def descending(self, view: Optional[str] = None) -> bool:
        view = view or self.view
        return self.sort_col(view).numeric != self.reverse[view]

    def visible(self, view: Optional[str] = None) -> List[Row]:
        """Rows to draw, filtered and sorted; aged-out rows left out."""
        view = view or self.view
        match = text_matcher(self.text_filter, view)
        keep = self._kept(view)
        rows = [r for r in self.rows[view].values()
                if (r.quiet <= self.age_out or r.key == keep) and match(r)]
        return sort_rows(rows, self.sort_col(view), self.descending(view))

    def hidden_count(self, view: Optional[str] = None) -> int:
        view = view or self.view
        return len(self.rows[view]) - len(self.visible(view))

    def selected_index(self, rows: Optional[List[Row]] = None) -> Optional[int]:
        rows = self.visible() if rows is None else rows
        if not rows:
            return None
        key = self.selected[self.view]
        for i, r in enumerate(rows):
            if r.key == key:
                return i
        return 0

    def selected_row(self) -> Optional[Row]:
        rows = self.visible()
        i = self.selected_index(rows)
        return None if i is None else rows[i]

    def latency(self, row: Row) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """(queue, run) latency objects for the current latency window."""
        if self.cumulative:
            return row.line["queue_ns"], row.line["run_ns"]
        return row.queue, row.run

    # -- actions (keys.py maps keys to these) -----------------------------
    def move(self, step: int) -> None:
        if self.detail:
            self.detail_scroll = max(0, self.detail_scroll + step)
            return
        rows = self.visible()
        i = self.selected_index(rows)
        if i is None:
            return
        i = min(max(0, i + step), len(rows) - 1)
        self.selected[self.view] = rows[i].key
        self.picked[self.view] = True

    def move_to(self, end: bool) -> None:
        self.move(10 ** 9 if end else -10 ** 9)

    def next_sort(self, step: int = 1) -> None:
        n = len(SORTS[self.view])
        self.sort[self.view] = (self.sort[self.view] + step) % n

    def toggle_reverse(self) -> None:
        self.reverse[self.view] = not self.reverse[self.view]

    def switch_view(self) -> None:
        self.view = VIEWS[(VIEWS.index(self.view) + 1) % len(VIEWS)]
        self.detail = False

    def toggle_pause(self) -> None:
        self.paused = not self.paused

    def toggle_help(self) -> None:
        self.help = not self.help

    def toggle_cumulative(self) -> None:
        self.cumulative = not self.cumulative

    def open_detail(self) -> None:
        if self.detail:
            self.detail = False
        elif self.selected_row() is not None:
            self.selected[self.view] = self.selected_row().key
            self.picked[self.view] = True  # keep it while it is being read
            self.detail, self.detail_scroll = True, 0

    def close(self) -> None:
        """Esc: leave whatever overlay is open."""
        self.help = False
        self.detail = False

    def change_interval(self, step: int) -> None:
        self.interval = step_interval(self.interval, step)

    # -- typing a filter --------------------------------------------------
    def begin_filter(self) -> None:
        self.editing = self.text_filter

    def filter_key(self, key: str) -> None:
        assert self.editing is not None
        if key == "enter":
            self.text_filter, self.editing = self.editing.strip(), None
            self._pin(self.view)
        elif key == "esc":
            self.editing = None
        elif key == "backspace":
            self.editing = self.editing[:-1]
        elif len(key) == 1 and key.isprintable():
            self.editing += key


def step_interval(current: float, step: int) -> float:
    """The next (+1) or previous (-1) refresh interval from INTERVALS."""
    if step > 0:
        bigger = [v for v in INTERVALS if v > current + 1e-9]
        return bigger[0] if bigger else current
    smaller = [v for v in INTERVALS if v < current - 1e-9]
    return smaller[-1] if smaller else current


def sort_rows(rows: List[Row], col: SortCol, descending: bool) -> List[Row]:
    """Sorted by col (missing values last either way), ties by row key."""
    rows = sorted(rows, key=lambda r: r.key)
    present = [r for r in rows if col.key(r) is not None]
    missing = [r for r in rows if col.key(r) is None]
    present.sort(key=col.key, reverse=descending)  # stable: ties stay by key
    return present + missing

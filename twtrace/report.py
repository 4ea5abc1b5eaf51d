"""Rendering a recording's aggregates as rich tables and histograms.

Strings taken from the recording (comm, func names) always go through
Text, never markup, so a task called "[red]" prints as itself.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from rich.console import Console
from rich.table import Table
from rich.text import Text

from twtrace import bycgroup
from twtrace.hist import Histogram, log2_rows
from twtrace.recordfile import Record, Snapshot
from twtrace.units import format_count, format_ns

# Below this width the task and func tables are split into a counts table
# and a latency table; one 19-column table only fits a wide terminal.
WIDE_MIN = 150
BAR_MAX = 40
LAT_KEYS = ("p50", "p90", "p99", "max")
WARN = "bold red"
CAUTION = "yellow"


def render_report(record: Record, console: Console, top: Optional[int] = 10,
                  histograms: int = 3) -> None:
    """Print the report for record: header block, per-task and per-callback
    tables (the first `top` rows each, all when None) and latency histograms
    of the first `histograms` callbacks, all from the final snapshot (or
    the last one if none is final)."""
    snap = record.final_snapshot()
    _render_header(record, snap, console)
    if snap is None:
        console.print(Text("No aggregate snapshot in this recording.", style=CAUTION))
        return
    wide = console.width >= WIDE_MIN
    tasks = sorted(record.task_totals(),
                   key=lambda t: (-t["adds"], -t["callbacks"], t["pid"], t["tid"]))
    funcs = sorted(snap.funcs, key=lambda f: (-f["adds"], -f["callbacks"], f["func"]))
    console.print()
    _render_tasks(tasks, top, wide, console)
    if any(t.get("cgroup") for t in tasks):  # recordings from before cgroups have none
        console.print()
        _render_cgroups(bycgroup.aggregate(tasks), top, wide, console)
    console.print()
    _render_funcs(funcs, top, wide, console)
    for func in [f for f in funcs if f["queue_ns"]["count"] or f["run_ns"]["count"]][:histograms]:
        console.print()
        _render_func_histograms(func, console)
    for func in [f for f in funcs if f.get("stacks")][:top]:
        console.print()
        _render_func_stacks(func, console)


STACK_FRAMES = 8  # innermost frames shown: enough to reach the subsystem


def _render_func_stacks(f: Dict[str, Any], console: Console) -> None:
    """Which code paths queued this callback (recorded with --stacks)."""
    title = Text()
    title.append(f["func"], style="bold")
    title.append(": queued from")
    console.print(title, no_wrap=True, overflow="ellipsis")
    for s in f["stacks"]:
        frames = s["stack"]
        path = " <- ".join(frames[:STACK_FRAMES]) if frames else "(stack not recorded)"
        if frames and len(frames) > STACK_FRAMES:
            path += " <- ..."
        console.print(Text(f"  {format_count(s['adds']):>7}  {path}"), overflow="fold")


def _render_header(record: Record, snap: Optional[Snapshot], console: Console) -> None:
    h, s = record.header, record.summary
    lost = max(s["lost_events"], record.lost)
    ended = "interrupted" if s["interrupted"] else "complete"
    if s.get("exit_status") is not None:
        ended += f", command exited {s['exit_status']}"
    failed = f" ({format_count(s['failed_adds'])} failed)" if s["failed_adds"] else ""

    pairs: List[Tuple[str, Text]] = [
        ("kernel", Text(f"{h['kernel']} {h['arch']}")),
        ("host", Text(h["hostname"])),
        ("probes", Text(h["probe_mode"])),
        ("duration", Text(format_ns(s["duration_ns"]))),
        ("items", Text(format_count(s["items"]))),
        ("adds", Text(format_count(s["adds"]) + failed)),
        ("callbacks", Text(format_count(s["callbacks"]))),
        ("cancels", Text(format_count(s["cancels"]))),
        ("lost events", _flag(lost, WARN)),
        ("maps full", _full(s)),
        ("unmatched", _flag(s["unmatched"], CAUTION)),
        ("no run time", _flag(s.get("no_run_time", 0), CAUTION)),
        ("skipped runs", _skipped(s)),
        ("ended", Text(ended, style=CAUTION if s["interrupted"] else "")),
    ]
    filters = h.get("filters") or {}
    if filters.get("command"):
        pairs.append(("command", Text(" ".join(filters["command"]))))
    for key in ("pids", "tids"):
        if filters.get(key):
            pairs.append((key, Text(",".join(str(p) for p in filters[key]))))
    if filters.get("comm"):
        pairs.append(("comm", Text(filters["comm"])))
    if snap is not None and not snap.final:
        at = format_ns(snap.ts_ns - h["start_ns"]) if snap.ts_ns >= h["start_ns"] else "?"
        pairs.append(("snapshot", Text(f"#{snap.seq} at +{at} (not final)", style=CAUTION)))

    grid = Table.grid(padding=(0, 2))
    per_row = 3 if console.width >= 120 else 2
    for _ in range(per_row):
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
    for i in range(0, len(pairs), per_row):
        row: List[Any] = []
        for key, value in pairs[i:i + per_row]:
            row += [key, value]
        grid.add_row(*row)
    console.print(Text(f"twtrace {h['twtrace']} recording: {record.path}", style="bold"))
    console.print(grid)

    notes = []
    if lost:
        notes.append(f"{format_count(lost)} events were lost")
    if s["evicted"]:
        where = ", ".join(f"{k} {format_count(v)}" for k, v in sorted((s.get("full") or {}).items())
                          if v)
        notes.append(f"{format_count(s['evicted'])} entries did not fit in kernel maps"
                     + (f" ({where})" if where else ""))
    if notes:
        console.print(Text("; ".join(notes) + ": counts below are lower bounds.", style=WARN))


def _flag(n: int, style: str) -> Text:
    return Text(format_count(n), style=style if n else "")


def _full(s: dict) -> Text:
    """Entries that did not fit, per map when the recording says which."""
    per = {k: v for k, v in (s.get("full") or {}).items() if v}
    if not per:
        return _flag(s["evicted"], WARN)
    return Text(", ".join(f"{k} {format_count(v)}" for k, v in sorted(per.items())), style=WARN)


def _skipped(s: dict) -> Text:
    """Probe runs the kernel skipped (its recursion guard); unknown where the
    kernel does not count them (before 5.12; kprobes before 6.7)."""
    n = s.get("skipped_runs")
    if n is None:
        return Text("unknown", style="dim")
    return Text(format_count(n), style=CAUTION if n else "")


def _label(text: str) -> Text:
    return Text(text, no_wrap=True, overflow="ellipsis")


Row = Dict[str, Any]


class _Col(NamedTuple):
    head: str
    cell: Callable[[Row], Text]
    is_name: bool = False  # free text that may be shortened, vs a number
    min_width: int = 1


def _count_col(head: str, key: str) -> _Col:
    return _Col(head, lambda row: Text(format_count(row[key])))


def _name_col(head: str, cell: Callable[[Row], Text], min_width: int = 6) -> _Col:
    return _Col(head, cell, True, min_width)


def _lat_cols() -> List[_Col]:
    def cell(key: str, stat: str) -> Callable[[Row], Text]:
        return lambda row: Text(format_ns(row[key].get(stat)))

    return [_Col(prefix + ("MAX" if stat == "max" else stat[1:]), cell(key, stat))
            for prefix, key in (("Q", "queue_ns"), ("R", "run_ns")) for stat in LAT_KEYS]


LAT_CAPTION = ("Q = queue latency, add to callback start; "
               "R = callback run time; 50/90/99 = percentiles")


def _print_table(console: Console, title: str, caption: Optional[str],
                 cols: Sequence[_Col], rows: Sequence[Row]) -> None:
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left",
                  box=None, padding=(0, 1, 0, 0), pad_edge=False, header_style="bold",
                  show_edge=False)
    for col in cols:
        if col.is_name:
            # Wrapable as far as rich is concerned, so that when space runs
            # out it narrows these columns first instead of cutting every
            # column evenly; the cells themselves (_label) never wrap.
            table.add_column(col.head, overflow="ellipsis", min_width=col.min_width)
        else:
            table.add_column(col.head, justify="right", no_wrap=True, min_width=col.min_width)
    for row in rows:
        table.add_row(*(col.cell(row) for col in cols))
    console.print(table)


def _print_split(console: Console, wide: bool, title: str, caption: str, ids: List[_Col],
                 counts: List[_Col], tail: List[_Col], lat_ids: List[_Col],
                 rows: Sequence[Row], what: str) -> None:
    """One table when wide; else counts, then latency under its own title."""
    if wide:
        _print_table(console, title, caption, ids + counts + _lat_cols() + tail, rows)
        return
    _print_table(console, title, None, ids + counts + tail, rows)
    console.print()
    _print_table(console, f"{what} latency", caption, lat_ids + _lat_cols(), rows)


def _title(what: str, shown: int, total: int, order: str) -> str:
    head = f"{what}: top {shown} of {total}" if shown < total else f"{what}: {total}"
    return f"{head}, by {order}"


def _render_tasks(tasks: Sequence[Row], top: Optional[int], wide: bool,
                  console: Console) -> None:
    if not tasks:
        console.print(Text("No task received task_work."))
        return
    shown = list(tasks[:top])  # [:None] is everything
    # The pid inside the task's container beside the host pid, where they differ.
    pid = _Col("PID", lambda t: Text(f"{t['pid']}({t['ns_pid']})" if t.get("ns_pid") is not None
                                     else str(t["pid"])))
    tid = _Col("TID", lambda t: Text(str(t["tid"])))
    comm = _name_col("COMM", lambda t: _label(t["comm"]))
    counts = [_count_col(head, key) for head, key in (
        ("ADD", "adds"), ("FAIL", "failed_adds"), ("CNCL", "cancels"), ("CB", "callbacks"),
        ("RUNS", "runs"), ("DEP", "depth"), ("MAXD", "max_depth"))]
    busiest = _name_col("BUSIEST", lambda t: _label(t["busiest"] or "-"), 8)
    _print_split(console, wide, _title("Tasks", len(shown), len(tasks), "adds"), LAT_CAPTION,
                 [pid, tid, comm], counts, [busiest], [tid, comm], shown, "Task")


def _render_cgroups(groups: Sequence[Row], top: Optional[int], wide: bool,
                    console: Console) -> None:
    """One row per cgroup: its tasks' totals, each task in its last cgroup."""
    shown = list(groups[:top])
    name = _name_col("CGROUP", lambda g: _label(g["name"]), 12)
    counts = [_count_col(head, key) for head, key in (
        ("TASKS", "tasks"), ("ADD", "adds"), ("FAIL", "failed_adds"), ("CNCL", "cancels"),
        ("CB", "callbacks"), ("DEP", "depth"), ("MAXD", "max_depth"))]
    path = _name_col("PATH", lambda g: _label(g["cgroup"]), 12)
    _print_split(console, wide, _title("Cgroups", len(shown), len(groups), "adds"), LAT_CAPTION,
                 [name], counts, [path], [name], shown, "Cgroup")


def _top_adder(f: Row) -> Text:
    adders = sorted(f.get("adders") or [], key=lambda a: -a["adds"])
    if not adders:
        return Text("-")
    a = adders[0]
    return _label(f"{a['adder_comm']}[{a['adder_pid']}]→{a['comm']}[{a['tid']}]"
                  f" ×{format_count(a['adds'])}")


def _render_funcs(funcs: Sequence[Row], top: Optional[int], wide: bool,
                  console: Console) -> None:
    if not funcs:
        console.print(Text("No task_work callbacks seen."))
        return
    shown = list(funcs[:top])
    func = _name_col("FUNC", lambda f: _label(f["func"]), 12)
    counts = [_count_col(head, key) for head, key in (
        ("ADD", "adds"), ("FAIL", "failed_adds"), ("CB", "callbacks"), ("CNCL", "cancels"))]
    probed = _name_col("PROBED", lambda f: Text("yes") if f["probed"] else Text("no", style=CAUTION))
    adder = _name_col("TOP ADDER→TARGET", _top_adder, 12)
    caption = LAT_CAPTION + "; PROBED no = run time is per task_work_run batch"
    _print_split(console, wide, _title("Callbacks", len(shown), len(funcs), "adds"), caption,
                 [func], counts, [probed, adder], [func], shown, "Callback")


def _render_func_histograms(f: Dict[str, Any], console: Console) -> None:
    for key, what in (("queue_ns", "queue latency (add to callback start)"),
                      ("run_ns", "run time" if f["probed"] else "run time (per batch)")):
        lat = f[key]
        if not lat["count"]:
            continue
        title = Text()
        title.append(f["func"], style="bold")
        title.append(f": {what}, {format_count(lat['count'])} samples")
        console.print(title, no_wrap=True, overflow="ellipsis")
        for line in histogram_lines(Histogram.from_pairs(lat["hist"]), console.width):
            console.print(line, no_wrap=True, overflow="crop")


def histogram_lines(hist: Histogram, width: int = 80) -> List[Text]:
    """bcc-style power-of-two rows: "lo -> hi : count |****   |", where a
    row holds lo <= v < hi.  (bcc prints an inclusive hi; rounded to three
    digits that would print 4095 as 4.09µs beside the next row's 4.10µs.)"""
    rows = log2_rows(hist)
    if not rows:
        return []
    ranges = [(format_ns(r.lo), format_ns(r.hi)) for r in rows]
    lo_w = max(len(lo) for lo, _ in ranges)
    hi_w = max(len(hi) for _, hi in ranges)
    count_w = max(5, max(len(str(r.count)) for r in rows))
    head_w = lo_w + 4 + hi_w + 3 + count_w + 1
    bar_w = max(10, min(BAR_MAX, width - head_w - 2))
    peak = max(r.count for r in rows)
    out = [Text(f"{'range':>{lo_w + 4 + hi_w}} : {'count':>{count_w}} distribution", style="dim")]
    for (lo, hi), r in zip(ranges, rows):
        stars = (r.count * bar_w + peak - 1) // peak if r.count else 0  # any hit shows a star
        line = Text(f"{lo:>{lo_w}} -> {hi:>{hi_w}} : {r.count:>{count_w}} |")
        line.append("*" * stars, style="cyan")
        line.append(" " * (bar_w - stars) + "|")
        out.append(line)
    return out

"""The interactive screen: rich Text lines from a TopState, fitted to the
terminal: three header lines, the table (or the detail pane, or the help),
and a footer with the keys or the filter being typed."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from rich.console import Group
from rich.text import Text

from twtrace.hist import Histogram
from twtrace.report import histogram_lines
from twtrace.top import columns
from twtrace.top.keys import HELP
from twtrace.top.state import CGROUPS, FUNCS, TASKS, VIEWS, Row, TopState
from twtrace.units import format_count, format_ns, format_rate

MIN_W, MIN_H = 60, 10
HEAD_H, FOOT_H = 3, 1
WARN = "bold red"
FOOTER = "q quit  space pause  s/S sort  r rev  f filter  Tab view  Enter detail  ? help"


TITLES = {TASKS: "Tasks", FUNCS: "Callbacks", CGROUPS: "Cgroups"}
FILTER_HINT = {TASKS: "pid, comm or cgroup regex", FUNCS: "pid or function regex",
               CGROUPS: "pid or cgroup regex"}
EMPTY = {TASKS: "task received task_work", FUNCS: "callback seen",
         CGROUPS: "cgroup with task_work"}


def too_small(width: int, height: int) -> Optional[str]:
    """The message shown instead of the view, or None when it fits."""
    if width >= MIN_W and height >= MIN_H:
        return None
    return (f"terminal too small ({width}×{height}); twtrace top needs at least "
            f"{MIN_W}×{MIN_H}")


def fmt_interval(s: float) -> str:
    return f"{s:g}s" if s >= 1 else f"{s * 1000:g}ms"


def fmt_pct(p: Optional[float]) -> str:
    if p is None:
        return "-"
    return f"{p:.2f}%" if p < 10 else f"{p:.1f}%"


def _fit(text: Text, width: int) -> Text:
    text.no_wrap = True
    text.overflow = "ellipsis"
    text.truncate(width, overflow="ellipsis")
    return text


def _spread(left: Text, right: Text, width: int) -> Text:
    """left, then right flush with the right edge (right wins when short)."""
    room = width - right.cell_len - 1
    if room < 8:
        return _fit(right, width)
    left.truncate(room, overflow="ellipsis")
    left.pad_right(width - left.cell_len - right.cell_len)
    return _fit(left + right, width)


def replay_flag(state: TopState) -> Text:
    m = state.meta
    if m.replay is None:
        return Text("LIVE", style="bold green")
    at = ""
    if state.cur is not None:
        at = " +" + format_ns(state.cur.ts_ns - m.start_ns)
    speed = "max" if not m.speed else f"×{m.speed:g}"
    end = " END" if state.ended else ""
    return Text(f"REPLAY {speed}{at}{end}", style="bold magenta")


def header_lines(state: TopState, width: int) -> List[Text]:
    m, t = state.meta, state.totals
    left = Text("twtrace top", style="bold")
    left.append(f"  {m.hostname}  {m.kernel} {m.arch}  {m.probe_mode}")
    left.append(f"  every {fmt_interval(state.interval)}")
    right = Text()
    if state.paused:
        right.append("PAUSED ", style="bold yellow reverse")
        right.append(" ")
    right.append_text(replay_flag(state))
    first = _spread(left, right, width)

    second = _counts_line(t, "  ")
    if second.cell_len > width:  # 80 columns are tight: single spaces, no label, then cut
        second = _counts_line(t, " ", cost_label="")
    return [first, _fit(second, width), title_line(state, width)]


def _counts_line(t, sep: str, cost_label: str = "cost: ") -> Text:
    line = Text()
    for label, value in (("items", format_rate(t.items_s)), ("cb", format_rate(t.cb_s))):
        line.append(f"{label} ", style="bold")
        line.append(f"{value}{sep}")
    # skipped probe runs only once there are some
    counts = [("lost", t.lost), ("full", t.evicted), ("unmatched", t.unmatched)]
    counts += [("skipped", t.skipped)] if t.skipped else []
    for label, value in counts:
        line.append(f"{label} ", style="bold")
        line.append(format_count(value), style=WARN if value else "")
        line.append(sep)
    if t.bpf_pct is not None or t.cpu_pct is not None:
        line.append(cost_label, style="bold")
        line.append(f"bpf {fmt_pct(t.bpf_pct)} cpu {fmt_pct(t.cpu_pct)}")
        if t.self_s:  # its own closes, left out of the view
            line.append(f" self {format_rate(t.self_s)}")
    return line


def title_line(state: TopState, width: int) -> Text:
    shown = len(state.visible())
    hidden = state.hidden_count()
    name = TITLES[state.view]
    left = Text(f"{name}: {shown}", style="bold cyan")
    if hidden:
        left.append(f" (+{hidden} quiet)", style="dim")
    if state.text_filter:
        left.append("  filter: ")
        left.append(state.text_filter, style="bold yellow")
    col = state.sort_col()
    left.append(f"  sort {col.name}{'▼' if state.descending() else '▲'}")
    left.append(f"  latency: {'since start' if state.cumulative else 'last interval'}")
    other = VIEWS[(VIEWS.index(state.view) + 1) % len(VIEWS)]
    return _spread(left, Text(f"Tab: {other}", style="dim"), width)


def footer(state: TopState, width: int) -> Text:
    if state.editing is not None:
        what = FILTER_HINT[state.view]
        line = Text(f"filter ({what}): ", style="bold yellow")
        line.append(state.editing)
        line.append("█", style="blink")
        line.append("   Enter apply · Esc cancel · empty clears", style="dim")
        return _fit(line, width)
    if state.ended:
        return _fit(Text("replay ended: the last snapshot stays on screen; q quits  "
                         "(? help)", style="dim"), width)
    return _fit(Text(FOOTER, style="dim"), width)


def table_lines(state: TopState, width: int, height: int) -> List[Text]:
    """Head and as many rows as fit, scrolled to keep the selection visible."""
    rows = state.visible()
    if state.cur is None:
        return [Text("waiting for the first snapshot…", style="dim")]
    if not rows:
        what = EMPTY[state.view]
        note = " matching the filter" if state.text_filter else ""
        return [Text(f"No {what}{note} yet.", style="dim")]
    sel = state.selected_index(rows)
    room = max(1, height - 1)
    start = 0 if sel is None or sel < room else sel - room + 1
    shown = rows[start:start + room]
    return columns.table(state, shown, width, None if sel is None else sel - start, gutter=True)


def _lat_block(title: str, lat: Dict[str, Any], width: int) -> List[Text]:
    head = Text(title, style="bold")
    if not lat.get("count"):
        head.append("  no samples (c switches the window)", style="dim")
        return [_fit(head, width)]
    head.append(f"  {format_count(lat['count'])} samples  p50 {format_ns(lat['p50'])}"
                f"  p99 {format_ns(lat['p99'])}  max {format_ns(lat['max'])}")
    lines = [_fit(head, width)]
    for line in histogram_lines(Histogram.from_pairs(lat["hist"]), width):
        lines.append(_fit(line, width))
    return lines


def who_queues(state: TopState, row: Row) -> List[str]:
    """Adder → target pairs behind a row, most adds first."""
    if state.view == FUNCS:
        pairs = [(a, row.line["func"]) for a in row.line.get("adders") or []]
    else:
        tids = {row.line["tid"]} if state.view == TASKS else set(row.line.get("pids", ()))
        pairs = [(a, f["func"]) for f in (state.cur.funcs if state.cur else [])
                 for a in f.get("adders") or [] if a["tid"] in tids]
    pairs.sort(key=lambda p: -p[0]["adds"])
    return [f"{a['adder_comm']}[{a['adder_pid']}] → {a['comm']}[{a['tid']}]  {func}"
            f"  ×{format_count(a['adds'])}" for a, func in pairs]


def detail_lines(state: TopState, row: Row, width: int) -> List[Text]:
    ln = row.line
    if state.view == TASKS:
        title = Text(f"{ln['comm']}", style="bold cyan")
        ns = f" (in its namespace {ln['ns_pid']})" if ln.get("ns_pid") is not None else ""
        title.append(f"  tid {ln['tid']} pid {ln['pid']}{ns}  depth {ln['depth']} "
                     f"(max {ln['max_depth']})  busiest {ln.get('busiest') or '-'}"
                     f"  cgroup {ln.get('cgroup') or '-'}")
    elif state.view == CGROUPS:
        title = Text(ln["cgroup"], style="bold cyan")
        title.append(f"  {ln['tasks']} tasks  depth {ln['depth']} (max {ln['max_depth']})")
    else:
        title = Text(ln["func"], style="bold cyan")
        if not ln.get("probed", True):
            title.append("  not probed: run time is per task_work_run batch", style="yellow")
    totals = Text(f"since start: adds {format_count(ln['adds'])}  failed "
                  f"{format_count(ln['failed_adds'])}  cancels {format_count(ln['cancels'])}"
                  f"  callbacks {format_count(ln['callbacks'])}")
    now = Text(f"last interval: {format_rate(row.adds_s)} adds  "
               f"{format_rate(row.cb_s)} callbacks")
    queue, run = state.latency(row)
    window = "since start" if state.cumulative else "last interval"
    out = [_fit(title, width), _fit(totals, width), _fit(now, width)]
    out += _lat_block(f"queue latency ({window})", queue, width)
    out += _lat_block(f"run time ({window})", run, width)
    out.append(Text("who queues work on it", style="bold"))
    out += [_fit(Text("  " + w), width) for w in who_queues(state, row)] or [Text("  -")]
    return out


def help_lines(width: int) -> List[Text]:
    out = [Text("Keys", style="bold")]
    for key, what in HELP:
        line = Text(f"  {key:<10}", style="bold")
        line.append(what)
        out.append(_fit(line, width))
    out.append(Text(""))
    out.append(_fit(Text("Rows that go quiet are dimmed, then hidden after a while; "
                         "rows with queued items stay.", style="dim"), width))
    return out


def body_lines(state: TopState, width: int, height: int) -> List[Text]:
    if state.help:
        return help_lines(width)[:height]
    row = state.selected_row() if state.detail else None
    if row is not None:
        lines = detail_lines(state, row, width)
        state.detail_scroll = min(state.detail_scroll, max(0, len(lines) - height))
        return lines[state.detail_scroll:state.detail_scroll + height]
    return table_lines(state, width, height)


def screen_lines(state: TopState, width: int, height: int) -> List[Text]:
    """Exactly the lines of one frame (at most height of them)."""
    small = too_small(width, height)
    if small:
        return [Text(small, style="bold yellow")]
    body_h = height - HEAD_H - FOOT_H
    body = body_lines(state, width, body_h)
    body += [Text("")] * (body_h - len(body))
    return header_lines(state, width) + body + [footer(state, width)]


def screen(state: TopState, width: int, height: int) -> Group:
    return Group(*screen_lines(state, width, height))

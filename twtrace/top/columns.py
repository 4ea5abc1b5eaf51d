"""Table columns of both views, and fitting them into a terminal width.

Each column has a priority; when the width shrinks, the least important
columns go first, then the name columns (COMM, FUNC, ...) narrow down to
their minimum.  Strings from the kernel go into Text as plain text, never
markup, so a task named "[red]" shows as itself.
"""
from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional, Sequence

from rich.text import Text

from twtrace.cgroups import short_name
from twtrace.top.state import CGROUPS, FUNCS, TASKS, Row, TopState
from twtrace.units import MISSING, format_count, format_ns, format_rate

SEP = " "


class Col(NamedTuple):
    name: str
    cell: Callable[[TopState, Row], str]
    prio: int                # 0 = never dropped; larger goes first
    flex: bool = False       # a name: left-aligned, may narrow to min_w
    min_w: int = 0
    max_w: int = 0           # widest a flexible column grows to
    optional: bool = False   # left out when no row has a value (older recordings)


def rate(v: Optional[float]) -> str:
    """A per-second rate without the "/s" (the column head says it)."""
    text = format_rate(v)
    return text[:-2] if text.endswith("/s") else text


def _lat(which: int, stat: str) -> Callable[[TopState, Row], str]:
    return lambda st, r: format_ns(st.latency(r)[which].get(stat))


def _count(name: str) -> Callable[[TopState, Row], str]:
    return lambda st, r: format_count(r.line.get(name))


def pid_cell(line) -> str:
    """The host pid, and the pid inside the task's container where it differs."""
    ns = line.get("ns_pid")
    return f"{line['pid']}({ns})" if ns is not None else str(line["pid"])


def cgroup_cell(line) -> str:
    return short_name(line["cgroup"]) if line.get("cgroup") else MISSING


def top_adder(line) -> str:
    adders = sorted(line.get("adders") or [], key=lambda a: -a["adds"])
    if not adders:
        return MISSING
    a = adders[0]
    more = f" +{len(adders) - 1}" if len(adders) > 1 else ""
    return f"{a['adder_comm']}[{a['adder_pid']}]→{a['comm']}[{a['tid']}]{more}"


LAT = [Col("Q50", _lat(0, "p50"), 12), Col("Q99", _lat(0, "p99"), 4),
       Col("QMAX", _lat(0, "max"), 7), Col("R50", _lat(1, "p50"), 13),
       Col("R99", _lat(1, "p99"), 5), Col("RMAX", _lat(1, "max"), 8)]

COLUMNS = {
    TASKS: [
        Col("PID", lambda st, r: pid_cell(r.line), 0),
        Col("TID", lambda st, r: str(r.line["tid"]), 9),
        Col("COMM", lambda st, r: r.line["comm"], 0, True, 10, 15),
        Col("CGROUP", lambda st, r: cgroup_cell(r.line), 5, True, 12, 18, optional=True),
        Col("ADD/s", lambda st, r: rate(r.adds_s), 1),
        Col("CB/s", lambda st, r: rate(r.cb_s), 2),
        Col("DEP", _count("depth"), 3),
        Col("MAXD", _count("max_depth"), 6),
        *LAT,
        Col("FAIL", _count("failed_adds"), 11),
        Col("CNCL", _count("cancels"), 14),
        Col("BUSIEST", lambda st, r: r.line.get("busiest") or MISSING, 10, True, 8, 24),
    ],
    FUNCS: [
        Col("FUNC", lambda st, r: r.line["func"], 0, True, 14, 28),
        Col("ADD/s", lambda st, r: rate(r.adds_s), 1),
        Col("CB/s", lambda st, r: rate(r.cb_s), 2),
        *LAT,
        Col("FAIL", _count("failed_adds"), 11),
        Col("CNCL", _count("cancels"), 14),
        Col("TOP ADDER→TARGET", lambda st, r: top_adder(r.line), 3, True, 20, 40),
    ],
    CGROUPS: [
        Col("CGROUP", lambda st, r: r.line["name"], 0, True, 18, 24),
        Col("TASKS", _count("tasks"), 6),
        Col("ADD/s", lambda st, r: rate(r.adds_s), 1),
        Col("CB/s", lambda st, r: rate(r.cb_s), 2),
        Col("DEP", _count("depth"), 3),
        *LAT,
        Col("FAIL", _count("failed_adds"), 11),
        Col("PATH", lambda st, r: r.line["cgroup"], 9, True, 10, 60),
    ],
}


class Fitted(NamedTuple):
    col: Col
    width: int
    head: str


def head_text(state: TopState, col: Col, view: str) -> str:
    """The column head; the sort column carries ▼ (descending) or ▲."""
    if col.name != state.sort_col(view).name:
        return col.name
    return col.name + ("▼" if state.descending(view) else "▲")


def shown(col: Col, cells: List[str]) -> bool:
    return not col.optional or any(x != MISSING for x in cells)


def fit(state: TopState, view: str, cols: List[Col], cells: List[List[str]],
        width: int) -> List[Fitted]:
    """Choose and size columns for width: by priority while they fit, then
    widen the name columns with what is left.  cells[i] are column i's cells."""
    heads = [head_text(state, c, view) for c in cols]
    natural = [max([len(h)] + [len(x) for x in cells[i]]) for i, h in enumerate(heads)]
    want = [min(max(n, c.min_w), c.max_w) if c.flex else n for c, n in zip(cols, natural)]
    least = [min(c.min_w, w) if c.flex else w for c, w in zip(cols, want)]
    chosen: List[int] = []
    used = 0
    for i in sorted(range(len(cols)), key=lambda i: cols[i].prio):
        extra = least[i] + (len(SEP) if chosen else 0)
        if used + extra <= width:
            chosen.append(i)
            used += extra
    chosen.sort()
    sizes = {i: least[i] for i in chosen}
    for i in chosen:  # widen name columns in display order
        if cols[i].flex:
            grow = min(want[i] - sizes[i], width - used)
            if grow > 0:
                sizes[i] += grow
                used += grow
    return [Fitted(cols[i], sizes[i], heads[i]) for i in chosen]


def cell_text(text: str, width: int, left: bool) -> str:
    """Pad or cut text to exactly width cells ("…" marks a cut)."""
    if len(text) > width:
        text = text[:max(0, width - 1)] + "…" if width > 0 else ""
    return text.ljust(width) if left else text.rjust(width)


def line_of(fitted: Sequence[Fitted], values: Sequence[str], style: str = "") -> Text:
    parts = [cell_text(v, f.width, f.col.flex) for f, v in zip(fitted, values)]
    return Text(SEP.join(parts), style=style, no_wrap=True, overflow="crop")


def table(state: TopState, rows: Sequence[Row], width: int,
          selected: Optional[int] = None, view: Optional[str] = None,
          gutter: bool = False) -> List[Text]:
    """Head line and one line per row of view (default: the current one),
    fitted to width.  With gutter, each line starts with a one-cell mark,
    ">" on the selected row, so the selection shows without colours too."""
    view = view or state.view
    every = [(c, [c.cell(state, r) for r in rows]) for c in COLUMNS[view]]
    kept = [(c, x) for c, x in every if shown(c, x)]
    cols, cells = [c for c, _ in kept], [x for _, x in kept]
    fitted = fit(state, view, cols, cells, width - (1 if gutter else 0))
    index = {c.name: i for i, c in enumerate(cols)}
    out = [_with_gutter(gutter, " ", line_of(fitted, [f.head for f in fitted], "bold"))]
    for n, r in enumerate(rows):
        style = "dim" if r.quiet else ""
        if n == selected:
            style = "reverse " + style
        line = line_of(fitted, [cells[index[f.col.name]][n] for f in fitted], style)
        out.append(_with_gutter(gutter, ">" if n == selected else " ", line))
    return out


def _with_gutter(gutter: bool, mark: str, line: Text) -> Text:
    if not gutter:
        return line
    return Text(mark, style="bold", no_wrap=True, overflow="crop") + line

"""Output when not interactive: a bcc-style block of plain tables per
interval, or one JSON Lines snapshot group per interval (the record
format's snapshot/task/func lines, plus the computed rates as extra
fields, which record readers ignore)."""
from __future__ import annotations

import json
import time
from typing import Any, Dict, List, Optional, Tuple

from rich.cells import cell_len
from rich.text import Text

from twtrace.top import columns
from twtrace.top.render import fmt_pct
from twtrace.top.state import CGROUPS, FUNCS, TASKS, Row, TopState
from twtrace.units import format_count, format_ns, format_rate


def stamp(state: TopState) -> str:
    """Wall clock like bcc's -T when live; time since tracing began in a replay."""
    if state.meta.replay is not None and state.cur is not None:
        return "+" + format_ns(state.cur.ts_ns - state.meta.start_ns)
    return time.strftime("%H:%M:%S")


def summary_line(state: TopState) -> Text:
    t = state.totals
    line = Text(f"{stamp(state)} items {format_rate(t.items_s)} adds {format_rate(t.adds_s)} "
                f"callbacks {format_rate(t.cb_s)} lost {format_count(t.lost)} "
                f"evicted {format_count(t.evicted)} unmatched {format_count(t.unmatched)}"
                + (f" skipped {format_count(t.skipped)}" if t.skipped else ""),
                style="bold")
    if t.bpf_pct is not None or t.cpu_pct is not None:
        line.append(f" cost bpf {fmt_pct(t.bpf_pct)} cpu {fmt_pct(t.cpu_pct)}")
        if t.self_s is not None:
            line.append(f" self {format_rate(t.self_s)}")
    return line


def frame(state: TopState, width: int) -> List[Text]:
    """One interval's block: summary line, tasks table, callbacks table."""
    out = [summary_line(state)]
    views = [(TASKS, "no task received task_work"), (FUNCS, "no callback seen")]
    if any(r.line.get("cgroup") for r in state.rows[TASKS].values()):
        views.append((CGROUPS, "no cgroup"))  # recordings from before cgroups have none
    for view, empty in views:
        rows = [r for r in state.visible(view) if not r.gone]
        out.append(Text(""))
        lines = columns.table(state, rows, width, view=view) if rows else [Text(empty)]
        for line in lines:
            line.rstrip()  # padding of the last column is noise in a pipe
        out += lines
    out.append(Text(""))
    return out


def frame_text(state: TopState, width: int) -> str:
    """frame() as the text a pipe gets: no styles, each line cut to the
    width with an ellipsis.  What rich's print does with the same lines,
    at a hundredth of its cost per tick."""
    return "".join(_fit(line.plain.rstrip(), width) + "\n" for line in frame(state, width))


def _fit(s: str, width: int) -> str:
    if len(s) <= width and (s.isascii() or cell_len(s) <= width):
        return s
    t = Text(s)
    t.truncate(width, overflow="ellipsis")
    return t.plain


def _rates(row: Optional[Row], dt_ns: int) -> Dict[str, Any]:
    if row is None:
        return {}
    return {"interval_ns": dt_ns, "adds_per_s": row.adds_s, "callbacks_per_s": row.cb_s}


def _snapshot(state: TopState) -> Dict[str, Any]:
    cur, t = state.cur, state.totals
    snap = dict(cur.snapshot, interval_ns=t.dt_ns, items_per_s=t.items_s, adds_per_s=t.adds_s,
                callbacks_per_s=t.cb_s, bpf_pct=t.bpf_pct, cpu_pct=t.cpu_pct,
                self_adds_per_s=t.self_s)
    # counters the record format defines as integers: left out when unknown
    snap.update({k: v for k, v in (("lost_events", t.lost), ("evicted", t.evicted))
                 if v is not None})
    snap["skipped_runs"] = t.skipped  # null: this kernel does not count them
    return snap


def _shown(state: TopState) -> List[Tuple[Dict[str, Any], Optional[Row]]]:
    """The task and func lines the view's filters pass, each with its row."""
    cur = state.cur
    tasks, funcs = state.rows[TASKS], state.rows[FUNCS]
    out = [(x, tasks.get(x["tid"])) for x in cur.tasks if state.filters.task_ok(x)]
    return out + [(x, funcs.get(x["func"])) for x in cur.funcs if state.filters.func_ok(x)]


def json_group(state: TopState) -> List[Dict[str, Any]]:
    """The current snapshot group, filtered as the view is, with rates."""
    if state.cur is None:
        return []
    dt = state.totals.dt_ns
    return [_snapshot(state)] + [dict(x, **_rates(row, dt)) for x, row in _shown(state)]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def json_text(state: TopState) -> str:
    return JsonLines().text(state)


class JsonLines:
    """`top --json`'s text of each group (json_group's lines, encoded).  Kept
    across ticks: a task or func line that did not change since the last tick
    is the same object (Snapshotter's cache), so its encoding is kept and only
    its rates are encoded again.  On a host with thousands of mostly idle
    threads that is most of a tick's work."""

    def __init__(self) -> None:
        self._cache: Dict[int, Tuple[Dict[str, Any], str]] = {}

    def text(self, state: TopState) -> str:
        if state.cur is None:
            return ""
        out = [_dumps(_snapshot(state)) + "\n"]
        cache: Dict[int, Tuple[Dict[str, Any], str]] = {}
        tails: Dict[Tuple, str] = {}  # most rows share "no change" rates
        for line, row in _shown(state):
            hit = self._cache.get(id(line))
            body = hit[1] if hit is not None and hit[0] is line else _dumps(line)[:-1]
            cache[id(line)] = (line, body)  # holding the line keeps its id unique
            rk = (row.adds_s, row.cb_s) if row is not None else None
            if rk not in tails:
                rates = _rates(row, state.totals.dt_ns)
                tails[rk] = "," + _dumps(rates)[1:] if rates else "}"
            out.append(body + tails[rk] + "\n")
        self._cache = cache
        return "".join(out)

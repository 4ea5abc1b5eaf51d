"""From measured windows to the reported figures (pure; unit-tested).

Per round, each traced kind is set against the same round's untraced window
(slowdown) and the same round's bpftrace window (the ratios); the medians
and minima are over rounds.
"""
from benchmarks import stats

TRACED = ("top", "record", "events", "bpftrace")
TWTRACE = ("top", "record", "events")


def by_round(windows):
    """{round: {kind: window}}"""
    out = {}
    for w in windows:
        out.setdefault(w["round"], {})[w["kind"]] = w
    return out


def per_round(windows, kind, fn):
    return [fn(r) for r in by_round(windows).values() if kind in r]


def figures(windows):
    rounds = by_round(windows)
    out = {}
    for kind in TRACED:
        rs = [r for r in rounds.values() if kind in r]
        if not rs:
            continue
        out[kind] = _kind_figures(kind, rs)
    return out


def _against(rs, kind, other, field):
    return [stats.ratio(r[kind].get(field), r[other].get(field))
            for r in rs if other in r]


def _kind_figures(kind, rs):
    fig = {
        "slowdown": stats.summary([stats.slowdown(r["untraced"]["items_per_s"],
                                                  r[kind]["items_per_s"])
                                   for r in rs if "untraced" in r]),
        "bpf_ns_per_item": stats.summary([r[kind].get("bpf_ns_per_item") for r in rs]),
        "cpu_frac": stats.summary([r[kind].get("cpu_frac") for r in rs]),
        "startup_s": stats.summary([r[kind].get("startup_s") for r in rs]),
        "exact": exactness(kind, [r[kind] for r in rs]),
        "progs": prog_split([r[kind] for r in rs]),
    }
    if kind != "bpftrace":
        for field, name in (("bpf_ns_per_item", "bpf_vs_bpftrace"),
                            ("cpu_frac", "cpu_vs_bpftrace"),
                            ("startup_s", "startup_vs_bpftrace")):
            fig[name] = stats.summary(_against(rs, kind, "bpftrace", field))
    return fig


TICK_ADDS_PER_S = 10  # task_mm_cid_work: at most one per 100 ms per mm


def exactness(kind, windows):
    """How many windows' tracer counts match the storm's own, of how many
    checked. Per-task totals (record's task line, bpftrace's @adds) also hold
    the tick's task_mm_cid_work adds on the storm: they match when the
    excess is within the tick's rate. Add lines are counted for ____fput
    alone and must match exactly, with nothing lost."""
    good = checked = 0
    extras = []
    for w in windows:
        seen = w.get("seen")
        if seen is None:
            continue
        checked += 1
        total = seen if isinstance(seen, int) else seen.get("task_adds")
        extra = None if total is None else total - w["items"]
        extras.append(extra)
        ok = extra is not None and 0 <= extra <= TICK_ADDS_PER_S * w["seconds"] + 2
        if isinstance(seen, dict) and "add_lines" in seen:
            ok = ok and seen["add_lines"] == w["items"] and not seen.get("lost")
        good += ok
    return {"exact": good, "checked": checked, "task_excess": extras}


def prog_split(windows):
    """BPF ns per storm item for each program, over all windows of a kind."""
    items = sum(w["items"] for w in windows)
    total = {}
    for w in windows:
        for name, p in (w.get("progs") or {}).items():
            t = total.setdefault(name, [0, 0])
            t[0] += p["run_time_ns"]
            t[1] += p["run_cnt"]
    return {name: {"ns_per_item": stats.ratio(t, items), "runs_per_item": stats.ratio(n, items)}
            for name, (t, n) in sorted(total.items(), key=lambda kv: -kv[1][0])}

"""The benchmark's results as Markdown tables (printed, and pasted into
docs/performance.md)."""
from benchmarks.figures import TRACED

HEAD = {"top": "`top 1`", "record": "`record`", "events": "`record --events`",
        "bpftrace": "bpftrace script"}


def fmt(v, unit="", digits=2):
    if v is None:
        return "–"
    if unit == "%":
        return "%.1f %%" % (v * 100)
    return ("%%.%df%%s" % digits) % (v, unit)


def med_min(s, unit="", digits=2):
    if not s or s.get("median") is None:
        return "–"
    return "%s (min %s)" % (fmt(s["median"], unit, digits), fmt(s["min"], unit, digits))


ROWS = (
    ("workload slowdown vs untraced", "slowdown", "×", 2),
    ("BPF run time per item, ns (emulated)", "bpf_ns_per_item", "", 0),
    ("BPF run time vs bpftrace's", "bpf_vs_bpftrace", "", 2),
    ("tracer's own CPU (user+sys, of one CPU)", "cpu_frac", "%", 1),
    ("own CPU vs bpftrace's", "cpu_vs_bpftrace", "", 2),
    ("ready after start, s (emulated)", "startup_s", "", 1),
    ("ready time vs bpftrace's", "startup_vs_bpftrace", "", 2),
)


def main_table(figs, lossless=None):
    kinds = [k for k in TRACED if k in figs]
    lines = ["| measure (median over rounds, min) | " + " | ".join(HEAD[k] for k in kinds) + " |",
             "|---|" + "---:|" * len(kinds)]
    for label, key, unit, digits in ROWS:
        cells = [med_min(figs[k].get(key), unit, digits) for k in kinds]
        lines.append("| %s | %s |" % (label, " | ".join(cells)))
    ex = ["%d/%d" % (figs[k]["exact"]["exact"], figs[k]["exact"]["checked"])
          if figs[k]["exact"]["checked"] else "–" for k in kinds]
    lines.append("| counts equal the storm's own (windows) | %s |" % " | ".join(ex))
    if lossless:
        best = lossless.get("highest_lossless_items_per_s")
        cells = [("%.0f items/s" % best if best else "none lossless") if k == "events" else "–"
                 for k in kinds]
        lines.append("| highest lossless storm rate | %s |" % " | ".join(cells))
    return "\n".join(lines)


def prog_table(figs, top=6):
    lines = ["| tracer | BPF program | ns per item | runs per item |", "|---|---|---:|---:|"]
    for kind in TRACED:
        for name, p in list((figs.get(kind) or {}).get("progs", {}).items())[:top]:
            lines.append("| %s | `%s` | %s | %s |" % (HEAD[kind], name,
                                                     fmt(p["ns_per_item"], "", 0),
                                                     fmt(p["runs_per_item"], "", 2)))
    return "\n".join(lines)


def lossless_table(lossless):
    lines = ["| target rate | achieved items/s | add lines / storm's count | lost | lossless |",
             "|---:|---:|---:|---:|---|"]
    for s in lossless["steps"]:
        lines.append("| %s | %.0f | %d / %d | %d | %s |" % (
            s["rate_target"] or "flat out", s["items_per_s"], s["add_lines"], s["items"],
            s["lost"], "yes" if s["lossless"] else "no"))
    return "\n".join(lines)


def print_results(res):
    """The tables of a results file (benchmarks/results/*.json)."""
    if "long" in res:
        from benchmarks.longrun import table as long_table
        print(long_table(res["long"]))
        return
    print(main_table(res["figures"], res["lossless"]))
    print()
    print(prog_table(res["figures"]))
    print()
    print(lossless_table(res["lossless"]))


if __name__ == "__main__":
    import json
    import sys

    with open(sys.argv[1]) as f:
        print_results(json.load(f))

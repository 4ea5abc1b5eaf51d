"""One measured window: a tracer (or none) attached while the storm runs.

Everything is read at the window's two edges, so the tracer's start-up and
stop are outside it: BPF run time and runs per program (fdinfo, with the
kernel's bpf_stats on), the tracer's user+system CPU, and the storm's own
count of closes (the truth the tracer's counts are checked against).
"""
import os
import time

from benchmarks import procfs, recfile, stats
from benchmarks.bpfnames import prog_names
from benchmarks.tracers import Tracer

KINDS = ("untraced", "top", "record", "events", "bpftrace")
SETTLE_S = 2.0  # after ready: top's first read and record's callback probing are done
OUTDIR = "/tmp/twbench"


def measure(kind, storm, seconds, rnd):
    if kind == "untraced":
        res = storm.phase(seconds)
        return {"kind": kind, "round": rnd, "items": res["items"],
                "items_per_s": res["items_per_s"], "seconds": res["seconds"]}
    os.makedirs(OUTDIR, exist_ok=True)
    outfile = os.path.join(OUTDIR, "%s-%d.jsonl" % (kind, rnd))
    adds = {"bpftrace": None}

    def on_line(stream, line, ts):
        n = recfile.bpftrace_adds(line, storm.pid) if kind == "bpftrace" else None
        if n is not None:
            adds["bpftrace"] = n

    tracer = Tracer(kind, outfile=outfile, on_line=on_line)
    try:
        startup = tracer.wait_ready()
        time.sleep(SETTLE_S)
        names = prog_names()
        win = _window(tracer.pid, storm, seconds)
    finally:
        rc = tracer.stop()
    win.update(kind=kind, round=rnd, startup_s=startup, rc=rc)
    win["progs"] = prog_split(win.pop("prog_deltas"), names)
    win["seen"] = _seen(kind, outfile, storm.pid, win, adds["bpftrace"])
    if os.path.exists(outfile):
        os.unlink(outfile)
    return win


def _window(pid, storm, seconds):
    p0, c0, w0 = procfs.prog_stats(pid), procfs.cpu_seconds(pid), time.monotonic()
    res = storm.phase(seconds)
    p1, c1, w1 = procfs.prog_stats(pid), procfs.cpu_seconds(pid), time.monotonic()
    deltas = stats.prog_deltas(p0, p1)
    bpf_ns = sum(t for t, _ in deltas.values())
    return {"items": res["items"], "items_per_s": res["items_per_s"], "seconds": res["seconds"],
            "t_begin_ns": res["t_begin_ns"], "t_end_ns": res["t_end_ns"],
            "bpf_ns": bpf_ns, "bpf_runs": sum(n for _, n in deltas.values()),
            "bpf_ns_per_item": stats.ratio(bpf_ns, res["items"]),
            "cpu_s": c1 - c0, "cpu_frac": stats.ratio(c1 - c0, w1 - w0),
            "prog_deltas": deltas}


def _seen(kind, outfile, pid, win, bpftrace_adds):
    """The tracer's count of the storm's adds, to set against win['items']
    (None where the tracer does not say). record counts the whole run, which
    for the storm is just this window (it queues nothing between phases)."""
    if kind == "bpftrace":
        return bpftrace_adds
    if kind not in ("record", "events") or not os.path.exists(outfile):
        return None
    with open(outfile) as f:
        scan = recfile.scan_record(f, pid, [(win["t_begin_ns"], win["t_end_ns"])])
    task_adds = scan["task"]["adds"] if scan["task"] else 0
    if kind == "events":
        return {"task_adds": task_adds, "add_lines": scan["window_adds"][0],
                "lost": sum(n for _, n in scan["lost"])}
    return {"task_adds": task_adds}


def order(rnd):
    """ABAB..., reversed every other round so that drift over the run falls
    evenly on every kind."""
    return KINDS if rnd % 2 == 0 else tuple(reversed(KINDS))


def prog_split(deltas, names):
    """{name: run time and count} over the window.  Programs that share a name
    (bcc names a function's fentry and fexit programs alike) are summed, so
    their runs per item say how many there were."""
    out = {}
    for pid, (t, n) in sorted(deltas.items()):
        if not n:
            continue
        p = out.setdefault(names.get(pid, "id%d" % pid), {"run_time_ns": 0, "run_cnt": 0})
        p["run_time_ns"] += t
        p["run_cnt"] += n
    return out

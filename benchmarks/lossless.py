"""`record --events`: the highest storm rate it records without loss.

One recording (--interval 1, so lost counts are written as they happen)
while the storm steps up a ladder of rates. A step is lossless when the
file holds exactly the storm's own count of add lines inside the step and
no lost line falls in it or the gap after it.
"""
import os
import time

from benchmarks import recfile
from benchmarks.tracers import Tracer
from benchmarks.windows import OUTDIR, SETTLE_S

GAP_S = 3.0  # lost counts of a step are written within this after it
DRAIN_MAX_S = 180.0


def ladder(quick):
    # 12,000 is the goal (issue 9): a step of its own, so the figure says which side it is on
    return (1000, 4000, 16000, 0) if quick else (500, 1000, 2000, 4000, 8000, 12000, 16000,
                                                  24000, 32000, 0)


def run(storm, quick):
    os.makedirs(OUTDIR, exist_ok=True)
    outfile = os.path.join(OUTDIR, "lossless.jsonl")
    step_s = 2.0 if quick else 4.0
    tracer = Tracer("events", outfile=outfile, interval=1)
    steps = []
    try:
        tracer.wait_ready()
        time.sleep(SETTLE_S)
        for rate in ladder(quick):
            steps.append(storm.phase(step_s, rate))
            time.sleep(GAP_S)
            wait_drained(outfile)
    finally:
        tracer.stop()
    with open(outfile) as f:
        scan = recfile.scan_record(f, storm.pid, [(s["t_begin_ns"], s["t_end_ns"]) for s in steps])
    os.unlink(outfile)
    return judge(steps, scan)


def wait_drained(path, quiet_s=2.0, idle_bytes_per_s=16384):
    """Until the recording grows no faster than its once-a-second snapshot
    lines do: user space has written what the kernel buffer held (a backlog
    still in the buffer at stop is dropped uncounted, and would be counted
    against the wrong step)."""
    deadline = time.monotonic() + DRAIN_MAX_S
    size, still = -1, 0.0
    while still < quiet_s and time.monotonic() < deadline:
        time.sleep(1.0)
        now = os.path.getsize(path) if os.path.exists(path) else 0
        still = still + 1.0 if 0 <= now - size <= idle_bytes_per_s else 0.0
        size = now


def judge(steps, scan):
    out = []
    for step, seen in zip(steps, scan["window_adds"]):
        lost = recfile.lost_between(scan["lost"], step["t_begin_ns"],
                                    step["t_end_ns"] + int(GAP_S * 1e9))
        out.append({"rate_target": step["rate_target"], "items": step["items"],
                    "items_per_s": step["items_per_s"], "add_lines": seen, "lost": lost,
                    "lossless": seen == step["items"] and lost == 0})
    ok = [s["items_per_s"] for s in out if s["lossless"]]
    return {"steps": out, "highest_lossless_items_per_s": max(ok) if ok else None,
            "total_lost": sum(n for _, n in scan["lost"])}

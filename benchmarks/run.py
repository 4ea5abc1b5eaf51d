"""The benchmark driver, run inside the guest by scripts/bench.

    python3 -m benchmarks.run --out FILE [--quick] [--rounds N] [--seconds S] [--long]

Interleaved windows of the close_range storm: untraced, twtrace top,
record, record --events and the bpftrace script; then the lossless event
rate of record --events. Writes every window and the figures to FILE (JSON)
and prints the tables. --long runs the long-run benchmark instead.
"""
import argparse
import json
import os
import platform
import sys
import time

from benchmarks import figures, lossless, table, windows
from benchmarks.workload import StormProc

BPF_STATS = "/proc/sys/kernel/bpf_stats_enabled"


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


class BpfStatsOn:
    """The kernel's per-program run-time accounting, on for the whole run so
    that every tracer pays its (small, per-run) cost alike."""

    def __enter__(self):
        with open(BPF_STATS) as f:
            self.old = f.read().strip()
        with open(BPF_STATS, "w") as f:
            f.write("1")

    def __exit__(self, *exc):
        with open(BPF_STATS, "w") as f:
            f.write(self.old)


def parse(argv):
    p = argparse.ArgumentParser(prog="benchmarks.run")
    p.add_argument("--out", required=True)
    p.add_argument("--cell", default="")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--long", action="store_true")
    p.add_argument("--rounds", type=int)
    p.add_argument("--seconds", type=float)
    p.add_argument("--forks", type=int, default=100000)
    a = p.parse_args(argv)
    a.rounds = a.rounds or (1 if a.quick else 5)
    a.seconds = a.seconds or (3.0 if a.quick else 10.0)
    return a


def environment(cell):
    return {"cell": cell, "kernel": platform.release(), "arch": platform.machine(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "cpus": os.cpu_count()}


def matrix(args, storm):
    wins = []
    for rnd in range(args.rounds):
        for kind in windows.order(rnd):
            log("round %d/%d: %s" % (rnd + 1, args.rounds, kind))
            w = windows.measure(kind, storm, args.seconds, rnd)
            log("  %.0f items/s%s" % (w["items_per_s"], "" if kind == "untraced" else
                                      ", ready %.1f s, seen %s of %d" % (
                                          w["startup_s"], w["seen"], w["items"])))
            wins.append(w)
    log("record --events lossless ladder")
    loss = lossless.run(storm, args.quick)
    figs = figures.figures(wins)
    return {"windows": wins, "figures": figs, "lossless": loss}


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    res = {"env": environment(args.cell),
           "params": {"quick": args.quick, "rounds": args.rounds, "seconds": args.seconds,
                      "files_per_close_range": 64}}
    t0 = time.monotonic()
    with BpfStatsOn():
        storm = StormProc(64)
        try:
            if args.long:
                from benchmarks import longrun
                res["long"] = longrun.run(args, storm)
            else:
                res.update(matrix(args, storm))
        finally:
            storm.close()
    res["elapsed_s"] = time.monotonic() - t0
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    table.print_results(res)
    log("wrote %s (%.0f s)" % (args.out, res["elapsed_s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

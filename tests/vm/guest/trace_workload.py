"""Runs inside the guest: attach twtrace's BPF program through the loader,
run one workload, and print what was traced as JSON (events of the
workload's own process, the aggregates, the features and the workload's
ground truth). Used by the harness test, before and beside `twtrace record`.

usage: trace_workload.py PROBE_MODE WORKLOAD.py [ARGS...]
"""
import json
import subprocess
import sys

from twtrace.loader import Loader, TraceConfig


def main():
    mode, argv = sys.argv[1], sys.argv[2:]
    loader = Loader(TraceConfig(probe_mode=mode, events=True))
    features = loader.start()
    events = []
    loader.on_event(events.append)
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, text=True)
    while proc.poll() is None:
        loader.poll(100)
    out = proc.stdout.read()
    for _ in range(3):
        loader.poll(50)
    truth = json.loads(out.strip().splitlines()[-1])
    from twtrace.totals import Totals

    tot = Totals()
    tot.apply(loader.drain())
    stats = loader.read_stats()
    pid = truth["pid"]
    names = {}
    for e in events:
        names.setdefault(e["func"], loader.syms.name(e["func"]))
    json.dump({
        "probe_mode": features.probe_mode,
        "features": features.as_dict(),
        "truth": truth,
        "rc": proc.returncode,
        "events": [dict(e, func_name=names.get(e["func"])) for e in events
                   if pid in (e["pid"], e["adder_pid"])],
        "task": next((t for (tid, _), t in tot.tasks.items() if tid == truth["tid"]), None),
        "aggs": [dict(v, tid=tk[0], func=loader.syms.name(f)) for (tk, f), v in tot.aggs.items()
                 if tk[0] == truth["tid"]],
        "stats": stats,
    }, sys.stdout)
    loader.close()


if __name__ == "__main__":
    main()

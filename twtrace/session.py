"""What `record` and `top` share: draining a started Loader into cumulative
Totals, settling items whose callback ran unseen, and building the record
format's lines.

It sits between the loader (bcc) and the pure model, so neither needs the
other.
"""
from __future__ import annotations

import time
from typing import List, Optional

from twtrace import cgroups, model, pidns
from twtrace.totals import Totals


class Session:
    def __init__(self, loader, comm: Optional[str] = None, keep_exited: bool = True):
        self.loader = loader
        stack = loader.stack if loader.cfg.stacks else None
        self.cgroups = cgroups.Resolver()
        self.snap = model.Snapshotter(loader.syms.name, loader.probed, stack,
                                      cgroup=self.cgroups.path, ns_pid=pidns.ns_pid)
        self.totals = Totals(comm, keep_exited=keep_exited)
        self.stats: dict = {"lost": 0, "full": {}}
        self.settled = 0
        self.read_ns = 0  # what the latest read() cost, wall time

    def read(self, skipped: bool = True) -> List[dict]:
        """Drains the kernel into the totals; returns batch-timed callback
        lines for the items this read settled.  skipped=False: a drain no
        snapshot follows, which keeps the programs' skipped runs as last read."""
        t0 = time.monotonic_ns()
        with self.loader.reading():
            delta = self.loader.drain(skipped)
            inflight = self.loader.inflight()
            runs = self.loader.task_runs({it["task"] for it in inflight.values()})
            gone = self.loader.forget_items(model.stale_items(inflight, runs))
        seen = self.totals.apply(delta)
        self.loader.probe_new_callbacks(f for f in seen if not self.loader.probed(f))
        self.totals.settle(gone.values())
        self.settled += len(gone)
        self.stats = {**delta["stats"], "settled": self.settled}
        self.read_ns = time.monotonic_ns() - t0
        for it in gone.values():
            t = self.totals.tasks.get((it["tid"], it["gen"]))
            it["comm"] = t["comm"] if t else "?"
        return model.batch_callback_lines(gone, self.snap.fname, time.monotonic_ns())

    def lines(self, ts_ns: int, seq: int, final: bool, changed_only: bool = False) -> List[dict]:
        """A snapshot group.  changed_only (record --interval): an
        intermediate snapshot lists only the tasks changed since the previous
        one, so writing it costs what the interval held; the final one lists
        every task still held."""
        changed = self.totals.take_touched()
        only = changed if changed_only and not final else None
        out = self.snap.lines(self.totals.view(), self.stats, ts_ns, seq, final, only)
        out[0]["read_ns"] = self.read_ns  # the cost of reading the kernel for it
        self.totals.fold_shown()
        return out

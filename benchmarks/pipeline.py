"""top's user-space pipeline alone, fed synthetic drains: no kernel, no guest.

    python3 -m benchmarks.pipeline [--forks N] [--ticks N] [--idle N]

Each tick hands the Session a drain like a fork storm's: --forks short-lived
children, each queueing three ____fput items on itself and freed by the next
tick, plus --idle long-lived threads of which one in 50 is busy per tick.  The
tick then does what `top --json 1` does (Session.read, Snapshotter lines with
the line cache, TopState.push, JSON text).  It prints the CPU time per tick for
each tenth of the run: a per-tick cost that grows with the run's length, or
with tasks that are idle, is a leak of work into history.
"""
from __future__ import annotations

import argparse
import contextlib
import time
import types
from typing import Dict, List, Tuple

from twtrace.session import Session
from twtrace.top import plain
from twtrace.top.sample import Meta, Sample
from twtrace.top.state import TopState

FPUT, MMCID = 0xffffffff81000000, 0xffffffff82000000
NAMES = {FPUT: "____fput", MMCID: "task_mm_cid_work"}
IDLE_BASE = 1_000_000  # tids of the long-lived threads


def agg(n: int, pid: int) -> dict:
    return {"pid": pid, "comm": "storm", "adds": n, "failed_adds": 0, "cancels": 0,
            "cancels_matched": 0, "callbacks": n, "matched": n, "timed": n,
            "queue_sum": 1000 * n, "queue_max": 2000, "run_sum": 500 * n, "run_max": 900,
            "run_cnt": n, "notify_mask": 2, "max_depth": 1, "runs": n}


class SyntheticLoader:
    """The surface Session uses, with drains made up as described above."""

    cfg = types.SimpleNamespace(stacks=False)
    syms = types.SimpleNamespace(name=NAMES.get)

    def __init__(self, forks: int, idle: int):
        self.forks, self.idle = forks, idle
        self.next_tid = 1000
        self.ticks = 0
        self.to_free: List[Tuple[int, int]] = []

    def probed(self, addr: int) -> bool:
        return True

    def reading(self):
        return contextlib.nullcontext()

    def inflight(self) -> dict:
        return {}

    def task_runs(self, tasks) -> dict:
        return {}

    def forget_items(self, items) -> dict:
        return {}

    def probe_new_callbacks(self, funcs) -> list:
        return []

    def drain(self, skipped: bool = True) -> dict:
        aggs: Dict[tuple, dict] = {}
        hists: Dict[tuple, dict] = {}
        pairs: Dict[tuple, dict] = {}
        retired = {tk: {"depth": 0, "ts": 1} for tk in self.to_free}
        self.to_free = []
        for _ in range(self.forks):
            tid, gen = self.next_tid, self.next_tid * 7
            self.next_tid += 1
            aggs[(tid, gen, FPUT)] = agg(3, tid)
            hists[(tid, gen, FPUT, 0)] = {100 + tid % 40: 2, 150: 1}
            hists[(tid, gen, FPUT, 1)] = {90 + tid % 30: 3}
            pairs[(tid, tid, gen, FPUT)] = {"adds": 3, "adder_comm": "storm"}
            self.to_free.append((tid, gen))
        for i in range(self.idle):
            if (i + self.ticks) % 50 == 0:
                aggs[(IDLE_BASE + i, 3, FPUT)] = agg(1, IDLE_BASE)
                hists[(IDLE_BASE + i, 3, FPUT, 0)] = {120: 1}
        aggs[(1, 7, MMCID)] = agg(1, 1)
        self.ticks += 1
        return {"aggs": aggs, "hists": hists, "pairs": pairs, "retired": retired,
                "stats": {"lost": 0, "full": {}, "skipped": 0}}


def run(forks: int, ticks: int, idle: int) -> List[float]:
    """CPU seconds per tick, one value per tenth of the run."""
    session = Session(SyntheticLoader(forks, idle), None, keep_exited=False)
    state = TopState(Meta(hostname="bench", start_ns=0), 1.0,
                     baseline=Sample({"type": "snapshot", "ts_ns": 0, "seq": -1, "final": False},
                                     lost=0))
    as_json = plain.JsonLines()
    tenth = max(ticks // 10, 1)
    out, t0 = [], time.process_time()
    for seq in range(ticks):
        session.read()
        fresh = session.totals.take_touched()
        lines = session.snap.lines(session.totals.view(), session.stats, (seq + 1) * 10**9,
                                   seq, False, fresh=fresh)
        session.totals.fold_shown()
        state.push(Sample(lines[0], [x for x in lines if x["type"] == "task"],
                          [x for x in lines if x["type"] == "func"], lost=0, evicted=0))
        as_json.text(state)
        if (seq + 1) % tenth == 0:
            now = time.process_time()
            out.append((now - t0) / tenth)
            t0 = now
    return out


def _count(least: int):
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = least - 1
        if n < least:
            raise argparse.ArgumentTypeError(f"needs a whole number >= {least}, not {text!r}")
        return n
    return parse


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m benchmarks.pipeline")
    ap.add_argument("--forks", type=_count(0), default=46, help="children per tick (default 46)")
    ap.add_argument("--ticks", type=_count(10), default=3000, help="ticks (default 3000)")
    ap.add_argument("--idle", type=_count(0), default=0, help="long-lived threads (default 0)")
    a = ap.parse_args(argv)
    per_tick = run(a.forks, a.ticks, a.idle)
    print("CPU per tick, ms, by tenth of the run: "
          + " ".join(f"{x * 1000:.1f}" for x in per_tick))
    first, last = per_tick[0], per_tick[-1]
    print(f"last tenth / first tenth: {last / first:.2f}" if first > 0 else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A recording's event lines as a timeline: slices, instants, flows and
queue-depth counters per thread, independent of any trace file format.

Everything here is derived from add, callback, cancel and run lines alone
(docs/format.md), so the picture agrees with the recording line by line:

- a `task_work_run` slice per run line, [ts_ns, ts_ns + dur_ns);
- a callback slice per timed callback, [ts_ns, ts_ns + run_ns), nested in its
  run by time; a callback without run time ("batch") is an instant;
- a queue-wait slice per item from its add to its callback (ts_ns -
  queue_ns), or to its cancel, or to the end of the recording if it never
  ran; waits overlap, so each task's waits are spread over lanes;
- a flow from the add (an instant on the adder's thread) to the callback,
  for callbacks whose add is in the recording;
- per task, the queue depth after every add, callback and cancel of an item
  whose add is in the recording (items queued before tracing are unknown).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

Line = Dict[str, Any]
_ORDER = {"add": 0, "run": 1, "callback": 2, "cancel": 3}  # at equal ts: cause first


@dataclass
class Mark:
    """A slice (end is not None) or an instant on one track."""

    track: Tuple  # ("thread", tid) or ("queue", tid, lane)
    ts: int
    name: str
    kind: str  # run, callback, queue, add, failed_add, cancel, batch_callback
    end: Optional[int] = None
    args: Dict[str, Any] = field(default_factory=dict)
    flow_out: Optional[int] = None  # flow starts here
    flow_in: Optional[int] = None  # flow ends here


@dataclass
class Timeline:
    start_ns: int
    end_ns: int
    threads: Dict[int, Tuple[int, str]] = field(default_factory=dict)  # tid -> (pid, comm)
    marks: List[Mark] = field(default_factory=list)
    depth: Dict[int, List[Tuple[int, int]]] = field(default_factory=dict)  # tid -> [(ts, depth)]
    lanes: Dict[int, int] = field(default_factory=dict)  # tid -> number of queue lanes

    def process_names(self) -> Dict[int, str]:
        """pid -> name: the comm of the thread whose tid is the pid, when seen,
        else the first thread of the process seen."""
        out: Dict[int, str] = {}
        for tid, (pid, comm) in self.threads.items():
            if tid == pid or pid not in out:
                out[pid] = comm
        return out


@dataclass
class _Item:
    add: Mark
    ts: int
    func: str
    adder: Tuple[int, int, str]


class _Builder:
    def __init__(self, start_ns: int, end_ns: int):
        self.tl = Timeline(start_ns, end_ns)
        self.pending: Dict[Tuple[int, str], _Item] = {}
        self.depth: Dict[int, int] = {}
        self.flows = 0
        self.waits: List[Mark] = []

    def thread(self, tid: int, pid: int, comm: str) -> None:
        # A thread keeps the first name seen; later renames are rare and a
        # track has one name.
        self.tl.threads.setdefault(tid, (pid, comm))

    def change_depth(self, tid: int, ts: int, step: int) -> None:
        points = self.tl.depth.setdefault(tid, [(self.tl.start_ns, 0)] if ts > self.tl.start_ns
                                          else [])
        self.depth[tid] = self.depth.get(tid, 0) + step
        points.append((ts, self.depth[tid]))

    def wait(self, tid: int, start: int, end: int, func: str, **args: Any) -> None:
        self.waits.append(Mark(("queue", tid), start, func, "queue", end=end, args=args))

    def on_add(self, e: Line) -> None:
        self.thread(e["tid"], e["pid"], e["comm"])
        self.thread(e["adder_tid"], e["adder_pid"], e["adder_comm"])
        target = {"target_tid": e["tid"], "target_comm": e["comm"], "notify": e["notify"]}
        if not e["ok"]:
            self.tl.marks.append(Mark(("thread", e["adder_tid"]), e["ts_ns"],
                                      f"failed add: {e['func']}", "failed_add",
                                      args={**target, "error": e.get("error")}))
            return
        mark = Mark(("thread", e["adder_tid"]), e["ts_ns"], f"add: {e['func']}", "add",
                    args={**target, "work": e["work"]})
        self.tl.marks.append(mark)
        self.pending[(e["tid"], e["work"])] = _Item(
            mark, e["ts_ns"], e["func"], (e["adder_tid"], e["adder_pid"], e["adder_comm"]))
        self.change_depth(e["tid"], e["ts_ns"], +1)

    def on_callback(self, e: Line) -> None:
        self.thread(e["tid"], e["pid"], e["comm"])
        item = self.pending.pop((e["tid"], e["work"]), None)
        flow = None
        if item is not None and e.get("queue_ns") is not None:
            self.flows += 1
            flow = item.add.flow_out = self.flows
        args = {"work": e["work"], "timing": e["timing"]}
        if e.get("queue_ns") is not None:
            adder = {"adder_tid": item.adder[0], "adder_comm": item.adder[2]} if item else {}
            self.wait(e["tid"], e["ts_ns"] - e["queue_ns"], e["ts_ns"], e["func"],
                      outcome="ran", queue_ns=e["queue_ns"], **adder)
            args["queue_ns"] = e["queue_ns"]
        if e.get("run_ns") is not None:
            self.tl.marks.append(Mark(("thread", e["tid"]), e["ts_ns"], e["func"], "callback",
                                      end=e["ts_ns"] + e["run_ns"], args=args, flow_in=flow))
        else:
            self.tl.marks.append(Mark(("thread", e["tid"]), e["ts_ns"], e["func"],
                                      "batch_callback", args=args, flow_in=flow))
        if item is not None:
            self.change_depth(e["tid"], e["ts_ns"], -1)

    def on_cancel(self, e: Line) -> None:
        item = self.pending.pop((e["tid"], e["work"]), None)
        self.tl.marks.append(Mark(("thread", e["tid"]), e["ts_ns"], f"cancel: {e['func']}",
                                  "cancel", args={"work": e["work"]}))
        if item is not None:
            self.wait(e["tid"], item.ts, e["ts_ns"], e["func"], outcome="cancelled")
            self.change_depth(e["tid"], e["ts_ns"], -1)

    def on_run(self, e: Line) -> None:
        self.thread(e["tid"], e["pid"], e["comm"])
        self.tl.marks.append(Mark(("thread", e["tid"]), e["ts_ns"], "task_work_run", "run",
                                  end=e["ts_ns"] + e["dur_ns"],
                                  args={"callbacks": e["callbacks"]}))

    def finish(self) -> Timeline:
        for (tid, _), item in self.pending.items():  # never ran while traced
            self.wait(tid, item.ts, max(item.ts, self.tl.end_ns), item.func,
                      outcome="still queued")
        self.tl.marks += spread_lanes(self.waits, self.tl.lanes)
        return self.tl


def spread_lanes(waits: Iterable[Mark], lanes: Dict[int, int]) -> List[Mark]:
    """Give each wait a lane of its task's queue so that no two waits in a
    lane overlap (greedy by start: the fewest lanes, which is the largest
    number of waits open at once)."""
    ends: Dict[int, List[int]] = {}
    out = []
    for w in sorted(waits, key=lambda w: (w.track[1], w.ts, w.end)):
        tid = w.track[1]
        free = ends.setdefault(tid, [])
        lane = next((i for i, end in enumerate(free) if end <= w.ts), len(free))
        if lane == len(free):
            free.append(w.end)
        else:
            free[lane] = w.end
        w.track = ("queue", tid, lane)
        out.append(w)
    lanes.update({tid: len(v) for tid, v in ends.items()})
    return out


def build(events: Iterable[Line], start_ns: int, end_ns: int) -> Timeline:
    """The timeline of a recording's event lines (any order)."""
    b = _Builder(start_ns, end_ns)
    handlers = {"add": b.on_add, "callback": b.on_callback, "cancel": b.on_cancel,
                "run": b.on_run}
    for e in sorted(events, key=lambda e: (e["ts_ns"], _ORDER[e["type"]])):
        handlers[e["type"]](e)
    return b.finish()


def nest(marks: List[Mark]) -> List[Tuple[str, Mark]]:
    """One track's slices and instants as a ("begin"|"end"|"instant", mark)
    stream in time order, properly nested: a slice that would outlast the
    slice it starts in (clock skew between two probes) is cut at its
    parent's end, with "clipped_ns" saying by how much."""
    out: List[Tuple[str, Mark]] = []
    stack: List[Mark] = []
    for m in sorted(marks, key=lambda m: (m.ts, m.end is None, -(m.end or 0))):
        while stack and (stack[-1].end <= m.ts if m.end is not None else stack[-1].end < m.ts):
            out.append(("end", stack.pop()))
        if m.end is None:
            out.append(("instant", m))
            continue
        if stack and m.end > stack[-1].end:
            m.args["clipped_ns"] = m.end - stack[-1].end
            m.end = stack[-1].end
        out.append(("begin", m))
        stack.append(m)
    while stack:
        out.append(("end", stack.pop()))
    return out

"""Builders for synthetic, schema-valid twtrace recordings.

Each builder returns one line as a dict with plausible defaults; keyword
arguments override fields.  sample_lines() is a small complete recording
whose numbers the report tests look for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from twtrace.hist import Histogram

START = 1_000_000_000_000
Line = Dict[str, Any]


def header(**kw: Any) -> Line:
    line = {
        "type": "header", "schema": 1, "twtrace": "0.1.0", "kernel": "6.8.0-test",
        "arch": "x86_64", "hostname": "testhost", "probe_mode": "fentry",
        "clock": "monotonic", "start_ns": START, "events": True, "interval_s": None,
        "filters": {"pids": [], "tids": [], "comm": None, "command": ["sleep", "1"]},
        "features": {"cancel": ["task_work_cancel_match"], "ringbuf": True,
                     "notify_modes": ["none", "resume", "signal", "signal_no_ipi"]},
    }
    line.update(kw)
    return line


def add(**kw: Any) -> Line:
    line = {
        "type": "add", "ts_ns": START + 10, "work": "0xffff888012345678", "func": "__fput",
        "tid": 100, "pid": 100, "comm": "sleep", "adder_tid": 100, "adder_pid": 100,
        "adder_comm": "sleep", "notify": "resume", "ok": True,
    }
    line.update(kw)
    return line


def callback(**kw: Any) -> Line:
    line = {
        "type": "callback", "ts_ns": START + 2000, "work": "0xffff888012345678",
        "func": "__fput", "tid": 100, "pid": 100, "comm": "sleep",
        "queue_ns": 1990, "run_ns": 700, "timing": "exact",
    }
    line.update(kw)
    return line


def cancel(**kw: Any) -> Line:
    line = {"type": "cancel", "ts_ns": START + 50, "work": "0xffff888087654321",
            "func": "task_mm_cid_work", "tid": 100, "pid": 100}
    line.update(kw)
    return line


def run(**kw: Any) -> Line:
    line = {"type": "run", "ts_ns": START + 1990, "tid": 100, "pid": 100, "comm": "sleep",
            "callbacks": 1, "dur_ns": 900}
    line.update(kw)
    return line


def snapshot(seq: int = 0, final: bool = True, **kw: Any) -> Line:
    line = {"type": "snapshot", "ts_ns": START + 1_500_000_000, "seq": seq, "final": final}
    line.update(kw)
    return line


def latency(values: Iterable[int] = ()) -> Dict[str, Any]:
    """The latency summary object for exact sample values."""
    values = list(values)
    h = Histogram()
    for v in values:
        h.add(v)
    if not values:
        return h.summary()
    return h.summary(max_ns=max(values), sum_ns=sum(values))


def task(queue_samples: Sequence[int] = (), run_samples: Sequence[int] = (), **kw: Any) -> Line:
    line = {
        "type": "task", "tid": 100, "pid": 100, "comm": "sleep", "adds": len(queue_samples),
        "failed_adds": 0, "cancels": 0, "callbacks": len(run_samples), "runs": len(run_samples),
        "depth": 0, "max_depth": 1, "queue_ns": latency(queue_samples),
        "run_ns": latency(run_samples), "busiest": "__fput" if run_samples else None,
    }
    line.update(kw)
    return line


def func(queue_samples: Sequence[int] = (), run_samples: Sequence[int] = (), **kw: Any) -> Line:
    line = {
        "type": "func", "func": "__fput", "adds": len(queue_samples), "failed_adds": 0,
        "cancels": 0, "callbacks": len(run_samples), "queue_ns": latency(queue_samples),
        "run_ns": latency(run_samples), "probed": True,
        "adders": [{"adder_pid": 100, "adder_comm": "sleep", "tid": 100, "comm": "sleep",
                    "adds": len(queue_samples)}],
    }
    line.update(kw)
    return line


def lost(count: int = 3, **kw: Any) -> Line:
    line = {"type": "lost", "ts_ns": START + 800_000_000, "count": count}
    line.update(kw)
    return line


def summary(**kw: Any) -> Line:
    line = {
        "type": "summary", "duration_ns": 1_500_000_000, "items": 0, "adds": 0,
        "failed_adds": 0, "callbacks": 0, "cancels": 0, "lost_events": 0, "evicted": 0,
        "unmatched": 0, "interrupted": False, "exit_status": 0, "complete": True,
    }
    line.update(kw)
    return line


# Exact samples behind sample_lines(); tests compute expected numbers from them.
FPUT_QUEUE = [1_200 + 37 * i for i in range(40)] + [250_000]
FPUT_RUN = [800 + 11 * i for i in range(41)]
CID_QUEUE = [3_000_000, 5_500_000, 12_345_678]
CID_RUN = [45_000, 47_000]
IO_QUEUE = [9_000 + 500 * i for i in range(7)]  # the unprobed, batch-timed one


def sample_lines() -> List[Line]:
    """A complete recording: two tasks, three callback functions."""
    lines = [
        header(),
        add(),
        add(ts_ns=START + 20, tid=101, pid=100, comm="worker", ok=False, error=-3,
            notify="signal", work="0xffff888000000001"),
        cancel(),
        run(),
        callback(),
        callback(func="io_task_work_run", tid=101, pid=100, comm="worker",
                 queue_ns=None, run_ns=12_000, timing="batch"),
        lost(3),
        snapshot(seq=0, final=False, ts_ns=START + 500_000_000),
        task(FPUT_QUEUE[:5], FPUT_RUN[:5]),
        func(FPUT_QUEUE[:5], FPUT_RUN[:5]),
        snapshot(seq=1, final=True),
        task(FPUT_QUEUE + CID_QUEUE, FPUT_RUN + CID_RUN, cancels=1, depth=2, max_depth=7,
             failed_adds=1, busiest="__fput"),
        task(IO_QUEUE, IO_QUEUE[:3], tid=101, pid=100, comm="worker", runs=2,
             busiest="io_task_work_run"),
        func(FPUT_QUEUE, FPUT_RUN, adders=[
            {"adder_pid": 100, "adder_comm": "sleep", "tid": 100, "comm": "sleep", "adds": 30},
            {"adder_pid": 7, "adder_comm": "kworker/0:1", "tid": 100, "comm": "sleep", "adds": 11},
        ]),
        func(CID_QUEUE, CID_RUN, func="task_mm_cid_work", cancels=1, failed_adds=1,
             adders=[{"adder_pid": 0, "adder_comm": "swapper/0", "tid": 100, "comm": "sleep",
                      "adds": 3}]),
        func(IO_QUEUE, IO_QUEUE[:3], func="io_task_work_run", probed=False,
             adders=[{"adder_pid": 100, "adder_comm": "sleep", "tid": 101, "comm": "worker",
                      "adds": 7}]),
        summary(items=51, adds=52, failed_adds=1, callbacks=46, cancels=1, lost_events=3,
                evicted=2, unmatched=1),
    ]
    return lines


def dumps(lines: Iterable[Any]) -> str:
    return "".join(json.dumps(line) + "\n" for line in lines)


def write_jsonl(path: Path, lines: Iterable[Any], text: Optional[str] = None) -> Path:
    """Write lines as JSON Lines, or write text verbatim when given."""
    Path(path).write_text(dumps(lines) if text is None else text, encoding="utf-8")
    return Path(path)

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


# -- a recording with several snapshot groups, for `twtrace top` -------------

# (tid, pid, comm, func, adds per snapshot, adder (pid, comm), queue ns, run ns,
#  snapshots it is active in (None = all), items it leaves queued)
TOP_TASKS = [
    (4242, 4242, "postgres", "____fput", 120, (4242, "postgres"), 3_000, 1_500, None, 0),
    (4243, 4242, "pg_worker", "____fput", 60, (4242, "postgres"), 5_000, 2_000, None, 0),
    (901, 901, "nginx", "tctx_task_work", 40, (0, "swapper/1"), 80_000, 12_000, None, 0),
    (1200, 1200, "python3", "task_mm_cid_work", 5, (0, "swapper/0"), 2_500_000, 40_000, None, 0),
    (77, 77, "keyctl", "key_change_session_keyring", 2, (76, "keyctl-parent"), 900_000, 6_000,
     (1, 2), 0),
    (3100, 3100, "stuck", "____fput", 3, (3100, "stuck"), 0, 0, (1,), 3),
]
TOP_STEP_NS = 1_000_000_000
SESSION = "/user.slice/user-1000.slice/session-3.scope"
TOP_CGROUPS = {4242: "/system.slice/postgresql.service", 4243: "/system.slice/postgresql.service",
               901: "/system.slice/docker-" + "9c0ffee1" * 8 + ".scope", 1200: SESSION,
               77: SESSION, 3100: "/"}


def _samples(base: int, n: int, seed: int) -> List[int]:
    """n deterministic values spread around base (a long tail every 50th)."""
    out = []
    for i in range(n):
        v = base + (base * ((i * 37 + seed) % 100)) // 100
        out.append(v * 20 if i % 50 == 49 else v)
    return out


def top_task_state(snap: int) -> Dict[int, Dict[str, Any]]:
    """Cumulative per-task numbers as of snapshot number snap (1-based)."""
    out = {}
    for tid, pid, comm, fn, per, adder, q, r, active, left in TOP_TASKS:
        k = snap if active is None else len([a for a in active if a <= snap])
        adds = per * k
        done = adds - left if left else adds
        out[tid] = {"tid": tid, "pid": pid, "comm": comm, "func": fn, "adder": adder,
                    "adds": adds, "callbacks": done,
                    "queue": _samples(q, done, tid) if q else [],
                    "run": _samples(r, done, tid + 1) if r else [],
                    "depth": left if k else 0}
    return out


def top_group(snap: int, final: bool = False, cgroups: bool = False) -> List[Line]:
    state = {t: s for t, s in top_task_state(snap).items() if s["adds"]}
    lines: List[Line] = [snapshot(seq=snap - 1, final=final,
                                  ts_ns=START + snap * TOP_STEP_NS)]
    for s in state.values():
        lines.append(task(s["queue"], s["run"], tid=s["tid"], pid=s["pid"], comm=s["comm"],
                          adds=s["adds"], callbacks=s["callbacks"], runs=s["callbacks"],
                          depth=s["depth"], max_depth=max(1, s["depth"]),
                          busiest=s["func"] if s["callbacks"] else None,
                          **({"cgroup": TOP_CGROUPS[s["tid"]]} if cgroups else {})))
    for fn in sorted({s["func"] for s in state.values()}):
        mine = [s for s in state.values() if s["func"] == fn]
        lines.append(func(
            [v for s in mine for v in s["queue"]], [v for s in mine for v in s["run"]],
            func=fn, adds=sum(s["adds"] for s in mine),
            callbacks=sum(s["callbacks"] for s in mine),
            adders=[{"adder_pid": s["adder"][0], "adder_comm": s["adder"][1], "tid": s["tid"],
                     "comm": s["comm"], "adds": s["adds"]}
                    for s in sorted(mine, key=lambda s: -s["adds"])]))
    return lines


def top_lines(snapshots: int = 6, cgroups: bool = False) -> List[Line]:
    """A complete recording with `snapshots` groups one second apart."""
    lines = [header(events=False, interval_s=1.0, hostname="db1", kernel="6.1.0-18-amd64",
                    filters={"pids": [], "tids": [], "comm": None, "command": None})]
    for n in range(1, snapshots + 1):
        if n == 3:
            lines.append(lost(5, ts_ns=START + n * TOP_STEP_NS - 1))
        lines += top_group(n, final=n == snapshots, cgroups=cgroups)
    final = top_task_state(snapshots)
    adds = sum(s["adds"] for s in final.values())
    cbs = sum(s["callbacks"] for s in final.values())
    lines.append(summary(duration_ns=snapshots * TOP_STEP_NS, items=adds, adds=adds,
                         callbacks=cbs, lost_events=5, evicted=0, exit_status=None))
    return lines
